"""A heat map over a photo: the three ways VXA shows where a token attends.

`overlay(image, heat, mode)` takes an RGB image (H, W, 3) uint8 and a heat map (H, W) with values in [0, 1]:

  "masked"  every pixel scaled by its heat, so cold regions go dark (the original VXA's default);
  "grey"    the heat alone as a grey image, 0 black and 1 white (the original's second mode);
  "colour"  the heat through a colour map, blended over the image with `opacity` (0: the image, 1: the map).

Colour maps are formulas over whole arrays ("jet": blue → cyan → yellow → red; "hot": black → red → yellow →
white; "grey"), so nothing loops per pixel. `resize_heat` brings a map of any grid to an image's size by bilinear
interpolation.
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from lib_dumpunet.errors import DumpUnetError

__all__ = ["COLORMAPS", "FLAT", "MODES", "Colormap", "Mode", "colormap", "min_max", "overlay", "resize_heat"]

Mode = Literal["masked", "grey", "colour"]
Colormap = Literal["jet", "hot", "grey"]
MODES: tuple[Mode, ...] = get_args(Mode)
COLORMAPS: tuple[Colormap, ...] = get_args(Colormap)


# Spreads below this fraction of a map's magnitude are rounding (a 1×1 grid brought to an image's size by bilinear
# interpolation varies in its last bits), not information: such a map is flat.
FLAT = 1e-5


def min_max(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """`x` stretched to [0, 1] by its own minimum and maximum. float32. A flat map (every value equal, up to
    rounding) singles no place out: it becomes all ones, so the whole image shows alike."""
    a = np.asarray(x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x, dtype=np.float32)
    a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = float(a.min()), float(a.max())
    if hi - lo <= FLAT * max(abs(lo), abs(hi), np.finfo(np.float32).tiny):
        return np.ones_like(a)
    return (a - lo) / (hi - lo)


def resize_heat(heat: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """A (h, w) map resized to (height, width), bilinear (pixel centres aligned, as image resizing does)."""
    if tuple(heat.shape) == (height, width):
        return heat.float()
    return F.interpolate(heat.float()[None, None], size=(height, width), mode="bilinear", align_corners=False)[0, 0]


def colormap(heat: np.ndarray, name: Colormap = "jet") -> np.ndarray:
    """(H, W) values in [0, 1] → (H, W, 3) uint8 colours."""
    v = np.clip(heat.astype(np.float32), 0.0, 1.0)
    if name == "jet":
        rgb = [np.clip(1.5 - np.abs(4.0 * v - k), 0.0, 1.0) for k in (3.0, 2.0, 1.0)]
    elif name == "hot":
        rgb = [np.clip(3.0 * v - k, 0.0, 1.0) for k in (0.0, 1.0, 2.0)]
    elif name == "grey":
        rgb = [v, v, v]
    else:
        msg = f"colour map {name!r} is not one of {', '.join(COLORMAPS)}"
        raise DumpUnetError(msg)
    return _bytes(np.stack(rgb, axis=-1))


def overlay(
    image: np.ndarray, heat: np.ndarray, mode: Mode = "masked", *, opacity: float = 0.5, cmap: Colormap = "jet"
) -> np.ndarray:
    """The heat map shown over (or instead of) `image`, as (H, W, 3) uint8."""
    if image.shape[:2] != heat.shape:
        msg = f"heat map {heat.shape} and image {image.shape[:2]} differ in size"
        raise DumpUnetError(msg)
    if not 0.0 <= opacity <= 1.0:
        msg = f"opacity must be between 0 and 1, got {opacity}"
        raise DumpUnetError(msg)
    h = np.clip(heat.astype(np.float32), 0.0, 1.0)[..., None]
    if mode == "masked":
        return _bytes(image.astype(np.float32) / 255.0 * h)
    if mode == "grey":
        return _bytes(np.repeat(h, 3, axis=-1))
    if mode == "colour":
        colours = colormap(h[..., 0], cmap).astype(np.float32)
        return _bytes(((1.0 - opacity) * image.astype(np.float32) + opacity * colours) / 255.0)
    msg = f"output mode {mode!r} is not one of {', '.join(MODES)}"
    raise DumpUnetError(msg)


def _bytes(x: np.ndarray) -> np.ndarray:
    """[0, 1] floats → uint8, rounded."""
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)
