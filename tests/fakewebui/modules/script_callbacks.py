"""Mirror of modules/script_callbacks.py: callback registry (`on_*`), parameter classes and firing functions.

Every firing function calls the callbacks in registration order (v1.10.1 also lets the user reorder them in Settings;
not faked), reports and swallows their exceptions; `script_unloaded` and `before_ui` run in reverse order."""

from __future__ import annotations

import dataclasses
import inspect
import os
from typing import Any

from modules import errors, extensions


def report_exception(c, job):
    errors.report(f"Error executing callback {job} for {c.script}", exc_info=True)


class ImageSaveParams:
    def __init__(self, image, p, filename, pnginfo):
        self.image = image
        """the PIL image itself"""

        self.p = p
        """p object with processing parameters; either StableDiffusionProcessing or an object with same fields"""

        self.filename = filename
        """name of file that the image would be saved to"""

        self.pnginfo = pnginfo
        """dictionary with parameters for image's PNG info data; infotext will have the key 'parameters'"""


class ExtraNoiseParams:
    def __init__(self, noise, x, xi):
        self.noise = noise
        self.x = x
        self.xi = xi


class CFGDenoiserParams:
    def __init__(
        self, x, image_cond, sigma, sampling_step, total_sampling_steps, text_cond, text_uncond, denoiser=None
    ):
        self.x = x
        """Latent image representation in the process of being denoised"""

        self.image_cond = image_cond
        """Conditioning image"""

        self.sigma = sigma
        """Current sigma noise step value"""

        self.sampling_step = sampling_step
        """Current Sampling step number"""

        self.total_sampling_steps = total_sampling_steps
        """Total number of sampling steps planned"""

        self.text_cond = text_cond
        """ Encoder hidden states of text conditioning from prompt"""

        self.text_uncond = text_uncond
        """ Encoder hidden states of text conditioning from negative prompt"""

        self.denoiser = denoiser
        """Current CFGDenoiser object with processing parameters"""


class CFGDenoisedParams:
    def __init__(self, x, sampling_step, total_sampling_steps, inner_model):
        self.x = x
        self.sampling_step = sampling_step
        self.total_sampling_steps = total_sampling_steps
        self.inner_model = inner_model


class AfterCFGCallbackParams:
    def __init__(self, x, sampling_step, total_sampling_steps):
        self.x = x
        self.sampling_step = sampling_step
        self.total_sampling_steps = total_sampling_steps


class UiTrainTabParams:
    def __init__(self, txt2img_preview_params):
        self.txt2img_preview_params = txt2img_preview_params


class ImageGridLoopParams:
    def __init__(self, imgs, cols, rows):
        self.imgs = imgs
        self.cols = cols
        self.rows = rows


@dataclasses.dataclass
class BeforeTokenCounterParams:
    prompt: str
    steps: int
    styles: list

    is_positive: bool = True


@dataclasses.dataclass
class ScriptCallback:
    script: str
    callback: Any
    name: str = "unnamed"


def add_callback(callbacks, fun, *, name=None, category="unknown", filename=None):
    if filename is None:
        stack = [x for x in inspect.stack() if x.filename != __file__]
        filename = stack[0].filename if stack else "unknown file"

    extension = extensions.find_extension(filename)
    extension_name = extension.canonical_name if extension else "base"

    callback_name = f"{extension_name}/{os.path.basename(filename)}/{category}"
    if name is not None:
        callback_name += f"/{name}"

    unique_callback_name = callback_name
    for index in range(1000):
        existing = any(x.name == unique_callback_name for x in callbacks)
        if not existing:
            break

        unique_callback_name = f"{callback_name}-{index + 1}"

    callbacks.append(ScriptCallback(filename, fun, unique_callback_name))


def sort_callbacks(category, unordered_callbacks, *, enable_user_sort=True):
    return list(unordered_callbacks)


def ordered_callbacks(category, unordered_callbacks=None, *, enable_user_sort=True):
    if unordered_callbacks is None:
        unordered_callbacks = callback_map.get("callbacks_" + category, [])

    return sort_callbacks(category, unordered_callbacks, enable_user_sort=enable_user_sort)


def enumerate_callbacks():
    for category, callbacks in callback_map.items():
        if category.startswith("callbacks_"):
            category = category[10:]

        yield category, callbacks


callback_map = dict(
    callbacks_app_started=[],
    callbacks_model_loaded=[],
    callbacks_ui_tabs=[],
    callbacks_ui_train_tabs=[],
    callbacks_ui_settings=[],
    callbacks_before_image_saved=[],
    callbacks_image_saved=[],
    callbacks_extra_noise=[],
    callbacks_cfg_denoiser=[],
    callbacks_cfg_denoised=[],
    callbacks_cfg_after_cfg=[],
    callbacks_before_component=[],
    callbacks_after_component=[],
    callbacks_image_grid=[],
    callbacks_infotext_pasted=[],
    callbacks_script_unloaded=[],
    callbacks_before_ui=[],
    callbacks_on_reload=[],
    callbacks_list_optimizers=[],
    callbacks_list_unets=[],
    callbacks_before_token_counter=[],
)


def clear_callbacks():
    for callback_list in callback_map.values():
        callback_list.clear()


def _fire(category, job, *args, reverse=False, **kwargs):
    callbacks = ordered_callbacks(category)
    for c in reversed(callbacks) if reverse else callbacks:
        try:
            c.callback(*args, **kwargs)
        except Exception:
            report_exception(c, job)


def app_started_callback(demo, app):
    _fire("app_started", "app_started_callback", demo, app)


def app_reload_callback():
    _fire("on_reload", "callbacks_on_reload")


def model_loaded_callback(sd_model):
    _fire("model_loaded", "model_loaded_callback", sd_model)


def ui_tabs_callback():
    res = []

    for c in ordered_callbacks("ui_tabs"):
        try:
            res += c.callback() or []
        except Exception:
            report_exception(c, "ui_tabs_callback")

    return res


def ui_train_tabs_callback(params: UiTrainTabParams):
    _fire("ui_train_tabs", "callbacks_ui_train_tabs", params)


def ui_settings_callback():
    _fire("ui_settings", "ui_settings_callback")


def before_image_saved_callback(params: ImageSaveParams):
    _fire("before_image_saved", "before_image_saved_callback", params)


def image_saved_callback(params: ImageSaveParams):
    _fire("image_saved", "image_saved_callback", params)


def extra_noise_callback(params: ExtraNoiseParams):
    _fire("extra_noise", "callbacks_extra_noise", params)


def cfg_denoiser_callback(params: CFGDenoiserParams):
    _fire("cfg_denoiser", "cfg_denoiser_callback", params)


def cfg_denoised_callback(params: CFGDenoisedParams):
    _fire("cfg_denoised", "cfg_denoised_callback", params)


def cfg_after_cfg_callback(params: AfterCFGCallbackParams):
    _fire("cfg_after_cfg", "cfg_after_cfg_callback", params)


def before_component_callback(component, **kwargs):
    _fire("before_component", "before_component_callback", component, **kwargs)


def after_component_callback(component, **kwargs):
    _fire("after_component", "after_component_callback", component, **kwargs)


def image_grid_callback(params: ImageGridLoopParams):
    _fire("image_grid", "image_grid", params)


def infotext_pasted_callback(infotext: str, params: dict[str, Any]):
    _fire("infotext_pasted", "infotext_pasted", infotext, params)


def script_unloaded_callback():
    _fire("script_unloaded", "script_unloaded", reverse=True)


def before_ui_callback():
    _fire("before_ui", "before_ui", reverse=True)


def list_optimizers_callback():
    res = []
    _fire("list_optimizers", "list_optimizers", res)
    return res


def list_unets_callback():
    res = []
    _fire("list_unets", "list_unets", res)
    return res


def before_token_counter_callback(params: BeforeTokenCounterParams):
    _fire("before_token_counter", "before_token_counter", params)


def remove_current_script_callbacks():
    stack = [x for x in inspect.stack() if x.filename != __file__]
    filename = stack[0].filename if stack else "unknown file"
    if filename == "unknown file":
        return
    for callback_list in callback_map.values():
        for callback_to_remove in [cb for cb in callback_list if cb.script == filename]:
            callback_list.remove(callback_to_remove)


def remove_callbacks_for_function(callback_func):
    for callback_list in callback_map.values():
        for callback_to_remove in [cb for cb in callback_list if cb.callback == callback_func]:
            callback_list.remove(callback_to_remove)


def on_app_started(callback, *, name=None):
    """register a function to be called when the webui started: fn(demo: gr.Blocks, app: FastAPI)"""
    add_callback(callback_map["callbacks_app_started"], callback, name=name, category="app_started")


def on_before_reload(callback, *, name=None):
    """register a function to be called just before the server reloads."""
    add_callback(callback_map["callbacks_on_reload"], callback, name=name, category="on_reload")


def on_model_loaded(callback, *, name=None):
    """register a function to be called when the stable diffusion model is created: fn(sd_model)"""
    add_callback(callback_map["callbacks_model_loaded"], callback, name=name, category="model_loaded")


def on_ui_tabs(callback, *, name=None):
    """register a function returning [(gr.Blocks, title, elem_id)] or None to add tabs"""
    add_callback(callback_map["callbacks_ui_tabs"], callback, name=name, category="ui_tabs")


def on_ui_train_tabs(callback, *, name=None):
    add_callback(callback_map["callbacks_ui_train_tabs"], callback, name=name, category="ui_train_tabs")


def on_ui_settings(callback, *, name=None):
    """register a function to be called before UI settings are populated (shared.opts.add_option)"""
    add_callback(callback_map["callbacks_ui_settings"], callback, name=name, category="ui_settings")


def on_before_image_saved(callback, *, name=None):
    """register fn(params: ImageSaveParams) called before an image is saved to a file"""
    add_callback(callback_map["callbacks_before_image_saved"], callback, name=name, category="before_image_saved")


def on_image_saved(callback, *, name=None):
    """register fn(params: ImageSaveParams) called after an image is saved to a file"""
    add_callback(callback_map["callbacks_image_saved"], callback, name=name, category="image_saved")


def on_extra_noise(callback, *, name=None):
    add_callback(callback_map["callbacks_extra_noise"], callback, name=name, category="extra_noise")


def on_cfg_denoiser(callback, *, name=None):
    """register fn(params: CFGDenoiserParams) called in the CFG denoiser after building the inner model inputs"""
    add_callback(callback_map["callbacks_cfg_denoiser"], callback, name=name, category="cfg_denoiser")


def on_cfg_denoised(callback, *, name=None):
    """register fn(params: CFGDenoisedParams) called in the CFG denoiser after the model calls"""
    add_callback(callback_map["callbacks_cfg_denoised"], callback, name=name, category="cfg_denoised")


def on_cfg_after_cfg(callback, *, name=None):
    """register fn(params: AfterCFGCallbackParams) called after the CFG combination"""
    add_callback(callback_map["callbacks_cfg_after_cfg"], callback, name=name, category="cfg_after_cfg")


def on_before_component(callback, *, name=None):
    add_callback(callback_map["callbacks_before_component"], callback, name=name, category="before_component")


def on_after_component(callback, *, name=None):
    add_callback(callback_map["callbacks_after_component"], callback, name=name, category="after_component")


def on_image_grid(callback, *, name=None):
    add_callback(callback_map["callbacks_image_grid"], callback, name=name, category="image_grid")


def on_infotext_pasted(callback, *, name=None):
    """register fn(infotext: str, params: dict) called when pasting infotext, before params are applied"""
    add_callback(callback_map["callbacks_infotext_pasted"], callback, name=name, category="infotext_pasted")


def on_script_unloaded(callback, *, name=None):
    """register fn() called before scripts are unloaded (Reload UI); undo patches here"""
    add_callback(callback_map["callbacks_script_unloaded"], callback, name=name, category="script_unloaded")


def on_before_ui(callback, *, name=None):
    """register fn() called before the UI is created"""
    add_callback(callback_map["callbacks_before_ui"], callback, name=name, category="before_ui")


def on_list_optimizers(callback, *, name=None):
    add_callback(callback_map["callbacks_list_optimizers"], callback, name=name, category="list_optimizers")


def on_list_unets(callback, *, name=None):
    add_callback(callback_map["callbacks_list_unets"], callback, name=name, category="list_unets")


def on_before_token_counter(callback, *, name=None):
    add_callback(callback_map["callbacks_before_token_counter"], callback, name=name, category="before_token_counter")
