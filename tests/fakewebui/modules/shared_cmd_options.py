"""Test double of webui v1.10.1 `modules/shared_cmd_options.py` (with `cmd_args.py`): the command-line `parser` and
`cmd_opts`, parsed from an empty command line, so every flag has the webui's default.

Only the flags the double or extensions read are declared. Tests change `cmd_opts` attributes directly (e.g. `listen`)
and put them back. `disable_extension_access` is derived as in the webui: a webui reachable from other machines
refuses extension installs unless --enable-insecure-extension-access is given.
"""

from __future__ import annotations

import argparse
import os

from modules import paths_internal

_SWITCHES = (
    "listen share api nowebui api-server-stop enable-insecure-extension-access xformers opt-sdp-attention medvram "
    "medvram-sdxl lowvram no-half no-half-vae upcast-sampling skip-install test-server do-not-download-clip "
    "disable-safe-unpickle disable-nan-check hide-ui-dir-config freeze-settings no-prompt-history"
).split()

# flag -> (type, default)
_VALUES = {
    "data-dir": (str, paths_internal.data_path),
    "models-dir": (str, None),
    "ckpt": (str, None),
    "embeddings-dir": (str, os.path.join(paths_internal.data_path, "embeddings")),
    "textual-inversion-templates-dir": (str, os.path.join(paths_internal.script_path, "textual_inversion_templates")),
    "hypernetwork-dir": (str, os.path.join(paths_internal.models_path, "hypernetworks")),
    "ngrok": (str, None),
    "server-name": (str, None),
    "port": (int, None),
    "api-auth": (str, None),
    "precision": (str, "autocast"),
    "filenames-max-length": (int, 128),
}

parser = argparse.ArgumentParser(prog="fakewebui")
for _flag in _SWITCHES:
    parser.add_argument(f"--{_flag}", action="store_true")
for _flag, (_kind, _default) in _VALUES.items():
    parser.add_argument(f"--{_flag}", type=_kind, default=_default)
parser.add_argument("--use-cpu", nargs="+", default=[])

cmd_opts = parser.parse_args([])
_reachable = cmd_opts.share or cmd_opts.listen or cmd_opts.ngrok or cmd_opts.server_name
cmd_opts.disable_extension_access = bool(_reachable) and not cmd_opts.enable_insecure_extension_access
