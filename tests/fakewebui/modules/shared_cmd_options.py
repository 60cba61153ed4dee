"""Mirror of modules/shared_cmd_options.py + cmd_args.py: `parser` and `cmd_opts`, parsed from no arguments.

Only the flags extensions read are declared; defaults are v1.10.1's (dirs under the data directory)."""

import argparse
import os

from modules import paths_internal

parser = argparse.ArgumentParser()
parser.add_argument("--data-dir", type=str, default=paths_internal.data_path)
parser.add_argument("--models-dir", type=str, default=None)
parser.add_argument("--ckpt", type=str, default=None)
parser.add_argument("--embeddings-dir", type=str, default=os.path.join(paths_internal.data_path, "embeddings"))
parser.add_argument(
    "--textual-inversion-templates-dir",
    type=str,
    default=os.path.join(paths_internal.script_path, "textual_inversion_templates"),
)
parser.add_argument("--hypernetwork-dir", type=str, default=os.path.join(paths_internal.models_path, "hypernetworks"))
parser.add_argument("--listen", action="store_true")
parser.add_argument("--share", action="store_true")
parser.add_argument("--ngrok", type=str, default=None)
parser.add_argument("--server-name", type=str, default=None)
parser.add_argument("--port", type=int, default=None)
parser.add_argument("--api", action="store_true")
parser.add_argument("--api-auth", type=str, default=None)
parser.add_argument("--nowebui", action="store_true")
parser.add_argument("--api-server-stop", action="store_true")
parser.add_argument("--enable-insecure-extension-access", action="store_true")
parser.add_argument("--xformers", action="store_true")
parser.add_argument("--opt-sdp-attention", action="store_true")
parser.add_argument("--medvram", action="store_true")
parser.add_argument("--medvram-sdxl", action="store_true")
parser.add_argument("--lowvram", action="store_true")
parser.add_argument("--no-half", action="store_true")
parser.add_argument("--no-half-vae", action="store_true")
parser.add_argument("--precision", type=str, default="autocast")
parser.add_argument("--upcast-sampling", action="store_true")
parser.add_argument("--use-cpu", nargs="+", default=[])
parser.add_argument("--skip-install", action="store_true")
parser.add_argument("--test-server", action="store_true")
parser.add_argument("--do-not-download-clip", action="store_true")
parser.add_argument("--disable-safe-unpickle", action="store_true")
parser.add_argument("--disable-nan-check", action="store_true")
parser.add_argument("--hide-ui-dir-config", action="store_true")
parser.add_argument("--freeze-settings", action="store_true")
parser.add_argument("--no-prompt-history", action="store_true")
parser.add_argument("--filenames-max-length", type=int, default=128)

cmd_opts = parser.parse_args([])
cmd_opts.disable_extension_access = (
    any([cmd_opts.share, cmd_opts.listen, cmd_opts.ngrok, cmd_opts.server_name])
    and not cmd_opts.enable_insecure_extension_access
)
