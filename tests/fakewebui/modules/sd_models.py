"""Mirror of modules/sd_models.py, reduced: checkpoint info, `model_data`, and `load_model` for the fixture's tiny
checkpoints. `CheckpointInfo` here carries a `builder` (not in the webui) that creates the raw model, in place of
reading a file; everything after that follows load_model's order: model type flags, hijack of the text encoders,
`model_data.set_sd_model`, `on_model_loaded` callbacks, then `cond_stage_model_empty_prompt`. As in the webui,
reading `shared.sd_model` before any model was loaded loads the default checkpoint."""

import hashlib
import os
import sys
import threading

import torch
from modules import devices, errors, paths, script_callbacks, sd_hijack, sd_hijack_unet, sd_models_xl, shared

model_dir = "Stable-diffusion"
model_path = os.path.abspath(os.path.join(paths.models_path, model_dir))

checkpoints_list = {}
checkpoint_aliases = {}
checkpoint_alisases = checkpoint_aliases  # for compatibility with old name
checkpoints_loaded = {}


class CheckpointInfo:
    def __init__(self, filename, builder=None, sha256=None):
        self.filename = filename
        self.builder = builder
        name = os.path.basename(filename)
        self.name = name
        self.name_for_extra = os.path.splitext(name)[0]
        self.model_name = os.path.splitext(name.replace("/", "_").replace("\\", "_"))[0]
        self.hash = None
        # the real one hashes the file's contents; the fake's checkpoints have no file
        self.sha256 = sha256 or hashlib.sha256(name.encode("utf8")).hexdigest()
        self.shorthash = self.sha256[0:10]
        self.title = f"{name} [{self.shorthash}]"
        self.short_title = f"{self.name_for_extra} [{self.shorthash}]"
        self.ids = [
            self.hash,
            self.model_name,
            self.title,
            name,
            self.name_for_extra,
            f"{name} [{self.hash}]",
            self.shorthash,
            self.sha256,
            f"{self.name} [{self.sha256}]",
        ]
        self.metadata = {}
        self.is_safetensors = os.path.splitext(filename)[1].lower() == ".safetensors"

    def register(self):
        checkpoints_list[self.title] = self
        for id in self.ids:
            if id is not None:
                checkpoint_aliases[id] = self

    def calculate_shorthash(self):
        return self.shorthash


def list_models():
    return list(checkpoints_list)


def get_closet_checkpoint_match(search_string):
    if not search_string:
        return None

    checkpoint_info = checkpoint_aliases.get(search_string)
    if checkpoint_info is not None:
        return checkpoint_info

    found = sorted(
        [info for info in checkpoints_list.values() if search_string in info.title], key=lambda x: len(x.title)
    )
    if found:
        return found[0]

    return None


def select_checkpoint():
    """Returns the checkpoint selected in settings, or the first one"""
    checkpoint_info = checkpoint_aliases.get(shared.opts.sd_model_checkpoint)
    if checkpoint_info is not None:
        return checkpoint_info
    return next(iter(checkpoints_list.values()), None)


class ModelData:
    def __init__(self):
        self.sd_model = None
        self.loaded_sd_models = []
        self.was_loaded_at_least_once = False
        self.lock = threading.Lock()

    def get_sd_model(self):
        if self.was_loaded_at_least_once:
            return self.sd_model

        if self.sd_model is None:
            with self.lock:
                if self.sd_model is not None or self.was_loaded_at_least_once:
                    return self.sd_model

                try:
                    load_model()

                except Exception as e:
                    errors.display(e, "loading stable diffusion model", full_traceback=True)
                    print("", file=sys.stderr)
                    print("Stable diffusion model failed to load", file=sys.stderr)
                    self.sd_model = None

        return self.sd_model

    def set_sd_model(self, v, already_loaded=False):
        self.sd_model = v

        try:
            self.loaded_sd_models.remove(v)
        except ValueError:
            pass

        if v is not None:
            self.loaded_sd_models.insert(0, v)


model_data = ModelData()


def set_model_type(model, state_dict=None):
    model.is_sd1 = False
    model.is_sd2 = False
    model.is_sdxl = False
    model.is_ssd = False
    model.is_sd3 = False

    if hasattr(model, "conditioner"):
        model.is_sdxl = True
    elif type(model.cond_stage_model).__name__ == "FrozenOpenCLIPEmbedder":
        model.is_sd2 = True
    else:
        model.is_sd1 = True


def set_model_fields(model):
    if not hasattr(model, "latent_channels"):
        model.latent_channels = 4


def get_empty_cond(sd_model):
    from modules import extra_networks, processing

    p = processing.StableDiffusionProcessingTxt2Img()
    extra_networks.activate(p, {})

    if hasattr(sd_model, "get_learned_conditioning"):
        d = sd_model.get_learned_conditioning([""])
    else:
        d = sd_model.cond_stage_model([""])

    if isinstance(d, dict):
        d = d["crossattn"]

    return d


def load_model(checkpoint_info=None, already_loaded_state_dict=None):
    checkpoint_info = checkpoint_info or select_checkpoint()

    sd_model = checkpoint_info.builder()
    sd_model.used_config = None
    sd_model.is_sdxl_inpaint = False
    set_model_type(sd_model)
    set_model_fields(sd_model)

    if sd_model.is_sdxl:
        sd_models_xl.extend_sdxl(sd_model)

    sd_model.sd_model_hash = checkpoint_info.calculate_shorthash()
    sd_model.sd_model_checkpoint = checkpoint_info.filename
    sd_model.sd_checkpoint_info = checkpoint_info
    shared.opts.data["sd_checkpoint_hash"] = checkpoint_info.sha256
    shared.opts.data["sd_model_checkpoint"] = checkpoint_info.title

    sd_model.to(devices.device)
    sd_model.lowvram = False

    sd_hijack.model_hijack.hijack(sd_model)
    sd_hijack_unet.apply()
    first_encoder = sd_model.conditioner.embedders[0] if sd_model.is_sdxl else sd_model.cond_stage_model
    sd_model.watch_text_encoder(first_encoder)

    sd_model.eval()
    model_data.set_sd_model(sd_model)
    model_data.was_loaded_at_least_once = True

    sd_hijack.model_hijack.embedding_db.load_textual_inversion_embeddings(force_reload=True)

    script_callbacks.model_loaded_callback(sd_model)

    with devices.autocast(), torch.no_grad():
        sd_model.cond_stage_model_empty_prompt = get_empty_cond(sd_model)

    # not in the webui: the empty-prompt encode at load does not count as a generation's encode
    sd_model.text_encoder_calls = 0
    sd_model.encoded_texts.clear()

    return sd_model


def reload_model_weights(sd_model=None, info=None, forced_reload=False):
    """the fake has one model loaded for the whole session: nothing to reload"""
    return sd_model or model_data.sd_model


def unload_model_weights(sd_model=None, info=None):
    return sd_model or model_data.sd_model


def apply_token_merging(sd_model, token_merging_ratio):
    """Token merging (tomesd) is not available in the fake; ratio 0 (the default) is what the webui does then."""


def apply_alpha_schedule_override(sd_model, p=None):
    pass


class SkipWritingToConfig:
    skip = False

    def __enter__(self):
        self.previous = SkipWritingToConfig.skip
        SkipWritingToConfig.skip = True
        return self

    def __exit__(self, exc_type, exc_value, exc_traceback):
        SkipWritingToConfig.skip = self.previous
