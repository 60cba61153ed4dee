"""Test double of webui v1.10.1 `modules/sd_samplers_kdiffusion.py`: `KDiffusionSampler` (sigma schedules from the
schedulers, txt2img and img2img sampling through the CFG denoiser) for four of the webui's k-diffusion samplers —
DPM++ 2M (the default, Karras schedule), Euler a, Euler and Heun."""

from __future__ import annotations

import inspect

import torch
from modules import _kdiffusion, devices, sd_samplers_cfg_denoiser, sd_samplers_common, sd_schedulers, shared
from modules.shared import opts

# (label, function name in k-diffusion, aliases, options)
samplers_k_diffusion = [
    ("DPM++ 2M", "sample_dpmpp_2m", ["k_dpmpp_2m"], {"scheduler": "karras"}),
    ("Euler a", "sample_euler_ancestral", ["k_euler_a", "k_euler_ancestral"], {"uses_ensd": True}),
    ("Euler", "sample_euler", ["k_euler"], {}),
    ("Heun", "sample_heun", ["k_heun"], {"second_order": True}),
]


def _constructor(funcname):
    return lambda model: KDiffusionSampler(funcname, model)


samplers_data_k_diffusion = [
    sd_samplers_common.SamplerData(label, _constructor(funcname), aliases, options)
    for label, funcname, aliases, options in samplers_k_diffusion
]

# the sigma keywords each loop takes from p
sampler_extra_params = {name: ["s_churn", "s_tmin", "s_tmax", "s_noise"] for name in ("sample_euler", "sample_heun")}

k_diffusion_samplers_map = {data.name: data for data in samplers_data_k_diffusion}
k_diffusion_scheduler = {s.name: s.function for s in sd_schedulers.schedulers}


class CFGDenoiserKDiffusion(sd_samplers_cfg_denoiser.CFGDenoiser):
    @property
    def inner_model(self):
        """k-diffusion's eps wrapper around the loaded model, made on first use."""
        if self.model_wrap is None:
            model = shared.sd_model
            if getattr(model, "parameterization", "eps") == "v":
                raise NotImplementedError("the fake webui has no v-prediction models")
            self.model_wrap = _kdiffusion.CompVisDenoiser(model, quantize=opts.enable_quantization)
        return self.model_wrap


class KDiffusionSampler(sd_samplers_common.Sampler):
    def __init__(self, funcname, sd_model, options=None):
        super().__init__(funcname)
        self.func, self.options = getattr(_kdiffusion, funcname), dict(options or {})
        self.extra_params = list(sampler_extra_params.get(funcname, ()))
        self.model_wrap_cfg = CFGDenoiserKDiffusion(self)
        self.model_wrap = self.model_wrap_cfg.inner_model  # k-diffusion's wrapper: sigmas and the eps model

    def _scheduler(self, p):
        chosen = (p.hr_scheduler if p.is_hr_pass else p.scheduler) or "Automatic"
        if chosen == "Automatic":
            chosen = self.config.options.get("scheduler")
        return sd_schedulers.schedulers_map.get(chosen)

    def _scheduled_sigmas(self, p, steps, scheduler):
        """Sigmas from a scheduler function, with the settings that adjust it recorded in the infotext."""
        params = p.extra_generation_params
        if not p.is_hr_pass:
            params["Schedule type"] = scheduler.label
        elif scheduler.label != params.get("Schedule type"):
            params["Hires schedule type"] = scheduler.label

        model_min, model_max = self.model_wrap.sigmas[0].item(), self.model_wrap.sigmas[-1].item()
        bounds = (0.1, 10.0) if opts.use_old_karras_scheduler_sigmas else (model_min, model_max)
        kwargs = {"sigma_min": bounds[0], "sigma_max": bounds[1]}
        for key, setting, label, model_value in (
            ("sigma_min", opts.sigma_min, "Schedule min sigma", model_min),
            ("sigma_max", opts.sigma_max, "Schedule max sigma", model_max),
        ):
            if setting not in (0, model_value):
                kwargs[key] = params[label] = setting
        if scheduler.default_rho != -1 and opts.rho != 0:
            kwargs["rho"] = params["Schedule rho"] = opts.rho
        if scheduler.need_inner_model:
            kwargs["inner_model"] = self.model_wrap
        return scheduler.function(n=steps, device=devices.cpu, **kwargs)

    def get_sigmas(self, p, steps):
        """steps + 1 sigmas ending in 0, from p's scheduler (Automatic: the sampler's default, else the model's
        evenly spaced timesteps); with 'discard penultimate sigma' one more is made and the next-to-last dropped."""
        discard = bool(self.config is not None and self.config.options.get("discard_next_to_last_sigma"))
        if opts.always_discard_next_to_last_sigma and not discard:
            discard = p.extra_generation_params["Discard penultimate sigma"] = True
        count = steps + int(discard)

        scheduler = self._scheduler(p)
        if p.sampler_noise_scheduler_override:
            sigmas = p.sampler_noise_scheduler_override(count)
        elif scheduler is None or scheduler.function is None:
            sigmas = self.model_wrap.get_sigmas(count)
        else:
            sigmas = self._scheduled_sigmas(p, count, scheduler)
        if discard:  # drop the next-to-last sigma
            sigmas = sigmas[torch.arange(len(sigmas)) != len(sigmas) - 2]
        return sigmas.cpu()

    def _launch(self, p, x, sigmas, steps, conditioning, unconditional_conditioning, image_conditioning):
        kwargs = self.initialize(p)
        if "sigmas" in inspect.signature(self.func).parameters:
            kwargs["sigmas"] = sigmas
        # the keyword arguments of every CFGDenoiser.forward call
        self.sampler_extra_args = dict(
            cond=conditioning, image_cond=image_conditioning, uncond=unconditional_conditioning,
            cond_scale=p.cfg_scale, s_min_uncond=self.s_min_uncond,
        )  # fmt: skip
        loop = self.func
        denoiser, extra, callback = self.model_wrap_cfg, self.sampler_extra_args, self.callback_state
        samples = self.launch_sampling(
            steps, lambda: loop(denoiser, x, extra_args=extra, disable=False, callback=callback, **kwargs)
        )
        self.add_infotext(p)
        return samples

    def sample_img2img(
        self, p, x, noise, conditioning, unconditional_conditioning, steps=None, image_conditioning=None
    ):
        """Noise the init latents `x` to the sigma t_enc steps before the end, then run those t_enc + 1 steps."""
        steps, t_enc = sd_samplers_common.setup_img2img_steps(p, steps)
        tail = self.get_sigmas(p, steps)[steps - t_enc - 1 :]
        self.model_wrap_cfg.init_latent = x
        self.last_latent = x
        start = x + noise * tail[0]
        return self._launch(p, start, tail, t_enc + 1, conditioning, unconditional_conditioning, image_conditioning)

    def sample(self, p, x, conditioning, unconditional_conditioning, steps=None, image_conditioning=None):
        """Scale unit noise `x` to the first sigma and run all steps."""
        sigmas = self.get_sigmas(p, steps or p.steps)
        scale = sigmas[0]
        if opts.sgm_noise_multiplier:  # sgm's variance-preserving start: sqrt(1 + sigma²)
            scale = (1.0 + scale**2).sqrt()
            p.extra_generation_params["SGM noise multiplier"] = True
        start = x * scale
        self.last_latent = start
        count = len(sigmas) - 1
        return self._launch(p, start, sigmas, count, conditioning, unconditional_conditioning, image_conditioning)
