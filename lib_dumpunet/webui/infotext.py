"""The job's settings in the image's infotext, and back into the UI ("PNG Info → Send to txt2img").

One infotext entry, `Dump U-Net: {...}`, holds the settings that differ from their defaults as JSON (the webui
quotes it). Pasting restores them into the always-visible section: each input gets its value, or its default when
the image was made with Dump U-Net but left that setting alone; an image without the entry switches the section off.

"Send to img2img" from the txt2img gallery copies inputs from tab to tab instead, matching the names in
`infotext_fields` against the scripts' `paste_field_names`. Each setting's paste function is that name: one function
object per setting, shared by the txt2img and img2img sections, so `PASTE_NAMES` makes the whole section travel.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from lib_dumpunet.errors import DumpUnetError
from lib_dumpunet.settings import FIELDS, JobSettings, changed_values, check_value

__all__ = ["INFOTEXT_KEY", "MAX_INFOTEXT_LENGTH", "PASTE_NAMES", "encode", "paste_fields", "restored"]

log = logging.getLogger(__name__)

INFOTEXT_KEY = "Dump U-Net"
# The longest entry read back: more than every text setting at its longest.
MAX_INFOTEXT_LENGTH = 65536


def encode(settings: JobSettings) -> str:
    return json.dumps(changed_values(settings), separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class _Entry:
    """What a pasted entry holds: the settings that can be read, and the paths named with a value that cannot."""

    values: dict[str, Any]
    unreadable: frozenset[str]


def restored(params: Mapping[str, Any]) -> dict[str, Any] | None:
    """The settings recorded in parsed infotext `params` that can be read, by path; None if the image has no
    readable entry. Never raises: what cannot be read is logged and left out, so pasting leaves it alone."""
    entry = _entry(params)
    return None if entry is None else dict(entry.values)


def _entry(params: Mapping[str, Any]) -> _Entry | None:
    raw = params.get(INFOTEXT_KEY)
    if raw is None:
        return None
    if isinstance(raw, str):
        return _read_text(raw)
    return _read(raw) if isinstance(raw, Mapping) else _unreadable_entry()


@functools.lru_cache(maxsize=8)
def _read_text(raw: str) -> _Entry | None:
    """One paste calls every setting's function with the same text: it is read once."""
    if len(raw) > MAX_INFOTEXT_LENGTH:
        return _unreadable_entry()
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        return _unreadable_entry()
    return _read(data) if isinstance(data, dict) else _unreadable_entry()


def _unreadable_entry() -> _Entry | None:
    """Nothing can be read: log it, and answer None so that no input changes."""
    log.warning("the pasted '%s' entry cannot be read; no setting was changed", INFOTEXT_KEY)
    return None


def _read(data: Mapping[Any, Any]) -> _Entry:
    values, unreadable = {}, set()
    for path, value in data.items():
        try:
            values[path] = check_value(path, value)
        except (KeyError, TypeError, DumpUnetError) as err:
            log.warning("pasted setting %.60r of '%s' left as it is: %s", path, INFOTEXT_KEY, err)
            unreadable.add(path)
    return _Entry(values, frozenset(unreadable))


def _setting_getter(path: str, default: Any) -> Callable[[Mapping], Any]:
    def get(params: Mapping) -> Any:
        entry = _entry(params)
        if entry is None or path in entry.unreadable:
            return None  # leave the input as it is
        v = entry.values.get(path, default)
        return list(v) if isinstance(v, tuple) else v

    return get


def _switch(params: Mapping) -> bool | None:
    if params.get(INFOTEXT_KEY) is None:
        return False  # an image made without Dump U-Net switches the section off
    return True if _entry(params) is not None else None


# the paste function of the section's switch, then of every setting in FIELDS order; each is also its paste name
PASTE_NAMES: tuple[Callable[[Mapping], Any], ...] = (_switch, *(_setting_getter(f.path, f.default) for f in FIELDS))


def paste_fields(components: Mapping[str, Any], enable: Any) -> list[tuple[Any, Callable[[Mapping], Any]]]:
    """`infotext_fields` for a UI: (component, params → value or None) for the section switch and every setting."""
    inputs = [enable, *(components[f.path] for f in FIELDS)]
    return list(zip(inputs, PASTE_NAMES, strict=True))
