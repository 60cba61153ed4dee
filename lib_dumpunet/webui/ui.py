"""The gradio UI (webui 1.10's gradio 3.41), built from small section functions.

Both entries show the original's four tabs — U-Net features, Attention, Layer Prompt, Settings — with its labels,
defaults and ranges. Every input is created for one settings field (`lib_dumpunet.settings.FIELDS`) and `Widgets`
returns them in that order, which is the order the webui hands them back to the script. Each output tab ends with
"Selected Layer Info": the blocks the Layers field selects, with their contents and shapes at the current width and
height, or the message of whatever is wrong with the tab's input — computed by the server (`info.tab_info`),
refreshed as the user types, so no grammar is duplicated in JavaScript.

Every `elem_id` is unique in the page: each is scoped by the UI's prefix, and HTML blocks get classes instead,
because gradio 3.41 writes an HTML component's id on two nested elements.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from lib_dumpunet.colorize import METHODS, NORMALIZE, SPACES, TRANSFORMS
from lib_dumpunet.settings import ATTENTION_OUTPUTS, AVERAGE_CHOICES, FIELDS, LATENT_DECODERS
from lib_dumpunet.webui.heatmap_tab import heatmap_tab
from lib_dumpunet.webui.vxa_tab import token_inspector_section

__all__ = ["TABS", "Widgets", "build"]

TABS = (("features", "U-Net features"), ("attention", "Attention"), ("layer_prompt", "Layer Prompt"))
_ID_TABS = {"features": "features", "attention": "attention", "layer_prompt": "layerprompt-diff"}
_DEFAULTS = {f.path: f.default for f in FIELDS}

# Where the original recommended settings for each tab (its JavaScript filled these in).
_RECOMMENDED = {
    "features": "Recommended: Custom / Sigmoid (gain=1.0, offset=0.0) / HSL; H=(2+v)/3, S=1.0, L=0.5",
    "attention": "Recommended: Custom / Auto [0,1] / HSL; H=(2-2*v)/3, S=1.0, L=0.5",
    "layer_prompt": "Recommended: Custom / Sigmoid (gain=1.0, offset=0.0) / HSL; H=(2+v)/3, S=1.0, L=0.5",
}

_LINEAR = "Linear: values clamped to [min, max], then scaled to [0,1] (White/Black) or [-1,1]."
_SIGMOID = "Sigmoid: 1/(1+exp(-gain·(v+offset))), scaled to [0,1] (White/Black) or [-1,1]."
_CHANNEL = "A numpy expression in v; the result is clipped to [0, 1]."

# refresh(tab, {settings path: value}, width, height) -> HTML of the tab's info panel
Refresh = Callable[[str, dict[str, Any], int, int], str]


@dataclass
class Widgets:
    """The components of one UI, by settings path, plus each tab's info panel and the inputs that refresh it."""

    prefix: str
    inputs: dict[str, gr.components.Component] = field(default_factory=dict)
    infos: dict[str, gr.HTML] = field(default_factory=dict)
    watched: dict[str, list[str]] = field(default_factory=dict)  # tab -> settings paths

    def id(self, suffix: str) -> str:
        return f"{self.prefix}-{suffix}"

    def add(self, path: str, component: gr.components.Component) -> gr.components.Component:
        self.inputs[path] = component
        return component

    def ordered(self) -> list[gr.components.Component]:
        """The inputs in settings field order: what `ui()` returns."""
        return [self.inputs[f.path] for f in FIELDS]

    def connect_info(self, refresh: Refresh, size: Sequence[gr.components.Component] = ()) -> None:
        """Refresh every tab's info panel when its watched inputs (or the width and height sliders) change."""
        for tab, info in self.infos.items():
            paths = self.watched[tab]
            watched = [self.inputs[path] for path in paths]

            def update(*values: Any, tab: str = tab, paths: list[str] = paths) -> str:
                width, height = values[len(paths) :] or (512, 512)
                return refresh(tab, dict(zip(paths, values, strict=False)), int(width), int(height))

            for component in [*watched, *size]:
                component.change(fn=update, inputs=[*watched, *size], outputs=[info], show_progress=False)


def build(prefix: str) -> Widgets:
    """Build the four tabs and the fifth, Word heat maps, in the current gradio context; `prefix` scopes ids."""
    w = Widgets(prefix)
    with gr.Group(elem_id=w.id("ui")):
        with gr.Tab("U-Net features", elem_id=w.id("features-tab")):
            features_tab(w)
        with gr.Tab("Attention", elem_id=w.id("attention-tab")):
            attention_tab(w)
        with gr.Tab("Layer Prompt", elem_id=w.id("layerprompt-tab")):
            layer_prompt_tab(w)
        with gr.Tab("Settings", elem_id=w.id("settings-tab")):
            settings_tab(w)
        with gr.Tab("Word heat maps", elem_id=w.id("heatmap-tab")):
            heatmap_tab(w)
    missing = [f.path for f in FIELDS if f.path not in w.inputs]
    if missing:
        msg = f"UI has no component for settings {missing}"
        raise RuntimeError(msg)
    return w


# --- tabs --------------------------------------------------------------------------------------------------------


def features_tab(w: Widgets) -> None:
    w.add(
        "features.enabled",
        gr.Checkbox(
            False,
            label="Extract U-Net features",
            elem_id=w.id("features-checkbox"),
            info="Extract U-Net features and add their maps to output images.",
        ),
    )
    blocks_and_steps(
        w,
        "features",
        "U-Net layers (IN00-IN11, M00, OUT00-OUT11) whose outputs are extracted, and the views latent (the U-Net's "
        "input), x0 (the guided clean-latent prediction), cfg (|cond − uncond|), named alone: latent,IN04,x0,cfg.",
    )
    average(w, "features", "Add a channel-averaged map before each grid.")
    w.add(
        "features.latent_decoder",
        gr.Radio(
            list(LATENT_DECODERS),
            value=_DEFAULTS["features.latent_decoder"],
            label="Latent views through",
            elem_id=w.id("features-latent-decoder"),
            info="approx: the webui's cheap linear latent → RGB preview (fast). vae: the model's VAE (slow on CPU).",
        ),
    )
    colorization(w, "features")
    dump_setting(w, "features", "Dump feature tensors to files")
    layer_info(w, "features")


def attention_tab(w: Widgets) -> None:
    w.add(
        "attention.enabled",
        gr.Checkbox(
            False,
            label="Extract attention layers' features",
            elem_id=w.id("attention-checkbox"),
            info="Cross-attention (K, Q*K, V*Q*K) and self-attention maps of the chosen blocks' transformers.",
        ),
    )
    blocks_and_steps(w, "attention", "Blocks whose attention layers are extracted (blocks with transformers).")
    average(w, "attention", "For K and Q*K, a head-averaged map; for V*Q*K, a channel-averaged map.")
    with gr.Row():
        w.add(
            "attention.outputs",
            gr.CheckboxGroup(
                list(ATTENTION_OUTPUTS),
                value=list(_DEFAULTS["attention.outputs"]),
                label="Output features",
                elem_id=w.id("attention-outputs"),
                info="K: keys (heads × tokens × dim). Q*K: where each token is attended, tokens as columns and "
                "heads as rows. V*Q*K: attention output before to_out, one tile per channel.",
            ),
        )
        w.add(
            "attention.token_labels",
            gr.Checkbox(
                True,
                label="Token labels",
                elem_id=w.id("attention-token-labels"),
                info="Write the token under each Q*K column (BOS, words, padding, EOS).",
            ),
        )
    with gr.Row():
        w.add(
            "attention.self_attention",
            gr.Checkbox(
                False,
                label="Self-attention",
                elem_id=w.id("attention-self"),
                info="Where chosen query points of the image look (attn1), one map per point and head.",
            ),
        )
        w.add(
            "attention.query_points",
            gr.Textbox(
                _DEFAULTS["attention.query_points"],
                label="Query points",
                placeholder="eg. 4x4 or 0.5,0.5; 0.25,0.75",
                elem_id=w.id("attention-points"),
                info="A grid such as 4x4, or x,y fractions of width and height separated by ';'.",
            ),
        )
    w.watched["attention"] += ["attention.outputs", "attention.self_attention", "attention.query_points"]
    token_inspector_section(w.id("attention-token-inspector"))  # which Q*K column is which token
    prompt_tensor_section(w)
    colorization(w, "attention")
    dump_setting(w, "attention", "Dump feature tensors to files")
    layer_info(w, "attention")


def prompt_tensor_section(w: Widgets) -> None:
    """Attention tab › "Prompt tensor": the conditioning itself, drawn; it needs none of the tab's other inputs."""
    with gr.Accordion("Prompt tensor", open=False):
        w.add(
            "prompt_tensor.enabled",
            gr.Checkbox(
                False,
                label="Show the prompt tensor",
                elem_id=w.id("attention-prompt-tensor"),
                info="What the U-Net's cross-attention reads — 77 rows per chunk × the text encoder's width (768 SD1, "
                "1024 SD2, 2048 SDXL) — as a picture labelled with its tokens: each AND sub-prompt, the negative "
                "prompt, each per-block text, each prompt-editing entry. Works on its own, without the maps above.",
            ),
        )
        with gr.Row():
            w.add(
                "prompt_tensor.percentile",
                gr.Slider(
                    50,
                    100,
                    value=_DEFAULTS["prompt_tensor.percentile"],
                    step=0.5,
                    label="Colour range percentile",
                    elem_id=w.id("attention-prompt-tensor-percentile"),
                    info="Blue (negative) to red (positive) reach their ends at this percentile of |value| over all "
                    "of the job's prompt tensors, one scale for all of them; larger values are clipped.",
                ),
            )
            w.add(
                "prompt_tensor.negative",
                gr.Checkbox(
                    _DEFAULTS["prompt_tensor.negative"],
                    label="Also the negative prompt",
                    elem_id=w.id("attention-prompt-tensor-negative"),
                    info="Draw the negative prompt's tensor (and its per-block texts) too.",
                ),
            )


def layer_prompt_tab(w: Widgets) -> None:
    w.add(
        "layer_prompt.enabled",
        gr.Checkbox(
            False,
            label="Enable Layer Prompt",
            elem_id=w.id("layerprompt-checkbox"),
            info="When checked, (~: BLOCKS: text ; BLOCKS: text :~) in prompts gives blocks their own text.",
        ),
    )
    w.add(
        "layer_prompt.diff",
        gr.Checkbox(
            False,
            label="Output difference map of U-Net features between with and without Layer Prompt",
            elem_id=w.id("layerprompt-diff-checkbox"),
            info="Runs the job twice with the same seed and settings: with the per-block prompts minus without them.",
        ),
    )
    blocks_and_steps(w, "layer_prompt", "Blocks whose difference maps are shown.")
    average(w, "layer_prompt", "Add a channel-averaged map before each difference grid.")
    colorization(w, "layer_prompt")
    dump_setting(w, "layer_prompt", "Dump difference tensors to files")
    layer_info(w, "layer_prompt")


def settings_tab(w: Widgets) -> None:
    w.add(
        "output.save_images",
        gr.Checkbox(
            False,
            label="Save generated images",
            elem_id=w.id("settings-save"),
            info="Also save every map, named after its image (same number and seed) with a suffix.",
        ),
    )
    w.add(
        "output.save_path",
        gr.Textbox(
            "",
            label="Save path (if empty, images will be saved to default output directory)",
            elem_id=w.id("settings-save-path"),
            info="Relative to the webui's output folder (only there while the webui is shared).",
        ),
    )
    with gr.Row():
        w.add(
            "output.uncond",
            gr.Checkbox(
                False,
                label="Also extract the negative prompt's rows",
                elem_id=w.id("settings-uncond"),
                info="Maps of the uncond (negative prompt) rows too, marked 'uncond'.",
            ),
        )
        w.add(
            "output.fp16",
            gr.Checkbox(
                False,
                label="Keep captured tensors in fp16",
                elem_id=w.id("settings-fp16"),
                info="Half the memory for captures, at fp16 precision.",
            ),
        )
    w.add(
        "output.debug",
        gr.Checkbox(
            False,
            label="log to stderr",
            elem_id=w.id("settings-debug"),
            info="Verbose Dump U-Net messages in the webui's console.",
        ),
    )
    w.add(
        "output.display_min",
        gr.Slider(
            0,
            1024,
            value=_DEFAULTS["output.display_min"],
            step=32,
            label="Enlarge small maps in the gallery to at least (px)",
            elem_id=w.id("settings-display-min"),
            info="Maps whose longer side is shorter are scaled up by a whole factor, pixels kept sharp; larger maps "
            "never change. Saved files keep their own size. 0 = never.",
        ),
    )


# --- sections shared by the output tabs ----------------------------------------------------------------------------


def blocks_and_steps(w: Widgets, tab: str, layers_info: str) -> None:
    ids = _ID_TABS[tab]
    w.add(
        f"{tab}.layers",
        gr.Textbox(
            "",
            label="Layers",
            placeholder="eg. IN00-OUT03(+2),OUT10",
            elem_id=w.id(f"{ids}-layer"),
            info=f"{layers_info} IN00 · IN00,IN01 · IN00-IN02 · IN00-OUT05(+2) = every other block.",
        ),
    )
    w.add(
        f"{tab}.steps",
        gr.Textbox(
            "",
            label="Image saving steps",
            placeholder="eg. 1,5-20(+5)",
            elem_id=w.id(f"{ids}-steps"),
            info="Sampler steps, from 1: 5 · 5,10 · 5-10 · 5-10(+2) = 5,7,9. Empty = every step.",
        ),
    )
    w.watched[tab] = [f"{tab}.enabled", f"{tab}.layers", f"{tab}.steps"]


def average(w: Widgets, tab: str, info: str) -> None:
    w.add(
        f"{tab}.average",
        gr.Radio(
            list(AVERAGE_CHOICES),
            value="disable",
            label="Show averaged map",
            elem_id=w.id(f"{_ID_TABS[tab]}-average"),
            info=f"{info} sum = mean, 1-norm = mean |v|, 2-norm = sqrt(Σv²)/C.",
        ),
    )


def colorization(w: Widgets, tab: str) -> None:
    """The "Colorization" accordion; its rows show and hide with the method, transform and colour space."""
    p = f"{tab}.colors"
    ids = _ID_TABS[tab]
    with gr.Accordion("Colorization", open=False):
        gr.HTML(
            f"<p class='dumpunet-description'>{_RECOMMENDED[tab]}</p>", elem_classes=[w.id(f"{ids}-colorization-desc")]
        )
        method = w.add(
            f"{p}.method",
            gr.Radio(
                list(METHODS),
                value="Custom",
                label="Colorize method",
                elem_id=w.id(f"{ids}-colorization-method"),
                info="White/Black: |v|=1 white, 0 black. Red/Blue: v=1 red, v=-1 blue. Custom: your expressions.",
            ),
        )
        trans = w.add(
            f"{p}.transform",
            gr.Radio(
                list(TRANSFORMS),
                value="Auto [0,1]",
                label="Value transform",
                elem_id=w.id(f"{ids}-colorization-trans"),
                info="How raw values become v: scaled to [0,1] or [-1,1], clamped (Linear) or squashed (Sigmoid).",
            ),
        )
        with gr.Row(visible=False) as linear_row:
            w.add(f"{p}.clamp_min", gr.Slider(-10, -0.1, value=-1, step=0.1, label="Clamp min.", info=_LINEAR))
            w.add(f"{p}.clamp_max", gr.Slider(0.1, 10, value=1, step=0.1, label="Clamp max.", info=_LINEAR))
        with gr.Row(visible=False) as sigmoid_row:
            w.add(f"{p}.gain", gr.Slider(0.1, 10, value=1.0, step=0.1, label="gain", info=_SIGMOID))
            w.add(f"{p}.offset", gr.Slider(-10, 10, value=0.0, step=0.1, label="offset X", info=_SIGMOID))
        w.add(
            f"{p}.normalize",
            gr.Radio(
                list(NORMALIZE),
                value="tile",
                label="Normalization",
                elem_id=w.id(f"{ids}-colorization-normalize"),
                info="tile: each map on its own min/max (the original). block: one scale for the whole grid.",
            ),
        )
        with gr.Group(visible=True, elem_id=w.id(f"{ids}-colorization-custom")) as custom:
            space = w.add(
                f"{p}.space",
                gr.Radio(
                    list(SPACES),
                    value="HSL",
                    label="Color space",
                    info="Numpy expressions in v (in [0,1] or [-1,1] by the transform): abs, exp, sin, where, clip, "
                    "maximum, minimum, pi … Nothing else is evaluated.",
                ),
            )
            with gr.Row(visible=False) as rgb_row:
                for channel in "rgb":
                    w.add(f"{p}.{channel}", gr.Textbox("abs(v)", label=channel.upper(), info=_CHANNEL))
            with gr.Row(visible=True) as hsl_row:
                w.add(f"{p}.h", gr.Textbox("(2+v)/3", label="H", info="Hue in turns (wraps at 1)."))
                w.add(f"{p}.s", gr.Textbox("1.0", label="S", info=_CHANNEL))
                w.add(f"{p}.l", gr.Textbox("0.5", label="L", info=_CHANNEL))
    method.change(lambda m: gr.update(visible=m == "Custom"), inputs=[method], outputs=[custom], show_progress=False)
    trans.change(
        lambda t: (gr.update(visible=t == "Linear"), gr.update(visible=t == "Sigmoid")),
        inputs=[trans],
        outputs=[linear_row, sigmoid_row],
        show_progress=False,
    )
    space.change(
        lambda s: (gr.update(visible=s == "RGB"), gr.update(visible=s == "HSL")),
        inputs=[space],
        outputs=[rgb_row, hsl_row],
        show_progress=False,
    )
    w.watched[tab] += [f"{p}.{c}" for c in ("method", "space", "r", "g", "b", "h", "s", "l")]


def dump_setting(w: Widgets, tab: str, label: str) -> None:
    ids = _ID_TABS[tab]
    with gr.Accordion("Dump Setting", open=False):
        w.add(
            f"{tab}.dump.enabled",
            gr.Checkbox(
                False,
                label=label,
                elem_id=w.id(f"{ids}-dump-checkbox"),
                info="Write the captured tensors themselves, for your own analysis.",
            ),
        )
        w.add(
            f"{tab}.dump.folder",
            gr.Textbox(
                "",
                label="Output path",
                placeholder="eg. dumps/run1 (inside the webui's output folder)",
                elem_id=w.id(f"{ids}-dumppath"),
                info="Each job writes a new sub-folder: one .npy per tensor and manifest.jsonl.",
            ),
        )
        w.add(
            f"{tab}.dump.format",
            gr.Radio(
                ["npy", "legacy"],
                value="npy",
                label="Format",
                elem_id=w.id(f"{ids}-dump-format"),
                info="legacy: the original's raw float32 .bin per channel.",
            ),
        )


def layer_info(w: Widgets, tab: str) -> None:
    with gr.Accordion("Selected Layer Info", open=False):
        w.infos[tab] = gr.HTML("", elem_classes=["dumpunet-layerinfo", w.id(f"{_ID_TABS[tab]}-layerinfo")])
