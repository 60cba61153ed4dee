"""The prompt tensor view: which conditionings a job gets pictures of, their row labels, and the pictures' pixels.

Contexts come from the command line's encoder (`TextEncoder`: real tiny CLIP text transformers, the real CLIP BPE
vocabulary), the texts from a real `Job` on the tiny ldm U-Net's layout (per-block prompts parsed and encoded as in
sampling). Pixels are checked against the colour scale cell by cell, not by eye.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tiny_diffusers
import torch
from fakewebui.tiny_model import ID_END, ID_START, clip_text_model, clip_tokenizer
from PIL import Image

from lib_dumpunet.capture import Key
from lib_dumpunet.cli import main
from lib_dumpunet.cli.prompt_tensor import TextEncoderSource
from lib_dumpunet.diffusers.host import DiffusersHost
from lib_dumpunet.diffusers.text import TextEncoder
from lib_dumpunet.errors import DumpUnetError
from lib_dumpunet.job import Job, make_plan
from lib_dumpunet.layout import UNetLayout
from lib_dumpunet.prompt_view import (
    CHUNK_BAND,
    MARGIN,
    PART_GAP,
    PROMPT_KIND,
    ROW_PX,
    Encoding,
    HiresPass,
    Part,
    PromptTensor,
    PromptViewSettings,
    collect,
    colours,
    draw,
    render,
    row_label,
    shared_limit,
)
from lib_dumpunet.render import describe
from lib_dumpunet.settings import from_mapping
from lib_dumpunet.tokens import BpeVocabulary, EmbeddingIndex, TokenTable, chunk_prompt

ON = PromptViewSettings(enabled=True)
TOK = clip_tokenizer()


@pytest.fixture(scope="module")
def text() -> TextEncoder:
    return TextEncoder([TOK], [clip_text_model(64, seed=3)])


@pytest.fixture(scope="module")
def sdxl_text() -> TextEncoder:
    torch.manual_seed(5)
    return TextEncoder([TOK, TOK], [tiny_diffusers._text(32), tiny_diffusers._text(48, projection=True)])


@pytest.fixture(scope="module")
def layout(sd1_unet) -> UNetLayout:
    return UNetLayout(sd1_unet)


def job_of(layout, text, prompts, negatives, *, layer_prompt=False, tmp=Path()) -> Job:
    """A job that has begun its batch: texts known, per-block texts encoded (nothing sampled: none is needed)."""
    settings = from_mapping({"prompt_tensor.enabled": True, "layer_prompt.enabled": layer_prompt})
    plan = make_plan(settings, layout, job_steps=2, dump_base=tmp, shared=False)
    job = Job(plan, layout, DiffusersHost(text))
    job.begin_batch(0, prompts, negatives, seeds=list(range(len(prompts))))
    return job


def heat_cell(image, g_left: int, top: int, column_px: int, row: int, column: int) -> tuple[int, ...]:
    """The pixel in the middle of a cell of the heat area (no part gaps)."""
    x = g_left + column * column_px + column_px // 2
    y = top + row * ROW_PX + ROW_PX // 2
    return tuple(np.asarray(image)[y, x])


# --- which conditionings ------------------------------------------------------------------------------------------


def test_each_and_sub_prompt_and_the_negative_prompt_get_one_picture_each_once_per_job(layout, text):
    prompts = ["a red hat AND a blue cat", "a red hat AND a blue cat"]  # a batch of two: same texts
    job = job_of(layout, text, prompts, ["blurry", "blurry"])
    tensors = collect(job, TextEncoderSource(text), ON)
    assert [(t.title, t.key.branch, t.key.sub, t.key.image) for t in tensors] == [
        ("prompt", "cond", 0, 0),
        ("prompt, AND 2", "cond", 1, 0),
        ("negative prompt", "uncond", 0, 0),
    ]
    assert torch.equal(tensors[1].context, text.encode("a blue cat").context)
    without = collect(job, TextEncoderSource(text), PromptViewSettings(enabled=True, negative=False))
    assert [t.title for t in without] == ["prompt", "prompt, AND 2"]


def test_a_prompt_that_changes_within_the_job_is_shown_after_the_first_image_using_it(layout, text):
    job = job_of(layout, text, ["a red hat", "a red hat", "a green hat"], ["", "", ""])
    tensors = collect(job, TextEncoderSource(text), ON)
    assert [(t.text, t.key.image) for t in tensors] == [("a red hat", 0), ("", 0), ("a green hat", 2)]


def test_per_block_texts_get_one_picture_each_labelled_with_their_blocks(layout, text):
    prompt = "a (~: IN00-IN02: red ; OUT00: blue :~) circle"
    job = job_of(layout, text, [prompt], ["(~: M00: dull :~) blurry"], layer_prompt=True)
    tensors = collect(job, TextEncoderSource(text), ON)
    titles = [t.title for t in tensors]
    assert titles == [
        "prompt",
        "negative prompt",
        "per-block text of IN00, IN01, IN02 (prompt)",
        "per-block text of OUT00 (prompt)",
        "per-block text of M00 (negative prompt)",
    ]
    places = [t.key.place for t in tensors]
    assert places == ["text", "text", "IN00+2", "OUT00", "M00"]
    assert tensors[2].text == "a  red  circle" and tensors[3].text == "a  blue  circle"  # the construct's spaces kept
    assert torch.equal(tensors[2].context, text.encode("a  red  circle").context)
    assert tensors[0].text == "a  circle"  # what the webui encodes: the construct erased
    assert tensors[2].key.branch == "cond" and tensors[4].key.branch == "uncond"


class _EditingSource:
    """Two schedule entries, as the webui's `[red:blue:0.5]` gives over 10 steps."""

    parts = ()

    def __init__(self, text: TextEncoder) -> None:
        self.text = text

    def encode(self, text: str, *, negative: bool):
        return [
            Encoding(4, self.text.encode("a red hat").context, text="a red hat"),
            Encoding(10, self.text.encode("a blue hat").context, text="a blue hat"),
        ]

    def token_table(self, text: str):
        return TextEncoderSource(self.text).token_table(text)


def test_prompt_editing_gives_one_picture_per_schedule_entry_labelled_with_its_steps(layout, text):
    job = job_of(layout, text, ["a [red:blue:0.5] hat"], [""])
    tensors = collect(job, _EditingSource(text), PromptViewSettings(enabled=True, negative=False), steps=10)
    assert [t.label for t in tensors] == [
        "prompt tensor: prompt, steps 1-5 of 10",
        "prompt tensor: prompt, steps 6-10 of 10",
    ]
    assert [t.key.step for t in tensors] == [1, 6]
    assert [r.text for r in tensors[1].rows[1:4]] == ["a", "blue", "hat"]
    maps = render(tensors, ON)
    assert [m.file_suffix for m in maps] == ["-dumpunet-prompt-text-001", "-dumpunet-prompt-text-006"]


def test_a_second_order_samplers_calls_are_counted_as_steps(layout, text):
    job = job_of(layout, text, ["a [red:blue:0.5] hat"], [""])
    source = _EditingSource(text)  # entries end at model calls 4 and 10: 5 steps of 2 calls
    tensors = collect(job, source, PromptViewSettings(enabled=True, negative=False), steps=5, calls_per_step=2)
    assert [t.steps for t in tensors] == ["steps 1-3 of 5", "steps 3-5 of 5"]  # step 3's calls 4 and 5 see both


def test_the_hires_pass_own_texts_follow_the_first_pass_ones_keyed_on_pass_one(layout, text):
    job = job_of(layout, text, ["a red hat AND a cat", "a red hat AND a cat"], ["blurry", "blurry"])
    hires = HiresPass(
        TextEncoderSource(text),
        prompts={0: ["a red hat", "a big dog"], 1: ["a red hat", "a big dog"]},  # "a red hat": the first pass's
        negatives={1: "grainy"},
        steps=3,
    )
    tensors = collect(job, TextEncoderSource(text), ON, steps=2, hires=hires)
    assert [(t.label, t.key.image, t.key.pass_index, t.key.sub, t.key.branch) for t in tensors] == [
        ("prompt tensor: prompt", 0, 0, 0, "cond"),
        ("prompt tensor: prompt, AND 2", 0, 0, 1, "cond"),
        ("prompt tensor: negative prompt", 0, 0, 0, "uncond"),
        ("prompt tensor: prompt, AND 2, hires pass", 0, 1, 1, "cond"),
        ("prompt tensor: negative prompt, hires pass", 1, 1, 0, "uncond"),
    ]
    assert torch.equal(tensors[3].context, text.encode("a big dog").context)
    maps = render(tensors, ON)
    assert [m.file_suffix for m in maps[3:]] == [
        "-dumpunet-prompt-text-hr001-and2",
        "-dumpunet-prompt-text-hr001-uncond",
    ]
    assert describe(maps[3].key).endswith("hires pass, AND 2")  # as the hires pass's other maps say it
    without = collect(job, TextEncoderSource(text), PromptViewSettings(enabled=True, negative=False), hires=hires)
    assert [t.title for t in without] == ["prompt", "prompt, AND 2", "prompt, AND 2, hires pass"]


def test_hires_texts_equal_to_the_first_pass_ones_add_nothing(layout, text):
    job = job_of(layout, text, ["a red hat"], ["blurry"])
    hires = HiresPass(TextEncoderSource(text), prompts={0: ["a red hat"]}, negatives={0: "blurry"}, steps=3)
    plain = collect(job, TextEncoderSource(text), ON)
    assert [t.label for t in collect(job, TextEncoderSource(text), ON, hires=hires)] == [t.label for t in plain]


def test_hires_prompt_editing_is_labelled_in_the_hires_pass_steps(layout, text):
    job = job_of(layout, text, ["a cat"], [""])
    hires = HiresPass(_EditingSource(text), prompts={0: ["a [red:blue:1.5] hat"]}, steps=5, calls_per_step=2)
    tensors = collect(job, TextEncoderSource(text), PromptViewSettings(enabled=True, negative=False), hires=hires)
    assert [t.label for t in tensors] == [
        "prompt tensor: prompt",
        "prompt tensor: prompt, hires pass, steps 1-3 of 5",
        "prompt tensor: prompt, hires pass, steps 3-5 of 5",
    ]
    assert [(t.key.pass_index, t.key.step) for t in tensors] == [(0, 1), (1, 1), (1, 3)]


# --- rows and their labels ----------------------------------------------------------------------------------------


def test_rows_are_the_token_inspectors_table_with_weights_and_break(layout, text):
    prompt = "a (red:1.3) [hat] BREAK blue"
    job = job_of(layout, text, [prompt], [""])
    (t,) = collect(job, TextEncoderSource(text), PromptViewSettings(enabled=True, negative=False))
    table = TokenTable.from_chunks(text.encoder.chunks(prompt), BpeVocabulary.of(TOK))
    assert t.rows == table.rows and t.context.shape == (154, 64)
    assert [row_label(r) for r in t.rows[:5]] == ["BOS (start)", "a", "red x1.30", "hat x0.91", "EOS (end)"]
    assert row_label(t.rows[78]) == "blue"
    assert t.chunk_notes == ("start of the prompt", "after BREAK")


def test_eighty_tokens_make_two_chunks_of_rows(layout, text):
    prompt = " ".join(["cat"] * 80)
    job = job_of(layout, text, [prompt], [""])
    (t,) = collect(job, TextEncoderSource(text), PromptViewSettings(enabled=True, negative=False))
    assert t.context.shape[0] == 154
    assert t.chunk_notes == ("start of the prompt", "the prompt goes on past 75 tokens")
    assert [r.text for r in t.rows[76:83]] == ["<end>", "<start>", "cat", "cat", "cat", "cat", "cat"]
    image = draw(t, 1.0, 99.0)
    single = draw(collect(job_of(layout, text, ["cat"], [""]), TextEncoderSource(text), ON)[0], 1.0, 99.0)
    assert image.height - single.height == CHUNK_BAND + 77 * ROW_PX


def test_an_embeddings_vectors_are_labelled_with_its_name():
    index = EmbeddingIndex({"mystyle": 2}, _tokenize)
    chunks = chunk_prompt("a (mystyle:1.1) cat", _tokenize, start=ID_START, end=ID_END, comma=None, embeddings=index)
    rows = TokenTable.from_chunks(chunks, BpeVocabulary.of(TOK)).rows
    assert [row_label(r) for r in rows[1:5]] == ["a", "<mystyle:0> x1.10", "<mystyle:1> x1.10", "cat"]


# --- pixels -------------------------------------------------------------------------------------------------------


def _tokenize(texts):
    return TOK(list(texts), add_special_tokens=False)["input_ids"] if texts else []


def _tensor(context: torch.Tensor, parts=(), pooled=None) -> PromptTensor:
    """A one-chunk tensor labelled as "a cat" (the labels do not matter to the pixels)."""
    chunks = chunk_prompt("a cat", _tokenize, start=ID_START, end=ID_END, comma=None)
    rows = TokenTable.from_chunks(chunks, BpeVocabulary.of(TOK)).rows
    return PromptTensor(Key(0, 0, 1, "text", PROMPT_KIND), "prompt", "a cat", context, rows, parts=parts, pooled=pooled)


HEAT_TOP = MARGIN + 40 + 30 + CHUNK_BAND  # below the title, the column axis and the first chunk's caption band
HEAT_LEFT = MARGIN + 200  # right of the row labels
NARROW_COLUMN_PX = 8  # test-size widths (64, 80) get the widest columns


def test_every_cell_has_its_values_colour_on_the_stated_scale():
    generator = torch.Generator().manual_seed(0)
    context = torch.randn(77, 64, generator=generator) * 2
    t = _tensor(context)
    image = draw(t, 1.5, 99.0)
    column_px, left, top = NARROW_COLUMN_PX, HEAT_LEFT, HEAT_TOP
    pixels = np.asarray(image)
    ys = top + np.arange(77) * ROW_PX + ROW_PX // 2
    xs = left + np.arange(64) * column_px + column_px // 2
    assert np.array_equal(pixels[ys][:, xs], colours(context.numpy(), 1.5))
    assert image.width == left + 64 * column_px + MARGIN
    assert image.height > top + 77 * ROW_PX
    clipped = colours(np.array([5.0, -5.0, 0.0]), 1.5)
    assert tuple(clipped[0]) == tuple(colours(np.array([1.5]), 1.5)[0])  # beyond the range: the end colour
    assert tuple(clipped[2]) == (242, 242, 242)  # 0 is the light centre


def test_wide_tensors_get_one_pixel_a_column_and_sdxl_halves_are_split():
    context = torch.linspace(-1, 1, 2048).repeat(77, 1)
    parts = (Part("CLIP-L", 768), Part("OpenCLIP-G", 1280))
    image = draw(_tensor(context, parts), 1.0, 99.0)
    left = HEAT_LEFT
    assert image.width == left + 2048 + PART_GAP + MARGIN
    pixels = np.asarray(image)
    y = HEAT_TOP + ROW_PX // 2
    assert np.array_equal(pixels[y, left : left + 768], colours(context[0, :768].numpy(), 1.0))
    assert (pixels[y, left + 768 : left + 768 + PART_GAP] == 70).all()  # the dark split between the encoders
    after = left + 768 + PART_GAP
    assert np.array_equal(pixels[y, after : after + 1280], colours(context[0, 768:].numpy(), 1.0))


def test_sdxl_contexts_from_two_encoders_carry_their_widths_and_the_pooled_row(layout, sdxl_text):
    job = job_of(layout, sdxl_text, ["a red hat"], [""])
    (t,) = collect(job, TextEncoderSource(sdxl_text), PromptViewSettings(enabled=True, negative=False))
    assert t.parts == (Part("CLIP-L", 32), Part("OpenCLIP-G", 48))
    assert t.context.shape == (77, 80)
    assert torch.equal(t.pooled, sdxl_text.encode("a red hat").pooled)
    image = draw(t, 1.0, 99.0)
    column_px, left = NARROW_COLUMN_PX, HEAT_LEFT
    pooled_top = HEAT_TOP + 77 * ROW_PX + CHUNK_BAND
    x = left + 32 * column_px + PART_GAP + np.arange(48) * column_px + column_px // 2  # under OpenCLIP-G's columns
    row = np.asarray(image)[pooled_top + ROW_PX, x]
    assert np.array_equal(row, colours(t.pooled.numpy(), 1.0))


def test_one_scale_for_the_whole_job_at_the_stated_percentile():
    small, large = _tensor(torch.full((77, 64), 0.5)), _tensor(torch.full((77, 64), 2.0))
    limit = shared_limit([small, large], 75.0)
    assert limit == pytest.approx(float(np.percentile(np.r_[np.full(77 * 64, 0.5), np.full(77 * 64, 2.0)], 75)))
    maps = render([small, large], PromptViewSettings(enabled=True, percentile=75.0))
    top, left = HEAT_TOP, HEAT_LEFT
    assert heat_cell(maps[0].image, left, top, NARROW_COLUMN_PX, 0, 0) == tuple(colours(np.array([0.5]), limit)[0])
    assert heat_cell(maps[1].image, left, top, NARROW_COLUMN_PX, 0, 0) == tuple(colours(np.array([2.0]), limit)[0])
    assert shared_limit([_tensor(torch.zeros(77, 64))], 99.0) == 1.0  # an all-zero tensor (SDXL's empty negative)


# --- settings -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("percentile", [49.9, 100.5, -1.0])
def test_a_percentile_out_of_range_is_refused_with_the_fields_name(percentile):
    with pytest.raises(DumpUnetError, match="Prompt tensor › Colour range percentile"):
        PromptViewSettings(enabled=True, percentile=percentile).check()
    PromptViewSettings(enabled=False, percentile=percentile).check()  # switched off: never drawn, never refused


def test_settings_arrive_typed_from_the_api():
    settings = from_mapping({"prompt_tensor": {"enabled": True, "percentile": 97, "negative": False}})
    assert settings.prompt_tensor == PromptViewSettings(True, 97.0, False)
    assert settings.active
    with pytest.raises(DumpUnetError, match=r"prompt_tensor\.percentile"):
        from_mapping({"prompt_tensor.percentile": "high"})


# --- the command line -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tiny_diffusers.build_folder(tmp_path_factory.mktemp("models"), "sd1")


def test_the_command_line_writes_one_picture_per_conditioning_beside_the_image(folder, tmp_path):
    job = ["attention", "-p", "a (red:1.2) hat AND a cat", "-n", "blurry", "--layers", "IN01", "--prompt-tensor"]
    code = main([*job, "--model", str(folder), "--out", str(tmp_path), "--steps", "2", "--quiet"])
    assert code == 0
    names = sorted(p.name for p in tmp_path.glob("*-dumpunet-prompt-*.png"))
    assert names == [
        "00000-1-dumpunet-prompt-text-001-and2.png",
        "00000-1-dumpunet-prompt-text-001-uncond.png",
        "00000-1-dumpunet-prompt-text-001.png",
    ]
    info = Image.open(tmp_path / names[0]).info["parameters"]
    assert info.endswith('Dump U-Net map: "prompt tensor: prompt, AND 2"')
    page = (tmp_path / "index.html").read_text("utf-8")
    assert 'data-tab="i0-prompt"' in page and "Prompt tensor" in page and all(n in page for n in names)


def test_the_command_line_refuses_a_bad_percentile_before_generation(folder, tmp_path, capsys):
    code = main(["attention", "-p", "a hat", "--prompt-tensor", "--set", "prompt_tensor.percentile=20",
                 "--model", str(folder), "--out", str(tmp_path), "--steps", "2", "--quiet"])  # fmt: skip
    assert code == 2
    assert "Colour range percentile is 20" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.png"))
