"""What `scripts/dumpunet.py` calls: both entries' UIs, the dropdown script's run, and the shared engine.

"Dump U-Net features" (Script dropdown) runs the job itself: it checks everything against the loaded model first
(a mistake stops it with the message before generation), leaves a `Request` on `p`, and calls `process_images` —
twice, on copies with one fixed seed, for difference maps. The always-visible "Dump U-Net" section (collapsed, off
by default) drives the same engine when another script (X/Y/Z plot …) runs or over the API.
"""

from __future__ import annotations

import copy
from typing import Any

import gradio as gr
from modules import processing, shared
from modules.ui_components import InputAccordion

from lib_dumpunet.errors import DumpUnetError
from lib_dumpunet.job import difference_maps, make_plan
from lib_dumpunet.layer_prompt import parse_layer_prompt
from lib_dumpunet.settings import JobSettings, from_values
from lib_dumpunet.webui import infotext, outputs, ui
from lib_dumpunet.webui.engine import REQUEST, Engine, Request, is_shared, job_steps, output_root
from lib_dumpunet.webui.host import loaded_model, unet_of
from lib_dumpunet.webui.info import layout_of, tab_info

__all__ = [
    "ENGINE",
    "SCRIPT_TITLE",
    "SECTION_TITLE",
    "run",
    "script_ui",
    "section_settings",
    "section_ui",
    "watch_size",
]

ENGINE = Engine()
SCRIPT_TITLE = "Dump U-Net features"
SECTION_TITLE = "Dump U-Net"


# --- UI ------------------------------------------------------------------------------------------------------------


class _Size:
    """The tab's Width and Height sliders, found while the webui builds its UI, wired to info panels once known."""

    def __init__(self) -> None:
        self.sliders: dict[str, Any] = {}
        self.widgets: ui.Widgets | None = None

    def found(self, name: str, component: Any) -> None:
        self.sliders[name] = component
        self.connect()

    def connect(self) -> None:
        if self.widgets is not None and len(self.sliders) == 2:
            self.widgets.connect_info(refresh, [self.sliders["width"], self.sliders["height"]])
            self.widgets = None


def watch_size(script: Any, is_img2img: bool) -> None:
    """Call from `show()`: the sliders are created before or after `ui()` depending on the webui's layout."""
    tab = "img2img" if is_img2img else "txt2img"
    script.dumpunet_size = _Size()
    for name in ("width", "height"):
        script.on_after_component(
            lambda event, name=name: script.dumpunet_size.found(name, event.component), elem_id=f"{tab}_{name}"
        )


def refresh(tab: str, values: dict[str, Any], width: int, height: int) -> str:
    return tab_info(
        tab, values, width, height, unet=unet_of(loaded_model()), dump_base=output_root(), shared=is_shared()
    )


def _attach_info(script: Any, widgets: ui.Widgets) -> None:
    size = getattr(script, "dumpunet_size", None)
    if size is None:
        widgets.connect_info(refresh)
        return
    size.widgets = widgets
    size.connect()


def script_ui(script: Any, is_img2img: bool) -> list[Any]:
    widgets = ui.build(f"dumpunet-{'img2img' if is_img2img else 'txt2img'}")
    _attach_info(script, widgets)
    return widgets.ordered()


def section_ui(script: Any, is_img2img: bool) -> list[Any]:
    tab = "img2img" if is_img2img else "txt2img"
    with InputAccordion(False, label=SECTION_TITLE, elem_id=f"dumpunet-{tab}-section") as enabled:
        gr.HTML(
            "<p class='dumpunet-description'>The Dump U-Net features script, usable beside other scripts (X/Y/Z "
            "plot) and over the API. Difference maps need the script itself.</p>"
        )
        widgets = ui.build(f"dumpunet-{tab}-section")
    _attach_info(script, widgets)
    script.infotext_fields = infotext.paste_fields(widgets.inputs, enabled)
    script.paste_field_names = list(infotext.PASTE_NAMES)
    return [enabled, *widgets.ordered()]


def section_settings(args: tuple) -> JobSettings | None:
    """The section's settings, or None when its switch is off. Raises DumpUnetError for malformed values."""
    if not args or not args[0]:
        return None
    return from_values(list(args[1:]))


# --- the dropdown script -----------------------------------------------------------------------------------------


def run(p: Any, args: tuple) -> Any:
    """`Script.run` of "Dump U-Net features": returns the Processed with the maps in it."""
    settings = from_values(list(args))
    if not settings.active:
        return processing.process_images(p)
    _check_now(p, settings)
    try:
        if settings.layer_prompt.enabled and settings.layer_prompt.diff:
            return _run_difference(p, settings)
        setattr(p, REQUEST, Request(settings, source="script"))
        return processing.process_images(p)
    finally:
        ENGINE.reset()


def _check_now(p: Any, settings: JobSettings) -> None:
    """Everything that can be checked before generation, on the model loaded now."""
    if not any(s.title() == SECTION_TITLE for s in getattr(p.scripts, "alwayson_scripts", [])):
        msg = "the always-visible Dump U-Net script is not loaded; reload the UI"
        raise DumpUnetError(msg)
    unet = unet_of(shared.sd_model)
    if unet is None:
        msg = "the loaded model has no U-Net with input/middle/output blocks (SD3 and Flux are not supported)"
        raise DumpUnetError(msg)
    layout = layout_of(unet)
    plan = make_plan(settings, layout, job_steps=job_steps(p), dump_base=output_root(p), shared=is_shared())
    if plan.layer_prompt:
        for text in (p.prompt, p.negative_prompt):
            for t in text if isinstance(text, list) else [text]:
                parse_layer_prompt(t, layout.names)


def _run_difference(p: Any, settings: JobSettings) -> Any:
    """Two runs with the same seed and settings — without and with the per-block prompts — and their difference."""
    processing.fix_seed(p)
    shared.state.job_count = 2 * p.n_iter
    results = []
    for role in ("baseline", "layer_prompt"):
        if results and shared.state.interrupted:
            break
        q = copy.copy(p)
        q.extra_generation_params = dict(p.extra_generation_params)
        q.comments = dict(getattr(p, "comments", {}))
        q.override_settings = dict(p.override_settings)
        setattr(q, REQUEST, Request(settings, role, "script"))
        processed = processing.process_images(q)
        results.append((q, processed, ENGINE.finished))
    if len(results) < 2:
        return results[0][1]
    (_, base, base_run), (q, lp, lp_run) = results
    diffs = difference_maps(base_run.job, lp_run.job)
    if settings.output.save_images and not getattr(q, "do_not_save_samples", False):
        outputs.save_maps(q, outputs.for_saving(diffs), lp_run.files, lp_run.owners, lp_run.save_folder)
    gallery = outputs.for_gallery(diffs, settings.output.display_min)
    return outputs.merge_difference(base, lp, gallery, q, lp_run.owners)
