"""Tiny real-architecture models for the Embedding Estimate tests, built offline from fixed seeds.

Text encoders are `transformers.CLIPTextModel`s at a width equal to the tiny U-Nets' context width, read by the real
CLIP BPE tokenizer (`fakewebui.tiny_model.clip_tokenizer`). Fresh LayerNorms have weight 1 and bias 0, which makes
every output row zero-mean and the webui's mean-restoring emphasis ill-defined, so their affine parameters are drawn
around those values. The U-Nets are the real ldm ones from `unets`, wrapped as k-diffusion denoisers on SD's own noise
schedule. Everything is frozen (requires_grad off): only the embedding vectors learn.
"""

from __future__ import annotations

import functools

import torch
import unets
from fakewebui.tiny_model import clip_text_model, clip_tokenizer
from transformers import CLIPTextModel

from lib_dumpunet.estimate.clip_text import ClipPromptEncoder, ClipTower
from lib_dumpunet.estimate.denoise import ScheduleDenoiser

CLIP_LAYERS = 2


def text_model(width: int, seed: int) -> CLIPTextModel:
    """The fake webui's tiny CLIP text transformer, two layers deep, frozen."""
    return clip_text_model(width, seed, layers=CLIP_LAYERS).requires_grad_(False)


@functools.cache
def sd1_encoder() -> ClipPromptEncoder:
    """SD1: CLIP-L style, last hidden state, padded with EOS."""
    return ClipPromptEncoder([ClipTower(text_model(unets.SD1.context_dim, 1), clip_tokenizer())])


@functools.cache
def sd2_encoder() -> ClipPromptEncoder:
    """SD2: OpenCLIP style, penultimate layer through the final norm, padded with 0 after EOS."""
    tower = ClipTower(
        text_model(unets.SD2.context_dim, 2), clip_tokenizer(), hidden_layer=-2, final_norm=True, pad_id=0
    )
    return ClipPromptEncoder([tower])


@functools.cache
def sdxl_encoder() -> ClipPromptEncoder:
    """SDXL: CLIP-L (penultimate, no norm) + OpenCLIP-G (penultimate, pooled vector), joined along channels."""
    half = unets.SDXL.context_dim // 2
    clip_l = ClipTower(text_model(half, 3), clip_tokenizer(), part="clip_l", hidden_layer=-2)
    clip_g = ClipTower(text_model(half, 4), clip_tokenizer(), part="clip_g", hidden_layer=-2, pad_id=0)

    def vector(pooled: torch.Tensor) -> torch.Tensor:
        return torch.cat([pooled, pooled.new_zeros(pooled.shape[0], unets.SDXL_ADM_CHANNELS - half)], dim=1)

    return ClipPromptEncoder([clip_l, clip_g], vector_fn=vector)


def alphas_cumprod() -> torch.Tensor:
    """SD's schedule: scaled-linear betas 0.00085 … 0.012 over 1000 steps."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0).float()


@functools.cache
def sd1_denoiser() -> ScheduleDenoiser:
    unet = unets.build_sd1().requires_grad_(False)
    return ScheduleDenoiser(lambda x, t, c: unet(x, t, context=c), alphas_cumprod(), "eps")


@functools.cache
def sd2_denoiser() -> ScheduleDenoiser:
    """SD2-768 style: the model predicts v."""
    unet = unets.build_sd2().requires_grad_(False)
    return ScheduleDenoiser(lambda x, t, c: unet(x, t, context=c), alphas_cumprod(), "v")
