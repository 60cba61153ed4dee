"""X/Y/Z plot axes.

  Dump U-Net: per-block prompt blocks  one cell per block: every (~: … :~) construct of the prompts gets that block
                                       as its block spec (`_` pairs stay) — the original README's Dynamic-Prompts
                                       recipe, done natively. The cell shows the generated image.
  Dump U-Net: layers                   one cell per block: U-Net features of that block; the cell shows its
                                       channel-averaged map, scaled to the image so cells line up.
  Dump U-Net: steps                    one cell per sampler step: the same, at that step.
  Dump U-Net: heat map word            one cell per word of the prompt: its word heat map over the image (every
                                       attn2 layer and step unless the section's Word heat maps tab says otherwise).

Axis values use the layer and step grammars (`IN00-OUT11`, `IN00-OUT11(+2)`, `1-20(+5)`). An axis turns on what it
needs through overrides on `p`, so the Dump U-Net section does not have to be enabled — but the steps axis needs
blocks: the section's Layers (section on) or a layers axis. Axes are registered in an
`on_before_ui` callback, at most once each, however often the UI is reloaded.
"""

from __future__ import annotations

from typing import Any

from modules import scripts, shared

from lib_dumpunet.errors import DumpUnetError
from lib_dumpunet.layer_prompt import replace_blocks
from lib_dumpunet.specs import parse_layers, parse_steps
from lib_dumpunet.webui.engine import CELL, HEAT_CELL, OVERRIDES
from lib_dumpunet.webui.host import unet_of
from lib_dumpunet.webui.info import layout_of

__all__ = ["AXIS_LABELS", "register_axes"]

_XYZ_MODULES = {"xyz_grid.py", "xy_grid.py", "scripts.xyz_grid", "scripts.xy_grid"}
AXIS_LABELS = (
    "Dump U-Net: per-block prompt blocks",
    "Dump U-Net: layers",
    "Dump U-Net: steps",
    "Dump U-Net: heat map word",
)
_MAX_STEPS = 1000


def _xyz_module() -> Any | None:
    return next((d.module for d in scripts.scripts_data if d.script_class.__module__ in _XYZ_MODULES), None)


def _names() -> tuple[str, ...]:
    unet = unet_of(shared.sd_model)
    if unet is None:
        msg = "the loaded model has no U-Net blocks"
        raise DumpUnetError(msg)
    return layout_of(unet).names


def _override(p: Any, **values: Any) -> None:
    setattr(p, OVERRIDES, {**getattr(p, OVERRIDES, {}), **values})


def _prepare_blocks(text: str) -> list[str]:
    return list(parse_layers(text, _names(), field="X/Y/Z values"))


def _prepare_layers(text: str) -> list[str]:
    return list(parse_layers(text, _names(), field="X/Y/Z values", views=True))  # latent, x0, cfg too


def _prepare_steps(text: str) -> list[str]:
    selection = parse_steps(text, field="X/Y/Z values")
    if selection.is_all:
        msg = "X/Y/Z values: give the steps, e.g. 1-20(+5)"
        raise DumpUnetError(msg)
    steps = sorted({s for r in selection.ranges for s in r[:_MAX_STEPS]})
    return [str(s) for s in steps[:_MAX_STEPS]]  # X/Y/Z converts the values of an int axis itself


def apply_prompt_blocks(p: Any, x: str, _xs: list) -> None:
    names = _names()
    p.prompt = _replace(p.prompt, x, names, "Prompt")
    p.negative_prompt = _replace(p.negative_prompt, x, names, "Negative prompt")
    _override(p, **{"layer_prompt.enabled": True})


def _replace(prompt: Any, block: str, names: tuple[str, ...], field: str) -> Any:
    if isinstance(prompt, list):
        return [replace_blocks(t, block, names, field=field) for t in prompt]
    return replace_blocks(prompt, block, names, field=field)


def confirm_prompt_blocks(p: Any, _xs: list) -> None:
    prompts = [p.prompt, p.negative_prompt]
    if not any("(~:" in t for x in prompts for t in (x if isinstance(x, list) else [x])):
        msg = "the per-block prompt blocks axis needs a (~: BLOCKS: text :~) construct in the prompt"
        raise DumpUnetError(msg)


def apply_layers(p: Any, x: str, _xs: list) -> None:
    _override(p, **{"features.enabled": True, "features.layers": x})
    setattr(p, CELL, "map")


def apply_steps(p: Any, x: int, _xs: list) -> None:
    _override(p, **{"features.enabled": True, "features.steps": str(x)})
    setattr(p, CELL, "map")


def apply_heat_word(p: Any, x: str, _xs: list) -> None:
    word = x.strip()
    if not word or word[0].isdigit() or word[0] in '-"' or "," in word:  # one word per cell, never a column
        word = '"' + word.replace('"', '""') + '"'
    _override(p, **{"heatmap.enabled": True, "heatmap.words": word})
    setattr(p, CELL, HEAT_CELL)


def _format(_p: Any, _opt: Any, x: Any) -> str:
    return str(x)


def register_axes() -> None:
    """Add the axes to X/Y/Z plot if it is installed and they are not there yet."""
    xyz = _xyz_module()
    if xyz is None:
        return
    present = {opt.label for opt in xyz.axis_options}
    options = [
        xyz.AxisOption(
            AXIS_LABELS[0],
            str,
            apply_prompt_blocks,
            format_value=_format,
            confirm=confirm_prompt_blocks,
            prepare=_prepare_blocks,
        ),
        xyz.AxisOption(AXIS_LABELS[1], str, apply_layers, format_value=_format, prepare=_prepare_layers),
        xyz.AxisOption(AXIS_LABELS[2], int, apply_steps, format_value=_format, prepare=_prepare_steps),
        xyz.AxisOption(AXIS_LABELS[3], str, apply_heat_word, format_value=_format),
    ]
    xyz.axis_options.extend(o for o in options if o.label not in present)
