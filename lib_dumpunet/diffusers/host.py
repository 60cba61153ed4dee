"""The `Host` a `Job` needs, on a diffusers model: its text encoder, its AND split, its tokens, its empty chunk.

Per-block prompts are encoded with the same encoder as the job's own prompts (one schedule segment: the standalone
front-end has no prompt editing), so a per-block text equal to the prompt gives exactly the prompt's context.
Latent views are drawn through the model's own VAE: either a linear latent → RGB map fitted to it by least squares
(a few tiny decodes, made the first time a view is drawn and kept for the VAE's lifetime) or the VAE itself.
"""

from __future__ import annotations

import weakref

import torch

from lib_dumpunet.block_prompts import Schedule, ScheduledCond
from lib_dumpunet.diffusers.text import TextEncoder, split_and
from lib_dumpunet.views import LatentRGB, fit_latent_rgb

__all__ = ["DiffusersHost"]

_FOREVER = 10**9
_FITTED: weakref.WeakKeyDictionary[torch.nn.Module, LatentRGB] = weakref.WeakKeyDictionary()


class DiffusersHost:
    """`lib_dumpunet.job.Host` for a diffusers model's text encoder(s)."""

    def __init__(self, text: TextEncoder, vae: torch.nn.Module | None = None) -> None:
        self.text = text
        self.vae = vae

    def encode(self, text: str, pass_index: int) -> Schedule:
        return (ScheduledCond(_FOREVER, self.text.encode(text).context),)

    def split_and(self, prompt: str) -> list[str]:
        return [text for text, _weight in split_and(prompt)]

    def token_labels(self, text: str) -> list[str]:
        return self.text.labels(text)

    @property
    def empty_chunk(self) -> torch.Tensor:
        return self.text.encode("").context

    # --- latent views --------------------------------------------------------------------------------------------

    @property
    def latent_rgb(self) -> LatentRGB | None:
        """A linear latent → RGB map fitted to this model's VAE (None without a VAE: the job then uses the webui's
        coefficients for the model's family)."""
        if self.vae is None:
            return None
        if self.vae not in _FITTED:
            channels = int(self.vae.config.latent_channels)
            _FITTED[self.vae] = fit_latent_rgb(self.decode_latents, self.encode_pictures, channels=channels)
        return _FITTED[self.vae]

    def encode_pictures(self, pictures: torch.Tensor) -> torch.Tensor:
        """Pictures on the [-1, 1] scale → latents (the mean of the VAE's posterior, scaled as the U-Net sees them)."""
        vae = self.vae
        if vae is None:
            msg = "this model has no VAE to encode pictures with"
            raise ValueError(msg)
        device = next(vae.parameters()).device
        with torch.no_grad():
            posterior = vae.encode(pictures.to(device, vae.dtype)).latent_dist
            return (posterior.mean * vae.config.scaling_factor).float().cpu()

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents through the VAE, on its [-1, 1] scale."""
        vae = self.vae
        if vae is None:
            msg = "this model has no VAE to decode latents with"
            raise ValueError(msg)
        device = next(vae.parameters()).device
        with torch.no_grad():
            scaled = latents.to(device, vae.dtype) / vae.config.scaling_factor
            return vae.decode(scaled, return_dict=False)[0].float().cpu()
