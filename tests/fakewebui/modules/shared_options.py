"""Mirror of modules/shared_options.py: the settings the fake reads, with v1.10.1's defaults, labels and sections.

The real file declares some 300 settings with their gradio components; this one keeps the keys that generation,
saving and infotext read (and a few extensions commonly read), without components."""

import os

from modules import paths_internal
from modules.options import OptionInfo, options_section
from modules.shared_cmd_options import cmd_opts

hide_dirs = {"visible": not cmd_opts.hide_ui_dir_config}
default_output_dir = paths_internal.default_output_dir

restricted_opts = {
    "samples_filename_pattern",
    "directories_filename_pattern",
    "outdir_samples",
    "outdir_txt2img_samples",
    "outdir_img2img_samples",
    "outdir_extras_samples",
    "outdir_grids",
    "outdir_txt2img_grids",
    "outdir_save",
    "outdir_init_images",
    "temp_dir",
    "clean_temp_dir_at_start",
}

options_templates = {}

options_templates.update(
    options_section(
        ("saving-images", "Saving images/grids", "saving"),
        {
            "samples_save": OptionInfo(True, "Always save all generated images"),
            "samples_format": OptionInfo("png", "File format for images"),
            "samples_filename_pattern": OptionInfo("", "Images filename pattern", component_args=hide_dirs),
            "save_images_add_number": OptionInfo(True, "Add number to filename when saving", component_args=hide_dirs),
            "save_images_replace_action": OptionInfo("Replace", "Saving the image to an existing file"),
            "grid_save": OptionInfo(True, "Always save all generated image grids"),
            "grid_format": OptionInfo("png", "File format for grids"),
            "grid_extended_filename": OptionInfo(
                False, "Add extended info (seed, prompt) to filename when saving grid"
            ),
            "grid_only_if_multiple": OptionInfo(True, "Do not save grids consisting of one picture"),
            "grid_prevent_empty_spots": OptionInfo(False, "Prevent empty spots in grid (when set to autodetect)"),
            "grid_zip_filename_pattern": OptionInfo("", "Archive filename pattern", component_args=hide_dirs),
            "n_rows": OptionInfo(-1, "Grid row count; use -1 for autodetect and 0 for it to be same as batch size"),
            "font": OptionInfo("", "Font for image grids that have text"),
            "grid_text_active_color": OptionInfo("#000000", "Text color for image grids"),
            "grid_text_inactive_color": OptionInfo("#999999", "Inactive text color for image grids"),
            "grid_background_color": OptionInfo("#ffffff", "Background color for image grids"),
            "save_images_before_face_restoration": OptionInfo(
                False, "Save a copy of image before doing face restoration."
            ),
            "save_images_before_highres_fix": OptionInfo(False, "Save a copy of image before applying highres fix."),
            "save_images_before_color_correction": OptionInfo(
                False, "Save a copy of image before applying color correction"
            ),
            "save_mask": OptionInfo(False, "For inpainting, save a copy of the greyscale mask"),
            "save_mask_composite": OptionInfo(False, "For inpainting, save a masked composite"),
            "jpeg_quality": OptionInfo(80, "Quality for saved jpeg and avif images"),
            "webp_lossless": OptionInfo(False, "Use lossless compression for webp images"),
            "export_for_4chan": OptionInfo(True, "Save copy of large images as JPG"),
            "img_downscale_threshold": OptionInfo(4.0, "File size limit for the above option, MB"),
            "target_side_length": OptionInfo(4000, "Width/height limit for the above option, in pixels"),
            "img_max_size_mp": OptionInfo(200, "Maximum image size"),
            "use_original_name_batch": OptionInfo(True, "Use original name for output filename during batch process"),
            "use_upscaler_name_as_suffix": OptionInfo(False, "Use upscaler name as filename suffix in the extras tab"),
            "save_selected_only": OptionInfo(True, "When using 'Save' button, only save a single selected image"),
            "save_write_log_csv": OptionInfo(True, "Write log.csv when saving images using 'Save' button"),
            "save_init_img": OptionInfo(False, "Save init images when using img2img"),
            "temp_dir": OptionInfo("", "Directory for temporary images; leave empty for default"),
            "clean_temp_dir_at_start": OptionInfo(False, "Cleanup non-default temporary directory when starting webui"),
            "save_incomplete_images": OptionInfo(False, "Save incomplete images"),
            "notification_audio": OptionInfo(True, "Play notification sound after image generation"),
            "notification_volume": OptionInfo(100, "Notification sound volume"),
        },
    )
)

options_templates.update(
    options_section(
        ("saving-paths", "Paths for saving", "saving"),
        {
            "outdir_samples": OptionInfo(
                "",
                "Output directory for images; if empty, defaults to three directories below",
                component_args=hide_dirs,
            ),
            "outdir_txt2img_samples": OptionInfo(
                os.path.join(default_output_dir, "txt2img-images"),
                "Output directory for txt2img images",
                component_args=hide_dirs,
            ),
            "outdir_img2img_samples": OptionInfo(
                os.path.join(default_output_dir, "img2img-images"),
                "Output directory for img2img images",
                component_args=hide_dirs,
            ),
            "outdir_extras_samples": OptionInfo(
                os.path.join(default_output_dir, "extras-images"),
                "Output directory for images from extras tab",
                component_args=hide_dirs,
            ),
            "outdir_grids": OptionInfo(
                "", "Output directory for grids; if empty, defaults to two directories below", component_args=hide_dirs
            ),
            "outdir_txt2img_grids": OptionInfo(
                os.path.join(default_output_dir, "txt2img-grids"),
                "Output directory for txt2img grids",
                component_args=hide_dirs,
            ),
            "outdir_img2img_grids": OptionInfo(
                os.path.join(default_output_dir, "img2img-grids"),
                "Output directory for img2img grids",
                component_args=hide_dirs,
            ),
            "outdir_save": OptionInfo(
                os.path.join(paths_internal.data_path, "log", "images"),
                "Directory for saving images using the Save button",
                component_args=hide_dirs,
            ),
            "outdir_init_images": OptionInfo(
                os.path.join(default_output_dir, "init-images"),
                "Directory for saving init images when using img2img",
                component_args=hide_dirs,
            ),
        },
    )
)

options_templates.update(
    options_section(
        ("saving-to-dirs", "Saving to a directory", "saving"),
        {
            "save_to_dirs": OptionInfo(True, "Save images to a subdirectory"),
            "grid_save_to_dirs": OptionInfo(True, "Save grids to a subdirectory"),
            "use_save_to_dirs_for_ui": OptionInfo(False, 'When using "Save" button, save images to a subdirectory'),
            "directories_filename_pattern": OptionInfo("[date]", "Directory name pattern", component_args=hide_dirs),
            "directories_max_prompt_words": OptionInfo(8, "Max prompt words for [prompt_words] pattern"),
        },
    )
)

options_templates.update(
    options_section(
        ("face-restoration", "Face restoration", "postprocessing"),
        {
            "face_restoration": OptionInfo(False, "Restore faces", infotext="Face restoration"),
            "face_restoration_model": OptionInfo("CodeFormer", "Face restoration model"),
            "code_former_weight": OptionInfo(0.5, "CodeFormer weight"),
            "face_restoration_unload": OptionInfo(
                False, "Move face restoration model from VRAM into RAM after processing"
            ),
        },
    )
)

options_templates.update(
    options_section(
        ("sd", "Stable Diffusion", "sd"),
        {
            "sd_model_checkpoint": OptionInfo(None, "Stable Diffusion checkpoint", refresh=None, infotext="Model hash"),
            "sd_checkpoints_limit": OptionInfo(1, "Maximum number of checkpoints loaded at the same time"),
            "sd_checkpoints_keep_in_cpu": OptionInfo(True, "Only keep one model on device"),
            "sd_checkpoint_cache": OptionInfo(0, "Checkpoints to cache in RAM"),
            "sd_unet": OptionInfo("Automatic", "SD Unet", infotext="SD UNet"),
            "enable_quantization": OptionInfo(
                False, "Enable quantization in K samplers for sharper and cleaner results."
            ),
            "emphasis": OptionInfo("Original", "Emphasis mode", infotext="Emphasis"),
            "enable_batch_seeds": OptionInfo(
                True, "Make K-diffusion samplers produce same images in a batch as for a single"
            ),
            "comma_padding_backtrack": OptionInfo(20, "Prompt word wrap length limit"),
            "sdxl_clip_l_skip": OptionInfo(False, "Clip skip SDXL", infotext="Clip skip SDXL"),
            "CLIP_stop_at_last_layers": OptionInfo(1, "Clip skip", infotext="Clip skip"),
            "upcast_attn": OptionInfo(False, "Upcast cross attention layer to float32"),
            "randn_source": OptionInfo("GPU", "Random number generator source.", infotext="RNG"),
            "tiling": OptionInfo(False, "Tiling", infotext="Tiling"),
            "hires_fix_refiner_pass": OptionInfo(
                "second pass", "Hires fix: which pass to enable refiner for", infotext="Hires refiner"
            ),
        },
    )
)

options_templates.update(
    options_section(
        ("sdxl", "Stable Diffusion XL", "sd"),
        {
            "sdxl_crop_top": OptionInfo(0, "crop top coordinate"),
            "sdxl_crop_left": OptionInfo(0, "crop left coordinate"),
            "sdxl_refiner_low_aesthetic_score": OptionInfo(2.5, "SDXL low aesthetic score"),
            "sdxl_refiner_high_aesthetic_score": OptionInfo(6.0, "SDXL high aesthetic score"),
        },
    )
)

options_templates.update(
    options_section(
        ("vae", "VAE", "sd"),
        {
            "sd_vae": OptionInfo("Automatic", "SD VAE", infotext="VAE"),
            "sd_vae_overrides_per_model_preferences": OptionInfo(True, "Selected VAE overrides per-model preferences"),
            "auto_vae_precision_bfloat16": OptionInfo(False, "Automatically convert VAE to bfloat16"),
            "auto_vae_precision": OptionInfo(True, "Automatically revert VAE to 32-bit floats"),
            "sd_vae_encode_method": OptionInfo("Full", "VAE type for encode", infotext="VAE Encoder"),
            "sd_vae_decode_method": OptionInfo("Full", "VAE type for decode", infotext="VAE Decoder"),
        },
    )
)

options_templates.update(
    options_section(
        ("img2img", "img2img", "sd"),
        {
            "inpainting_mask_weight": OptionInfo(
                1.0, "Inpainting conditioning mask strength", infotext="Conditional mask weight"
            ),
            "initial_noise_multiplier": OptionInfo(1.0, "Noise multiplier for img2img", infotext="Noise multiplier"),
            "img2img_extra_noise": OptionInfo(
                0.0, "Extra noise multiplier for img2img and hires fix", infotext="Extra noise"
            ),
            "img2img_color_correction": OptionInfo(
                False, "Apply color correction to img2img results to match original"
            ),
            "img2img_fix_steps": OptionInfo(
                False, "With img2img, do exactly the amount of steps the slider specifies."
            ),
            "img2img_background_color": OptionInfo(
                "#ffffff", "With img2img, fill transparent parts of the input image"
            ),
            "return_mask": OptionInfo(False, "For inpainting, include the greyscale mask in results for web"),
            "return_mask_composite": OptionInfo(False, "For inpainting, include masked composite in results for web"),
            "overlay_inpaint": OptionInfo(True, "Overlay original for inpaint"),
        },
    )
)

options_templates.update(
    options_section(
        ("optimizations", "Optimizations", "sd"),
        {
            "cross_attention_optimization": OptionInfo("Automatic", "Cross attention optimization"),
            "s_min_uncond": OptionInfo(0.0, "Negative Guidance minimum sigma", infotext="NGMS"),
            "s_min_uncond_all": OptionInfo(
                False, "Negative Guidance minimum sigma all steps", infotext="NGMS all steps"
            ),
            "token_merging_ratio": OptionInfo(0.0, "Token merging ratio", infotext="Token merging ratio"),
            "token_merging_ratio_img2img": OptionInfo(0.0, "Token merging ratio for img2img"),
            "token_merging_ratio_hr": OptionInfo(
                0.0, "Token merging ratio for high-res pass", infotext="Token merging ratio hr"
            ),
            "pad_cond_uncond": OptionInfo(False, "Pad prompt/negative prompt", infotext="Pad conds"),
            "pad_cond_uncond_v0": OptionInfo(False, "Pad prompt/negative prompt (v0)", infotext="Pad conds v0"),
            "persistent_cond_cache": OptionInfo(True, "Persistent cond cache"),
            "batch_cond_uncond": OptionInfo(True, "Batch cond/uncond"),
            "fp8_storage": OptionInfo("Disable", "FP8 weight"),
            "cache_fp16_weight": OptionInfo(False, "Cache FP16 weight for LoRA"),
        },
    )
)

options_templates.update(
    options_section(
        ("compatibility", "Compatibility", "sd"),
        {
            "auto_backcompat": OptionInfo(True, "Automatic backward compatibility"),
            "use_old_emphasis_implementation": OptionInfo(False, "Use old emphasis implementation."),
            "use_old_karras_scheduler_sigmas": OptionInfo(False, "Use old karras scheduler sigmas (0.1 to 10)."),
            "no_dpmpp_sde_batch_determinism": OptionInfo(
                False, "Do not make DPM++ SDE deterministic across batch sizes."
            ),
            "use_old_hires_fix_width_height": OptionInfo(False, "For hires fix, use width/height sliders as target."),
            "hires_fix_use_firstpass_conds": OptionInfo(False, "For hires fix, calculate conds of second pass early."),
            "use_old_scheduling": OptionInfo(
                False, "Use old prompt editing timelines.", infotext="Old prompt editing timelines"
            ),
            "use_downcasted_alpha_bar": OptionInfo(
                False, "Downcast model alphas_cumprod to fp16.", infotext="Downcast alphas_cumprod"
            ),
            "refiner_switch_by_sample_steps": OptionInfo(
                False, "Switch to refiner by sampling steps.", infotext="Refiner switch by sampling steps"
            ),
        },
    )
)

options_templates.update(
    options_section(
        ("extra_networks", "Extra Networks", "sd"),
        {
            "extra_networks_default_multiplier": OptionInfo(1.0, "Default multiplier for extra networks"),
            "sd_hypernetwork": OptionInfo("None", "Add hypernetwork to prompt"),
            "textual_inversion_print_at_load": OptionInfo(False, "Print a list of Textual Inversion embeddings"),
            "textual_inversion_add_hashes_to_infotext": OptionInfo(True, "Add Textual Inversion hashes to infotext"),
        },
    )
)

options_templates.update(
    options_section(
        ("infotext", "Infotext", "ui"),
        {
            "add_model_hash_to_info": OptionInfo(True, "Add model hash to infotext"),
            "add_model_name_to_info": OptionInfo(True, "Add model name to infotext"),
            "add_user_name_to_info": OptionInfo(False, "Add user name to infotext when authenticated"),
            "add_version_to_infotext": OptionInfo(True, "Add program version to infotext"),
            "add_vae_name_to_info": OptionInfo(True, "Add VAE name to infotext"),
            "add_vae_hash_to_info": OptionInfo(True, "Add VAE hash to infotext"),
            "disable_weights_auto_swap": OptionInfo(True, "Disregard checkpoint information from pasted infotext"),
            "infotext_skip_pasting": OptionInfo([], "Disregard fields from pasted infotext"),
            "infotext_styles": OptionInfo("Apply if any", "Infer styles from prompts of pasted infotext"),
            "enable_pnginfo": OptionInfo(True, "Write infotext to metadata of the generated image"),
            "save_txt": OptionInfo(False, "Create a text file with infotext next to every generated image"),
        },
    )
)

options_templates.update(
    options_section(
        ("ui", "User interface", "ui"),
        {
            "send_seed": OptionInfo(True, "Send seed when sending prompt or image to other interface"),
            "send_size": OptionInfo(True, "Send size when sending prompt or image to another interface"),
        },
    )
)

options_templates.update(
    options_section(
        ("ui", "Live previews", "ui"),
        {
            "show_progressbar": OptionInfo(True, "Show progressbar"),
            "live_previews_enable": OptionInfo(True, "Show live previews of the created image"),
            "live_previews_image_format": OptionInfo("png", "Live preview file format"),
            "show_progress_grid": OptionInfo(True, "Show previews of all images generated in a batch as a grid"),
            "show_progress_every_n_steps": OptionInfo(10, "Live preview display period"),
            "show_progress_type": OptionInfo("Approx NN", "Live preview method"),
            "live_preview_allow_lowvram_full": OptionInfo(False, "Allow Full live preview method with lowvram/medvram"),
            "live_preview_content": OptionInfo("Prompt", "Live preview subject"),
            "live_preview_refresh_period": OptionInfo(1000, "Progressbar and preview update period"),
            "live_preview_fast_interrupt": OptionInfo(
                False, "Return image with chosen live preview method on interrupt"
            ),
            "js_live_preview_in_modal_lightbox": OptionInfo(False, "Show Live preview in full page image viewer"),
            "do_not_show_images": OptionInfo(False, "Do not show any images in gallery"),
            "return_grid": OptionInfo(True, "Show grid in gallery"),
        },
    )
)

options_templates.update(
    options_section(
        ("sampler-params", "Sampler parameters", "sd"),
        {
            "hide_samplers": OptionInfo([], "Hide samplers in user interface"),
            "eta_ddim": OptionInfo(0.0, "Eta for DDIM", infotext="Eta DDIM"),
            "eta_ancestral": OptionInfo(1.0, "Eta for k-diffusion samplers", infotext="Eta"),
            "ddim_discretize": OptionInfo("uniform", "img2img DDIM discretize"),
            "s_churn": OptionInfo(0.0, "sigma churn", infotext="Sigma churn"),
            "s_tmin": OptionInfo(0.0, "sigma tmin", infotext="Sigma tmin"),
            "s_tmax": OptionInfo(0.0, "sigma tmax", infotext="Sigma tmax"),
            "s_noise": OptionInfo(1.0, "sigma noise", infotext="Sigma noise"),
            "sigma_min": OptionInfo(0.0, "sigma min", infotext="Schedule min sigma"),
            "sigma_max": OptionInfo(0.0, "sigma max", infotext="Schedule max sigma"),
            "rho": OptionInfo(0.0, "rho", infotext="Schedule rho"),
            "eta_noise_seed_delta": OptionInfo(0, "Eta noise seed delta", infotext="ENSD"),
            "always_discard_next_to_last_sigma": OptionInfo(
                False, "Always discard next-to-last sigma", infotext="Discard penultimate sigma"
            ),
            "sgm_noise_multiplier": OptionInfo(False, "SGM noise multiplier", infotext="SGM noise multiplier"),
            "uni_pc_variant": OptionInfo("bh1", "UniPC variant", infotext="UniPC variant"),
            "uni_pc_skip_type": OptionInfo("time_uniform", "UniPC skip type", infotext="UniPC skip type"),
            "uni_pc_order": OptionInfo(3, "UniPC order", infotext="UniPC order"),
            "uni_pc_lower_order_final": OptionInfo(True, "UniPC lower order final", infotext="UniPC lower order final"),
            "sd_noise_schedule": OptionInfo("Default", "Noise schedule for sampling", infotext="Noise Schedule"),
            "skip_early_cond": OptionInfo(
                0.0, "Ignore negative prompt during early sampling", infotext="Skip Early CFG"
            ),
            "beta_dist_alpha": OptionInfo(0.6, "Beta scheduler - alpha", infotext="Beta scheduler alpha"),
            "beta_dist_beta": OptionInfo(0.6, "Beta scheduler - beta", infotext="Beta scheduler beta"),
        },
    )
)
