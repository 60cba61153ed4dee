"""The "Word heat maps" tab and its delivery: where chosen words of the prompt went in each generated image.

`heatmap_tab` builds the tab's inputs, one per `heatmap.*` settings field. Before generation `check_words` looks up
the words in every prompt of the job with the loaded model's own token inspector, so a word that is in none of the
job's prompts stops the job with its message (one that some prompts lack only costs those images its map). After
generation `word_pictures` turns what the job's word recorder kept
for one image into gallery maps over that image as the webui shows it (the hires-fix result when there is one):
one per word, the strip of all words, and per-step strips when asked (`lib_dumpunet.heatmap`).
"""

from __future__ import annotations

import logging
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from lib_dumpunet.errors import DumpUnetError
from lib_dumpunet.heatmap import (
    NEGATIVE_FIELD,
    NOT_IN_PROMPT,
    HeatmapSettings,
    WordColumns,
    find_words,
    map_images,
    render_words,
    require_words,
    word_heats,
)
from lib_dumpunet.job import Job
from lib_dumpunet.layer_prompt import parse_layer_prompt
from lib_dumpunet.overlay import COLORMAPS, MODES
from lib_dumpunet.render import MapImage
from lib_dumpunet.vxa import HEAD_MODES
from lib_dumpunet.webui.host import unet_of
from lib_dumpunet.webui.info import layout_of
from lib_dumpunet.webui.tokens import token_table

__all__ = ["check_words", "heatmap_tab", "word_pictures"]

log = logging.getLogger(__name__)

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
    """The words of one image's prompt; a word this prompt lacks comes back without rows (no map, a note)."""
    words = find_words(settings.words, [token_table(t, model) for t in cond_texts], strict=False)
    if settings.negative_words.strip():
        table = token_table(negative, model)
        words += find_words(settings.negative_words, [table], branch="uncond", field=NEGATIVE_FIELD, strict=False)
    return words


def check_words(p: Any, settings: HeatmapSettings, split_and, model: Any) -> None:
    """Before generation: refuse a word that is in none of the job's prompts (a `SpecError` with a caret). A word
    that only some prompts have (wildcards, a batch of different prompts) is fine; the others get a note. In a cell
    of an X/Y/Z plot the job is the whole plot, whose other cells this cell cannot see (Prompt S/R), so nothing is
    refused there: a cell whose prompt lacks a word gets the note."""
    if _in_xyz_plot(p):
        return
    positives, negatives = list(p.all_prompts), list(p.all_negative_prompts)
    hires = _hires_prompts(p)
    if hires is not None:  # the maps come from the hires pass, which encodes these
        unet = unet_of(model)
        names = layout_of(unet).names if unet is not None else ()
        positives += _erased(hires[0], names)
        negatives += _erased(hires[1], names)
    if settings.words.strip():
        tables = [[token_table(t, model) for t in split_and(x)] for x in dict.fromkeys(positives)]
        require_words(settings.words, tables)
    if settings.negative_words.strip():
        tables = [[token_table(t, model)] for t in dict.fromkeys(negatives)]
        require_words(settings.negative_words, tables, field=NEGATIVE_FIELD)


def _hires_prompts(p: Any) -> tuple[list[str], list[str]] | None:
    """The hires pass's own prompts and negative prompts, when hires fix is on and they differ from the first
    pass's (the Hires prompt fields); None when the hires pass encodes the same prompts (or there is none)."""
    if not getattr(p, "enable_hr", False):
        return None
    prompts, negatives = getattr(p, "all_hr_prompts", None), getattr(p, "all_hr_negative_prompts", None)
    if not prompts or not negatives:
        return None
    if list(prompts) == list(p.all_prompts) and list(negatives) == list(p.all_negative_prompts):
        return None
    return list(prompts), list(negatives)


def _erased(texts: list[str], names: tuple[str, ...]) -> list[str]:
    """Texts without their per-block constructs, as the webui encodes them (the layer prompt tab erases them); a text
    that cannot be read as such is left as it is (the Layer Prompt tab reports it)."""
    out = []
    for text in texts:
        try:
            out.append(parse_layer_prompt(text, names).erase())
        except DumpUnetError:
            out.append(text)
    return out


def _in_xyz_plot(p: Any) -> bool:
    """Whether `p` is a cell of the X/Y/Z plot: the script chosen in the dropdown (script_args[0], 0 = none)."""
    runner, args = getattr(p, "scripts", None), getattr(p, "script_args", None) or ()
    index = args[0] if args else 0
    scripts = getattr(runner, "selectable_scripts", None) or []
    if not isinstance(index, int) or not 0 < index <= len(scripts):
        return False
    return scripts[index - 1].title() == "X/Y/Z plot"


def word_pictures(job: Job, image: int, picture: Image.Image, settings: HeatmapSettings, model: Any) -> list[MapImage]:
    """The word maps of job image `image` over `picture` (the image as the gallery shows it). A word its prompt
    lacks gets no map, a place in the strip that says so, and a line in the log."""
    captured = job.heat.pop(image, None)
    meta = job.images.get(image)
    if not captured or meta is None:
        return []
    cond_texts, negative = meta.cond_texts, meta.negative
    hires = _hires_prompts(getattr(job.host, "p", None))
    if hires is not None and any(k.pass_index > 0 for k in captured) and image < len(hires[0]):
        prompt, negative = _erased([hires[0][image], hires[1][image]], job.layout.names)
        cond_texts = job.host.split_and(prompt)  # the final pass's prompt
    heats = word_heats(captured, image, _words(settings, cond_texts, negative, model))
    missing = [h.label for h in heats if not h.found]
    if missing:
        log.warning(
            "word heat maps, image %d: %s %s, so no map", image + 1, ", ".join(map(repr, missing)), NOT_IN_PROMPT
        )
    return map_images(image, heats, render_words(np.asarray(picture.convert("RGB")), heats, settings))
