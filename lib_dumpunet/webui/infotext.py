"""The job's settings in the image's infotext, and back into the UI ("PNG Info → Send to txt2img").

One infotext entry, `Dump U-Net: {...}`, holds the settings that differ from their defaults as JSON (the webui
quotes it). Pasting restores them into the always-visible section: each input gets its value, or its default when
the image was made with Dump U-Net but left that setting alone; an image without the entry switches the section off.

"Send to img2img" from the txt2img gallery copies inputs from tab to tab instead, matching the names in
`infotext_fields` against the scripts' `paste_field_names`. Each setting's paste function is that name: one function
object per setting, shared by the txt2img and img2img sections, so `PASTE_NAMES` makes the whole section travel.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from lib_dumpunet.settings import FIELDS, JobSettings, changed_values

__all__ = ["INFOTEXT_KEY", "PASTE_NAMES", "encode", "paste_fields", "restored"]

INFOTEXT_KEY = "Dump U-Net"


def encode(settings: JobSettings) -> str:
    return json.dumps(changed_values(settings), separators=(",", ":"), ensure_ascii=False)


def restored(params: Mapping[str, Any]) -> dict[str, Any] | None:
    """The settings recorded in parsed infotext `params`, by path; None if the image has none."""
    raw = params.get(INFOTEXT_KEY)
    if raw is None:
        return None
    try:
        data = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def _setting_getter(path: str, default: Any) -> Callable[[Mapping], Any]:
    def get(params: Mapping) -> Any:
        data = restored(params)
        if data is None:
            return None  # leave the input as it is
        v = data.get(path, default)
        return list(v) if isinstance(v, tuple) else v

    return get


def _switch(params: Mapping) -> bool:
    return restored(params) is not None


# the paste function of the section's switch, then of every setting in FIELDS order; each is also its paste name
PASTE_NAMES: tuple[Callable[[Mapping], Any], ...] = (_switch, *(_setting_getter(f.path, f.default) for f in FIELDS))


def paste_fields(components: Mapping[str, Any], enable: Any) -> list[tuple[Any, Callable[[Mapping], Any]]]:
    """`infotext_fields` for a UI: (component, params → value or None) for the section switch and every setting."""
    inputs = [enable, *(components[f.path] for f in FIELDS)]
    return list(zip(inputs, PASTE_NAMES, strict=True))
