"""A diffusers U-Net maps onto the webui's block names, contents, attention modules and shapes.

Each tiny diffusers U-Net (tests/tiny_diffusers.py) has the config of one of tests/unets.py's ldm U-Nets, so the
two layouts of one config must agree; shapes are also checked against a real diffusers forward pass.
"""

from __future__ import annotations

import pytest
import tiny_diffusers
import torch
import unets

from lib_dumpunet.diffusers.layout import diffusers_layout
from lib_dumpunet.errors import DumpUnetError
from lib_dumpunet.layout import UNetLayout

FLAVOURS = {f.name: f for f in unets.FLAVOURS}


@pytest.fixture(scope="module")
def diffusers_unet():
    cache = {}

    def get(name: str):
        if name not in cache:
            cache[name] = tiny_diffusers.randomize(tiny_diffusers.UNETS[name](), 0)
        return cache[name]

    return get


@pytest.mark.parametrize("name", ["sd1", "sd2", "sdxl"])
def test_blocks_and_attention_modules_match_the_ldm_layout(name, diffusers_unet, unet_for):
    ours, ldm = diffusers_layout(diffusers_unet(name)), UNetLayout(unet_for(FLAVOURS[name]))
    assert ours.names == ldm.names
    assert [b.contents for b in ours.blocks] == [b.contents for b in ldm.blocks]
    described = lambda layout: [  # noqa: E731
        (a.label, a.kind, a.depth_count, a.heads, a.dim_head, a.context_dim) for a in layout.attentions(layout.names)
    ]
    assert described(ours) == described(ldm)
    assert ours.context_dim == ldm.context_dim == tiny_diffusers.CONTEXT[name]
    if name == "sdxl":
        assert len(ours.attentions(ours.names, "attn2")) == 2 * 2 + 2 * 10 + 10 + 3 * 10 + 3 * 2  # 70, as in SDXL base


@pytest.mark.parametrize("name", ["sd1", "sd2", "sdxl"])
def test_shapes_match_the_ldm_layout_at_multiples_of_64(name, diffusers_unet, unet_for):
    ours, ldm = diffusers_layout(diffusers_unet(name)), UNetLayout(unet_for(FLAVOURS[name]))
    assert ours.shapes(512, 512) == ldm.shapes(512, 512)
    for info in ours.attentions(ours.names, "attn2"):
        assert ours.transformer_input(info, 512, 512) == ldm.transformer_input(info, 512, 512)


@pytest.mark.parametrize(("name", "width", "height"), [("sd1", 64, 64), ("sd1", 72, 104), ("sdxl", 72, 104)])
def test_shapes_equal_a_real_diffusers_forward(name, width, height, diffusers_unet):
    unet = diffusers_unet(name)
    layout = diffusers_layout(unet)
    seen = {}
    handles = [
        layout.module(n).register_forward_hook(
            lambda _m, _a, out, n=n: seen.__setitem__(n, tuple((out[0] if isinstance(out, tuple) else out).shape[1:]))
        )
        for n in layout.names
    ]
    x = torch.randn(1, 4, height // 8, width // 8)
    context = torch.randn(1, 77, tiny_diffusers.CONTEXT[name])
    added = None
    if name == "sdxl":
        added = {"text_embeds": torch.randn(1, tiny_diffusers.CONTEXT[name] // 2), "time_ids": torch.zeros(1, 6)}
    try:
        with torch.no_grad():
            unet(x, 500, encoder_hidden_states=context, added_cond_kwargs=added)
    finally:
        for h in handles:
            h.remove()
    computed = layout.shapes(width, height)
    assert {n: (s.output.channels, s.output.height, s.output.width) for n, s in computed.items()} == seen


def test_context_modules_are_the_blocks_transformers(diffusers_unet):
    unet = diffusers_unet("sd1")
    layout = diffusers_layout(unet)
    assert layout.context_modules("IN01") == (unet.down_blocks[0].attentions[0],)
    assert layout.context_modules("IN03") == ()
    assert layout.context_modules("M00") == (unet.mid_block.attentions[0],)
    assert layout.module("M00") is unet.mid_block
    assert layout.module("OUT05") is unet.up_blocks[1].upsamplers[0]
    assert layout.block("IN04").attentions[1].path == "down_blocks.1.attentions.0.transformer_blocks.0.attn2"


def test_a_model_without_diffusers_blocks_is_refused(unet_for):
    with pytest.raises(DumpUnetError, match="not a diffusers"):
        diffusers_layout(unet_for(unets.SD1))
