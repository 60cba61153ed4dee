""" "Selected Layer Info": what a tab's input selects in the loaded model, or what is wrong with it.

Computed by the server from the loaded U-Net at the current width and height (block contents, input → output
shapes, and for the Attention tab each attention module with its heads and query count), refreshed as the user
types. The same checks run as when a job starts, so a mistake shows here before anything is generated.
"""

from __future__ import annotations

import html
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from lib_dumpunet.errors import DumpUnetError
from lib_dumpunet.job import make_plan
from lib_dumpunet.layout import UNetLayout
from lib_dumpunet.settings import from_mapping

__all__ = ["layout_of", "tab_info"]

_layouts: weakref.WeakKeyDictionary[nn.Module, UNetLayout] = weakref.WeakKeyDictionary()
_ANY_STEPS = 10**6


def layout_of(unet: nn.Module) -> UNetLayout:
    """The layout of a U-Net, found once per model object."""
    if unet not in _layouts:
        _layouts[unet] = UNetLayout(unet)
    return _layouts[unet]


def tab_info(
    tab: str,
    values: Mapping[str, Any],
    width: int,
    height: int,
    *,
    unet: nn.Module | None,
    dump_base: Path,
    shared: bool,
) -> str:
    """HTML for a tab's info panel; `values` are that tab's settings by path ("features.layers" …)."""
    if unet is None:
        return _message("No Stable Diffusion U-Net is loaded.")
    tab_values = {k: v for k, v in values.items() if k.startswith(f"{tab}.")}
    if not str(tab_values.get(f"{tab}.layers", "")).strip() and not tab_values.get(f"{tab}.enabled"):
        return _message("Enter Layers, e.g. IN00-OUT11 or IN04,M00.")
    tab_values[f"{tab}.enabled"] = True
    if tab == "layer_prompt":
        tab_values["layer_prompt.diff"] = True
    try:
        layout = layout_of(unet)
        settings = from_mapping(tab_values)
        plan = make_plan(settings, layout, job_steps=_ANY_STEPS, dump_base=dump_base, shared=shared)
        shapes = layout.shapes(width, height)
    except DumpUnetError as err:
        return f"<div class='dumpunet-error'><pre>{html.escape(str(err))}</pre></div>"
    chosen = {"features": plan.features, "attention": plan.attention, "layer_prompt": plan.diff}[tab]
    lines = [f"{width}×{height}, {len(chosen.blocks)} block(s); shapes are (channels, height, width)"]
    for name in chosen.blocks:
        if name in _VIEWS:
            lines.append(f"{name:<6}{_VIEWS[name]}")
            continue
        block, shape = layout.block(name), shapes[name]
        lines.append(f"{name:<6}{', '.join(block.contents):<26}{shape.input} → {shape.output}")
        if tab != "attention":
            continue
        for info in block.attentions:
            size = layout.transformer_input(info, width, height)
            keys = "77·chunks tokens" if info.kind == "attn2" else f"{size.height * size.width} positions"
            lines.append(
                f"      {info.label:<16}{info.heads} heads × {info.dim_head}, "
                f"{size.height}×{size.width} queries, {keys}"
            )
        if not block.attentions:
            lines.append("      (no attention layers: nothing to extract here)")
    return f"<pre class='dumpunet-layerinfo'>{html.escape(chr(10).join(lines))}</pre>"


# The features tab's pseudo-blocks, as the info panel describes them.
_VIEWS = {
    "latent": "view: the U-Net's input latent, as RGB",
    "x0": "view: the guided prediction of the clean latent, as RGB",
    "cfg": "view: the guidance |cond − uncond| per latent pixel, as a heat map",
}


def _message(text: str) -> str:
    return f"<p class='dumpunet-hint'>{html.escape(text)}</p>"
