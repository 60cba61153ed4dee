"""The diffusers host drives the real `Job`: capture never changes the image, per-block prompts act through the
library's switch, rows of AND sub-prompts are told apart, dumps read back — on the demo model (when the repository
has it) and on tiny random SD1 and SDXL folders."""

from __future__ import annotations

from pathlib import Path

import pytest
import tiny_diffusers
import torch
from ldm.modules.diffusionmodules import openaimodel

from lib_dumpunet.cli.main import DEFAULT_MODEL
from lib_dumpunet.diffusers import Generation, load_model, prepare, run
from lib_dumpunet.diffusers.generate import denoise
from lib_dumpunet.diffusers.host import DiffusersHost
from lib_dumpunet.dump import read_dump
from lib_dumpunet.errors import DumpUnetError, SpecError
from lib_dumpunet.job import Job
from lib_dumpunet.layout import UNetLayout
from lib_dumpunet.settings import from_mapping

HAS_DEMO = (DEFAULT_MODEL / "model_index.json").is_file()
MODELS = ["sd1", "sdxl", *(["demo"] if HAS_DEMO else [])]
PROMPT = "a large red circle on a white background"


@pytest.fixture(scope="module")
def model_of(tmp_path_factory):
    root, cache = tmp_path_factory.mktemp("models"), {}

    def get(name: str):
        if name not in cache:
            folder = DEFAULT_MODEL if name == "demo" else tiny_diffusers.build_folder(root, name)
            cache[name] = load_model(folder)
        return cache[name]

    return get


def _gen(model, prompt: str = PROMPT, **kw) -> Generation:
    return Generation(prompt, kw.pop("negative", "blurry"), seed=kw.pop("seed", 7), steps=kw.pop("steps", 3),
                      width=64, height=64, **kw)  # fmt: skip


def _latents(model, gen: Generation, job: Job | None = None, prompts=None):
    prompts = prompts or [gen.prompt]
    return denoise(model, gen, prompts, [gen.negative] * len(prompts), gen.seeds(0)[: len(prompts)], job=job)


def _job(model, settings: dict, gen: Generation, tmp_path: Path, role="single") -> Job:
    plan = prepare(model, from_mapping(settings), gen, dump_base=tmp_path)
    return Job(plan, model.layout, DiffusersHost(model.text), role=role)


EVERYTHING = {
    "features.enabled": True,
    "features.layers": "IN00-OUT11",
    "attention.enabled": True,
    "attention.layers": "IN00-OUT11",
    "attention.outputs": ["K", "Q*K", "V*Q*K"],
    "attention.self_attention": True,
    "output.uncond": True,
}


@pytest.mark.parametrize("name", ["sd2", *MODELS])
def test_capturing_every_block_and_attention_leaves_the_latents_bit_identical(name, model_of, tmp_path):
    model = model_of(name)
    gen = _gen(model)
    every = f"{model.layout.names[0]}-{model.layout.names[-1]}"
    settings = EVERYTHING | {"features.layers": every, "attention.layers": every}
    plain = _latents(model, gen)
    with _job(model, settings, gen, tmp_path) as job:
        job.begin_batch(0, [gen.prompt], [gen.negative], [gen.seed])
        captured = _latents(model, gen, job)
        keys = job.capture.keys()
    assert torch.equal(plain, captured)
    features = {(k.place, k.step, k.branch) for k in keys if k.kind == "features"}
    assert len(features) == len(model.layout.names) * gen.steps * 2  # every block, step, cond and uncond
    cross = len(model.layout.attentions(model.layout.names, "attn2"))
    assert len({(k.place, k.step) for k in keys if k.kind == "qk"}) == cross * gen.steps
    assert {k.kind for k in keys} == {"features", "k", "qk", "vqk", "self"}


# SDXL is left out on purpose: its pooled text vector is not per block (as in the webui), so it stays the erased
# prompt's and the image differs slightly from the plain prompt's.
@pytest.mark.parametrize("name", [m for m in MODELS if m != "sdxl"])
def test_a_per_block_prompt_on_every_block_equals_the_plain_prompt(name, model_of, tmp_path):
    model = model_of(name)
    every = f"{model.layout.names[0]}-{model.layout.names[-1]}"
    gen = _gen(model, f"a (~: {every}: large red circle :~) on a white background")
    plain = _latents(model, _gen(model, PROMPT))
    with _job(model, {"layer_prompt.enabled": True}, gen, tmp_path) as job:
        prompts, _ = job.begin_batch(0, [gen.prompt], [gen.negative], [gen.seed])
        assert prompts == ["a  on a white background"]
        switched = _latents(model, gen, job, prompts)
    assert torch.equal(plain, switched)


def test_a_per_block_prompt_on_some_blocks_changes_the_image(model_of, tmp_path):
    model = model_of("sd1")
    gen = _gen(model, "a (~: IN01-IN08, OUT03-OUT11: blue square :~) on a white background")
    plain = _latents(model, _gen(model, "a  on a white background"))
    with _job(model, {"layer_prompt.enabled": True}, gen, tmp_path) as job:
        prompts, _ = job.begin_batch(0, [gen.prompt], [gen.negative], [gen.seed])
        switched = _latents(model, gen, job, prompts)
    assert not torch.equal(plain, switched)
    assert job.switch.blocks == {*(f"IN{i:02d}" for i in range(1, 9)), *(f"OUT{i:02d}" for i in range(3, 12))}


def test_and_sub_prompts_are_rows_of_their_own_with_their_own_token_labels(model_of, tmp_path):
    model = model_of("sd1")
    gen = _gen(model, "a red circle AND a blue square :0.5", steps=2)
    settings = {"attention.enabled": True, "attention.layers": "M00", "attention.outputs": ["Q*K"]}
    with _job(model, settings, gen, tmp_path) as job:
        job.begin_batch(0, [gen.prompt], [gen.negative], [gen.seed])
        _latents(model, gen, job)
        assert {k.sub for k in job.capture} == {0, 1}
        maps = job.take_maps(0)
    assert [m.label for m in maps[:2]] == ["M00.attn2, step 1, Q*K", "M00.attn2, step 1, Q*K, AND 2"]
    labels = model.text.labels(" a blue square")
    assert labels[:5] == ["BOS", "a", "blue", "square", "EOS"]
    assert labels[5:] == ["pad"] * 72


def test_a_weighted_and_changes_the_guidance(model_of):
    model = model_of("sd1")
    half = _latents(model, _gen(model, "a red circle AND a blue square :0.5"))
    full = _latents(model, _gen(model, "a red circle AND a blue square"))
    assert not torch.equal(half, full)


def test_dumps_read_back_with_the_shapes_of_the_layout(model_of, tmp_path):
    model = model_of(MODELS[-1])
    gen = _gen(model, steps=2)
    settings = {"features.enabled": True, "features.layers": "IN00,M00", "features.steps": "2",
                "features.dump.enabled": True}  # fmt: skip
    plan = prepare(model, from_mapping(settings), gen, dump_base=tmp_path)
    result = run(model, plan, gen)
    (folder,) = (tmp_path / "dumpunet").iterdir()
    dump = read_dump(folder)
    shapes = model.layout.shapes(64, 64)
    assert {(e.place, e.step, e.seed, e.prompt) for e in dump} == {("IN00", 2, 7, PROMPT), ("M00", 2, 7, PROMPT)}
    for entry in dump:
        out = shapes[entry.place].output
        assert dump.load(entry).shape == (out.channels, out.height, out.width)
    assert [m.label for m in result.images[0].maps] == ["IN00, step 2, U-Net features", "M00, step 2, U-Net features"]


def test_difference_maps_compare_the_runs_with_and_without_the_per_block_prompts(model_of, tmp_path):
    model = model_of("sd1")
    gen = _gen(model, "a (~: M00: blue square :~) circle", steps=2)
    settings = {"layer_prompt.enabled": True, "layer_prompt.diff": True, "layer_prompt.layers": "M00,OUT00-OUT02"}
    result = run(model, prepare(model, from_mapping(settings), gen, dump_base=tmp_path), gen)
    (image,) = result.images
    assert image.baseline is not None
    diffs = result.diffs[0]
    assert {(m.key.place, m.key.step) for m in diffs} == {(b, s) for b in ("M00", "OUT00", "OUT01", "OUT02")
                                                          for s in (1, 2)}  # fmt: skip
    assert all(m.key.kind == "diff" for m in diffs)


def test_mistakes_stop_before_generation(model_of, tmp_path):
    model = model_of("sd1")
    cases = [
        ({"features.enabled": True, "features.layers": "IN99"}, _gen(model), SpecError, "Layers"),
        ({"layer_prompt.enabled": True}, _gen(model, "a (~: M00: x"), SpecError, "never closed"),
        (
            {"features.enabled": True, "features.layers": "M00", "features.steps": "5"},
            _gen(model),
            DumpUnetError,
            "beyond the 3 steps",
        ),
        ({}, Generation("x", width=65, height=64), DumpUnetError, "multiples of 8"),
    ]
    for settings, gen, error, message in cases:
        with pytest.raises(error, match=message):
            prepare(model, from_mapping(settings), gen, dump_base=tmp_path)


def _ldm_twin(unet) -> openaimodel.UNetModel:
    """ldm's U-Net with the config of an SD1-layout diffusers U-Net (for the demo model)."""
    config = unet.config
    base = config.block_out_channels[0]
    attention_levels = [i for i, t in enumerate(config.down_block_types) if t.startswith("CrossAttn")]
    return openaimodel.UNetModel(
        image_size=32,
        in_channels=config.in_channels,
        out_channels=config.out_channels,
        model_channels=base,
        attention_resolutions=[2**i for i in attention_levels],
        num_res_blocks=config.layers_per_block,
        channel_mult=[c // base for c in config.block_out_channels],
        num_heads=config.attention_head_dim,
        use_spatial_transformer=True,
        transformer_depth=1,
        context_dim=config.cross_attention_dim,
        use_checkpoint=False,
        legacy=False,
    )


@pytest.mark.parametrize("name", [m for m in MODELS if m != "sdxl"])
def test_the_model_has_the_ldm_layout_of_its_config(name, model_of):
    model = model_of(name)
    ldm = UNetLayout(_ldm_twin(model.unet))
    ours = model.layout
    assert ours.names == ldm.names == (*(f"IN{i:02d}" for i in range(12)), "M00", *(f"OUT{i:02d}" for i in range(12)))
    assert [b.contents for b in ours.blocks] == [b.contents for b in ldm.blocks]
    assert [(a.label, a.heads, a.dim_head) for a in ours.attentions(ours.names)] == [
        (a.label, a.heads, a.dim_head) for a in ldm.attentions(ldm.names)
    ]
    assert ours.shapes(64, 64) == ldm.shapes(64, 64)


@pytest.mark.parametrize("name", ["sd1", "sdxl"])
@pytest.mark.parametrize(
    "prompt",
    ["", "a red circle", "a (red:1.3) [circle]", "BREAK a red BREAK circle BREAK", "circle " * 80, "x " * 75],
)
def test_token_labels_name_every_context_position(name, prompt, model_of):
    text = model_of(name).text
    labels = text.labels(prompt)
    assert len(labels) == text.encode(prompt).context.shape[0]
    assert labels[::77] == ["BOS"] * (len(labels) // 77)
    assert ("(" not in labels and "red" in labels) or "red" not in prompt


def test_split_and_reads_weights_as_the_webui_does():
    from lib_dumpunet.diffusers.text import split_and

    assert split_and("a cat AND a dog :0.5 AND fish: -1") == [("a cat", 1.0), (" a dog", 0.5), (" fish", -1.0)]
    assert split_and("ANDROID cat") == [("ANDROID cat", 1.0)]


def test_emphasis_weights_the_context(model_of):
    text = model_of("sd1").text
    assert not torch.equal(text.encode("a (red:1.5) circle").context, text.encode("a red circle").context)
    assert torch.equal(text.encode("a (red:1.0) circle").context, text.encode("a red circle").context)


@pytest.mark.parametrize("name", ["sd1", "sd2"])
def test_a_short_prompt_is_encoded_as_diffusers_pipelines_encode_it(name, model_of):
    """(diffusers' pipelines themselves need a newer transformers than the webui's pin, so their recipe is used:
    the tokenizer padded to 77, the text encoder's last hidden state.)"""
    model = model_of(name)
    tokenizer, encoder = model.text.tokenizers[0], model.text.encoders[0]
    ids = tokenizer("a red circle", padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    with torch.no_grad():
        expected = encoder(ids.input_ids)[0][0]
    assert torch.equal(model.text.encode("a red circle").context, expected)


@pytest.mark.parametrize("sampler", ["heun", "pndm", "dpm++2m", "euler-a"])
def test_every_sampler_step_is_recorded_once_at_its_first_evaluation(sampler, model_of, tmp_path):
    model = model_of("sd1")
    gen = _gen(model, steps=4, sampler=sampler)
    with _job(model, {"features.enabled": True, "features.layers": "M00"}, gen, tmp_path) as job:
        job.begin_batch(0, [gen.prompt], [gen.negative], [gen.seed])
        _latents(model, gen, job)
        steps = sorted(k.step for k in job.capture)
    assert steps == [1, 2, 3, 4]
    assert job.steps_seen == {(0, s) for s in range(1, 5)}
