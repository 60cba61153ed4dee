"""The shapes world: scenes are a pure function of (seed, index, split), captions name exactly what is drawn,
held-out pairs stay out of training, and the analyser reads world images back without a mistake."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from lib_dumpunet.world import BACKGROUNDS, COLOURS, HELD_OUT_PAIRS, SHAPES, SIZES, Scene, render, scene_at
from lib_dumpunet.world.analyse import Score, analyse, score

SIDE = 64


def test_scene_is_a_function_of_seed_index_and_split():
    first = [scene_at(7, i) for i in range(20)]
    again = [scene_at(7, i) for i in reversed(range(20))][::-1]
    assert first == again
    assert scene_at(7, 3) != scene_at(8, 3)
    assert scene_at(7, 3, "train") != scene_at(7, 3, "held_out")
    assert np.array_equal(render(first[0], SIDE).image, render(scene_at(7, 0), SIDE).image)


def test_scenes_have_one_to_three_separate_objects_in_the_frame():
    counts = set()
    for i in range(300):
        rendered = render(scene_at(1, i), SIDE)
        counts.add(len(rendered.scene.objects))
        total = np.sum(rendered.object_masks, axis=0)
        assert total.max() == 1, "shapes overlap"
        for obj, mask in zip(rendered.scene.objects, rendered.object_masks, strict=True):
            assert mask.any()
            assert obj.size in SIZES and obj.colour in COLOURS and obj.shape in SHAPES
            assert obj.cx - obj.extent / 2 > 0 and obj.cx + obj.extent / 2 < 1
    assert counts == {1, 2, 3}


def test_caption_lists_objects_in_order_and_names_the_background():
    scene = scene_at(2, 0)
    three = dataclasses.replace(scene, objects=(scene.objects[0],) * 3, background="gray")
    phrase = f"a {scene.objects[0].phrase}"
    assert three.caption == f"{phrase}, {phrase} and {phrase} on a gray background"
    one = dataclasses.replace(scene, objects=scene.objects[:1], background="black")
    assert one.caption == f"{phrase} on a black background"


def test_word_masks_are_exact_for_every_region_word_of_the_caption():
    for i in range(100):
        scene = scene_at(3, i)
        rendered = render(scene, SIDE)
        masks = scene.word_masks(SIDE)
        region_words = {w for w in scene.caption.replace(",", "").split() if w not in {"a", "and", "on"}}
        assert set(masks) == region_words
        image = rendered.image
        for colour, rgb in COLOURS.items():
            drawn = np.all(image == rgb, axis=-1)
            assert np.array_equal(masks.get(colour, np.zeros_like(drawn)), drawn), colour
        background = np.all(image == BACKGROUNDS[scene.background], axis=-1)
        assert np.array_equal(masks["background"], background)
        assert np.array_equal(masks[scene.background], background)
        for obj, mask in zip(scene.objects, rendered.object_masks, strict=True):
            for word in obj.words:
                assert np.all(masks[word][mask])


def test_held_out_pairs_never_train_and_always_evaluate():
    for i in range(2000):
        pairs = {(o.colour, o.shape) for o in scene_at(4, i, "train").objects}
        assert not pairs & HELD_OUT_PAIRS, scene_at(4, i).caption
    for i in range(300):
        pairs = {(o.colour, o.shape) for o in scene_at(4, i, "held_out").objects}
        assert pairs & HELD_OUT_PAIRS
    for colour, shape in HELD_OUT_PAIRS:  # each held-out colour and shape is still taught with others
        seen = [(o.colour, o.shape) for i in range(300) for o in scene_at(4, i).objects]
        assert any(c == colour for c, _ in seen) and any(s == shape for _, s in seen)


def test_unknown_split_is_refused():
    with pytest.raises(ValueError, match="split"):
        scene_at(0, 0, "test")  # type: ignore[arg-type]


@pytest.mark.parametrize("split", ["train", "held_out"])
def test_analyser_reads_world_images_exactly(split):
    for i in range(25):
        scene = scene_at(5, i, split)
        rendered = render(scene, SIDE)
        analysis = analyse(rendered.image)
        assert analysis.background == scene.background
        found = sorted((s.colour, s.shape, s.size) for s in analysis.shapes)
        assert found == sorted((obj.colour, obj.shape, obj.size) for obj in scene.objects)
        masks = sorted(rendered.object_masks, key=lambda m: -int(m.sum()))
        assert all(np.array_equal(s.mask, m) for s, m in zip(analysis.shapes, masks, strict=True))
        n = len(scene.objects)
        assert score(scene, analysis) == Score(asked=n, colour_hits=n, shape_hits=n, count_ok=True, background_ok=True)


def test_analyser_reads_rgba_and_larger_images():
    scene = scene_at(6, 0)
    image = render(scene, 128).image
    rgba = np.concatenate([image, np.full((*image.shape[:2], 1), 255, np.uint8)], axis=-1)
    assert sorted(s.colour for s in analyse(rgba).shapes) == sorted(o.colour for o in scene.objects)


def test_two_shapes_of_one_colour_count_as_two():
    base = scene_at(0, 0)
    left = dataclasses.replace(base.objects[0], colour="red", shape="square", size="small", cx=0.25, cy=0.5, extent=0.3)
    right = dataclasses.replace(left, shape="circle", cx=0.75)
    scene = Scene("white", (left, right))
    analysis = analyse(render(scene, SIDE).image)
    assert sorted(s.shape for s in analysis.shapes) == ["circle", "square"]
    assert all(s.colour == "red" for s in analysis.shapes)


def test_score_counts_colour_and_shape_misses():
    asked = scene_at(0, 0)
    obj = asked.objects[0]
    other_colour = next(c for c in COLOURS if c != obj.colour)
    other_shape = next(s for s in SHAPES if s != obj.shape)
    wrong_shape = dataclasses.replace(asked, objects=(dataclasses.replace(obj, shape=other_shape),))
    wrong_colour = dataclasses.replace(
        asked,
        objects=(dataclasses.replace(obj, colour=other_colour),),
        background="gray" if asked.background != "gray" else "white",
    )
    single = dataclasses.replace(asked, objects=(obj,))
    s = score(single, analyse(render(wrong_shape, SIDE).image))
    assert (s.asked, s.colour_hits, s.shape_hits, s.count_ok) == (1, 1, 0, True)
    s = score(single, analyse(render(wrong_colour, SIDE).image))
    assert (s.colour_hits, s.shape_hits, s.background_ok) == (0, 0, False)
    empty = np.full((SIDE, SIDE, 3), 255, np.uint8)
    s = score(single, analyse(empty))
    assert (s.colour_hits, s.count_ok) == (0, False)
