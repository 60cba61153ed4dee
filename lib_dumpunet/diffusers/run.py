"""A whole Dump U-Net job on a diffusers model: plan, generate batch by batch with the job attached, collect maps.

`prepare` checks everything the user gave against the model (settings, per-block prompts, sizes) and raises
`DumpUnetError` before anything is generated. `run` then samples every batch with a `Job` attached — twice, with and
without the per-block prompts, when difference maps are asked for — and returns the images with their maps, in
the order the webui's gallery shows them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from lib_dumpunet.capture import Key
from lib_dumpunet.diffusers.generate import Generation, Progress, sample
from lib_dumpunet.diffusers.host import DiffusersHost
from lib_dumpunet.diffusers.model import Model
from lib_dumpunet.job import Job, Plan, Role, difference_maps, make_plan
from lib_dumpunet.layer_prompt import parse_layer_prompt
from lib_dumpunet.render import MapImage
from lib_dumpunet.settings import JobSettings

__all__ = ["GeneratedImage", "JobResult", "evaluations", "prepare", "run"]

log = logging.getLogger(__name__)


@dataclass
class GeneratedImage:
    index: int  # in the job, over batch count and batch size
    seed: int
    prompt: str  # as typed, per-block constructs included
    negative: str
    image: Image.Image
    maps: list[MapImage] = field(default_factory=list)
    baseline: Image.Image | None = None  # the image without per-block prompts (difference-map jobs)
    heat: dict[Key, torch.Tensor] = field(default_factory=dict)  # word heat sums (`lib_dumpunet.heatmap.word_heats`)


@dataclass
class JobResult:
    images: list[GeneratedImage]
    diffs: dict[int, list[MapImage]]
    comments: list[str]
    job: Job | None = None  # the job whose images these are (its texts feed the prompt tensor view)


def prepare(model: Model, settings: JobSettings, gen: Generation, *, dump_base: Path) -> Plan:
    """Check everything before generation; the plan to run."""
    gen.check()
    plan = make_plan(settings, model.layout, job_steps=gen.steps, dump_base=dump_base, shared=False)
    if plan.layer_prompt:
        parse_layer_prompt(gen.prompt, model.layout.names, field="Prompt")
        parse_layer_prompt(gen.negative, model.layout.names, field="Negative prompt")
    return plan


def _roles(plan: Plan) -> tuple[Role, ...]:
    return ("baseline", "layer_prompt") if plan.diff is not None else ("single",)


def evaluations(plan: Plan, gen: Generation, per_batch: int | None = None) -> int:
    """How many model evaluations the job makes (for a progress bar); `per_batch` as the scheduler's timesteps."""
    return len(_roles(plan)) * gen.batch_count * (gen.steps if per_batch is None else per_batch)


def run(model: Model, plan: Plan, gen: Generation, *, progress: Progress | None = None) -> JobResult:
    """Generate the job's images with its maps (and difference maps)."""
    host = DiffusersHost(model.text, model.vae)  # the VAE: latent views are drawn through it
    runs: dict[Role, tuple[Job, list[GeneratedImage]]] = {}
    for role in _roles(plan):
        with Job(plan, model.layout, host, role=role) as job:
            runs[role] = (job, _batches(model, job, gen, progress))
    comments = []
    job, images = runs[_roles(plan)[-1]]
    for tab in (plan.features, plan.attention):
        if tab is not None:
            missing = job.missing_steps(tab, gen.steps)
            if missing:
                comments.append(f"{tab.tab} steps {missing} were never reached.")
    diffs: dict[int, list[MapImage]] = {}
    if plan.diff is not None:
        base_job, base_images = runs["baseline"]
        diffs = difference_maps(base_job, job)
        job.close()  # difference dumps are written now
        for image, base in zip(images, base_images, strict=True):
            image.baseline = base.image
    return JobResult(images, diffs, comments, job)


def _batches(model: Model, job: Job, gen: Generation, progress: Progress | None) -> list[GeneratedImage]:
    out = []
    for batch in range(gen.batch_count):
        first, seeds = batch * gen.batch_size, gen.seeds(batch)
        typed = [gen.prompt] * gen.batch_size
        negatives_typed = [gen.negative] * gen.batch_size
        prompts, negatives = job.begin_batch(first, typed, negatives_typed, seeds)
        pictures = sample(model, gen, prompts, negatives, seeds, job=job, progress=progress)
        for i, picture in enumerate(pictures):
            maps = job.take_maps(first + i)
            heat = job.heat.pop(first + i, {})
            out.append(GeneratedImage(first + i, seeds[i], typed[i], negatives_typed[i], picture, maps, heat=heat))
        log.debug("batch %d: %d images", batch, len(pictures))
    return out
