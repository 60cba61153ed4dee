"""The "Word heat maps" tab in the (fake) webui's real sampling path: batch size 2 with hires fix, maps over each
final image, the generated images unchanged, words checked before generation."""

from __future__ import annotations

import numpy as np
import pytest
import unets
from webuihelp import hooks_on, map_labels, section_args, session

from lib_dumpunet.errors import DumpUnetError, SpecError


@pytest.fixture(scope="module")
def w():
    with session(unets.SD1) as w:
        yield w


def heat(**more):
    return {"heatmap.enabled": True, "heatmap.words": "cat, hat", "output.display_min": 0, **more}


def test_batch_of_two_with_hires_gives_word_maps_over_each_final_image(w):
    kwargs = dict(batch_size=2, steps=2, enable_hr=True, hr_scale=2, hr_upscaler="Latent", hr_second_pass_steps=2)
    prompt = "a cat in a red hat AND a cat"
    plain = w.run(w.txt2img(prompt=prompt, seed=3, **kwargs))
    processed = w.run(w.txt2img(section_args(w, heat(**{"heatmap.per_step": True})), prompt=prompt, seed=3, **kwargs))
    labels = map_labels(w, processed)
    per_image = [None, "heat map: cat", "heat map: hat", "heat maps: cat, hat"]
    per_image += ["heat map: cat per step", "heat map: hat per step"]
    assert labels == per_image * 2
    first = processed.index_of_first_image
    images = [processed.images[first + i * len(per_image)] for i in range(2)]
    plain_images = plain.images[plain.index_of_first_image :]
    for got, expected in zip(images, plain_images, strict=True):
        assert np.array_equal(np.asarray(got.convert("RGB")), np.asarray(expected.convert("RGB")))
    for i, image in enumerate(images):
        cat = processed.images[first + i * len(per_image) + 1]
        assert cat.size == image.size == (128, 128)  # the hires result, not the first pass
        assert not np.array_equal(np.asarray(cat.convert("RGB")), np.asarray(image.convert("RGB")))
        strip = processed.images[first + i * len(per_image) + 3]
        assert strip.width == 2 * 128 + 2
    cat0, cat1 = (np.asarray(processed.images[first + i * len(per_image) + 1]) for i in range(2))
    assert not np.array_equal(cat0, cat1), "each image gets its own map"
    assert "heatmap.words" in processed.infotexts[first]
    assert hooks_on(w.unet) == 0


def test_a_word_in_no_prompt_stops_the_job_before_generation(w):
    ran = []
    handle = w.unet.input_blocks[0].register_forward_hook(lambda *_: ran.append(1))
    try:
        with pytest.raises(DumpUnetError, match="no word 'dog'") as err:
            w.run(w.txt2img(section_args(w, heat(**{"heatmap.words": "cat, dog"})), prompt="a cat"))
    finally:
        handle.remove()
    assert isinstance(err.value, SpecError)
    assert ran == []
    assert hooks_on(w.unet) == 0
