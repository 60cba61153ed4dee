"""Test double of webui v1.10.1 `modules/ui_components.py`: the gradio 3.41 blocks extensions build UIs from.

`InputAccordion` is the usual on/off switch of an always-visible script: an invisible `gr.Checkbox` (its value, the
enabled flag, is what the script receives) with a `gr.Accordion` beside it, open when the value is True; the
checkbox's elem_id is the accordion's plus "-checkbox". The `Form*` blocks and `ToolButton` are gradio blocks that may
sit inside a form; `DropdownMulti` and `DropdownEditable` are dropdowns with multiselect / free text switched on. The
webui's JavaScript that keeps accordion and checkbox in step is not part of the double.
"""

from __future__ import annotations

import itertools

import gradio as gr


class FormComponent:
    """Mixin: the block may be placed inside a gradio Form."""

    def get_expected_parent(self):
        return gr.components.Form


gr.Dropdown.get_expected_parent = FormComponent.get_expected_parent  # as the webui does at import


def _form_block(name: str, base: type, block_name: str) -> type:
    """A subclass of a gradio block that may sit inside a form, named as the webui names it."""
    attrs = {"get_block_name": lambda self: block_name, "__doc__": f"A {base.__name__} that may sit inside a form."}
    made = type(name, (FormComponent, base), attrs)
    made.__qualname__ = name
    return made


FormRow = _form_block("FormRow", gr.Row, "row")
FormColumn = _form_block("FormColumn", gr.Column, "column")
FormGroup = _form_block("FormGroup", gr.Group, "group")
FormHTML = _form_block("FormHTML", gr.HTML, "html")
FormColorPicker = _form_block("FormColorPicker", gr.ColorPicker, "colorpicker")


class ToolButton(FormComponent, gr.Button):
    """A small (usually one-symbol) button."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, elem_classes=["tool", *kwargs.pop("elem_classes", [])], **kwargs)

    def get_block_name(self):
        return "button"


class ResizeHandleRow(gr.Row):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.elem_classes.append("resize-handle-row")

    def get_block_name(self):
        return "row"


class DropdownMulti(FormComponent, gr.Dropdown):
    def __init__(self, **kwargs):
        super().__init__(multiselect=True, **kwargs)

    def get_block_name(self):
        return "dropdown"


class DropdownEditable(FormComponent, gr.Dropdown):
    def __init__(self, **kwargs):
        super().__init__(allow_custom_value=True, **kwargs)

    def get_block_name(self):
        return "dropdown"


_unnamed_accordions = itertools.count()


class InputAccordion(gr.Checkbox):
    """An accordion usable as an input: `with InputAccordion(False, label=…) as enabled:` puts the content inside the
    accordion, and the component's value is whether it is on."""

    def __init__(self, value, **kwargs):
        self.accordion_id = kwargs.get("elem_id") or f"input-accordion-{next(_unnamed_accordions)}"
        super().__init__(value, **{**kwargs, "elem_id": f"{self.accordion_id}-checkbox", "visible": False})
        self.accordion = gr.Accordion(
            **{
                **kwargs,
                "label": kwargs.get("label", "Accordion"),
                "elem_id": self.accordion_id,
                "elem_classes": ["input-accordion"],
                "open": value,
            }
        )

    def extra(self):
        """A column in the accordion's header line, for extra controls."""
        return gr.Column(elem_id=f"{self.accordion_id}-extra", elem_classes="input-accordion-extra", min_width=0)

    def __enter__(self):
        self.accordion.__enter__()
        return self

    def __exit__(self, *exc_info):
        self.accordion.__exit__(*exc_info)

    def get_block_name(self):
        return "checkbox"
