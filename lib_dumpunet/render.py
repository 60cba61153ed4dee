"""Captured tensors → the images a user looks at, in the original extension's layouts.

Per captured tensor (one image, pass, step and place):
  features, V*Q*K, differences  (C, h, w)        one tile per channel, tiled with the original's grid heuristic
  Q*K                           (heads, T, h, w) columns = tokens (BOS, 75 tokens, EOS per 77-token chunk), rows =
                                                 heads; optional token labels under the columns
  K                             (heads, T, d)    one (d × T) tile per head, stacked top to bottom
  self-attention                (heads, P, h, w) columns = query points (each marked), rows = heads
"Show averaged map" puts one more image first: the channel average (features), the head average (Q*K, K,
self-attention). Colours come from a `Colorizer`; tiles and canvases from `grid`.

Images are grey ("L", White/Black) or palette images ("P", every other method): one byte per pixel indexing the
colorizer's 256-colour palette, which holds the gaps' black, the marks' white and the label text's greys besides the
colour table (quantised: `Colorizer.max_palette_error`). `enlarge` is the optional display minimum for tiny maps.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from lib_dumpunet.capture import Key
from lib_dumpunet.colorize import GREYS, Colorizer, average_map
from lib_dumpunet.grid import canvas_size, grid_shape, tile

__all__ = ["KIND_NAMES", "MapImage", "describe", "enlarge", "render"]

KIND_NAMES = {
    "features": "U-Net features",
    "k": "K",
    "qk": "Q*K",
    "vqk": "V*Q*K",
    "self": "self-attention",
    "diff": "difference",
}
# Token labels need columns at least this wide to be readable; narrower tiles are enlarged (nearest) first.
_LABEL_MIN_TILE = 12


# the kind's word in saved file names
_FILE_TAGS = {
    "features": "unet",
    "k": "attn-k",
    "qk": "attn-qk",
    "vqk": "attn-vqk",
    "self": "attn-self",
    "diff": "diff",
}


@dataclass(frozen=True)
class MapImage:
    """One image for the gallery: what it shows (`key`), the picture, and a one-line description."""

    key: Key
    image: Image.Image
    label: str
    averaged: bool = False

    @property
    def file_suffix(self) -> str:
        """'-dumpunet-unet-IN04-005' (+ '-and2', '-uncond', '-avg'): what a saved map adds to its image's file name,
        the same in the webui and on the command line."""
        key = self.key
        step = f"{'hr' if key.pass_index else ''}{key.step:03d}"
        parts = ["-dumpunet", _FILE_TAGS.get(key.kind, key.kind), key.place, step]
        if key.sub:
            parts.append(f"and{key.sub + 1}")
        if key.branch != "cond":
            parts.append(key.branch)
        if self.averaged:
            parts.append("avg")
        return "-".join(parts)


def describe(key: Key, *, averaged: bool = False) -> str:
    """'IN04, step 5, U-Net features' (+ ', hires pass', ', AND 2', ', uncond', ', averaged')."""
    parts = [key.place, f"step {key.step}", KIND_NAMES.get(key.kind, key.kind)]
    if key.pass_index:
        parts.append("hires pass")
    if key.sub:
        parts.append(f"AND {key.sub + 1}")
    if key.branch != "cond":
        parts.append(key.branch)
    if averaged:
        parts.append("averaged")
    return ", ".join(parts)


def render(
    key: Key,
    tensor: torch.Tensor,
    colorizer: Colorizer,
    *,
    average: str | None = None,
    tokens: Sequence[str] | None = None,
    points: Sequence[tuple[float, float]] | None = None,
) -> list[MapImage]:
    """The gallery images for one captured tensor, averaged map first when `average` is "sum", "1-norm" or "2-norm"."""
    x = tensor.detach().float().cpu()
    images: list[tuple[Image.Image, bool]] = []
    if key.kind == "k":
        maps = x.transpose(1, 2)  # (heads, d, T): each head a d × T tile
        if average:
            images.append((_image(colorizer.indexed(average_map(maps, average)[None])[0], colorizer), True))
        images.append((_image(tile(colorizer.indexed(maps), 1, maps.shape[0]), colorizer), False))
    elif key.kind in ("qk", "self"):
        heads, columns = x.shape[:2]
        mark = _point_marks(points, *x.shape[-2:]) if key.kind == "self" else None
        if average:
            mean = average_map(x.reshape(heads, -1, x.shape[-1]), average).reshape(x.shape[1:])  # over heads
            images.append((_columns(colorizer.indexed(mean), colorizer, columns, 1, tokens, mark), True))
        flat = x.reshape(heads * columns, *x.shape[-2:])
        images.append((_columns(colorizer.indexed(flat), colorizer, columns, heads, tokens, mark), False))
    else:  # features, V*Q*K, differences: one tile per channel
        if average:
            images.append((_image(colorizer.indexed(average_map(x, average)[None])[0], colorizer), True))
        images.append((_channel_grid(x, colorizer), False))
    return [MapImage(key, image, describe(key, averaged=avg), avg) for image, avg in images]


def enlarge(image: Image.Image, minimum: int) -> Image.Image:
    """`image` scaled up by the smallest whole factor (nearest neighbour) that makes its longer side at least
    `minimum` pixels; unchanged when it already is (or `minimum` is 0), so large maps never grow."""
    longest = max(image.size)
    if minimum <= 0 or longest >= minimum or longest == 0:
        return image
    factor = math.ceil(minimum / longest)
    return image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)


def _channel_grid(x: torch.Tensor, colorizer: Colorizer) -> Image.Image:
    """One tile per channel on the original's grid. The big intermediate arrays live in per-thread scratch memory
    reused from call to call (PIL copies the canvas), so a 320×64×64 block costs no fresh megabytes of page faults."""
    channels, height, width = x.shape
    across, down = grid_shape(channels, width, height)
    pixels = colorizer.indexed(x, out=_scratch("pixels", x.shape, np.dtype(np.uint8)))
    canvas_width, canvas_height = canvas_size(across, down, width, height)
    canvas = tile(pixels, across, down, out=_scratch("canvas", (canvas_height, canvas_width), np.dtype(np.uint8)))
    return _image(canvas, colorizer)


_local = threading.local()


def _scratch(name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A C-contiguous array of `shape` and `dtype` in this thread's reusable buffer `name` (grown as needed)."""
    size = math.prod(shape) * np.dtype(dtype).itemsize
    buffers = _local.__dict__.setdefault("buffers", {})
    buffer = buffers.get(name)
    if buffer is None or buffer.size < size:
        buffer = buffers[name] = np.empty(size, dtype=np.uint8)
    return buffer[:size].view(dtype).reshape(shape)


def _image(pixels: np.ndarray, colorizer: Colorizer) -> Image.Image:
    """A PIL image of `colorizer.indexed` pixels (uint8 (h, w)): grey levels, or indices into its palette."""
    height, width = pixels.shape
    image = Image.frombytes(colorizer.image_mode, (width, height), np.ascontiguousarray(pixels))
    if image.mode == "P":
        image.putpalette(colorizer.palette.tobytes())
    return image


def _columns(
    tiles: np.ndarray,
    colorizer: Colorizer,
    across: int,
    down: int,
    labels: Sequence[str] | None,
    marks: np.ndarray | None,
) -> Image.Image:
    """Tiles in `down` rows of `across` columns; query points marked; labels under the columns if given."""
    if marks is not None:
        tiles = tiles.copy()
        for column in range(across):
            tiles[column::across][:, marks[column]] = colorizer.white
    if labels is not None and tiles.shape[2] < _LABEL_MIN_TILE:
        scale = math.ceil(_LABEL_MIN_TILE / tiles.shape[2])
        tiles = tiles.repeat(scale, axis=1).repeat(scale, axis=2)
    canvas = _image(tile(tiles, across, down), colorizer)
    if labels is None:
        return canvas
    labels = [*labels[:across], *["pad"] * (across - len(labels))]  # rows padded to a longer prompt's chunks
    return _with_labels(canvas, tiles.shape[2] + 1, labels)


def _point_marks(points: Sequence[tuple[float, float]] | None, h: int, w: int) -> np.ndarray | None:
    """A boolean (points, h, w) mask with each query point's cell set."""
    if points is None:
        return None
    marks = np.zeros((len(points), h, w), dtype=bool)
    for i, (x, y) in enumerate(points):
        marks[i, min(int(y * h), h - 1), min(int(x * w), w - 1)] = True
    return marks


@cache
def _font() -> ImageFont.ImageFont:
    return ImageFont.load_default()


def _with_labels(canvas: Image.Image, pitch: int, labels: Sequence[str]) -> Image.Image:
    """`canvas` with a strip below it, each label written bottom-to-top under its column (white, antialiased; on a
    palette image the text's greys are the palette's first `GREYS` entries)."""
    font = _font()
    texts = [label[:24] for label in labels]
    longest = max((int(font.getlength(t)) for t in texts), default=0) + 4
    strip = Image.new("L", (canvas.width, longest), 0)
    for column, text in enumerate(texts):
        if not text:
            continue
        box = font.getbbox(text)
        word = Image.new("L", (int(font.getlength(text)) + 2, box[3] + 2), 0)
        ImageDraw.Draw(word).text((1, 0), text, fill=255, font=font)
        word = word.rotate(90, expand=True)
        x = column * pitch + max(0, (pitch - 1 - word.width) // 2)
        strip.paste(word, (x, 2))
    if canvas.mode == "P":
        levels = np.asarray(strip, dtype=np.float32) * ((GREYS - 1) / 255)
        strip = Image.frombytes("P", strip.size, np.rint(levels).astype(np.uint8).tobytes())
    out = Image.new(canvas.mode, (canvas.width, canvas.height + longest), 0)
    if canvas.mode == "P":
        out.putpalette(canvas.getpalette())
    out.paste(canvas, (0, 0))
    out.paste(strip, (0, canvas.height))
    return out
