"""A k-diffusion view of an ldm/sgm U-Net, the Karras noise schedule, classifier-free guidance and one sampler step.

`ScheduleDenoiser` turns a model that predicts noise (or v) at integer-indexed timesteps into the denoiser samplers
use: the latent at noise level sigma is scaled by 1/sqrt(sigma²+1), the timestep is sigma's position in the model's
own sigma table (interpolated in log-sigma, so fractional), and the output is turned into a clean-latent prediction.
The webui's k-diffusion samplers wrap every SD1/SD2/SDXL model this way. `karras_sigmas`, `guided` and `sampler_step`
give one step of Euler or Euler a with the same arithmetic as those samplers, so the estimator can match one step of a
real trajectory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from lib_dumpunet.estimate.model import Cond

__all__ = ["ScheduleDenoiser", "guided", "karras_sigmas", "sampler_step"]

KARRAS_RHO = 7.0


class ScheduleDenoiser:
    """`Denoiser` over `apply_model(x, t, cond)` and the model's `alphas_cumprod`; `prediction` "eps" or "v"."""

    def __init__(
        self,
        apply_model: Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor],
        alphas_cumprod,
        prediction: str = "eps",
    ) -> None:
        if prediction not in ("eps", "v"):
            raise ValueError(f"prediction must be 'eps' or 'v', not {prediction!r}")
        alphas = torch.as_tensor(alphas_cumprod, dtype=torch.float32).cpu()
        self.apply_model = apply_model
        self.prediction = prediction
        self.sigmas = ((1 - alphas) / alphas).sqrt()
        self.log_sigmas = self.sigmas.log()

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        """Fractional timestep whose table sigma is `sigma` (linear in log-sigma between neighbours)."""
        log_sigma = sigma.float().cpu().log().clamp(self.log_sigmas[0], self.log_sigmas[-1])
        upper = torch.searchsorted(self.log_sigmas, log_sigma).clamp(1, len(self.log_sigmas) - 1)
        lower = upper - 1
        low, high = self.log_sigmas[lower], self.log_sigmas[upper]
        frac = (log_sigma - low) / (high - low)
        return (lower + frac).to(sigma.device)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, cond: Cond) -> torch.Tensor:
        s = sigma.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        scale_in = (s * s + 1).rsqrt()
        out = self.apply_model(x * scale_in, self.timestep(sigma), cond)
        if self.prediction == "eps":
            return x - s * out
        return x / (s * s + 1) - out * s * scale_in


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """Karras et al.'s schedule (rho 7) from sigma_max down to sigma_min in `steps` levels, then 0."""
    ramp = torch.linspace(0, 1, steps)
    low, high = sigma_min ** (1 / KARRAS_RHO), sigma_max ** (1 / KARRAS_RHO)
    sigmas = (high + ramp * (low - high)) ** KARRAS_RHO
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def guided(cond_out: torch.Tensor, uncond_out: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance of two denoised predictions."""
    return uncond_out + scale * (cond_out - uncond_out)


def sampler_step(
    sampler: str, x: torch.Tensor, denoised: torch.Tensor, sigma: float, sigma_next: float, noise: torch.Tensor | None
) -> torch.Tensor:
    """One step from `sigma` to `sigma_next` given the model's prediction. "Euler a" adds `noise` (same noise for the
    target and the trained step, so it cancels in their difference)."""
    slope = (x - denoised) / sigma
    if sampler == "Euler" or sigma_next == 0:
        return x + slope * (sigma_next - sigma)
    if sampler != "Euler a":
        raise ValueError(f"unknown sampler {sampler!r}")
    up = min(sigma_next, (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2) ** 0.5)
    down = (sigma_next**2 - up**2) ** 0.5
    stepped = x + slope * (down - sigma)
    return stepped if noise is None else stepped + noise * up
