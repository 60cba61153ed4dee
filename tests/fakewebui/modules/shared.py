"""Test double of webui v1.10.1 `modules/shared.py`: the process-wide objects every part of the webui reaches for.

`opts` (settings, created at import with shared_options' defaults — the webui fills it in `shared_init`),
`cmd_opts`, `state`, `device`, `prompt_styles`, `total_tqdm`, the latent upscale modes of hires fix, and
`sd_model`: a property of this module (its class becomes `shared_items.Shared`), so reading it goes through
`sd_models.model_data` and may load a model, as in the webui.
"""

from __future__ import annotations

import sys

from modules import devices, options, shared_cmd_options, shared_items, shared_options, shared_state, styles
from modules.options import OptionHTML, OptionInfo, options_section  # noqa: F401  (extensions import them from here)
from modules.shared_total_tqdm import TotalTQDM

parser = shared_cmd_options.parser
cmd_opts = shared_cmd_options.cmd_opts
hide_dirs = shared_options.hide_dirs
restricted_opts = shared_options.restricted_opts
options_templates = shared_options.options_templates
opts = options.Options(options_templates, restricted_opts)

state = shared_state.State()
device = devices.device
prompt_styles = styles.StyleDatabase()
total_tqdm = TotalTQDM()
demo = None
sd_upscalers: list = []
hypernetworks: dict = {}
loaded_hypernetworks: list = []
face_restorers: list = []

latent_upscale_default_mode = "Latent"
# hires fix "upscalers" that resize the latent itself: torch interpolation mode and antialiasing
latent_upscale_modes = {
    name: {"mode": mode, "antialias": antialias}
    for name, mode, antialias in (
        ("Latent", "bilinear", False),
        ("Latent (antialiased)", "bilinear", True),
        ("Latent (bicubic)", "bicubic", False),
        ("Latent (bicubic antialiased)", "bicubic", True),
        ("Latent (nearest)", "nearest", False),
        ("Latent (nearest-exact)", "nearest-exact", False),
    )
}

sys.modules[__name__].__class__ = shared_items.Shared
