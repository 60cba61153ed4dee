"""Test double of webui v1.10.1 `modules/sd_samplers.py`: the list of samplers (the k-diffusion ones the fake
has, then DDIM and PLMS), lookup by name or alias, `create_sampler`, and the "Sampler Scheduler" name repair of old
infotexts/API calls (`DPM++ 2M Karras` → sampler `DPM++ 2M`, scheduler `Karras`)."""

from __future__ import annotations

import logging

from modules import sd_samplers_common, sd_samplers_kdiffusion, sd_samplers_timesteps, sd_schedulers, shared
from modules.sd_samplers_common import sample_to_image, samples_to_image_grid, samples_to_images_tensor  # noqa: F401

log = logging.getLogger(__name__)

all_samplers = [*sd_samplers_kdiffusion.samplers_data_k_diffusion, *sd_samplers_timesteps.samplers_data_timesteps]
all_samplers_map = {data.name: data for data in all_samplers}

samplers: list[sd_samplers_common.SamplerData] = []
samplers_for_img2img: list[sd_samplers_common.SamplerData] = []
samplers_map: dict[str, str] = {}  # lower-case name or alias → name
samplers_hidden: set[str] = set()


def find_sampler_config(name):
    """The SamplerData called `name` (None: the default sampler), or None when there is no such sampler."""
    return all_samplers[0] if name is None else all_samplers_map.get(name)


def create_sampler(name, model):
    config = find_sampler_config(name)
    if config is None:
        raise ValueError(f"bad sampler name: {name}")
    if model.is_sdxl and config.options.get("no_sdxl"):
        raise ValueError(f"Sampler {config.name} is not supported for SDXL")
    sampler = config.constructor(model)
    sampler.config = config
    return sampler


def set_samplers():
    global samplers, samplers_for_img2img, samplers_hidden
    samplers_hidden = set(shared.opts.hide_samplers)
    samplers = samplers_for_img2img = all_samplers
    samplers_map.clear()
    for data in all_samplers:
        samplers_map.update({key.lower(): data.name for key in (data.name, *data.aliases)})


def visible_sampler_names():
    return [data.name for data in samplers if data.name not in samplers_hidden]


def get_sampler_and_scheduler(sampler_name, scheduler_name, *, convert_automatic=True):
    """(sampler name, scheduler label). A scheduler named at the end of the sampler name ("Euler Karras") is split
    off; unknown names fall back to the defaults; with convert_automatic the sampler's own default scheduler is
    reported as Automatic."""
    name = sampler_name or samplers[0].name
    scheduler = sd_schedulers.schedulers_map.get(scheduler_name, sd_schedulers.schedulers[0])
    for candidate in sd_schedulers.schedulers:
        suffix = next(
            (f" {n}" for n in (candidate.label, candidate.name, *(candidate.aliases or [])) if name.endswith(f" {n}")),
            None,
        )
        if suffix is not None:
            name, scheduler = name[: -len(suffix)], candidate
    sampler = all_samplers_map.get(name, samplers[0])
    if convert_automatic and sampler.options.get("scheduler") == scheduler.name:
        scheduler = sd_schedulers.schedulers[0]
    return sampler.name, scheduler.label


def get_hr_sampler_and_scheduler(d: dict):
    """The hires sampler and scheduler of a parsed infotext, as "Use same …" when they equal the first pass's."""
    same_sampler, same_scheduler = "Use same sampler", "Use same scheduler"
    hr_sampler = d.get("Hires sampler", same_sampler)
    hr_scheduler = d.get("Hires schedule type", same_scheduler)
    sampler, scheduler = get_sampler_and_scheduler(
        d.get("Sampler") if hr_sampler == same_sampler else hr_sampler,
        d.get("Schedule type") if hr_scheduler == same_scheduler else hr_scheduler,
    )
    return (
        same_sampler if sampler == d.get("Sampler") else sampler,
        same_scheduler if scheduler == d.get("Schedule type") else scheduler,
    )


def fix_p_invalid_sampler_and_scheduler(p):
    before = (p.sampler_name, p.scheduler)
    p.sampler_name, p.scheduler = get_sampler_and_scheduler(*before, convert_automatic=False)
    if (p.sampler_name, p.scheduler) != before:
        log.warning("Sampler Scheduler autocorrection: %r, %r -> %r, %r", *before, p.sampler_name, p.scheduler)


set_samplers()
