"""Mirror of modules/paths_internal.py: the webui's root and data directories.

`script_path` is the fake webui root (`tests/fakewebui`, holding `modules/` and the built-in `scripts/`). The data
directory (the real `--data-dir`) comes from the environment variable FAKEWEBUI_DATA_DIR, which the fixture sets to a
fresh temporary directory before importing `modules`.
"""

import os
import tempfile

modules_path = os.path.dirname(os.path.realpath(__file__))
script_path = os.path.dirname(modules_path)

data_path = os.environ.get("FAKEWEBUI_DATA_DIR") or os.path.join(tempfile.gettempdir(), "fakewebui-data")
models_path = os.path.join(data_path, "models")
extensions_dir = os.path.join(data_path, "extensions")
extensions_builtin_dir = os.path.join(script_path, "extensions-builtin")
config_states_dir = os.path.join(script_path, "config_states")
default_output_dir = os.path.join(data_path, "outputs")
