"""Where user-typed folders (dump folder, map save path) may point.

A relative path is taken inside `base` (the webui's output folder). When the webui is shared over the network
(--listen, --share), the result must stay inside `base`: absolute paths, `..` and symlinks that leave it are refused,
so nobody on the network can make the server write elsewhere. A local webui may write anywhere its user types.
"""

from __future__ import annotations

from pathlib import Path

from lib_dumpunet.errors import DumpUnetError

__all__ = ["resolve_folder"]


def resolve_folder(text: str, *, base: Path, default: str, shared: bool, field: str) -> Path:
    """The folder `text` names (or `base / default` when empty), checked against the sharing policy."""
    text = text.strip()
    if "\x00" in text:
        msg = f"{field}: the path contains a NUL character"
        raise DumpUnetError(msg)
    base = base.resolve()
    folder = (base / (text or default)).resolve()
    if shared and not folder.is_relative_to(base):
        msg = (
            f"{field}: {text!r} is outside {base}; while the webui is shared (--listen/--share), files can only be "
            "written inside its output folder — give a relative path"
        )
        raise DumpUnetError(msg)
    if folder.exists() and not folder.is_dir():
        msg = f"{field}: {folder} exists and is not a folder"
        raise DumpUnetError(msg)
    return folder
