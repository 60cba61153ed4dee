from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lib_dumpunet.grid import canvas_size, grid_shape, tile

# (channels, tile width, tile height) -> (grid, canvas width × height): the original's canvases at 512×512 on SD1
# (reference/dumpunet-spec.md §4.4) and its non-square examples.
ORIGINAL = [
    pytest.param(320, 64, 64, (20, 16), (1299, 1039), id="IN00"),
    pytest.param(320, 32, 32, (20, 16), (659, 527), id="IN03"),
    pytest.param(640, 32, 32, (32, 20), (1055, 659), id="IN04"),
    pytest.param(640, 16, 16, (32, 20), (543, 339), id="IN06"),
    pytest.param(1280, 16, 16, (40, 32), (679, 543), id="IN07"),
    pytest.param(1280, 8, 8, (40, 32), (359, 287), id="M00"),
    pytest.param(1280, 32, 32, (40, 32), (1319, 1055), id="OUT05"),
    pytest.param(640, 64, 64, (32, 20), (2079, 1299), id="OUT08"),
    pytest.param(320, 64, 96, (20, 16), (1299, 1551), id="IN00-512x768"),
    pytest.param(320, 96, 64, (16, 20), (1551, 1299), id="IN00-768x512"),
]


@pytest.mark.parametrize(("channels", "width", "height", "grid", "canvas"), ORIGINAL)
def test_the_originals_grids_and_canvas_sizes(channels, width, height, grid, canvas):
    assert grid_shape(channels, width, height) == grid
    assert canvas_size(*grid, width, height) == canvas
    drawn = tile(np.zeros((channels, height, width), np.uint8), *grid)
    assert drawn.shape == (canvas[1], canvas[0])


@pytest.mark.parametrize(
    ("channels", "width", "height", "grid"),
    [
        (1, 8, 8, (1, 1)),
        (2, 8, 8, (2, 1)),  # the width doubles first when the sides are equal
        (4, 8, 8, (2, 2)),
        (3, 8, 8, (3, 1)),
        (7, 8, 8, (7, 1)),  # a prime: one row, nothing to rebalance
        (9, 8, 8, (9, 1)),
        (32, 16, 16, (8, 4)),
        (64, 32, 32, (8, 8)),
        (128, 64, 64, (16, 8)),  # tiny test widths
        (2, 8, 32, (2, 1)),  # a tall tile: the width is the shorter side
    ],
)
def test_small_and_odd_channel_counts(channels, width, height, grid):
    assert grid_shape(channels, width, height) == grid


def test_the_heuristic_step_by_step():
    # 6 × 8×8: [8, 8] -> [16, 8] (3 left) -> ×3 on the shorter height -> [16, 24]: balanced enough
    assert grid_shape(6, 8, 8) == (2, 3)
    # 10 × 8×8: [16, 8] -> ×5 -> [16, 40]: 40 > 2·16 but 5 tiles down is odd, so it stays
    assert grid_shape(10, 8, 8) == (2, 5)
    # 12 × 8×8: [16, 8] -> [16, 16] -> ×3 on the width -> [48, 16]: 6 across is even -> [24, 32]
    assert grid_shape(12, 8, 8) == (3, 4)


@given(st.integers(1, 5000), st.integers(1, 200), st.integers(1, 200))
def test_every_channel_gets_exactly_one_slot(channels, width, height):
    across, down = grid_shape(channels, width, height)
    assert across >= 1
    assert down >= 1
    assert across * down == channels  # the heuristic only ever moves factors of the channel count around


@given(st.integers(1, 4096), st.integers(1, 128), st.integers(1, 128))
def test_grids_are_never_lopsided_when_they_could_be_rebalanced(channels, width, height):
    across, down = grid_shape(channels, width, height)
    w, h = across * width, down * height
    assert not (w > 2 * h and across % 2 == 0)
    assert not (h > 2 * w and down % 2 == 0)


@pytest.mark.parametrize("bad", [(0, 8, 8), (8, 0, 8), (8, 8, -1), (2.0, 8, 8), (True, 8, 8)])
def test_grid_shape_needs_positive_integers(bad):
    with pytest.raises(ValueError, match="positive integer"):
        grid_shape(*bad)


# --- tile ----------------------------------------------------------------------------------------------------------


def numbered(count: int, height: int, width: int, *extra: int) -> np.ndarray:
    """Images filled with 1, 2, 3 … so every tile can be recognised (never 0, the gap colour)."""
    values = np.arange(1, count + 1, dtype=np.uint8).reshape(count, *([1] * (2 + len(extra))))
    return np.broadcast_to(values, (count, height, width, *extra)).copy()


def test_tiles_fill_row_major_from_the_top_left_with_black_gaps():
    canvas = tile(numbered(5, 2, 3), 3, 2)
    assert canvas.shape == (2 * 3 - 1, 3 * 4 - 1)
    expected = np.array(
        [
            [1, 1, 1, 0, 2, 2, 2, 0, 3, 3, 3],
            [1, 1, 1, 0, 2, 2, 2, 0, 3, 3, 3],
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            [4, 4, 4, 0, 5, 5, 5, 0, 0, 0, 0],
            [4, 4, 4, 0, 5, 5, 5, 0, 0, 0, 0],
        ],
        dtype=np.uint8,
    )
    np.testing.assert_array_equal(canvas, expected)


@pytest.mark.parametrize(("count", "across", "down"), [(20, 5, 4), (17, 5, 4), (1, 1, 1), (1, 4, 3), (0, 2, 2)])
def test_every_tile_lands_in_its_slot_in_colour(count, across, down):
    height, width = 3, 4
    images = numbered(count, height, width, 3)
    images[..., 1] += 100  # distinct colour channels, so a channel mix-up would show
    canvas = tile(images, across, down)
    assert canvas.shape == (down * (height + 1) - 1, across * (width + 1) - 1, 3)
    assert canvas.dtype == np.uint8
    assert canvas.flags.c_contiguous
    for index in range(across * down):
        row, column = divmod(index, across)
        top, left = row * (height + 1), column * (width + 1)
        placed = canvas[top : top + height, left : left + width]
        if index < count:
            np.testing.assert_array_equal(placed, images[index])
        else:
            assert not placed.any()
    gaps = np.ones(canvas.shape[:2], bool)
    for index in range(across * down):
        row, column = divmod(index, across)
        gaps[row * (height + 1) : row * (height + 1) + height, column * (width + 1) : column * (width + 1) + width] = 0
    assert not canvas[gaps].any()


def test_channel_zero_is_top_left_on_an_original_size_canvas():
    images = np.zeros((320, 64, 64), np.uint8)
    images[0] = 200
    images[19] = 150  # end of the first row
    images[20] = 100  # start of the second row
    canvas = tile(images, *grid_shape(320, 64, 64))
    assert canvas[0, 0] == 200
    assert canvas[63, 63] == 200
    assert canvas[64, 64] == 0
    assert canvas[0, 1298] == 150
    assert canvas[65, 0] == 100


def test_more_images_than_slots_are_refused():
    with pytest.raises(ValueError, match="do not fit"):
        tile(np.zeros((7, 2, 2), np.uint8), 3, 2)


@pytest.mark.parametrize("shape", [(2, 2), (1, 2, 2, 3, 1)])
def test_tile_needs_a_stack_of_images(shape):
    with pytest.raises(ValueError, match="expected images"):
        tile(np.zeros(shape, np.uint8), 1, 1)
