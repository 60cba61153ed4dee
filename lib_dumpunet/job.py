"""One Dump U-Net job, independent of the webui: what to attach, what to prepare per batch, what to show after.

`make_plan` turns `JobSettings` into a `Plan` checked against the loaded model and the job (block names, steps,
colour expressions, dump folders); every user mistake surfaces here as a `DumpUnetError`, before generation.
A `Job` then attaches the recorders and the per-block prompt switch to the U-Net (a `Probe`), prepares each batch
(per-block prompts are parsed, encoded once per distinct text through the host, and erased from what the webui
encodes), hears about denoiser calls, and after each batch renders and dumps its images' maps, giving back the
captured memory image by image. Difference maps compare the features of two jobs: one run without the per-block
prompts (`role="baseline"`) and one with them.

The host — the webui, or a test double — supplies what only it can do through the small `Host` protocol. Where
the U-Net features name the latent views (`latent`, `x0`, `cfg`; see `views`), the host also hands the job, after
each denoiser call's U-Net evaluations, every row's predicted clean latent (`denoised`) and the guided one
(`guided`); it may offer `latent_rgb` (a `views.LatentRGB` for its model) and `decode_latents` (its VAE).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import torch

from lib_dumpunet.attention import CROSS_KINDS, CrossAttentionRecorder, SelfAttentionRecorder
from lib_dumpunet.block_prompts import BlockPrompts, Schedule
from lib_dumpunet.capture import Capture, FeatureRecorder, Key
from lib_dumpunet.colorize import Colorizer
from lib_dumpunet.dump import DumpWriter
from lib_dumpunet.errors import DumpUnetError
from lib_dumpunet.heatmap import HEAT_KIND, HeatPlan
from lib_dumpunet.layer_prompt import block_texts, parse_layer_prompt
from lib_dumpunet.layout import UNetLayout
from lib_dumpunet.paths import resolve_folder
from lib_dumpunet.probe import Probe
from lib_dumpunet.render import MapImage, render
from lib_dumpunet.sampling import Row, cfg_rows
from lib_dumpunet.settings import DumpSettings, JobSettings, OutputSettings
from lib_dumpunet.specs import (
    VIEWS_AFTER,
    VIEWS_BEFORE,
    StepSelection,
    parse_layers,
    parse_points,
    parse_steps,
)
from lib_dumpunet.views import LatentRGB, ViewPainter, ViewRecorder, is_view

__all__ = ["Host", "Job", "MapsPlan", "Plan", "difference_maps", "make_plan"]

log = logging.getLogger(__name__)

Role = Literal["single", "baseline", "layer_prompt"]
_OUTPUT_KINDS = {"K": "k", "Q*K": "qk", "V*Q*K": "vqk"}
_DIFF_SOURCE = "diff-source"


class Host(Protocol):
    """What a job needs from the program it runs in."""

    def encode(self, text: str, pass_index: int) -> Schedule:
        """The cross-attention context of `text` (its prompt-editing schedule) for a pass of the job."""
        ...

    def split_and(self, prompt: str) -> list[str]:
        """The sub-prompts (without weights) the host makes cond rows of, in row order."""
        ...

    def token_labels(self, text: str) -> list[str]:
        """A label for each context position of `text`: BOS, tokens, padding, EOS per 77-token chunk."""
        ...

    @property
    def empty_chunk(self) -> torch.Tensor | None:
        """The encoding of the empty prompt, (77, width), used to pad contexts."""
        ...


@dataclass(frozen=True)
class MapsPlan:
    """One output tab, resolved: which blocks at which steps, how to draw and where to dump."""

    tab: str
    blocks: tuple[str, ...]
    steps: StepSelection
    average: str | None
    colorizer: Colorizer
    dump: DumpSettings
    dump_folder: Path | None = None
    latent_decoder: str = "approx"  # U-Net features: how the latent views become RGB ("approx" or "vae")

    @property
    def views(self) -> tuple[str, ...]:
        """The pseudo-blocks named (latent, x0, cfg): views of the sampling, not blocks."""
        return tuple(b for b in self.blocks if is_view(b))

    @property
    def block_names(self) -> tuple[str, ...]:
        """The real U-Net blocks named."""
        return tuple(b for b in self.blocks if not is_view(b))


@dataclass(frozen=True)
class AttentionPlan(MapsPlan):
    kinds: tuple[str, ...] = ()  # of "k", "qk", "vqk"
    points: tuple[tuple[float, float], ...] | None = None  # self-attention query points
    token_labels: bool = True


@dataclass(frozen=True)
class Plan:
    features: MapsPlan | None
    attention: AttentionPlan | None
    layer_prompt: bool
    diff: MapsPlan | None
    output: OutputSettings
    heatmap: HeatPlan | None = None  # word heat maps

    @property
    def active(self) -> bool:
        return bool(self.features or self.attention or self.layer_prompt or self.heatmap)


def _maps_plan(
    tab: str, settings, layout: UNetLayout, job_steps: int, dump_base: Path, shared: bool, views: bool = False, **extra
):
    blocks = parse_layers(settings.layers, layout.names, field=f"{tab} › Layers", views=views)
    steps = parse_steps(settings.steps, field=f"{tab} › Image saving steps")
    beyond = steps.first_beyond(job_steps)
    if beyond is not None:
        msg = f"{tab} › Image saving steps: step {beyond} is beyond the {job_steps} steps this job samples"
        raise DumpUnetError(msg)
    folder = None
    if settings.dump.enabled:
        folder = resolve_folder(
            settings.dump.folder, base=dump_base, default="dumpunet", shared=shared, field=f"{tab} › Output path"
        )
    return dict(
        tab=tab,
        blocks=blocks,
        steps=steps,
        average=None if settings.average == "disable" else settings.average,
        colorizer=Colorizer.from_settings(settings.colors, field_prefix=f"{tab} › "),
        dump=settings.dump,
        dump_folder=folder,
        **extra,
    )


def make_plan(
    settings: JobSettings,
    layout: UNetLayout,
    *,
    job_steps: int,
    dump_base: Path,
    shared: bool,
) -> Plan:
    """Check `settings` against the model and the job; `job_steps` is the most steps any pass samples."""
    features = attention = diff = None
    if settings.features.enabled:
        f = settings.features
        features = MapsPlan(
            **_maps_plan("U-Net features", f, layout, job_steps, dump_base, shared, views=True),
            latent_decoder=f.latent_decoder,
        )
    a = settings.attention
    if a.enabled:
        kinds = tuple(_OUTPUT_KINDS[o] for o in a.outputs)
        if not kinds and not a.self_attention:
            msg = "Attention: tick at least one output (K, Q*K, V*Q*K) or Self-attention"
            raise DumpUnetError(msg)
        points = parse_points(a.query_points, field="Attention › Query points") if a.self_attention else None
        attention = AttentionPlan(
            **_maps_plan("Attention", a, layout, job_steps, dump_base, shared),
            kinds=kinds,
            points=points,
            token_labels=a.token_labels,
        )
        if not layout.attentions(attention.blocks):
            msg = f"Attention: none of {', '.join(attention.blocks)} has attention layers; choose blocks with Trans"
            raise DumpUnetError(msg)
    lp = settings.layer_prompt
    if lp.enabled and lp.diff:
        diff = MapsPlan(**_maps_plan("Layer Prompt", lp, layout, job_steps, dump_base, shared))
    heatmap = settings.heatmap.plan(layout, job_steps) if settings.heatmap.enabled else None
    return Plan(features, attention, lp.enabled, diff, settings.output, heatmap)


@dataclass(frozen=True)
class _Image:
    """What a job knows of one image: its seed and the prompts the webui encodes (for token labels and dumps)."""

    seed: int | None
    prompt: str
    cond_texts: tuple[str, ...]  # per AND sub-prompt, as encoded
    negative: str


@dataclass
class Job(AbstractContextManager):
    """Attach, prepare batches, collect maps. Use as a context manager around sampling."""

    plan: Plan
    layout: UNetLayout
    host: Host
    role: Role = "single"
    images: dict[int, _Image] = field(default_factory=dict)
    steps_seen: set[tuple[int, int]] = field(default_factory=set)

    def __post_init__(self) -> None:
        p, dtype = self.plan, torch.float16 if self.plan.output.fp16 else None
        uncond = p.output.uncond
        attachments: list = []
        self.views: ViewRecorder | None = None
        if p.features and p.features.block_names:
            attachments.append(FeatureRecorder(p.features.block_names, p.features.steps, uncond=uncond, dtype=dtype))
        if p.features and p.features.views:
            self.views = ViewRecorder(p.features.views, p.features.steps, dtype=dtype)
            attachments.append(self.views)
        self._painter: ViewPainter | None = None
        if p.attention and p.attention.kinds:
            a = p.attention
            attachments.append(CrossAttentionRecorder(a.blocks, a.steps, a.kinds, uncond=uncond, dtype=dtype))
        if p.attention and p.attention.points:
            a = p.attention
            attachments.append(SelfAttentionRecorder(a.blocks, a.steps, a.points, uncond=uncond, dtype=dtype))
        if p.diff and self.role != "single":
            attachments.append(FeatureRecorder(p.diff.blocks, p.diff.steps, uncond=uncond, kind=_DIFF_SOURCE))
        self.switch = (
            BlockPrompts(empty_chunk=self.host.empty_chunk) if p.layer_prompt and self.role != "baseline" else None
        )
        if self.switch is not None:
            attachments.append(self.switch)
        self.heat_recorder = p.heatmap.recorder() if p.heatmap is not None and self.role != "baseline" else None
        if self.heat_recorder is not None:
            attachments.append(self.heat_recorder)
        self.heat: dict[int, dict[Key, torch.Tensor]] = {}  # per image, word heat sums kept for delivery
        self.probe = Probe(self.layout.unet, attachments, layout=self.layout)
        self._writers: dict[str, DumpWriter] = {}
        self._order = {name: i for i, name in enumerate(self.layout.names)}
        self._order.update({a.label: i for i, a in enumerate(self.layout.attentions(self.layout.names))})
        self._order.update({v: -len(VIEWS_BEFORE) + i for i, v in enumerate(VIEWS_BEFORE)})
        self._order.update({v: len(self.layout.names) + i for i, v in enumerate(VIEWS_AFTER)})

    # --- lifetime ----------------------------------------------------------------------------------------------

    def __enter__(self) -> Job:
        self.probe.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove every hook and finish writing dumps. Safe to call more than once."""
        self.probe.close()
        writers, self._writers = self._writers, {}
        for writer in writers.values():
            writer.close()

    @property
    def capture(self) -> Capture:
        return self.probe.capture

    # --- batches -----------------------------------------------------------------------------------------------

    def begin_batch(
        self,
        first_image: int,
        prompts: Sequence[str],
        negatives: Sequence[str],
        seeds: Sequence[int | None] = (),
        passes: Sequence[int] = (0,),
    ) -> tuple[list[str], list[str]]:
        """Get ready to sample images `first_image`, … with these prompts; returns the prompts the host must
        encode itself (per-block prompt constructs erased, or the prompts unchanged)."""
        self.probe.tracker.begin_batch()
        self._first_image = first_image
        out_prompts, out_negatives = list(prompts), list(negatives)
        texts: dict[Row, dict[str, str]] = {}
        if self.plan.layer_prompt:
            for i, (prompt, negative) in enumerate(zip(prompts, negatives, strict=True)):
                image = first_image + i
                positive = parse_layer_prompt(prompt, self.layout.names, field="Prompt")
                negative_lp = parse_layer_prompt(negative, self.layout.names, field="Negative prompt")
                out_prompts[i], out_negatives[i] = positive.erase(), negative_lp.erase()
                if self.switch is not None:
                    for sub, blocks in enumerate(block_texts(positive, self.layout.names, self.host.split_and)):
                        if blocks:
                            texts[Row(image, "cond", sub)] = blocks
                    (blocks,) = block_texts(negative_lp, self.layout.names, field="Negative prompt")
                    if blocks:
                        texts[Row(image, "uncond")] = blocks
        for i, prompt in enumerate(out_prompts):
            seed = seeds[i] if i < len(seeds) else None
            subs = tuple(self.host.split_and(prompt))
            self.images[first_image + i] = _Image(seed, prompts[i], subs, out_negatives[i])
        if self.switch is not None and texts:
            needed = {(p, t) for blocks in texts.values() for t in blocks.values() for p in passes}
            new = {key: self.host.encode(key[1], key[0]) for key in sorted(needed - set(self.switch.schedules))}
            self.switch.add(texts, new)
            log.debug("images %d…: %d per-block texts, %d newly encoded", first_image, len(needed), len(new))
        return out_prompts, out_negatives

    def denoiser_call(self, *, pass_index: int, step: int, schedule_step: int, cond_counts: Sequence[int]) -> None:
        """The host is about to evaluate the U-Net for this batch at a sampler step (rows in the webui's order)."""
        rows = cfg_rows(cond_counts, len(cond_counts), self._first_image)
        s = self.probe.tracker.denoiser_call(pass_index=pass_index, step=step, schedule_step=schedule_step, rows=rows)
        if s.first_eval:
            self.steps_seen.add((pass_index, step))
        if self.views is not None:
            self.views.begin_call(s, rows)

    # --- latent views: what the host hands over after the U-Net calls of a denoiser call ------------------------

    def wants_view(self, view: str) -> bool:
        """True when the current denoiser call's step records `view` ("x0" or "cfg"): the host may skip the work of
        preparing what `denoised` or `guided` would take."""
        return self.views is not None and self.views.wanted(view)

    def denoised(self, x0_rows: torch.Tensor) -> None:
        """Each row's predicted clean latent, in the order of the last `denoiser_call` (cond rows, then uncond)."""
        if self.views is not None:
            self.views.denoised(x0_rows)

    def guided(self, x0: torch.Tensor) -> None:
        """The guided predicted clean latent of each image of the batch (batch order)."""
        if self.views is not None:
            self.views.guided(x0)

    def notes(self) -> list[str]:
        """What the user should know about maps that could not be made."""
        return self.views.notes() if self.views is not None else []

    def painter(self) -> ViewPainter:
        """How views are drawn: the host's latent → RGB map (or its VAE when asked), made when first needed."""
        if self._painter is None:
            rgb = getattr(self.host, "latent_rgb", None)
            if rgb is None:
                rgb = LatentRGB.for_model(sdxl=sum(n.startswith("IN") for n in self.layout.names) == 9)
            vae = None
            if self.plan.features is not None and self.plan.features.latent_decoder == "vae":
                vae = getattr(self.host, "decode_latents", None)
                if vae is None:
                    log.warning("this host cannot decode latents with a VAE; latent views use the approximation")
            self._painter = ViewPainter(rgb, vae)
        return self._painter

    # --- outputs -----------------------------------------------------------------------------------------------

    def take_maps(self, image: int) -> list[MapImage]:
        """Render (and dump) everything captured for one image, in gallery order, and free its memory.

        Sources of difference maps are left in the capture for `difference_maps`."""
        if self.heat_recorder is not None:
            self.heat_recorder.flush()  # the last step's sums are still open until the next step
        taken = self.capture.take_image(image)
        heat = {k: taken.pop(k) for k in [k for k in taken if k.kind == HEAT_KIND]}
        if heat:
            self.heat[image] = heat
        kept = {k: t for k, t in taken.items() if k.kind == _DIFF_SOURCE}
        for k, t in kept.items():
            self.capture.put(k, t)
        maps: list[MapImage] = []
        meta = self.images.get(image)
        for key in sorted((k for k in taken if k.kind != _DIFF_SOURCE), key=self.order):
            plan = self.plan.features if key.kind == "features" else self.plan.attention
            self.dump(plan, key, taken[key], meta)
            if key.kind == "features" and is_view(key.place):
                maps.append(self.painter().paint(key, taken[key]))
                continue
            tokens = self._tokens(key) if key.kind == "qk" and plan.token_labels else None
            points = plan.points if key.kind == "self" else None
            maps += render(key, taken[key], plan.colorizer, average=plan.average, tokens=tokens, points=points)
        log.debug("image %d: %d maps from %d captured tensors", image, len(maps), len(taken) - len(kept))
        return maps

    def order(self, key: Key) -> tuple:
        """Gallery order: features, then cross-attention, then self-attention; each by pass, step, place."""
        section = 0 if key.kind in ("features", "diff") else 2 if key.kind == "self" else 1
        kind = CROSS_KINDS.index(key.kind) if key.kind in CROSS_KINDS else 0
        return (section, key.pass_index, key.step, self._order.get(key.place, 0), kind, key.branch, key.sub)

    def missing_steps(self, plan: MapsPlan, job_steps: int, passes: Sequence[int] = (0,)) -> list[int]:
        """Selected steps (within the job's steps) that no pass reached, e.g. in img2img or after an interrupt."""
        reached = {step for p, step in self.steps_seen if p in passes}
        return [s for s in plan.steps.resolve(job_steps) if s not in reached]

    def dump(self, plan: MapsPlan | None, key: Key, tensor: torch.Tensor, meta: _Image | None) -> None:
        if plan is None or plan.dump_folder is None:
            return
        if plan.dump.format == "legacy" and key.kind not in ("features", "qk", "diff"):
            return  # the original dumped features, Q*K and differences only
        writer = self._writers.get(plan.tab)
        if writer is None:
            label = {"U-Net features": "features", "Attention": "attention"}.get(plan.tab, "diff")
            writer = self._writers[plan.tab] = DumpWriter(plan.dump_folder, plan.dump.format, label=label)
        writer.write(key, tensor, seed=meta.seed if meta else None, prompt=meta.prompt if meta else None)

    def _tokens(self, key: Key) -> list[str] | None:
        meta = self.images.get(key.image)
        if meta is None:
            return None
        if key.branch == "uncond":
            text = meta.negative
        else:
            text = meta.cond_texts[key.sub] if key.sub < len(meta.cond_texts) else meta.prompt
        if self.switch is not None:
            text = self.switch.texts.get(Row(key.image, key.branch, key.sub), {}).get(key.block, text)
        return self.host.token_labels(text)


def difference_maps(baseline: Job, layer_prompt: Job) -> dict[int, list[MapImage]]:
    """Features with the per-block prompts minus features without them, per image, in gallery order.

    Both jobs must have run with the same plan, so their difference-map sources line up key by key."""
    plan = baseline.plan.diff
    if plan is None:
        return {}
    out: dict[int, list[MapImage]] = {}
    sources = [k for k in layer_prompt.capture if k.kind == _DIFF_SOURCE]
    for key in sorted(sources, key=lambda k: (k.image, *layer_prompt.order(k))):
        if key not in baseline.capture:
            continue
        diff = layer_prompt.capture[key].float() - baseline.capture[key].float()
        diff_key = Key(key.image, key.pass_index, key.step, key.place, "diff", key.branch, key.sub)
        layer_prompt.dump(plan, diff_key, diff, layer_prompt.images.get(key.image))
        out.setdefault(key.image, []).extend(render(diff_key, diff, plan.colorizer, average=plan.average))
    return out
