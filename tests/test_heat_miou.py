"""The measure behind the word heat-map mIoU benchmark (tests/benchmarks/bench_heatmap_miou.py) is right: IoU of a
thresholded map on hand-counted maps and masks, the masks a word names read back from an image, the centre baseline,
and the map scored being the one the extension draws."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from benchmarks.bench_heatmap_miou import centre_map, iou, product, share, word_truths

from lib_dumpunet.heatmap import WordColumns, WordHeat
from lib_dumpunet.world import Scene, SceneObject, render
from lib_dumpunet.world.analyse import analyse, match

SIDE = 64


def test_iou_counts_the_thresholded_pixels_against_the_mask():
    heat = np.array([[0.0, 0.39, 0.4, 1.0], [0.0, 0.0, 0.9, 0.5]], np.float32)
    mask = np.array([[False, True, True, False], [False, False, True, True]])
    # hot (≥ 0.4): (0,2), (0,3), (1,2), (1,3); mask: (0,1), (0,2), (1,2), (1,3) → 3 shared of 5 in either
    assert iou(heat, mask) == pytest.approx(3 / 5)
    assert iou(heat, mask, threshold=0.85) == pytest.approx(1 / 5)  # hot: (0,3) outside the mask, (1,2) inside
    assert iou(heat, heat >= 0.4) == 1.0
    assert iou(np.zeros((2, 2)), np.zeros((2, 2), bool)) == 1.0  # nothing hot, nothing asked
    assert iou(np.ones((2, 2)), np.zeros((2, 2), bool)) == 0.0


def test_a_uniform_map_scores_the_mask_share():
    mask = np.zeros((10, 10), bool)
    mask[:3, :4] = True
    assert iou(np.ones((10, 10)), mask) == pytest.approx(0.12)


def test_the_centre_baseline_is_a_disc_of_a_third_of_the_side_above_the_threshold():
    heat = centre_map(SIDE)
    assert heat.min() == 0.0
    assert heat.max() == pytest.approx(1.0, abs=0.01)
    assert heat[SIDE // 2, SIDE // 2] > 0.99
    assert (heat >= 0.4).mean() == pytest.approx(np.pi / 9, abs=0.02)  # radius ≈ 0.34 of the side


def _scene() -> Scene:
    return Scene(
        "gray",
        (
            SceneObject("small", "red", "circle", 0.25, 0.25, 0.3),
            SceneObject("large", "blue", "circle", 0.7, 0.7, 0.45),
            SceneObject("small", "red", "square", 0.75, 0.2, 0.28),
        ),
    )


def test_word_masks_read_from_an_exact_image_are_the_scenes_own():
    scene = _scene()
    truths = word_truths(scene, analyse(render(scene, SIDE).image))
    exact = scene.word_masks(SIDE)
    assert [(t.word, t.kind) for t in truths] == [
        ("circle", "shape"),
        ("square", "shape"),
        ("red", "colour"),
        ("blue", "colour"),
    ]
    for t in truths:
        assert t.mask is not None
        assert iou(exact[t.word].astype(np.float32), t.mask) > 0.97  # the analyser drops no more than edge pixels
    circle = next(t for t in truths if t.word == "circle")
    assert circle.mask.sum() == pytest.approx(exact["circle"].sum(), rel=0.03)  # both circles: the union


def test_a_word_whose_object_was_drawn_wrong_is_left_out():
    scene = _scene()
    triangle = SceneObject("small", "red", "triangle", 0.75, 0.2, 0.28)
    drawn = Scene("gray", (scene.objects[0], scene.objects[1], triangle))
    found = match(scene, analyse(render(drawn, SIDE).image))
    assert [f.shape if f else None for f in found] == ["circle", "circle", "triangle"]
    truths = {t.word: t.mask for t in word_truths(scene, analyse(render(drawn, SIDE).image))}
    assert truths["square"] is None  # the red square came out a triangle: its shape word cannot be scored
    assert truths["red"] is not None  # but both red objects were found in their colour
    assert truths["circle"] is not None


def test_an_object_missing_in_its_colour_leaves_its_colour_word_out():
    scene = _scene()
    drawn = Scene("gray", scene.objects[:2])
    truths = {t.word: t.mask for t in word_truths(scene, analyse(render(drawn, SIDE).image))}
    assert truths["red"] is None
    assert truths["blue"] is not None


def test_the_map_scored_is_the_one_the_extension_draws():
    raw = torch.rand(8, 8, generator=torch.Generator().manual_seed(0))
    drawn = WordHeat(WordColumns("circle", ((("cond", 0), (3,)),)), 0, raw, ((1, raw),)).heat(SIDE, SIDE)
    assert np.allclose(product({"circle": raw}, "circle", SIDE), drawn)


def test_the_share_over_words_divides_by_every_words_sum_per_cell():
    a = torch.tensor([[1.0, 3.0], [2.0, 2.0]])
    b = torch.tensor([[3.0, 1.0], [2.0, 6.0]])
    shares = share({"a": a, "b": b}, "a", 2)  # a / (a + b) = [[.25, .75], [.5, .25]], then min–max
    assert np.allclose(shares, [[0.0, 1.0], [0.5, 0.0]])
