"""Test double of webui v1.10.1 `modules/infotext_utils.py`: infotext quoting and parsing, and the paste fields.

An infotext is the prompt, an optional "Negative prompt: …" part, and a last line of `Key: value` pairs separated by
commas, where a value holding a comma, colon or newline is written as a JSON string. Scripts take part in pasting
through `Script.infotext_fields` (component, infotext key or function of the parsed dict) and `paste_field_names`
(keys that "Send to img2img/txt2img" copies); the fixture registers each tab's list with `add_paste_fields`.
`connect_paste` returns the function the webui binds to the paste button, so a test can paste an infotext; the
parser reads its input in one linear pass, so any length of text is safe to paste.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

import gradio as gr
from modules import errors, paths, script_callbacks, shared

_UPDATE = type(gr.update())


@dataclass
class ParamBinding:
    paste_button: Any
    tabname: str
    source_text_component: Any = None
    source_image_component: Any = None
    source_tabname: str | None = None
    override_settings_component: Any = None
    paste_field_names: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.paste_field_names = list(self.paste_field_names or ())


class PasteField(tuple):
    """(component, target): target is an infotext key, or a function from the parsed dict to a value or update."""

    def __new__(cls, component, target, *, api=None):
        made = super().__new__(cls, (component, target))
        made.component, made.api = component, api
        made.label = target if isinstance(target, str) else None
        made.function = target if callable(target) else None
        return made


paste_fields: dict[str, dict] = {}
registered_param_bindings: list[ParamBinding] = []


def reset():
    paste_fields.clear()
    registered_param_bindings.clear()


def quote(text):
    """JSON-quote a value only when it would otherwise break the `Key: value, …` line."""
    as_text = str(text)
    if any(mark in as_text for mark in ",:\n"):
        return json.dumps(text, ensure_ascii=False)
    return text


def unquote(text):
    if len(text) < 2 or not (text.startswith('"') and text.endswith('"')):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def add_paste_fields(tabname, init_img, fields, override_settings_component=None):
    paste_fields[tabname] = {
        "init_img": init_img,
        "fields": [f if isinstance(f, PasteField) else PasteField(*f) for f in fields or ()],
        "override_settings_component": override_settings_component,
    }


def register_paste_params_button(binding: ParamBinding):
    registered_param_bindings.append(binding)


# -- parsing -----------------------------------------------------------------------------------------------------------

_KEY_TAIL = re.compile(r"[\w \-/]*")  # matched on the reversed text: anchored, so linear
_NOT_WORD_HEAD = re.compile(r"[ \-/]*")
_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)

# What v1.10.1 assumes when an older infotext does not mention a setting.
_ABSENT_MEANS = {
    "Clip skip": "1",
    "Hires resize-1": 0,
    "Hires resize-2": 0,
    "Hires sampler": "Use same sampler",
    "Hires schedule type": "Use same scheduler",
    "Hires checkpoint": "Use same checkpoint",
    "Hires prompt": "",
    "Hires negative prompt": "",
    "Mask mode": "Inpaint masked",
    "Masked content": "original",
    "Inpaint area": "Whole picture",
    "Masked area padding": 32,
    "RNG": "GPU",
    "Schedule type": "Automatic",
    "Schedule max sigma": 0,
    "Schedule min sigma": 0,
    "Schedule rho": 0,
    "VAE Encoder": "Full",
    "VAE Decoder": "Full",
    "FP8 weight": "Disable",
    "Emphasis": "Original",
    "Refiner switch by sampling steps": False,
}


def _key_of(segment: str) -> str | None:
    """The key at the end of the text before a colon: a word character, then word characters, spaces, - or /."""
    tail = _KEY_TAIL.match(segment[::-1]).end()
    key = segment[len(segment) - tail :]
    key = key[_NOT_WORD_HEAD.match(key).end() :].rstrip()
    return key if len(key) >= 2 else None


def _end_of_quoted(line: str, opening: int) -> int:
    """Index of the quote closing the JSON string that opens at `opening`, or -1."""
    found = _QUOTED.match(line, opening)
    return found.end() - 1 if found else -1


def _pairs(line: str) -> list[tuple[str, str]]:
    """The `Key: value` pairs of a parameters line, in order (one left-to-right pass)."""
    found, at = [], 0
    while True:
        colon = line.find(":", at)
        if colon < 0:
            return found
        key = _key_of(line[at:colon])
        start = colon + 1
        while start < len(line) and line[start] == " ":
            start += 1
        close = _end_of_quoted(line, start) if line.startswith('"', start) else -1
        comma = line.find(",", close + 1 if close >= 0 else start)
        stop = len(line) if comma < 0 else comma
        value = line[start : close + 1] if close >= 0 else line[start:stop]
        if key is not None:
            found.append((key, value.strip() if close < 0 else value))
        if comma < 0:
            return found
        at = comma + 1


def _size(value: str) -> tuple[str, str] | None:
    width, sep, height = value.partition("x")
    return (width, height) if sep and width.isdigit() and height.isdigit() and width.isascii() else None


def parse_generation_parameters(x: str, skip_fields: list[str] | None = None):
    """An infotext as a dict: "Prompt", "Negative prompt", every key of the last line ("WxH" values split into
    `<key>-1`/`<key>-2`), and v1.10.1's assumption for settings an older infotext leaves out."""
    if skip_fields is None:
        skip_fields = shared.opts.infotext_skip_pasting
    *lines, last = x.strip().split("\n")
    pairs = _pairs(last)
    if len(pairs) < 3:
        lines.append(last)
        pairs = []

    prompt, negative, in_negative = [], [], False
    for line in (raw.strip() for raw in lines):
        if line.startswith("Negative prompt:"):
            in_negative, line = True, line[len("Negative prompt:") :].strip()
        (negative if in_negative else prompt).append(line)

    res: dict[str, Any] = {}
    for key, value in pairs:
        value = unquote(value) if value.startswith('"') and value.endswith('"') else value
        size = _size(value) if isinstance(value, str) else None
        if size is None:
            res[key] = value
        else:
            res[f"{key}-1"], res[f"{key}-2"] = size
    res["Prompt"], res["Negative prompt"] = "\n".join(prompt), "\n".join(negative)
    if "Hypernet" in res:
        res["Prompt"] += f"<hypernet:{res['Hypernet']}:{res.get('Hypernet strength', '1.0')}>"
    for key, assumed in _ABSENT_MEANS.items():
        res.setdefault(key, assumed)
    if res["FP8 weight"] != "Disable":
        res.setdefault("Cache FP16 weight for LoRA", False)
    for key in skip_fields:
        res.pop(key, None)
    return res


# -- pasting -----------------------------------------------------------------------------------------------------------


def _as_update(component, value):
    """What pasting `value` into `component` sends: the value converted to the component's value type."""
    if value is None:
        return gr.update()
    if isinstance(value, _UPDATE):
        return value
    kind = type(component.value)
    try:
        if kind is bool:
            return gr.update(value=value != "False" and bool(value))
        return gr.update(value=float(value) if kind is int else kind(value))
    except (TypeError, ValueError):
        return gr.update()


def _last_generation() -> str:
    """The infotext of the last generation (params.txt), as the paste button reads it when the prompt is empty."""
    if shared.cmd_opts.hide_ui_dir_config or shared.cmd_opts.no_prompt_history:
        return ""
    path = os.path.join(paths.data_path, "params.txt")
    if not os.path.exists(path):
        return ""
    with open(path, encoding="utf8") as file:
        return file.read()


def connect_paste(button, paste_fields, input_comp, override_settings_component, tabname):
    """The function the webui binds to a tab's paste button: infotext in, one update per paste field out."""

    def paste(prompt):
        text = prompt or _last_generation()
        params = parse_generation_parameters(text)
        script_callbacks.infotext_pasted_callback(text, params)
        updates = []
        for component, target in paste_fields:
            if callable(target):
                try:
                    value = target(params)
                except Exception:
                    errors.report(f"Error executing {target}", exc_info=True)
                    value = None
            else:
                value = params.get(target)
            updates.append(_as_update(component, value))
        return updates

    return paste


def tab_to_tab_fields(binding: ParamBinding):
    """(inputs, outputs) that a "Send to <tab>" button from another tab's gallery copies, pairwise: the fields of
    both tabs whose target is the prompt, negative prompt, steps, face restoration, the seed (when `opts.send_seed`)
    or one of the binding's paste_field_names. Targets are compared as they are, so a paste function listed in
    paste_field_names also qualifies (as in the webui)."""
    names = ["Prompt", "Negative prompt", "Steps", "Face restoration", *binding.paste_field_names]
    if shared.opts.send_seed:
        names.append("Seed")

    def named(tab):
        return [component for component, target in paste_fields[tab]["fields"] if target in names]

    return named(binding.source_tabname), named(binding.tabname)
