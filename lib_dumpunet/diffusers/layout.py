"""A diffusers `UNet2DConditionModel` seen as the webui sees a U-Net: blocks IN00…, M00, OUT… and their layers.

diffusers groups layers by resolution level (`down_blocks[i]` holds the level's residual blocks, transformers and
downsampler; `up_blocks[i]` likewise), while ldm makes each block a module of its own. The mapping is structural:
`conv_in` is IN00; each residual block of a down level, with the transformer that follows it, is the next IN
block, and the level's downsampler one more; the middle block is M00; each residual block of an up level (with its
transformer, and the level's upsampler after the last one) is the next OUT block. SD1/SD2 give 12/1/12 blocks and
SDXL 9/1/9, with the same names, contents and shapes as the ldm/sgm layout of the same config. Nothing here imports
diffusers: only attribute names are read.
"""

from __future__ import annotations

from collections.abc import Iterator

from torch import nn

from lib_dumpunet.errors import DumpUnetError
from lib_dumpunet.layout import BlockLayers, UNetLayout

__all__ = ["diffusers_blocks", "diffusers_layout", "is_diffusers_unet"]

_REQUIRED = ("conv_in", "down_blocks", "mid_block", "up_blocks")


def is_diffusers_unet(unet: nn.Module) -> bool:
    return all(hasattr(unet, a) for a in _REQUIRED)


def _entries(level: nn.Module, attr: str) -> list[nn.Module]:
    found = getattr(level, attr, None)
    return list(found) if found is not None else []


def _block(section, index: int, layers: list[tuple[str, nn.Module]], output: nn.Module | None = None) -> BlockLayers:
    transformers = tuple(m for path, m in layers if ".attentions." in f".{path}")
    path = " + ".join(p for p, _ in layers)
    return BlockLayers(section, index, path, tuple(layers), output or layers[-1][1], transformers)


def _down(unet: nn.Module) -> Iterator[BlockLayers]:
    yield _block("input", 0, [("conv_in", unet.conv_in)])
    index = 1
    for d, level in enumerate(unet.down_blocks):
        attentions = _entries(level, "attentions")
        for j, resnet in enumerate(level.resnets):
            layers = [(f"down_blocks.{d}.resnets.{j}", resnet)]
            if j < len(attentions):
                layers.append((f"down_blocks.{d}.attentions.{j}", attentions[j]))
            yield _block("input", index, layers)
            index += 1
        for k, down in enumerate(_entries(level, "downsamplers")):
            yield _block("input", index, [(f"down_blocks.{d}.downsamplers.{k}", down)])
            index += 1


def _middle(unet: nn.Module) -> BlockLayers:
    mid = unet.mid_block
    resnets, attentions = list(mid.resnets), _entries(mid, "attentions")
    layers = [("mid_block.resnets.0", resnets[0])]
    for j, resnet in enumerate(resnets[1:]):
        if j < len(attentions):
            layers.append((f"mid_block.attentions.{j}", attentions[j]))
        layers.append((f"mid_block.resnets.{j + 1}", resnet))
    return _block("middle", 0, layers, output=mid)


def _up(unet: nn.Module) -> Iterator[BlockLayers]:
    index = 0
    for u, level in enumerate(unet.up_blocks):
        attentions, resnets = _entries(level, "attentions"), list(level.resnets)
        for j, resnet in enumerate(resnets):
            layers = [(f"up_blocks.{u}.resnets.{j}", resnet)]
            if j < len(attentions):
                layers.append((f"up_blocks.{u}.attentions.{j}", attentions[j]))
            if j == len(resnets) - 1:
                layers += [(f"up_blocks.{u}.upsamplers.{k}", m) for k, m in enumerate(_entries(level, "upsamplers"))]
            yield _block("output", index, layers)
            index += 1


def diffusers_blocks(unet: nn.Module) -> list[BlockLayers]:
    """The blocks of a diffusers U-Net in U-Net order, named as ldm names them."""
    if not is_diffusers_unet(unet):
        msg = "this is not a diffusers UNet2DConditionModel (it has no conv_in/down_blocks/mid_block/up_blocks)"
        raise DumpUnetError(msg)
    if unet.mid_block is None:
        msg = "this U-Net has no middle block; Dump U-Net works with SD1.x, SD2.x and SDXL U-Nets"
        raise DumpUnetError(msg)
    return [*_down(unet), _middle(unet), *_up(unet)]


def diffusers_layout(unet: nn.Module) -> UNetLayout:
    """The `UNetLayout` of a diffusers U-Net (its upsamplers already produce the skip tensor's size)."""
    return UNetLayout(unet, diffusers_blocks(unet), upsample_to_skip=True)
