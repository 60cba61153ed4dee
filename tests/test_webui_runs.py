"""The extension in the (fake) webui's real sampling path: txt2img, img2img, hires, batches, AND, long prompts,
interrupts, errors, saving, infotext, difference maps — with the real ldm U-Net and real CLIP text encoders."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import unets
from fakewebui import tiny_model
from PIL import Image
from webuihelp import features, hooks_on, left_clean, map_labels, script_args, section_args, session

from lib_dumpunet.errors import DumpUnetError
from lib_dumpunet.probe import Probe
from lib_dumpunet.settings import FIELDS


@pytest.fixture(scope="module")
def w():
    with session(unets.SD1) as w:
        yield w


@pytest.fixture(autouse=True)
def _clean(request):
    """Every test leaves the U-Net without hooks; options a test changes are restored."""
    if "w" not in request.fixturenames:
        yield
        return
    with left_clean(request.getfixturevalue("w")):
        yield


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


# --- maps in the gallery -------------------------------------------------------------------------------------------


def test_batch_size_and_count(w):
    p = w.txt2img(section_args(w, features("IN00, M00")), batch_size=2, n_iter=2, steps=2)
    processed = w.run(p)
    labels = map_labels(w, processed)
    per_image = [None, "IN00, step 1, U-Net features", "M00, step 1, U-Net features"]
    per_image += ["IN00, step 2, U-Net features", "M00, step 2, U-Net features"]
    assert labels == per_image * 4
    assert processed.index_of_first_image == 1, "the batch grid stays first"
    assert len(processed.all_seeds) == len(labels), "per-image metadata stays flat"
    assert processed.all_seeds == [s for s in p.all_seeds for _ in per_image]
    assert processed.all_prompts[1] == processed.all_prompts[0] == p.all_prompts[0]


def test_capture_leaves_the_image_bit_identical(w):
    plain = w.run(w.txt2img(seed=7))
    everything = {
        **features("IN00-OUT11"),
        "attention.enabled": True,
        "attention.layers": "IN00-OUT11",
        "attention.outputs": ["K", "Q*K", "V*Q*K"],
        "attention.self_attention": True,
        "output.uncond": True,
    }
    probed = w.run(w.txt2img(section_args(w, everything), seed=7))
    assert np.array_equal(pixels(plain.images[0]), pixels(probed.images[0]))
    assert len(probed.images) > 100


def test_hires_fix_is_its_own_pass(w):
    args = section_args(w, features("M00", **{"features.steps": "2", "output.display_min": 0}))  # native sizes
    p = w.txt2img(args, enable_hr=True, hr_scale=2, hr_upscaler="Latent", hr_second_pass_steps=3, steps=2)
    processed = w.run(p)
    assert map_labels(w, processed) == [None, "M00, step 2, U-Net features", "M00, step 2, U-Net features, hires pass"]
    first, hires = processed.images[1:3]
    assert processed.images[0].size == (128, 128)
    assert (first.size, hires.size) == ((16 * 2 - 1, 8 * 2 - 1), (16 * 3 - 1, 8 * 3 - 1)), "M00 tiles: 1×1, then 2×2"


def test_img2img_reports_steps_it_never_ran(w):
    init = Image.new("RGB", (64, 64), (200, 120, 40))
    p = w.img2img([init], section_args(w, features("IN00"), is_img2img=True), steps=4, denoising_strength=0.5)
    processed = w.run(p)
    labels = [label for label in map_labels(w, processed) if label]
    ran = len(labels)
    assert 1 <= ran < 4
    assert f"steps {list(range(ran + 1, 5))} were never reached" in processed.comments


def test_sizes_not_multiple_of_64_long_prompts_and_and(w):
    prompt = "a " + "very " * 80 + "long prompt AND a second sub-prompt"
    settings = {
        **features("IN00, OUT11"),
        "attention.enabled": True,
        "attention.layers": "IN01",
        "attention.outputs": ["Q*K"],
        "attention.steps": "1",
        "features.steps": "1",
    }
    p = w.txt2img(section_args(w, settings), prompt=prompt, negative_prompt="short", width=104, height=72)
    processed = w.run(p)
    assert map_labels(w, processed) == [
        None,
        "IN00, step 1, U-Net features",
        "IN00, step 1, U-Net features, AND 2",
        "OUT11, step 1, U-Net features",
        "OUT11, step 1, U-Net features, AND 2",
        "IN01.attn2, step 1, Q*K",
        "IN01.attn2, step 1, Q*K, AND 2",
    ]
    qk_long, qk_short = processed.images[5], processed.images[6]
    # IN01 at 104x72 is 13x9: a row of 154 columns (two 77-token chunks; the short sub-prompt is padded to them)
    assert qk_long.width == qk_short.width == 154 * 14 - 1


def test_returned_inpainting_masks_stay_with_their_image(w):
    w.shared.opts.data.update(return_mask=True, return_mask_composite=True)
    init = Image.new("RGB", (64, 64), (200, 120, 40))
    args = section_args(w, features("IN00", **{"features.steps": "1"}), is_img2img=True)
    p = w.img2img([init], args, batch_size=2, steps=2, denoising_strength=1.0)
    p.mask_for_overlay = Image.new("L", (64, 64), 255)  # what an inpainting job's init leaves on p
    processed = w.run(p)

    def kind(image: Image.Image) -> str:
        if "parameters" in image.info:
            return "image"
        if image.mode == "RGBA":
            return "composite"
        return "mask" if image.size == (64, 64) else "map"

    assert [kind(i) for i in processed.images[processed.index_of_first_image :]] == [
        "image",
        "mask",
        "composite",
        "map",
    ] * 2
    assert map_labels(w, processed) == [None, "IN00, step 1, U-Net features"] * 2


def test_long_negative_prompt_with_split_calls(w):
    w.shared.opts.data["batch_cond_uncond"] = False
    p = w.txt2img(
        section_args(w, features("M00", **{"output.uncond": True, "features.steps": "1"})),
        batch_size=2,
        negative_prompt="blurry, " * 60,
    )
    labels = map_labels(w, w.run(p))
    assert labels == [None, "M00, step 1, U-Net features", "M00, step 1, U-Net features, uncond"] * 2


def test_interrupt_keeps_what_was_made(w):
    def interrupt_at_second_step(params):
        if params.denoiser.step == 1:  # the webui checks at the start of the next denoiser call
            w.shared.state.interrupt()

    w.script_callbacks.on_cfg_denoiser(interrupt_at_second_step)
    try:
        processed = w.run(w.txt2img(section_args(w, features("IN00")), steps=3, n_iter=2))
    finally:
        w.script_callbacks.remove_callbacks_for_function(interrupt_at_second_step)
    assert map_labels(w, processed) == [None, "IN00, step 1, U-Net features", "IN00, step 2, U-Net features"]
    assert "steps [3] were never reached" in processed.comments


def test_skip_moves_on_to_the_next_batch(w):
    def skip_first_batch(params):
        if params.denoiser.p.iteration == 0 and params.denoiser.step == 0:
            w.shared.state.skip()

    w.script_callbacks.on_cfg_denoiser(skip_first_batch)
    try:
        processed = w.run(w.txt2img(section_args(w, features("IN00", **{"features.steps": "2"})), n_iter=2))
    finally:
        w.script_callbacks.remove_callbacks_for_function(skip_first_batch)
    labels = map_labels(w, processed)
    assert labels.count("IN00, step 2, U-Net features") == 1, "only the second batch reached step 2"


# --- mistakes stop the job before generation -----------------------------------------------------------------------


def test_a_bad_spec_stops_the_section_before_any_computation(w):
    ran = []
    handle = w.unet.input_blocks[0].register_forward_hook(lambda *_: ran.append(1))
    try:
        with pytest.raises(DumpUnetError, match="'IN99' is not a block"):
            w.run(w.txt2img(section_args(w, features("IN00, IN99"))))
    finally:
        handle.remove()
    assert ran == []


def test_a_bad_expression_stops_the_dropdown_script_before_generation(w):
    calls = []
    handle = w.unet.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        settings = features("IN00", **{"features.colors.h": "__import__('os').system('id')"})
        with pytest.raises(DumpUnetError, match="H"):
            w.run(w.txt2img(script_args(w, settings)))
    finally:
        handle.remove()
    assert calls == []


def test_no_hook_survives_an_exception(w):
    def boom(*_):
        raise RuntimeError("boom")

    handle = w.unet.middle_block.register_forward_hook(boom)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            w.run(w.txt2img(section_args(w, features("IN00-OUT11"))))
    finally:
        handle.remove()
    assert hooks_on(w.unet) == 0, "closing p after the failure removed the run's hooks"


def test_no_hook_survives_a_script_reload(w):
    Probe(w.unet, []).__enter__()  # a run that never cleaned up after itself
    assert hooks_on(w.unet) == 2
    w.script_callbacks.script_unloaded_callback()
    assert hooks_on(w.unet) == 0


# --- saving, infotext ------------------------------------------------------------------------------------------------


def test_saved_maps_pair_with_their_images(w, tmp_path):
    settings = features("IN00", **{"features.steps": "1", "features.average": "sum", "output.save_images": True})
    p = w.txt2img(section_args(w, settings), batch_size=2, n_iter=2)
    p.outpath_samples = str(tmp_path)
    w.run(p)
    saved = sorted(Path(p.outpath_samples).rglob("*.png"))
    images = [f for f in saved if "dumpunet" not in f.name]
    maps = [f for f in saved if "dumpunet" in f.name]
    assert len(images) == 4
    assert len(maps) == 8
    for image in images:
        assert image.with_name(f"{image.stem}-dumpunet-unet-IN00-001.png") in maps
        assert image.with_name(f"{image.stem}-dumpunet-unet-IN00-001-avg.png") in maps
    info = Image.open(maps[0]).info["parameters"]
    assert 'Dump U-Net map: "IN00, step 1, U-Net features' in info
    seed = int(images[3].stem.split("-")[1])
    assert seed == p.all_seeds[3], "names carry the image's own seed, with batch count > 1"


def test_settings_are_written_to_the_infotext_and_pasted_back(w):
    settings = features("IN00,M00", **{"features.colors.gain": 2.5, "attention.outputs": ["K", "Q*K"]})
    processed = w.run(w.txt2img(section_args(w, settings)))
    text = processed.infotexts[1]
    assert "Dump U-Net:" in text
    ours = [f for f in w.infotext_utils.paste_fields["txt2img"]["fields"] if _is_ours(f)]
    assert len(ours) == 1 + len(FIELDS), "the section's switch and every setting are restored"
    paste = w.infotext_utils.connect_paste(None, ours, None, None, "txt2img")
    values = dict(zip(["enable", *(f.path for f in FIELDS)], (u.get("value") for u in paste(text)), strict=True))
    assert values["enable"] is True
    assert values["features.layers"] == "IN00,M00"
    assert values["features.colors.gain"] == 2.5
    assert values["attention.outputs"] == ["K", "Q*K"]
    assert values["features.steps"] == "", "untouched settings come back as their defaults"
    plain = paste("a cat\nSteps: 2, Sampler: Euler, Seed: 1, Size: 64x64")
    assert plain[0].get("value") is False, "pasting an image without Dump U-Net switches the section off"


def test_send_to_img2img_carries_the_section_over(w):
    """The txt2img gallery's "Send to img2img" copies inputs by paste name, from tab to tab."""
    binding = w.infotext_utils.ParamBinding(
        paste_button=None,
        tabname="img2img",
        source_tabname="txt2img",
        paste_field_names=w.scripts.scripts_txt2img.paste_field_names,
    )
    inputs, outputs = w.infotext_utils.tab_to_tab_fields(binding)
    section = {tab: _section_inputs(w, tab) for tab in ("txt2img", "img2img")}
    assert [c for c in inputs if c in section["txt2img"]] == section["txt2img"]
    assert [c for c in outputs if c in section["img2img"]] == section["img2img"]
    pairs = [(a, b) for a, b in zip(inputs, outputs, strict=True) if a in section["txt2img"]]
    assert pairs == list(zip(section["txt2img"], section["img2img"], strict=True)), "each input lands on its twin"


def _section_inputs(w, tab: str) -> list:
    section = next(s for s in w.runner(tab == "img2img").alwayson_scripts if s.title() == "Dump U-Net")
    return list(section.controls)


# --- per-block prompts and difference maps ----------------------------------------------------------------------------


def _is_ours(field) -> bool:
    _component, target = field
    return callable(target) and getattr(target, "__module__", "").startswith("lib_dumpunet")


def test_the_same_text_in_every_block_is_the_plain_image(w):
    plain = w.run(w.txt2img(prompt="a red cat", seed=3))
    layered = w.run(
        w.txt2img(section_args(w, {"layer_prompt.enabled": True}), prompt="(~: IN00-OUT11: a red cat :~)", seed=3)
    )
    assert np.array_equal(pixels(plain.images[0]), pixels(layered.images[0]))
    assert layered.all_prompts[0] == "(~: IN00-OUT11: a red cat :~)", "the infotext keeps the layer prompt"


def test_each_distinct_block_prompt_is_encoded_once_per_job(w):
    model = w.sd_model
    model.text_encoder_calls = 0
    model.encoded_texts.clear()
    prompt = "a (~: IN00-OUT11: cute ; M00: excellent :~) girl"
    w.run(w.txt2img(section_args(w, {"layer_prompt.enabled": True}), prompt=prompt, n_iter=2, batch_size=2, steps=3))
    texts = [t for t in model.encoded_texts if "girl" in t]
    assert sorted(texts) == ["a  cute  girl", "a  excellent  girl", "a  girl"]


def test_difference_maps_with_batch_count(w):
    settings = {"layer_prompt.enabled": True, "layer_prompt.diff": True, "layer_prompt.layers": "M00, OUT00"}
    settings |= {"layer_prompt.steps": "2"}
    p = w.txt2img(script_args(w, settings), prompt="a (~: M00: red :~) cat", n_iter=2, seed=-1)
    processed = w.run(p)
    labels = map_labels(w, processed)
    assert (
        labels
        == [None, None, None, None]
        + [
            "M00, step 2, difference",
            "OUT00, step 2, difference",
        ]
        * 2
    )
    assert processed.index_of_first_image == 2, "each run's batch grid comes first"
    seeds = processed.all_seeds
    assert len(seeds) == len(labels)
    assert seeds[0] == seeds[2] != -1, "both runs use one fixed seed"
    assert seeds[1] == seeds[3]
    base, with_lp = pixels(processed.images[0]), pixels(processed.images[2])
    assert not np.array_equal(base, with_lp), "the per-block prompt changes the image"


def test_webui_size_520x776(w):
    p = w.txt2img(section_args(w, features("IN00, OUT02", **{"features.steps": "1"})), width=520, height=776, steps=1)
    processed = w.run(p)
    assert map_labels(w, processed) == [None, "IN00, step 1, U-Net features", "OUT02, step 1, U-Net features"]
    assert processed.images[0].size == (520, 776)


def test_no_hook_survives_a_checkpoint_switch_after_a_failed_run(w):
    old = w.unet
    with pytest.raises(DumpUnetError):
        w.run(w.txt2img(section_args(w, features("IN99"))))
    info = w.sd_models.CheckpointInfo("other.safetensors", builder=lambda: tiny_model.build(unets.SD1, 1))
    w.sd_models.load_model(info)
    try:
        processed = w.run(w.txt2img(section_args(w, features("M00", **{"features.steps": "1"}))))
        assert map_labels(w, processed) == [None, "M00, step 1, U-Net features"]
        assert w.unet is not old
        assert hooks_on(old) == hooks_on(w.unet) == 0
    finally:
        w.sd_models.load_model(w.checkpoint_info)


def test_log_to_stderr_is_scoped_to_the_run(w, capsys):
    w.run(w.txt2img(section_args(w, features("M00", **{"features.steps": "1", "output.debug": True}))))
    err = capsys.readouterr().err
    assert "[Dump U-Net] lib_dumpunet" in err
    assert "image 0: 1 maps" in err
    w.run(w.txt2img(section_args(w, features("M00", **{"features.steps": "1"}))))
    assert "[Dump U-Net]" not in capsys.readouterr().err


# --- sampler steps from the denoiser's call counter ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sampler", "steps", "total", "expected"),
    [
        ("Euler", 4, 4, [1, 2, 3, 4]),
        ("Heun", 3, 6, [1, 1, 2, 2, 3]),  # second order: two calls a step, one for the last
        ("DDIM", 4, 4, [1, 2, 3]),  # webui 1.10's DDIM evaluates the model once fewer than its steps
        ("PLMS", 4, 4, [1, 1, 2, 3]),  # PLMS warms up with a second call in its first step
    ],
)
def test_denoiser_calls_become_sampler_steps(w, sampler, steps, total, expected):
    from lib_dumpunet.webui.host import denoiser_call  # needs the fake webui's modules on sys.path

    config = SimpleNamespace(name=sampler)
    denoiser = SimpleNamespace(steps=steps, total_steps=total, sampler=SimpleNamespace(config=config))
    cond = torch.zeros(1, 77, 8)
    seen = []
    for calls in range(len(expected)):
        denoiser.step = calls
        params = SimpleNamespace(denoiser=denoiser, text_cond=cond, text_uncond=cond)
        call = denoiser_call(params, SimpleNamespace(steps=steps, is_hr_pass=False))
        assert call.schedule_step == calls, "prompt schedules follow the webui's own counter"
        seen.append(call.step)
    assert seen == expected
