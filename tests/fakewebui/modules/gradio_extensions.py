"""Mirror of modules/gradio_extensions.py (the part scripts rely on): gradio's component constructor is patched so
that every component built while a ScriptRunner is current goes through `before_component`/`after_component` —
which is how `Script.on_after_component(callback, elem_id=…)` hears about components such as `txt2img_width`.

Left out: tooltips, extra CSS classes, the Blocks/BlockContext patches and `patches.patch` bookkeeping.
`install()`/`undo()` are called by the fixture around a session.
"""

from __future__ import annotations

import gradio as gr
from modules import script_callbacks, scripts

original_IOComponent_init = None


def IOComponent_init(self, *args, **kwargs):
    self.webui_tooltip = kwargs.pop("tooltip", None)
    if scripts.scripts_current is not None:
        scripts.scripts_current.before_component(self, **kwargs)
    script_callbacks.before_component_callback(self, **kwargs)
    res = original_IOComponent_init(self, *args, **kwargs)
    script_callbacks.after_component_callback(self, **kwargs)
    if scripts.scripts_current is not None:
        scripts.scripts_current.after_component(self, **kwargs)
    return res


def install():
    global original_IOComponent_init
    if original_IOComponent_init is None:
        original_IOComponent_init = gr.components.IOComponent.__init__
        gr.components.IOComponent.__init__ = IOComponent_init


def undo():
    global original_IOComponent_init
    if original_IOComponent_init is not None:
        gr.components.IOComponent.__init__ = original_IOComponent_init
        original_IOComponent_init = None
