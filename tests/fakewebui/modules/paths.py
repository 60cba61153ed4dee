"""Test double of webui v1.10.1 `modules/paths.py`: the folders of paths_internal under their usual names. (The
webui's module also puts the repositories it clones on `sys.path`; the double's ldm comes from an installed package.)"""

from modules.paths_internal import (  # noqa: F401
    data_path,
    default_output_dir,
    extensions_builtin_dir,
    extensions_dir,
    models_path,
    script_path,
)
