"""The "Word heat maps" tab and its delivery: where chosen words of the prompt went in each generated image.

`heatmap_tab` builds the tab's inputs, one per `heatmap.*` settings field. Before generation `check_words` looks up
the words in every prompt of the job with the loaded model's own token inspector, so a word that is in no
sub-prompt stops the job with its message. After generation `word_pictures` turns what the job's word recorder kept
for one image into gallery maps over that image as the webui shows it (the hires-fix result when there is one):
one per word, the strip of all words, and per-step strips when asked (`lib_dumpunet.heatmap`).
"""

from __future__ import annotations

from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from lib_dumpunet.heatmap import (
    NEGATIVE_FIELD,
    HeatmapSettings,
    WordColumns,
    find_words,
    map_images,
    render_words,
    word_heats,
)
from lib_dumpunet.job import Job
from lib_dumpunet.overlay import COLORMAPS, MODES
from lib_dumpunet.render import MapImage
from lib_dumpunet.vxa import HEAD_MODES
from lib_dumpunet.webui.tokens import token_table

__all__ = ["check_words", "heatmap_tab", "word_pictures"]

_DEFAULTS = HeatmapSettings()


def heatmap_tab(w: Any) -> None:
    """The tab's inputs, added to `w` (the UI's `Widgets`) under their settings paths."""
    w.add(
        "heatmap.enabled",
        gr.Checkbox(
            False,
            label="Word heat maps",
            elem_id=w.id("heatmap-checkbox"),
            info="After each image, where the chosen words' tokens were attended (cross-attention), over the image.",
        ),
    )
    with gr.Row():
        w.add(
            "heatmap.words",
            gr.Textbox(
                "",
                label="Words",
                placeholder="eg. cat, red hat, 5",
                elem_id=w.id("heatmap-words"),
                info="Words or phrases of the prompt (every AND sub-prompt, every chunk), or column numbers; "
                "quote a word that is a number. Empty = each word of the prompt.",
            ),
        )
        w.add(
            "heatmap.negative_words",
            gr.Textbox(
                "",
                label="Negative words",
                placeholder="eg. blurry",
                elem_id=w.id("heatmap-negative-words"),
                info="Words of the negative prompt (their rows are recorded too). Empty = none.",
            ),
        )
    with gr.Row():
        w.add(
            "heatmap.layers",
            gr.Textbox(
                _DEFAULTS.layers,
                label="Layers",
                placeholder="all, or eg. IN04-OUT05",
                elem_id=w.id("heatmap-layers"),
                info="all = every cross-attention layer; or blocks (IN04-M00, OUT03); blocks without one are skipped.",
            ),
        )
        w.add(
            "heatmap.steps",
            gr.Textbox(
                "",
                label="Steps",
                placeholder="eg. 1-10",
                elem_id=w.id("heatmap-steps"),
                info="Sampler steps summed into the map: 5-10 · 1,5-20(+5). Empty = every step.",
            ),
        )
    with gr.Row():
        w.add(
            "heatmap.output",
            gr.Radio(
                list(MODES),
                value=_DEFAULTS.output,
                label="Output mode",
                elem_id=w.id("heatmap-output"),
                info="masked: the image darkened where cold; grey: the map alone; colour: a colour map over the image.",
            ),
        )
        w.add(
            "heatmap.colormap",
            gr.Radio(
                list(COLORMAPS),
                value=_DEFAULTS.colormap,
                label="Colour map",
                elem_id=w.id("heatmap-colormap"),
                info="Colour mode only: jet (blue → red), hot (black → white), grey.",
            ),
        )
        w.add(
            "heatmap.heads",
            gr.Radio(
                list(HEAD_MODES),
                value=_DEFAULTS.heads,
                label="Heads",
                elem_id=w.id("heatmap-heads"),
                info="How each layer's attention heads are combined: their mean, or their maximum.",
            ),
        )
    with gr.Row():
        w.add(
            "heatmap.opacity",
            gr.Slider(
                0.0,
                1.0,
                value=_DEFAULTS.opacity,
                step=0.05,
                label="Opacity",
                elem_id=w.id("heatmap-opacity"),
                info="Colour mode: 0 shows the image, 1 the map.",
            ),
        )
        w.add(
            "heatmap.per_step",
            gr.Checkbox(
                False,
                label="Per-step strip",
                elem_id=w.id("heatmap-per-step"),
                info="Also a small map per recorded step, one strip per word.",
            ),
        )


def _words(settings: HeatmapSettings, cond_texts, negative: str, model: Any) -> list[WordColumns]:
    words = find_words(settings.words, [token_table(t, model) for t in cond_texts])
    if settings.negative_words.strip():
        table = token_table(negative, model)
        words += find_words(settings.negative_words, [table], branch="uncond", field=NEGATIVE_FIELD)
    return words


def check_words(p: Any, settings: HeatmapSettings, split_and, model: Any) -> None:
    """Find the words in every distinct prompt of the job now (a `DumpUnetError` if one names nothing)."""
    pairs = zip(p.all_prompts, p.all_negative_prompts, strict=False)
    for prompt, negative in dict.fromkeys(pairs):
        _words(settings, split_and(prompt), negative, model)


def word_pictures(job: Job, image: int, picture: Image.Image, settings: HeatmapSettings, model: Any) -> list[MapImage]:
    """The word maps of job image `image` over `picture` (the image as the gallery shows it)."""
    captured = job.heat.pop(image, None)
    meta = job.images.get(image)
    if not captured or meta is None:
        return []
    heats = word_heats(captured, image, _words(settings, meta.cond_texts, meta.negative, model))
    return map_images(image, heats, render_words(np.asarray(picture.convert("RGB")), heats, settings))
