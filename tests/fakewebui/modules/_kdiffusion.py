"""Stand-in for the k-diffusion pieces the webui's k-diffusion samplers call (not a webui module, hence the
underscore): the discrete-time eps-model wrapper `CompVisDenoiser`, the Karras and exponential sigma schedules,
and four sampling loops — Euler and Heun (Karras et al. 2022, Algorithm 2), Euler ancestral, DPM-Solver++(2M)
(Lu et al. 2022). Written here from those update rules. As in k-diffusion, the loops draw their noise through the
module-global name `torch`, which the webui swaps for `sd_samplers_common.TorchHijack` so that every image's noise
comes from its own seed."""

from __future__ import annotations

import math

import torch

# --- sigma schedules ------------------------------------------------------------------------------------------------


def append_zero(sigmas: torch.Tensor) -> torch.Tensor:
    """Every schedule ends at sigma 0 (the clean image)."""
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def get_sigmas_karras(n, sigma_min, sigma_max, rho=7.0, device="cpu"):
    """n sigmas evenly spaced in sigma**(1/rho) from sigma_max down to sigma_min, then 0."""
    ends = (float(sigma_max) ** (1.0 / rho), float(sigma_min) ** (1.0 / rho))
    return append_zero(torch.linspace(*ends, n, device=device) ** rho)


def get_sigmas_exponential(n, sigma_min, sigma_max, device="cpu"):
    """n sigmas evenly spaced in log sigma from sigma_max down to sigma_min, then 0."""
    ends = (math.log(sigma_max), math.log(sigma_min))
    return append_zero(torch.linspace(*ends, n, device=device).exp())


# --- the model wrapper ----------------------------------------------------------------------------------------------


def _per_row(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A value per batch row, shaped to broadcast over the row's channels and pixels."""
    return values.reshape(values.shape + (1,) * (like.ndim - values.ndim))


class CompVisDenoiser(torch.nn.Module):
    """Turns an ldm/sgm model that predicts noise at discrete timesteps (`apply_model(x, t, cond=…)`) into a
    denoiser D(x, sigma) of continuous sigma. The model's 1000 timesteps have sigma_t = sqrt((1 - ᾱ_t) / ᾱ_t);
    a sigma between two of them maps to a fractional timestep, interpolating in log sigma."""

    def __init__(self, model, quantize=False, device="cpu"):
        super().__init__()
        self.inner_model = model
        self.quantize = quantize
        self.sigma_data = 1.0
        alphas = model.alphas_cumprod.float()
        self.register_buffer("sigmas", torch.sqrt((1.0 - alphas) / alphas))  # rising with t
        self.register_buffer("log_sigmas", self.sigmas.log())

    @property
    def sigma_min(self):
        return self.sigmas[0]

    @property
    def sigma_max(self):
        return self.sigmas[-1]

    def sigma_to_t(self, sigma, quantize=None):
        log_sigma = sigma.log()
        table = self.log_sigmas
        if self.quantize if quantize is None else quantize:
            return (log_sigma[None] - table[:, None]).abs().argmin(dim=0).view(sigma.shape)
        above = torch.searchsorted(table, log_sigma.clamp(table[0], table[-1])).clamp(1, len(table) - 1)
        below = above - 1
        fraction = (log_sigma - table[below]) / (table[above] - table[below])
        return (below + fraction.clamp(0, 1)).view(sigma.shape)

    def t_to_sigma(self, t):
        t = t.float()
        below, above = t.floor().long(), t.ceil().long()
        return torch.lerp(self.log_sigmas[below], self.log_sigmas[above], t - below).exp()

    def get_sigmas(self, n=None):
        """n sigmas at evenly spaced timesteps from the last to the first, then 0 (all 1000 when n is None)."""
        if n is None:
            return append_zero(self.sigmas.flip(0))
        timesteps = torch.linspace(len(self.sigmas) - 1, 0, n, device=self.sigmas.device)
        return append_zero(self.t_to_sigma(timesteps))

    def get_scalings(self, sigma):
        """(c_out, c_in): the model sees x / sqrt(sigma² + 1) and its eps is scaled by -sigma."""
        return -sigma, (sigma**2 + self.sigma_data**2).rsqrt()

    def get_eps(self, *args, **kwargs):
        return self.inner_model.apply_model(*args, **kwargs)

    def forward(self, input, sigma, **kwargs):
        c_out, c_in = (_per_row(v, input) for v in self.get_scalings(sigma))
        eps = self.get_eps(input * c_in, self.sigma_to_t(sigma), **kwargs)
        return input + eps * c_out


# --- sampling loops --------------------------------------------------------------------------------------------------


def _slope(x, sigma, denoised):
    """dx/dsigma of the probability-flow ODE at (x, sigma), given the denoised estimate."""
    return (x - denoised) / sigma


def _steps(sigmas):
    """(i, sigma, next sigma) for every step of a schedule."""
    return ((i, sigmas[i], sigmas[i + 1]) for i in range(len(sigmas) - 1))


def _churn(x, sigma, count, s_churn, s_tmin, s_tmax, s_noise):
    """Optionally raise the noise level before a step (gamma of Algorithm 2): (x, raised sigma)."""
    gamma = min(s_churn / count, 2**0.5 - 1) if s_tmin <= sigma <= s_tmax else 0.0
    raised = sigma * (1.0 + gamma)
    if gamma > 0:
        x = x + torch.randn_like(x) * s_noise * (raised**2 - sigma**2).sqrt()
    return x, raised


def _tell(callback, x, i, sigma, sigma_hat, denoised):
    if callback is not None:
        callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma_hat, "denoised": denoised})


@torch.no_grad()
def sample_euler(
    model,
    x,
    sigmas,
    extra_args=None,
    callback=None,
    disable=None,
    s_churn=0.0,
    s_tmin=0.0,
    s_tmax=float("inf"),
    s_noise=1.0,
):
    """One model call per step; x moves along the slope at sigma to the next sigma."""
    ones = x.new_ones(len(x))
    for i, sigma, sigma_next in _steps(sigmas):
        x, raised = _churn(x, sigma, len(sigmas) - 1, s_churn, s_tmin, s_tmax, s_noise)
        denoised = model(x, raised * ones, **(extra_args or {}))
        _tell(callback, x, i, sigma, raised, denoised)
        x = x + _slope(x, raised, denoised) * (sigma_next - raised)
    return x


def _ancestral_split(sigma, sigma_next, eta):
    """Split a step to sigma_next into a deterministic step down to `down` and fresh noise of size `up`."""
    if not eta:
        return sigma_next, 0.0
    up = torch.minimum(sigma_next, eta * (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2).sqrt())
    return (sigma_next**2 - up**2).sqrt(), up


@torch.no_grad()
def sample_euler_ancestral(
    model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0, noise_sampler=None
):
    """Euler steps to a lower sigma, then new noise brings x back up to the next sigma."""
    ones = x.new_ones(len(x))
    for i, sigma, sigma_next in _steps(sigmas):
        denoised = model(x, sigma * ones, **(extra_args or {}))
        down, up = _ancestral_split(sigma, sigma_next, eta)
        _tell(callback, x, i, sigma, sigma, denoised)
        x = x + _slope(x, sigma, denoised) * (down - sigma)
        if sigma_next > 0:
            fresh = noise_sampler(sigma, sigma_next) if noise_sampler is not None else torch.randn_like(x)
            x = x + fresh * s_noise * up
    return x


@torch.no_grad()
def sample_heun(
    model,
    x,
    sigmas,
    extra_args=None,
    callback=None,
    disable=None,
    s_churn=0.0,
    s_tmin=0.0,
    s_tmax=float("inf"),
    s_noise=1.0,
):
    """Euler's step corrected by the slope at its end point (a second model call), except for the last step to 0."""
    ones = x.new_ones(len(x))
    extra = extra_args or {}
    for i, sigma, sigma_next in _steps(sigmas):
        x, raised = _churn(x, sigma, len(sigmas) - 1, s_churn, s_tmin, s_tmax, s_noise)
        denoised = model(x, raised * ones, **extra)
        _tell(callback, x, i, sigma, raised, denoised)
        slope, dt = _slope(x, raised, denoised), sigma_next - raised
        if sigma_next == 0:
            x = x + slope * dt
            continue
        guess = x + slope * dt
        end_slope = _slope(guess, sigma_next, model(guess, sigma_next * ones, **extra))
        x = x + (slope + end_slope) * 0.5 * dt
    return x


@torch.no_grad()
def sample_dpmpp_2m(model, x, sigmas, extra_args=None, callback=None, disable=None):
    """DPM-Solver++(2M): exponential-integrator steps in lambda = -log sigma, using the previous step's denoised
    estimate for a second-order correction (none on the first step; the last step returns the estimate)."""
    ones = x.new_ones(len(x))
    previous = None
    for i, sigma, sigma_next in _steps(sigmas):
        denoised = model(x, sigma * ones, **(extra_args or {}))
        _tell(callback, x, i, sigma, sigma, denoised)
        if sigma_next == 0:
            x = denoised
            continue
        h = sigma.log() - sigma_next.log()
        estimate = denoised
        if previous is not None:
            ratio = (sigmas[i - 1].log() - sigma.log()) / h
            estimate = denoised + (denoised - previous) / (2 * ratio)
        x = (sigma_next / sigma) * x - torch.expm1(-h) * estimate
        previous = denoised
    return x
