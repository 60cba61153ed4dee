from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import unets
from PIL import Image
from vxahost import POSTERIOR_STD, TinyHost

from lib_dumpunet.errors import DumpUnetError, SpecError
from lib_dumpunet.hooks import HookSet
from lib_dumpunet.layout import UNetLayout
from lib_dumpunet.overlay import colormap, min_max, overlay
from lib_dumpunet.vxa import (
    ALL_LAYERS,
    Posterior,
    VxaSettings,
    layer_choices,
    model_size,
    parse_time,
    resolve_layers,
    visualize,
)

PROMPT = "a red hat, a long neck"


def photo(width: int = 64, height: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


@pytest.fixture
def sd1(sd1_unet):
    return TinyHost(unets.SD1, sd1_unet)


def no_hooks(unet: torch.nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in unet.modules())


# --- layouts and layers -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "count"), [("sd1", 16), ("sd2", 16), ("sdxl", 70)])
def test_all_layers_on_every_layout(unet_for, name, count):
    flavour = {f.name: f for f in unets.FLAVOURS}[name]
    host = TinyHost(flavour, unet_for(flavour))
    result = visualize(host, photo(), VxaSettings(prompt=PROMPT, tokens="hat", layer=ALL_LAYERS))
    assert len(result.attention) == count
    heat = result.heat()
    assert heat.shape == (64, 64) and heat.dtype == np.float32
    assert heat.min() == 0.0 and heat.max() == pytest.approx(1.0)
    assert result.render().shape == (64, 64, 3)
    assert no_hooks(host.unet)


def test_layer_choices_are_read_from_the_model(sd1_unet, sdxl_unet):
    sd1 = layer_choices(UNetLayout(sd1_unet))
    assert sd1[:3] == [ALL_LAYERS, "IN01", "IN02"] and "M00" in sd1 and sd1[-1] == "OUT11"
    assert len(sd1) == 1 + 16
    xl = layer_choices(UNetLayout(sdxl_unet))
    assert "M00" in xl and "M00.attn2.9" in xl and "IN04.attn2.1" in xl and "OUT11" not in xl


def test_layer_names_resolve_in_every_form(sd1_unet, sdxl_unet):
    layout = UNetLayout(sd1_unet)
    original = "model.diffusion_model.middle_block.1.transformer_blocks.0.attn2"
    assert [a.label for a in resolve_layers(layout, original)] == ["M00.attn2"]
    assert [a.label for a in resolve_layers(layout, "m00")] == ["M00.attn2"]
    assert len(resolve_layers(layout, "all")) == 16
    xl = UNetLayout(sdxl_unet)
    assert len(resolve_layers(xl, "M00")) == 10
    assert [a.label for a in resolve_layers(xl, "M00.attn2.3")] == ["M00.attn2.3"]
    with pytest.raises(DumpUnetError, match="not a cross-attention layer of the loaded model; choose one of: All"):
        resolve_layers(xl, "OUT11")
    with pytest.raises(DumpUnetError, match="IN00"):
        resolve_layers(layout, "IN00")  # a block without attention


def test_a_model_switch_needs_nothing_refreshed(sd1_unet, sdxl_unet):
    host = TinyHost(unets.SD1, sd1_unet)
    first = visualize(host, photo(), VxaSettings(prompt=PROMPT, layer="IN01"))
    host = TinyHost(unets.SDXL, sdxl_unet)  # the webui loads another checkpoint
    second = visualize(host, photo(), VxaSettings(prompt=PROMPT, layer="M00.attn2.9"))
    assert list(first.attention) == ["IN01.attn2"] and list(second.attention) == ["M00.attn2.9"]
    assert no_hooks(sd1_unet) and no_hooks(sdxl_unet)


# --- the maps are the attention the U-Net paid -------------------------------------------------------------------


def test_the_layer_map_is_the_attention_paid_to_the_picked_tokens(sd1):
    layout = UNetLayout(sd1.unet)
    (info,) = resolve_layers(layout, "M00")
    module = layout.attention_module(info)
    seen = {}
    with HookSet() as hooks:
        hooks.pre(module, lambda _m, a, k: seen.update(x=a[0], context=k["context"]), with_kwargs=True)
        result = visualize(sd1, photo(), VxaSettings(prompt=PROMPT, tokens="hat, 6", layer="M00", t=500))
    picked = [3, 6]
    assert result.pick.positions == (3, 6)
    with torch.no_grad():
        q, k = module.to_q(seen["x"]), module.to_k(seen["context"])
        heads = info.heads
        q = q.reshape(1, -1, heads, info.dim_head).transpose(1, 2)
        k = k.reshape(1, -1, heads, info.dim_head).transpose(1, 2)
        probs = torch.softmax(q @ k.transpose(-1, -2) * info.dim_head**-0.5, dim=-1)[0]  # (heads, N, T)
    expected = probs[:, :, picked].sum(-1).mean(0)
    got = result.layer_map("M00.attn2")
    torch.testing.assert_close(got.flatten(), expected, atol=1e-5, rtol=1e-4)
    head_max = replace(result, settings=replace(result.settings, heads="max"))
    torch.testing.assert_close(head_max.layer_map("M00.attn2").flatten(), probs[:, :, picked].sum(-1).amax(0))


def test_different_words_give_different_maps_and_per_item_maps(sd1):
    result = visualize(sd1, photo(), VxaSettings(prompt=PROMPT, tokens="hat, neck", layer="IN01"))
    hat, neck = (result.heat(p) for _, p in result.pick.groups)
    assert not np.allclose(hat, neck)
    items = result.per_item()
    assert [label for label, _ in items] == ["hat", "neck"]
    assert all(img.shape == (64, 64, 3) for _, img in items)


def test_a_one_cell_layer_is_flat_not_amplified_rounding(sd1):
    result = visualize(sd1, photo(), VxaSettings(prompt=PROMPT, tokens="hat", layer="M00"))
    assert result.raw_map().shape == (1, 1)  # an 8×8 latent halves three times to one cell
    assert np.array_equal(result.heat(), np.ones((64, 64), np.float32))


def test_several_layers_average_on_the_finest_grid(sd1):
    result = visualize(sd1, photo(), VxaSettings(prompt=PROMPT, tokens="hat", layer=ALL_LAYERS))
    raw = result.raw_map()
    assert raw.shape == (8, 8)  # IN01 at 64×64 pixels
    only_m00 = result.raw_map(layers=["M00.attn2"])
    assert only_m00.shape == (1, 1)


# --- image, latent, noise -------------------------------------------------------------------------------------------


def test_the_vae_gets_pixels_in_minus_one_to_one(sd1):
    white = np.full((64, 64, 3), 255, np.uint8)
    black = np.zeros((64, 64, 3), np.uint8)
    visualize(sd1, white, VxaSettings(prompt=PROMPT))
    visualize(sd1, black, VxaSettings(prompt=PROMPT))
    assert torch.equal(sd1.pixels_seen[0], torch.ones(1, 3, 64, 64))
    assert torch.equal(sd1.pixels_seen[1], -torch.ones(1, 3, 64, 64))


def test_the_posterior_mean_is_deterministic_and_samples_follow_the_seed(sd1):
    image = photo()
    plain = VxaSettings(prompt=PROMPT, noise=False)
    a, b = visualize(sd1, image, plain), visualize(sd1, image, plain)
    mean = sd1.encode_image(sd1.pixels_seen[0]).mean
    assert torch.equal(sd1.unet_inputs[0][0], mean) and torch.equal(sd1.unet_inputs[1][0], mean)
    assert np.array_equal(a.heat(), b.heat())
    sampled = [
        visualize(sd1, image, VxaSettings(prompt=PROMPT, noise=False, latent="sample", seed=s)) for s in (1, 1, 2)
    ]
    xs = [x for x, _ in sd1.unet_inputs[2:]]
    assert torch.equal(xs[0], xs[1]) and not torch.equal(xs[0], xs[2])
    spread = (xs[0] - mean).std().item()
    assert spread == pytest.approx(POSTERIOR_STD, rel=0.3)
    assert sampled[0].settings.seed == 1


def test_noise_brings_the_latent_to_the_level_of_t(sd1):
    image = photo()
    visualize(sd1, image, VxaSettings(prompt=PROMPT, noise=False, t=999))
    visualize(sd1, image, VxaSettings(prompt=PROMPT, noise=True, t=999, seed=5))
    visualize(sd1, image, VxaSettings(prompt=PROMPT, noise=True, t=0, seed=5))
    (z, t0), (x999, t1), (x0, _) = sd1.unet_inputs
    assert t0.tolist() == [999.0] and t1.tolist() == [999.0]
    ab999 = float(sd1.alphas_cumprod[999])
    eps = (x999 - math.sqrt(ab999) * z) / math.sqrt(1 - ab999)
    assert eps.std().item() == pytest.approx(1.0, rel=0.35), "mostly noise at t=999"
    ab0 = float(sd1.alphas_cumprod[0])
    torch.testing.assert_close(x0, math.sqrt(ab0) * z + math.sqrt(1 - ab0) * eps)  # same seed, same noise


def test_random_seed_is_chosen_and_reported(sd1):
    result = visualize(sd1, photo(), VxaSettings(prompt=PROMPT, seed=-1))
    assert result.settings.seed >= 0
    assert f"VXA seed: {result.settings.seed}" in result.infotext()


@pytest.mark.parametrize(("width", "height"), [(100, 75), (200, 64), (64, 520)])
def test_any_image_size_comes_back_at_its_own_size(sd2_unet, width, height):
    host = TinyHost(unets.SD2, sd2_unet)
    result = visualize(host, photo(width, height), VxaSettings(prompt=PROMPT, tokens="neck", layer="OUT05"))
    w, h = result.size
    assert w % 8 == 0 and h % 8 == 0 and w >= 64 and h >= 64
    assert host.pixels_seen[0].shape[-2:] == (h, w)
    assert result.heat().shape == (height, width)
    assert result.render().shape == (height, width, 3)


def test_model_size_keeps_the_aspect_ratio():
    assert model_size(512, 512) == (512, 512)
    assert model_size(100, 75) == (96, 72)
    assert model_size(1000, 500, 512) == (512, 256)
    assert model_size(10, 10) == (64, 64)
    with pytest.raises(DumpUnetError, match="model input size"):
        model_size(9000, 9000)


def test_images_in_every_form(sd1):
    rgba = np.concatenate([photo(), np.full((64, 64, 1), 255, np.uint8)], axis=-1)
    grey = photo()[..., 0]
    pil = Image.fromarray(photo())
    floats = photo().astype(np.float32) / 255
    for image in (rgba, grey, pil, floats):
        assert visualize(sd1, image, VxaSettings(prompt=PROMPT)).image.shape == (64, 64, 3)


# --- bad input ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "settings", "error", "message"),
    [
        (None, VxaSettings(prompt=PROMPT), DumpUnetError, "no image"),
        (np.zeros((0, 5, 3), np.uint8), VxaSettings(prompt=PROMPT), DumpUnetError, "shape"),
        (photo(), VxaSettings(prompt=PROMPT, tokens="hta"), SpecError, "no word 'hta'"),
        (photo(), VxaSettings(prompt=PROMPT, tokens="1, 99"), SpecError, "past the end"),
        (photo(), VxaSettings(prompt="", tokens=""), DumpUnetError, "no tokens to pick"),
        (photo(), VxaSettings(prompt=PROMPT, t=1000), DumpUnetError, "outside 0–999"),
        (photo(), VxaSettings(prompt=PROMPT, t=float("nan")), DumpUnetError, "outside 0–999"),
        (photo(), VxaSettings(prompt=PROMPT, layer="IN99"), DumpUnetError, "not a cross-attention layer"),
        (photo(), VxaSettings(prompt=PROMPT, output="sepia"), DumpUnetError, "Output mode"),
        (photo(), VxaSettings(prompt=PROMPT, opacity=2), DumpUnetError, "Opacity"),
        (photo(), VxaSettings(prompt=PROMPT, size=10), DumpUnetError, "Model input size"),
        (photo(), VxaSettings(prompt=PROMPT, seed="abc"), DumpUnetError, "Seed must be a whole number"),
        (photo(), VxaSettings(prompt=PROMPT, seed=1.5), DumpUnetError, "Seed must be a whole number"),
        (photo(), VxaSettings(prompt=PROMPT, opacity=None), DumpUnetError, "Opacity must be a number"),
        (photo(), VxaSettings(prompt=PROMPT, t="x"), DumpUnetError, "Time embedding"),
        (photo(), VxaSettings(prompt=None), DumpUnetError, "must be text"),
    ],
)
def test_bad_input_is_refused_before_the_unet_runs(sd1, image, settings, error, message):
    with pytest.raises(error, match=message):
        visualize(sd1, image, settings)
    assert sd1.unet_inputs == []


@pytest.mark.parametrize(("text", "value"), [("1.0", 1.0), (" 500 ", 500.0), ("0", 0.0), (999, 999.0)])
def test_time_field(text, value):
    assert parse_time(text) == value


@pytest.mark.parametrize("text", ["", "abc", "-1", "1e9", "nan", "inf"])
def test_bad_time_field(text):
    with pytest.raises(DumpUnetError, match="Time embedding"):
        parse_time(text)


def test_a_posterior_without_spread_cannot_be_sampled(sd1, monkeypatch):

    monkeypatch.setattr(
        sd1, "encode_image", lambda px: Posterior(torch.zeros(1, 4, px.shape[2] // 8, px.shape[3] // 8))
    )
    with pytest.raises(DumpUnetError, match="no spread"):
        visualize(sd1, photo(), VxaSettings(prompt=PROMPT, latent="sample"))


def test_hooks_are_removed_when_the_unet_fails(sd1, monkeypatch):
    def broken(x, t, cond):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(sd1, "run_unet", broken)
    with pytest.raises(RuntimeError, match="out of memory"):
        visualize(sd1, photo(), VxaSettings(prompt=PROMPT, layer=ALL_LAYERS))
    assert no_hooks(sd1.unet)


# --- drawing --------------------------------------------------------------------------------------------------------


def test_overlay_modes():
    image = photo(8, 4)
    heat = np.linspace(0, 1, 32, dtype=np.float32).reshape(4, 8)
    masked = overlay(image, heat, "masked")
    np.testing.assert_array_equal(masked, np.rint(image * heat[..., None]).astype(np.uint8))
    grey = overlay(image, heat, "grey")
    assert grey[0, 0].tolist() == [0, 0, 0] and grey[-1, -1].tolist() == [255, 255, 255]
    np.testing.assert_array_equal(overlay(image, heat, "colour", opacity=0.0), image)
    np.testing.assert_array_equal(overlay(image, heat, "colour", opacity=1.0), colormap(heat))
    jet = colormap(np.array([[0.0, 0.5, 1.0]]))
    assert jet[0, 0].argmax() == 2 and jet[0, 2].argmax() == 0, "cold is blue, hot is red"


def test_min_max_stretches_and_survives_flat_maps():
    assert min_max(np.array([2.0, 3.0, 4.0])).tolist() == [0.0, 0.5, 1.0]
    assert min_max(np.full((3, 3), 7.0)).tolist() == np.ones((3, 3)).tolist()
    assert min_max(np.zeros((2, 2))).tolist() == np.ones((2, 2)).tolist()
    rounding = np.float32(0.25) + np.array([0, 1e-8, 3e-8], dtype=np.float32)
    assert min_max(rounding).tolist() == [1.0, 1.0, 1.0], "rounding is not a map"
    assert min_max(np.array([np.nan, 1.0, 2.0])).tolist() == [0.0, 0.5, 1.0]


def test_infotext_names_every_setting(sd1):
    result = visualize(sd1, photo(100, 75), VxaSettings(prompt='a "red" hat, neck', tokens="hat, neck"))
    text = result.infotext()
    assert 'VXA prompt: "a \\"red\\" hat, neck"' in text
    assert 'VXA tokens: "hat, neck"' in text
    assert "VXA t: 1.0" in text and "VXA noise: true" in text and "VXA layer: M00" in text
    assert "VXA model size: 96x72" in text and "VXA columns: 5 7" in text
    assert "opacity" not in text


# --- the command line, on tiny diffusers folders ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def diffusers_folders(tmp_path_factory):
    from tiny_diffusers import build_folder

    root = tmp_path_factory.mktemp("vxa-models")
    return {"sdxl": build_folder(root, "sdxl")}  # SDXL: two encoders, pooled text and size ids, 70 layers


def test_dumpunet_vxa_writes_the_map_with_its_settings(diffusers_folders, tmp_path, capsys):
    from lib_dumpunet.cli import main

    Image.fromarray(photo(100, 75)).save(tmp_path / "photo.png")
    args = ["vxa", str(tmp_path / "photo.png"), "-p", "a red hat, a long neck", "--tokens", "hat, neck"]
    args += ["--model", str(diffusers_folders["sdxl"]), "--out", str(tmp_path / "out"), "--per-item"]
    assert main([*args, "--layer", "All layers", "--output", "colour"]) == 0
    written = Image.open(tmp_path / "out" / "vxa-photo.png")
    assert written.size == (100, 75)
    info = written.info["parameters"]
    assert 'VXA tokens: "hat, neck"' in info and "VXA layer: All layers" in info and "VXA opacity: 0.5" in info
    assert (tmp_path / "out" / "vxa-photo-hat.png").is_file() and (tmp_path / "out" / "vxa-photo-neck.png").is_file()
    assert "vxa-photo.png" in capsys.readouterr().out


def test_dumpunet_vxa_mistakes_exit_2_with_the_message_before_loading(tmp_path, capsys):
    from lib_dumpunet.cli import main

    Image.fromarray(photo()).save(tmp_path / "photo.png")
    base = ["vxa", str(tmp_path / "photo.png"), "-p", "a red hat", "--model", str(tmp_path / "no-model")]
    assert main([*base, "-t", "2000", "--out", str(tmp_path / "out")]) == 2
    assert "Time embedding: 2000.0 is outside 0–999" in capsys.readouterr().err
    assert main([*base, "--seed", "1", "--size", "9"]) == 2
    assert "Model input size" in capsys.readouterr().err
    assert main([*base]) == 2
    assert "no model_index.json" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
