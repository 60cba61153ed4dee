"""Test double of webui v1.10.1 `modules/sd_models.py`: checkpoint records and aliases, `model_data` (the loaded
model behind `shared.sd_model`), and `load_model` in the webui's order — model type flags, SDXL extensions, the
text-encoder hijack, `model_data` set, textual-inversion embeddings, `on_model_loaded` callbacks, then the encoded
empty prompt. There are no checkpoint files: a `CheckpointInfo` here carries a `builder` (not in the webui) that
makes the tiny model. As in the webui, reading `shared.sd_model` before any load loads the selected checkpoint."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any

import torch
from modules import devices, errors, paths, script_callbacks, sd_hijack, sd_hijack_unet, sd_models_xl, shared

log = logging.getLogger(__name__)

model_dir = "Stable-diffusion"
model_path = os.path.abspath(os.path.join(paths.models_path, model_dir))

checkpoints_list = {}  # title → CheckpointInfo
checkpoint_aliases = {}  # every name a checkpoint may be asked for by → CheckpointInfo
checkpoint_alisases = checkpoint_aliases  # the webui keeps its old misspelt name too
checkpoints_loaded = {}


class CheckpointInfo:
    """A checkpoint's names. The webui hashes the file; the fake hashes the file name (or takes `sha256`)."""

    def __init__(self, filename, builder=None, sha256=None):
        self.filename, self.builder = filename, builder
        self.name = os.path.basename(filename)
        stem = os.path.splitext(self.name)[0]
        self.name_for_extra = stem
        self.model_name = os.path.splitext(self.name.replace("/", "_").replace("\\", "_"))[0]
        self.is_safetensors = filename.lower().endswith(".safetensors")
        self.hash = None  # the old-style short hash the webui computes lazily; never here
        self.sha256 = sha256 or hashlib.sha256(self.name.encode("utf8")).hexdigest()
        self.shorthash = self.sha256[:10]
        self.title = f"{self.name} [{self.shorthash}]"
        self.short_title = f"{stem} [{self.shorthash}]"
        self.metadata = {}
        self.ids = [self.model_name, self.title, self.name, stem, self.shorthash, self.sha256]
        self.ids.append(f"{self.name} [{self.sha256}]")

    def register(self):
        checkpoints_list[self.title] = self
        checkpoint_aliases.update({alias: self for alias in self.ids if alias is not None})

    def calculate_shorthash(self):
        return self.shorthash


def list_models():
    return list(checkpoints_list)


def get_closet_checkpoint_match(search_string):
    """The checkpoint an alias names, else the one with the shortest title containing the text, else None."""
    if not search_string:
        return None
    if search_string in checkpoint_aliases:
        return checkpoint_aliases[search_string]
    containing = [info for info in checkpoints_list.values() if search_string in info.title]
    return min(containing, key=lambda info: len(info.title), default=None)


def select_checkpoint():
    """The checkpoint chosen in settings, else the first registered one."""
    chosen = checkpoint_aliases.get(shared.opts.sd_model_checkpoint)
    return chosen if chosen is not None else next(iter(checkpoints_list.values()), None)


@dataclass(eq=False)
class ModelData:
    """Holds the loaded model. `get_sd_model` loads the selected checkpoint on first use, once, as the webui does
    when something reads `shared.sd_model` before startup has loaded one."""

    sd_model: Any = None
    loaded_sd_models: list = field(default_factory=list)  # most recently set first
    was_loaded_at_least_once: bool = False
    lock: Any = field(default_factory=threading.Lock)

    def get_sd_model(self):
        if self.sd_model is not None or self.was_loaded_at_least_once:
            return self.sd_model
        with self.lock:
            if self.sd_model is None and not self.was_loaded_at_least_once:
                try:
                    load_model()
                except Exception as e:  # the webui reports a failed load and goes on without a model
                    errors.display(e, "loading stable diffusion model", full_traceback=True)
                    log.error("Stable diffusion model failed to load")
                    self.sd_model = None
        return self.sd_model

    def set_sd_model(self, v, already_loaded=False):
        self.sd_model = v
        self.loaded_sd_models = [m for m in self.loaded_sd_models if m is not v]
        if v is not None:
            self.loaded_sd_models.insert(0, v)


model_data = ModelData()


def set_model_type(model, state_dict=None):
    """is_sdxl for sgm models (a conditioner), is_sd2 for an OpenCLIP text encoder, is_sd1 otherwise."""
    sdxl = hasattr(model, "conditioner")
    sd2 = not sdxl and type(model.cond_stage_model).__name__ == "FrozenOpenCLIPEmbedder"
    model.is_sdxl, model.is_sd2, model.is_sd1 = sdxl, sd2, not (sdxl or sd2)
    model.is_ssd = model.is_sd3 = False


def set_model_fields(model):
    if not hasattr(model, "latent_channels"):
        model.latent_channels = 4


def get_empty_cond(sd_model):
    """The encoded empty prompt (crossattn only), which CFG padding appends to short conds."""
    encoded = sd_model.get_learned_conditioning([""])
    return encoded["crossattn"] if isinstance(encoded, dict) else encoded


def load_model(checkpoint_info=None, already_loaded_state_dict=None):
    info = checkpoint_info or select_checkpoint()
    model = info.builder()
    model.used_config, model.is_sdxl_inpaint = None, False
    set_model_type(model)
    set_model_fields(model)
    if model.is_sdxl:
        sd_models_xl.extend_sdxl(model)

    model.sd_model_hash = info.calculate_shorthash()
    model.sd_model_checkpoint, model.sd_checkpoint_info = info.filename, info
    shared.opts.data.update(sd_checkpoint_hash=info.sha256, sd_model_checkpoint=info.title)
    model.to(devices.device)
    model.lowvram = False

    sd_hijack.model_hijack.hijack(model)
    sd_hijack_unet.apply()
    # not in the webui: count the first text encoder's calls (after the hijack, so its wrapper is what is counted)
    model.watch_text_encoder(model.conditioner.embedders[0] if model.is_sdxl else model.cond_stage_model)
    model.eval()
    model_data.set_sd_model(model)
    model_data.was_loaded_at_least_once = True

    sd_hijack.model_hijack.embedding_db.load_textual_inversion_embeddings(force_reload=True)
    script_callbacks.model_loaded_callback(model)
    with devices.autocast(), torch.no_grad():
        model.cond_stage_model_empty_prompt = get_empty_cond(model)

    # not in the webui: the load-time encode of "" is not a generation's encode
    model.text_encoder_calls = 0
    model.encoded_texts.clear()
    return model


def reload_model_weights(sd_model=None, info=None, forced_reload=False):
    """One model per session in the fake: nothing is reloaded."""
    return sd_model or model_data.sd_model


def unload_model_weights(sd_model=None, info=None):
    return sd_model or model_data.sd_model


def apply_token_merging(sd_model, token_merging_ratio):
    """No token merging in the fake (ratio 0, the default, does nothing in the webui either)."""


def apply_alpha_schedule_override(sd_model, p=None):
    """The zero-terminal-SNR override (a setting, off by default) is not modelled."""


class SkipWritingToConfig:
    """While active, a checkpoint change does not write `sd_model_checkpoint` to the settings."""

    skip = False

    def __enter__(self):
        self.previous, SkipWritingToConfig.skip = SkipWritingToConfig.skip, True
        return self

    def __exit__(self, exc_type, exc_value, exc_traceback):
        SkipWritingToConfig.skip = self.previous
