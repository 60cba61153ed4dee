"""Test double of webui v1.10.1 `modules/script_loading.py`: `load_module` executes a Python file as a fresh module
named after the file ("dumpunet.py"), without entering it in `sys.modules` — how the webui loads every script."""

from __future__ import annotations

import importlib.util
import os
from types import ModuleType


def load_module(path: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(os.path.basename(path), path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load a module from {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
