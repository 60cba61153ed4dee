"""The webui seen from a job: its encoder, its AND split, its tokens, and what a denoiser call tells us.

`WebuiHost` implements `lib_dumpunet.job.Host` for one processing object `p`: per-block prompts are encoded with
the webui's own `prompt_parser.get_learned_conditioning` (emphasis, embeddings, BREAK and `[a:b:when]` behave as in
any prompt; SDXL's pooled vector is not used per block), with the same step counts the webui uses for the pass.
`denoiser_call` reads an `on_cfg_denoiser` callback: the sampler step (the denoiser counts model calls; a
second-order sampler makes two per step), the pass (first or hires), and how many cond rows each image has (AND).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from modules import devices, prompt_parser, sd_models, sd_samplers, shared

from lib_dumpunet.block_prompts import Schedule, ScheduledCond
from lib_dumpunet.views import LatentRGB
from lib_dumpunet.webui.tokens import token_labels

__all__ = ["DenoiserCall", "WebuiHost", "denoiser_call", "first_cond_rows", "loaded_model", "predicted_x0", "unet_of"]

log = logging.getLogger(__name__)


def loaded_model() -> Any:
    """The model loaded now, or None. Unlike `shared.sd_model`, never starts loading the default checkpoint: what
    only shows information (the info panel, as the user types) must not block on, or retry, a load."""
    return getattr(getattr(sd_models, "model_data", None), "sd_model", None)


def unet_of(sd_model: Any) -> torch.nn.Module | None:
    """The diffusion U-Net of a loaded webui model, or None (no model, or not a U-Net: SD3 …)."""
    unet = getattr(getattr(sd_model, "model", None), "diffusion_model", None)
    return unet if hasattr(unet, "input_blocks") else None


def _crossattn(cond: Any) -> torch.Tensor:
    return cond["crossattn"] if isinstance(cond, dict) else cond


def _rows(cond: Any) -> int:
    return int(_crossattn(cond).shape[0])


def _total_steps(sampler_name: str | None, steps: int) -> int:
    config = sd_samplers.find_sampler_config(sampler_name) if sampler_name else None
    return config.total_steps(steps) if config else steps


class WebuiHost:
    """`Host` for one job on `p` (a StableDiffusionProcessing)."""

    def __init__(self, p: Any) -> None:
        self.p = p
        self.model = shared.sd_model

    # --- Host protocol -------------------------------------------------------------------------------------------

    def encode(self, text: str, pass_index: int) -> Schedule:
        p = self.p
        first_pass = _total_steps(p.sampler_name, p.steps)
        if pass_index == 0:
            texts = prompt_parser.SdConditioning([text], width=p.width, height=p.height)
            steps, hires_steps = first_pass, None
        else:
            texts = prompt_parser.SdConditioning(
                [text], width=getattr(p, "hr_upscale_to_x", p.width), height=getattr(p, "hr_upscale_to_y", p.height)
            )
            hr_sampler = getattr(p, "hr_sampler_name", None) or p.sampler_name
            steps = first_pass
            hires_steps = _total_steps(hr_sampler, getattr(p, "hr_second_pass_steps", 0) or p.steps)
        with devices.autocast():  # as the webui encodes its own conds, so equal texts give equal contexts
            (schedule,) = prompt_parser.get_learned_conditioning(
                self.model, texts, steps, hires_steps, getattr(shared.opts, "use_old_scheduling", False)
            )
        return tuple(ScheduledCond(s.end_at_step, _crossattn(s.cond)) for s in schedule)

    def split_and(self, prompt: str) -> list[str]:
        indexes, flat, _ = prompt_parser.get_multicond_prompt_list([prompt])
        return [flat[i] for i, _weight in indexes[0]]

    def token_labels(self, text: str) -> list[str]:
        return token_labels(text, self.model)  # the token inspector's table: one code for both

    @property
    def empty_chunk(self) -> torch.Tensor | None:
        empty = getattr(self.model, "cond_stage_model_empty_prompt", None)
        return None if empty is None else _crossattn(empty)[0]

    # --- latent views --------------------------------------------------------------------------------------------

    @property
    def latent_rgb(self) -> LatentRGB:
        """The webui's own "Approx cheap" preview map for the loaded model's family."""
        return LatentRGB.for_model(sdxl=bool(getattr(self.model, "is_sdxl", False)))

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents through the loaded model's VAE, on its [-1, 1] scale (slow on CPU)."""
        with torch.no_grad(), devices.autocast():
            pictures = self.model.decode_first_stage(latents.to(devices.device, devices.dtype_vae))
        return pictures.float().cpu()


@dataclass(frozen=True)
class DenoiserCall:
    pass_index: int
    step: int
    schedule_step: int
    cond_counts: tuple[int, ...] | None  # None: rows cannot be attributed (left unrecorded)


# Samplers whose first step evaluates the model more often than the others (PLMS warms up with one extra call).
_WARM_UP_CALLS = {"PLMS": 1}


def denoiser_call(params: Any, p: Any) -> DenoiserCall:
    """Read an `on_cfg_denoiser` callback's params (webui ≥ 1.8, which passes the denoiser).

    The denoiser counts model calls; `total_steps` tells how many a second-order sampler makes per step (two, one
    for the last step). DDIM and PLMS in webui 1.10 take one model step per timestep of range(0, 1000, 1000 // steps)
    but the first: steps − 1 when steps divides 1000 (the last step never comes), else steps or, for some large
    counts, more (extra calls count as the last step); PLMS evaluates twice in its first step."""
    denoiser = params.denoiser
    calls = int(denoiser.step)
    steps = int(getattr(denoiser, "steps", None) or p.steps)
    total = int(getattr(denoiser, "total_steps", None) or steps)
    multiplier = max(1, round(total / steps))
    config = getattr(getattr(denoiser, "sampler", None), "config", None)
    stepping = max(0, calls - _WARM_UP_CALLS.get(getattr(config, "name", None), 0))
    step = min(stepping // multiplier, steps - 1) + 1
    return DenoiserCall(1 if getattr(p, "is_hr_pass", False) else 0, step, calls, _cond_counts(params, denoiser))


def first_cond_rows(cond_counts: tuple[int, ...]) -> list[int]:
    """The row of each image's first cond (AND sub-prompt 1) in a denoiser call."""
    return [sum(cond_counts[:i]) for i in range(len(cond_counts))]


def predicted_x0(denoiser: Any, x_in: torch.Tensor, x_out: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The predicted clean latent of model outputs: k-diffusion denoisers output it already; the timestep samplers'
    denoisers (DDIM, PLMS, UniPC) output noise, which their own `get_pred_x0` turns into it."""
    convert = getattr(denoiser, "get_pred_x0", None)
    return x_out if convert is None else convert(x_in, x_out, sigma)


def _cond_counts(params: Any, denoiser: Any) -> tuple[int, ...] | None:
    """How many cond rows each image has: its AND sub-prompts, from the conditioning the sampler was given."""
    cond_rows, images = _rows(params.text_cond), _rows(params.text_uncond)
    extra_args = getattr(getattr(denoiser, "sampler", None), "sampler_extra_args", None) or {}
    batch = getattr(extra_args.get("cond"), "batch", None)
    if batch is not None:
        counts = tuple(len(b) for b in batch)
        if len(counts) == images and sum(counts) == cond_rows:
            return counts
    if cond_rows % images == 0:
        return (cond_rows // images,) * images
    log.warning("cannot tell which of %d cond rows belong to which of %d images; not recording", cond_rows, images)
    return None
