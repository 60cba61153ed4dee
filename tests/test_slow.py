"""The full-size SD1.5 U-Net (random weights, fp32, CPU) at 32² latents: what the tiny U-Nets cannot show.

Real channel counts, head counts and head widths (40, 80, 160), the real 768-wide context. Excluded by default;
run with `python -m pytest -m slow`. The U-Net is built once for the module (about 10 s).
"""

from __future__ import annotations

import pytest
import torch
import unets
from benchmarks.sd15 import CONTEXT_DIM, build_sd15
from jobdriver import ToyHost, sample

from lib_dumpunet.capture import Key
from lib_dumpunet.colorize import Colorizer, ColorSettings
from lib_dumpunet.job import Job, make_plan
from lib_dumpunet.layout import UNetLayout
from lib_dumpunet.render import render
from lib_dumpunet.settings import from_mapping

pytestmark = pytest.mark.slow

PROMPT = "a photo of a cat"
EVERYTHING = {
    "features.enabled": True,
    "features.layers": "IN00-OUT11",
    "attention.enabled": True,
    "attention.layers": "IN00-OUT11",
    "attention.outputs": ["K", "Q*K", "V*Q*K"],
    "attention.self_attention": True,
}


@pytest.fixture(scope="module")
def unet():
    return build_sd15(seed=0)


@pytest.fixture(scope="module")
def layout(unet):
    return UNetLayout(unet)


def plan_for(layout, tmp_path, job_steps: int, **settings):
    return make_plan(from_mapping(settings), layout, job_steps=job_steps, dump_base=tmp_path, shared=False)


def test_capture_changes_nothing_and_keeps_every_block_exactly(unet, layout, tmp_path):
    host = ToyHost(CONTEXT_DIM)
    # Without Dump U-Net: plain forward hooks (they return None, so they cannot change anything) keep each block's
    # output for the cond row (row 0; the webui puts cond rows first) at every step.
    seen: dict[str, list[torch.Tensor]] = {name: [] for name in layout.names}
    handles = [
        layout.module(name).register_forward_hook(lambda _m, _a, out, name=name: seen[name].append(out[0].clone()))
        for name in layout.names
    ]
    try:
        off = sample(unet, None, host, [PROMPT], [""], steps=2, size=256)
    finally:
        for handle in handles:
            handle.remove()
    assert all(len(outputs) == 2 for outputs in seen.values()), "one U-Net call per step"

    with Job(plan_for(layout, tmp_path, 2, **EVERYTHING), layout, host) as job:
        on = sample(unet, job, host, [PROMPT], [""], steps=2, size=256)

    assert torch.equal(on, off), "capturing features and attention must not change the generated latents"
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in unet.modules())
    features = {k: job.capture[k] for k in job.capture if k.kind == "features"}
    assert len(features) == 25 * 2
    for name in layout.names:
        for step in (1, 2):
            captured = features[Key(0, 0, step, name, "features")]
            assert torch.equal(captured, seen[name][step - 1]), f"{name} at step {step} is not the block's output"
    assert {k.kind for k in job.capture} == {"features", "k", "qk", "vqk", "self"}


def forward_shapes(unet, layout, width: int, height: int) -> dict[str, tuple[tuple, tuple]]:
    """Input and output shape (C, h, w) of every block in a real forward at an image size, resized the webui's way."""
    seen = {}

    def keep(name):
        return lambda _m, args, out: seen.__setitem__(name, (tuple(args[0].shape[1:]), tuple(out.shape[1:])))

    handles = [layout.module(name).register_forward_hook(keep(name)) for name in layout.names]
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 4, height // 8, width // 8, generator=g)
    context = torch.randn(1, 77, CONTEXT_DIM, generator=g)
    try:
        with torch.no_grad(), unets.webui_skip_resize():
            unet(x, torch.full((1,), 500.0), context=context)
    finally:
        for handle in handles:
            handle.remove()
    return seen


@pytest.mark.parametrize(("width", "height"), [(256, 256), (264, 392)])
def test_layout_shapes_equal_a_real_forward(unet, layout, width, height):
    real = forward_shapes(unet, layout, width, height)
    computed = {
        name: ((s.input.channels, s.input.height, s.input.width), (s.output.channels, s.output.height, s.output.width))
        for name, s in layout.shapes(width, height).items()
    }
    assert computed == real
    assert real["IN00"][1] == (320, height // 8, width // 8)
    assert real["M00"][1][0] == 1280
    assert real["OUT11"][1] == (320, height // 8, width // 8)


# The original extension's canvases at 512×512 on SD1 (reference/dumpunet-spec.md §4.4), as (width, height).
ORIGINAL_CANVASES = {
    "IN00": (1299, 1039),
    "IN03": (659, 527),
    "IN04": (1055, 659),
    "IN07": (679, 543),
    "M00": (359, 287),
    "OUT05": (1319, 1055),
    "OUT08": (2079, 1299),
}


@pytest.mark.parametrize("block", ORIGINAL_CANVASES)
def test_canvas_sizes_of_the_original_at_512(layout, block):
    shape = layout.shapes(512, 512)[block].output  # shapes from the model on the meta device: no forward
    tensor = torch.randn(shape.channels, shape.height, shape.width, generator=torch.Generator().manual_seed(2))
    colorizer = Colorizer.from_settings(ColorSettings())
    averaged, canvas = render(Key(0, 0, 1, block, "features"), tensor, colorizer, average="sum")
    assert canvas.image.size == ORIGINAL_CANVASES[block]
    assert averaged.averaged
    assert averaged.image.size == (shape.width, shape.height)


def project(linear: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """`linear(x)` in float64, without calling the module."""
    bias = None if linear.bias is None else linear.bias.double()
    return torch.nn.functional.linear(x.double(), linear.weight.double(), bias)


def test_cross_attention_probabilities_of_all_16_modules(unet, layout, tmp_path):
    infos = layout.attentions(layout.names, "attn2")
    assert len(infos) == 16
    reference: dict[str, torch.Tensor] = {}

    def recompute(label):
        def hook(module, args, kwargs, _out):
            # the plain einsum-softmax of ldm's own CrossAttention, in float64, for the cond row; the projections
            # are applied by hand: calling to_q/to_k here would be one more call their hooks see
            q = project(module.to_q, args[0][:1])
            k = project(module.to_k, kwargs["context"][:1])
            q = q.reshape(*q.shape[:2], module.heads, -1)
            k = k.reshape(*k.shape[:2], module.heads, -1)
            sim = torch.einsum("bihd,bjhd->bhij", q, k) * module.scale
            reference[label] = sim.softmax(dim=-1)[0]  # (heads, positions, tokens)

        return hook

    handles = [
        layout.attention_module(info).register_forward_hook(recompute(info.label), with_kwargs=True) for info in infos
    ]
    host = ToyHost(CONTEXT_DIM)
    plan = plan_for(
        layout,
        tmp_path,
        1,
        **{"attention.enabled": True, "attention.layers": "IN00-OUT11", "attention.outputs": ["Q*K"]},
    )
    try:
        with torch.no_grad(), Job(plan, layout, host) as job:
            sample(unet, job, host, [PROMPT], [""], steps=1, size=256)
    finally:
        for handle in handles:
            handle.remove()

    assert sorted(k.place for k in job.capture) == sorted(info.label for info in infos)
    for info in infos:
        maps = job.capture[Key(0, 0, 1, info.label, "qk")]
        where = layout.transformer_input(info, 256, 256)
        assert maps.shape == (info.heads, 77, where.height, where.width), info.label
        probs = maps.double().reshape(info.heads, 77, -1)
        torch.testing.assert_close(probs.sum(dim=1), torch.ones_like(probs[:, 0]), atol=1e-5, rtol=0)
        torch.testing.assert_close(probs, reference[info.label].transpose(1, 2), atol=1e-5, rtol=0)
