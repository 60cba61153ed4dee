"""Laying out a stack of per-channel tiles on one canvas, as the original extension did.

`grid_shape` chooses how many tiles go across and down for C channels of a given tile size, with the original's
heuristic (so the canvases have the same sizes as before: 1299×1039 for a 320-channel 64×64 block at 512×512);
`tile` draws the tiles on a black canvas with a 1-pixel black gap between them and no outer border, channel 0 at
the top left, filling row by row. Both work for any channel count and tile size (SD1/SD2/SDXL widths, odd or prime
counts, non-square images). `tile` is one vectorised copy; nothing loops over tiles in Python.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

__all__ = ["canvas_size", "grid_shape", "tile"]


def grid_shape(channels: int, tile_width: int, tile_height: int) -> tuple[int, int]:
    """(tiles across, tiles down) for `channels` tiles of tile_width × tile_height; across·down == channels.

    The original's heuristic, in pixels: start from one tile; while the count is even, double the shorter side of
    the canvas (the width when they are equal) and halve the count; multiply the shorter side by what is left;
    then, while one side is more than twice the other and the number of tiles along it is even, halve it and
    double the other.

    >>> grid_shape(320, 64, 64), grid_shape(1280, 8, 8), grid_shape(320, 64, 96)
    ((20, 16), (40, 32), (20, 16))
    """
    for name, value in (("channels", channels), ("tile_width", tile_width), ("tile_height", tile_height)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"grid_shape: {name} must be a positive integer, got {value!r}")
    size = [int(tile_width), int(tile_height)]
    count = int(channels)
    while count % 2 == 0:
        size[_shorter(size)] *= 2
        count //= 2
    size[_shorter(size)] *= count
    while True:
        across, down = size[0] // tile_width, size[1] // tile_height
        if size[0] > 2 * size[1] and across % 2 == 0:
            size = [size[0] // 2, size[1] * 2]
        elif size[1] > 2 * size[0] and down % 2 == 0:
            size = [size[0] * 2, size[1] // 2]
        else:
            return across, down


def _shorter(size: list[int]) -> int:
    """Index of the shorter side; the width (0) when they are equal."""
    return 0 if size[0] <= size[1] else 1


def canvas_size(across: int, down: int, tile_width: int, tile_height: int) -> tuple[int, int]:
    """(width, height) in pixels of a canvas of across × down tiles with 1-pixel gaps and no border."""
    return across * (tile_width + 1) - 1, down * (tile_height + 1) - 1


def tile(images: np.ndarray, across: int, down: int, *, out: np.ndarray | None = None) -> np.ndarray:
    """Place images (N, h, w) or (N, h, w, channels) on a black canvas of across × down tiles, row-major.

    Returns an array of the images' dtype shaped (down·(h+1)−1, across·(w+1)−1[, channels]): image 0 at the top
    left, then along the first row, then the next; 1-pixel black gaps; unused slots stay black. N ≤ across·down.
    `out`, if given, is a C-contiguous array of that shape and dtype to draw on (it is cleared first).
    """
    if images.ndim not in (3, 4):
        raise ValueError(f"tile: expected images shaped (N, h, w) or (N, h, w, channels), got {images.shape}")
    if across < 1 or down < 1:
        raise ValueError(f"tile: the grid must be at least 1×1, got {across}×{down}")
    count, height, width = images.shape[:3]
    if count > across * down:
        raise ValueError(f"tile: {count} images do not fit in a {across}×{down} grid")
    extra = images.shape[3:]
    canvas_width, canvas_height = canvas_size(across, down, width, height)
    if out is None:
        canvas = np.zeros((canvas_height, canvas_width, *extra), dtype=images.dtype)
    else:
        if out.shape != (canvas_height, canvas_width, *extra) or out.dtype != images.dtype:
            raise ValueError(f"tile: out must be {(canvas_height, canvas_width, *extra)} {images.dtype}")
        canvas = out
        canvas.fill(0)
    # The tile slots as one strided view (down, h, across, w, …) of the canvas: a slot starts every h+1 rows and
    # every w+1 columns. Slots never overlap and the last one ends at the canvas's last pixel, so writing is safe.
    row, column = canvas.strides[:2]
    slots = as_strided(
        canvas,
        shape=(down, height, across, width, *extra),
        strides=(row * (height + 1), row, column * (width + 1), column, *canvas.strides[2:]),
        writeable=True,
    )
    full_rows, rest = divmod(count, across)
    slots[:full_rows] = images[: full_rows * across].reshape(full_rows, across, height, width, *extra).swapaxes(1, 2)
    if rest:
        slots[full_rows, :, :rest] = images[full_rows * across :].swapaxes(0, 1)
    return canvas
