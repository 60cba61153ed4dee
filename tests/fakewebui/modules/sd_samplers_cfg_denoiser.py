"""Test double of webui v1.10.1 `modules/sd_samplers_cfg_denoiser.py`: `CFGDenoiser`, the classifier-free-guidance
step every sampler calls, and the one place that decides which rows reach the U-Net together.

The rows of a denoiser call: each image's cond rows (one per AND sub-prompt, consecutive, images in order), then
one uncond row per image. When cond and uncond have the same token length, all rows go in one U-Net call
(`batch_cond_uncond`) or in consecutive slices of batch-size rows. When they differ (a prompt over 75 tokens and a
short negative), the cond rows go in slices of batch size (×2 with batch_cond_uncond) and the uncond rows in one
more call — unless `pad_cond_uncond` pads the shorter with empty-prompt chunks. `skip_early_cond` and NGMS leave
the uncond rows out. `on_cfg_denoiser` sees the rows before the calls, `on_cfg_denoised` after them,
`on_cfg_after_cfg` the guided result; `self.step` counts the calls of this sampling run."""

from __future__ import annotations

import torch
from modules import devices, prompt_parser, sd_samplers_common, shared
from modules.script_callbacks import (
    AfterCFGCallbackParams,
    CFGDenoisedParams,
    CFGDenoiserParams,
    cfg_after_cfg_callback,
    cfg_denoised_callback,
    cfg_denoiser_callback,
)
from modules.shared import opts, state


def catenate_conds(conds):
    """Concatenates conds along rows; SDXL conds are dicts of tensors ("crossattn", "vector")."""
    if isinstance(conds[0], dict):
        return {key: torch.cat([c[key] for c in conds]) for key in conds[0]}
    return torch.cat(conds)


def subscript_cond(cond, a, b):
    if isinstance(cond, dict):
        return {key: value[a:b] for key, value in cond.items()}
    return cond[a:b]


def pad_cond(tensor, repeats, empty):
    """Appends `repeats` copies of the empty prompt's 77-token chunk to every row."""
    if isinstance(tensor, dict):
        return {**tensor, "crossattn": pad_cond(tensor["crossattn"], repeats, empty)}
    return torch.cat([tensor, empty.repeat((len(tensor), repeats, 1))], dim=1)


def _crossattn(cond):
    return cond["crossattn"] if isinstance(cond, dict) else cond


class CFGDenoiser(torch.nn.Module):
    """Runs the model on the cond and uncond rows of a sampler step and mixes them with the CFG scale."""

    def __init__(self, sampler):
        super().__init__()
        self.sampler = sampler
        self.model_wrap = self.p = None
        self.mask = self.nmask = self.init_latent = None
        self.steps = None  # the steps asked for
        self.total_steps = None  # the denoiser calls those steps take (second-order samplers: about twice as many)
        self.step = 0
        self.image_cfg_scale = None
        self.padded_cond_uncond = self.padded_cond_uncond_v0 = False
        self.mask_before_denoising = False

    @property
    def inner_model(self):
        raise NotImplementedError

    def get_pred_x0(self, x_in, x_out, sigma):
        return x_out

    def combine_denoised(self, x_out, conds_list, uncond, cond_scale):
        """uncond + Σ weight · scale · (cond − uncond) per image, the uncond outputs being the last rows."""
        from_uncond = x_out[len(x_out) - _crossattn(uncond).shape[0] :]
        guided = from_uncond.clone()
        for image, conds in enumerate(conds_list):
            for row, weight in conds:
                guided[image] += (x_out[row] - from_uncond[image]) * (weight * cond_scale)
        return guided

    def pad_cond_uncond(self, cond, uncond):
        """Pads the shorter of cond and uncond with empty-prompt chunks to the other's token length."""
        empty = shared.sd_model.cond_stage_model_empty_prompt
        chunks = (_crossattn(cond).shape[1] - _crossattn(uncond).shape[1]) // empty.shape[1]
        if chunks:
            self.padded_cond_uncond = True
        if chunks > 0:
            uncond = pad_cond(uncond, chunks, empty)
        elif chunks < 0:
            cond = pad_cond(cond, -chunks, empty)
        return cond, uncond

    def pad_cond_uncond_v0(self, cond, uncond):
        """The pre-1.6 way: repeat uncond's last vector up to cond's length, or cut it down to it."""
        vectors, length = _crossattn(uncond), _crossattn(cond).shape[1]
        if vectors.shape[1] != length:
            self.padded_cond_uncond_v0 = True
            extra = max(length - vectors.shape[1], 0)
            vectors = torch.cat([vectors, vectors[:, -1:].expand(-1, extra, -1)], dim=1)[:, :length]
        return cond, ({**uncond, "crossattn": vectors} if isinstance(uncond, dict) else vectors)

    # -- forward, in parts --------------------------------------------------------------------------------------------

    def _skips_uncond(self, sigma, s_min_uncond) -> bool:
        params = self.p.extra_generation_params
        if opts.skip_early_cond != 0.0 and self.step / self.total_steps <= opts.skip_early_cond:
            params["Skip Early CFG"] = opts.skip_early_cond
            return True
        every_step = opts.s_min_uncond_all
        if s_min_uncond > 0 and sigma[0] < s_min_uncond and (every_step or self.step % 2):
            params["NGMS"] = s_min_uncond
            if every_step:
                params["NGMS all steps"] = every_step
            return True
        return False

    def _condition(self, crossattn, image_cond):
        if isinstance(crossattn, dict):  # SDXL: crossattn and vector
            return {**crossattn, "c_concat": [image_cond]}
        return {"c_crossattn": [crossattn], "c_concat": [image_cond]}

    def _model_rows(self, x_in, sigma_in, image_cond_in, cond, uncond, images, skip_uncond):
        """The U-Net calls of one denoiser call (see the module docstring); returns outputs for all rows."""
        out = torch.zeros_like(x_in)

        def run(a, b, crossattn):
            out[a:b] = self.inner_model(x_in[a:b], sigma_in[a:b], cond=self._condition(crossattn, image_cond_in[a:b]))

        cond_rows = len(_crossattn(cond))
        if skip_uncond or _crossattn(cond).shape[1] == _crossattn(uncond).shape[1]:
            rows = cond if skip_uncond else catenate_conds([cond, uncond])
            size = len(x_in) if opts.batch_cond_uncond else images
            for a in range(0, len(x_in), size):
                run(a, a + size, subscript_cond(rows, a, a + size))
            return out
        size = images * 2 if opts.batch_cond_uncond else images
        for a in range(0, cond_rows, size):
            b = min(a + size, cond_rows)
            run(a, b, subscript_cond(cond, a, b))
        run(cond_rows, len(x_in), uncond)
        return out

    def forward(self, x, sigma, uncond, cond, cond_scale, s_min_uncond, image_cond):
        if state.interrupted or state.skipped:
            raise sd_samplers_common.InterruptedException
        if sd_samplers_common.apply_refiner(self, sigma):
            cond, uncond = self.sampler.sampler_extra_args["cond"], self.sampler.sampler_extra_args["uncond"]
        if shared.sd_model.cond_stage_key == "edit" and self.image_cfg_scale not in (None, 1.0):
            raise NotImplementedError("the fake webui has no InstructPix2Pix models")

        conds_list, tensor = prompt_parser.reconstruct_multicond_batch(cond, self.step)
        uncond = prompt_parser.reconstruct_cond_batch(uncond, self.step)
        images = len(conds_list)

        def rows(t):  # each image's value once per sub-prompt, then once more per image for uncond
            return torch.cat([t[i : i + 1].expand(len(c), *t.shape[1:]) for i, c in enumerate(conds_list)] + [t])

        x_in, sigma_in, image_cond_in = rows(x), rows(sigma), rows(image_cond)
        params = CFGDenoiserParams(
            x_in, image_cond_in, sigma_in, state.sampling_step, state.sampling_steps, tensor, uncond, self
        )
        cfg_denoiser_callback(params)
        x_in, image_cond_in, sigma_in = params.x, params.image_cond, params.sigma
        tensor, uncond = params.text_cond, params.text_uncond

        skip_uncond = self._skips_uncond(sigma, s_min_uncond)
        if skip_uncond:
            x_in, sigma_in, image_cond_in = x_in[:-images], sigma_in[:-images], image_cond_in[:-images]

        self.padded_cond_uncond = self.padded_cond_uncond_v0 = False
        if _crossattn(tensor).shape[1] != _crossattn(uncond).shape[1]:
            if opts.pad_cond_uncond_v0:
                tensor, uncond = self.pad_cond_uncond_v0(tensor, uncond)
            elif opts.pad_cond_uncond:
                tensor, uncond = self.pad_cond_uncond(tensor, uncond)

        x_out = self._model_rows(x_in, sigma_in, image_cond_in, tensor, uncond, images, skip_uncond)
        first_rows = [conds[0][0] for conds in conds_list]  # each image's first sub-prompt
        if skip_uncond:  # its first cond output stands in for the uncond output
            x_out = torch.cat([x_out, x_out[first_rows]])

        cfg_denoised_callback(CFGDenoisedParams(x_out, state.sampling_step, state.sampling_steps, self.inner_model))
        devices.test_for_nans(x_out, "unet")
        denoised = self.combine_denoised(x_out, conds_list, uncond, 1.0 if skip_uncond else cond_scale)

        self.sampler.last_latent = self.get_pred_x0(x_in[first_rows], x_out[first_rows], sigma)
        sd_samplers_common.store_latent(self.sampler.last_latent)
        after = AfterCFGCallbackParams(denoised, state.sampling_step, state.sampling_steps)
        cfg_after_cfg_callback(after)
        self.step += 1
        return after.x
