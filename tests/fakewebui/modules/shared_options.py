"""Test double of webui v1.10.1 `modules/shared_options.py`: the settings the double and extensions read, with
v1.10.1's default values, grouped by the settings page's sections.

The webui declares about 300 settings, each with a label and a gradio component; the double keeps the ones that
generation, saving, infotext and common extension code read, with their defaults only. Output folders default to
folders under the data directory's `outputs`, as in the webui.
"""

from __future__ import annotations

import os

from modules import paths_internal
from modules.options import OptionInfo, options_section
from modules.shared_cmd_options import cmd_opts

hide_dirs = {"visible": not cmd_opts.hide_ui_dir_config}  # component_args of settings that name folders
default_output_dir = paths_internal.default_output_dir


def _out(*parts: str) -> str:
    return os.path.join(default_output_dir, *parts)


# The settings that name files or folders: the API may not change them.
restricted_opts = {
    "samples_filename_pattern",
    "directories_filename_pattern",
    "outdir_samples",
    "outdir_txt2img_samples",
    "outdir_img2img_samples",
    "outdir_grids",
    "outdir_txt2img_grids",
    "outdir_img2img_grids",
    "outdir_init_images",
}

# (section id, section title, category) -> {key: v1.10.1 default}
_DEFAULTS: dict[tuple[str, str, str], dict] = {
    ("saving-images", "Saving images/grids", "saving"): {
        "samples_save": True,
        "samples_format": "png",
        "samples_filename_pattern": "",
        "save_images_add_number": True,
        "save_images_replace_action": "Replace",
        "grid_save": True,
        "grid_format": "png",
        "grid_extended_filename": False,
        "grid_only_if_multiple": True,
        "grid_prevent_empty_spots": False,
        "n_rows": -1,
        "grid_background_color": "#ffffff",
        "save_images_before_face_restoration": False,
        "save_images_before_highres_fix": False,
        "save_images_before_color_correction": False,
        "save_mask": False,
        "save_mask_composite": False,
        "jpeg_quality": 80,
        "webp_lossless": False,
        "img_max_size_mp": 200,
        "save_init_img": False,
        "save_incomplete_images": False,
    },
    ("saving-paths", "Paths for saving", "saving"): {
        "outdir_samples": "",
        "outdir_txt2img_samples": _out("txt2img-images"),
        "outdir_img2img_samples": _out("img2img-images"),
        "outdir_grids": "",
        "outdir_txt2img_grids": _out("txt2img-grids"),
        "outdir_img2img_grids": _out("img2img-grids"),
        "outdir_init_images": _out("init-images"),
    },
    ("saving-to-dirs", "Saving to a directory", "saving"): {
        "save_to_dirs": True,
        "grid_save_to_dirs": True,
        "directories_filename_pattern": "[date]",
        "directories_max_prompt_words": 8,
    },
    ("face-restoration", "Face restoration", "postprocessing"): {
        "face_restoration": False,
        "face_restoration_model": "CodeFormer",
    },
    ("sd", "Stable Diffusion", "sd"): {
        "sd_model_checkpoint": None,
        "sd_checkpoints_limit": 1,
        "sd_unet": "Automatic",
        "enable_quantization": False,
        "emphasis": "Original",
        "enable_batch_seeds": True,
        "comma_padding_backtrack": 20,
        "sdxl_clip_l_skip": False,
        "CLIP_stop_at_last_layers": 1,
        "upcast_attn": False,
        "randn_source": "GPU",
        "tiling": False,
        "hires_fix_refiner_pass": "second pass",
    },
    ("sdxl", "Stable Diffusion XL", "sd"): {
        "sdxl_crop_top": 0,
        "sdxl_crop_left": 0,
        "sdxl_refiner_low_aesthetic_score": 2.5,
        "sdxl_refiner_high_aesthetic_score": 6.0,
    },
    ("vae", "VAE", "sd"): {
        "sd_vae": "Automatic",
        "sd_vae_encode_method": "Full",
        "sd_vae_decode_method": "Full",
    },
    ("img2img", "img2img", "sd"): {
        "inpainting_mask_weight": 1.0,
        "initial_noise_multiplier": 1.0,
        "img2img_extra_noise": 0.0,
        "img2img_color_correction": False,
        "img2img_fix_steps": False,
        "img2img_background_color": "#ffffff",
        "return_mask": False,
        "return_mask_composite": False,
        "overlay_inpaint": True,
    },
    ("optimizations", "Optimizations", "sd"): {
        "cross_attention_optimization": "Automatic",
        "s_min_uncond": 0.0,
        "s_min_uncond_all": False,
        "token_merging_ratio": 0.0,
        "token_merging_ratio_img2img": 0.0,
        "token_merging_ratio_hr": 0.0,
        "pad_cond_uncond": False,
        "pad_cond_uncond_v0": False,
        "persistent_cond_cache": True,
        "batch_cond_uncond": True,
        "fp8_storage": "Disable",
        "cache_fp16_weight": False,
    },
    ("compatibility", "Compatibility", "sd"): {
        "auto_backcompat": True,
        "use_old_emphasis_implementation": False,
        "use_old_karras_scheduler_sigmas": False,
        "no_dpmpp_sde_batch_determinism": False,
        "use_old_hires_fix_width_height": False,
        "hires_fix_use_firstpass_conds": False,
        "use_old_scheduling": False,
        "use_downcasted_alpha_bar": False,
        "refiner_switch_by_sample_steps": False,
    },
    ("extra_networks", "Extra Networks", "sd"): {
        "extra_networks_default_multiplier": 1.0,
        "sd_hypernetwork": "None",
        "textual_inversion_print_at_load": False,
        "textual_inversion_add_hashes_to_infotext": True,
    },
    ("infotext", "Infotext", "ui"): {
        "add_model_hash_to_info": True,
        "add_model_name_to_info": True,
        "add_user_name_to_info": False,
        "add_version_to_infotext": True,
        "add_vae_name_to_info": True,
        "add_vae_hash_to_info": True,
        "infotext_skip_pasting": [],
        "enable_pnginfo": True,
        "save_txt": False,
    },
    ("ui", "User interface", "ui"): {
        "send_seed": True,
        "send_size": True,
        "live_preview_content": "Prompt",
        "do_not_show_images": False,
        "return_grid": True,
    },
    ("sampler-params", "Sampler parameters", "sd"): {
        "hide_samplers": [],
        "eta_ddim": 0.0,
        "eta_ancestral": 1.0,
        "s_churn": 0.0,
        "s_tmin": 0.0,
        "s_tmax": 0.0,
        "s_noise": 1.0,
        "sigma_min": 0.0,
        "sigma_max": 0.0,
        "rho": 0.0,
        "eta_noise_seed_delta": 0,
        "always_discard_next_to_last_sigma": False,
        "sgm_noise_multiplier": False,
        "sd_noise_schedule": "Default",
        "skip_early_cond": 0.0,
    },
}


def _declare(key: str, default) -> OptionInfo:
    folder_like = key in restricted_opts or key == "save_images_add_number"
    return OptionInfo(default, key, component_args=hide_dirs if folder_like else None)


options_templates: dict[str, OptionInfo] = {}
for _section, _values in _DEFAULTS.items():
    options_templates.update(options_section(_section, {k: _declare(k, v) for k, v in _values.items()}))
