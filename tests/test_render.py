from __future__ import annotations

import numpy as np
import pytest
import torch

from lib_dumpunet.capture import Key
from lib_dumpunet.colorize import Colorizer, ColorSettings
from lib_dumpunet.render import describe, render

GREY = Colorizer.from_settings(ColorSettings(method="White/Black"))
DEFAULT = Colorizer.from_settings(ColorSettings())


def key(kind: str, place: str = "IN04", **kw) -> Key:
    return Key(image=0, pass_index=kw.get("pass_index", 0), step=5, place=place, kind=kind, sub=kw.get("sub", 0))


def test_features_use_the_original_canvas():
    maps = render(key("features", "IN00"), torch.randn(320, 64, 64), DEFAULT)
    assert [m.image.size for m in maps] == [(1299, 1039)]
    assert maps[0].image.mode == "RGB"
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
