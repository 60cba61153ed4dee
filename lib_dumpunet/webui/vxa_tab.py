"""The "VXA" tab: the cross-attention heat map of an uploaded image, with a token inspector; and its API route.

The tab keeps the original VXA's controls, labels and defaults (image, "Prompt", "Indices of tokens to be
visualized", "Time embedding", "Cross-attention layer", "Output mode", the "Visualize Cross-Attention" button and its
element ids) and adds, in an accordion, what the original lacked: noise at t with a seed, posterior mean or sample,
head aggregation, a colour-map overlay with opacity, the model input size, one map per picked item, saving. Under
the prompt a table shows every token (`lib_dumpunet.tokens`) as the user types. The layer list is read from the
loaded model whenever the tab runs or its refresh button is pressed, and any name is checked against the model at
run time, so a checkpoint switch never leaves stale modules behind. Mistakes show as a message under the output,
never as a silent copy of the input; the image is saved with its settings as PNG info under outputs/vxa.

API (`--api`): POST /dumpunet/v1/vxa with a JSON body — `image` (base64 PNG/JPEG, a data: URL is fine) and any
`VxaSettings` field (prompt, tokens, t, layer, output, noise, seed, latent, heads, opacity, colormap, size), plus
`per_item` and `save` — answers {image, items, info, columns, tokens}; mistakes answer 422 with the message.
POST /dumpunet/v1/tokens {prompt} answers the token table; GET /dumpunet/v1/vxa/layers the layer choices.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
from dataclasses import fields
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from modules import call_queue, images, script_callbacks, shared
from modules.paths_internal import default_output_dir
from modules.ui_components import ToolButton
from PIL import Image

from lib_dumpunet.errors import DumpUnetError
from lib_dumpunet.layout import UNetLayout
from lib_dumpunet.overlay import COLORMAPS, MODES
from lib_dumpunet.tokens import TABLE_HEADERS
from lib_dumpunet.vxa import (
    ALL_LAYERS,
    DEFAULT_LAYER,
    HEAD_MODES,
    LATENT_MODES,
    LAYER_LABEL,
    TIME_LABEL,
    TOKENS_LABEL,
    VxaResult,
    VxaSettings,
    layer_choices,
    parse_time,
    visualize,
)
from lib_dumpunet.webui.host import loaded_model, unet_of
from lib_dumpunet.webui.tokens import token_table
from lib_dumpunet.webui.vxa_host import WebuiVxaHost

__all__ = [
    "API_ROUTE",
    "TAB_ID",
    "TAB_TITLE",
    "VxaRun",
    "add_api",
    "layers_now",
    "on_ui_tabs",
    "register",
    "run",
    "token_inspector",
    "token_inspector_section",
]

log = logging.getLogger(__name__)

TAB_TITLE = "VXA"
TAB_ID = "visualize_cross_attention"
API_ROUTE = "/dumpunet/v1/vxa"
SUBFOLDER = "vxa"
_DEFAULTS = VxaSettings()
_FALLBACK_LAYERS = [ALL_LAYERS, DEFAULT_LAYER]
_TOKENS_PLACEHOLDER = (
    '"1, 3" means the sum of tokens 1 and 3; words work too: "hat, neck"; ranges: "4-6". Blank: every prompt token.'
)


# --------------------------------------------------------------------------------------------------------------------
# Running


def layers_now() -> list[str]:
    """The layer choices of the model loaded now (never starts a load)."""
    unet = unet_of(loaded_model())
    return layer_choices(UNetLayout(unet)) if unet is not None else list(_FALLBACK_LAYERS)


class VxaRun:
    """One press of the button (or one API call): settings in, result and saved file out."""

    def __init__(self, image: Any, settings: VxaSettings, *, save: bool) -> None:
        self.image = image
        self.settings = settings
        self.save = save
        self.result: VxaResult | None = None
        self.saved: str | None = None

    def __call__(self) -> VxaResult:
        model = shared.sd_model
        host = WebuiVxaHost(model)
        result = visualize(host, self.image, self.settings)
        result.extra.update(host.facts())
        self.result = result
        if self.save:
            self.saved = _save(result)
        return result


def _save(result: VxaResult) -> str | None:
    folder = Path(shared.opts.outdir_samples or default_output_dir) / SUBFOLDER
    fullfn, _ = images.save_image(
        Image.fromarray(result.render()),
        str(folder),
        "vxa",
        seed=result.settings.seed,
        prompt=result.settings.prompt,
        extension="png",
        info=result.infotext(),
        no_prompt=True,
    )
    return fullfn


def run(image: Any, settings: VxaSettings, *, save: bool = False, per_item: bool = False) -> dict[str, Any]:
    """Run VXA on the loaded model; what the tab and the API show. The caller holds the webui's queue lock (the
    button through `wrap_gradio_gpu_call`, the API route itself)."""
    job = VxaRun(image, settings, save=save)
    result = job()
    return {
        "image": result.render(),
        "items": result.per_item() if per_item else [],
        "info": result.infotext(),
        "columns": list(result.pick.positions),
        "tokens": result.table.table(),
        "saved": job.saved,
    }


def _settings(prompt, tokens, t, layer, output, noise, seed, latent, heads, opacity, colormap, size) -> VxaSettings:
    return VxaSettings(
        prompt=prompt or "",
        tokens=tokens or "",
        t=parse_time(t),
        layer=layer or DEFAULT_LAYER,
        output=output,
        noise=bool(noise),
        seed=int(seed if seed not in (None, "") else _DEFAULTS.seed),
        latent=_latent_value(latent),
        heads=heads,
        opacity=float(opacity),
        colormap=colormap,
        size=int(size or 0),
    )


_LATENT_LABELS = {"mean": "posterior mean", "sample": "posterior sample (seeded)"}


def _latent_value(label: str) -> str:
    for value, text in _LATENT_LABELS.items():
        if label in (value, text):
            return value
    return str(label)


def _message(text: str, *, error: bool) -> str:
    colour = "var(--error-text-color, #c00)" if error else "inherit"
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\n", "<br>")
    return f"<div class='dumpunet-vxa-message' style='color:{colour};white-space:pre-wrap'>{escaped}</div>"


def _on_click(image, prompt, tokens, t, layer, output, noise, seed, latent, heads, opacity, colormap, size, per, save):
    """The button: (output image, per-item gallery, token table, layer dropdown update, message)."""
    refresh = gr.update(choices=layers_now())
    try:
        settings = _settings(prompt, tokens, t, layer, output, noise, seed, latent, heads, opacity, colormap, size)
        shown = run(image, settings, save=bool(save), per_item=bool(per))
    except DumpUnetError as err:
        hidden = gr.update(value=[], visible=False)
        return None, hidden, _table_or_empty(prompt), refresh, _message(str(err), error=True)
    note = f"{shown['info']}" + (f"\nSaved: {shown['saved']}" if shown["saved"] else "")
    items = [(Image.fromarray(img), label) for label, img in shown["items"]]
    gallery = gr.update(value=items, visible=bool(items))
    return shown["image"], gallery, shown["tokens"], refresh, _message(note, error=False)


def _table_or_empty(prompt: str) -> list[list]:
    try:
        return token_table(prompt or "", loaded_model()).table()
    except DumpUnetError:
        return []


def inspect_tokens(prompt: str) -> tuple[list[list], str]:
    """The token inspector's table for `prompt`, and a message if it cannot be built."""
    try:
        return token_table(prompt or "", loaded_model()).table(), ""
    except DumpUnetError as err:
        return [], _message(str(err), error=True)


# --------------------------------------------------------------------------------------------------------------------
# UI


def token_inspector(prompt: gr.Textbox, *, elem_id: str) -> gr.Dataframe:
    """A table of the prompt's tokens that follows the prompt box as the user types; returns the table."""
    table = gr.Dataframe(
        headers=list(TABLE_HEADERS),
        value=[],
        label="Tokens (position = the column to pick; words can be picked by name)",
        interactive=False,
        wrap=True,
        elem_id=elem_id,
    )
    note = gr.HTML(elem_classes=[f"{elem_id}-message"])  # gradio 3.41 puts an HTML id on two elements
    prompt.change(fn=inspect_tokens, inputs=[prompt], outputs=[table, note], show_progress=False)
    return table


def token_inspector_section(elem_id: str) -> gr.Dataframe:
    """A closed accordion with a prompt box and its token table, for tabs that have no prompt of their own (the
    Attention tab): which column of a Q*K map is which token."""
    with gr.Accordion("Token inspector", open=False, elem_id=elem_id):
        prompt = gr.Textbox(
            label="Prompt to inspect",
            lines=2,
            placeholder="Paste a prompt to see its tokens, their Q*K columns, words, chunks, weights and embeddings",
            elem_id=f"{elem_id}-prompt",
        )
        return token_inspector(prompt, elem_id=f"{elem_id}-table")


def _inputs_section() -> dict[str, Any]:
    w: dict[str, Any] = {}
    w["image"] = gr.Image(label="Image", source="upload", type="numpy", elem_id="vxa_input_image")
    w["prompt"] = gr.Textbox(
        label="Prompt", lines=2, placeholder="Prompt to be visualized", value=_DEFAULTS.prompt, elem_id="vxa_prompt"
    )
    w["tokens"] = gr.Textbox(
        label=TOKENS_LABEL, lines=2, placeholder=_TOKENS_PLACEHOLDER, value=_DEFAULTS.tokens, elem_id="vxa_tokens"
    )
    w["t"] = gr.Textbox(label=TIME_LABEL, value=str(_DEFAULTS.t), elem_id="vxa_time")
    with gr.Row():
        w["layer"] = gr.Dropdown(
            label=LAYER_LABEL,
            choices=layers_now(),
            value=_DEFAULTS.layer,
            allow_custom_value=True,
            elem_id="vxa_layer",
        )
        w["refresh"] = ToolButton(value="\U0001f504", elem_id="vxa_refresh_layers")
    w["output"] = gr.Dropdown(label="Output mode", choices=list(MODES), value=_DEFAULTS.output, elem_id="vxa_mode")
    return w


def _more_section() -> dict[str, Any]:
    w: dict[str, Any] = {}
    with gr.Accordion("More (not in the original VXA)", open=False, elem_id="vxa_more"):
        with gr.Row():
            w["noise"] = gr.Checkbox(label="Add noise at t", value=_DEFAULTS.noise, elem_id="vxa_noise")
            w["seed"] = gr.Number(label="Seed (-1: random)", value=_DEFAULTS.seed, precision=0, elem_id="vxa_seed")
        w["latent"] = gr.Radio(
            label="Latent",
            choices=[_LATENT_LABELS[m] for m in LATENT_MODES],
            value=_LATENT_LABELS[_DEFAULTS.latent],
            elem_id="vxa_latent",
        )
        w["heads"] = gr.Radio(label="Heads", choices=list(HEAD_MODES), value=_DEFAULTS.heads, elem_id="vxa_heads")
        with gr.Row():
            w["opacity"] = gr.Slider(
                label="Colour overlay opacity", minimum=0, maximum=1, step=0.05, value=_DEFAULTS.opacity
            )
            w["colormap"] = gr.Dropdown(label="Colour map", choices=list(COLORMAPS), value=_DEFAULTS.colormap)
        w["size"] = gr.Number(
            label="Model input size (longest side; 0 = the image's own)", value=_DEFAULTS.size, precision=0
        )
        with gr.Row():
            w["per_item"] = gr.Checkbox(label="Also one map per picked item", value=False, elem_id="vxa_per_item")
            w["save"] = gr.Checkbox(label="Save to outputs/vxa (with PNG info)", value=True, elem_id="vxa_save")
    return w


def _outputs_section() -> dict[str, Any]:
    w: dict[str, Any] = {}
    w["output_image"] = gr.Image(label="Output", interactive=False, elem_id="vxa_output")
    w["gallery"] = gr.Gallery(label="One map per item", elem_id="vxa_items", columns=4, visible=False)
    w["message"] = gr.HTML(elem_classes=["vxa_message"])
    return w


def build() -> tuple[gr.Blocks, dict[str, Any]]:
    """The tab's Blocks and its components by name."""
    with gr.Blocks(analytics_enabled=False) as tab:
        with gr.Row(equal_height=False):
            with gr.Column():
                w = _inputs_section()
                w.update(_more_section())
                w["button"] = gr.Button("Visualize Cross-Attention", variant="primary", elem_id="vxa_gen_btn")
            with gr.Column():
                w.update(_outputs_section())
                w["table"] = token_inspector(w["prompt"], elem_id="vxa_token_table")
        order = ["image", "prompt", "tokens", "t", "layer", "output", "noise", "seed", "latent", "heads"]
        inputs = [w[k] for k in (*order, "opacity", "colormap", "size", "per_item", "save")]
        outputs = [w["output_image"], w["gallery"], w["table"], w["layer"], w["message"]]
        w["button"].click(
            fn=call_queue.wrap_gradio_gpu_call(_on_click, extra_outputs=[None, gr.update(), [], gr.update()]),
            inputs=inputs,
            outputs=outputs,
        )
        w["refresh"].click(fn=lambda: gr.update(choices=layers_now()), inputs=[], outputs=[w["layer"]])
    return tab, w


def on_ui_tabs():
    tab, _ = build()
    return [(tab, TAB_TITLE, TAB_ID)]


# --------------------------------------------------------------------------------------------------------------------
# API


_API_FIELDS = {f.name for f in fields(VxaSettings)}


def decode_image(text: str) -> np.ndarray:
    """A base64 image (optionally a data: URL) as RGB uint8."""
    if not isinstance(text, str) or not text:
        msg = "no image: send the image as a base64 string in 'image'"
        raise DumpUnetError(msg)
    payload = text.split(",", 1)[1] if text.startswith("data:") else text
    try:
        with Image.open(io.BytesIO(base64.b64decode(payload, validate=True))) as img:
            return np.asarray(img.convert("RGB"))
    except (binascii.Error, ValueError, OSError) as exc:
        msg = f"'image' is not a base64-encoded PNG/JPEG/WebP image ({exc})"
        raise DumpUnetError(msg) from exc


def encode_image(rgb: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def api_settings(body: dict[str, Any]) -> VxaSettings:
    """A request body's settings; unknown keys are refused (a typo would silently use a default)."""
    unknown = set(body) - _API_FIELDS - {"image", "per_item", "save"}
    if unknown:
        msg = f"unknown field(s) {', '.join(sorted(unknown))}; known: image, per_item, save, {', '.join(_API_FIELDS)}"
        raise DumpUnetError(msg)
    values = {k: v for k, v in body.items() if k in _API_FIELDS}
    if "t" in values:
        values["t"] = parse_time(values["t"])
    try:
        return VxaSettings(**values)
    except TypeError as exc:
        raise DumpUnetError(str(exc)) from exc


def api_vxa(body: dict[str, Any]) -> dict[str, Any]:
    """POST /dumpunet/v1/vxa (see the module docstring). Raises DumpUnetError for a bad request."""
    if not isinstance(body, dict):
        msg = "the request body must be a JSON object"
        raise DumpUnetError(msg)
    settings = api_settings(body)
    image = decode_image(body.get("image", ""))
    with call_queue.queue_lock:
        shown = run(image, settings, save=bool(body.get("save")), per_item=bool(body.get("per_item")))
    return {
        "image": encode_image(shown["image"]),
        "items": [{"label": label, "image": encode_image(img)} for label, img in shown["items"]],
        "info": shown["info"],
        "columns": shown["columns"],
        "tokens": {"headers": list(TABLE_HEADERS), "rows": shown["tokens"]},
        "saved": shown["saved"],
    }


def add_api(_demo: Any, app: Any) -> None:
    """on_app_started: the VXA and token routes."""
    from fastapi import Body
    from fastapi.responses import JSONResponse

    def vxa(body: dict = Body(...)):  # noqa: B008 - FastAPI's way to read a JSON body
        try:
            return api_vxa(body)
        except DumpUnetError as err:
            return JSONResponse(status_code=422, content={"detail": str(err)})

    def tokens(body: dict = Body(...)):  # noqa: B008
        try:
            table = token_table(str(body.get("prompt", "")), loaded_model())
        except DumpUnetError as err:
            return JSONResponse(status_code=422, content={"detail": str(err)})
        return {"headers": list(TABLE_HEADERS), "rows": table.table(), "labels": table.labels()}

    app.add_api_route(API_ROUTE, vxa, methods=["POST"])
    app.add_api_route("/dumpunet/v1/tokens", tokens, methods=["POST"])
    app.add_api_route(f"{API_ROUTE}/layers", lambda: {"layers": layers_now()}, methods=["GET"])


def register() -> None:
    """Called once by scripts/dumpunet.py."""
    script_callbacks.on_ui_tabs(on_ui_tabs)
    script_callbacks.on_app_started(add_api)
