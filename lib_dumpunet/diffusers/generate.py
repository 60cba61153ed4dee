"""Sampling on a diffusers model with classifier-free guidance, batching rows as the webui's CFG denoiser does.

Each sampler step makes one U-Net call holding, in order, every image's cond rows (one per `AND` sub-prompt) and
then one uncond row per image — the order `lib_dumpunet.sampling.cfg_rows` describes — with contexts of different
lengths padded by empty-prompt chunks. Guidance follows the webui's composable rule: uncond + scale × Σ weightᵢ ×
(condᵢ − uncond). Before each call the job (if any) is told the step, so its hooks know every row; after it, when
the job shows latent views, it gets every row's predicted clean latent and the guided one (the U-Net's noise or
v output turned into x0 with the scheduler's alphas_cumprod). Nothing here depends on whether a job is attached:
the same latents, the same calls, the same image.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from lib_dumpunet.block_prompts import pad_tokens
from lib_dumpunet.diffusers.model import Model, make_scheduler
from lib_dumpunet.diffusers.text import Encoded, split_and
from lib_dumpunet.errors import DumpUnetError
from lib_dumpunet.job import Job

__all__ = ["Generation", "Progress", "decode", "denoise", "latent_shape", "predicted_x0", "sample"]

log = logging.getLogger(__name__)

Progress = Callable[[int], None]  # called with the number of model evaluations just made (1)


@dataclass(frozen=True)
class Generation:
    """What to generate, in the webui's terms."""

    prompt: str
    negative: str = ""
    seed: int = 1
    steps: int = 20
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    batch_size: int = 1
    batch_count: int = 1
    sampler: str | None = None  # None: the model folder's own scheduler

    def check(self) -> None:
        """Refuse impossible values before anything is loaded or generated."""
        problems = []
        if self.steps < 1:
            problems.append("--steps must be at least 1")
        if self.batch_size < 1 or self.batch_count < 1:
            problems.append("--batch-size and --batch-count must be at least 1")
        if self.width < 8 or self.height < 8 or self.width % 8 or self.height % 8:
            problems.append(f"--width/--height {self.width}×{self.height} must be positive multiples of 8")
        if not np.isfinite(self.cfg_scale):
            problems.append("--cfg-scale must be a finite number")
        if problems:
            raise DumpUnetError("; ".join(problems))

    def seeds(self, batch: int) -> list[int]:
        """The seeds of one batch: consecutive from `seed`, as the webui numbers them."""
        first = self.seed + batch * self.batch_size
        return list(range(first, first + self.batch_size))


def latent_shape(model: Model, width: int, height: int) -> tuple[int, int, int]:
    factor = 2 ** (len(model.vae.config.block_out_channels) - 1)
    return model.unet.config.in_channels, height // factor, width // factor


def _initial_noise(model: Model, gen: Generation, seeds: Sequence[int]) -> torch.Tensor:
    shape = latent_shape(model, gen.width, gen.height)
    noise = [torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds]
    return torch.stack(noise).to(model.device, model.dtype)


def _added_cond(model: Model, gen: Generation, rows: list[Encoded]) -> dict | None:
    """SDXL's extra conditioning: the pooled text embedding and the size/crop ids, per row."""
    if getattr(model.unet.config, "addition_embed_type", None) != "text_time":
        return None
    pooled = torch.stack([r.pooled for r in rows]).to(model.device, model.dtype)
    ids = torch.tensor([[gen.height, gen.width, 0, 0, gen.height, gen.width]] * len(rows), dtype=model.dtype)
    return {"text_embeds": pooled, "time_ids": ids.to(model.device)}


def sample(
    model: Model,
    gen: Generation,
    prompts: Sequence[str],
    negatives: Sequence[str],
    seeds: Sequence[int],
    *,
    job: Job | None = None,
    progress: Progress | None = None,
) -> list[Image.Image]:
    """Generate one batch of images. `prompts` are what the model encodes (per-block constructs already erased)."""
    return decode(model, denoise(model, gen, prompts, negatives, seeds, job=job, progress=progress))


@torch.no_grad()
def denoise(
    model: Model,
    gen: Generation,
    prompts: Sequence[str],
    negatives: Sequence[str],
    seeds: Sequence[int],
    *,
    job: Job | None = None,
    progress: Progress | None = None,
) -> torch.Tensor:
    """The final latents of one batch (what `sample` decodes)."""
    text = model.text
    subs = [split_and(p) for p in prompts]
    counts = [len(s) for s in subs]
    rows = [text.encode(t) for s in subs for t, _ in s] + [text.encode(n) for n in negatives]
    tokens = max(r.context.shape[0] for r in rows)
    empty = text.encode("").context
    context = torch.stack([pad_tokens(r.context, tokens, empty) for r in rows]).to(model.device, model.dtype)
    added = _added_cond(model, gen, rows)
    weights = torch.tensor([w for s in subs for _, w in s], device=model.device, dtype=model.dtype)
    owner = torch.tensor([i for i, n in enumerate(counts) for _ in range(n)], device=model.device)

    scheduler = make_scheduler(model, gen.sampler)
    scheduler.set_timesteps(gen.steps, device=model.device)
    order = max(1, int(getattr(scheduler, "order", 1)))  # evaluations per step: 2 for Heun (n·2−1 in all)
    warm_up = max(0, len(scheduler.timesteps) - gen.steps * order)  # PNDM's extra first-step evaluation
    latents = _initial_noise(model, gen, seeds) * scheduler.init_noise_sigma
    extra = {}
    if "generator" in inspect.signature(scheduler.step).parameters:  # ancestral samplers: seeded noise per step
        extra["generator"] = torch.Generator(device=model.device).manual_seed(int(seeds[0]))
    n_cond = sum(counts)
    for i, t in enumerate(scheduler.timesteps):
        if job is not None:
            step = min(max(0, i - warm_up) // order, gen.steps - 1) + 1
            job.denoiser_call(pass_index=0, step=step, schedule_step=i, cond_counts=counts)
        x = torch.cat([latents[owner], latents])
        x = scheduler.scale_model_input(x, t)
        out = model.unet(x, t, encoder_hidden_states=context, added_cond_kwargs=added, return_dict=False)[0]
        cond, uncond = out[:n_cond], out[n_cond:]
        delta = torch.zeros_like(uncond).index_add_(0, owner, (cond - uncond[owner]) * weights[:, None, None, None])
        guided = uncond + gen.cfg_scale * delta
        if job is not None:
            _hand_views(job, scheduler, x, out, guided, t, n_cond)
        latents = scheduler.step(guided, t, latents, **extra, return_dict=False)[0]
        if progress is not None:
            progress(1)
    return latents


def _hand_views(job: Job, scheduler, x, out, guided, t, n_cond: int) -> None:
    """Give the job the predicted clean latents its views ask for at this step (nothing is computed otherwise)."""
    if job.wants_view("cfg"):
        job.denoised(predicted_x0(scheduler, x, out, t))
    if job.wants_view("x0"):
        job.guided(predicted_x0(scheduler, x[n_cond:], guided, t))


def _alpha_bar(scheduler, t: torch.Tensor) -> float:
    """ᾱ of the current step: from the sigma of sigma-based schedulers (ᾱ = 1/(1+σ²)), else from alphas_cumprod at
    the timestep (linearly between neighbours for fractional timesteps)."""
    sigmas, index = getattr(scheduler, "sigmas", None), getattr(scheduler, "step_index", None)
    if sigmas is not None and index is not None:
        sigma = float(sigmas[index])
        return 1.0 / (1.0 + sigma * sigma)
    if sigmas is not None and index is None and hasattr(scheduler, "index_for_timestep"):
        sigma = float(sigmas[scheduler.index_for_timestep(t)])
        return 1.0 / (1.0 + sigma * sigma)
    table = scheduler.alphas_cumprod
    position = min(max(float(t), 0.0), len(table) - 1.0)
    low = int(position)
    high = min(low + 1, len(table) - 1)
    share = position - low
    return float(table[low]) * (1 - share) + float(table[high]) * share


def predicted_x0(scheduler, sample: torch.Tensor, out: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The clean latent a U-Net output predicts for its (scaled) input `sample` at timestep `t`, by the scheduler's
    prediction type: x0 = (x − √(1−ᾱ)·ε)/√ᾱ for noise, √ᾱ·x − √(1−ᾱ)·v for v, the output itself for "sample"."""
    kind = getattr(scheduler.config, "prediction_type", "epsilon")
    if kind == "sample":
        return out
    alpha_bar = _alpha_bar(scheduler, t)
    a, b = alpha_bar**0.5, (1.0 - alpha_bar) ** 0.5
    if kind == "v_prediction":
        return a * sample.float() - b * out.float()
    return (sample.float() - b * out.float()) / a


@torch.no_grad()
def decode(model: Model, latents: torch.Tensor) -> list[Image.Image]:
    vae = model.vae
    pixels = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor, return_dict=False)[0]
    pixels = ((pixels.float() / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
    return [Image.fromarray(p.permute(1, 2, 0).cpu().numpy()) for p in pixels]
