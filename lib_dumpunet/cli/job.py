"""One command run: load the model, check every option, generate with the job attached, write PNGs and the page.

Nothing is generated until the options, the settings and the per-block prompts have all been checked against the
loaded model; a mistake raises `DumpUnetError` (the command prints it and exits with status 2). Images are saved
first (for difference-map jobs: the images without per-block prompts, then those with them), each followed by its
maps, then the difference maps under the name of the image they belong to — the webui's order.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from tqdm.auto import tqdm

from lib_dumpunet.cli import prompt_tensor
from lib_dumpunet.cli.files import Saved, Writer, quote
from lib_dumpunet.cli.main import job_settings
from lib_dumpunet.cli.page import ImageEntry, write_page
from lib_dumpunet.diffusers.generate import Generation, latent_shape
from lib_dumpunet.diffusers.model import Model, load_model, make_scheduler
from lib_dumpunet.diffusers.run import GeneratedImage, JobResult, evaluations, prepare, run
from lib_dumpunet.diffusers.text import split_and
from lib_dumpunet.errors import DumpUnetError
from lib_dumpunet.estimate.clip_text import CHUNK_TOKENS
from lib_dumpunet.render import MapImage
from lib_dumpunet.settings import JobSettings, changed_values

__all__ = ["check_folders", "facts", "generation", "infotext", "run_command"]

log = logging.getLogger(__name__)


def _native_size(model: Model) -> int:
    factor = 2 ** (len(model.vae.config.block_out_channels) - 1)
    sample = model.unet.config.sample_size
    return int(sample if isinstance(sample, int) else sample[0]) * factor


def generation(args: argparse.Namespace, model: Model) -> Generation:
    native = _native_size(model)
    return Generation(
        prompt=args.prompt,
        negative=args.negative,
        seed=args.seed,
        steps=args.steps,
        cfg_scale=args.cfg_scale,
        width=args.width or native,
        height=args.height or native,
        batch_size=args.batch_size,
        batch_count=args.batch_count,
        sampler=args.sampler,
    )


def infotext(gen: Generation, model: Model, settings: JobSettings, image: GeneratedImage, sampler: str) -> str:
    """The webui's parameters text for an image."""
    line = [
        f"Steps: {gen.steps}",
        f"Sampler: {sampler}",
        f"CFG scale: {gen.cfg_scale:g}",
        f"Seed: {image.seed}",
        f"Size: {gen.width}x{gen.height}",
        f"Model: {quote(model.name)}",
        f"Dump U-Net: {quote(json.dumps(changed_values(settings), separators=(',', ':'), ensure_ascii=False))}",
    ]
    negative = f"\nNegative prompt: {image.negative}" if image.negative else ""
    return f"{image.prompt}{negative}\n{', '.join(line)}"


def _token_columns(model: Model, settings: JobSettings, image: GeneratedImage, m: MapImage) -> tuple[int, int] | None:
    """For a Q*K map of a one-chunk prompt: (columns up to its EOS, 77), so the page can leave the padding aside."""
    if m.key.kind != "qk" or settings.layer_prompt.enabled:
        return None
    subs = split_and(image.prompt)
    text = image.negative if m.key.branch == "uncond" else subs[m.key.sub][0] if m.key.sub < len(subs) else None
    labels = model.text.labels(text) if text is not None else []
    return (labels.index("EOS") + 1, len(labels)) if len(labels) == CHUNK_TOKENS + 2 else None


def check_folders(args: argparse.Namespace) -> None:
    """Refuse a missing model folder or an output path that is a file, before anything is loaded."""
    if not args.model.is_dir():
        msg = f"--model {args.model}: no such folder (give a diffusers Stable Diffusion folder)"
        raise DumpUnetError(msg)
    if args.out.exists() and not args.out.is_dir():
        msg = f"--out {args.out}: exists and is not a folder"
        raise DumpUnetError(msg)


def facts(gen: Generation, model: Model, image: GeneratedImage, sampler: str, file: str) -> list[tuple[str, str]]:
    """What the page lists beside an image."""
    return [
        ("seed", str(image.seed)),
        ("negative", image.negative or "—"),
        ("steps", f"{gen.steps} ({sampler})"),
        ("CFG scale", f"{gen.cfg_scale:g}"),
        ("size", f"{gen.width}×{gen.height}"),
        ("model", f"{model.name} ({model.family})"),
        ("file", file),
    ]


def run_command(args: argparse.Namespace, command_line: str) -> Path:
    """Run the parsed command; returns the page written."""
    check_folders(args)
    model = load_model(args.model, device=args.device)
    gen = generation(args, model)
    settings = job_settings(args, model.layout.names)
    settings.prompt_tensor.check()
    plan = prepare(model, settings, gen, dump_base=args.out)
    scheduler = make_scheduler(model, gen.sampler)
    sampler = args.sampler or type(scheduler).__name__.removesuffix("Scheduler")
    scheduler.set_timesteps(gen.steps)
    total = evaluations(plan, gen, len(scheduler.timesteps))  # second-order samplers evaluate more often
    log.debug("latent %s, plan %s", latent_shape(model, gen.width, gen.height), plan)
    with tqdm(total=total, unit="step", desc="dumpunet", disable=args.quiet, leave=False) as bar:
        result = run(model, plan, gen, progress=bar.update)
    if settings.prompt_tensor.enabled and result.job is not None:
        drawn = prompt_tensor.prompt_maps(result.job, model.text, settings.prompt_tensor)
        for image in result.images:
            image.maps.extend(drawn.get(image.index, ()))
    entries = _save(args.out, result, gen, model, settings, sampler)
    page = args.out / "index.html"
    title = f"Dump U-Net — {model.name}"
    page.write_text(write_page(entries, title=title, command=command_line, notes=result.comments), "utf-8")
    return page


def _save(
    out: Path, result: JobResult, gen: Generation, model: Model, settings: JobSettings, sampler: str
) -> list[ImageEntry]:
    writer = Writer(out)
    shapes = model.layout.shapes(gen.width, gen.height)
    notes = {b.name: f"{' '.join(b.contents)} → {shapes[b.name].output}" for b in model.layout.blocks}
    baselines: dict[int, Saved] = {}
    for image in result.images:
        if image.baseline is not None:
            info = infotext(gen, model, settings, image, sampler)
            baselines[image.index] = writer.image(image.baseline, image.seed, info)
    entries = []
    for image in result.images:
        info = infotext(gen, model, settings, image, sampler)
        saved = writer.image(image.image, image.seed, info)
        stem = saved.file.removesuffix(".png")
        maps = [writer.map(stem, m, info, _token_columns(model, settings, image, m)) for m in image.maps]
        maps += [writer.map(stem, m, info) for m in result.diffs.get(image.index, [])]
        base = baselines.get(image.index)
        listed = facts(gen, model, image, sampler, saved.file)
        entries.append(ImageEntry(saved.file, image.prompt, listed, maps, base.file if base else None, notes))
    return entries
