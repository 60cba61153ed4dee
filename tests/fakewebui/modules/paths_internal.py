"""Test double of webui v1.10.1 `modules/paths_internal.py`: where the webui and its data live.

The webui root (`script_path`) is the double's own folder `tests/fakewebui`, which holds `modules/` and the built-in
`scripts/`. The data folder (the webui's `--data-dir`) is taken from the environment variable FAKEWEBUI_DATA_DIR,
which the fixture points at a fresh temporary folder before `modules` is imported; models, extensions and outputs
are below it as in the webui.
"""

from __future__ import annotations

import os
import tempfile

modules_path = os.path.dirname(os.path.realpath(__file__))
script_path = os.path.dirname(modules_path)
data_path = os.environ.get("FAKEWEBUI_DATA_DIR") or os.path.join(tempfile.gettempdir(), "fakewebui-data")
models_path = os.path.join(data_path, "models")
extensions_dir = os.path.join(data_path, "extensions")
extensions_builtin_dir = os.path.join(script_path, "extensions-builtin")
default_output_dir = os.path.join(data_path, "outputs")
