"""Test double of webui v1.10.1 `modules/processing.py`: the processing objects, `Processed`, `process_images`.

What the extension relies on is kept: the fields of `StableDiffusionProcessing` (txt2img with a latent hires pass
flagged `is_hr_pass`, img2img sampled for `int(denoising_strength * steps) + 1` steps), the order in which the
`ScriptRunner` phases fire, the cond cache, the infotext format, grids, saving and the mask images an inpainting
job returns after each image (a test sets `p.mask_for_overlay`). Inpainting itself, face restoration, colour
correction, refiner/hires checkpoints, non-latent upscalers and token merging are not modelled. As in the webui, an
exception inside the batch loop propagates and `postprocess` never runs."""

from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import dataclass
from typing import Any

import modules.images as images
import modules.shared as shared
import numpy as np
import torch
from modules import (
    devices,
    errors,
    extra_networks,
    infotext_utils,
    paths,
    prompt_parser,
    rng,
    scripts,
    sd_models,
    sd_samplers,
    sd_samplers_common,
    sd_unet,
    sd_vae,
)
from modules.sd_hijack import model_hijack
from modules.shared import cmd_opts, opts, state
from PIL import Image

opt_C = 4  # latent channels
opt_f = 8  # pixels per latent cell

VERSION = "v1.10.1"


def program_version() -> str:
    return VERSION


# --- small helpers --------------------------------------------------------------------------------------------------


def txt2img_image_conditioning(sd_model, x, width, height):
    """Plain (non-inpainting) models get a dummy all-zero image conditioning of shape (n, 5, 1, 1)."""
    if sd_model.model.conditioning_key in ("hybrid", "concat"):
        raise NotImplementedError("the fake webui has no inpainting models")
    return torch.zeros((len(x), 5, 1, 1), dtype=x.dtype, device=x.device)


def apply_overlay(image, paste_loc, overlay):
    """(image, image before compositing). Without an overlay (always, here) both are the generated image."""
    if overlay is not None:
        raise NotImplementedError("inpainting overlays are not modelled")
    return image, image.copy()


def get_fixed_seed(seed):
    """-1, None, "" or text that is not a number mean "pick one at random"."""
    if isinstance(seed, str):
        seed = int(seed) if seed.strip().lstrip("-").isdigit() else -1
    if seed is None or seed == -1:
        return random.randrange(4294967294)
    return seed


def fix_seed(p):
    p.seed, p.subseed = get_fixed_seed(p.seed), get_fixed_seed(p.subseed)


def create_random_tensors(
    shape, seeds, subseeds=None, subseed_strength=0.0, seed_resize_from_h=0, seed_resize_from_w=0, p=None
):
    generator = rng.ImageRNG(shape, seeds, subseeds, subseed_strength, seed_resize_from_h, seed_resize_from_w)
    return generator.next()


class DecodedSamples(list):
    """A list of decoded image tensors; `already_decoded` tells process_images not to run the VAE again."""

    already_decoded = True


def decode_latent_batch(model, batch, target_device=None, check_for_nans=False):
    out = DecodedSamples()
    if check_for_nans:
        devices.test_for_nans(batch, "unet")
    for latent in batch:
        decoded = sd_samplers_common.decode_first_stage(model, latent[None])[0]
        if check_for_nans:
            devices.test_for_nans(decoded, "vae")
        out.append(decoded if target_device is None else decoded.to(target_device))
    return out


def _fire(p, phase: str, *args, **kwargs):
    """`p.scripts.<phase>(p, ...)` when the job has a ScriptRunner; returns the last argument (the phase's
    *Args object, when it has one) so its possibly replaced contents can be read back."""
    if p.scripts is not None:
        getattr(p.scripts, phase)(p, *args, **kwargs)
    return args[-1] if args else None


def _drop_cached_conds(cls, *names):
    """Ends a job: its cond cache goes unless opts.persistent_cond_cache keeps it for the next job."""
    if not opts.persistent_cond_cache:
        for name in names:
            setattr(cls, name, [None, None])


def _batch_slice(values, n, size):
    return values[n * size : (n + 1) * size]


def _to_pil(tensor) -> Image.Image:
    array = np.moveaxis(tensor.cpu().numpy(), 0, -1) * 255.0
    return Image.fromarray(array.astype(np.uint8))


# --- the processing objects -----------------------------------------------------------------------------------------


@dataclass(repr=False)
class StableDiffusionProcessing:
    """What one Generate click asks for. Field names and defaults follow v1.10.1; `sd_model` always reads the
    loaded model, `scripts`/`script_args` run `ScriptRunner.setup_scrips` once both are set."""

    sd_model: object = None
    outpath_samples: str | None = None
    outpath_grids: str | None = None
    prompt: str | list[str] = ""
    prompt_for_display: str | None = None
    negative_prompt: str | list[str] = ""
    styles: list[str] | None = None
    seed: int | list[int] = -1
    subseed: int | list[int] = -1
    subseed_strength: float = 0
    seed_resize_from_h: int = -1
    seed_resize_from_w: int = -1
    seed_enable_extras: bool = True
    sampler_name: str | None = None
    scheduler: str | None = None
    batch_size: int = 1
    n_iter: int = 1
    steps: int = 50
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    restore_faces: bool | None = None
    tiling: bool | None = None
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False
    extra_generation_params: dict[str, Any] | None = None
    overlay_images: list | None = None
    eta: float | None = None
    do_not_reload_embeddings: bool = False
    denoising_strength: float | None = None
    ddim_discretize: str | None = None
    s_min_uncond: float | None = None
    s_churn: float | None = None
    s_tmax: float | None = None
    s_tmin: float | None = None
    s_noise: float | None = None
    override_settings: dict[str, Any] | None = None
    override_settings_restore_afterwards: bool = True
    sampler_index: int | None = None
    refiner_checkpoint: str | None = None
    refiner_switch_at: float | None = None
    token_merging_ratio = 0
    token_merging_ratio_hr = 0
    disable_extra_networks: bool = False
    firstpass_image: Image.Image | None = None

    comments: dict | None = None

    # class-wide [key, conds] pairs: the cond cache survives between jobs when opts.persistent_cond_cache is on
    cached_c = [None, None]
    cached_uc = [None, None]

    # attributes that are not constructor arguments: (names, initial value)
    _STATE = (
        ("scripts_value script_args_value sampler paste_to c uc rng color_corrections all_prompts all_negative_prompts "
         "all_seeds all_subseeds main_prompt main_negative_prompt prompts negative_prompts seeds subseeds "
         "extra_network_data user sd_model_name sd_model_hash sd_vae_name sd_vae_hash sampler_noise_scheduler_override "
         "refiner_checkpoint_info", None),
        ("scripts_setup_complete is_using_inpainting_conditioning is_hr_pass is_api", False),
        ("iteration", 0),
        ("step_multiplier", 1),
    )  # fmt: skip

    def __post_init__(self):
        for cls in reversed(type(self).__mro__):
            for names, initial in vars(cls).get("_STATE", ()):
                for name in names.split():
                    self.__dict__[name] = initial
        self.comments = {}
        self.styles = list(self.styles or [])
        self.extra_generation_params = dict(self.extra_generation_params or {})
        self.override_settings = dict(self.override_settings or {})
        if not self.seed_enable_extras:  # the UI's "Extra" seed options are off: no variation, no resize
            self.subseed, self.subseed_strength = -1, 0
            self.seed_resize_from_h = self.seed_resize_from_w = 0

    # -- properties the webui exposes --------------------------------------------------------------------------------

    @property
    def sd_model(self):
        return shared.sd_model

    @sd_model.setter
    def sd_model(self, value):
        """Ignored: the processing object always uses the loaded model."""

    @property
    def scripts(self):
        return self.scripts_value

    @scripts.setter
    def scripts(self, value):
        self.scripts_value = value
        self._setup_scripts_once()

    @property
    def script_args(self):
        return self.script_args_value

    @script_args.setter
    def script_args(self, value):
        self.script_args_value = value
        self._setup_scripts_once()

    def _setup_scripts_once(self):
        if self.scripts_value and self.script_args_value and not self.scripts_setup_complete:
            self.setup_scripts()

    def setup_scripts(self):
        self.scripts_setup_complete = True
        self.scripts.setup_scrips(self, is_ui=not self.is_api)

    # -- per-job setup -----

    def comment(self, text):
        self.comments[text] = 1

    def fill_fields_from_opts(self):
        for name in ("s_min_uncond", "s_churn", "s_tmin", "s_tmax", "s_noise"):
            if getattr(self, name) is None:
                setattr(self, name, getattr(opts, name))
        self.s_tmax = self.s_tmax or float("inf")

    def setup_prompts(self):
        prompts, negatives = self.prompt, self.negative_prompt
        if isinstance(prompts, list) or isinstance(negatives, list):
            count = len(prompts if isinstance(prompts, list) else negatives)
        else:
            count = self.batch_size * self.n_iter
        self.all_prompts = list(prompts) if isinstance(prompts, list) else [prompts] * count
        self.all_negative_prompts = list(negatives) if isinstance(negatives, list) else [negatives] * count
        if len(self.all_prompts) != len(self.all_negative_prompts):
            raise RuntimeError(
                f"{len(self.all_prompts)} prompts but {len(self.all_negative_prompts)} negative prompts were given"
            )
        styles = shared.prompt_styles
        self.all_prompts = [styles.apply_styles_to_prompt(t, self.styles) for t in self.all_prompts]
        self.all_negative_prompts = [
            styles.apply_negative_styles_to_prompt(t, self.styles) for t in self.all_negative_prompts
        ]
        self.main_prompt, self.main_negative_prompt = self.all_prompts[0], self.all_negative_prompts[0]

    def init(self, all_prompts, all_seeds, all_subseeds):
        """Called once per job, before the batch loop."""

    def sample(self, conditioning, unconditional_conditioning, seeds, subseeds, subseed_strength, prompts):
        raise NotImplementedError

    def close(self):
        self.sampler = self.c = self.uc = None
        _drop_cached_conds(StableDiffusionProcessing, "cached_c", "cached_uc")

    def get_token_merging_ratio(self, for_hr=False):
        first = self.token_merging_ratio or opts.token_merging_ratio
        return (self.token_merging_ratio_hr or opts.token_merging_ratio_hr or first) if for_hr else first

    # -- conditioning ------------------------------------------------------------------------------------------------

    def cached_params(self, required_prompts, steps, extra_network_data, hires_steps=None, use_old_scheduling=False):
        """Everything that, when changed, makes a cached cond stale."""
        model = shared.sd_model
        settings = tuple(
            getattr(opts, name, None)
            for name in ("CLIP_stop_at_last_layers", "sdxl_crop_left", "sdxl_crop_top", "emphasis")
        )
        return (list(required_prompts), steps, hires_steps, use_old_scheduling, model.sd_checkpoint_info,
                extra_network_data, self.width, self.height, settings)  # fmt: skip

    def get_conds_with_caching(self, function, required_prompts, steps, caches, extra_network_data, hires_steps=None):
        """`function(sd_model, prompts, steps, hires_steps, use_old_scheduling)`, or a cached result for the same key.
        `caches` are [key, value] lists tried in order; a new result is stored in the first."""
        old_scheduling = opts.use_old_scheduling
        key = self.cached_params(required_prompts, steps, extra_network_data, hires_steps, old_scheduling)
        hit = next((cache for cache in caches if cache[0] is not None and cache[0] == key), None)
        if hit is not None:
            return hit[1]
        with devices.autocast():
            value = function(shared.sd_model, required_prompts, steps, hires_steps, old_scheduling)
        caches[0][:] = [key, value]
        return value

    def _total_steps(self, sampler_name, steps):
        config = sd_samplers.find_sampler_config(sampler_name)
        return config.total_steps(steps) if config else steps

    def setup_conds(self):
        size = {"width": self.width, "height": self.height}
        total = self._total_steps(self.sampler_name, self.steps)
        self.step_multiplier = total // self.steps
        self.firstpass_steps = total
        negatives = prompt_parser.SdConditioning(self.negative_prompts, is_negative_prompt=True, **size)
        positives = prompt_parser.SdConditioning(self.prompts, **size)
        networks = self.extra_network_data
        self.uc = self.get_conds_with_caching(
            prompt_parser.get_learned_conditioning, negatives, total, [self.cached_uc], networks
        )
        self.c = self.get_conds_with_caching(
            prompt_parser.get_multicond_learned_conditioning, positives, total, [self.cached_c], networks
        )

    def get_conds(self):
        return self.c, self.uc

    def parse_extra_network_prompts(self):
        self.prompts, self.extra_network_data = extra_networks.parse_prompts(self.prompts)

    # -- images ------------------------------------------------------------------------------------------------------

    def txt2img_image_conditioning(self, x, width=None, height=None):
        self.is_using_inpainting_conditioning = self.sd_model.model.conditioning_key in ("hybrid", "concat")
        return txt2img_image_conditioning(self.sd_model, x, width or self.width, height or self.height)

    def img2img_image_conditioning(self, source_image, latent_image, image_mask=None, round_image_mask=True):
        if self.sd_model.cond_stage_key == "edit" or self.sampler.conditioning_key != "crossattn":
            raise NotImplementedError("the fake webui has only crossattn models")
        return torch.zeros((len(latent_image), 5, 1, 1), dtype=latent_image.dtype)

    def save_samples(self) -> bool:
        """Whether generated images go to disk: samples_save on, not disabled here, and the job not cut short
        (unless save_incomplete_images)."""
        cut_short = state.interrupted or state.skipped
        return bool(
            opts.samples_save and not self.do_not_save_samples and (opts.save_incomplete_images or not cut_short)
        )


# --- Processed and infotext -----------------------------------------------------------------------------------------

# attributes Processed takes from p unchanged
_FROM_P = (
    "width height sampler_name cfg_scale steps batch_size restore_faces sd_model_name sd_model_hash sd_vae_name "
    "sd_vae_hash seed_resize_from_w seed_resize_from_h denoising_strength extra_generation_params styles "
    "subseed_strength token_merging_ratio token_merging_ratio_hr eta ddim_discretize s_churn s_tmin s_tmax s_noise "
    "s_min_uncond sampler_noise_scheduler_override is_using_inpainting_conditioning"
).split()


def _first(value):
    return value[0] if isinstance(value, list) else value


class Processed:
    """The result of `process_images`: images (grid first when there is one), their infotexts, and the job's
    prompts, seeds and settings."""

    def __init__(
        self,
        p: StableDiffusionProcessing,
        images_list,
        seed=-1,
        info="",
        subseed=None,
        all_prompts=None,
        all_negative_prompts=None,
        all_seeds=None,
        all_subseeds=None,
        index_of_first_image=0,
        infotexts=None,
        comments="",
    ):
        for name in _FROM_P:
            setattr(self, name, getattr(p, name, None))
        self.images = images_list
        self.info = info
        self.comments = "".join(f"{text}\n" for text in p.comments)
        self.image_cfg_scale = getattr(p, "image_cfg_scale", None)
        self.face_restoration_model = _when(p.restore_faces, opts.face_restoration_model)
        self.index_of_first_image, self.version = index_of_first_image, program_version()
        self.job_timestamp, self.clip_skip = state.job_timestamp, opts.CLIP_stop_at_last_layers

        self.prompt = _first(p.prompt)
        self.negative_prompt = _first(p.negative_prompt)
        self.seed = -1 if seed is None else int(_first(seed))
        self.subseed = -1 if subseed is None else int(_first(subseed))
        given = {"prompts": all_prompts, "negative_prompts": all_negative_prompts, "seeds": all_seeds}
        given["subseeds"] = all_subseeds
        for name, value in given.items():  # what was passed, else p's, else the single value
            single = getattr(self, name[:-1])
            setattr(self, f"all_{name}", value or getattr(p, f"all_{name}") or [single])
        self.infotexts = infotexts or [info for _ in images_list]

    def js(self):
        shown = (
            "seed all_seeds subseed all_subseeds subseed_strength width height sampler_name cfg_scale steps "
            "batch_size restore_faces face_restoration_model sd_model_name sd_model_hash sd_vae_name sd_vae_hash "
            "seed_resize_from_w seed_resize_from_h denoising_strength extra_generation_params index_of_first_image "
            "infotexts styles job_timestamp clip_skip is_using_inpainting_conditioning version"
        ).split()
        record = {name: getattr(self, name) for name in shown}
        record |= {"prompt": self.all_prompts[0], "all_prompts": self.all_prompts}
        record |= {"negative_prompt": self.all_negative_prompts[0], "all_negative_prompts": self.all_negative_prompts}
        return json.dumps(record, default=lambda _unserialisable: None)

    def infotext(self, p: StableDiffusionProcessing, index):
        iteration, position = divmod(index, self.batch_size)
        return create_infotext(
            p, self.all_prompts, self.all_seeds, self.all_subseeds, [], iteration=iteration, position_in_batch=position
        )

    def get_token_merging_ratio(self, for_hr=False):
        return self.token_merging_ratio_hr if for_hr else self.token_merging_ratio


def _when(flag, value):
    return value if flag else None


def _standard_params(p, index, use_main_prompt, all_seeds, all_subseeds) -> dict:
    """The infotext's fixed keys, in v1.10.1's order (None: left out)."""
    seed = p.all_seeds[0] if use_main_prompt else all_seeds[index]
    varied = p.subseed_strength != 0
    subseed = (p.all_subseeds[0] if use_main_prompt else all_subseeds[index]) if varied else None
    resized = p.seed_resize_from_w > 0 and p.seed_resize_from_h > 0
    clip_skip = getattr(p, "clip_skip", opts.CLIP_stop_at_last_layers)
    merging = p.get_token_merging_ratio()
    merging_hr = p.get_token_merging_ratio(for_hr=True) if getattr(p, "enable_hr", False) else 0
    return {
        "Steps": p.steps,
        **{"Sampler": p.sampler_name, "Schedule type": p.scheduler, "CFG scale": p.cfg_scale},
        "Image CFG scale": getattr(p, "image_cfg_scale", None),
        "Seed": seed,
        "Face restoration": _when(p.restore_faces, opts.face_restoration_model),
        "Size": "x".join(map(str, (p.width, p.height))),
        "Model hash": _when(opts.add_model_hash_to_info, p.sd_model_hash),
        "Model": _when(opts.add_model_name_to_info, p.sd_model_name),
        "VAE hash": _when(opts.add_vae_hash_to_info, p.sd_vae_hash),
        "VAE": _when(opts.add_vae_name_to_info, p.sd_vae_name),
        "Variation seed": subseed,
        "Variation seed strength": _when(varied, p.subseed_strength),
        "Seed resize from": _when(resized, f"{p.seed_resize_from_w}x{p.seed_resize_from_h}"),
        "Denoising strength": None,  # keeps its place; the value comes with extra_generation_params
        "Clip skip": _when(clip_skip > 1, clip_skip),
        "Token merging ratio": merging or None,
        "Token merging ratio hr": merging_hr or None,
        "Init image hash": getattr(p, "init_img_hash", None),
        "RNG": _when(opts.randn_source != "GPU", opts.randn_source),
        "Tiling": _when(p.tiling, "True"),
    }


def create_infotext(
    p,
    all_prompts,
    all_seeds,
    all_subseeds,
    comments=None,
    iteration=0,
    position_in_batch=0,
    use_main_prompt=False,
    index=None,
    all_negative_prompts=None,
):
    """The text stored with an image: its prompt, "Negative prompt: …" when there is one, then `key: value` pairs —
    the standard ones, then `p.extra_generation_params` (a list value is indexed by the image's index, a callable is
    called with keywords such as p, index, prompt_text, negative_prompt), then Version. None values are left out."""
    if use_main_prompt:
        index = 0
    elif index is None:
        index = iteration * p.batch_size + position_in_batch
    negatives = p.all_negative_prompts if all_negative_prompts is None else all_negative_prompts
    prompt_text = p.main_prompt if use_main_prompt else all_prompts[index]
    negative_prompt = p.main_negative_prompt if use_main_prompt else negatives[index]

    params = _standard_params(p, index, use_main_prompt, all_seeds, all_subseeds)
    params.update(p.extra_generation_params)
    params["Version"] = program_version() if opts.add_version_to_infotext else None
    params["User"] = p.user if opts.add_user_name_to_info else None

    context = {
        "p": p, "index": index, "prompt_text": prompt_text, "negative_prompt": negative_prompt,
        "all_prompts": all_prompts, "all_seeds": all_seeds, "all_subseeds": all_subseeds,
        "all_negative_prompts": negatives, "iteration": iteration, "position_in_batch": position_in_batch,
        "use_main_prompt": use_main_prompt, "comments": comments,
    }  # fmt: skip
    pairs = []
    for key, value in params.items():
        try:
            value = value[index] if isinstance(value, list) else value(**context) if callable(value) else value
        except Exception:  # a broken extension value costs its key, never the infotext
            errors.report(f'Error creating infotext for key "{key}"', exc_info=True)
            value = None
        if value is not None:
            pairs.append(key if key == value else f"{key}: {infotext_utils.quote(value)}")

    lines = [prompt_text]
    if negative_prompt:
        lines.append(f"Negative prompt: {negative_prompt}")
    lines.append(", ".join(pairs))
    return "\n".join(lines).strip()


# --- process_images -------------------------------------------------------------------------------------------------


def process_images(p: StableDiffusionProcessing) -> Processed:
    """`before_process`, then the job with `p.override_settings` applied (restored afterwards unless asked not to)."""
    _fire(p, "before_process")

    overridden = {
        name: opts.data.get(name, opts.get_default(name)) for name in p.override_settings if name in opts.data
    }
    try:
        if sd_models.checkpoint_aliases.get(p.override_settings.get("sd_model_checkpoint")) is None:
            p.override_settings.pop("sd_model_checkpoint", None)
        for name, value in p.override_settings.items():
            opts.set(name, value, is_api=True, run_callbacks=False)
        sd_samplers.fix_p_invalid_sampler_and_scheduler(p)
        return process_images_inner(p)
    finally:
        if p.override_settings_restore_afterwards:
            for name, value in overridden.items():
                setattr(opts, name, value)


def _prepare_job(p: StableDiffusionProcessing) -> None:
    """Fields filled once per job, before `scripts.process`: model names, defaults from settings, prompts, seeds."""
    if isinstance(p.prompt, list):
        assert p.prompt, "an empty prompt list"
    if p.refiner_checkpoint not in (None, "", "None", "none"):
        raise NotImplementedError("the fake webui has no refiner checkpoints")
    seed, subseed = get_fixed_seed(p.seed), get_fixed_seed(p.subseed)
    p.restore_faces = opts.face_restoration if p.restore_faces is None else p.restore_faces
    p.tiling = opts.tiling if p.tiling is None else p.tiling

    model = shared.sd_model
    p.sd_model_name = model.sd_checkpoint_info.name_for_extra
    p.sd_model_hash = model.sd_model_hash
    p.sd_vae_name, p.sd_vae_hash = sd_vae.get_loaded_vae_name(), sd_vae.get_loaded_vae_hash()
    model_hijack.apply_circular(p.tiling)
    model_hijack.clear_comments()

    p.fill_fields_from_opts()
    p.setup_prompts()
    count = len(p.all_prompts)
    # with a variation seed every image shares the main seed and only the subseed moves on
    step = 0 if p.subseed_strength else 1
    p.all_seeds = seed if isinstance(seed, list) else [int(seed) + i * step for i in range(count)]
    p.all_subseeds = subseed if isinstance(subseed, list) else [int(subseed) + i for i in range(count)]

    if os.path.exists(cmd_opts.embeddings_dir) and not p.do_not_reload_embeddings:
        model_hijack.embedding_db.load_textual_inversion_embeddings()


def _write_params_txt(p) -> None:
    os.makedirs(paths.data_path, exist_ok=True)
    with open(os.path.join(paths.data_path, "params.txt"), "w", encoding="utf8") as file:
        file.write(Processed(p, []).infotext(p, 0))


def _sample_batch(p: StableDiffusionProcessing, n: int) -> list | None:
    """One batch from its seeds to decoded image tensors in [0, 1]; None when it has no prompts."""
    size = p.batch_size
    p.prompts, p.negative_prompts = _batch_slice(p.all_prompts, n, size), _batch_slice(p.all_negative_prompts, n, size)
    p.seeds, p.subseeds = _batch_slice(p.all_seeds, n, size), _batch_slice(p.all_subseeds, n, size)
    channels = getattr(shared.sd_model, "latent_channels", opt_C)
    shape = (channels, p.height // opt_f, p.width // opt_f)
    p.rng = rng.ImageRNG(shape, p.seeds, p.subseeds, p.subseed_strength, p.seed_resize_from_h, p.seed_resize_from_w)

    batch_args = {"batch_number": n, "prompts": p.prompts, "seeds": p.seeds, "subseeds": p.subseeds}
    _fire(p, "before_process_batch", **batch_args)
    if not p.prompts:
        return None
    p.parse_extra_network_prompts()
    if not p.disable_extra_networks:
        extra_networks.activate(p, p.extra_network_data)
    _fire(p, "process_batch", **batch_args)

    p.setup_conds()
    p.extra_generation_params.update(model_hijack.extra_generation_params)
    if n == 0 and not cmd_opts.no_prompt_history:
        _write_params_txt(p)  # after process_batch, which may still change the infotext
    for text in model_hijack.comments:
        p.comment(text)
    if p.n_iter > 1:
        state.job = f"Batch {n + 1} out of {p.n_iter}"

    samples = p.sample(
        conditioning=p.c,
        unconditional_conditioning=p.uc,
        seeds=p.seeds,
        subseeds=p.subseeds,
        subseed_strength=p.subseed_strength,
        prompts=p.prompts,
    )
    if p.scripts is not None:
        samples = _fire(p, "post_sample", scripts.PostSampleArgs(samples)).samples
    if not getattr(samples, "already_decoded", False):
        samples = decode_latent_batch(p.sd_model, samples, target_device=devices.cpu, check_for_nans=True)
    decoded = ((torch.stack(list(samples)).float() + 1.0) / 2.0).clamp(0.0, 1.0)
    state.nextjob()

    if p.scripts is None:
        return list(decoded)
    _fire(p, "postprocess_batch", decoded, batch_number=n)
    p.prompts, p.negative_prompts = _batch_slice(p.all_prompts, n, size), _batch_slice(p.all_negative_prompts, n, size)
    return _fire(p, "postprocess_batch_list", scripts.PostprocessBatchListArgs(list(decoded)), batch_number=n).images


def _mask_images(p, i, image, before_overlay, mask, infotext, save) -> list[Image.Image]:
    """The mask (RGB) and the masked composite (RGBA) an inpainting job shows and saves after its image."""
    out = []
    wanted = (
        ("-mask", opts.return_mask, opts.save_mask, lambda: mask.convert("RGB")),
        ("-mask-composite", opts.return_mask_composite, opts.save_mask_composite,
         lambda: Image.composite(before_overlay.convert("RGBA"), Image.new("RGBA", image.size),
                                 mask.convert("L").resize(image.size))),
    )  # fmt: skip
    for suffix, returned, saved, make in wanted:
        if not (returned or saved):
            continue
        extra = make()
        if save and saved:
            images.save_image(
                extra, p.outpath_samples, "", p.seeds[i], p.prompts[i], opts.samples_format,
                info=infotext, p=p, suffix=suffix,
            )  # fmt: skip
        if returned:
            out.append(extra)
    return out


def _finish_images(p, decoded, output_images, infotexts) -> None:
    """Per image: postprocess_image, postprocess_maskoverlay, overlay, postprocess_image_after_composite, saving,
    infotext; then the mask images when the job has a mask."""
    save = p.save_samples()

    def infotext(i):
        return create_infotext(p, p.prompts, p.seeds, p.subseeds, index=i, all_negative_prompts=p.negative_prompts)

    for i, tensor in enumerate(decoded):
        p.batch_index = i
        image = _to_pil(tensor)
        mask, overlay = getattr(p, "mask_for_overlay", None), None
        if p.scripts is not None:
            image = _fire(p, "postprocess_image", scripts.PostprocessImageArgs(image)).image
            masks = _fire(p, "postprocess_maskoverlay", scripts.PostProcessMaskOverlayArgs(i, mask, overlay))
            mask, overlay = masks.mask_for_overlay, masks.overlay_image
        image, before_overlay = apply_overlay(image, p.paste_to, overlay)
        if p.scripts is not None:
            image = _fire(p, "postprocess_image_after_composite", scripts.PostprocessImageArgs(image)).image

        text = infotext(i)
        if save:
            images.save_image(
                image, p.outpath_samples, "", p.seeds[i], p.prompts[i], opts.samples_format, info=text, p=p
            )
        infotexts.append(text)
        if opts.enable_pnginfo:
            image.info["parameters"] = text
        output_images.append(image)
        if mask is not None:
            output_images.extend(_mask_images(p, i, image, before_overlay, mask, text, save))


def _add_grid(p, output_images, infotexts) -> int:
    """Puts the grid of all images first (returns 1) when settings ask for one, and saves it when asked."""
    if len(output_images) < 2 and opts.grid_only_if_multiple:
        return 0
    if p.do_not_save_grid or not (opts.return_grid or opts.grid_save):
        return 0
    grid = images.image_grid(output_images, p.batch_size)
    text = create_infotext(p, p.all_prompts, p.all_seeds, p.all_subseeds, use_main_prompt=True)
    if opts.grid_save:
        images.save_image(
            grid, p.outpath_grids, "grid", p.all_seeds[0], p.all_prompts[0], opts.grid_format, info=text,
            short_filename=not opts.grid_extended_filename, p=p, grid=True,
        )  # fmt: skip
    if not opts.return_grid:
        return 0
    if opts.enable_pnginfo:
        grid.info["parameters"] = text
    output_images.insert(0, grid)
    infotexts.insert(0, text)
    return 1


def process_images_inner(p: StableDiffusionProcessing) -> Processed:
    """The job: `process`, `p.init`, then per batch (`n_iter` of them) before_process_batch, extra networks,
    process_batch, conds, sampling, post_sample, decoding, postprocess_batch(_list) and the per-image phases; then
    the grid, and `postprocess` with the `Processed`. Interrupt stops before the next batch, skip only the current."""
    devices.torch_gc()
    _prepare_job(p)
    _fire(p, "process")

    output_images, infotexts = [], []
    with torch.no_grad(), p.sd_model.ema_scope():
        p.init(p.all_prompts, p.all_seeds, p.all_subseeds)
        sd_unet.apply_unet()
        state.job_count = p.n_iter if state.job_count == -1 else state.job_count

        for batch in range(p.n_iter):
            p.iteration = batch
            state.skipped = False  # a skip ends only the batch it was asked in
            if state.interrupted or state.stopping_generation:
                break
            decoded = _sample_batch(p, batch)
            if decoded is None:
                break
            _finish_images(p, decoded, output_images, infotexts)

        if not infotexts:
            infotexts.append(Processed(p, []).infotext(p, 0))
        p.color_corrections = None
        first = _add_grid(p, output_images, infotexts)

    if p.extra_network_data and not p.disable_extra_networks:
        extra_networks.deactivate(p, p.extra_network_data)

    processed = Processed(
        p,
        images_list=output_images,
        seed=p.all_seeds[0],
        info=infotexts[0],
        subseed=p.all_subseeds[0],
        index_of_first_image=first,
        infotexts=infotexts,
    )
    _fire(p, "postprocess", processed)
    return processed


# --- txt2img --------------------------------------------------------------------------------------------------------


@dataclass(repr=False)
class StableDiffusionProcessingTxt2Img(StableDiffusionProcessing):
    """txt2img; with `enable_hr` a second, img2img-like pass on the latents upscaled by `hr_scale` (or to
    `hr_resize_x`×`hr_resize_y`), during which `is_hr_pass` is True and the hires conds are used."""

    enable_hr: bool = False
    denoising_strength: float = 0.75
    firstphase_width: int = 0
    firstphase_height: int = 0
    hr_scale: float = 2.0
    hr_upscaler: str | None = None
    hr_second_pass_steps: int = 0
    hr_resize_x: int = 0
    hr_resize_y: int = 0
    hr_checkpoint_name: str | None = None
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_prompt: str | list[str] = ""
    hr_negative_prompt: str | list[str] = ""
    force_task_id: str | None = None

    cached_hr_c = [None, None]
    cached_hr_uc = [None, None]

    _STATE = (
        ("hr_checkpoint_info applied_old_hires_behavior_to latent_scale_mode hr_c hr_uc all_hr_prompts "
         "all_hr_negative_prompts hr_prompts hr_negative_prompts hr_extra_network_data", None),
        ("hr_upscale_to_x hr_upscale_to_y truncate_x truncate_y", 0),
    )  # fmt: skip

    def __post_init__(self):
        super().__post_init__()
        if self.firstphase_width or self.firstphase_height:  # old API: width/height meant the final size
            self.hr_upscale_to_x, self.hr_upscale_to_y = self.width, self.height
            self.width, self.height = self.firstphase_width, self.firstphase_height

    def calculate_target_resolution(self):
        """hr_upscale_to_x/y: the first pass size × hr_scale, or hr_resize_x/y (one of them 0: keep the aspect;
        both: cover the box, then crop the overhang through truncate_x/y)."""
        w, h, rx, ry = self.width, self.height, self.hr_resize_x, self.hr_resize_y
        if not rx and not ry:
            self.extra_generation_params["Hires upscale"] = self.hr_scale
            self.hr_upscale_to_x, self.hr_upscale_to_y = int(w * self.hr_scale), int(h * self.hr_scale)
            return
        self.extra_generation_params["Hires resize"] = f"{rx}x{ry}"
        by_width = not ry or (rx and w / h < rx / ry)
        self.hr_upscale_to_x, self.hr_upscale_to_y = (rx, rx * h // w) if by_width else (ry * w // h, ry)
        if rx and ry:
            self.truncate_x = (self.hr_upscale_to_x - rx) // opt_f
            self.truncate_y = (self.hr_upscale_to_y - ry) // opt_f

    def init(self, all_prompts, all_seeds, all_subseeds):
        if not self.enable_hr:
            return
        params = self.extra_generation_params
        params["Denoising strength"] = self.denoising_strength
        if self.hr_checkpoint_name not in (None, "", "Use same checkpoint"):
            raise NotImplementedError("the fake webui has no hires checkpoints")
        if self.hr_sampler_name is not None and self.hr_sampler_name != self.sampler_name:
            params["Hires sampler"] = self.hr_sampler_name
        params["Hires prompt"] = _hires_prompt_if_different
        params["Hires negative prompt"] = _hires_negative_prompt_if_different
        params["Hires schedule type"] = None  # the sampler fills it in when it differs
        if self.hr_scheduler is None:
            self.hr_scheduler = self.scheduler

        upscaler = self.hr_upscaler if self.hr_upscaler is not None else shared.latent_upscale_default_mode
        self.latent_scale_mode = shared.latent_upscale_modes.get(upscaler)
        if self.latent_scale_mode is None:
            raise NotImplementedError(f"only latent upscalers are modelled, not {upscaler!r}")
        self.calculate_target_resolution()

        if not state.processing_has_refined_job_count:  # every batch now has two jobs: the passes
            if state.job_count == -1:
                state.job_count = self.n_iter
            shared.total_tqdm.updateTotal((self.steps + (self.hr_second_pass_steps or self.steps)) * state.job_count)
            state.job_count *= 2
            state.processing_has_refined_job_count = True
        if self.hr_second_pass_steps:
            params["Hires steps"] = self.hr_second_pass_steps
        if self.hr_upscaler is not None:
            params["Hires upscaler"] = self.hr_upscaler

    def sample(self, conditioning, unconditional_conditioning, seeds, subseeds, subseed_strength, prompts):
        if self.firstpass_image is not None:
            raise NotImplementedError("firstpass_image is not modelled")
        self.sampler = sd_samplers.create_sampler(self.sampler_name, self.sd_model)
        noise = self.rng.next()
        _fire(
            self, "process_before_every_sampling", x=noise, noise=noise, c=conditioning, uc=unconditional_conditioning
        )
        conditioning_image = self.txt2img_image_conditioning(noise)
        latents = self.sampler.sample(
            self, noise, conditioning, unconditional_conditioning, image_conditioning=conditioning_image
        )
        if not self.enable_hr:
            return latents
        return self.sample_hr_pass(latents, None, seeds, subseeds, subseed_strength, prompts)

    def _save_before_hires(self, latents, seeds, prompts):
        if not (self.save_samples() and opts.save_images_before_highres_fix):
            return
        for i in range(len(latents)):
            info = create_infotext(
                self, self.all_prompts, self.all_seeds, self.all_subseeds, [],
                iteration=self.iteration, position_in_batch=i,
            )  # fmt: skip
            image = sd_samplers.sample_to_image(latents, i)
            images.save_image(
                image, self.outpath_samples, "", seeds[i], prompts[i], opts.samples_format, info=info, p=self,
                suffix="-before-highres-fix",
            )  # fmt: skip

    def sample_hr_pass(self, samples, decoded_samples, seeds, subseeds, subseed_strength, prompts):
        """The hires pass: upscale the latents, fresh noise from the same seeds, then img2img sampling for
        `hr_second_pass_steps` (or `steps`) with `is_hr_pass` set. Returns decoded images."""
        if state.interrupted:
            return samples
        self.is_hr_pass = True
        self.sampler = sd_samplers.create_sampler(self.hr_sampler_name or self.sampler_name, self.sd_model)
        self._save_before_hires(samples, seeds, prompts)

        mode = self.latent_scale_mode
        size = (self.hr_upscale_to_y // opt_f, self.hr_upscale_to_x // opt_f)
        latents = torch.nn.functional.interpolate(samples, size=size, mode=mode["mode"], antialias=mode["antialias"])
        conditioning_image = self.txt2img_image_conditioning(latents)
        state.nextjob()
        top, left = self.truncate_y // 2, self.truncate_x // 2
        bottom, right = latents.shape[2] - (self.truncate_y + 1) // 2, latents.shape[3] - (self.truncate_x + 1) // 2
        latents = latents[:, :, top:bottom, left:right]

        self.rng = rng.ImageRNG(
            latents.shape[1:], self.seeds, self.subseeds, self.subseed_strength,
            self.seed_resize_from_h, self.seed_resize_from_w,
        )  # fmt: skip
        noise = self.rng.next()
        if not self.disable_extra_networks:
            extra_networks.activate(self, self.hr_extra_network_data)
        self.calculate_hr_conds()
        _fire(self, "before_hr")
        _fire(self, "process_before_every_sampling", x=latents, noise=noise, c=self.hr_c, uc=self.hr_uc)

        steps = self.hr_second_pass_steps or self.steps
        latents = self.sampler.sample_img2img(
            self, latents, noise, self.hr_c, self.hr_uc, steps=steps, image_conditioning=conditioning_image
        )
        self.sampler = None
        decoded = decode_latent_batch(self.sd_model, latents, target_device=devices.cpu, check_for_nans=True)
        self.is_hr_pass = False
        return decoded

    def close(self):
        super().close()
        self.hr_c = self.hr_uc = None
        _drop_cached_conds(StableDiffusionProcessingTxt2Img, "cached_hr_c", "cached_hr_uc")

    def setup_prompts(self):
        super().setup_prompts()
        if not self.enable_hr:
            return
        self.hr_prompt = self.hr_prompt or self.prompt
        self.hr_negative_prompt = self.hr_negative_prompt or self.negative_prompt
        count = self.batch_size * self.n_iter
        styles = shared.prompt_styles

        def per_image(value):
            return list(value) if isinstance(value, list) else [value] * count

        self.all_hr_prompts = [styles.apply_styles_to_prompt(t, self.styles) for t in per_image(self.hr_prompt)]
        self.all_hr_negative_prompts = [
            styles.apply_negative_styles_to_prompt(t, self.styles) for t in per_image(self.hr_negative_prompt)
        ]

    def calculate_hr_conds(self):
        if self.hr_c is not None:
            return
        size = {"width": self.hr_upscale_to_x, "height": self.hr_upscale_to_y}
        hires_total = self._total_steps(
            self.hr_sampler_name or self.sampler_name, self.hr_second_pass_steps or self.steps
        )
        negatives = prompt_parser.SdConditioning(self.hr_negative_prompts, is_negative_prompt=True, **size)
        positives = prompt_parser.SdConditioning(self.hr_prompts, **size)
        first, networks = self.firstpass_steps, self.hr_extra_network_data
        self.hr_uc = self.get_conds_with_caching(
            prompt_parser.get_learned_conditioning, negatives, first,
            [self.cached_hr_uc, self.cached_uc], networks, hires_total,
        )  # fmt: skip
        self.hr_c = self.get_conds_with_caching(
            prompt_parser.get_multicond_learned_conditioning, positives, first,
            [self.cached_hr_c, self.cached_c], networks, hires_total,
        )  # fmt: skip

    def setup_conds(self):
        if self.is_hr_pass:  # called again during the hires pass (refiner): only the hires conds
            self.hr_c = None
            self.calculate_hr_conds()
            return
        super().setup_conds()
        self.hr_c = self.hr_uc = None
        if self.enable_hr and self.hr_checkpoint_info is None and opts.hires_fix_use_firstpass_conds:
            self.calculate_hr_conds()

    def get_conds(self):
        return (self.hr_c, self.hr_uc) if self.is_hr_pass else super().get_conds()

    def parse_extra_network_prompts(self):
        super().parse_extra_network_prompts()
        if self.enable_hr:
            n, size = self.iteration, self.batch_size
            self.hr_negative_prompts = _batch_slice(self.all_hr_negative_prompts, n, size)
            self.hr_prompts, self.hr_extra_network_data = extra_networks.parse_prompts(
                _batch_slice(self.all_hr_prompts, n, size)
            )


def _hires_prompt_if_different(p, index, prompt_text, **_):
    text = p.all_hr_prompts[index]
    return None if text == prompt_text else text


def _hires_negative_prompt_if_different(p, index, negative_prompt, **_):
    text = p.all_hr_negative_prompts[index]
    return None if text == negative_prompt else text


# --- img2img --------------------------------------------------------------------------------------------------------


@dataclass(repr=False)
class StableDiffusionProcessingImg2Img(StableDiffusionProcessing):
    """img2img: the init images encoded to latents, noised to `denoising_strength` and sampled from there. Masks
    (`mask`, inpainting) are not modelled."""

    init_images: list | None = None
    resize_mode: int = 0
    denoising_strength: float = 0.75
    image_cfg_scale: float | None = None
    mask: Any = None
    mask_blur_x: int = 4
    mask_blur_y: int = 4
    mask_blur: int | None = None
    mask_round: bool = True
    inpainting_fill: int = 0
    inpaint_full_res: bool = True
    inpaint_full_res_padding: int = 0
    inpainting_mask_invert: int = 0
    initial_noise_multiplier: float | None = None
    latent_mask: Image.Image | None = None
    force_task_id: str | None = None

    _STATE = (("image_mask nmask image_conditioning init_img_hash mask_for_overlay init_latent", None),)

    def __post_init__(self):
        super().__post_init__()
        self.image_mask, self.mask = self.mask, None
        if isinstance(self.mask_blur, int):
            self.mask_blur_x = self.mask_blur_y = self.mask_blur
        if self.initial_noise_multiplier is None:
            self.initial_noise_multiplier = opts.initial_noise_multiplier

    def _pixels(self, image: Image.Image) -> np.ndarray:
        if opts.save_init_img:
            self.init_img_hash = hashlib.md5(image.tobytes()).hexdigest()
            images.save_image(
                image, path=opts.outdir_init_images, basename=None, forced_filename=self.init_img_hash,
                save_to_dirs=False, existing_info=image.info,
            )  # fmt: skip
        image = images.flatten(image, opts.img2img_background_color)
        if self.resize_mode != 3:  # 3: resize the latents instead
            image = images.resize_image(self.resize_mode, image, self.width, self.height)
        return np.moveaxis(np.asarray(image, dtype=np.float32) / 255.0, -1, 0)

    def init(self, all_prompts, all_seeds, all_subseeds):
        self.extra_generation_params["Denoising strength"] = self.denoising_strength
        if shared.sd_model.cond_stage_key != "edit":
            self.image_cfg_scale = None
        self.sampler = sd_samplers.create_sampler(self.sampler_name, self.sd_model)
        if self.image_mask is not None:
            raise NotImplementedError("inpainting is not modelled")

        arrays = [self._pixels(image) for image in self.init_images]
        if len(arrays) > self.batch_size:
            raise RuntimeError(f"{len(arrays)} init images for a batch of {self.batch_size}; give at most that many")
        if len(arrays) == 1:
            arrays = arrays * self.batch_size
        self.batch_size = len(arrays)
        pixels = torch.from_numpy(np.stack(arrays)).to(shared.device, dtype=devices.dtype_vae)

        if opts.sd_vae_encode_method != "Full":
            self.extra_generation_params["VAE Encoder"] = opts.sd_vae_encode_method
        method = sd_samplers_common.approximation_indexes.get(opts.sd_vae_encode_method)
        self.init_latent = sd_samplers_common.images_tensor_to_samples(pixels, method, self.sd_model)
        if self.resize_mode == 3:
            size = (self.height // opt_f, self.width // opt_f)
            self.init_latent = torch.nn.functional.interpolate(self.init_latent, size=size, mode="bilinear")
        self.image_conditioning = self.img2img_image_conditioning(pixels * 2 - 1, self.init_latent, None)

    def sample(self, conditioning, unconditional_conditioning, seeds, subseeds, subseed_strength, prompts):
        noise = self.rng.next()
        if self.initial_noise_multiplier != 1.0:
            self.extra_generation_params["Noise multiplier"] = self.initial_noise_multiplier
            noise = noise * self.initial_noise_multiplier
        latent = self.init_latent
        _fire(
            self, "process_before_every_sampling", x=latent, noise=noise, c=conditioning, uc=unconditional_conditioning
        )
        return self.sampler.sample_img2img(
            self, self.init_latent, noise, conditioning, unconditional_conditioning,
            image_conditioning=self.image_conditioning,
        )  # fmt: skip

    def get_token_merging_ratio(self, for_hr=False):
        overridden = "token_merging_ratio" in self.override_settings and opts.token_merging_ratio
        return self.token_merging_ratio or overridden or opts.token_merging_ratio_img2img or opts.token_merging_ratio
