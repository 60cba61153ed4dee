"""The job's settings in the image's infotext, and back into the UI ("PNG Info → Send to txt2img").

One infotext entry, `Dump U-Net: {...}`, holds the settings that differ from their defaults as JSON (the webui
quotes it). Pasting restores them into the always-visible section: each input gets its value, or its default when
the image was made with Dump U-Net but left that setting alone; an image without the entry switches the section off.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from lib_dumpunet.settings import FIELDS, JobSettings, changed_values

__all__ = ["INFOTEXT_KEY", "encode", "paste_fields", "restored"]

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


def paste_fields(components: Mapping[str, Any], enable: Any) -> list[tuple[Any, Callable[[Mapping], Any]]]:
    """`infotext_fields` for a UI: (component, params → value or None) for every setting and the section switch."""

    def value(path: str, default: Any) -> Callable[[Mapping], Any]:
        def get(params: Mapping) -> Any:
            data = restored(params)
            if data is None:
                return None  # leave the input as it is
            v = data.get(path, default)
            return list(v) if isinstance(v, tuple) else v

        return get

    fields = [(components[f.path], value(f.path, f.default)) for f in FIELDS]
    return [(enable, lambda params: restored(params) is not None), *fields]
