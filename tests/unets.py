"""Real ldm U-Nets at tiny widths for tests: SD1 and SD2 flavours, and the SDXL block layout.

All three are built from Stability-AI's own `ldm` classes (PyPI: stable-diffusion-sdkit), so the block structure,
module names, forward code and attention class are the real ones; only widths are small. A freshly built ldm U-Net
outputs zeros and ignores its context (its `out` conv and every transformer's `proj_out` are zero-initialised), so
every builder re-initialises all parameters from a fixed seed.

ldm's `UNetModel` cannot take SDXL's config (per-level transformer depth, a "sequential" label embedding of the
2816-wide `y` vector), and its `SpatialTransformer` cannot hand one context to several depths. `build_sdxl` builds the
3-level layout with ldm's class and then swaps in transformers of depth 2 and 10 that reuse the context at every
depth and a two-layer label embedding, as sgm does; module names then match sgm's (IN00–IN08, M00, OUT00–OUT08,
`middle_block.1.transformer_blocks.9.attn2` …).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from ldm.modules import attention as ldm_attention
from ldm.modules.diffusionmodules import openaimodel
from torch import nn

MODEL_CHANNELS = 32  # the minimum: ldm normalises with GroupNorm(32)
SDXL_ADM_CHANNELS = 2816


@dataclass(frozen=True)
class Flavour:
    """What a test needs to drive a tiny U-Net like the real model of that family."""

    name: str
    context_dim: int  # width of the prompt embedding
    adm_channels: int | None  # width of SDXL's pooled `y` vector, None for SD1/SD2


SD1 = Flavour("sd1", context_dim=64, adm_channels=None)
SD2 = Flavour("sd2", context_dim=96, adm_channels=None)
SDXL = Flavour("sdxl", context_dim=128, adm_channels=SDXL_ADM_CHANNELS)
FLAVOURS = (SD1, SD2, SDXL)


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Re-initialise every layer from `seed` (undoing zero-init), leaving the global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in model.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
    return model.eval()


def build_sd1(seed: int = 0) -> openaimodel.UNetModel:
    """SD1.x layout (v1-inference.yaml) at 1/10 width: conv projections, fixed head count."""
    unet = openaimodel.UNetModel(
        image_size=32,
        in_channels=4,
        out_channels=4,
        model_channels=MODEL_CHANNELS,
        attention_resolutions=[4, 2, 1],
        num_res_blocks=2,
        channel_mult=[1, 2, 4, 4],
        num_heads=2,
        use_spatial_transformer=True,
        transformer_depth=1,
        context_dim=SD1.context_dim,
        use_checkpoint=False,
        legacy=False,
    )
    return randomize(unet, seed)


def build_sd2(seed: int = 0) -> openaimodel.UNetModel:
    """SD2.x layout (v2-inference.yaml): fixed head width, linear projections, a wider context."""
    unet = openaimodel.UNetModel(
        image_size=32,
        in_channels=4,
        out_channels=4,
        model_channels=MODEL_CHANNELS,
        attention_resolutions=[4, 2, 1],
        num_res_blocks=2,
        channel_mult=[1, 2, 4, 4],
        num_head_channels=16,
        use_spatial_transformer=True,
        use_linear_in_transformer=True,
        transformer_depth=1,
        context_dim=SD2.context_dim,
        use_checkpoint=False,
        legacy=False,
    )
    return randomize(unet, seed)


class DeepSpatialTransformer(ldm_attention.SpatialTransformer):
    """ldm's SpatialTransformer with sgm's handling of depth > 1: one context is reused at every depth."""

    def __init__(self, in_channels: int, n_heads: int, d_head: int, depth: int, context_dim: int) -> None:
        super().__init__(
            in_channels,
            n_heads,
            d_head,
            depth=depth,
            context_dim=[context_dim] * depth,
            use_linear=True,
            use_checkpoint=False,
        )

    def forward(self, x: torch.Tensor, context: torch.Tensor | list | None = None) -> torch.Tensor:
        if not isinstance(context, list):
            context = [context] * len(self.transformer_blocks)
        return super().forward(x, context=context)


# SDXL's transformer depth per level (sd_xl_base.yaml: transformer_depth [0, 2, 10]); the middle uses the last.
_SDXL_DEPTHS = {1: 2, 2: 10}


def build_sdxl(seed: int = 0) -> openaimodel.UNetModel:
    """SDXL base layout at tiny width: 3 levels, attention at 2× and 4× with depth 2 and 10, a 2816-wide `y`."""
    unet = openaimodel.UNetModel(
        image_size=32,
        in_channels=4,
        out_channels=4,
        model_channels=MODEL_CHANNELS,
        attention_resolutions=[4, 2],
        num_res_blocks=2,
        channel_mult=[1, 2, 4],
        num_head_channels=16,
        use_spatial_transformer=True,
        use_linear_in_transformer=True,
        transformer_depth=1,
        context_dim=SDXL.context_dim,
        use_checkpoint=False,
        legacy=False,
    )
    for blocks in (unet.input_blocks, [unet.middle_block], unet.output_blocks):
        for block in blocks:
            for i, layer in enumerate(block):
                if isinstance(layer, ldm_attention.SpatialTransformer):
                    level = {MODEL_CHANNELS * 2: 1, MODEL_CHANNELS * 4: 2}[layer.in_channels]
                    first = layer.transformer_blocks[0]
                    block[i] = DeepSpatialTransformer(
                        layer.in_channels,
                        first.attn1.heads,
                        first.attn1.to_q.out_features // first.attn1.heads,
                        depth=_SDXL_DEPTHS[level],
                        context_dim=SDXL.context_dim,
                    )
    time_embed_dim = unet.time_embed[0].out_features
    unet.num_classes = "sequential"
    unet.label_emb = nn.Sequential(
        nn.Sequential(
            nn.Linear(SDXL_ADM_CHANNELS, time_embed_dim),
            nn.SiLU(),
            nn.Linear(time_embed_dim, time_embed_dim),
        )
    )
    return randomize(unet, seed)


BUILDERS = {"sd1": build_sd1, "sd2": build_sd2, "sdxl": build_sdxl}


def build(flavour: Flavour, seed: int = 0) -> openaimodel.UNetModel:
    return BUILDERS[flavour.name](seed)


class TorchHijackForUnet:
    """Stands in for `torch` inside ldm's openaimodel, as the webui's sd_hijack_unet does (same name): `cat` of an
    upsampled tensor and its skip tensor first resizes the former to the latter (nearest), so image sizes that are
    not multiples of 64 work. The fake webui's `modules.sd_hijack_unet` installs this same class."""

    def __getattr__(self, item: str):
        return getattr(torch, item)

    @staticmethod
    def cat(tensors, *args, **kwargs):
        if len(tensors) == 2:
            a, b = tensors
            if a.shape[-2:] != b.shape[-2:]:
                a = torch.nn.functional.interpolate(a, b.shape[-2:], mode="nearest")
            tensors = (a, b)
        return torch.cat(tensors, *args, **kwargs)


@contextlib.contextmanager
def webui_skip_resize() -> Iterator[None]:
    """Patch ldm's U-Net module the way the webui does, for the duration of the block."""
    saved = openaimodel.th
    openaimodel.th = TorchHijackForUnet()
    try:
        yield
    finally:
        openaimodel.th = saved


def inputs(flavour: Flavour, width: int, height: int, batch: int = 1, tokens: int = 77, seed: int = 1):
    """Random (x, timesteps, kwargs) for one U-Net call at an image size, shaped as the webui passes them."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 4, height // 8, width // 8, generator=g)
    t = torch.full((batch,), 500.0)
    kwargs = {"context": torch.randn(batch, tokens, flavour.context_dim, generator=g)}
    if flavour.adm_channels:
        kwargs["y"] = torch.randn(batch, flavour.adm_channels, generator=g)
    return x, t, kwargs
