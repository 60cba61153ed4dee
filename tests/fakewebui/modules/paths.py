"""Mirror of modules/paths.py: re-exports the paths (the real one also puts the cloned repositories on sys.path)."""

from modules.paths_internal import (  # noqa: F401
    data_path,
    default_output_dir,
    extensions_builtin_dir,
    extensions_dir,
    models_path,
    script_path,
)
