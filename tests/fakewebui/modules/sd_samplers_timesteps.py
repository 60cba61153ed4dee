"""Test double of webui v1.10.1 `modules/sd_samplers_timesteps.py`: the samplers that step over the model's own
integer timesteps — DDIM and PLMS here (UniPC and DDIM CFG++ are left out) — with `CompVisSampler` and its denoiser
`CFGDenoiserTimesteps`, whose inner model predicts noise, not x0.

The schedule is the webui's: every (1000 // steps)-th timestep from 0, each plus one, clipped to 999. That is `steps`
timesteps when `steps` divides 1000 and more otherwise (3 steps: 1, 334, 667, 999), and the loops take one model
step per timestep but the first, so DDIM makes steps − 1 model steps for 2, 4, 5, 10, 20, 25, 50 … steps, exactly
`steps` for 3, 6, 7, 15, 30 … and more than `steps` for some large counts (60 steps: 62). The sampler still
announces `steps` to the denoiser and to `state`. img2img noises the init latent to the t_enc-th timestep and
samples the timesteps before it, announcing t_enc + 1 steps. The module is also `modules.sd_samplers_compvis`."""

from __future__ import annotations

import inspect
import sys

import torch
from modules import devices, sd_samplers_common, sd_samplers_timesteps_impl, shared
from modules.script_callbacks import ExtraNoiseParams, extra_noise_callback
from modules.sd_samplers_cfg_denoiser import CFGDenoiser
from modules.shared import opts

# (label, loop, aliases, options)
samplers_timesteps = [
    ("DDIM", sd_samplers_timesteps_impl.ddim, ["ddim"], {}),
    ("PLMS", sd_samplers_timesteps_impl.plms, ["plms"], {}),
]


def _entry(label, loop, aliases, options) -> sd_samplers_common.SamplerData:
    return sd_samplers_common.SamplerData(label, lambda model: CompVisSampler(loop, model), aliases, options)


samplers_data_timesteps = [_entry(*row) for row in samplers_timesteps]


class CompVisTimestepsDenoiser(torch.nn.Module):
    """The model as a noise predictor at integer timesteps: `apply_model(x, t, cond=…)` unchanged."""

    def __init__(self, model):
        super().__init__()
        self.inner_model = model

    def forward(self, input, timesteps, **kwargs):
        model = self.inner_model
        return model.apply_model(input, timesteps, **kwargs)


class CFGDenoiserTimesteps(CFGDenoiser):
    """CFG over noise predictions; `sigma` in its calls is the integer timestep (as a float tensor)."""

    def __init__(self, sampler):
        super().__init__(sampler)
        self.alphas = shared.sd_model.alphas_cumprod
        self.mask_before_denoising = True

    def get_pred_x0(self, x_in, x_out, sigma):
        """The clean latent implied by noise prediction `x_out` for latents `x_in` at timesteps `sigma`."""
        a_t = self.alphas[sigma.long()].reshape(-1, 1, 1, 1)
        return (x_in - (1 - a_t).sqrt() * x_out) / a_t.sqrt()

    @property
    def inner_model(self):
        if self.model_wrap is None:
            if getattr(shared.sd_model, "parameterization", "eps") == "v":
                raise NotImplementedError("the fake webui has no v-prediction models")
            self.model_wrap = CompVisTimestepsDenoiser(shared.sd_model)
        return self.model_wrap


class CompVisSampler(sd_samplers_common.Sampler):
    def __init__(self, funcname, sd_model):
        super().__init__(funcname)
        self.eta_option_field, self.eta_infotext_field, self.eta_default = "eta_ddim", "Eta DDIM", 0.0
        self.model_wrap_cfg = CFGDenoiserTimesteps(self)

    def get_timesteps(self, p, steps):
        discard = bool(self.config is not None and self.config.options.get("discard_next_to_last_sigma"))
        if opts.always_discard_next_to_last_sigma and not discard:
            discard = p.extra_generation_params["Discard penultimate sigma"] = True
        stride = 1000 // (steps + int(discard))
        return (torch.arange(0, 1000, stride, device=devices.device) + 1).clamp(0, 999)

    def _launch(self, p, x, timesteps, steps, conditioning, unconditional_conditioning, image_conditioning, **more):
        kwargs = self.initialize(p)
        accepted = inspect.signature(self.func).parameters
        if "timesteps" in accepted:
            kwargs["timesteps"] = timesteps
        kwargs.update({key: value for key, value in more.items() if key in accepted})
        self.sampler_extra_args = dict(
            cond=conditioning, image_cond=image_conditioning, uncond=unconditional_conditioning,
            cond_scale=p.cfg_scale, s_min_uncond=self.s_min_uncond,
        )  # fmt: skip
        loop, denoiser, extra, callback = self.func, self.model_wrap_cfg, self.sampler_extra_args, self.callback_state
        samples = self.launch_sampling(
            steps, lambda: loop(denoiser, x, extra_args=extra, disable=False, callback=callback, **kwargs)
        )
        if denoiser.padded_cond_uncond:
            p.extra_generation_params["Pad conds"] = True
        return samples

    def sample_img2img(
        self, p, x, noise, conditioning, unconditional_conditioning, steps=None, image_conditioning=None
    ):
        full, t_enc = sd_samplers_common.setup_img2img_steps(p, steps)
        schedule = self.get_timesteps(p, full)
        a_start = shared.sd_model.alphas_cumprod[schedule[t_enc]]
        start = x * a_start.sqrt() + noise * (1 - a_start).sqrt()
        extra = opts.img2img_extra_noise
        if extra > 0:
            p.extra_generation_params["Extra noise"] = extra
            params = ExtraNoiseParams(noise, x, start)
            extra_noise_callback(params)
            start = start + params.noise * extra * a_start.sqrt()
        self.last_latent = self.model_wrap_cfg.init_latent = x
        return self._launch(
            p, start, schedule[:t_enc], t_enc + 1, conditioning, unconditional_conditioning, image_conditioning,
            is_img2img=True,
        )  # fmt: skip

    def sample(self, p, x, conditioning, unconditional_conditioning, steps=None, image_conditioning=None):
        count = steps or p.steps
        self.last_latent = x
        return self._launch(
            p, x, self.get_timesteps(p, count), count, conditioning, unconditional_conditioning, image_conditioning
        )


sys.modules["modules.sd_samplers_compvis"] = sys.modules[__name__]
VanillaStableDiffusionSampler = CompVisSampler
