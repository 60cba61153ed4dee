"""Mirror of modules/extensions.py, reduced: the list of extensions (folders) and `find_extension(filename)`.

The fake does not scan `extensions/`: the fixture registers each extension folder it loads."""

import os

from modules import paths_internal

extensions = []


class Extension:
    def __init__(self, name, path, enabled=True, is_builtin=False):
        self.name = name
        self.canonical_name = os.path.basename(os.path.normpath(path)).lower()  # v1.10.1: the folder name wins
        self.path = path
        self.enabled = enabled
        self.is_builtin = is_builtin

    def list_files(self, subdir, extension):
        dirpath = os.path.join(self.path, subdir)
        if not os.path.isdir(dirpath):
            return []
        from modules import scripts

        return [
            scripts.ScriptFile(self.path, filename, os.path.join(dirpath, filename))
            for filename in sorted(os.listdir(dirpath))
            if os.path.splitext(filename)[1].lower() == extension and os.path.isfile(os.path.join(dirpath, filename))
        ]


def active():
    return [x for x in extensions if x.enabled]


def find_extension(filename):
    for ext in extensions:
        if os.path.abspath(filename).startswith(os.path.abspath(ext.path) + os.sep):
            return ext
    return None


def list_extensions():
    pass


extensions_dir = paths_internal.extensions_dir
