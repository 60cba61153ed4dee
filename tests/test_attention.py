from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
import unets
from ldm.modules import attention as ldm_attention
from torch.utils._python_dispatch import TorchDispatchMode

from lib_dumpunet.attention import CrossAttentionRecorder, SelfAttentionRecorder
from lib_dumpunet.capture import Key
from lib_dumpunet.hooks import HookSet
from lib_dumpunet.layout import UNetLayout
from lib_dumpunet.probe import Probe
from lib_dumpunet.sampling import cfg_rows
from lib_dumpunet.specs import ALL_STEPS, parse_points, parse_steps


def sdp_attention_forward(self, x, context=None, mask=None, **kwargs):
    """An SDP kernel in the style of the webui's `scaled_dot_product_attention_forward`: no probabilities kept."""
    h = self.heads
    q = self.to_q(x)
    context = x if context is None else context
    k, v = self.to_k(context), self.to_v(context)
    b, n, inner = q.shape
    q, k, v = (t.reshape(b, -1, h, inner // h).transpose(1, 2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v)
    return self.to_out(out.transpose(1, 2).reshape(b, n, inner))


@contextlib.contextmanager
def class_forward(forward):
    """Swap CrossAttention.forward for the whole class, the way the webui applies its optimisations."""
    saved = ldm_attention.CrossAttention.forward
    ldm_attention.CrossAttention.forward = forward
    try:
        yield
    finally:
        ldm_attention.CrossAttention.forward = saved


def reference_inputs(unet, layout, kind, run):
    """The (x, context) every `kind` module received during `run()`, by plain hooks."""
    seen = {}
    with HookSet() as hooks:
        for info in layout.attentions(layout.names, kind):

            def grab(_m, args, kwargs, info=info):
                seen[info.label] = (args[0].detach().clone(), kwargs.get("context"))

            hooks.pre(layout.attention_module(info), grab, with_kwargs=True)
        run()
    return seen


def plain_probs(module, x, context):
    """softmax(q·kᵀ·scale) the way ldm's own CrossAttention computes it: (B, heads, N, T)."""
    h = module.heads
    q = module.to_q(x)
    k = module.to_k(x if context is None else context)
    b, n, _inner = q.shape
    q = q.reshape(b, n, h, -1).permute(0, 2, 1, 3).reshape(b * h, n, -1)
    k = k.reshape(b, k.shape[1], h, -1).permute(0, 2, 1, 3).reshape(b * h, k.shape[1], -1)
    sim = torch.einsum("bid,bjd->bij", q, k) * module.scale
    return sim.softmax(dim=-1).reshape(b, h, n, -1)


def run_probe(unet, attachments, flavour, width, height, *, batch=1, tokens=77, rows=None):
    x, t, kwargs = unets.inputs(flavour, width, height, batch=batch, tokens=tokens)
    layout = UNetLayout(unet)
    with torch.no_grad(), unets.webui_skip_resize():
        plain = unet(x, t, **kwargs)
        with Probe(unet, attachments, layout=layout) as probe:
            probe.tracker.denoiser_call(pass_index=0, step=1, schedule_step=0, rows=rows or cfg_rows([1] * batch, 0))
            probed = unet(x, t, **kwargs)
        seen = {kind: reference_inputs(unet, layout, kind, lambda: unet(x, t, **kwargs)) for kind in ("attn1", "attn2")}
    return layout, plain, probed, probe.capture, seen


def test_probabilities_match_plain_softmax_under_an_sdp_kernel(sd1_unet):
    recorder = CrossAttentionRecorder(UNetLayout(sd1_unet).names, ALL_STEPS, ("k", "qk", "vqk"))
    with class_forward(sdp_attention_forward):
        layout, plain, probed, capture, seen = run_probe(sd1_unet, [recorder], unets.SD1, 64, 64, batch=2)
    assert torch.equal(plain, probed), "recording never changes the U-Net's output"
    cross = layout.attentions(layout.names, "attn2")
    assert len(cross) == 16
    for info in cross:
        module = layout.attention_module(info)
        x, context = seen["attn2"][info.label]
        with torch.no_grad():
            reference = plain_probs(module, x, context)  # (B, heads, N, T)
            v = module.to_v(context)
        h, w = layout.transformer_input(info, 64, 64).height, layout.transformer_input(info, 64, 64).width
        for image in (0, 1):
            qk = capture[Key(image, 0, 1, info.label, "qk")]  # (heads, T, h, w)
            assert qk.shape == (info.heads, 77, h, w)
            torch.testing.assert_close(qk.sum(dim=1), torch.ones(info.heads, h, w), atol=1e-5, rtol=0)
            ref = reference[image].transpose(-1, -2).reshape(info.heads, 77, h, w)
            torch.testing.assert_close(qk, ref, atol=1e-5, rtol=0)
            k = capture[Key(image, 0, 1, info.label, "k")]
            assert k.shape == (info.heads, 77, info.dim_head)
            # V*Q*K: the attention output before to_out, (channels, h, w), channel = head·dim_head + d
            vh = v[image].reshape(77, info.heads, info.dim_head).transpose(0, 1)  # (heads, T, d)
            expected = (reference[image] @ vh).transpose(0, 1).reshape(h * w, -1).T.reshape(-1, h, w)
            torch.testing.assert_close(capture[Key(image, 0, 1, info.label, "vqk")], expected, atol=1e-5, rtol=1e-4)


def test_a_long_prompt_gives_a_column_per_token_of_every_chunk(sd1_unet):
    recorder = CrossAttentionRecorder(["IN01", "M00"], ALL_STEPS)
    _layout, _, _, capture, _ = run_probe(sd1_unet, [recorder], unets.SD1, 64, 64, tokens=154)
    assert capture[Key(0, 0, 1, "IN01.attn2", "qk")].shape == (2, 154, 8, 8)
    assert capture[Key(0, 0, 1, "M00.attn2", "qk")].shape == (2, 154, 1, 1)


def test_sdxl_gives_maps_for_every_depth(sdxl_unet):
    recorder = CrossAttentionRecorder(["M00", "IN04"], ALL_STEPS)
    _, plain, probed, capture, _ = run_probe(sdxl_unet, [recorder], unets.SDXL, 128, 128)
    assert torch.equal(plain, probed)
    labels = sorted({k.place for k in capture})
    assert labels == sorted([f"M00.attn2.{d}" for d in range(10)] + ["IN04.attn2.0", "IN04.attn2.1"])
    assert capture[Key(0, 0, 1, "M00.attn2.9", "qk")].shape[-2:] == (4, 4)


def test_sizes_that_are_not_multiples_of_64_work(sd2_unet):
    recorder = CrossAttentionRecorder(["IN01", "OUT05", "OUT08"], ALL_STEPS, ("qk", "vqk"))
    layout, _, _, capture, seen = run_probe(sd2_unet, [recorder], unets.SD2, 520, 776)
    for label in ("IN01.attn2", "OUT05.attn2", "OUT08.attn2"):
        info = next(a for a in layout.attentions(layout.names, "attn2") if a.label == label)
        shape = layout.transformer_input(info, 520, 776)
        assert capture[Key(0, 0, 1, label, "qk")].shape[-2:] == (shape.height, shape.width)
        assert capture[Key(0, 0, 1, label, "vqk")].shape == (shape.channels, shape.height, shape.width)
        assert seen["attn2"][label][0].shape[1] == shape.height * shape.width


def test_only_cond_rows_of_the_right_images_are_kept(sd1_unet):
    recorder = CrossAttentionRecorder(["IN04"], ALL_STEPS)
    rows = cfg_rows([2, 1], 2, image_offset=10)  # image 10 has two AND sub-prompts
    layout, _, _, capture, seen = run_probe(sd1_unet, [recorder], unets.SD1, 64, 64, batch=5, rows=rows)
    assert sorted((k.image, k.branch, k.sub) for k in capture) == [(10, "cond", 0), (10, "cond", 1), (11, "cond", 0)]
    module = layout.attention_module(layout.block("IN04").attentions[1])
    x, context = seen["attn2"]["IN04.attn2"]
    with torch.no_grad():
        reference = plain_probs(module, x, context)
    got = capture[Key(11, 0, 1, "IN04.attn2", "qk")]
    torch.testing.assert_close(got, reference[2].transpose(-1, -2).reshape(got.shape), atol=1e-5, rtol=0)


def test_self_attention_maps_for_query_points(sd1_unet):
    points = ((0.0, 0.0), (0.5, 0.5), (0.99, 0.25))
    recorder = SelfAttentionRecorder(["IN01", "M00"], ALL_STEPS, points)
    with class_forward(sdp_attention_forward):
        layout, plain, probed, capture, seen = run_probe(sd1_unet, [recorder], unets.SD1, 64, 128)
    assert torch.equal(plain, probed)
    info = layout.block("IN01").attentions[0]
    maps = capture[Key(0, 0, 1, "IN01.attn1", "self")]  # (heads, points, h, w)
    assert maps.shape == (info.heads, 3, 16, 8)
    torch.testing.assert_close(maps.sum(dim=(-1, -2)), torch.ones(info.heads, 3), atol=1e-5, rtol=0)
    x, _ = seen["attn1"]["IN01.attn1"]
    with torch.no_grad():
        full = plain_probs(layout.attention_module(info), x, None)[0]  # (heads, N, N)
    for p, index in enumerate(recorder.positions(16, 8)):
        torch.testing.assert_close(maps[:, p].reshape(info.heads, -1), full[:, index], atol=1e-5, rtol=0)
    assert recorder.positions(16, 8) == [0, 8 * 8 + 4, 4 * 8 + 7]


class _LargestTensor(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, tuple | list) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_self_attention_never_builds_the_full_matrix(sd1_unet, monkeypatch):
    recorder = SelfAttentionRecorder(["IN01"], ALL_STEPS, parse_points("2x2"))
    sizes = []
    finish = SelfAttentionRecorder._finish

    def measured(self, tap, call, capture):
        with _LargestTensor() as mode:
            finish(self, tap, call, capture)
        sizes.append(mode.largest)

    monkeypatch.setattr(SelfAttentionRecorder, "_finish", measured)
    run_probe(sd1_unet, [recorder], unets.SD1, 256, 256, batch=2)  # IN01: 32×32 = 1024 queries
    n, heads, rows = 32 * 32, 2, 2
    assert sizes, "the recorder ran"
    assert max(sizes) < rows * heads * n * n // 8, "far below one (h·w)² matrix per head"


def test_attention_hooks_are_removed(sdxl_unet):
    names = UNetLayout(sdxl_unet).names
    recorders = [CrossAttentionRecorder(names, ALL_STEPS, ("k", "qk", "vqk")), SelfAttentionRecorder(names, ALL_STEPS)]
    run_probe(sdxl_unet, recorders, unets.SDXL, 64, 64)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in sdxl_unet.modules())


def test_steps_not_asked_for_cost_nothing(sd1_unet):
    recorder = CrossAttentionRecorder(["IN01"], parse_steps("2"))
    _, _, _, capture, _ = run_probe(sd1_unet, [recorder], unets.SD1, 64, 64)
    assert len(capture) == 0


@pytest.mark.parametrize("kinds", [(), ("qk", "nonsense")])
def test_unknown_outputs_are_refused(kinds):
    with pytest.raises(ValueError, match="cross-attention outputs"):
        CrossAttentionRecorder(["IN01"], ALL_STEPS, kinds)
