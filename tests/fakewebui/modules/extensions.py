"""Test double of webui v1.10.1 `modules/extensions.py`, reduced to what scripts and callbacks use: the list of
installed extensions, which of them are active, their `scripts/*.py` files, and which extension a file belongs to.

The double does not scan `extensions/`: the fixture appends an `Extension` for each folder a test loads. As in
v1.10.1 an extension's canonical name is its folder's name in lower case (metadata.ini's Name= is overridden).
"""

from __future__ import annotations

import os

from modules import paths_internal

extensions_dir = paths_internal.extensions_dir
extensions: list[Extension] = []


class Extension:
    def __init__(self, name, path, enabled=True, is_builtin=False):
        self.name, self.path, self.enabled, self.is_builtin = name, path, enabled, is_builtin
        self.canonical_name = os.path.basename(os.path.normpath(path)).lower()

    def list_files(self, subdir, extension):
        """`scripts.ScriptFile`s of the files directly in `<path>/<subdir>` with this suffix, by name."""
        from modules import scripts

        folder = os.path.join(self.path, subdir)
        if not os.path.isdir(folder):
            return []
        paths = ((name, os.path.join(folder, name)) for name in sorted(os.listdir(folder)))
        return [
            scripts.ScriptFile(self.path, name, path)
            for name, path in paths
            if os.path.splitext(name)[1].lower() == extension and os.path.isfile(path)
        ]


def active():
    return [ext for ext in extensions if ext.enabled]


def find_extension(filename):
    """The extension whose folder holds `filename`, or None (a file of the webui itself)."""
    where = os.path.abspath(filename)
    return next((ext for ext in extensions if where.startswith(os.path.join(os.path.abspath(ext.path), ""))), None)


def list_extensions():
    """The webui rescans its extension folders here; the double's list is filled by the fixture instead."""
