"""The webui's DDIM (and PLMS) sampler in the (fake) webui: the paths only timestep samplers take — a denoiser that
predicts noise at integer timesteps (`CFGDenoiserTimesteps.get_pred_x0`), and a loop that evaluates the model for
fewer or more steps than it announces (webui v1.10.1: one model step per timestep of `range(0, 1000, 1000 // steps)`
but the first)."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import unets
from PIL import Image
from webuihelp import features, left_clean, map_labels, section_args, session


@pytest.fixture(scope="module")
def w():
    with session(unets.SD1) as w:
        yield w


@pytest.fixture(autouse=True)
def _clean(w):
    with left_clean(w):
        yield


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB")).astype(int)


def first_image(processed) -> Image.Image:
    return processed.images[processed.index_of_first_image]


@contextlib.contextmanager
def denoiser_calls(w):
    """Every on_cfg_denoiser call of the block: (denoiser.step, the rows' timesteps, state.sampling_step)."""
    seen: list[tuple[int, list[float], int]] = []

    def record(params):
        seen.append((params.denoiser.step, params.sigma.tolist(), params.sampling_step))

    w.script_callbacks.on_cfg_denoiser(record)
    try:
        yield seen
    finally:
        w.script_callbacks.remove_callbacks_for_function(record)


@contextlib.contextmanager
def registered(w, **callbacks):
    """Script callbacks (category=function) registered for the block."""
    for category, function in callbacks.items():
        getattr(w.script_callbacks, f"on_{category}")(function)
    try:
        yield
    finally:
        for function in callbacks.values():
            w.script_callbacks.remove_callbacks_for_function(function)


# --- the double itself --------------------------------------------------------------------------------------------


def test_ddim_and_plms_are_registered_as_timestep_samplers(w):
    data = w.sd_samplers.find_sampler_config("DDIM")
    assert (data.name, data.aliases, data.options) == ("DDIM", ["ddim"], {})
    assert w.sd_samplers.samplers_map["ddim"] == "DDIM" and w.sd_samplers.samplers_map["plms"] == "PLMS"
    sampler = w.sd_samplers.create_sampler("DDIM", w.sd_model)
    denoiser = sampler.model_wrap_cfg
    assert type(sampler).__name__ == "CompVisSampler" and type(denoiser).__name__ == "CFGDenoiserTimesteps"
    assert denoiser.mask_before_denoising is True
    assert (sampler.eta_option_field, sampler.eta_infotext_field, sampler.eta_default) == ("eta_ddim", "Eta DDIM", 0)
    import modules.sd_samplers_compvis as compvis

    assert compvis.CompVisSampler is type(sampler)


@pytest.mark.parametrize(
    ("steps", "evaluated"), [(2, 1), (4, 3), (10, 9), (20, 19), (3, 3), (7, 7), (30, 30), (60, 62), (150, 166)]
)
def test_ddim_model_steps_depend_on_whether_steps_divide_1000(w, steps, evaluated):
    sampler = w.sd_samplers.create_sampler("DDIM", w.sd_model)
    timesteps = sampler.get_timesteps(w.txt2img(steps=steps), steps).tolist()
    assert timesteps[0] == 1 and timesteps == sorted(timesteps) and timesteps[-1] <= 999
    assert len(timesteps) - 1 == evaluated


def test_ddim_fires_the_callbacks_once_per_model_step_from_the_highest_timestep(w):
    order: list[str] = []
    with (
        denoiser_calls(w) as seen,
        registered(
            w,
            cfg_denoised=lambda params: order.append("denoised"),
            cfg_after_cfg=lambda params: order.append("after_cfg"),
        ),
    ):
        processed = w.run(w.txt2img(prompt="a cat", steps=4, sampler_name="DDIM", seed=3))
    assert [(step, sigma) for step, sigma, _ in seen] == [(0, [751.0] * 2), (1, [501.0] * 2), (2, [251.0] * 2)]
    assert [sampling_step for *_, sampling_step in seen] == [0, 0, 1]  # the loop's callback moves it after a step
    assert order == ["denoised", "after_cfg"] * 3
    assert "Sampler: DDIM" in processed.infotexts[0] and "Eta DDIM" not in processed.infotexts[0]


def test_eta_other_than_zero_is_in_the_infotext_and_changes_the_image(w):
    plain = w.run(w.txt2img(steps=4, sampler_name="DDIM", seed=3))
    noisy = w.run(w.txt2img(steps=4, sampler_name="DDIM", seed=3, eta=0.5))
    assert "Eta DDIM: 0.5" in noisy.infotexts[0]
    assert not np.array_equal(pixels(plain.images[0]), pixels(noisy.images[0]))


def test_last_latent_is_the_cond_rows_x0_from_the_noise_prediction(w):
    """The webui's own conversion: x0 = (x − √(1 − ᾱ_t)·eps) / √ᾱ_t at the integer timestep t."""
    inputs, outputs, stored = [], [], []
    with registered(
        w,
        cfg_denoiser=lambda params: inputs.append((params.x.clone(), params.sigma.clone())),
        cfg_denoised=lambda params: outputs.append(params.x.clone()),
        cfg_after_cfg=lambda params: stored.append(w.shared.state.current_latent.clone()),
    ):
        w.run(w.txt2img(prompt="a cat", negative_prompt="blurry", steps=2, sampler_name="DDIM", seed=5))
    ((x_in, sigma),), (x_out,), (latent,) = inputs, outputs, stored
    assert sigma.tolist() == [501.0, 501.0]
    a_t = w.sd_model.alphas_cumprod[501]
    expected = (x_in[:1] - (1 - a_t).sqrt() * x_out[:1]) / a_t.sqrt()
    assert latent.shape == expected.shape and float((latent - expected).abs().max()) < 1e-5


# --- the extension on DDIM ----------------------------------------------------------------------------------------


def test_features_at_each_model_step_and_the_last_step_reported_missing(w):
    processed = w.run(w.txt2img(section_args(w, features("IN00")), steps=4, sampler_name="DDIM"))
    assert map_labels(w, processed) == [None] + [f"IN00, step {s}, U-Net features" for s in (1, 2, 3)]
    assert "Dump U-Net: U-Net features steps [4] were never reached." in processed.comments


def test_three_steps_take_three_model_steps_so_every_step_has_maps(w):
    processed = w.run(w.txt2img(section_args(w, features("IN00")), steps=3, sampler_name="DDIM"))
    assert map_labels(w, processed) == [None] + [f"IN00, step {s}, U-Net features" for s in (1, 2, 3)]
    assert not any("never reached" in comment for comment in processed.comments)


def test_x0_view_is_the_samplers_own_prediction_after_guidance(w):
    """The DDIM loop's `denoised` (x0 of the guided noise) of each step, decoded like the view's VAE setting."""
    predictions = []
    callback_state = w.sd_samplers_common.Sampler.callback_state

    def keep(sampler, d):
        predictions.append(d["denoised"].clone())
        return callback_state(sampler, d)

    settings = features("x0", **{"output.display_min": 0, "features.latent_decoder": "vae"})
    w.sd_samplers_common.Sampler.callback_state = keep
    try:
        processed = w.run(w.txt2img(section_args(w, settings), prompt="a cat", steps=4, sampler_name="DDIM", seed=2))
    finally:
        w.sd_samplers_common.Sampler.callback_state = callback_state
    labels = map_labels(w, processed)
    assert labels == [None] + [f"x0, step {s}, predicted x0 (VAE)" for s in (1, 2, 3)]
    first = processed.index_of_first_image
    for step, latent in enumerate(predictions, start=1):
        view = processed.images[first + step]
        expected = w.sd_samplers_common.sample_to_image(latent, 0)
        assert view.size == expected.size
        assert np.abs(pixels(view) - pixels(expected)).max() <= 1, f"step {step}"
    assert not np.array_equal(pixels(processed.images[first + 1]), pixels(processed.images[first + 3]))


def test_cfg_view_is_zero_when_the_prompt_is_the_negative_and_not_otherwise(w):
    settings = features("cfg", **{"output.display_min": 0, "features.steps": "1"})
    same = w.run(w.txt2img(section_args(w, settings), prompt="a cat", negative_prompt="a cat", sampler_name="DDIM"))
    other = w.run(w.txt2img(section_args(w, settings), prompt="a cat", negative_prompt="a dog", sampler_name="DDIM"))
    (same_label,) = [label for label in map_labels(w, same) if label]
    (other_label,) = [label for label in map_labels(w, other) if label]
    assert same_label.startswith("cfg, step 1, guidance |cond − uncond| mean 0, max 0")
    assert other_label.startswith("cfg, step 1, guidance") and "mean 0," not in other_label


def test_word_heat_maps_leave_the_image_unchanged(w):
    kwargs = {"prompt": "a cat in a red hat", "steps": 4, "sampler_name": "DDIM", "seed": 6}
    plain = w.run(w.txt2img(**kwargs))
    settings = {"heatmap.enabled": True, "heatmap.words": "cat, hat", "output.display_min": 0}
    processed = w.run(w.txt2img(section_args(w, settings), **kwargs))
    assert map_labels(w, processed) == [None, "heat map: cat", "heat map: hat", "heat maps: cat, hat"]
    assert np.array_equal(pixels(plain.images[0]), pixels(first_image(processed)))
    cat, hat = processed.images[processed.index_of_first_image + 1 : processed.index_of_first_image + 3]
    assert not np.array_equal(pixels(cat), pixels(hat))


def test_everything_on_leaves_the_image_unchanged(w):
    kwargs = {"prompt": "a cat AND a hat", "negative_prompt": "blurry", "steps": 4, "sampler_name": "DDIM", "seed": 8}
    plain = w.run(w.txt2img(**kwargs))
    everything = {
        **features("IN00-OUT11, latent, x0, cfg"),
        "attention.enabled": True,
        "attention.layers": "IN00-OUT11",
        "attention.outputs": ["K", "Q*K", "V*Q*K"],
        "output.uncond": True,
        "heatmap.enabled": True,
        "heatmap.words": "cat",
    }
    processed = w.run(w.txt2img(section_args(w, everything), **kwargs))
    assert np.array_equal(pixels(plain.images[0]), pixels(first_image(processed)))
    assert len(processed.images) > 100


def test_img2img_with_ddim_maps_the_steps_it_runs(w):
    """steps 10, denoising 0.5: t_enc = 5; the sampler announces 6 steps and evaluates the model 4 times."""
    init = Image.new("RGB", (64, 64), (200, 120, 40))
    kwargs = {"steps": 10, "denoising_strength": 0.5, "sampler_name": "DDIM", "seed": 4}
    plain = w.run(w.img2img([init], **kwargs))
    with denoiser_calls(w) as seen:
        processed = w.run(w.img2img([init], section_args(w, features("IN00, x0"), is_img2img=True), **kwargs))
    assert [sigma[0] for _, sigma, _ in seen] == [401.0, 301.0, 201.0, 101.0]
    labels = map_labels(w, processed)
    assert labels == [None] + [
        f"{name}, step {s}, {what}"
        for s in (1, 2, 3, 4)
        for name, what in (("IN00", "U-Net features"), ("x0", "predicted x0 (approx)"))
    ]
    assert "Dump U-Net: U-Net features steps [5, 6, 7, 8, 9, 10] were never reached." in processed.comments
    assert np.array_equal(pixels(plain.images[0]), pixels(first_image(processed)))


def test_plms_warm_up_call_belongs_to_its_first_step(w):
    with denoiser_calls(w) as seen:
        processed = w.run(w.txt2img(section_args(w, features("IN00")), steps=4, sampler_name="PLMS"))
    assert [sigma[0] for _, sigma, _ in seen] == [751.0, 501.0, 501.0, 251.0]
    assert map_labels(w, processed) == [None] + [f"IN00, step {s}, U-Net features" for s in (1, 2, 3)]
    assert "Dump U-Net: U-Net features steps [4] were never reached." in processed.comments


def test_sixty_steps_take_sixty_two_model_steps_the_extra_ones_count_as_the_last(w):
    settings = features("IN00", **{"features.steps": "59-60"})
    with denoiser_calls(w) as seen:
        processed = w.run(w.txt2img(section_args(w, settings), steps=60, sampler_name="DDIM"))
    assert len(seen) == 62
    assert map_labels(w, processed) == [None, "IN00, step 59, U-Net features", "IN00, step 60, U-Net features"]
    assert not any("never reached" in comment for comment in processed.comments)
