"""Embedding Estimate library: emphasis parsing, webui-style encoding, both modes, files, bad input.

Models are tiny real architectures (tests/estimate_models.py): HF CLIP text transformers with the real CLIP tokenizer,
and the real ldm U-Net.
"""

from __future__ import annotations

import math
from pathlib import Path

import estimate_models as em
import pytest
import torch
from safetensors.torch import load_file

from lib_dumpunet.emphasis import parse_emphasis
from lib_dumpunet.errors import DumpUnetError
from lib_dumpunet.estimate import EstimateSettings, estimate, from_values, read_embedding, write_embedding
from lib_dumpunet.estimate.clip_text import ClipPromptEncoder
from lib_dumpunet.estimate.denoise import ScheduleDenoiser, karras_sigmas, sampler_step
from lib_dumpunet.estimate.estimator import _LossScale, initial_vectors, row_metrics
from lib_dumpunet.estimate.files import SUBFOLDER, check_name
from lib_dumpunet.estimate.run import run_estimate

torch.set_num_threads(1)


def pieces(text):
    return [(p.text, round(p.weight, 6)) for p in parse_emphasis(text)]


# --- emphasis --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a red cat", [("a red cat", 1.0)]),
        ("a (red) cat", [("a ", 1.0), ("red", 1.1), (" cat", 1.0)]),
        ("a [red] cat", [("a ", 1.0), ("red", round(1 / 1.1, 6)), (" cat", 1.0)]),
        ("a (red:1.4) cat", [("a ", 1.0), ("red", 1.4), (" cat", 1.0)]),
        ("((red))", [("red", 1.21)]),
        ("(a (b:2) c:0.5)", [("a ", 0.5), ("b", 1.0), (" c", 0.5)]),
        (r"\(literal\) (x)", [("(literal) ", 1.0), ("x", 1.1)]),
        ("(open to the end", [("open to the end", 1.1)]),
        ("closed) too]", [("closed) too]", 1.0)]),
        ("a: b", [("a: b", 1.0)]),
        ("x:1.2)", [("x:1.2)", 1.0)]),
        ("", [("", 1.0)]),
        ("(x:-1)", [("x", -1.0)]),
    ],
)
def test_emphasis_weights(text, expected):
    assert pieces(text) == expected


def test_emphasis_break_splits_and_keeps_weights():
    parsed = [p for p in parse_emphasis("a cat BREAK (dog:1.5)") if p.text]  # the webui keeps an empty run too
    assert [p.is_break for p in parsed] == [False, True, False]
    assert (parsed[0].text, parsed[2].text, parsed[2].weight) == ("a cat", "dog", 1.5)
    assert not any(p.is_break for p in parse_emphasis("BREAKFAST break"))


# --- encoding --------------------------------------------------------------------------------------------------------


def test_plain_prompt_is_the_models_own_output():
    enc = em.sd1_encoder()
    tower = enc.towers[0]
    ids = [49406, *tower.ids("a red cat")]
    ids += [49407] * (77 - len(ids))
    with torch.no_grad():
        direct = tower.model(input_ids=torch.tensor([ids])).last_hidden_state
        encoded = enc.encode("a red cat")
    assert encoded.shape == (1, 77, 64)
    torch.testing.assert_close(encoded, direct)


def test_emphasis_scales_rows_and_restores_the_mean():
    enc = em.sd1_encoder()
    with torch.no_grad():
        plain, weighted = enc.encode("a red cat"), enc.encode("a (red:1.4) cat")
    factor = plain.mean() / (plain * _weights(1.4, 2)).mean()
    torch.testing.assert_close(weighted, plain * _weights(1.4, 2) * factor)
    torch.testing.assert_close(weighted.mean(), plain.mean())


def _weights(weight, position):
    w = torch.ones(1, 77, 1)
    w[0, position] = weight
    return w


def test_embedding_vectors_replace_their_word_and_carry_gradients():
    enc = em.sd1_encoder()
    rows = {part: r.clone().requires_grad_(True) for part, r in enc.token_rows("red cat").items()}
    out = enc.encode("a (mycat:1.4)", {"mycat": rows})
    with torch.no_grad():
        reference = enc.encode("a (red cat:1.4)")
    torch.testing.assert_close(out, reference)
    out.sum().backward()
    assert rows["*"].grad is not None
    assert rows["*"].grad.abs().sum() > 0


def test_long_prompts_take_several_chunks_and_sd2_pads_with_zero():
    enc = em.sd2_encoder()
    with torch.no_grad():
        long = enc.encode(", ".join(["red cat"] * 40))
        split = enc.encode("red BREAK cat")
    assert long.shape == (1, 154, 96)
    assert split.shape == (1, 154, 96)
    ids, _ = enc._chunk_ids(enc.towers[0], enc.chunks("cat")[0])
    assert ids[0, :4].tolist() == [49406, enc.towers[0].ids("cat")[0], 49407, 0]


def test_unusable_embedding_in_prompt_is_refused():
    enc = ClipPromptEncoder(em.sd1_encoder().towers, unusable={"oldstyle": "its vectors are 768 wide, not 64"})
    with pytest.raises(DumpUnetError, match=r"oldstyle.*768 wide"):
        enc.encode("a photo, oldstyle")


# --- Transformer mode ------------------------------------------------------------------------------------------------


def transformer_settings(prompt, **kw):
    values = {"prompt": prompt, "name": "est", "tokens": 3, "vectors_from": "tokens", "iterations": 80}
    values["learning_rate"] = 0.01
    return EstimateSettings(**{**values, **kw})


@pytest.mark.parametrize("prompt", ["a red cat", "a (red:1.4) cat"])
def test_transformer_mode_reaches_the_target_rows(prompt):
    enc = em.sd1_encoder()
    result = estimate(transformer_settings(prompt), enc)
    assert result.start.cosine < 0.9
    assert result.final.cosine >= 0.99
    assert result.final.distance < result.start.distance / 2
    assert result.iterations == 80
    assert result.losses[-1] < result.losses[0] / 5


def test_transformer_mode_sdxl_pairs():
    enc = em.sdxl_encoder()
    result = estimate(transformer_settings("a red cat"), enc)
    assert {k: tuple(v.shape) for k, v in result.vectors.items()} == {"clip_l": (3, 64), "clip_g": (3, 64)}
    assert result.final.cosine >= 0.99


def test_init_text_sets_count_and_start():
    enc = em.sd2_encoder()
    same = EstimateSettings(prompt="a red cat", init_text="a red cat", name="est", iterations=1, learning_rate=1e-6)
    result = estimate(same, enc)
    assert result.vectors["*"].shape == (3, 96)
    assert result.start.cosine > 0.9999
    spread = estimate(transformer_settings("a red cat", init_text="red", tokens=2, iterations=1), enc)
    red = enc.token_rows("red")["*"]
    assert spread.vectors["*"].shape == (2, 96)
    torch.testing.assert_close(spread.vectors["*"][1], red[0], atol=0.05, rtol=0)


def test_interrupt_stops_within_one_iteration():
    class StopAfter:
        def __init__(self, n):
            self.n, self.seen = n, []

        def iteration(self, done, total, loss):
            self.seen.append(done)

        def stop_requested(self):
            return len(self.seen) >= self.n

    monitor = StopAfter(3)
    result = estimate(transformer_settings("a red cat", iterations=50), em.sd1_encoder(), monitor=monitor)
    assert result.stopped
    assert result.iterations == 3
    assert monitor.seen == [1, 2, 3]


# --- U-NET mode ------------------------------------------------------------------------------------------------------


def unet_settings(**kw):
    values = {
        "prompt": "a (red:1.4) cat",
        "negative_prompt": "lowres, blurry",
        "mode": "U-NET",
        "name": "est",
        "tokens": 3,
        "vectors_from": "tokens",
        "steps": 2,
        "iterations": 30,
        "learning_rate": 0.005,
    }
    return EstimateSettings(**{**values, **kw})


def test_unet_mode_lowers_matching_loss_tenfold():
    result = estimate(
        unet_settings(steps=1, iterations=25), em.sd1_encoder(), denoiser=em.sd1_denoiser(), latent_shape=(1, 4, 8, 8)
    )
    assert math.isfinite(result.final.loss)
    assert result.final.loss <= result.start.loss / 10


def test_unet_mode_negative_target_trains_the_uncond_branch():
    # At cfg 1 the uncond branch has no effect, so an embedding standing in for the negative prompt matches at once.
    settings = unet_settings(target="Negative_Prompts", cfg_scale=1.0, steps=1, iterations=1)
    result = estimate(settings, em.sd1_encoder(), denoiser=em.sd1_denoiser(), latent_shape=(1, 4, 8, 8))
    assert result.start.loss < 1e-10
    prompts = estimate(
        unet_settings(cfg_scale=1.0, steps=1, iterations=1),
        em.sd1_encoder(),
        denoiser=em.sd1_denoiser(),
        latent_shape=(1, 4, 8, 8),
    )
    assert prompts.start.loss > 1e-4


def test_unet_mode_sd2_v_prediction_learns():
    # SDXL in U-NET mode: tests/test_estimate_tab_sdxl.py, through the webui's own conditioner and apply_model
    encoder, denoiser = em.sd2_encoder, em.sd2_denoiser
    settings = unet_settings(steps=1, iterations=1, learning_rate=0.01, tokens=2)
    result = estimate(settings, encoder(), denoiser=denoiser(), latent_shape=(1, 4, 8, 8))
    start = initial_vectors(settings, encoder())
    assert set(result.vectors) == set(encoder().parts)
    for part, vectors in result.vectors.items():
        assert not torch.equal(vectors, start[part]), part
    assert result.final.loss < result.start.loss


def test_loss_scale_keeps_gradients_and_skips_overflow():
    leaf = torch.tensor([1.0, 2.0], requires_grad=True)
    scaler = _LossScale(scale=1024.0)
    assert scaler.backward((leaf * 3).sum(), [leaf])
    torch.testing.assert_close(leaf.grad, torch.tensor([3.0, 3.0]))
    leaf.grad = None
    assert not scaler.backward((leaf * 1e36).sum(), [leaf])  # 1e36 × 1024 overflows float32
    assert scaler.scale == 512.0


def test_schedule_denoiser_sigmas_and_predictions():
    alphas = em.alphas_cumprod()
    seen = {}

    def model(x, t, cond):
        seen["t"] = t
        return cond

    den = ScheduleDenoiser(model, alphas, "eps")
    sigma = den.sigmas[[10, 500]]
    assert torch.allclose(den.timestep(sigma), torch.tensor([10.0, 500.0]), atol=1e-3)
    x0, noise = torch.randn(2, 4, 2, 2), torch.randn(2, 4, 2, 2)
    s = sigma.reshape(-1, 1, 1, 1)
    torch.testing.assert_close(den(x0 + s * noise, sigma, noise), x0)
    # v-prediction: the model sees x scaled by 1/sqrt(σ²+1) and predicts v = α·ε − σ_t·x0 in that scale
    v_den = ScheduleDenoiser(model, alphas, "v")
    alpha, sig_t = 1 / (s * s + 1).sqrt(), s / (s * s + 1).sqrt()
    torch.testing.assert_close(v_den(x0 + s * noise, sigma, alpha * noise - sig_t * x0), x0)
    karras = karras_sigmas(5, den.sigma_min, den.sigma_max)
    assert karras[0].item() == pytest.approx(den.sigma_max, rel=1e-5)
    assert karras[-2].item() == pytest.approx(den.sigma_min, rel=1e-4)
    assert karras[-1].item() == 0 and bool((karras[:-1] > karras[1:]).all())
    torch.testing.assert_close(sampler_step("Euler", x0 + 3 * noise, x0, 3.0, 0.0, None), x0)


# --- files -----------------------------------------------------------------------------------------------------------


def webui_loader_view(path: Path):
    """What the webui's loader decides for a file: (layout, vectors, width). Written from its documented rules."""
    data = load_file(str(path)) if path.suffix == ".safetensors" else torch.load(path, weights_only=True)
    if "string_to_param" in data:
        (vec,) = data["string_to_param"].values()
        return "ti", vec, vec.shape[-1]
    if "clip_g" in data and "clip_l" in data:
        return "sdxl", data, data["clip_g"].shape[-1] + data["clip_l"].shape[-1]
    (vec,) = data.values()  # diffusers concept: exactly one tensor
    return "concept", vec, vec.shape[-1]


def test_written_files_are_what_the_webui_loader_reads(tmp_path):
    vec = torch.randn(3, 64)
    pt = write_embedding(tmp_path, "neg one", {"*": vec.clone().requires_grad_(True)}, step=7, file_format="pt")
    data = torch.load(pt.path, weights_only=True)
    assert pt.path == tmp_path / SUBFOLDER / "neg one.pt"
    assert data["name"] == "neg one" and data["step"] == 7 and data["string_to_token"] == {"*": 265}
    assert not data["string_to_param"]["*"].requires_grad
    layout, loaded, width = webui_loader_view(pt.path)
    assert (layout, width) == ("ti", 64)
    torch.testing.assert_close(loaded, vec)
    st = write_embedding(tmp_path, "neg two", {"*": vec}, step=7)
    assert webui_loader_view(st.path)[0] == "concept"
    xl = write_embedding(tmp_path, "xl", {"clip_l": vec[:, :32], "clip_g": vec}, step=1)
    assert webui_loader_view(xl.path)[0::2] == ("sdxl", 96)
    for saved in (pt, st, xl):
        assert all(torch.equal(read_embedding(saved.path)[k], v) for k, v in read_embedding(saved.path).items())
    assert list((tmp_path / SUBFOLDER).glob(".*")) == []  # no temporary files left


def test_overwrite_only_when_asked(tmp_path):
    first = write_embedding(tmp_path, "neg", {"*": torch.zeros(1, 8)}, step=1)
    with pytest.raises(DumpUnetError, match=r"exists.*Overwrite"):
        write_embedding(tmp_path, "neg", {"*": torch.ones(1, 8)}, step=1, file_format="pt")
    assert read_embedding(first.path)["*"].sum() == 0
    second = write_embedding(tmp_path, "neg", {"*": torch.ones(1, 8)}, step=1, file_format="pt", overwrite=True)
    assert not first.path.exists() and read_embedding(second.path)["*"].sum() == 8
    (tmp_path / "mine.pt").write_bytes(b"user file")
    with pytest.raises(DumpUnetError, match="outside"):
        write_embedding(tmp_path, "mine", {"*": torch.ones(1, 8)}, step=1, overwrite=True)
    assert (tmp_path / "mine.pt").read_bytes() == b"user file"


@pytest.mark.parametrize(
    "name", ["", "   ", "../evil", "a/b", "a\\b", "..", ".hidden", "con", "x" * 101, "a*b", "a\x00"]
)
def test_bad_names_write_nothing(tmp_path, name):
    with pytest.raises(DumpUnetError, match="Save name"):
        write_embedding(tmp_path, name, {"*": torch.zeros(1, 8)}, step=1)
    assert list(tmp_path.rglob("*")) == []


def test_good_names_keep_their_text():
    assert check_name("  bad-hands_v2.1 x ") == "bad-hands_v2.1 x"
    assert check_name("ネガティブ") == "ネガティブ"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"name": ""}, "Save name"),
        ({"name": "../x"}, "Save name"),
        ({"tokens": 0, "vectors_from": "tokens"}, "tokens must be between 1 and 75"),
        ({"tokens": 76}, "tokens"),
        ({"prompt": ""}, "prompt to estimate is empty"),
        ({"target": "Negative_Prompts"}, "negative prompt to estimate is empty"),
        ({"optimizer": "LBFGS"}, "optimizer"),
        ({"learning_rate": float("nan")}, "finite"),
        ({"iterations": 0}, "Learning steps"),
        ({"mode": "U-NET", "steps": 0}, "Steps"),
        ({"colour": 1}, "Unknown"),
    ],
)
def test_bad_settings_are_refused(values, message):
    with pytest.raises(DumpUnetError, match=message):
        from_values(**{"prompt": "a cat", "name": "ok", **values})


def test_saved_embedding_in_a_prompt_reproduces_the_reported_distance(tmp_path):
    enc = em.sd1_encoder()
    settings = transformer_settings("a (red:1.4) cat", iterations=80)
    result = estimate(settings, enc)
    saved = write_embedding(tmp_path, settings.name, result.vectors, step=result.iterations, file_format="pt")
    loaded = read_embedding(saved.path)
    with torch.no_grad():
        used = enc.encode(saved.name, {saved.name: loaded})
        target = enc.encode(settings.prompt)
    cosine, distance = row_metrics(used[0, 1:4], target[0, 1:4])
    assert distance <= result.final.distance + 1e-5
    assert cosine == pytest.approx(result.final.cosine, abs=1e-5)


def test_unknown_embedding_in_prompt_stops_before_anything_is_written(tmp_path):
    enc = ClipPromptEncoder(em.sd1_encoder().towers, unusable={"badold": "made for another model"})
    with pytest.raises(DumpUnetError, match="badold"):
        run_estimate(transformer_settings("(badold:1.2), lowres"), enc, tmp_path)
    assert list(tmp_path.rglob("*")) == []


def test_run_checks_the_file_before_training_and_saves_after(tmp_path):
    enc = em.sd1_encoder()
    write_embedding(tmp_path, "est", {"*": torch.zeros(3, 64)}, step=0)
    calls = []

    class Counting:
        def iteration(self, done, total, loss):
            calls.append(done)

        def stop_requested(self):
            return False

    with pytest.raises(DumpUnetError, match="exists"):
        run_estimate(transformer_settings("a cat", iterations=5), enc, tmp_path, monitor=Counting())
    assert calls == []
    run = run_estimate(transformer_settings("a cat", iterations=5, overwrite=True), enc, tmp_path, monitor=Counting())
    assert calls == [1, 2, 3, 4, 5]
    torch.testing.assert_close(read_embedding(run.saved.path)["*"], run.result.vectors["*"])

    class Discarding(Counting):
        def stop_requested(self):
            return True

        def discard(self):
            return True

    skipped = run_estimate(transformer_settings("a cat", name="other"), enc, tmp_path, monitor=Discarding())
    assert skipped.saved is None and skipped.result.stopped
    assert not list(tmp_path.rglob("other.*"))


def test_emphasis_parsing_stays_linear_on_hostile_prompts():
    # 1500 brackets left open: applied one by one, each would rescale everything after it
    parsed = parse_emphasis("(a:1.2" * 1500)
    assert len(parsed) == 1500
    assert parsed[0].text == "a:1.2"
    assert parsed[-1].weight == pytest.approx(1.1**1500, rel=1e-9)
    assert [p.weight for p in parse_emphasis("(x:0) [(y:-2)]")] == [0.0, 1.0, pytest.approx(-2 / 1.1)]
