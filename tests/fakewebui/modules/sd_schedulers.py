"""Mirror of modules/sd_schedulers.py, reduced to Automatic, Uniform, Karras and Exponential."""

import dataclasses

from modules import _kdiffusion


@dataclasses.dataclass
class Scheduler:
    name: str
    label: str
    function: object

    default_rho: float = -1
    need_inner_model: bool = False
    aliases: list = None


def uniform(n, sigma_min, sigma_max, inner_model, device):
    return inner_model.get_sigmas(n).to(device)


schedulers = [
    Scheduler("automatic", "Automatic", None),
    Scheduler("uniform", "Uniform", uniform, need_inner_model=True),
    Scheduler("karras", "Karras", _kdiffusion.get_sigmas_karras, default_rho=7.0),
    Scheduler("exponential", "Exponential", _kdiffusion.get_sigmas_exponential),
]

schedulers_map = {**{x.name: x for x in schedulers}, **{x.label: x for x in schedulers}}
