"""Test double of webui v1.10.1 `modules/sd_schedulers.py`, with four of its schedulers: Automatic (the sampler's
own choice), Uniform (the model's timesteps evenly spaced), Karras and Exponential."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from modules import _kdiffusion


@dataclasses.dataclass
class Scheduler:
    name: str
    label: str
    function: Callable | None

    default_rho: float = -1
    need_inner_model: bool = False
    aliases: list | None = None


def uniform(n, sigma_min, sigma_max, inner_model, device):
    """The model's own discretisation: n timesteps evenly spaced from the last to the first."""
    return inner_model.get_sigmas(n).to(device)


schedulers = [
    Scheduler("automatic", "Automatic", None),
    Scheduler("uniform", "Uniform", uniform, need_inner_model=True),
    Scheduler("karras", "Karras", _kdiffusion.get_sigmas_karras, default_rho=7.0),
    Scheduler("exponential", "Exponential", _kdiffusion.get_sigmas_exponential),
]

# looked up by name or label
schedulers_map = {key: s for s in schedulers for key in (s.name, s.label)}
