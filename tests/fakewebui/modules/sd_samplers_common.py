"""Test double of webui v1.10.1 `modules/sd_samplers_common.py`: the sampler registry entry `SamplerData`, the
`Sampler` base class (`initialize`, `launch_sampling`, `callback_state`), `InterruptedException`, `TorchHijack`
(per-seed noise inside the sampling loops), img2img step arithmetic and the latent ↔ image helpers."""

from __future__ import annotations

import inspect
import math
from collections import namedtuple

import numpy as np
import torch
from modules import devices, shared
from modules.shared import opts, state
from PIL import Image

SamplerDataTuple = namedtuple("SamplerData", ["name", "constructor", "aliases", "options"])


class SamplerData(SamplerDataTuple):
    def total_steps(self, steps):
        """Denoiser calls the sampler is expected to make for `steps` (second-order samplers: two per step)."""
        return steps * (2 if self.options.get("second_order") else 1)


class InterruptedException(BaseException):
    """Raised inside sampling (CFGDenoiser, callback_state) to stop it; `launch_sampling` catches it."""


def setup_img2img_steps(p, steps=None):
    """(steps of the full schedule, t_enc): img2img samples the last t_enc + 1 of `steps`. With an explicit
    `steps` (the hires pass) or opts.img2img_fix_steps the schedule is stretched so that `steps` are actually run."""
    strength = min(p.denoising_strength, 0.999)
    if steps is None and not opts.img2img_fix_steps:
        return p.steps, int(strength * p.steps)
    wanted = steps or p.steps
    return (int(wanted / strength) if p.denoising_strength > 0 else 0), wanted - 1


# --- latents and images -----------------------------------------------------------------------------------------------

approximation_indexes = {"Full": 0, "Approx NN": 1, "Approx cheap": 2, "TAESD": 3}


def samples_to_images_tensor(sample, approximation=None, model=None):
    """Latents to RGB tensors in [-1, 1]. The fake has one decoder, so every approximation uses it."""
    model = shared.sd_model if model is None else model
    return model.decode_first_stage(sample.to(devices.dtype_vae))


def decode_first_stage(model, x):
    return samples_to_images_tensor(x, approximation_indexes.get(opts.sd_vae_decode_method, 0), model)


def single_sample_to_image(sample, approximation=None):
    rgb = samples_to_images_tensor(sample[None], approximation)[0]
    unit = ((rgb + 1.0) / 2.0).clamp(0.0, 1.0)
    return Image.fromarray((np.moveaxis(unit.cpu().numpy(), 0, -1) * 255.0).astype(np.uint8))


def sample_to_image(samples, index=0, approximation=None):
    return single_sample_to_image(samples[index], approximation)


def samples_to_image_grid(samples, approximation=None):
    from modules import images

    return images.image_grid([single_sample_to_image(s, approximation) for s in samples])


def images_tensor_to_samples(image, approximation=None, model=None):
    """RGB tensors in [0, 1] to latents, one image at a time."""
    model = shared.sd_model if model is None else model
    pixels = image.to(shared.device, dtype=devices.dtype_vae) * 2.0 - 1.0
    encoded = [model.get_first_stage_encoding(model.encode_first_stage(one[None])) for one in pixels]
    return torch.cat(encoded)


def store_latent(decoded):
    state.current_latent = decoded


def apply_refiner(cfg_denoiser, sigma=None):
    """False: the fake has no refiner checkpoints, which is what the webui returns when none is set."""
    p = cfg_denoiser.p
    if p is not None and getattr(p, "refiner_checkpoint_info", None) is not None:
        raise NotImplementedError("the fake webui has no refiner checkpoints")
    return False


class TorchHijack:
    """Put in place of `torch` inside the sampling loops' module: `randn_like` takes the next noise from `p.rng`
    (one generator per seed, so a batch matches its images made one by one); everything else is torch's."""

    def __init__(self, p):
        self.rng = p.rng

    def randn_like(self, x):
        return self.rng.next()

    def __getattr__(self, item):
        if not hasattr(torch, item):
            raise AttributeError(f"'{type(self).__name__}' object has no attribute '{item}'")
        return getattr(torch, item)


# --- the sampler base class -------------------------------------------------------------------------------------------

# sampler keyword: (infotext key, the loop's own default)
_SIGMA_OPTIONS = {
    "s_churn": ("Sigma churn", 0.0),
    "s_tmin": ("Sigma tmin", 0.0),
    "s_tmax": ("Sigma tmax", math.inf),
    "s_noise": ("Sigma noise", 1.0),
}


class Sampler:
    """What every webui sampler shares: the CFG denoiser (`model_wrap_cfg`), the keyword arguments of its sampling
    function, progress through `state`, and the latest latent for when sampling is interrupted."""

    def __init__(self, funcname):
        self.funcname = self.func = funcname
        self.extra_params = []
        self.config: SamplerData | None = None  # set by create_sampler
        self.options = {}
        self.p = self.model_wrap_cfg = self.sampler_extra_args = None
        self.sampler_noises = self.stop_at = self.eta = self.last_latent = self.s_min_uncond = None
        self.s_churn, self.s_tmin, self.s_tmax, self.s_noise = (d for _, d in _SIGMA_OPTIONS.values())
        self.eta_option_field, self.eta_infotext_field, self.eta_default = "eta_ancestral", "Eta", 1.0
        self.conditioning_key = getattr(shared.sd_model.model, "conditioning_key", "crossattn")

    def callback_state(self, d):
        """Called by the loop once per step, after the step's first model call: it moves `state.sampling_step`."""
        if self.stop_at is not None and d["i"] > self.stop_at:
            raise InterruptedException
        state.sampling_step = d["i"]
        shared.total_tqdm.update()

    def launch_sampling(self, steps, func):
        """Runs the loop; an interrupt (InterruptedException) returns the latest latent instead."""
        denoiser = self.model_wrap_cfg
        denoiser.steps, denoiser.total_steps = steps, self.config.total_steps(steps)
        state.sampling_steps, state.sampling_step = steps, 0
        try:
            return func()
        except InterruptedException:
            return self.last_latent

    def number_of_needed_noises(self, p):
        return p.steps

    def initialize(self, p) -> dict:
        """Readies the denoiser for `p` and returns the keyword arguments the sampling function accepts."""
        from modules import _kdiffusion

        self.p = p
        denoiser = self.model_wrap_cfg
        denoiser.p, denoiser.step = p, 0
        denoiser.mask, denoiser.nmask = getattr(p, "mask", None), getattr(p, "nmask", None)
        denoiser.image_cfg_scale = getattr(p, "image_cfg_scale", None)
        self.eta = p.eta if p.eta is not None else getattr(opts, self.eta_option_field, 0.0)
        self.s_min_uncond = getattr(p, "s_min_uncond", 0.0)
        _kdiffusion.torch = TorchHijack(p)

        accepted = inspect.signature(self.func).parameters
        kwargs = {}
        for name in self.extra_params:
            if name not in accepted or not hasattr(p, name):
                continue
            kwargs[name] = value = getattr(p, name)
            label, default = _SIGMA_OPTIONS.get(name, (None, value))
            if label is not None and value != default:
                p.extra_generation_params[label] = value
        if "eta" in accepted:
            kwargs["eta"] = self.eta
            if self.eta != self.eta_default:  # the infotext names eta only when it is not the default
                p.extra_generation_params[self.eta_infotext_field] = self.eta
        return kwargs

    def sample(self, p, x, conditioning, unconditional_conditioning, steps=None, image_conditioning=None):
        raise NotImplementedError

    def sample_img2img(
        self, p, x, noise, conditioning, unconditional_conditioning, steps=None, image_conditioning=None
    ):
        raise NotImplementedError

    def add_infotext(self, p):
        denoiser = self.model_wrap_cfg
        for flag, label in (
            (denoiser.padded_cond_uncond, "Pad conds"),
            (denoiser.padded_cond_uncond_v0, "Pad conds v0"),
        ):
            if flag:
                p.extra_generation_params[label] = True
