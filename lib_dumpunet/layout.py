"""Where things are in a loaded U-Net: its blocks, their names and shapes, and their attention modules.

The layout is found structurally on whatever U-Net object is loaded (ldm's for SD1/SD2, sgm's for SDXL, or any
module with the same shape): `input_blocks`, `middle_block` and `output_blocks` give the blocks, named IN00…,
M00, OUT00… in U-Net order; an attention module is any submodule with `to_q`, `to_k`, `to_v` and `heads`,
reached under a transformer's `transformer_blocks` as `attn1` (self-attention) or `attn2` (cross-attention).
Nothing dispatches on ldm/sgm classes. A U-Net whose blocks are not modules of their own (diffusers' groups its
layers by resolution level) is described by a list of `BlockLayers` instead — each block's layers in call order,
the module whose output is the block's output, and the modules that receive the prompt — and is then handled alike.

Block shapes at an image size come from the real modules: each block's layers are run on the "meta" device
(shapes only, no memory, no compute), with the skip concatenation of the output path done the webui's way (the
upsampled tensor is resized to its skip tensor, which is what makes sizes that are not multiples of 64 work).
Transformers are residual, so they keep their input's shape and are not run.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from lib_dumpunet.errors import DumpUnetError

__all__ = [
    "AttentionInfo",
    "BlockInfo",
    "BlockLayers",
    "BlockShapes",
    "Shape",
    "UNetLayout",
    "block_name",
    "latent_size",
]

Section = Literal["input", "middle", "output"]
_PREFIX: dict[Section, str] = {"input": "IN", "middle": "M", "output": "OUT"}


def block_name(section: Section, index: int) -> str:
    """('input', 4) -> 'IN04'; ('middle', 0) -> 'M00'."""
    return f"{_PREFIX[section]}{index:02d}"


def latent_size(width: int, height: int) -> tuple[int, int]:
    """(latent height, latent width) for an image size; the webui only allows multiples of 8."""
    if width <= 0 or height <= 0 or width % 8 or height % 8:
        msg = f"image size {width}×{height} is not a positive multiple of 8"
        raise DumpUnetError(msg)
    return height // 8, width // 8


@dataclass(frozen=True)
class Shape:
    """A feature map's shape for one image: channels × height × width."""

    channels: int
    height: int
    width: int

    def __str__(self) -> str:
        return f"({self.channels}, {self.height}, {self.width})"


@dataclass(frozen=True)
class BlockShapes:
    input: Shape
    output: Shape


@dataclass(frozen=True)
class AttentionInfo:
    """One attention module inside a block."""

    block: str
    path: str  # dotted path from the U-Net, e.g. "input_blocks.4.1.transformer_blocks.0.attn2"
    kind: Literal["attn1", "attn2"]  # attn1 = self-attention, attn2 = cross-attention (to the prompt)
    transformer: int  # which transformer of the block (always 0 in SD1/SD2/SDXL)
    depth: int  # index in that transformer's `transformer_blocks`
    depth_count: int  # how many transformer blocks it has (1 in SD1/SD2; 2 or 10 in SDXL)
    heads: int
    dim_head: int
    context_dim: int  # width of what keys are computed from: the prompt's for attn2, the features' for attn1

    @property
    def label(self) -> str:
        """A short name users can tell apart: 'IN04.attn2', 'M00.attn2.7' (depth 7 of a deep transformer)."""
        parts = [self.block]
        if self.transformer:
            parts.append(f"t{self.transformer}")
        parts.append(self.kind)
        if self.depth_count > 1:
            parts.append(str(self.depth))
        return ".".join(parts)


@dataclass(frozen=True)
class BlockInfo:
    name: str
    section: Section
    index: int
    path: str  # "input_blocks.4", "middle_block", "output_blocks.11"
    contents: tuple[str, ...]  # ("Res", "Trans×2", "Up") …
    attentions: tuple[AttentionInfo, ...]


@dataclass(frozen=True)
class BlockLayers:
    """One block of a U-Net whose blocks are not modules of their own: its layers in call order (dotted path from
    the U-Net, module), the module whose output is the block's output (a tuple output counts by its first item),
    and the modules that are given the prompt (`context`/`encoder_hidden_states`), which per-block prompts swap."""

    section: Section
    index: int
    path: str
    layers: tuple[tuple[str, nn.Module], ...]
    output: nn.Module
    context: tuple[nn.Module, ...] = ()


class UNetLayout:
    """The blocks and attention modules of one U-Net, with shapes computed on demand per image size.

    `blocks` describes a U-Net without input_blocks/middle_block/output_blocks; `upsample_to_skip` says that its
    upsamplers already produce the size of the skip tensor they meet (diffusers), rather than twice their input.
    """

    def __init__(
        self, unet: nn.Module, blocks: list[BlockLayers] | None = None, *, upsample_to_skip: bool = False
    ) -> None:
        if blocks is None:
            missing = [a for a in ("input_blocks", "middle_block", "output_blocks") if not hasattr(unet, a)]
            if missing:
                msg = (
                    f"this model's U-Net has no {', '.join(missing)}; Dump U-Net works with SD1.x, SD2.x and SDXL "
                    "U-Nets (not SD3 or Flux)"
                )
                raise DumpUnetError(msg)
            blocks = list(_ldm_blocks(unet))
        self.unet = unet
        self.upsample_to_skip = upsample_to_skip
        self._modules: dict[str, nn.Module] = {}
        self._layers: dict[str, tuple[tuple[str, nn.Module], ...]] = {}
        self._context: dict[str, tuple[nn.Module, ...]] = {}
        infos = []
        for b in blocks:
            name = block_name(b.section, b.index)
            self._modules[name], self._layers[name], self._context[name] = b.output, b.layers, b.context
            infos.append(
                BlockInfo(name, b.section, b.index, b.path, _contents(b.layers), tuple(_attentions(name, b.layers)))
            )
        self.blocks: tuple[BlockInfo, ...] = tuple(infos)
        self.names: tuple[str, ...] = tuple(b.name for b in infos)
        self._by_name = {b.name: b for b in infos}
        self._shapes: dict[tuple[int, int], dict[str, BlockShapes]] = {}

    def __repr__(self) -> str:
        n_attn = sum(len(b.attentions) for b in self.blocks)
        return f"UNetLayout({self.names[0]}…{self.names[-1]}, {len(self.blocks)} blocks, {n_attn} attention modules)"

    def block(self, name: str) -> BlockInfo:
        return self._by_name[name]

    def module(self, name: str) -> nn.Module:
        """The block module named `name` (or, where blocks are not modules, the layer whose output is the block's)."""
        return self._modules[name]

    def context_modules(self, name: str) -> tuple[nn.Module, ...]:
        """The modules of block `name` that receive the prompt context (the block itself for ldm and sgm)."""
        return self._context[name]

    def attention_module(self, info: AttentionInfo) -> nn.Module:
        return self.unet.get_submodule(info.path)

    def attentions(self, names: Iterable[str], kind: str | None = None) -> list[AttentionInfo]:
        """Attention modules of the named blocks (optionally only 'attn1' or 'attn2'), in U-Net order."""
        chosen = set(names)
        return [a for b in self.blocks if b.name in chosen for a in b.attentions if kind in (None, a.kind)]

    @property
    def latent_channels(self) -> int:
        return _first_conv(self._layers[self.names[0]][0][1]).in_channels

    @property
    def context_dim(self) -> int | None:
        """Width of the prompt embedding the cross-attention expects (768 SD1, 1024 SD2, 2048 SDXL)."""
        cross = [a for b in self.blocks for a in b.attentions if a.kind == "attn2"]
        return cross[0].context_dim if cross else None

    def shapes(self, width: int, height: int) -> dict[str, BlockShapes]:
        """Input and output shape of every block for one image of `width`×`height` pixels."""
        key = latent_size(width, height)
        if key not in self._shapes:
            self._shapes[key] = self._compute_shapes(*key)
        return self._shapes[key]

    def transformer_input(self, info: AttentionInfo, width: int, height: int) -> Shape:
        """Shape entering the transformer that holds `info`; its attention sees height × width positions."""
        layers = [m for _, m in self._layers[info.block]]
        target = [c for c in layers if _holds_attention(c)][info.transformer]
        x = self.shapes(width, height)[info.block].input
        for child in layers:
            if child is target:
                break
            x = _propagate_layer(child, x)
        return x

    def _compute_shapes(self, latent_h: int, latent_w: int) -> dict[str, BlockShapes]:
        shapes: dict[str, BlockShapes] = {}
        x = Shape(self.latent_channels, latent_h, latent_w)
        skips: list[Shape] = []
        for block in self.blocks:
            if block.section == "output":
                skip = skips.pop()
                # the webui resizes the upsampled tensor to its skip tensor before concatenating
                x = Shape(x.channels + skip.channels, skip.height, skip.width)
            out = _propagate(self._layers[block.name], x)
            if self.upsample_to_skip and block.contents[-1] == "Up" and skips:
                out = Shape(out.channels, skips[-1].height, skips[-1].width)
            shapes[block.name] = BlockShapes(x, out)
            if block.section == "input":
                skips.append(out)
            x = out
        return shapes


def _ldm_blocks(unet: nn.Module) -> Iterator[BlockLayers]:
    """ldm's and sgm's blocks: modules called as `block(h, emb, context)`, their children the layers."""
    places: list[tuple[Section, int, str, nn.Module]] = [
        *(("input", i, f"input_blocks.{i}", m) for i, m in enumerate(unet.input_blocks)),
        ("middle", 0, "middle_block", unet.middle_block),
        *(("output", i, f"output_blocks.{i}", m) for i, m in enumerate(unet.output_blocks)),
    ]
    for section, index, path, module in places:
        layers = tuple((f"{path}.{name}", child) for name, child in module.named_children())
        yield BlockLayers(section, index, path, layers, module, (module,))


def _is_attention(m: nn.Module) -> bool:
    return all(hasattr(m, a) for a in ("to_q", "to_k", "to_v", "heads"))


def _holds_attention(m: nn.Module) -> bool:
    return any(_is_attention(sub) for sub in m.modules())


def _attentions(block: str, layers: tuple[tuple[str, nn.Module], ...]) -> Iterator[AttentionInfo]:
    transformers = [(p, c) for p, c in layers if _holds_attention(c)]
    for t_index, (layer_path, transformer) in enumerate(transformers):
        depth_blocks = list(getattr(transformer, "transformer_blocks", [transformer]))
        for depth, tblock in enumerate(depth_blocks):
            for kind in ("attn1", "attn2"):
                attn = getattr(tblock, kind, None)
                if attn is None or not _is_attention(attn):
                    continue
                heads = int(attn.heads)
                path = layer_path
                if hasattr(transformer, "transformer_blocks"):
                    path += f".transformer_blocks.{depth}"
                yield AttentionInfo(
                    block=block,
                    path=f"{path}.{kind}",
                    kind=kind,
                    transformer=t_index,
                    depth=depth,
                    depth_count=len(depth_blocks),
                    heads=heads,
                    dim_head=attn.to_q.out_features // heads,
                    context_dim=attn.to_k.in_features,
                )


def _time_input(module: nn.Module) -> nn.Module | None:
    """The layer through which a residual block takes the timestep embedding (ldm: emb_layers, diffusers:
    time_emb_proj), or None for layers that take none."""
    found = getattr(module, "emb_layers", None)
    return found if found is not None else getattr(module, "time_emb_proj", None)


def _contents(layers: tuple[tuple[str, nn.Module], ...]) -> tuple[str, ...]:
    labels = []
    for _, child in layers:
        cls = type(child).__name__
        if _holds_attention(child):
            labels.append(f"Trans×{len(getattr(child, 'transformer_blocks', [child]))}")
        elif _time_input(child) is not None:
            labels.append("Res")
        elif "Downsample" in cls:
            labels.append("Down")
        elif "Upsample" in cls:
            labels.append("Up")
        elif isinstance(child, nn.Conv2d):
            labels.append("Conv")
        else:
            labels.append(cls)
    return tuple(labels)


def _first_conv(module: nn.Module) -> nn.Conv2d:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            return m
    msg = "the U-Net's first block has no convolution"
    raise DumpUnetError(msg)


def _propagate(layers: tuple[tuple[str, nn.Module], ...], x: Shape) -> Shape:
    for _, child in layers:
        x = _propagate_layer(child, x)
    return x


def _propagate_layer(layer: nn.Module, x: Shape) -> Shape:
    """The output shape of one layer of a block, from running it on meta tensors."""
    if _holds_attention(layer):
        return x  # transformers are residual: output = input + attention(input)
    args: list[torch.Tensor] = [torch.empty(1, x.channels, x.height, x.width, device="meta")]
    time_input = _time_input(layer)
    if time_input is not None:  # a residual block also takes the timestep embedding
        args.append(torch.empty(1, _linear_in(time_input), device="meta"))
    state = {
        name: torch.empty_like(t, device="meta") for name, t in [*layer.named_parameters(), *layer.named_buffers()]
    }
    with torch.no_grad():
        out = torch.func.functional_call(layer, state, tuple(args))
    _, c, h, w = out.shape
    return Shape(int(c), int(h), int(w))


def _linear_in(module: nn.Module) -> int:
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    return linears[0].in_features
