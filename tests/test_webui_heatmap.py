"""The "Word heat maps" tab in the (fake) webui's real sampling path: batch size 2 with hires fix, maps over each
final image, the generated images unchanged, words checked before generation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import unets
from webuihelp import hooks_on, map_labels, section_args, session

from lib_dumpunet.errors import DumpUnetError, SpecError
from lib_dumpunet.settings import FIELDS, from_mapping
from lib_dumpunet.webui import infotext


@pytest.fixture(scope="module")
def w():
    with session(unets.SD1) as w:
        yield w


def heat(**more):
    return {"heatmap.enabled": True, "heatmap.words": "cat, hat", "output.display_min": 0, **more}


def test_batch_of_two_with_hires_gives_word_maps_over_each_final_image(w):
    kwargs = {"batch_size": 2, "steps": 2, "enable_hr": True, "hr_scale": 2, "hr_upscaler": "Latent"}
    kwargs["hr_second_pass_steps"] = 3
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
        per_step = processed.images[first + i * len(per_image) + 4]
        assert per_step.width == 3 * 96 + 2 * 2, "one tile per step of the hires pass, the last one included"
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


def test_maps_are_saved_beside_their_image_with_paired_names(w, tmp_path):
    p = w.txt2img(section_args(w, heat(**{"output.save_images": True})), prompt="a cat in a hat", steps=2)
    p.outpath_samples = str(tmp_path)
    w.run(p)
    files = sorted(f.name for f in Path(tmp_path).rglob("*.png"))
    (image,) = [f for f in files if "dumpunet" not in f]
    stem = image.removesuffix(".png")
    suffixes = [f.removeprefix(stem) for f in files if f != image]
    assert sorted(suffixes) == sorted(f"-dumpunet-heat-{place}-002.png" for place in ("cat", "hat", "words"))


def test_xyz_axis_over_words_shows_each_words_map(w):
    processed = w.xyz_plot(w.txt2img(prompt="a cat in a hat", seed=5), "Dump U-Net: heat map word", "cat, hat",
                           include_lone_images=True)  # fmt: skip
    cells = processed.images[processed.index_of_first_image :]
    assert [c.size for c in cells] == [(64, 64), (64, 64)]
    assert 'Dump U-Net map: "heat map: cat"' in processed.infotexts[-2]
    assert 'Dump U-Net map: "heat map: hat"' in processed.infotexts[-1]
    assert not np.array_equal(np.asarray(cells[0]), np.asarray(cells[1]))
    assert hooks_on(w.unet) == 0


# --- the infotext ----------------------------------------------------------------------------------------------------

_HEAT_CHANGED = {
    "heatmap.enabled": True,
    "heatmap.words": '"5", cat, "red, hat"',
    "heatmap.negative_words": "blurry",
    "heatmap.layers": "IN04-OUT05",
    "heatmap.steps": "1",
    "heatmap.per_step": True,
    "heatmap.heads": "max",
    "heatmap.output": "masked",
    "heatmap.opacity": 0.75,
    "heatmap.colormap": "hot",
}


def _paste(w, text: str) -> dict:
    ours = [f for f in w.infotext_utils.paste_fields["txt2img"]["fields"] if f[1] in infotext.PASTE_NAMES]
    paste = w.infotext_utils.connect_paste(None, ours, None, None, "txt2img")
    return dict(zip(["enable", *(f.path for f in FIELDS)], (u.get("value") for u in paste(text)), strict=True))


def _heat_values(values: dict) -> dict:
    return {k: v for k, v in values.items() if k.startswith("heatmap.")}


def test_the_heat_settings_read_in_the_infotext_as_typed_and_paste_back(w):
    prompt = "a 5 on a cat in a red, hat"
    processed = w.run(w.txt2img(section_args(w, _HEAT_CHANGED), prompt=prompt, negative_prompt="blurry", steps=2))
    text = processed.infotexts[processed.index_of_first_image]
    (entry,) = [line for line in text.splitlines() if "Dump U-Net:" in line]
    expected = (
        'heatmap.enabled: True, heatmap.words: "5", cat, "red, hat", heatmap.negative_words: blurry, '
        "heatmap.layers: IN04-OUT05, heatmap.steps: 1, heatmap.per_step: True, heatmap.heads: max, "
        "heatmap.output: masked, heatmap.opacity: 0.75, heatmap.colormap: hot"
    )
    assert w.infotext_utils.quote(expected) in entry
    assert '\\"\\\\\\"' not in entry, "the words are not quoted twice over"
    values = _paste(w, text)
    assert values["enable"] is True
    assert _heat_values(values) == _HEAT_CHANGED
    assert from_mapping({k: v for k, v in values.items() if k != "enable"}) == from_mapping(_HEAT_CHANGED)


def test_texts_that_would_be_misread_are_still_quoted_and_round_trip():
    for words in ('"cat"', '"5"', "", ' "cat", hat', "cat, heatmap.layers: M00", '"a", b', '"a"b, c'):
        settings = from_mapping({"heatmap.enabled": True, "heatmap.words": words, "heatmap.steps": "2"})
        text = infotext.encode(settings)
        assert from_mapping(infotext.restored({infotext.INFOTEXT_KEY: text})) == settings, text
    assert infotext.encode(from_mapping({"heatmap.words": '"cat"'})) == 'heatmap.words: "\\"cat\\""'


def test_old_infotexts_still_paste(w):
    earlier = 'a cat\nSteps: 2, Seed: 1, Dump U-Net: "heatmap.enabled: True, heatmap.words: \\"\\\\\\"5\\\\\\", cat\\""'
    values = _paste(w, earlier)
    assert values["heatmap.enabled"] is True and values["heatmap.words"] == '"5", cat'
    as_json = 'a cat\nSteps: 2, Seed: 1, Dump U-Net: "{\\"heatmap.enabled\\": true, \\"heatmap.words\\": \\"hat\\"}"'
    values = _paste(w, as_json)
    assert (values["heatmap.enabled"], values["heatmap.words"], values["heatmap.layers"]) == (True, "hat", "all")
    before_heat_maps = 'a cat\nSteps: 2, Seed: 1, Dump U-Net: "features.enabled: True, features.layers: IN00"'
    values = _paste(w, before_heat_maps)
    assert values["features.layers"] == "IN00"
    assert _heat_values(values) == {f.path: f.default for f in FIELDS if f.path.startswith("heatmap.")}


def test_the_xyz_word_axis_quotes_only_words_that_would_read_as_columns(w):
    processed = w.xyz_plot(w.txt2img(prompt="a cat with 5 hats", seed=5), "Dump U-Net: heat map word", "cat, 5",
                           include_lone_images=True)  # fmt: skip
    cat, five = (w.infotext_utils.parse_generation_parameters(t) for t in processed.infotexts[-2:])
    assert infotext.restored(cat)["heatmap.words"] == "cat"
    assert "heatmap.words: cat" in cat[infotext.INFOTEXT_KEY]
    assert infotext.restored(five)["heatmap.words"] == '"5"', "the word 5, not column 5"
    assert 'Dump U-Net map: "heat map: 5"' in processed.infotexts[-1]
