"""Test double of webui v1.10.1 `modules/sd_samplers_timesteps_impl.py`: the DDIM and PLMS loops over integer
timesteps, written anew from the update rules of the DDIM paper (Song et al. 2020) and PLMS (Liu et al. 2022).

Both walk the timestep list from its end to its second entry: a list of n timesteps gives n − 1 model steps (PLMS
adds one extra model call in its first step), and the first entry is only the target of the last update. `model` is
the webui's `CFGDenoiserTimesteps`; it returns the guided noise prediction eps for latents x at timestep t. With
ᾱ the model's cumulative alpha product, each step predicts x0 = (x − √(1 − ᾱ_t)·eps) / √ᾱ_t and moves to the previous
timestep. The callback gets `{'x', 'i', 'sigma': 0, 'sigma_hat': 0, 'denoised': x0}` after each step."""

from __future__ import annotations

import math

import torch
from modules import _kdiffusion


def _cumulative_alphas(model, timesteps: torch.Tensor) -> tuple[list[float], list[float]]:
    """ᾱ at each timestep, and ᾱ at the entry before it (timestep 0 for the first entry, which no step reads)."""
    table = model.inner_model.inner_model.alphas_cumprod.double().cpu()
    indexes = timesteps.long().cpu()
    earlier = torch.cat([indexes.new_zeros(1), indexes[:-1]])
    return table[indexes].tolist(), table[earlier].tolist()


def _step_back(x, eps, a_now: float, a_next: float, spread: float = 0.0):
    """(latent at the earlier timestep, predicted x0) for noise prediction eps; `spread` is DDIM's sigma."""
    x0 = (x - math.sqrt(1.0 - a_now) * eps) / math.sqrt(a_now)
    towards = math.sqrt(max(1.0 - a_next - spread**2, 0.0)) * eps
    return math.sqrt(a_next) * x0 + towards, x0


@torch.no_grad()
def ddim(model, x, timesteps, extra_args=None, callback=None, disable=None, eta=0.0):
    """DDIM; eta 0 is deterministic. Noise is drawn every step (zero-weighted at eta 0), as the webui does, so the
    per-seed generators advance alike whatever eta is."""
    extra_args = extra_args or {}
    alphas, previous = _cumulative_alphas(model, timesteps)
    rows = x.new_ones(len(x))
    for i, index in enumerate(range(len(timesteps) - 1, 0, -1)):
        a_now, a_next = alphas[index], previous[index]
        spread = eta * math.sqrt((1.0 - a_next) / (1.0 - a_now) * (1.0 - a_now / a_next))
        eps = model(x, rows * float(timesteps[index]), **extra_args)
        x, x0 = _step_back(x, eps, a_now, a_next, spread)
        x = x + spread * _kdiffusion.torch.randn_like(x)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": 0, "sigma_hat": 0, "denoised": x0})
    return x


# Adams–Bashforth weights for the newest eps first, by how many earlier eps are at hand (1, 2, 3).
_MULTISTEP = {1: (3 / 2, -1 / 2), 2: (23 / 12, -16 / 12, 5 / 12), 3: (55 / 24, -59 / 24, 37 / 24, -9 / 24)}


@torch.no_grad()
def plms(model, x, timesteps, extra_args=None, callback=None, disable=None):
    """PLMS: the first step averages eps at both ends of a trial DDIM step (two model calls); later steps combine
    the current eps with up to three earlier ones."""
    extra_args = extra_args or {}
    alphas, previous = _cumulative_alphas(model, timesteps)
    rows = x.new_ones(len(x))
    history: list[torch.Tensor] = []  # newest last, at most three
    for i, index in enumerate(range(len(timesteps) - 1, 0, -1)):
        a_now, a_next = alphas[index], previous[index]
        eps = model(x, rows * float(timesteps[index]), **extra_args)
        if history:
            weights = _MULTISTEP[len(history)]
            blended = sum(w * e for w, e in zip(weights, [eps, *reversed(history)], strict=True))
        else:
            trial, _ = _step_back(x, eps, a_now, a_next)
            blended = (eps + model(trial, rows * float(timesteps[index - 1]), **extra_args)) / 2
        x, x0 = _step_back(x, blended, a_now, a_next)
        history = [*history, eps][-3:]
        if callback is not None:
            callback({"x": x, "i": i, "sigma": 0, "sigma_hat": 0, "denoised": x0})
    return x
