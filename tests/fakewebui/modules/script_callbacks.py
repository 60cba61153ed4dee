"""Test double of webui v1.10.1 `modules/script_callbacks.py`: the callback registry extensions use.

`on_<category>(callback, *, name=None)` registers a callback under a name built from the registering file:
`<extension folder or "base">/<file name>/<category>[/<name>]`, made unique with `-1`, `-2`… Each firing function
calls a category's callbacks in registration order (the webui also lets users reorder them in Settings; the double
does not), reports an exception through `errors.report` and carries on with the next callback. `script_unloaded` and
`before_ui` run newest first, as in the webui.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any

from modules import errors, extensions

# -- what callbacks receive --------------------------------------------------------------------------------------------


@dataclass
class ImageSaveParams:
    image: Any
    p: Any
    filename: str
    pnginfo: dict  # the infotext is under "parameters"


@dataclass
class ExtraNoiseParams:
    noise: Any
    x: Any
    xi: Any


@dataclass
class CFGDenoiserParams:
    x: Any  # every row the U-Net gets this call: cond rows, then uncond rows
    image_cond: Any
    sigma: Any
    sampling_step: int
    total_sampling_steps: int
    text_cond: Any
    text_uncond: Any
    denoiser: Any = None  # the CFGDenoiser (its .p, .step, .total_steps)


@dataclass
class CFGDenoisedParams:
    x: Any
    sampling_step: int
    total_sampling_steps: int
    inner_model: Any


@dataclass
class AfterCFGCallbackParams:
    x: Any
    sampling_step: int
    total_sampling_steps: int


@dataclass
class UiTrainTabParams:
    txt2img_preview_params: Any


@dataclass
class ImageGridLoopParams:
    imgs: list
    cols: int
    rows: int


@dataclass
class BeforeTokenCounterParams:
    prompt: str
    steps: int
    styles: list
    is_positive: bool = True


@dataclass
class ScriptCallback:
    script: str  # the file that registered it
    callback: Any
    name: str = "unnamed"


# -- the registry ------------------------------------------------------------------------------------------------------

_CATEGORIES = (
    "app_started",
    "model_loaded",
    "ui_tabs",
    "ui_train_tabs",
    "ui_settings",
    "before_image_saved",
    "image_saved",
    "extra_noise",
    "cfg_denoiser",
    "cfg_denoised",
    "cfg_after_cfg",
    "before_component",
    "after_component",
    "image_grid",
    "infotext_pasted",
    "script_unloaded",
    "before_ui",
    "on_reload",
    "list_optimizers",
    "list_unets",
    "before_token_counter",
)
callback_map: dict[str, list[ScriptCallback]] = {f"callbacks_{c}": [] for c in _CATEGORIES}


def _registering_file() -> str:
    """The source file of the nearest caller outside this module."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename == __file__:
        frame = frame.f_back
    return frame.f_code.co_filename if frame is not None else "unknown file"


def add_callback(callbacks, fun, *, name=None, category="unknown", filename=None):
    """Append `fun` to `callbacks` under a unique `<extension>/<file>/<category>[/<name>]` name."""
    filename = filename or _registering_file()
    owner = extensions.find_extension(filename)
    base = "/".join([owner.canonical_name if owner else "base", os.path.basename(filename), category])
    if name is not None:
        base = f"{base}/{name}"
    taken = {c.name for c in callbacks}
    unique, n = base, 0
    while unique in taken:
        n += 1
        unique = f"{base}-{n}"
    callbacks.append(ScriptCallback(filename, fun, unique))


def ordered_callbacks(category, unordered_callbacks=None, *, enable_user_sort=True):
    """A category's callbacks in calling order: registration order here."""
    return list(callback_map[f"callbacks_{category}"] if unordered_callbacks is None else unordered_callbacks)


def clear_callbacks():
    for registered in callback_map.values():
        registered.clear()


def remove_callbacks_for_function(callback_func):
    for registered in callback_map.values():
        registered[:] = [c for c in registered if c.callback != callback_func]


def remove_current_script_callbacks():
    """Forget every callback that the calling file registered."""
    caller = _registering_file()
    if caller == "unknown file":
        return
    for registered in callback_map.values():
        registered[:] = [c for c in registered if c.script != caller]


def _make_registrar(category: str):
    def register(callback, *, name=None):
        add_callback(callback_map[f"callbacks_{category}"], callback, name=name, category=category)

    register.__name__ = register.__qualname__ = f"on_{category}"
    register.__doc__ = f"Register `callback` for the {category!r} event."
    return register


on_app_started = _make_registrar("app_started")
on_model_loaded = _make_registrar("model_loaded")
on_ui_tabs = _make_registrar("ui_tabs")
on_ui_train_tabs = _make_registrar("ui_train_tabs")
on_ui_settings = _make_registrar("ui_settings")
on_before_image_saved = _make_registrar("before_image_saved")
on_image_saved = _make_registrar("image_saved")
on_extra_noise = _make_registrar("extra_noise")
on_cfg_denoiser = _make_registrar("cfg_denoiser")
on_cfg_denoised = _make_registrar("cfg_denoised")
on_cfg_after_cfg = _make_registrar("cfg_after_cfg")
on_before_component = _make_registrar("before_component")
on_after_component = _make_registrar("after_component")
on_image_grid = _make_registrar("image_grid")
on_infotext_pasted = _make_registrar("infotext_pasted")
on_script_unloaded = _make_registrar("script_unloaded")
on_before_ui = _make_registrar("before_ui")
on_before_reload = _make_registrar("on_reload")
on_list_optimizers = _make_registrar("list_optimizers")
on_list_unets = _make_registrar("list_unets")
on_before_token_counter = _make_registrar("before_token_counter")


# -- firing ------------------------------------------------------------------------------------------------------------


def _fire(category: str, *args: Any, newest_first: bool = False, **kwargs: Any) -> list:
    """Call each callback of the category; a failure is reported (naming the event and the file) and skipped.
    Returns what the callbacks returned, in calling order."""
    queue = ordered_callbacks(category)
    results = []
    for entry in reversed(queue) if newest_first else queue:
        try:
            results.append(entry.callback(*args, **kwargs))
        except Exception:
            errors.report(f"Error executing callback {category}_callback for {entry.script}", exc_info=True)
    return results


def app_started_callback(demo, app):
    _fire("app_started", demo, app)


def app_reload_callback():
    _fire("on_reload")


def model_loaded_callback(sd_model):
    _fire("model_loaded", sd_model)


def ui_tabs_callback():
    return [tab for tabs in _fire("ui_tabs") for tab in tabs or ()]


def ui_train_tabs_callback(params: UiTrainTabParams):
    _fire("ui_train_tabs", params)


def ui_settings_callback():
    _fire("ui_settings")


def before_image_saved_callback(params: ImageSaveParams):
    _fire("before_image_saved", params)


def image_saved_callback(params: ImageSaveParams):
    _fire("image_saved", params)


def extra_noise_callback(params: ExtraNoiseParams):
    _fire("extra_noise", params)


def cfg_denoiser_callback(params: CFGDenoiserParams):
    _fire("cfg_denoiser", params)


def cfg_denoised_callback(params: CFGDenoisedParams):
    _fire("cfg_denoised", params)


def cfg_after_cfg_callback(params: AfterCFGCallbackParams):
    _fire("cfg_after_cfg", params)


def before_component_callback(component, **kwargs):
    _fire("before_component", component, **kwargs)


def after_component_callback(component, **kwargs):
    _fire("after_component", component, **kwargs)


def image_grid_callback(params: ImageGridLoopParams):
    _fire("image_grid", params)


def infotext_pasted_callback(infotext: str, params: dict[str, Any]):
    _fire("infotext_pasted", infotext, params)


def script_unloaded_callback():
    _fire("script_unloaded", newest_first=True)


def before_ui_callback():
    _fire("before_ui", newest_first=True)


def list_optimizers_callback():
    found: list = []
    _fire("list_optimizers", found)
    return found


def list_unets_callback():
    found: list = []
    _fire("list_unets", found)
    return found


def before_token_counter_callback(params: BeforeTokenCounterParams):
    _fire("before_token_counter", params)
