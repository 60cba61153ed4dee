from __future__ import annotations

import pytest
import torch
import unets
from torch import nn

from lib_dumpunet.errors import DumpUnetError
from lib_dumpunet.layout import Shape, UNetLayout, latent_size

SD_NAMES = (*(f"IN{i:02d}" for i in range(12)), "M00", *(f"OUT{i:02d}" for i in range(12)))
XL_NAMES = (*(f"IN{i:02d}" for i in range(9)), "M00", *(f"OUT{i:02d}" for i in range(9)))

SIZES = {
    "sd1": [(512, 512), (520, 776)],
    "sd2": [(512, 512), (520, 776)],
    "sdxl": [(512, 512), (520, 776), (1024, 1024)],
}
CASES = [(f, size) for f in unets.FLAVOURS for size in SIZES[f.name]]


def forward_shapes(unet, flavour, width, height) -> dict[str, tuple[tuple, tuple]]:
    """Input and output shapes of every block in a real forward pass (with the webui's skip resizing)."""
    layout = UNetLayout(unet)
    seen = {}
    handles = [
        layout.module(name).register_forward_hook(
            lambda _m, args, out, name=name: seen.__setitem__(name, (tuple(args[0].shape[1:]), tuple(out.shape[1:])))
        )
        for name in layout.names
    ]
    x, t, kwargs = unets.inputs(flavour, width, height)
    try:
        with torch.no_grad(), unets.webui_skip_resize():
            unet(x, t, **kwargs)
    finally:
        for h in handles:
            h.remove()
    return seen


def _tuple(shape: Shape) -> tuple[int, int, int]:
    return (shape.channels, shape.height, shape.width)


@pytest.mark.parametrize(("flavour", "size"), CASES, ids=[f"{f.name}-{w}x{h}" for f, (w, h) in CASES])
def test_shapes_equal_a_real_forward(unet_for, flavour, size):
    unet = unet_for(flavour)
    width, height = size
    computed = UNetLayout(unet).shapes(width, height)
    real = forward_shapes(unet, flavour, width, height)
    assert {n: (_tuple(s.input), _tuple(s.output)) for n, s in computed.items()} == real


def test_block_names_follow_the_model(flavour_unet):
    flavour, unet = flavour_unet
    layout = UNetLayout(unet)
    assert layout.names == (XL_NAMES if flavour.name == "sdxl" else SD_NAMES)
    assert layout.block("M00").path == "middle_block"
    assert layout.block(layout.names[-1]).path == f"output_blocks.{len(layout.names) // 2 - 1}"
    assert layout.module("M00") is unet.middle_block


def test_attention_modules_are_found_structurally(flavour_unet):
    flavour, unet = flavour_unet
    layout = UNetLayout(unet)
    cross = layout.attentions(layout.names, "attn2")
    assert len(cross) == (70 if flavour.name == "sdxl" else 16)
    assert len(layout.attentions(layout.names, "attn1")) == len(cross)
    for info in cross:
        module = layout.attention_module(info)
        assert module is unet.get_submodule(info.path)
        assert info.heads == module.heads
        assert info.heads * info.dim_head == module.to_q.out_features
        assert info.context_dim == flavour.context_dim
    assert layout.context_dim == flavour.context_dim
    assert len({a.label for a in cross}) == len(cross), "labels tell every module apart"


def test_sd1_contents_and_labels(sd1_unet):
    layout = UNetLayout(sd1_unet)
    assert layout.block("IN00").contents == ("Conv",)
    assert layout.block("IN01").contents == ("Res", "Trans×1")
    assert layout.block("IN03").contents == ("Down",)
    assert layout.block("M00").contents == ("Res", "Trans×1", "Res")
    assert layout.block("OUT05").contents == ("Res", "Trans×1", "Up")
    assert [a.label for a in layout.block("IN04").attentions] == ["IN04.attn1", "IN04.attn2"]
    assert layout.block("IN04").attentions[1].path == "input_blocks.4.1.transformer_blocks.0.attn2"


def test_sdxl_layout_matches_sgm(sdxl_unet):
    layout = UNetLayout(sdxl_unet)
    depth = {b.name: b.contents for b in layout.blocks}
    assert depth["IN01"] == ("Res",)
    assert depth["IN04"] == ("Res", "Trans×2")
    assert depth["IN07"] == ("Res", "Trans×10")
    assert depth["M00"] == ("Res", "Trans×10", "Res")
    assert depth["OUT02"] == ("Res", "Trans×10", "Up")
    assert depth["OUT08"] == ("Res",)
    deep = [a for a in layout.block("M00").attentions if a.kind == "attn2"]
    assert [a.depth for a in deep] == list(range(10))
    assert deep[9].path == "middle_block.1.transformer_blocks.9.attn2"
    assert deep[9].label == "M00.attn2.9"


def test_transformer_input_shape(sd1_unet, sdxl_unet):
    layout = UNetLayout(sd1_unet)
    info = layout.block("OUT05").attentions[1]
    # OUT05 = Res, Trans, Up: the transformer runs before the upsampling, on the block's input size
    assert layout.transformer_input(info, 512, 512) == Shape(128, 16, 16)
    assert layout.shapes(512, 512)["OUT05"].output == Shape(128, 32, 32)
    xl = UNetLayout(sdxl_unet)
    assert xl.transformer_input(xl.block("IN04").attentions[0], 1024, 1024).height == 64


def test_shapes_are_cached_per_size(sd1_unet):
    layout = UNetLayout(sd1_unet)
    assert layout.shapes(512, 512) is layout.shapes(512, 512)
    assert layout.shapes(512, 512) is not layout.shapes(512, 768)


@pytest.mark.parametrize(("width", "height"), [(0, 512), (511, 512), (512, -8), (500, 512)])
def test_sizes_must_be_multiples_of_8(width, height):
    with pytest.raises(DumpUnetError, match="multiple of 8"):
        latent_size(width, height)


def test_a_model_without_unet_blocks_is_refused():
    with pytest.raises(DumpUnetError, match="SD3"):
        UNetLayout(nn.Linear(2, 2))


def test_inpainting_input_channels():
    unet = unets.build_sd1()
    unet.input_blocks[0][0] = nn.Conv2d(9, unets.MODEL_CHANNELS, 3, padding=1)
    layout = UNetLayout(unet)
    assert layout.latent_channels == 9
    assert layout.shapes(64, 64)["IN00"].input == Shape(9, 8, 8)
