"""Helpers for tests that load the extension into the fake webui (tests/fakewebui)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import unets
from fakewebui.fixture import REPO_ROOT, FakeWebui, webui

SECTION = "Dump U-Net"
SCRIPT = "Dump U-Net features"


@contextlib.contextmanager
def session(flavour: unets.Flavour = unets.SD1, **kwargs: Any) -> Iterator[FakeWebui]:
    """A fake webui with this repository loaded as an extension."""
    with webui(flavour, extensions=[REPO_ROOT], **kwargs) as w:
        yield w


def section_args(w: FakeWebui, settings: dict[str, Any], *, is_img2img: bool = False) -> list:
    """script_args with the always-visible section on and `settings` (by path) given as the API's dict form."""
    return w.api_script_args(w.runner(is_img2img), alwayson_scripts={SECTION: {"args": [True, settings]}})


def script_args(w: FakeWebui, settings: dict[str, Any], *, is_img2img: bool = False) -> list:
    """script_args selecting the "Dump U-Net features" dropdown script with `settings`."""
    return w.api_script_args(w.runner(is_img2img), script_name=SCRIPT, script_args=[settings])


@contextlib.contextmanager
def left_clean(w: FakeWebui) -> Iterator[None]:
    """Around one test: the options it changes are restored, interrupt flags cleared, and no hook may stay on the
    U-Net."""
    saved = dict(w.shared.opts.data)
    yield
    w.shared.opts.data.clear()
    w.shared.opts.data.update(saved)
    w.shared.state.interrupted = w.shared.state.skipped = False
    assert hooks_on(w.unet) == 0


def hooks_on(module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())


def map_labels(w: FakeWebui, processed) -> list[str | None]:
    """For every gallery item after the grid: the map's description, or None for a generated image."""
    parse = w.infotext_utils.parse_generation_parameters
    first = processed.index_of_first_image
    return [parse(text).get("Dump U-Net map") for text in processed.infotexts[first:]]


def features(layers: str, **more: Any) -> dict[str, Any]:
    return {"features.enabled": True, "features.layers": layers, **more}
