"""Latent views — the pseudo-blocks latent, x0 and cfg — on the real tiny ldm U-Net, driven by a small Euler sampler
with classifier-free guidance written here (the webui's row order: every image's cond rows, AND sub-prompts
consecutive, then one uncond row per image)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import unets
from jobdriver import ToyHost
from PIL import Image

from lib_dumpunet.capture import Key
from lib_dumpunet.dump import read_dump
from lib_dumpunet.errors import DumpUnetError
from lib_dumpunet.job import Job, make_plan
from lib_dumpunet.layout import UNetLayout
from lib_dumpunet.settings import from_mapping
from lib_dumpunet.specs import parse_layers
from lib_dumpunet.views import SD_LATENT_RGB, SDXL_LATENT_RGB, LatentRGB, ViewPainter, fit_latent_rgb, scenes

SIGMA_MAX = 8.0
DEMO = Path(__file__).resolve().parents[1] / "demo" / "model"
NAMES = ("IN00", "IN01", "M00", "OUT00", "OUT01")


# --- the grammar ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("latent", ("latent",)),
        ("cfg, M00, latent", ("latent", "M00", "cfg")),
        ("X0,IN00-OUT01", (*NAMES, "x0")),
        ("IN00-OUT01", NAMES),  # a range never includes the views
        (" Latent , latent ", ("latent",)),
    ],
)
def test_views_parse_among_block_names(text, expected):
    assert parse_layers(text, NAMES, views=True) == expected


@pytest.mark.parametrize(
    ("text", "at"),
    [("latent-IN01", 0), ("IN00-latent", 5), ("IN00 - cfg", 7), ("x0-cfg", 0), ("latent(+2)", 6)],
)
def test_views_at_the_end_of_a_range_are_refused_with_a_caret(text, at):
    with pytest.raises(DumpUnetError) as caught:
        parse_layers(text, NAMES, views=True)
    message = str(caught.value)
    lines = message.splitlines()
    assert lines[-1].index("^") - lines[-2].index(text) == at, message


def test_bad_names_list_the_views_only_where_they_are_allowed():
    with pytest.raises(DumpUnetError, match="latent, x0, cfg") as caught:
        parse_layers("IN00,latnet", NAMES, views=True)
    assert "^" in str(caught.value)
    with pytest.raises(DumpUnetError) as elsewhere:
        parse_layers("latent", NAMES)  # the attention tab and per-block prompts take blocks only
    assert "x0" not in str(elsewhere.value)


def test_the_attention_tab_refuses_views(sd1_unet, tmp_path):
    settings = {"attention.enabled": True, "attention.layers": "latent", "attention.outputs": ["Q*K"]}
    with pytest.raises(DumpUnetError, match="Attention › Layers"):
        make_plan(from_mapping(settings), UNetLayout(sd1_unet), job_steps=3, dump_base=tmp_path, shared=False)


# --- a sampler that hands the job what a host hands it ---------------------------------------------------------------


def euler(
    unet,
    host: ToyHost,
    prompts: list[str],
    negatives: list[str],
    *,
    job: Job | None = None,
    steps: int = 3,
    seeds: tuple[int, ...] = (),
    skip_uncond_steps: frozenset[int] = frozenset(),
    record: dict | None = None,
) -> torch.Tensor:
    """k-diffusion-style Euler from sigma 8 to 0 with CFG 7 and AND weights 1; returns the final latents."""
    if job is not None:
        prompts, negatives = job.begin_batch(0, prompts, negatives, seeds=list(seeds))
    subs = [host.split_and(p) for p in prompts]
    counts = [len(s) for s in subs]
    owner = [i for i, n in enumerate(counts) for _ in range(n)]
    contexts = torch.stack([host.encode_now(t) for s in subs for t in s] + [host.encode_now(n) for n in negatives])
    noise = torch.stack([torch.randn(4, 8, 8, generator=torch.Generator().manual_seed(s)) for s in seeds])
    sigmas = torch.linspace(SIGMA_MAX, 0.0, steps + 1)
    x = noise * sigmas[0]
    if record is not None:
        record.update(noise=noise, denoised={}, guided={})
    n_cond = len(owner)
    for i in range(steps):
        sigma = sigmas[i]
        if job is not None:
            job.denoiser_call(pass_index=0, step=i + 1, schedule_step=i, cond_counts=counts)
        skip = (i + 1) in skip_uncond_steps
        x_in = torch.cat([x[owner], x])
        rows = n_cond if skip else len(x_in)
        scaled = x_in[:rows] / (sigma**2 + 1) ** 0.5
        t = torch.full((rows,), 999.0 * float(sigma) / SIGMA_MAX)
        with torch.no_grad():
            eps = unet(scaled, t, context=contexts[:rows])
        denoised = x_in[:rows] - sigma * eps
        if skip:  # the first cond stands in for the uncond, as the webui does
            firsts = [owner.index(k) for k in range(len(prompts))]
            denoised = torch.cat([denoised, denoised[firsts]])
        cond, uncond = denoised[:n_cond], denoised[n_cond:]
        delta = torch.zeros_like(uncond).index_add_(0, torch.tensor(owner), cond - uncond[owner])
        guided = uncond + (1.0 if skip else 7.0) * delta
        if job is not None:
            job.denoised(denoised)
            job.guided(guided)
        if record is not None:
            record["denoised"][i + 1], record["guided"][i + 1] = denoised, guided
        x = x + (x - guided) / sigma * (sigmas[i + 1] - sigma)
    return x


@pytest.fixture
def host():
    return ToyHost(unets.SD1.context_dim)


def views_job(unet, tmp_path: Path, layers: str = "latent,x0,cfg", steps: str = "", **extra) -> Job:
    settings = from_mapping({"features.enabled": True, "features.layers": layers, "features.steps": steps, **extra})
    plan = make_plan(settings, UNetLayout(unet), job_steps=3, dump_base=tmp_path, shared=False)
    return Job(plan, UNetLayout(unet), ToyHost(unets.SD1.context_dim))


def test_latent_of_step_1_is_the_scaled_initial_noise(sd1_unet, host, tmp_path):
    record: dict = {}
    with views_job(sd1_unet, tmp_path, "latent") as job:
        euler(sd1_unet, host, ["a cat"], ["blurry"], job=job, seeds=(5,), record=record)
        latent = job.capture.take_image(0)
    first = next(t for k, t in latent.items() if k.step == 1 and k.place == "latent")
    scaled_noise = record["noise"][0] * SIGMA_MAX / (SIGMA_MAX**2 + 1) ** 0.5
    torch.testing.assert_close(first, scaled_noise)
    assert sorted(k.step for k in latent) == [1, 2, 3]


def test_x0_of_the_last_step_is_the_final_latent_and_the_image_is_unchanged(sd1_unet, host, tmp_path):
    plain = euler(sd1_unet, host, ["a cat"], ["blurry"], seeds=(3,))
    with views_job(sd1_unet, tmp_path, "latent,x0,cfg,IN01") as job:
        final = euler(sd1_unet, host, ["a cat"], ["blurry"], job=job, seeds=(3,))
        captured = job.capture.take_image(0)
    assert torch.equal(plain, final), "recording views changes nothing"
    last_x0 = next(t for k, t in captured.items() if k.place == "x0" and k.step == 3)
    torch.testing.assert_close(last_x0, final[0])  # Euler's last step lands on the prediction


def test_cfg_is_zero_when_prompt_and_negative_are_the_same(sd1_unet, host, tmp_path):
    with views_job(sd1_unet, tmp_path, "cfg") as job:
        euler(sd1_unet, host, ["a red cube"], ["a red cube"], job=job, seeds=(1,))
        same = [t for k, t in job.capture.take_image(0).items() if k.place == "cfg"]
    with views_job(sd1_unet, tmp_path, "cfg") as job:
        euler(sd1_unet, host, ["a red cube"], ["a blue ball"], job=job, seeds=(1,))
        different = [t for k, t in job.capture.take_image(0).items() if k.place == "cfg"]
    assert len(same) == len(different) == 3
    assert all(float(t.abs().max()) < 1e-5 for t in same)
    assert all(float(t.mean()) > 1e-3 for t in different)


def test_and_with_batch_2_files_each_row_under_its_image(sd1_unet, host, tmp_path):
    record: dict = {}
    prompts = ["a cat AND a hat", "a dog"]
    with views_job(sd1_unet, tmp_path, "latent,x0,cfg", steps="2") as job:
        euler(sd1_unet, host, prompts, ["", "ugly"], job=job, seeds=(11, 12), record=record)
        taken = {i: job.capture.take_image(i) for i in (0, 1)}
    denoised, guided = record["denoised"][2], record["guided"][2]  # rows: cat, hat, dog, uncond 0, uncond 1
    expected_cfg = {(0, 0): (0, 3), (0, 1): (1, 3), (1, 0): (2, 4)}
    for (image, sub), (row, uncond) in expected_cfg.items():
        got = next(t for k, t in taken[image].items() if k.place == "cfg" and k.sub == sub)
        torch.testing.assert_close(got[0], (denoised[row] - denoised[uncond]).norm(dim=0))
    for image in (0, 1):
        x0 = next(t for k, t in taken[image].items() if k.place == "x0")
        torch.testing.assert_close(x0, guided[image])
        keys = sorted((k.place, k.sub) for k in taken[image])
        assert keys == sorted([("latent", 0), ("x0", 0)] + [("cfg", s) for i, s in expected_cfg if i == image])


def test_skipped_uncond_gives_a_note_not_a_crash(sd1_unet, host, tmp_path):
    with views_job(sd1_unet, tmp_path, "x0,cfg") as job:
        euler(sd1_unet, host, ["a cat"], ["blurry"], job=job, seeds=(2,), skip_uncond_steps=frozenset({1, 2}))
        maps = job.take_maps(0)
        notes = job.notes()
    cfg_steps = [m.key.step for m in maps if m.key.place == "cfg"]
    assert cfg_steps == [3]
    assert len(notes) == 1 and "step(s) 1, 2" in notes[0] and "uncond" in notes[0]
    assert [m.key.step for m in maps if m.key.place == "x0"] == [1, 2, 3]


def test_maps_are_image_sized_labelled_and_in_gallery_order(sd1_unet, host, tmp_path):
    with views_job(sd1_unet, tmp_path, "cfg,OUT11,x0,latent,IN00", steps="3") as job:
        euler(sd1_unet, host, ["a cat"], ["blurry"], job=job, seeds=(2,))
        maps = job.take_maps(0)
    assert [m.key.place for m in maps] == ["latent", "IN00", "OUT11", "x0", "cfg"]
    views = {m.key.place: m for m in maps}
    for place in ("latent", "x0", "cfg"):
        assert views[place].image.size == (64, 64) and views[place].image.mode == "RGB"
    assert views["latent"].label == "latent, step 3, U-Net input latent (approx)"
    assert views["x0"].label.startswith("x0, step 3, predicted x0")
    assert "guidance |cond − uncond| mean " in views["cfg"].label
    assert views["cfg"].file_suffix == "-dumpunet-unet-cfg-003"


def test_views_are_dumped_like_blocks(sd1_unet, host, tmp_path):
    extra = {"features.dump.enabled": True, "features.dump.folder": "d"}
    with views_job(sd1_unet, tmp_path, "latent,x0,cfg", steps="1", **extra) as job:
        euler(sd1_unet, host, ["a cat"], ["blurry"], job=job, seeds=(2,))
        job.take_maps(0)
    dump = read_dump(next((tmp_path / "d").iterdir()))
    shapes = {entry.place: dump.load(entry).shape for entry in dump}
    assert shapes == {"latent": (4, 8, 8), "x0": (4, 8, 8), "cfg": (1, 8, 8)}


# --- drawing ---------------------------------------------------------------------------------------------------


def test_sdxl_gets_the_sdxl_coefficients(sdxl_unet, sd1_unet, tmp_path):
    assert LatentRGB.for_model(sdxl=True).weights == SDXL_LATENT_RGB
    assert LatentRGB.for_model(sdxl=False).weights == SD_LATENT_RGB
    for unet, coefficients in ((sdxl_unet, SDXL_LATENT_RGB), (sd1_unet, SD_LATENT_RGB)):
        layout = UNetLayout(unet)
        plan = make_plan(
            from_mapping({"features.enabled": True, "features.layers": "x0"}),
            layout,
            job_steps=1,
            dump_base=tmp_path,
            shared=False,
        )
        job = Job(plan, layout, ToyHost(8))  # a host without a map of its own: the layout tells the family
        assert job.painter().latent_rgb.weights == coefficients


def test_the_approximation_colours_a_latent_as_the_formula_says():
    latent = torch.zeros(4, 2, 2)
    latent[0, 0, 0] = 1.0  # channel 0 alone → (0.298, 0.207, 0.208) on [-1, 1]
    picture = ViewPainter(scale=1).paint(_key("latent"), latent).image
    expected = np.rint((np.array(SD_LATENT_RGB[0]) + 1) * 127.5)
    assert np.array_equal(np.asarray(picture)[0, 0], expected)
    assert np.array_equal(np.asarray(picture)[1, 1], [128, 128, 128])


def test_a_least_squares_fit_recovers_a_linear_vae():
    weights = torch.tensor([[0.5, -0.1, 0.2], [0.0, 0.3, -0.4], [0.25, 0.25, 0.25], [-0.3, 0.1, 0.0]])
    bias = torch.tensor([0.1, -0.2, 0.05])

    def vae(latents):
        rgb = torch.einsum("nchw,cr->nrhw", latents, weights) + bias[None, :, None, None]
        return torch.nn.functional.interpolate(rgb, scale_factor=8, mode="nearest")

    def encode(pictures):  # any latents do, as long as they span the four channels
        pooled = torch.nn.functional.avg_pool2d(pictures, 8)
        return torch.cat([pooled, pooled[:, :1] * pooled[:, 1:2]], dim=1)

    for fitted in (fit_latent_rgb(vae), fit_latent_rgb(vae, encode)):
        torch.testing.assert_close(torch.tensor(fitted.weights), weights, atol=1e-4, rtol=0)
        torch.testing.assert_close(torch.tensor(fitted.bias), bias, atol=1e-4, rtol=0)
        assert fitted.source.endswith("R² 1.00")


def test_the_vae_setting_decodes_through_the_host(sd1_unet, host, tmp_path):
    decoded = []

    def decode_latents(latents):
        decoded.append(latents.shape)
        return torch.zeros(latents.shape[0], 3, latents.shape[2] * 8, latents.shape[3] * 8)

    host.decode_latents = decode_latents
    settings = from_mapping({"features.enabled": True, "features.layers": "x0", "features.latent_decoder": "vae"})
    layout = UNetLayout(sd1_unet)
    plan = make_plan(settings, layout, job_steps=3, dump_base=tmp_path, shared=False)
    with Job(plan, layout, host) as job:
        euler(sd1_unet, host, ["a cat"], ["blurry"], job=job, seeds=(2,))
        maps = job.take_maps(0)
    assert decoded == [(1, 4, 8, 8)] * 3
    assert maps[0].label == "x0, step 1, predicted x0 (VAE)" and maps[0].image.size == (64, 64)


def _key(place: str) -> Key:
    return Key(0, 0, 1, place, "features")


# --- the diffusers host ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_sd1(tmp_path_factory):
    import tiny_diffusers

    from lib_dumpunet.diffusers import load_model

    return load_model(tiny_diffusers.build_folder(tmp_path_factory.mktemp("views-model"), "sd1"))


def diffusers_views(model, tmp_path, sampler: str, layers: str = "latent,x0,cfg", steps: int = 3):
    from lib_dumpunet.diffusers import Generation, prepare
    from lib_dumpunet.diffusers.host import DiffusersHost

    gen = Generation("a red circle AND a square", "blurry", seed=5, steps=steps, width=64, height=64, sampler=sampler)
    settings = from_mapping({"features.enabled": True, "features.layers": layers})
    plan = prepare(model, settings, gen, dump_base=tmp_path)
    return gen, Job(plan, model.layout, DiffusersHost(model.text, model.vae))


@pytest.mark.parametrize("sampler", ["euler", "ddim"])
def test_diffusers_views_latent_is_the_scaled_noise_x0_ends_on_the_latents_image_unchanged(tiny_sd1, tmp_path, sampler):
    from lib_dumpunet.diffusers.generate import denoise
    from lib_dumpunet.diffusers.model import make_scheduler

    gen, job = diffusers_views(tiny_sd1, tmp_path, sampler)
    plain = denoise(tiny_sd1, gen, [gen.prompt], [gen.negative], [5])
    with job:
        job.begin_batch(0, [gen.prompt], [gen.negative], [5])
        final = denoise(tiny_sd1, gen, [gen.prompt], [gen.negative], [5], job=job)
        taken = job.capture.take_image(0)
    assert torch.equal(plain, final)
    scheduler = make_scheduler(tiny_sd1, sampler)
    scheduler.set_timesteps(3)
    noise = torch.randn(4, 8, 8, generator=torch.Generator().manual_seed(5)) * scheduler.init_noise_sigma
    scaled = scheduler.scale_model_input(noise[None], scheduler.timesteps[0])[0]
    torch.testing.assert_close(taken[_key("latent")], scaled)
    last_x0 = taken[Key(0, 0, 3, "x0", "features")]
    if sampler == "euler":  # Euler's last step lands on the prediction, as in the webui
        torch.testing.assert_close(last_x0, final[0], atol=1e-4, rtol=1e-4)
    else:  # DDIM's last step stops one noise level short of ᾱ = 1 (set_alpha_to_one off): close, not equal
        assert float((last_x0 - final[0]).abs().mean()) < 0.1 * float(final[0].abs().mean())
    assert sorted(k.sub for k in taken if k.place == "cfg" and k.step == 1) == [0, 1]


def test_diffusers_x0_is_the_webui_s_denoised_for_euler(tiny_sd1):
    from lib_dumpunet.diffusers.generate import predicted_x0
    from lib_dumpunet.diffusers.model import make_scheduler

    scheduler = make_scheduler(tiny_sd1, "euler")
    scheduler.set_timesteps(5)
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * scheduler.init_noise_sigma
    t = scheduler.timesteps[1]
    scheduler._step_index = 1
    eps = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    sigma = float(scheduler.sigmas[1])
    scaled = latents / (sigma**2 + 1) ** 0.5
    # the webui's k-diffusion denoiser: denoised = x − σ·ε on the unscaled latents
    torch.testing.assert_close(predicted_x0(scheduler, scaled, eps, t), latents - sigma * eps, atol=1e-4, rtol=1e-4)


def test_diffusers_host_fits_its_vae_once(tiny_sd1):
    from lib_dumpunet.diffusers.host import DiffusersHost

    host = DiffusersHost(tiny_sd1.text, tiny_sd1.vae)
    fitted = host.latent_rgb
    assert fitted is host.latent_rgb is DiffusersHost(tiny_sd1.text, tiny_sd1.vae).latent_rgb
    assert "fitted" in fitted.source and len(fitted.weights) == 4
    latents = host.encode_pictures(scenes(4, seed=9))
    pooled = torch.nn.functional.avg_pool2d(host.decode_latents(latents), 8)
    error = float((fitted(latents) - pooled).pow(2).mean())
    assert error < float(pooled.var()), "better than the mean colour"
    assert DiffusersHost(tiny_sd1.text).latent_rgb is None


@pytest.mark.skipif(not DEMO.joinpath("model_index.json").is_file(), reason="the demo model is not in this checkout")
def test_on_the_demo_model_the_fitted_map_beats_the_sd_coefficients():
    from lib_dumpunet.diffusers import Generation, load_model
    from lib_dumpunet.diffusers.generate import denoise
    from lib_dumpunet.diffusers.host import DiffusersHost

    model = load_model(DEMO)
    host = DiffusersHost(model.text, model.vae)
    gen = Generation("a large red circle and a small blue square on a white background", "", seed=3, steps=8,
                     width=64, height=64)  # fmt: skip
    latents = denoise(model, gen, [gen.prompt] * 2, [""] * 2, [3, 4])
    truth = torch.nn.functional.avg_pool2d(host.decode_latents(latents), 8)

    def error(rgb):
        return float((rgb(latents) - truth).pow(2).mean())

    fitted = host.latent_rgb
    assert float(fitted.source.rpartition("R² ")[2]) >= 0.7
    assert error(fitted) < 0.5 * error(LatentRGB.for_model(sdxl=False))
    assert 1 - error(fitted) / float(truth.var()) >= 0.7


def test_the_command_line_shows_views_as_rows_of_the_features_table(tmp_path):
    import tiny_diffusers

    from lib_dumpunet.cli import main

    folder = tiny_diffusers.build_folder(tmp_path / "model", "sd1")
    out = tmp_path / "out"
    args = ["features", "-p", "a cat", "--layers", "cfg,IN01,latent,x0", "--map-steps", "2", "--steps", "2"]
    assert main([*args, "--model", str(folder), "--out", str(out), "--quiet"]) == 0
    page = (out / "index.html").read_text("utf-8")
    rows = re.findall(r'<th class="place">(\w+)', page)
    assert rows == ["latent", "IN01", "x0", "cfg"]
    assert "|cond − uncond| per latent pixel" in page
    saved = sorted(p.name for p in out.glob("*-dumpunet-unet-*.png"))
    assert saved == [f"00000-1-dumpunet-unet-{p}-002.png" for p in ("IN01", "cfg", "latent", "x0")]
    with Image.open(out / "00000-1-dumpunet-unet-x0-002.png") as x0, Image.open(out / "00000-1.png") as image:
        assert x0.size == image.size
        assert 'Dump U-Net map: "x0, step 2, predicted x0 (approx fitted to the VAE, R² ' in x0.info["parameters"]


def test_the_info_panel_describes_views_among_blocks(sd1_unet, tmp_path):
    from lib_dumpunet.webui.info import tab_info

    values = {"features.enabled": True, "features.layers": "x0, IN00, latent"}
    text = tab_info("features", values, 64, 64, unet=sd1_unet, dump_base=tmp_path, shared=False)
    lines = text.split("\n")
    assert lines[1].startswith("latent") and "input latent" in lines[1]
    assert lines[2].startswith("IN00")
    assert lines[3].startswith("x0") and "clean latent" in lines[3]
