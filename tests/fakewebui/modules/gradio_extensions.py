"""Test double of webui v1.10.1 `modules/gradio_extensions.py`, the part scripts rely on.

The webui wraps the constructor of gradio's `IOComponent`, so that every input or output component being built is
announced: to the `ScriptRunner` whose UI is being built (`scripts.scripts_current`: its scripts' `before_component`
/ `after_component` and their `on_before_component` / `on_after_component(elem_id=…)` requests) and to the
`on_before_component` / `on_after_component` callbacks, with the constructor's keyword arguments. That is how an
extension hears of components such as `txt2img_width`. `install()` and `undo()` are called by the fixture around a
session; tooltips, CSS classes and the Blocks patches are not part of the double.
"""

from __future__ import annotations

import functools

import gradio as gr
from modules import script_callbacks, scripts

_original_init = None


def _announcing(init):
    @functools.wraps(init)
    def announced(self, *args, **kwargs):
        self.webui_tooltip = kwargs.pop("tooltip", None)
        runner = scripts.scripts_current
        if runner is not None:
            runner.before_component(self, **kwargs)
        script_callbacks.before_component_callback(self, **kwargs)
        init(self, *args, **kwargs)
        script_callbacks.after_component_callback(self, **kwargs)
        if runner is not None:
            runner.after_component(self, **kwargs)

    return announced


def install():
    """Wrap `gr.components.IOComponent.__init__` (once)."""
    global _original_init
    if _original_init is None:
        _original_init = gr.components.IOComponent.__init__
        gr.components.IOComponent.__init__ = _announcing(_original_init)


def undo():
    """Put the original constructor back."""
    global _original_init
    if _original_init is not None:
        gr.components.IOComponent.__init__, _original_init = _original_init, None
