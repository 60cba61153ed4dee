"""Word heat maps in the (fake) webui beyond txt2img at 64²: img2img (an init image of an odd size, denoising below 1
so fewer steps run), the SDXL layout (two text encoders, 2048-wide context), batch size 2 × batch count 2, and a word
that some prompts of the job lack (wildcards, X/Y/Z Prompt S/R)."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import numpy as np
import pytest
import unets
from PIL import Image
from webuihelp import hooks_on, map_labels, section_args, session

from lib_dumpunet.errors import SpecError
from lib_dumpunet.heatmap import HeatmapSettings
from lib_dumpunet.layout import UNetLayout
from lib_dumpunet.tokens import TokenTable, pick_items
from lib_dumpunet.webui.tokens import _vocabulary


def heat(words: str = "cat, hat", **more):
    return {"heatmap.enabled": True, "heatmap.words": words, "output.display_min": 0, **more}


def rgb(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def gallery(processed) -> list[Image.Image]:
    return processed.images[processed.index_of_first_image :]


class _Sessions:
    """One fake webui at a time (sessions do not nest): asking for the other flavour closes the open one."""

    def __init__(self) -> None:
        self.flavour: unets.Flavour | None = None
        self.stack = contextlib.ExitStack()

    def get(self, flavour: unets.Flavour):
        if self.flavour is not flavour:
            self.close()
            self.w = self.stack.enter_context(session(flavour))
            self.flavour = flavour
        return self.w

    def close(self) -> None:
        self.stack.close()
        self.flavour = None


@pytest.fixture(scope="module")
def sessions():
    s = _Sessions()
    yield s
    s.close()


@pytest.fixture
def sd1(sessions):
    return sessions.get(unets.SD1)


@pytest.fixture
def sdxl(sessions):
    return sessions.get(unets.SDXL)


# --- img2img --------------------------------------------------------------------------------------------------------


def _init(width: int = 72, height: int = 56) -> Image.Image:
    ramp = np.linspace(0, 255, width * height * 3).reshape(height, width, 3).astype(np.uint8)
    return Image.fromarray(ramp)


def test_img2img_maps_cover_the_final_image_and_count_only_the_steps_that_ran(sd1):
    fields = {"steps": 4, "denoising_strength": 0.5, "width": 72, "height": 56, "seed": 7, "prompt": "a cat in a hat"}
    plain = sd1.run(sd1.img2img([_init()], **fields))
    args = section_args(sd1, heat(**{"heatmap.per_step": True}), is_img2img=True)
    processed = sd1.run(sd1.img2img([_init()], args, **fields))
    labels = map_labels(sd1, processed)
    words = ["heat map: cat", "heat map: hat", "heat maps: cat, hat"]
    assert labels == [None, *words, "heat map: cat per step", "heat map: hat per step"]
    image, cat, _hat, strip, per_step, _ = gallery(processed)
    assert np.array_equal(rgb(image), rgb(gallery(plain)[0])), "the generated image is unchanged"
    assert image.size == cat.size == (72, 56)
    assert strip.width == 2 * 72 + 2
    ran = int(4 * 0.5) + 1  # v1.10.1's img2img samples t_enc + 1 steps
    assert per_step.width == ran * 72 + (ran - 1) * 2, "one tile per step that ran, numbered from 1"
    assert hooks_on(sd1.unet) == 0


def test_img2img_step_spec_counts_the_steps_that_ran(sd1, tmp_path):
    fields = {"steps": 4, "denoising_strength": 0.5, "seed": 7, "prompt": "a cat in a hat"}
    spec = {"heatmap.steps": "2-3", "output.save_images": True}
    p = sd1.img2img([_init(64, 64)], section_args(sd1, heat("cat", **spec), is_img2img=True), **fields)
    p.outpath_samples = str(tmp_path)
    every = sd1.run(sd1.img2img([_init(64, 64)], section_args(sd1, heat("cat"), is_img2img=True), **fields))
    chosen = sd1.run(p)
    assert map_labels(sd1, chosen) == [None, "heat map: cat"]
    assert not np.array_equal(rgb(gallery(chosen)[1]), rgb(gallery(every)[1])), "steps 2-3 only, not all three"
    names = sorted(f.name for f in Path(tmp_path).rglob("*.png"))
    assert next(n for n in names if "dumpunet" in n).endswith("-dumpunet-heat-cat-003.png"), "named by its last step"
    assert "Word heat maps steps" not in chosen.comments
    late = section_args(sd1, heat("cat", **{"heatmap.steps": "3-4"}), is_img2img=True)
    processed = sd1.run(sd1.img2img([_init(64, 64)], late, **fields))
    assert map_labels(sd1, processed) == [None, "heat map: cat"], "step 3 ran"
    assert "Dump U-Net: Word heat maps steps [4] were never reached." in processed.comments


# --- hires fix with its own prompt -----------------------------------------------------------------------------------


def test_a_hires_prompt_of_its_own_is_where_the_words_are_looked_up(sd1):
    """The maps come from the hires pass, which encodes the Hires prompt: its words, in its columns."""
    hires = {"enable_hr": True, "hr_scale": 2, "hr_upscaler": "Latent", "steps": 2, "hr_second_pass_steps": 2}
    fields = {"prompt": "a cat in a hat", "hr_prompt": "a dog on a big hat", "seed": 4, **hires}
    processed = sd1.run(sd1.txt2img(section_args(sd1, heat("cat, hat")), **fields))
    assert map_labels(sd1, processed) == [None, "heat map: hat", "heat maps: cat, hat (cat: not in this prompt)"]
    dog = sd1.run(sd1.txt2img(section_args(sd1, heat("dog")), **fields))
    assert map_labels(sd1, dog) == [None, "heat map: dog"], "a word of the Hires prompt only is not refused"
    columns = {c: rgb(gallery(sd1.run(sd1.txt2img(section_args(sd1, heat(c)), **fields)))[1]) for c in "56"}
    hat = rgb(gallery(processed)[1])
    assert np.array_equal(hat, columns["6"]), "hat is column 6 of the hires prompt ('a dog on a big hat')"
    assert not np.array_equal(hat, columns["5"]), "not column 5, where the first prompt has it"
    with pytest.raises(SpecError, match="no word 'fish'"):
        sd1.run(sd1.txt2img(section_args(sd1, heat("fish")), **fields))


def test_the_hires_prompt_note_appears_only_where_per_block_prompts_were_dropped(sd1):
    hires = {"enable_hr": True, "hr_scale": 2, "hr_upscaler": "Latent", "steps": 2, "hr_second_pass_steps": 2}
    note = "Dump U-Net: per-block prompts are not applied to a different Hires prompt."
    plain = sd1.run(sd1.txt2img(section_args(sd1, heat("cat")), prompt="a cat", hr_prompt="a dog", **hires))
    assert note not in plain.comments, "no per-block text anywhere: nothing was dropped"
    per_block = {"layer_prompt.enabled": True}
    dropped = sd1.run(
        sd1.txt2img(
            section_args(sd1, heat("cat", **per_block)),
            prompt="a (~: IN00: red ; _: :~) cat",
            hr_prompt="a dog",
            **hires,
        )
    )
    assert note in dropped.comments


# --- batch size 2 × batch count 2 ------------------------------------------------------------------------------------

PROMPTS = ["a cat in a red hat", "a cat on a mat", "a hat on a cat", "a black cat in a hat"]


def test_batch_two_by_count_two_gives_each_image_its_own_maps_with_paired_names(sd1, tmp_path):
    args = section_args(sd1, heat(**{"output.save_images": True}))
    p = sd1.txt2img(args, prompt=PROMPTS, batch_size=2, n_iter=2, seed=11, steps=2)
    p.outpath_samples = str(tmp_path)
    processed = sd1.run(p)
    labels = map_labels(sd1, processed)
    full = [None, "heat map: cat", "heat map: hat", "heat maps: cat, hat"]
    lacks_hat = [None, "heat map: cat", "heat maps: cat, hat (hat: not in this prompt)"]
    assert labels == full + lacks_hat + full + full
    cats = [image for image, label in zip(gallery(processed), labels, strict=True) if label == "heat map: cat"]
    assert len({rgb(c).tobytes() for c in cats}) == 4, "four images, four different cat maps"
    files = sorted(f.name for f in Path(tmp_path).rglob("*.png"))
    images = [f for f in files if "dumpunet" not in f]
    assert len(images) == 4
    for stem in (f.removesuffix(".png") for f in images):
        ours = sorted(f.removeprefix(stem) for f in files if f.startswith(stem + "-dumpunet"))
        assert ours in (
            ["-dumpunet-heat-cat-002.png", "-dumpunet-heat-hat-002.png", "-dumpunet-heat-words-002.png"],
            ["-dumpunet-heat-cat-002.png", "-dumpunet-heat-words-002.png"],
        )


# --- a word some prompts lack ----------------------------------------------------------------------------------------


def test_a_word_missing_from_one_prompt_costs_only_that_images_map(sd1, caplog):
    prompts = ["a cat in a hat", "a dog in a hat"]
    plain = sd1.run(sd1.txt2img(prompt=prompts, batch_size=2, seed=3))
    with caplog.at_level(logging.WARNING, logger="lib_dumpunet"):
        processed = sd1.run(sd1.txt2img(section_args(sd1, heat()), prompt=prompts, batch_size=2, seed=3))
    labels = map_labels(sd1, processed)
    first = [None, "heat map: cat", "heat map: hat", "heat maps: cat, hat"]
    assert labels == [*first, None, "heat map: hat", "heat maps: cat, hat (cat: not in this prompt)"]
    images = gallery(processed)
    for got, expected in zip([images[0], images[4]], gallery(plain), strict=True):
        assert np.array_equal(rgb(got), rgb(expected))
    strip, image = rgb(images[6]), rgb(images[4])
    assert np.array_equal(strip[:64, 66:130], rgb(images[5])), "the hat map in its place"
    note = strip[:64, :64]
    assert note.mean() < image.mean() and (note.min(axis=2) > 240).sum() > 20, "dimmed, with a white note"
    lines = [r.getMessage() for r in caplog.records if "not in this prompt" in r.getMessage()]
    assert lines == ["word heat maps, image 2: 'cat' not in this prompt, so no map"]
    assert not any("no word heat maps" in c for c in processed.comments.splitlines())


def test_a_single_word_one_prompt_lacks_still_gets_its_note(sd1):
    prompts = ["a cat", "a dog"]
    processed = sd1.run(sd1.txt2img(section_args(sd1, heat("cat")), prompt=prompts, batch_size=2, seed=3))
    assert map_labels(sd1, processed) == [None, "heat map: cat", None, "heat maps: cat (cat: not in this prompt)"]


def test_a_word_in_none_of_the_jobs_prompts_stops_it_before_generation(sd1):
    ran = []
    handle = sd1.unet.input_blocks[0].register_forward_hook(lambda *_: ran.append(1))
    try:
        p = sd1.txt2img(section_args(sd1, heat("cat, fish")), prompt=["a cat", "a dog"], batch_size=2)
        with pytest.raises(SpecError, match=r"no word 'fish'.*none of the job's 2 prompts") as err:
            sd1.run(p)
        args = section_args(sd1, heat("cat", **{"heatmap.negative_words": "blurry"}))
        p = sd1.txt2img(args, prompt="a cat", negative_prompt="dark")
        with pytest.raises(SpecError, match="Negative words: no word 'blurry'"):
            sd1.run(p)
    finally:
        handle.remove()
    assert err.value.text == "cat, fish" and err.value.column == 6
    assert ran == []
    assert hooks_on(sd1.unet) == 0


def test_negative_words_some_negative_prompts_lack(sd1):
    args = section_args(sd1, heat("cat", **{"heatmap.negative_words": "blurry"}))
    p = sd1.txt2img(args, prompt="a cat", negative_prompt=["blurry", "dark"], batch_size=2, seed=3)
    labels = map_labels(sd1, sd1.run(p))
    both = ["heat map: cat", "heat map: blurry (negative)", "heat maps: cat, blurry (negative)"]
    lacking = "heat maps: cat, blurry (negative) (blurry (negative): not in this prompt)"
    assert labels == [None, *both, None, "heat map: cat", lacking]


def _xyz_args(w, x_label: str, x_values: str) -> list:
    script = next(s for s in w.runner(False).selectable_scripts if s.title() == "X/Y/Z plot")
    x_type = [opt.label for opt in script.current_axis_options].index(x_label)
    values = [x_type, x_values, [], 0, "", [], 0, "", [], False, True, False, False, False, False, False, 0, True]
    return w.api_script_args(
        w.runner(False),
        script_name="X/Y/Z plot",
        script_args=values,
        alwayson_scripts={"Dump U-Net": {"args": [True, heat("cat")]}},
    )


def test_xyz_prompt_sr_cell_without_the_word_gets_a_note_not_a_refusal(sd1, caplog):
    """The X/Y/Z plot chosen in the dropdown, as the UI and the API run it: each cell is its own job, and the dog cell
    cannot know that the cat cell has the word, so it is not refused."""
    with caplog.at_level(logging.WARNING, logger="lib_dumpunet"):
        processed = sd1.run(sd1.txt2img(_xyz_args(sd1, "Prompt S/R", "cat, dog"), prompt="a cat", seed=5))
    cells = gallery(processed)
    assert len(cells) == 2 and all(c.size == (64, 64) for c in cells)
    assert ["a cat" in t for t in processed.infotexts[-2:]] == [True, False]
    notes = [r.getMessage() for r in caplog.records if "not in this prompt" in r.getMessage()]
    assert notes == ["word heat maps, image 1: 'cat' not in this prompt, so no map"], "the dog cell only"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert hooks_on(sd1.unet) == 0


# --- SDXL ------------------------------------------------------------------------------------------------------------


def test_sdxl_words_sit_in_the_same_columns_for_both_text_encoders(sdxl):
    prompt = "a photo of a (giraffe:1.2) BREAK in a red hat, " + "blue " * 70 + "zebra"
    tables = []
    for embedder in sdxl.sd_model.conditioner.embedders:
        if hasattr(embedder, "tokenize_line"):
            chunks, _ = embedder.tokenize_line(prompt)
            tables.append(TokenTable.from_chunks(chunks, _vocabulary(embedder)))
    assert len(tables) == 2, "CLIP-L and OpenCLIP-G"
    for item in pick_items("giraffe, hat, zebra"):
        first, second = (t.lookup(item, "giraffe, hat, zebra") for t in tables)
        assert first == second
    assert tables[0].lookup(pick_items("zebra")[0], "zebra")[0] > 2 * 77, "past the second chunk"


def test_sdxl_maps_over_its_images_from_every_cross_attention_layer(sdxl):
    layout = UNetLayout(sdxl.unet)
    cross = layout.attentions(layout.names, "attn2")
    assert len(cross) == 70 and len(HeatmapSettings().plan(layout).layers) == 70, "SDXL's layout: depth 2 and 10"
    context = sdxl.sd_model.get_learned_conditioning(["a cat"])["crossattn"]
    widths = [e.wrapped.transformer.config.hidden_size for e in sdxl.sd_model.conditioner.embedders[:2]]
    assert context.shape[-1] == sum(widths), "both encoders' features side by side, as SDXL's 768 + 1280"
    assert {layout.attention_module(a).to_k.in_features for a in cross} == {context.shape[-1]}
    kwargs = {"prompt": "a cat in a hat", "width": 72, "height": 64, "seed": 2, "batch_size": 2}
    plain = sdxl.run(sdxl.txt2img(**kwargs))
    processed = sdxl.run(sdxl.txt2img(section_args(sdxl, heat()), **kwargs))
    per_image = [None, "heat map: cat", "heat map: hat", "heat maps: cat, hat"]
    assert map_labels(sdxl, processed) == per_image * 2
    images = gallery(processed)
    for got, expected in zip([images[0], images[4]], gallery(plain), strict=True):
        assert np.array_equal(rgb(got), rgb(expected))
    assert images[1].size == (72, 64)
    assert not np.array_equal(rgb(images[1]), rgb(images[2])), "cat and hat differ"
    assert hooks_on(sdxl.unet) == 0


# --- SD2 -------------------------------------------------------------------------------------------------------------


def test_sd2_finds_words_with_openclips_vocabulary_and_maps_them(sessions):
    sd2 = sessions.get(unets.SD2)
    kwargs = {"prompt": "a (cat:1.2) in a hat, " + "blue " * 75 + "zebra", "width": 56, "height": 72, "seed": 3}
    plain = sd2.run(sd2.txt2img(**kwargs))
    processed = sd2.run(sd2.txt2img(section_args(sd2, heat("cat, zebra")), **kwargs))
    assert map_labels(sd2, processed) == [None, "heat map: cat", "heat map: zebra", "heat maps: cat, zebra"]
    images = gallery(processed)
    assert np.array_equal(rgb(images[0]), rgb(gallery(plain)[0])), "the image is unchanged"
    assert images[1].size == (56, 72)
    assert not np.array_equal(rgb(images[1]), rgb(images[2])), "the word past token 75 has its own map"
    with pytest.raises(SpecError, match="no word 'dog'"):
        sd2.run(sd2.txt2img(section_args(sd2, heat("dog")), **kwargs))
    assert hooks_on(sd2.unet) == 0
