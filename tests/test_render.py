from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lib_dumpunet.capture import Key
from lib_dumpunet.colorize import GREYS, Colorizer, ColorSettings
from lib_dumpunet.grid import grid_shape, tile
from lib_dumpunet.render import describe, enlarge, render

GREY = Colorizer.from_settings(ColorSettings(method="White/Black"))
DEFAULT = Colorizer.from_settings(ColorSettings())


def key(kind: str, place: str = "IN04", **kw) -> Key:
    return Key(image=0, pass_index=kw.get("pass_index", 0), step=5, place=place, kind=kind, sub=kw.get("sub", 0))


def test_features_use_the_original_canvas():
    maps = render(key("features", "IN00"), torch.randn(320, 64, 64), DEFAULT)
    assert [m.image.size for m in maps] == [(1299, 1039)]
    assert maps[0].image.mode == "P"
    assert maps[0].label == "IN00, step 5, U-Net features"


def test_averaged_map_comes_first():
    maps = render(key("features", "M00"), torch.randn(1280, 8, 8), GREY, average="sum")
    assert [m.averaged for m in maps] == [True, False]
    assert maps[0].image.size == (8, 8)
    assert maps[1].image.size == (359, 287)
    assert maps[0].label.endswith("averaged")


def test_qk_columns_are_tokens_and_rows_are_heads():
    heads, tokens, h, w = 3, 77, 4, 5
    x = torch.zeros(heads, tokens, h, w)
    x[2, 10] = 1.0  # head 2, token 10 lights up
    x[0, 0] = 0.5
    canvas = np.asarray(render(key("qk"), x, GREY)[0].image)
    assert canvas.shape == (heads * (h + 1) - 1, tokens * (w + 1) - 1)
    lit = np.argwhere(canvas == 255)
    assert {(r // (h + 1), c // (w + 1)) for r, c in lit} == {(2, 10)}


def test_token_labels_are_written_under_the_columns():
    x = torch.rand(2, 154, 1, 1)  # two chunks at a 1×1 layer: tiles are enlarged to be readable
    labels = ["BOS", *(f"t{i}" for i in range(75)), "EOS"] * 2
    plain = render(key("qk", "M00"), x, GREY)[0].image
    labelled = render(key("qk", "M00"), x, GREY, tokens=labels)[0].image
    assert plain.size == (154 * 2 - 1, 3)
    assert labelled.width == 154 * 13 - 1
    assert labelled.height > 2 * 13 - 1 + 10
    strip = np.asarray(labelled)[2 * 13 - 1 :]
    assert strip.max() > 0, "text is drawn"
    assert strip[:, 13 * 5 : 13 * 5 + 12].max() > 0, "column 5 has its label"


def test_k_tiles_are_dim_head_by_tokens_per_head():
    maps = render(key("k"), torch.randn(8, 77, 40), GREY, average="1-norm")
    assert maps[0].image.size == (77, 40)
    assert maps[1].image.size == (77, 8 * 41 - 1)


def test_self_attention_marks_each_query_point():
    x = torch.zeros(2, 2, 4, 4)
    maps = render(key("self"), x, GREY, points=((0.0, 0.0), (0.9, 0.6)), average="sum")
    avg, grid = (np.asarray(m.image) for m in maps)
    assert avg.shape == (4, 9)
    assert avg[0, 0] == 255 and avg[2, 5 + 3] == 255
    assert grid.shape == (9, 9)
    assert grid[5, 0] == 255, "head 1, point 0 is marked too"
    assert int(avg.sum()) == 2 * 255


@pytest.mark.parametrize(
    ("k", "text"),
    [
        (key("features", pass_index=1), "IN04, step 5, U-Net features, hires pass"),
        (key("qk", "M00.attn2.3", sub=1), "M00.attn2.3, step 5, Q*K, AND 2"),
        (Key(0, 0, 2, "OUT11", "diff", "uncond"), "OUT11, step 2, difference, uncond"),
    ],
)
def test_descriptions(k, text):
    assert describe(k) == text


def test_nan_does_not_break_rendering():
    x = torch.full((4, 3, 3), float("nan"))
    assert render(key("features"), x, DEFAULT)[0].image.size == (7, 7)


# --- palette images ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings",
    [ColorSettings(), ColorSettings(method="Red/Blue"), ColorSettings(h="(2-2*v)/3"), ColorSettings(space="RGB")],
    ids=["default-hsl", "red-blue", "attention-hsl", "rgb-abs"],
)
def test_palette_maps_stay_within_the_stated_error_of_the_exact_colours(settings):
    colorizer = Colorizer.from_settings(settings)
    x = torch.randn(40, 9, 7)
    x[3, 2, 2] = float("nan")
    image = render(key("features"), x, colorizer)[0].image
    assert image.mode == "P"
    exact = tile(colorizer(x), *grid_shape(40, 7, 9))  # today's RGB map, gaps included
    shown = np.asarray(image.convert("RGB")).astype(int)
    assert shown.shape == exact.shape
    difference = np.abs(shown - exact.astype(int)).max()
    assert difference <= colorizer.max_palette_error
    assert colorizer.max_palette_error <= 4
    assert (shown[(exact == 0).all(axis=2)] == 0).all(), "gaps and NaN are exactly black"


def test_the_palette_holds_greys_first_then_at_most_240_colours():
    colorizer = Colorizer.from_settings(ColorSettings())
    palette = colorizer.palette
    assert palette.shape == (256, 3)
    assert (palette[0] == 0).all() and (palette[GREYS - 1] == 255).all()
    assert (palette[:GREYS, 0] == palette[:GREYS, 1]).all()
    assert colorizer.white == GREYS - 1
    assert GREYS == 16


def test_labels_on_a_palette_map_are_greys_of_the_palette():
    x = torch.rand(1, 77, 2, 2)
    labels = ["BOS", *(f"word{i}" for i in range(75)), "EOS"]
    image = render(key("qk", "M00"), x, DEFAULT, tokens=labels)[0].image
    assert image.mode == "P"
    strip = np.asarray(image)[12:]
    assert strip.max() == GREYS - 1, "white text"
    assert set(np.unique(strip)) <= set(range(GREYS))
    grey = render(key("qk", "M00"), x, GREY, tokens=labels)[0].image
    grey_strip = np.asarray(grey)[12:].astype(int)
    palette_strip = np.asarray(image.convert("L"))[12:].astype(int)
    assert np.abs(grey_strip - palette_strip).max() <= 8, "the same text, antialiased, within half a grey step"


def test_self_attention_marks_are_white_on_palette_maps():
    maps = render(key("self"), torch.zeros(1, 1, 4, 4), DEFAULT, points=((0.0, 0.0),))
    rgb = np.asarray(maps[0].image.convert("RGB"))
    assert (rgb[0, 0] == 255).all()


@pytest.mark.parametrize(
    ("size", "minimum", "expected"),
    [
        ((35, 71), 256, (140, 284)),
        ((8, 8), 256, (256, 256)),
        ((1299, 1039), 256, (1299, 1039)),
        ((300, 10), 256, (300, 10)),
        ((35, 71), 0, (35, 71)),
    ],
)
def test_enlarge_grows_only_small_maps_by_whole_factors(size, minimum, expected):
    image = Image.new("P", size, 3)
    image.putpalette(DEFAULT.palette.tobytes())
    out = enlarge(image, minimum)
    assert out.size == expected
    assert out.mode == "P"
    assert out.getpalette() == image.getpalette()
    assert set(np.unique(np.asarray(out))) == {3}
