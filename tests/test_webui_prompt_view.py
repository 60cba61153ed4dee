"""The prompt tensor view in the (fake) webui's real sampling path: pictures after the image that used each
conditioning, the very tensors the U-Net received, per-block texts, prompt editing, SDXL's halves and pooled row,
a Hires prompt of its own (drawn as the hires pass read it; an equal one adds nothing), saving with paired names, the
infotext round trip, and a bad setting refused before generation.

The SDXL test opens its own session and comes first: sessions do not nest, and the SD1 session of the other tests is
a module fixture that starts with the first test asking for it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import unets
from webuihelp import hooks_on, map_labels, section_args, session

from lib_dumpunet.errors import DumpUnetError
from lib_dumpunet.prompt_view import MARGIN, PART_GAP, Part
from lib_dumpunet.settings import FIELDS
from lib_dumpunet.webui import infotext

PROMPT = "a (cat:1.2) in a [red:blue:0.5] hat AND a dog"


def tensor_view(**more):
    return {"prompt_tensor.enabled": True, "output.display_min": 0, **more}


class Contexts:
    """The `context` of every U-Net call, as the U-Net received it, and the latent width of each call."""

    def __init__(self, unet) -> None:
        self.calls: list[torch.Tensor] = []
        self.widths: list[int] = []
        self.handle = unet.register_forward_pre_hook(self.keep, with_kwargs=True)

    def keep(self, _module, args, kwargs):
        self.calls.append((kwargs.get("context") if "context" in kwargs else args[2]).detach().clone())
        self.widths.append(int((args[0] if args else kwargs["x"]).shape[-1]))

    def of_width(self, width: int) -> list[torch.Tensor]:
        """The contexts of the calls on latents `width` wide (hires fix: the second pass's are wider)."""
        return [c for c, w in zip(self.calls, self.widths, strict=True) if w == width]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def test_sdxl_halves_are_marked_and_the_empty_negative_prompt_is_the_zeros_sampling_used():
    with session(unets.SDXL) as w:
        from lib_dumpunet.webui.prompt_tensor import WebuiPromptSource  # imports the webui's modules

        p = w.txt2img(section_args(w, tensor_view()), prompt="a red hat", negative_prompt="", steps=2)
        with Contexts(w.unet) as seen:
            processed = w.run(p)
        assert map_labels(w, processed) == [None, "prompt tensor: prompt", "prompt tensor: negative prompt"]
        source = WebuiPromptSource(p, w.sd_model)
        assert source.parts == (Part("CLIP-L", 64), Part("OpenCLIP-G", 64))
        (cond,) = source.encode("a red hat", negative=False)
        (uncond,) = source.encode("", negative=True)
        assert torch.equal(seen.calls[0][0], cond.context.to(seen.calls[0]))
        assert torch.equal(seen.calls[0][1], uncond.context.to(seen.calls[0])) and not uncond.context.any()
        assert cond.pooled is not None and cond.pooled.shape == (64,)
        first = processed.index_of_first_image
        drawn = np.asarray(processed.images[first + 1].convert("RGB"))
        column_px, left = 6, MARGIN + 200  # 128 columns: 768 // 128 px each
        assert drawn.shape[1] == left + 128 * column_px + PART_GAP + MARGIN
        assert (drawn[200, left + 64 * column_px : left + 64 * column_px + PART_GAP] == 70).all()


@pytest.fixture(scope="module")
def w():
    with session(unets.SD1) as w:
        yield w


def test_pictures_follow_the_image_that_used_them_and_the_image_is_unchanged(w):
    kwargs = {"prompt": PROMPT, "negative_prompt": "blurry", "batch_size": 2, "steps": 4, "seed": 5}
    plain = w.run(w.txt2img(**kwargs))
    with Contexts(w.unet) as seen:
        processed = w.run(w.txt2img(section_args(w, tensor_view()), **kwargs))
    labels = map_labels(w, processed)
    assert labels == [
        None,
        "prompt tensor: prompt, steps 1-3 of 4",
        "prompt tensor: prompt, step 4 of 4",
        "prompt tensor: prompt, AND 2",
        "prompt tensor: negative prompt",
        None,  # the second image of the batch has the same conditionings: nothing new after it
    ]
    first = processed.index_of_first_image
    images = [processed.images[first], processed.images[first + 5]]
    for got, want in zip(images, plain.images[plain.index_of_first_image :], strict=True):
        assert np.array_equal(np.asarray(got), np.asarray(want))
    assert hooks_on(w.unet) == 0

    from lib_dumpunet.webui.prompt_tensor import WebuiPromptSource

    source = WebuiPromptSource(w.txt2img(**kwargs), w.sd_model)
    early, late = source.encode("a (cat:1.2) in a [red:blue:0.5] hat", negative=False)
    assert (early.text, late.text) == ("a (cat:1.2) in a red hat", "a (cat:1.2) in a blue hat")
    assert torch.equal(seen.calls[0][0], early.context)  # step 1, first image's first sub-prompt
    assert torch.equal(seen.calls[-1][0], late.context)  # step 4
    (negative,) = source.encode("blurry", negative=True)
    assert torch.equal(seen.calls[0][-1], negative.context)
    table = source.token_table(late.text)
    assert [r.weight for r in table.rows[1:4]] == [1.0, pytest.approx(1.2), 1.0]


def test_prompt_editing_under_a_second_order_sampler_is_labelled_in_sampler_steps(w):
    p = w.txt2img(section_args(w, tensor_view()), prompt="a [red:blue:0.5] hat", sampler_name="Heun", steps=4)
    labels = map_labels(w, w.run(p))
    assert labels[1:3] == ["prompt tensor: prompt, steps 1-3 of 4", "prompt tensor: prompt, steps 3-4 of 4"]


def test_per_block_texts_get_pictures_naming_their_blocks(w):
    settings = tensor_view(**{"layer_prompt.enabled": True})
    prompt = "a (~: IN00-IN02: red ; OUT00: blue :~) circle"
    processed = w.run(w.txt2img(section_args(w, settings), prompt=prompt, negative_prompt="", steps=2))
    assert map_labels(w, processed) == [
        None,
        "prompt tensor: prompt",
        "prompt tensor: negative prompt",
        "prompt tensor: per-block text of IN00, IN01, IN02 (prompt)",
        "prompt tensor: per-block text of OUT00 (prompt)",
    ]


def test_saved_pictures_are_named_after_their_image(w):
    settings = tensor_view(**{"output.save_images": True, "prompt_tensor.negative": False})
    processed = w.run(w.txt2img(section_args(w, settings), prompt="a cat AND a dog", steps=2))
    assert len(map_labels(w, processed)) == 3
    saved = sorted(Path(w.data_dir).rglob("*-dumpunet-prompt-*.png"))
    names = [f.name for f in saved]
    stem = next(n for n in names if n.endswith("-dumpunet-prompt-text-001.png")).removesuffix(
        "-dumpunet-prompt-text-001.png"
    )
    assert f"{stem}-dumpunet-prompt-text-001-and2.png" in names
    assert any(f.name == f"{stem}.png" for f in Path(w.data_dir).rglob("*.png")), "the image itself, same stem"


def test_the_settings_travel_in_the_infotext_and_paste_back(w):
    settings = tensor_view(**{"prompt_tensor.percentile": 97.5, "prompt_tensor.negative": False})
    processed = w.run(w.txt2img(section_args(w, settings), prompt="a cat", steps=2))
    text = processed.infotexts[processed.index_of_first_image]
    assert "prompt_tensor.enabled: True, prompt_tensor.percentile: 97.5, prompt_tensor.negative: False" in text
    ours = [f for f in w.infotext_utils.paste_fields["txt2img"]["fields"] if f[1] in infotext.PASTE_NAMES]
    paste = w.infotext_utils.connect_paste(None, ours, None, None, "txt2img")
    values = dict(zip(["enable", *(f.path for f in FIELDS)], (u.get("value") for u in paste(text)), strict=True))
    assert values["prompt_tensor.enabled"] is True
    assert values["prompt_tensor.percentile"] == 97.5
    assert values["prompt_tensor.negative"] is False


def test_a_percentile_out_of_range_stops_the_job_before_generation(w):
    calls = []
    handle = w.unet.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        with pytest.raises(DumpUnetError, match="Colour range percentile is 20"):
            w.run(w.txt2img(section_args(w, tensor_view(**{"prompt_tensor.percentile": 20})), prompt="a cat"))
    finally:
        handle.remove()
    assert calls == [1], "stopped at the U-Net's first call, before it computed anything"
    assert hooks_on(w.unet) == 0


HIRES = {"enable_hr": True, "hr_scale": 2, "hr_upscaler": "Latent", "steps": 2, "seed": 3}


def test_a_hires_prompt_of_its_own_is_drawn_as_the_hires_pass_read_it_and_the_image_is_unchanged(w):
    kwargs = {
        **HIRES,
        "prompt": "a red hat",
        "negative_prompt": "blurry",
        "hr_prompt": "a [red:blue:1.5] cat AND a dog",  # hires pass: red for its first half, then blue
        "hr_negative_prompt": "grainy",
        "hr_second_pass_steps": 4,
    }
    plain = w.run(w.txt2img(**kwargs))
    settings = tensor_view(**{"output.save_images": True})
    with Contexts(w.unet) as seen:
        processed = w.run(w.txt2img(section_args(w, settings), **kwargs))
    assert map_labels(w, processed) == [
        None,
        "prompt tensor: prompt",
        "prompt tensor: negative prompt",
        "prompt tensor: prompt, hires pass, steps 1-3 of 4",
        "prompt tensor: prompt, hires pass, step 4 of 4",
        "prompt tensor: prompt, AND 2, hires pass",
        "prompt tensor: negative prompt, hires pass",
    ]
    first = processed.index_of_first_image
    assert np.array_equal(np.asarray(processed.images[first]), np.asarray(plain.images[plain.index_of_first_image]))
    assert hooks_on(w.unet) == 0

    from lib_dumpunet.webui.prompt_tensor import WebuiPromptSource

    p = w.txt2img(**kwargs)
    p.hr_upscale_to_x, p.hr_upscale_to_y = 2 * p.width, 2 * p.height
    hires = WebuiPromptSource(p, w.sd_model, pass_index=1)
    early, late = hires.encode("a [red:blue:1.5] cat", negative=False)
    assert (early.text, late.text) == ("a red cat", "a blue cat")
    (dog,), (grainy,) = hires.encode("a dog", negative=False), hires.encode("grainy", negative=True)
    calls = seen.of_width(2 * p.width // 8)
    assert len(calls) >= 2 and len(calls) < len(seen.calls), "the hires pass's calls are told apart by their size"
    assert torch.equal(calls[0][0], early.context) and torch.equal(calls[-1][0], late.context)
    assert torch.equal(calls[-1][1], dog.context) and torch.equal(calls[-1][2], grainy.context)
    names = {f.name for f in Path(w.data_dir).rglob("*-dumpunet-prompt-*.png")}
    stem = next(n for n in names if n.endswith("-dumpunet-prompt-text-hr001.png")).removesuffix(
        "-dumpunet-prompt-text-hr001.png"
    )
    wanted = {"hr001", "hr004", "hr001-and2", "hr001-uncond", "001", "001-uncond"}
    assert {f"{stem}-dumpunet-prompt-text-{end}.png" for end in wanted} <= names


@pytest.mark.parametrize("hr_prompt", ["", "a red hat"], ids=["empty", "the same"])
def test_a_hires_prompt_equal_to_the_prompt_adds_no_picture(w, hr_prompt):
    kwargs = {**HIRES, "prompt": "a red hat", "negative_prompt": "blurry", "hr_prompt": hr_prompt}
    processed = w.run(w.txt2img(section_args(w, tensor_view()), **kwargs))
    assert map_labels(w, processed) == [None, "prompt tensor: prompt", "prompt tensor: negative prompt"]


def test_a_hires_negative_prompt_of_its_own_alone_adds_its_picture_after_the_image(w):
    kwargs = {**HIRES, "batch_size": 2, "prompt": "a red hat", "negative_prompt": "blurry"}
    with Contexts(w.unet) as seen:
        processed = w.run(w.txt2img(section_args(w, tensor_view()), hr_negative_prompt="grainy", **kwargs))
    assert map_labels(w, processed) == [
        None,
        "prompt tensor: prompt",
        "prompt tensor: negative prompt",
        "prompt tensor: negative prompt, hires pass",
        None,  # the second image's hires pass read the same texts
    ]
    from lib_dumpunet.webui.prompt_tensor import WebuiPromptSource

    p = w.txt2img(**kwargs)
    (grainy,) = WebuiPromptSource(p, w.sd_model, pass_index=1).encode("grainy", negative=True)
    hires_calls = seen.of_width(2 * p.width // 8)
    assert hires_calls and all(torch.equal(c[-1], grainy.context) for c in hires_calls)


def test_a_different_hires_prompt_has_its_per_block_texts_erased_and_none_drawn(w):
    settings = tensor_view(**{"layer_prompt.enabled": True, "prompt_tensor.negative": False})
    kwargs = {**HIRES, "prompt": "a (~: IN00: red :~) cat", "hr_prompt": "a (~: IN00: blue :~) dog"}
    with Contexts(w.unet) as seen:
        processed = w.run(w.txt2img(section_args(w, settings), **kwargs))
    assert map_labels(w, processed) == [
        None,
        "prompt tensor: prompt",
        "prompt tensor: per-block text of IN00 (prompt)",
        "prompt tensor: prompt, hires pass",
    ]
    from lib_dumpunet.webui.prompt_tensor import WebuiPromptSource

    p = w.txt2img(**kwargs)
    (erased,) = WebuiPromptSource(p, w.sd_model, pass_index=1).encode("a  dog", negative=False)
    hires_calls = seen.of_width(2 * p.width // 8)
    assert hires_calls and all(torch.equal(c[0], erased.context) for c in hires_calls)


def test_a_hires_negative_prompt_of_its_own_is_read_without_its_per_block_constructs(w):
    settings = tensor_view(**{"layer_prompt.enabled": True})
    kwargs = {
        **HIRES,
        "prompt": "a cat",
        "negative_prompt": "blurry",
        "hr_negative_prompt": "(~: IN00: dark :~) grainy",
    }
    with Contexts(w.unet) as seen:
        processed = w.run(w.txt2img(section_args(w, settings), **kwargs))
    assert "prompt tensor: negative prompt, hires pass" in map_labels(w, processed)
    from lib_dumpunet.webui.prompt_tensor import WebuiPromptSource

    p = w.txt2img(**kwargs)
    (erased,) = WebuiPromptSource(p, w.sd_model, pass_index=1).encode(" grainy", negative=True)
    hires_calls = seen.of_width(2 * p.width // 8)
    assert hires_calls and all(torch.equal(c[-1], erased.context) for c in hires_calls), "not the literal (~: … :~)"


def test_the_attention_tab_has_the_section(w):
    runner = w.runner(False)
    ids = {getattr(c, "elem_id", None) for c in runner.inputs if c is not None}
    assert {"dumpunet-txt2img-section-attention-prompt-tensor", "dumpunet-txt2img-attention-prompt-tensor"} <= ids


def test_the_command_line_labels_rows_as_the_webui_does(w):
    from fakewebui.tiny_model import clip_text_model, clip_tokenizer

    from lib_dumpunet.cli.prompt_tensor import TextEncoderSource
    from lib_dumpunet.diffusers.text import TextEncoder
    from lib_dumpunet.webui.prompt_tensor import WebuiPromptSource

    webui = WebuiPromptSource(w.txt2img(), w.sd_model)
    cli = TextEncoderSource(TextEncoder([clip_tokenizer()], [clip_text_model(64, seed=0)]))
    prompts = [
        "a (red:1.3) [hat] BREAK (blue:0.8) sunglasses",
        ", ".join(["one two three four five six"] * 15),  # two chunks, wrapped after a comma
        " ".join(["cat"] * 80),
    ]
    for prompt in prompts:
        assert [r.cells() for r in cli.token_table(prompt).rows] == [r.cells() for r in webui.token_table(prompt).rows]
