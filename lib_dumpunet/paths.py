"""Where user-typed folders (dump folder, map save path) may point.

A relative path is taken inside `base` (the webui's output folder). When the webui is shared over the network
(--listen, --share), the result must stay inside `base`: absolute paths, `..` and symlinks that leave it are refused,
so nobody on the network can make the server write elsewhere. A local webui may write anywhere its user types.
Nothing is expanded: a leading `~` (the shell's home folder) is refused with a message rather than becoming a folder
named `~`. Whatever the operating system refuses while the path is resolved — a name over 255 bytes, a symlink loop,
a path too long — comes back as a `DumpUnetError` naming the field, never as a raw `OSError`.
"""

from __future__ import annotations

from pathlib import Path, PurePath

from lib_dumpunet.errors import DumpUnetError

__all__ = ["MAX_COMPONENT_BYTES", "MAX_FOLDER_LENGTH", "resolve_folder"]

# Longest folder text accepted, and longest single name in it (the limit of ext4, NTFS, APFS …), in UTF-8 bytes.
MAX_FOLDER_LENGTH = 1024
MAX_COMPONENT_BYTES = 255


def resolve_folder(text: str, *, base: Path, default: str, shared: bool, field: str) -> Path:
    """The folder `text` names (or `base / default` when empty), checked against the sharing policy."""
    text = text.strip()
    _check_text(text, field)
    try:
        base = base.resolve()
        folder = (base / (text or default)).resolve()
        inside = folder.is_relative_to(base)
        not_a_folder = folder.exists() and not folder.is_dir()
    except (OSError, RuntimeError) as exc:  # ELOOP, ENAMETOOLONG, EACCES …; RuntimeError: a loop before 3.13
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        msg = f"{field}: {_short(text)} cannot be used as a folder ({reason}); choose another path"
        raise DumpUnetError(msg) from exc
    if shared and not inside:
        msg = (
            f"{field}: {_short(text)} is outside {base}; while the webui is shared (--listen/--share), files can "
            "only be written inside its output folder — give a relative path"
        )
        raise DumpUnetError(msg)
    if not_a_folder:
        msg = f"{field}: {folder} exists and is not a folder"
        raise DumpUnetError(msg)
    return folder


def _check_text(text: str, field: str) -> None:
    """Refuse what no folder can be called, before the file system is asked."""
    if "\x00" in text:
        msg = f"{field}: the path contains a NUL character"
        raise DumpUnetError(msg)
    if len(text) > MAX_FOLDER_LENGTH:
        msg = f"{field} is {len(text):,} characters long; at most {MAX_FOLDER_LENGTH:,} are allowed — shorten it"
        raise DumpUnetError(msg)
    parts = PurePath(text).parts
    if parts and parts[0].startswith("~"):
        msg = (
            f"{field}: {_short(text)} starts with '~', which is not expanded to a home folder here (it would make a "
            "folder literally named '~'); write the full path, or a path relative to the webui's output folder"
        )
        raise DumpUnetError(msg)
    for part in parts:
        size = len(part.encode("utf-8", "surrogatepass"))
        if size > MAX_COMPONENT_BYTES:
            msg = (
                f"{field}: the name {_short(part)} is {size} bytes long; a folder name can have at most "
                f"{MAX_COMPONENT_BYTES} bytes"
            )
            raise DumpUnetError(msg)


def _short(text: str, limit: int = 60) -> str:
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "…"
