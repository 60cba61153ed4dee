"""The job's settings in the image's infotext, and back into the UI ("PNG Info → Send to txt2img").

One infotext entry holds the settings that differ from their defaults, in the webui's own `key: value` style:

    Dump U-Net: "features.enabled: True, features.layers: IN00-OUT11, features.colors.gain: 2.5, attention.outputs: K"

Keys are the settings' paths (as the API takes them), booleans are True/False, several choices are joined by `+`, and
text is written as it is — only a text that could be misread is written as a JSON string: one that contains
`, some.key: ` (the next key), starts or ends with a blank, is empty, or is itself one whole JSON string (`"5"`). A
text that merely starts with a quote, as word lists do (`heatmap.words: "5", cat`), stays as typed: a value is read as
JSON only when the JSON string is all of it. The webui quotes the whole entry. Entries written as a JSON object
(`{"features.layers": …}`, by earlier versions) and values JSON-quoted by earlier versions are still read.

Pasting restores the settings into the always-visible section: each input gets its value, or its default when the
image was made with Dump U-Net but left that setting alone; an image without the entry switches the section off.
Pasting never raises: an entry that cannot be read changes nothing, and a setting that cannot be read (an unknown
key, a value of the wrong kind, a text over its limit) is left as it is; both are logged.

"Send to img2img" from the txt2img gallery copies inputs from tab to tab instead, matching the names in
`infotext_fields` against the scripts' `paste_field_names`. Each setting's paste function is that name: one function
object per setting, shared by the txt2img and img2img sections, so `PASTE_NAMES` makes the whole section travel.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import typing
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


_KEY = re.compile(r"([a-z_]+(?:\.[a-z_]+)+): ")
_NEXT_KEY = re.compile(r", (?=[a-z_]+(?:\.[a-z_]+)+: )")
_TYPES = {f.path: f.type for f in FIELDS}


def encode(settings: JobSettings) -> str:
    """The entry's value: 'path: value' for every setting that differs from its default, in field order."""
    return ", ".join(f"{path}: {_text(value)}" for path, value in changed_values(settings).items())


def _text(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "+".join(value)
    if isinstance(value, bool | int | float):
        return str(value)
    text = str(value)
    if not text or text != text.strip() or _NEXT_KEY.search(text) or _whole_json(text, 0) is not None:
        return json.dumps(text, ensure_ascii=False)
    return text


def _whole_json(raw: str, pos: int) -> tuple[str, int] | None:
    """(the text, where it ends) when a JSON string starts at `pos` and is the whole value there: followed by the
    end of the entry or by the next key; None otherwise (the value is then read as written)."""
    if not raw.startswith('"', pos):
        return None
    try:
        value, end = json.JSONDecoder().raw_decode(raw, pos)
    except ValueError:
        return None
    if not isinstance(value, str):
        return None
    if end == len(raw) or (raw.startswith(", ", end) and _KEY.match(raw, end + 2)):
        return value, end
    return None


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
    if raw.lstrip().startswith("{"):  # the JSON object of earlier versions
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            return _unreadable_entry()
        return _read(data) if isinstance(data, dict) else _unreadable_entry()
    pairs = _pairs(raw)
    if pairs is None:
        return _unreadable_entry()
    return _read({path: _typed(path, text) for path, text in pairs.items()})


def _pairs(raw: str) -> dict[str, str] | None:
    """'a.b: x, c.d: "y"' → {"a.b": "x", "c.d": "y"}; None when the text is not in that form. Reads left to right."""
    pairs: dict[str, str] = {}
    pos = 0
    while pos < len(raw):
        key = _KEY.match(raw, pos)
        if key is None:
            return None
        pos = key.end()
        quoted = _whole_json(raw, pos)
        if quoted is not None:
            value, end = quoted
        else:
            following = _NEXT_KEY.search(raw, pos)
            end = following.start() if following else len(raw)
            value = raw[pos:end]
        pairs[key.group(1)] = value
        pos = end + 2 if end < len(raw) else end
    return pairs


def _typed(path: str, text: str) -> Any:
    """A value written by `_text`, as its setting's type (unknown paths and unreadable numbers stay text, for
    `check_value` to refuse)."""
    kind = _TYPES.get(path)
    if kind is bool:
        return {"True": True, "False": False}.get(text, text)
    if kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            return text
    if typing.get_origin(kind) is tuple:
        return [part for part in text.split("+") if part]
    return text


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
