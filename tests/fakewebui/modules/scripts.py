"""Test double of webui v1.10.1 `modules/scripts.py`: the `Script` base class, script loading and `ScriptRunner`.

What extensions rely on is modelled, nothing more. A script file is executed as a module whose name is the file's
basename ("dumpunet.py"), never entered in `sys.modules`, while its extension's folder is first on `sys.path` and
`basedir()` answers that folder; every `Script` subclass found in the module's namespace is registered. A runner
offers processing callbacks only to always-visible scripts whose class overrides the method, passes each its own
slice of `p.script_args`, and reports (never raises) what a script throws.
"""

from __future__ import annotations

import inspect
import os
import re
import sys
from dataclasses import dataclass
from typing import Any, NamedTuple

import gradio as gr
from modules import errors, extensions, paths, script_callbacks, script_loading, shared

AlwaysVisible = object()  # what show() returns for a script that is always on, outside the dropdown


@dataclass
class MaskBlendArgs:
    current_latent: Any
    nmask: Any
    init_latent: Any
    mask: Any
    blended_latent: Any
    denoiser: Any = None
    sigma: Any = None

    @property
    def is_final_blend(self) -> bool:
        return self.denoiser is None


@dataclass
class PostSampleArgs:
    samples: Any


@dataclass
class PostprocessImageArgs:
    image: Any


@dataclass
class PostProcessMaskOverlayArgs:
    index: int
    mask_for_overlay: Any
    overlay_image: Any


@dataclass
class PostprocessBatchListArgs:
    images: list


@dataclass
class OnComponent:
    component: Any


class Script:
    """Base class of every webui script. Subclasses override what they need; the runner notices overrides."""

    name = None  # title().lower(), set when the UI is built
    section = None  # UI section of an always-visible script (None: the scripts area)
    filename = None
    args_from = None  # this script's slice of p.script_args, set when the UI is built
    args_to = None
    alwayson = False
    is_txt2img = False
    is_img2img = False
    tabname = None
    group = None  # the gr.Group wrapped around the script's controls
    create_group = True
    infotext_fields = None  # [(component, "Infotext key" or params -> value)], set in ui()
    paste_field_names = None  # keys copied by "Send to …", set in ui()
    api_info = None
    on_before_component_elem_id = on_after_component_elem_id = None  # [(elem_id, callback)] until the runner takes them
    setup_for_ui_only = False  # True: setup() is skipped for API requests
    controls = None  # what ui() returned
    sorting_priority = 0

    def title(self):
        raise NotImplementedError(f"{type(self).__name__} has no title()")

    def show(self, is_img2img):
        return True

    def ui(self, is_img2img):
        return None

    def run(self, p, *args):
        return None

    def setup(self, p, *args):
        pass

    def before_process(self, p, *args):
        pass

    def process(self, p, *args):
        pass

    def before_process_batch(self, p, *args, **kwargs):
        pass

    def after_extra_networks_activate(self, p, *args, **kwargs):
        pass

    def process_batch(self, p, *args, **kwargs):
        pass

    def process_before_every_sampling(self, p, *args, **kwargs):
        pass

    def before_hr(self, p, *args):
        pass

    def on_mask_blend(self, p, mba: MaskBlendArgs, *args):
        pass

    def post_sample(self, p, ps: PostSampleArgs, *args):
        pass

    def postprocess_batch(self, p, *args, **kwargs):
        pass

    def postprocess_batch_list(self, p, pp: PostprocessBatchListArgs, *args, **kwargs):
        pass

    def postprocess_image(self, p, pp: PostprocessImageArgs, *args):
        pass

    def postprocess_maskoverlay(self, p, ppmo: PostProcessMaskOverlayArgs, *args):
        pass

    def postprocess_image_after_composite(self, p, pp: PostprocessImageArgs, *args):
        pass

    def postprocess(self, p, processed, *args):
        pass

    def before_component(self, component, **kwargs):
        pass

    def after_component(self, component, **kwargs):
        pass

    def on_before_component(self, callback, *, elem_id):
        """Ask for `callback(OnComponent(component))` just before the component with this elem_id is made."""
        self.on_before_component_elem_id = [*(self.on_before_component_elem_id or []), (elem_id, callback)]

    def on_after_component(self, callback, *, elem_id):
        """Ask for `callback(OnComponent(component))` once the component with this elem_id exists."""
        self.on_after_component_elem_id = [*(self.on_after_component_elem_id or []), (elem_id, callback)]

    def describe(self):
        return ""

    def elem_id(self, item_id):
        """`script_[<tab>_]<title>_<item_id>`; the tab is named only when the script shows the same on both tabs."""
        slug = "".join(ch for ch in re.sub(r"\s", "_", self.title().lower()) if ch in _SLUG_CHARS)
        same_on_both = self.show(True) == self.show(False)
        tab = ("img2img_" if self.is_img2img else "txt2img_") if same_on_both else ""
        return f"script_{tab}{slug}_{item_id}"


_SLUG_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")


class ScriptFile(NamedTuple):
    basedir: str
    filename: str
    path: str


class ScriptClassData(NamedTuple):
    script_class: type
    path: str
    basedir: str
    module: Any


scripts_data: list[ScriptClassData] = []
postprocessing_scripts_data: list = []
current_basedir = paths.script_path

scripts_txt2img: ScriptRunner | None = None
scripts_img2img: ScriptRunner | None = None
scripts_postproc = None
scripts_current: ScriptRunner | None = None  # the runner whose UI is being built (component hooks go to it)


def basedir():
    """The folder of the extension whose script is being imported (the webui root otherwise)."""
    return current_basedir


def _script_files() -> list[ScriptFile]:
    """The webui's own scripts/ (by name), then each active extension's scripts/*.py."""
    own = os.path.join(paths.script_path, "scripts")
    names = sorted(n for n in os.listdir(own) if n.endswith(".py")) if os.path.isdir(own) else []
    found = [ScriptFile(paths.script_path, n, os.path.join(own, n)) for n in names]
    for ext in extensions.active():
        found.extend(ext.list_files("scripts", ".py"))
    return found


def _load_one(file: ScriptFile) -> None:
    global current_basedir
    saved_path = sys.path
    try:
        if file.basedir != paths.script_path:
            sys.path = [file.basedir, *saved_path]
        current_basedir = file.basedir
        module = script_loading.load_module(file.path)
        for value in list(vars(module).values()):
            if inspect.isclass(value) and issubclass(value, Script):
                scripts_data.append(ScriptClassData(value, file.path, file.basedir, module))
    except Exception:
        errors.report(f"Error loading script: {file.filename}", exc_info=True)
    finally:
        sys.path = saved_path
        current_basedir = paths.script_path


def load_scripts():
    """Forget every script and callback, execute each script file again, and start fresh runners for both tabs."""
    global scripts_txt2img, scripts_img2img, scripts_postproc
    script_callbacks.clear_callbacks()
    del scripts_data[:], postprocessing_scripts_data[:]
    for file in _script_files():
        _load_one(file)
    scripts_txt2img, scripts_img2img, scripts_postproc = ScriptRunner(), ScriptRunner(), None


reload_scripts = load_scripts


def _overrides(script: Script, method: str) -> bool:
    return getattr(type(script), method, None) is not getattr(Script, method, None)


def _call_reporting(what: str, fn, *args, default=None, **kwargs):
    try:
        return fn(*args, **kwargs)
    except Exception:
        errors.report(what, exc_info=True)
        return default


class ScriptRunner:
    """The scripts of one tab: their UI, their arguments' positions, and the processing callbacks."""

    def __init__(self):
        self.scripts: list[Script] = []
        self.selectable_scripts: list[Script] = []
        self.alwayson_scripts: list[Script] = []
        self.titles: list[str] = []
        self.title_map: dict[str, Script] = {}
        self.infotext_fields: list = []
        self.paste_field_names: list[str] = []
        self.inputs: list = [None]
        self.on_before_component_elem_id: dict[str, list] = {}
        self.on_after_component_elem_id: dict[str, list] = {}

    # -- building ------------------------------------------------------------------------------------------------

    def initialize_scripts(self, is_img2img):
        """Instantiate every registered script for this tab and sort it by what `show()` answers."""
        shown = []
        for data in scripts_data:
            script = _call_reporting(f"Error # failed to initialize Script {data.module}: ", data.script_class)
            if script is None:
                continue
            script.filename = data.path
            script.is_img2img, script.is_txt2img = is_img2img, not is_img2img
            script.tabname = ("txt2img", "img2img")[bool(is_img2img)]
            visibility = script.show(is_img2img)
            script.alwayson = visibility is AlwaysVisible
            if visibility:
                shown.append(script)
        self.scripts = shown
        self.alwayson_scripts = [s for s in shown if s.alwayson]
        self.selectable_scripts = [s for s in shown if not s.alwayson]
        self.apply_on_before_component_callbacks()

    def apply_on_before_component_callbacks(self):
        """Move the scripts' elem_id requests into this runner's tables."""
        for requester in self.scripts:
            for own, table in (
                ("on_before_component_elem_id", self.on_before_component_elem_id),
                ("on_after_component_elem_id", self.on_after_component_elem_id),
            ):
                for elem_id, callback in getattr(requester, own) or ():
                    table.setdefault(elem_id, []).append((callback, requester))
                setattr(requester, own, None)

    def prepare_ui(self):
        self.inputs = [None]

    def create_script_ui(self, script):
        script.args_from = script.args_to = len(self.inputs)
        controls = _call_reporting(f"Error calling: {script.filename}/ui", script.ui, script.is_img2img)
        if controls is None:
            script.controls = None
            return
        script.name = _call_reporting(f"Error calling: {script.filename}/title", script.title) or script.filename
        script.name = script.name.lower()
        self.infotext_fields.extend(script.infotext_fields or ())
        self.paste_field_names.extend(script.paste_field_names or ())
        script.controls = controls
        self.inputs.extend(controls)
        script.args_to = script.args_from + len(controls)

    def setup_ui_for_section(self, section, scriptlist=None):
        for script in self.alwayson_scripts if scriptlist is None else scriptlist:
            if script.alwayson and section != script.section:
                continue
            if script.create_group:
                with gr.Group(visible=script.alwayson) as script.group:
                    self.create_script_ui(script)
            else:
                self.create_script_ui(script)

    def setup_ui(self):
        """Always-visible scripts' controls, the "Script" dropdown (index 0 of the inputs), then each dropdown
        script's controls in a hidden group that the dropdown shows. Returns the inputs, in args order."""

        def title_of(script):
            return _call_reporting(f"Error calling: {script.filename}/title", script.title)

        self.title_map = {(title_of(s) or s.filename).lower(): s for s in self.scripts}
        self.titles = [title_of(s) or f"{s.filename} [error]" for s in self.selectable_scripts]
        self.setup_ui_for_section(section=None)
        dropdown = gr.Dropdown(
            label="Script", elem_id="script_list", choices=["None", *self.titles], value="None", type="index"
        )
        self.inputs[0] = dropdown
        self.setup_ui_for_section(section=None, scriptlist=self.selectable_scripts)

        groups = [s.group for s in self.selectable_scripts]

        def show_selected(index):
            return [gr.update(visible=bool(index) and i == index - 1) for i in range(len(groups))]

        dropdown.change(fn=show_selected, inputs=[dropdown], outputs=groups)
        self.infotext_fields.append((dropdown, lambda params: gr.update(value=params.get("Script", "None"))))
        for script in self.selectable_scripts:
            title = title_of(script)
            self.infotext_fields.append(
                (script.group, lambda params, title=title: gr.update(visible=params.get("Script") == title))
            )
        self.apply_on_before_component_callbacks()  # requests made from ui()
        return self.inputs

    # -- running ---------------------------------------------------------------------------------------------------

    def run(self, p, *args):
        """Run the script chosen in the dropdown (args[0]; 0 = none) and return its Processed, or None."""
        index = args[0] if args else 0
        if not index:
            return None
        script = self.selectable_scripts[index - 1]
        try:
            return script.run(p, *args[script.args_from : script.args_to])
        finally:
            shared.total_tqdm.clear()

    def script(self, title):
        return self.title_map.get(str(title).lower())

    def _dispatch(self, method, p, *lead, skip=None, **kwargs):
        for script in self.alwayson_scripts:
            if not _overrides(script, method) or (skip is not None and skip(script)):
                continue
            own_args = p.script_args[script.args_from : script.args_to]
            _call_reporting(
                f"Error running {method}: {script.filename}", getattr(script, method), p, *lead, *own_args, **kwargs
            )

    def setup_scrips(self, p, *, is_ui=True):
        self._dispatch("setup", p, skip=lambda s: s.setup_for_ui_only and not is_ui)

    def before_process(self, p):
        self._dispatch("before_process", p)

    def process(self, p):
        self._dispatch("process", p)

    def before_process_batch(self, p, **kwargs):
        self._dispatch("before_process_batch", p, **kwargs)

    def after_extra_networks_activate(self, p, **kwargs):
        self._dispatch("after_extra_networks_activate", p, **kwargs)

    def process_batch(self, p, **kwargs):
        self._dispatch("process_batch", p, **kwargs)

    def process_before_every_sampling(self, p, **kwargs):
        self._dispatch("process_before_every_sampling", p, **kwargs)

    def before_hr(self, p):
        self._dispatch("before_hr", p)

    def on_mask_blend(self, p, mba: MaskBlendArgs):
        self._dispatch("on_mask_blend", p, mba)

    def post_sample(self, p, ps: PostSampleArgs):
        self._dispatch("post_sample", p, ps)

    def postprocess_batch(self, p, images, **kwargs):
        self._dispatch("postprocess_batch", p, images=images, **kwargs)

    def postprocess_batch_list(self, p, pp: PostprocessBatchListArgs, **kwargs):
        self._dispatch("postprocess_batch_list", p, pp, **kwargs)

    def postprocess_image(self, p, pp: PostprocessImageArgs):
        self._dispatch("postprocess_image", p, pp)

    def postprocess_maskoverlay(self, p, ppmo: PostProcessMaskOverlayArgs):
        self._dispatch("postprocess_maskoverlay", p, ppmo)

    def postprocess_image_after_composite(self, p, pp: PostprocessImageArgs):
        self._dispatch("postprocess_image_after_composite", p, pp)

    def postprocess(self, p, processed):
        self._dispatch("postprocess", p, processed)

    # -- UI construction hooks (every script, dropdown ones too) ----------------------------------------------------

    def _component_hooks(self, table, elem_id, method, component, kwargs):
        for callback, script in table.get(elem_id, ()):
            _call_reporting(f"Error running on_{method}: {script.filename}", callback, OnComponent(component))
        for listener in (s for s in self.scripts if _overrides(s, method)):
            hook = getattr(listener, method)
            _call_reporting(f"Error running {method}: {listener.filename}", hook, component, **kwargs)

    def before_component(self, component, **kwargs):
        self._component_hooks(
            self.on_before_component_elem_id, kwargs.get("elem_id"), "before_component", component, kwargs
        )

    def after_component(self, component, **kwargs):
        self._component_hooks(self.on_after_component_elem_id, component.elem_id, "after_component", component, kwargs)

    def set_named_arg(self, args, script_name, arg_elem_id, value, fuzzy=False):
        """Put `value` at the position of the named script's control with this elem_id (substring if fuzzy): a new
        tuple for a tuple, the same list changed for a list."""
        script = next((s for s in self.scripts if s.name == script_name), None)
        if script is None:
            raise RuntimeError(f"set_named_arg: no script is named {script_name!r}")
        for offset, control in enumerate(script.controls or ()):
            found = arg_elem_id in (control.elem_id or "") if fuzzy else control.elem_id == arg_elem_id
            if not found:
                continue
            at = script.args_from + offset
            if isinstance(args, tuple):
                return (*args[:at], value, *args[at + 1 :])
            if isinstance(args, list):
                args[at] = value
                return args
            raise RuntimeError(f"set_named_arg: args must be a tuple or a list, not {type(args).__name__}")
        raise RuntimeError(f"set_named_arg: {script_name!r} has no control with elem_id {arg_elem_id!r}")
