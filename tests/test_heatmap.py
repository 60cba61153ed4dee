"""Word heat maps on the real tiny ldm U-Net: a small sampling loop that batches rows as the webui's CFG denoiser
does (cond rows per AND sub-prompt, then uncond; split calls when the contexts differ in length), prompts encoded
by the tiny CLIP text model through the token inspector's chunks, and a plain Q*K recorder beside the word
recorder as the reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812
import unets
from fakewebui.tiny_model import LATENT_RGB
from vxahost import TinyHost

from lib_dumpunet.attention import CrossAttentionRecorder
from lib_dumpunet.errors import DumpUnetError, SpecError
from lib_dumpunet.heatmap import HEAT_KIND, HeatmapSettings, find_words, render_words, require_words, word_heats
from lib_dumpunet.layout import UNetLayout
from lib_dumpunet.probe import Probe
from lib_dumpunet.sampling import cfg_rows
from lib_dumpunet.specs import ALL_STEPS

SIZE = 64
STEPS = 2


@pytest.fixture(scope="module")
def host(unet_for):
    return TinyHost(unets.SD1, unet_for(unets.SD1))


def subs(prompt: str) -> list[str]:
    return [p.strip() for p in prompt.split(" AND ")]


def contexts(host: TinyHost, texts: list[str]) -> list[torch.Tensor]:
    return [host.encode_prompt(t, SIZE, SIZE)["context"][0] for t in texts]


def _call(unet, x, t, ctx: list[torch.Tensor]) -> torch.Tensor:
    if len({c.shape[0] for c in ctx}) == 1:
        return unet(x, t, context=torch.stack(ctx))
    return torch.cat([unet(x[i : i + 1], t[i : i + 1], context=c[None]) for i, c in enumerate(ctx)])


def generate(host, prompts, negatives, attachments=(), passes=((0, SIZE),), seed=0):
    """Sample a batch through every pass (a later pass starts from the previous latent, upscaled, as hires fix does);
    returns (latents, capture)."""
    unet, layout = host.unet, UNetLayout(host.unet)
    cond_texts = [subs(p) for p in prompts]
    counts = [len(s) for s in cond_texts]
    cond = contexts(host, [s for ss in cond_texts for s in ss])
    uncond = contexts(host, list(negatives))
    x = torch.randn(len(prompts), 4, SIZE // 8, SIZE // 8, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad(), unets.webui_skip_resize(), Probe(unet, list(attachments), layout=layout) as probe:
        for pass_index, size in passes:
            if x.shape[-1] != size // 8:
                x = F.interpolate(x, size=(size // 8, size // 8), mode="bilinear", align_corners=False)
            for step in range(1, STEPS + 1):
                rows = cfg_rows(counts, len(prompts))
                probe.tracker.denoiser_call(pass_index=pass_index, step=step, schedule_step=step - 1, rows=rows)
                x_in = torch.cat([x[i : i + 1].repeat(n, 1, 1, 1) for i, n in enumerate(counts)] + [x])
                t = torch.full((x_in.shape[0],), 1000.0 * (1 - step / (STEPS + 1)))
                out = _call(unet, x_in, t, cond + uncond)
                n = sum(counts)
                first = [sum(counts[:i]) for i in range(len(counts))]
                x = x - 0.2 * (out[n:] + 5.0 * (out[first] - out[n:]))
    return x, probe.capture


def decode(latent: torch.Tensor) -> np.ndarray:
    """A latent (4, h, w) as an RGB picture 8× its size, by the webui's linear preview approximation."""
    rgb = torch.einsum("chw,cr->hwr", latent, torch.tensor(LATENT_RGB))
    rgb = ((rgb + 1) * 127.5).clamp(0, 255).to(torch.uint8).numpy()
    return np.repeat(np.repeat(rgb, 8, axis=0), 8, axis=1)


def tables(host, prompt):
    return [host.tokens(s) for s in subs(prompt)]


def run(host, prompt, words, negative="", settings=None, **kw):
    s = settings or HeatmapSettings(enabled=True, words=words)
    plan = s.plan(UNetLayout(host.unet), job_steps=STEPS)
    reference = CrossAttentionRecorder(UNetLayout(host.unet).names, ALL_STEPS, ("qk",), uncond=True)
    latents, capture = generate(host, [prompt], [negative], [plan.recorder(), reference], **kw)
    found = find_words(s.words, tables(host, prompt))
    return latents, capture, found, word_heats(capture, 0, found)


def expected_step(capture, step, rows_columns, latent=SIZE // 8, pass_index=0):
    """The word's heat at one step recomputed from the full Q*K capture: heads averaged, each layer brought to the
    latent grid, summed over layers, then over the word's columns of every row it sits in."""
    total = torch.zeros(latent, latent)
    for key in capture:
        if key.kind != "qk" or key.step != step or key.pass_index != pass_index:
            continue
        for (branch, sub), columns in rows_columns:
            if (key.branch, key.sub) == (branch, sub):
                maps = capture[key].mean(0)[list(columns)]  # (columns, h, w)
                up = F.interpolate(maps[None], size=(latent, latent), mode="bilinear", align_corners=False)[0]
                total += up.sum(0)
    return total


# --- words → columns → heat -----------------------------------------------------------------------------------------


def test_a_word_of_several_tokens_sums_all_its_columns_over_every_layer(host):
    prompt = "two giraffes on a beach"
    _, capture, (word,), (heat,) = run(host, prompt, "giraffes")
    ((row, columns),) = word.rows
    assert row == ("cond", 0) and len(columns) == 2  # "gira" + "ffes"
    assert [s for s, _ in heat.steps] == [1, 2]
    for step, got in heat.steps:
        torch.testing.assert_close(got, expected_step(capture, step, word.rows), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(heat.total, heat.steps[0][1] + heat.steps[1][1])


def test_a_word_in_two_and_sub_prompts_sums_both_rows(host):
    prompt = "a red cat AND a cat on a blue hat"
    _, capture, (cat,), (heat,) = run(host, prompt, "cat")
    assert [row for row, _ in cat.rows] == [("cond", 0), ("cond", 1)]
    assert [cols for _, cols in cat.rows] == [(3,), (2,)]
    for step, got in heat.steps:
        torch.testing.assert_close(got, expected_step(capture, step, cat.rows), rtol=1e-4, atol=1e-5)
        only_first = expected_step(capture, step, cat.rows[:1])
        assert not torch.allclose(got, only_first)
    (hat,) = find_words("hat", tables(host, prompt))  # in the second sub-prompt only
    assert [row for row, _ in hat.rows] == [("cond", 1)]


def test_a_word_past_token_75_is_read_from_the_second_chunk(host):
    prompt = "a " + "blue " * 80 + "zebra"
    _, capture, (word,), (heat,) = run(host, prompt, "zebra")
    ((_row, columns),) = word.rows
    assert all(c > 77 for c in columns)
    assert len(tables(host, prompt)[0]) == 2 * 77
    for step, got in heat.steps:
        torch.testing.assert_close(got, expected_step(capture, step, word.rows), rtol=1e-4, atol=1e-5)


def test_a_word_inside_an_emphasis_and_after_break(host):
    prompt = "a photo of a (red hat:1.4) BREAK a long neck"
    table = tables(host, prompt)[0]
    _, capture, words, heats = run(host, prompt, "hat, neck")
    hat, neck = words
    ((_, hat_cols),) = hat.rows
    ((_, neck_cols),) = neck.rows
    assert [table.rows[c].weight for c in hat_cols] == [pytest.approx(1.4)]
    assert all(c > 77 for c in neck_cols)  # BREAK moved it to the second chunk
    for word, heat in zip(words, heats, strict=True):
        for step, got in heat.steps:
            torch.testing.assert_close(got, expected_step(capture, step, word.rows), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(heats[0].total, heats[1].total)


def test_negative_words_use_the_uncond_row(host):
    settings = HeatmapSettings(enabled=True, words="cat", negative_words="blurry")
    prompt, negative = "a cat", "blurry, dark"
    plan = settings.plan(UNetLayout(host.unet), job_steps=STEPS)
    assert plan.recorder().uncond
    _, capture = generate(host, [prompt], [negative], [plan.recorder()])
    (word,) = find_words(settings.negative_words, [host.tokens(negative)], branch="uncond")
    (heat,) = word_heats(capture, 0, [word])
    assert heat.label == "blurry (negative)" and heat.total.shape == (SIZE // 8, SIZE // 8)
    plain = HeatmapSettings(enabled=True, words="cat").plan(UNetLayout(host.unet)).recorder()
    _, no_uncond = generate(host, [prompt], [negative], [plain])
    with pytest.raises(DumpUnetError, match="negative words need uncond"):
        word_heats(no_uncond, 0, [word])


def test_batch_of_two_keeps_each_image_to_its_own_prompt(host):
    s = HeatmapSettings(enabled=True, words="cat")
    rec = s.plan(UNetLayout(host.unet)).recorder()
    _, capture = generate(host, ["a cat", "a black cat on a mat"], ["", ""], [rec])
    assert {k.image for k in capture if k.kind == HEAT_KIND} == {0, 1}
    first = word_heats(capture, 0, find_words("cat", tables(host, "a cat")))[0]
    second = word_heats(capture, 1, find_words("cat", tables(host, "a black cat on a mat")))[0]
    assert not torch.allclose(first.total, second.total)


def test_hires_maps_come_from_the_final_pass_at_its_latent_size(host):
    s = HeatmapSettings(enabled=True, words="cat", layers="IN01, M00")
    rec = s.plan(UNetLayout(host.unet)).recorder()
    _, capture = generate(host, ["a cat"], [""], [rec], passes=((0, SIZE), (1, 2 * SIZE)))
    words = find_words("cat", tables(host, "a cat"))
    (final,) = word_heats(capture, 0, words)
    (first,) = word_heats(capture, 0, words, pass_index=0)
    assert final.pass_index == 1 and final.total.shape == (SIZE // 4, SIZE // 4)
    assert first.total.shape == (SIZE // 8, SIZE // 8)


# --- the image is left alone; pictures ------------------------------------------------------------------------------


def test_the_generated_image_is_unchanged_and_no_hook_remains(host):
    prompt = "a cat AND a dog"
    plain, _ = generate(host, [prompt], ["ugly"])
    settings = HeatmapSettings(enabled=True, words="cat", negative_words="ugly")
    recorded, capture = generate(host, [prompt], ["ugly"], [settings.plan(UNetLayout(host.unet)).recorder()])
    assert torch.equal(plain, recorded)
    assert len([k for k in capture if k.kind == HEAT_KIND]) == STEPS * 3  # two cond rows and one uncond, per step
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in host.unet.modules())


def test_pictures_one_per_word_a_strip_and_per_step_strips(host):
    prompt = "a red hat, a long neck"
    settings = HeatmapSettings(enabled=True, words="hat, neck", per_step=True)
    latents, _capture, _, heats = run(host, prompt, "", settings=settings)
    image = decode(latents[0])
    pictures = render_words(image, heats, settings)
    assert [p.kind for p in pictures] == ["word", "word", "strip", "steps", "steps"]
    assert [p.label for p in pictures[:2]] == ["hat", "neck"]
    for p in pictures[:2]:
        assert p.image.shape == image.shape and p.image.dtype == np.uint8
        assert not np.array_equal(p.image, image)
    strip = pictures[2].image
    assert strip.shape[1] == 2 * SIZE + 2 and strip.shape[0] > SIZE
    np.testing.assert_array_equal(strip[:SIZE, :SIZE], pictures[0].image)
    assert pictures[3].image.shape[1] == STEPS * SIZE + (STEPS - 1) * 2
    heat = heats[0].heat(SIZE, SIZE)
    assert heat.min() == 0.0 and heat.max() == pytest.approx(1.0)


def test_blank_words_map_every_word_of_the_prompt(host):
    found = find_words("", tables(host, "a red hat, a long neck AND a cat"))
    assert [w.label for w in found] == ["a", "red", "hat", "long", "neck", "cat"]
    (a,) = [w for w in found if w.label == "a"]
    assert [row for row, _ in a.rows] == [("cond", 0), ("cond", 1)] and len(a.rows[0][1]) == 2


# --- settings --------------------------------------------------------------------------------------------------------


def test_bad_settings_are_refused_before_generation(host):
    layout = UNetLayout(host.unet)
    with pytest.raises(SpecError, match="no word 'dog'"):
        find_words("cat, dog", tables(host, "a cat AND a hat"))
    with pytest.raises(DumpUnetError, match="has cross-attention; choose among IN01"):
        HeatmapSettings(layers="IN00").plan(layout)
    with pytest.raises(DumpUnetError, match="step 9 is beyond"):
        HeatmapSettings(steps="1, 9").plan(layout, job_steps=STEPS)
    with pytest.raises(DumpUnetError, match="Opacity"):
        HeatmapSettings(opacity=1.5).checked()
    with pytest.raises(DumpUnetError, match="Output mode"):
        HeatmapSettings(output="rainbow").checked()
    assert len(HeatmapSettings(layers="IN01-IN02, M00").plan(layout).layers) == 3
    assert len(HeatmapSettings().plan(layout).layers) == 16


# --- words some prompts of the job lack ------------------------------------------------------------------------------


def test_a_word_this_prompt_lacks_comes_back_without_rows_when_not_strict(host):
    found = find_words('hat, "cat", 200', tables(host, "a red hat AND a blue hat"), strict=False)
    assert [(w.label, w.found) for w in found] == [("hat", True), ("cat", False), ("200", False)]
    assert [row for row, _ in found[0].rows] == [("cond", 0), ("cond", 1)]
    with pytest.raises(SpecError, match="no word 'cat'"):
        find_words('hat, "cat"', tables(host, "a red hat"))


def test_require_words_refuses_only_a_word_in_none_of_the_prompts(host):
    prompts = [tables(host, "a cat in a hat"), tables(host, "a dog AND a fish")]
    require_words("cat, dog, fish, hat", prompts)
    with pytest.raises(SpecError, match="no word 'bird' in the prompt; its words are: a, cat, in, hat \\(at") as one:
        require_words("cat, bird", prompts[:1])
    assert one.value.column == 6
    with pytest.raises(SpecError, match="none of the job's 2 prompts") as two:
        require_words("dog, bird", prompts)
    assert two.value.column == 6 and "no word 'bird'" in two.value.reason
    with pytest.raises(SpecError, match="column 200 is past the end"):
        require_words("200", prompts)


def test_a_word_without_rows_gets_no_picture_but_a_dimmed_place_in_the_strip(host):
    prompt = "a cat in a hat"
    settings = HeatmapSettings(enabled=True, words="cat, dog", per_step=True)
    plan = settings.plan(UNetLayout(host.unet), job_steps=STEPS)
    latents, capture = generate(host, [prompt], [""], [plan.recorder()])
    words = find_words(settings.words, tables(host, prompt), strict=False)
    cat, dog = word_heats(capture, 0, words)
    assert cat.found and not dog.found and dog.total is None and dog.steps == ()
    with pytest.raises(DumpUnetError, match="not in this prompt"):
        dog.heat(SIZE, SIZE)
    image = decode(latents[0])
    pictures = render_words(image, [cat, dog], settings)
    assert [(p.kind, p.label) for p in pictures] == [
        ("word", "cat"),
        ("strip", "words: cat, dog (dog: not in this prompt)"),
        ("steps", "cat per step"),
    ]
    strip = pictures[1].image
    np.testing.assert_array_equal(strip[:SIZE, :SIZE], pictures[0].image)
    note = strip[:SIZE, SIZE + 2 :]
    dimmed = (image // 3).astype(int)
    written = np.any(note != dimmed, axis=2)
    assert 0 < written.mean() < 0.5, "the dimmed image, with the note written over its middle"
    assert not written[:8].any() and not written[-8:].any()
    (alone,) = render_words(image, [dog], settings)
    assert alone.kind == "strip" and alone.label == "words: dog (dog: not in this prompt)"
