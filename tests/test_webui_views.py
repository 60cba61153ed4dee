"""Latent views in the (fake) webui's real sampling path: the callbacks on_cfg_denoiser, on_cfg_denoised and
on_cfg_after_cfg as v1.10.1 fires them, with AND, batches, hires fix, img2img, skipped uncond rows and SDXL."""

from __future__ import annotations

import numpy as np
import pytest
import unets
from PIL import Image
from webuihelp import features, left_clean, map_labels, section_args, session


def test_sdxl_views_use_the_sdxl_approximation():
    """First in the file: one fake webui session at a time, and the SD1 one lives for the rest of the module."""
    with session(unets.SDXL) as w:
        processed = w.run(w.txt2img(section_args(w, views("x0", **{"features.steps": "1"})), steps=1))
        assert list(by_label(w, processed)) == ["x0, step 1, predicted x0 (approx SDXL)"]


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


def views(layers: str = "latent,x0,cfg", **more):
    return features(layers, **{"output.display_min": 0, **more})


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB")).astype(int)


def by_label(w, processed) -> dict[str, Image.Image]:
    first = processed.index_of_first_image
    labels = map_labels(w, processed)
    return {label: processed.images[first + i] for i, label in enumerate(labels) if label}


def test_views_leave_the_image_unchanged_and_x0_of_the_last_step_is_the_image(w):
    plain = w.run(w.txt2img(seed=4, sampler_name="Euler", steps=3))
    processed = w.run(w.txt2img(section_args(w, views()), seed=4, sampler_name="Euler", steps=3))
    image = processed.images[processed.index_of_first_image]
    assert np.array_equal(pixels(plain.images[0]), pixels(image))
    maps = by_label(w, processed)
    assert [label.split(",")[0] for label in maps] == ["latent", "x0", "cfg"] * 3
    x0 = maps["x0, step 3, predicted x0 (approx)"]
    assert x0.size == image.size
    # the fake VAE decodes with the same cheap map, so Euler's last prediction is the image (rounding aside)
    assert np.abs(pixels(x0) - pixels(image)).max() <= 1
    assert "mean" in next(label for label in maps if label.startswith("cfg, step 1"))


def test_and_and_batch_2_rows_belong_to_their_images(w):
    settings = views("x0,cfg", **{"features.steps": "2"})
    p = w.txt2img(section_args(w, settings), prompt="a dog AND a hat", negative_prompt="a cat", batch_size=2)
    p.prompt = ["a dog AND a hat", "a cat"]  # the second image's prompt equals its negative: no guidance
    processed = w.run(p)
    labels = map_labels(w, processed)
    assert labels == [
        None,
        "x0, step 2, predicted x0 (approx)",
        labels[2],
        labels[3],
        None,
        "x0, step 2, predicted x0 (approx)",
        labels[6],
    ]
    assert labels[2].startswith("cfg, step 2, guidance") and labels[3].endswith("AND 2")
    assert labels[6].startswith("cfg, step 2, guidance |cond − uncond| mean 0, max 0")
    assert "mean 0," not in labels[2] and "mean 0," not in labels[3]


def test_hires_second_pass_has_its_own_views(w):
    settings = views("latent,x0", **{"features.steps": "2"})
    p = w.txt2img(section_args(w, settings), enable_hr=True, hr_scale=2, hr_upscaler="Latent", hr_second_pass_steps=2)
    processed = w.run(p)
    maps = by_label(w, processed)
    assert list(maps) == [
        "latent, step 2, U-Net input latent (approx)",
        "x0, step 2, predicted x0 (approx)",
        "latent, step 2, U-Net input latent (approx), hires pass",
        "x0, step 2, predicted x0 (approx), hires pass",
    ]
    image = processed.images[processed.index_of_first_image]
    assert image.size == (128, 128)
    assert maps["x0, step 2, predicted x0 (approx)"].size == (64, 64)
    assert maps["x0, step 2, predicted x0 (approx), hires pass"].size == (128, 128)


def test_img2img_views_end_on_the_image(w):
    init = Image.new("RGB", (64, 64), (200, 120, 40))
    args = section_args(w, views("latent,x0"), is_img2img=True)
    processed = w.run(w.img2img([init], args, steps=4, denoising_strength=0.5, sampler_name="Euler"))
    maps = by_label(w, processed)
    x0_steps = [label for label in maps if label.startswith("x0")]
    assert 1 <= len(x0_steps) < 4
    image = processed.images[processed.index_of_first_image]
    assert np.abs(pixels(maps[x0_steps[-1]]) - pixels(image)).max() <= 1


def test_skipped_uncond_rows_give_a_note(w):
    w.shared.opts.data["skip_early_cond"] = 0.5
    processed = w.run(w.txt2img(section_args(w, views("cfg,x0")), steps=4, sampler_name="Euler"))
    labels = [label for label in map_labels(w, processed) if label]
    assert [label.split(",")[:2] for label in labels if label.startswith("cfg")] == [["cfg", " step 4"]]
    assert len([label for label in labels if label.startswith("x0")]) == 4
    assert "no cfg map at step(s) 1, 2, 3" in processed.comments


def test_vae_setting_decodes_with_the_model(w):
    settings = views("x0", **{"features.latent_decoder": "vae", "features.steps": "2"})
    processed = w.run(w.txt2img(section_args(w, settings), sampler_name="Euler", steps=2))
    maps = by_label(w, processed)
    image = processed.images[processed.index_of_first_image]
    assert np.abs(pixels(maps["x0, step 2, predicted x0 (VAE)"]) - pixels(image)).max() <= 1


def test_infotext_carries_the_setting(w):
    settings = views("latent", **{"features.latent_decoder": "vae", "features.steps": "1"})
    processed = w.run(w.txt2img(section_args(w, settings), steps=1))
    params = w.infotext_utils.parse_generation_parameters(processed.infotexts[processed.index_of_first_image])
    assert "features.layers: latent" in params["Dump U-Net"]
    assert "features.latent_decoder: vae" in params["Dump U-Net"]


def test_the_layers_axis_takes_views(w):
    processed = w.xyz_plot(w.txt2img(seed=5), "Dump U-Net: layers", "latent, cfg", include_lone_images=True)
    cells = processed.images[processed.index_of_first_image :]
    assert [c.size for c in cells] == [(64, 64), (64, 64)]
    assert 'Dump U-Net map: "latent, step 1, U-Net input latent (approx)"' in processed.infotexts[-2]
    assert 'Dump U-Net map: "cfg, step 1, guidance |cond − uncond| mean ' in processed.infotexts[-1]
