"""Mirror of modules/shared.py: the webui's globals (`opts`, `cmd_opts`, `state`, `sd_model`, `device`, …).

As in v1.10.1, `sd_model` is a property of the module (see shared_items.Shared) backed by `sd_models.model_data`.
`opts` is created here at import with every default of shared_options (the real webui does it in shared_init)."""

import sys

from modules import devices, options, shared_cmd_options, shared_items, shared_options, shared_state, styles
from modules.options import OptionHTML, OptionInfo, options_section  # noqa: F401
from modules.shared_total_tqdm import TotalTQDM

cmd_opts = shared_cmd_options.cmd_opts
parser = shared_cmd_options.parser

batch_cond_uncond = True  # old field, unused now in favor of shared.opts.batch_cond_uncond
parallel_processing_allowed = True
styles_filename = []
config_filename = None
hide_dirs = shared_options.hide_dirs

demo = None

device = devices.device
weight_load_location = None

xformers_available = False

hypernetworks = {}
loaded_hypernetworks = []

state = shared_state.State()

prompt_styles = styles.StyleDatabase()

interrogator = None
face_restorers = []

options_templates = shared_options.options_templates
opts = options.Options(shared_options.options_templates, shared_options.restricted_opts)
restricted_opts = shared_options.restricted_opts

sd_model = None  # replaced by the property of shared_items.Shared below

settings_components = None
tab_names = []

latent_upscale_default_mode = "Latent"
latent_upscale_modes = {
    "Latent": {"mode": "bilinear", "antialias": False},
    "Latent (antialiased)": {"mode": "bilinear", "antialias": True},
    "Latent (bicubic)": {"mode": "bicubic", "antialias": False},
    "Latent (bicubic antialiased)": {"mode": "bicubic", "antialias": True},
    "Latent (nearest)": {"mode": "nearest", "antialias": False},
    "Latent (nearest-exact)": {"mode": "nearest-exact", "antialias": False},
}

sd_upscalers = []

clip_model = None

progress_print_out = sys.stdout

gradio_theme = None

total_tqdm = TotalTQDM()

mem_mon = None


def ldm_print(*args, **kwargs):
    pass


del sd_model
sys.modules[__name__].__class__ = shared_items.Shared
