"""`dumpunet heatmap -p …`: where chosen words of the prompt went in each image generated on a local diffusers model.

The webui's "Word heat maps" tab on the command line: the same settings record (`heatmap.*`, reachable by
`--set heatmap.X=…` too), the same recorder and drawing (`lib_dumpunet.heatmap`) and the same file names
(`heatmap.map_images`). The words are looked up in the token table of every AND sub-prompt (and of the negative
prompt for `--negative-words`) before anything is generated, so a word that is not in the prompt stops the command
with the inspector's caret message and exit status 2. Each generated image is written first, then one picture per
word, the strip of all words and, with `--per-step`, a per-step strip per word, all carrying the image's infotext;
`index.html` shows them in a "Word heat maps" tab.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from lib_dumpunet.errors import DumpUnetError
from lib_dumpunet.heatmap import (
    NEGATIVE_FIELD,
    HeatmapSettings,
    WordColumns,
    find_words,
    map_images,
    render_words,
    word_heats,
)
from lib_dumpunet.overlay import COLORMAPS, MODES
from lib_dumpunet.vxa import HEAD_MODES

__all__ = ["add_parser", "heat_words", "run_command", "section"]

log = logging.getLogger(__name__)

_DEFAULTS = HeatmapSettings()


def add_parser(commands: Any, common: Callable[..., None]) -> None:
    """The `heatmap` subcommand; `common` adds the generation, model and output options every command takes."""
    p = commands.add_parser("heatmap", help="word heat maps: where each word of the prompt went in the image")
    common(p, demo=True)
    g = p.add_argument_group("word heat maps (tab 'Word heat maps' of the webui)")
    g.add_argument("--words", default="", help='words, phrases or columns, e.g. "circle, blue square, 5" '
                   "(default: each word of the prompt, at most 16)")  # fmt: skip
    g.add_argument("--negative-words", default="", help="words of the negative prompt (default: none)")
    g.add_argument("--layers", default=_DEFAULTS.layers, help="'all' or blocks, e.g. IN04-M00,OUT03 (default: all)")
    g.add_argument("--map-steps", default="", help="sampler steps summed into the maps, e.g. 10-20 (default: all)")
    g.add_argument("--per-step", action="store_true", help="also a strip per word with one small map per step")
    g.add_argument("--heads", choices=HEAD_MODES, default=_DEFAULTS.heads, help="per layer: heads' mean or max")
    g.add_argument("--output", choices=MODES, default=_DEFAULTS.output, help="default: %(default)s")
    g.add_argument("--opacity", type=float, default=_DEFAULTS.opacity, help="colour overlay opacity, 0–1")
    g.add_argument("--colormap", choices=COLORMAPS, default=_DEFAULTS.colormap)


def section(args: argparse.Namespace) -> dict[str, Any]:
    """The `heatmap` part of the job's settings the options stand for."""
    return {
        "enabled": True,
        "words": args.words,
        "negative_words": args.negative_words,
        "layers": args.layers,
        "steps": args.map_steps,
        "per_step": args.per_step,
        "heads": args.heads,
        "output": args.output,
        "opacity": args.opacity,
        "colormap": args.colormap,
    }


def heat_words(model: Any, prompt: str, negative: str, settings: HeatmapSettings) -> list[WordColumns]:
    """The words to map, found in the token tables of `prompt`'s AND sub-prompts and of `negative` (a
    `DumpUnetError` with the inspector's caret line when one names nothing)."""
    from lib_dumpunet.diffusers.text import split_and

    # the token tables of the very chunks the encoder conditions on (emphasis, BREAK, chunks past 75 tokens)
    words = find_words(settings.words, [model.text.table(text) for text, _ in split_and(prompt)])
    if settings.negative_words.strip():
        table = model.text.table(negative)
        words += find_words(settings.negative_words, [table], branch="uncond", field=NEGATIVE_FIELD)
    return words


def run_command(args: argparse.Namespace, command_line: str) -> Path:
    """Run the parsed `heatmap` command; returns the page written."""
    from tqdm.auto import tqdm

    from lib_dumpunet.cli.files import Writer
    from lib_dumpunet.cli.job import check_folders, facts, generation, infotext
    from lib_dumpunet.cli.main import job_settings
    from lib_dumpunet.cli.page import ImageEntry, write_page
    from lib_dumpunet.diffusers.model import load_model, make_scheduler
    from lib_dumpunet.diffusers.run import evaluations, prepare, run

    check_folders(args)
    model = load_model(args.model, device=args.device)
    gen = generation(args, model)
    settings = job_settings(args, model.layout.names)
    plan = prepare(model, settings, gen, dump_base=args.out)
    words = heat_words(model, gen.prompt, gen.negative, settings.heatmap)
    if not words:
        msg = "Word heat maps › Words: the prompt has no word to map; name one with --words"
        raise DumpUnetError(msg)
    scheduler = make_scheduler(model, gen.sampler)
    sampler = args.sampler or type(scheduler).__name__.removesuffix("Scheduler")
    scheduler.set_timesteps(gen.steps)
    total = evaluations(plan, gen, len(scheduler.timesteps))
    with tqdm(total=total, unit="step", desc="dumpunet", disable=args.quiet, leave=False) as bar:
        result = run(model, plan, gen, progress=bar.update)
    writer = Writer(args.out)
    entries = []
    for image in result.images:
        info = infotext(gen, model, settings, image, sampler)
        saved = writer.image(image.image, image.seed, info)
        heats = word_heats(image.heat, image.index, words)
        pictures = render_words(np.asarray(image.image.convert("RGB")), heats, settings.heatmap)
        stem = saved.file.removesuffix(".png")
        maps = [writer.map(stem, m, info) for m in [*image.maps, *map_images(image.index, heats, pictures)]]
        entries.append(ImageEntry(saved.file, image.prompt, facts(gen, model, image, sampler, saved.file), maps))
    page = args.out / "index.html"
    title = f"Dump U-Net — word heat maps — {model.name}"
    page.write_text(write_page(entries, title=title, command=command_line, notes=result.comments), "utf-8")
    log.debug("%d images, %d words each", len(entries), len(words))
    return page
