"""Mirror of modules/script_loading.py: load a file as a module named after its basename (not put in sys.modules)."""

import importlib.util
import os


def load_module(path):
    module_spec = importlib.util.spec_from_file_location(os.path.basename(path), path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module
