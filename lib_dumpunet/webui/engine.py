"""The webui side of a job: one `Engine` drives every run, whichever entry asked for it.

A run is one `process_images` call. It is requested either by the always-visible "Dump U-Net" section (its own
settings, possibly changed by X/Y/Z axes) or by the "Dump U-Net features" dropdown script, which leaves a `Request`
on `p` and calls `process_images` itself (once, or twice for difference maps). Either way the always-visible
script receives the webui's processing callbacks and forwards them here:

  before_process   remove anything an earlier, failed run left; pick up the request
  process          plan against the model actually loaded (after override settings); attach the job
  process_batch    per-block prompts: parse, encode once, erase from what the webui encodes
  on_cfg_denoiser  (a script callback) tell the job the step, pass and rows of each model evaluation
  on_cfg_denoised  latent views: every row's prediction (→ the guidance map, cond − uncond)
  on_cfg_after_cfg latent views: the guided prediction (→ x0)
  postprocess_batch render this batch's maps and give the captured memory back
  postprocess      maps into the gallery after their images, saved next to them; hooks removed

A user mistake found in `process` cannot be raised there (the webui swallows script exceptions), so the U-Net is
given a hook that raises it on its first call: the job stops with the message before anything is computed.
Exceptions skip `postprocess`; the webui's `closing(p)`, the next `before_process`, the dropdown's `finally` and
script unloading all reset.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from modules import paths_internal, shared

from lib_dumpunet.errors import DumpUnetError
from lib_dumpunet.hooks import HookSet
from lib_dumpunet.job import Job, Role, make_plan
from lib_dumpunet.layer_prompt import parse_layer_prompt
from lib_dumpunet.paths import resolve_folder
from lib_dumpunet.render import MapImage
from lib_dumpunet.settings import JobSettings
from lib_dumpunet.views import is_view
from lib_dumpunet.webui import heatmap_tab, infotext, outputs, prompt_tensor
from lib_dumpunet.webui.host import WebuiHost, denoiser_call, first_cond_rows, predicted_x0, unet_of
from lib_dumpunet.webui.info import layout_of

__all__ = ["CELL", "HEAT_CELL", "OVERRIDES", "REQUEST", "Engine", "Request", "is_shared", "output_root"]

log = logging.getLogger(__name__)

INFOTEXT_KEY = infotext.INFOTEXT_KEY
REQUEST = "dumpunet_request"  # attribute of `p` set by the dropdown script
OVERRIDES = "dumpunet_overrides"  # attribute of `p` set by X/Y/Z axes: {settings path: value}
CELL = "dumpunet_cell"  # attribute of `p` set by X/Y/Z axes: "map" = the cell shows a map instead of the image
HEAT_CELL = "heat"  # value of CELL: the cell shows the first word heat map instead of the image


_NO_CELL_BLOCKS = (
    "X/Y/Z plot: the Dump U-Net: steps axis shows the averaged map of blocks that nothing names; switch the Dump "
    "U-Net section on and fill its U-Net features › Layers, or add a Dump U-Net: layers axis"
)


@dataclass(frozen=True)
class Request:
    settings: JobSettings
    role: Role = "single"
    source: Literal["section", "script"] = "section"
    error: DumpUnetError | None = None  # the settings could not be read: stop the job with this


@dataclass
class Run:
    """One process_images call with Dump U-Net active."""

    p: Any
    request: Request
    job: Job | None = None
    refusal: HookSet | None = None
    maps: dict[int, list[MapImage]] = field(default_factory=dict)
    saved: dict[int, str] = field(default_factory=dict)  # id(image object) → file it was saved to
    generated: int = 0
    comments: list[str] = field(default_factory=list)
    # filled when the run is delivered: per image index, its file and infotext; where maps were saved
    files: dict[int, str] = field(default_factory=dict)
    owners: dict[int, str] = field(default_factory=dict)
    save_folder: Path | None = None
    # "log to stderr": a handler on the library's logger for the length of the run, and the level to restore
    log_handler: logging.Handler | None = None
    log_level: int = logging.NOTSET
    # latent views: the current denoiser call's (denoiser, x, sigma, cond counts), for its after-U-Net callbacks
    view_inputs: tuple[Any, Any, Any, tuple[int, ...]] | None = None

    def close(self) -> None:
        if self.job is not None:
            self.job.close()
        if self.refusal is not None:
            self.refusal.close()
        if self.log_handler is not None:
            logger = logging.getLogger("lib_dumpunet")
            logger.removeHandler(self.log_handler)
            logger.setLevel(self.log_level)
            self.log_handler = None


def is_shared() -> bool:
    """True when the webui is reachable from other machines (files may then only go to its output folder)."""
    opts = shared.cmd_opts
    return any(getattr(opts, name, None) for name in ("listen", "share", "ngrok", "server_name"))


def output_root(p: Any = None) -> Path:
    """The webui's output folder: user-typed folders are relative to it (and confined to it when shared)."""
    root = getattr(paths_internal, "default_output_dir", None)
    if root or p is None:
        return Path(root or "outputs")
    return Path(p.outpath_samples).parent


def save_folder(settings: JobSettings, p: Any) -> Path | None:
    """Where maps are saved when the user typed a Save path (None: next to their images)."""
    if not settings.output.save_path.strip():
        return None
    base = output_root(p)
    return resolve_folder(settings.output.save_path, base=base, default="", shared=is_shared(), field="Save path")


def job_steps(p: Any) -> int:
    """The most sampler steps any pass of this job can take."""
    steps = int(p.steps)
    if getattr(p, "enable_hr", False):
        steps = max(steps, int(getattr(p, "hr_second_pass_steps", 0) or p.steps))
    return steps


def apply_overrides(settings: JobSettings, overrides: dict[str, Any]) -> JobSettings:
    """Settings with X/Y/Z axis values (by settings path) put in."""
    for path, value in overrides.items():
        head, _, leaf = path.rpartition(".")
        parents = head.split(".") if head else []
        chain = [settings]
        for name in parents:
            chain.append(getattr(chain[-1], name))
        node = dataclasses.replace(chain[-1], **{leaf: value})
        for parent, name in zip(reversed(chain[:-1]), reversed(parents), strict=True):
            node = dataclasses.replace(parent, **{name: node})
        settings = node
    return settings


class Engine:
    """The run in progress (the webui generates one job at a time) and the last one finished."""

    def __init__(self) -> None:
        self.run: Run | None = None
        self.finished: Run | None = None

    def reset(self) -> None:
        """Drop the current run and remove every hook Dump U-Net has anywhere."""
        if self.run is not None:
            self.run.close()
        self.run = None
        HookSet.close_all()

    # --- processing callbacks ------------------------------------------------------------------------------------

    def before_process(self, p: Any, section: JobSettings | None, error: DumpUnetError | None = None) -> None:
        """`section`: the always-visible section's settings if it is enabled, else None; `error` if they are
        malformed."""
        self.reset()
        if error is not None and getattr(p, REQUEST, None) is None:
            self.run = Run(p, Request(JobSettings(), error=error))
            self._reset_on_close(p)
            return
        request = getattr(p, REQUEST, None)
        overrides = dict(getattr(p, OVERRIDES, {}))
        if request is None and (section is not None or overrides):
            cell_map = getattr(p, CELL, None) == "map"
            if cell_map and (section is None or section.features.average == "disable"):
                overrides["features.average"] = "sum"  # X/Y/Z cells show the averaged map
            settings = apply_overrides(section or JobSettings(), overrides)
            unnamed = cell_map and not settings.features.layers.strip()
            request = Request(settings, error=DumpUnetError(_NO_CELL_BLOCKS) if unnamed else None)
        elif request is not None and section is not None:
            p.comment("Dump U-Net: the section was ignored because the Dump U-Net features script ran.")
        if request is not None and request.settings.active:
            self.run = Run(p, request)
            self._reset_on_close(p)
            if request.settings.output.debug:
                logger = logging.getLogger("lib_dumpunet")
                self.run.log_level, self.run.log_handler = logger.level, logging.StreamHandler()
                self.run.log_handler.setFormatter(logging.Formatter("[Dump U-Net] %(name)s: %(message)s"))
                logger.addHandler(self.run.log_handler)
                logger.setLevel(logging.DEBUG)

    def process(self, p: Any) -> None:
        run = self._run_of(p)
        if run is None:
            return
        unet = unet_of(shared.sd_model)
        try:
            if run.request.error is not None:
                raise run.request.error
            if unet is None:
                msg = "the loaded model has no U-Net with input/middle/output blocks (SD3 and Flux are not supported)"
                raise DumpUnetError(msg)
            layout = layout_of(unet)
            plan = make_plan(
                run.request.settings, layout, job_steps=job_steps(p), dump_base=output_root(p), shared=is_shared()
            )
            if plan.layer_prompt:
                _check_prompts(p, layout.names)
            if plan.heatmap is not None:
                heatmap_tab.check_words(p, plan.heatmap.settings, WebuiHost(p).split_and, shared.sd_model)
            run.request.settings.prompt_tensor.check()
            run.save_folder = save_folder(run.request.settings, p)
        except DumpUnetError as err:
            self._refuse(run, unet, err)
            return
        run.job = Job(plan, layout, WebuiHost(p), role=run.request.role).__enter__()
        log.debug("attached to %s: %s", layout, plan)
        p.extra_generation_params[INFOTEXT_KEY] = infotext.encode(run.request.settings)

    def process_batch(self, p: Any, batch_number: int) -> None:
        run = self._run_of(p)
        if run is None or run.job is None:
            return
        first = batch_number * p.batch_size
        hires = bool(getattr(p, "enable_hr", False))
        same_hires_prompts = hires and list(p.hr_prompts or []) == list(p.prompts)
        passes = (0, 1) if same_hires_prompts else (0,)
        prompts, negatives = run.job.begin_batch(first, p.prompts, p.negative_prompts, p.seeds, passes)
        if hires and p.hr_prompts is not None:
            if same_hires_prompts:
                p.hr_prompts = list(prompts)
            else:
                erased = [parse_layer_prompt(t, run.job.layout.names).erase() for t in p.hr_prompts]
                if erased != list(p.hr_prompts) or list(prompts) != list(p.prompts):  # per-block text in either pass
                    run.comments.append("Dump U-Net: per-block prompts are not applied to a different Hires prompt.")
                p.hr_prompts = erased
            if list(p.hr_negative_prompts or []) == list(p.negative_prompts):
                p.hr_negative_prompts = list(negatives)
            elif p.hr_negative_prompts is not None:  # its own: read without per-block constructs, as the prompt is
                names = run.job.layout.names
                p.hr_negative_prompts = [parse_layer_prompt(t, names).erase() for t in p.hr_negative_prompts]
        p.prompts, p.negative_prompts = prompts, negatives

    def on_cfg_denoiser(self, params: Any) -> None:
        run = self.run
        denoiser = getattr(params, "denoiser", None)
        if run is None or run.job is None or denoiser is None or getattr(denoiser, "p", None) is not run.p:
            return
        if unet_of(shared.sd_model) is not run.job.layout.unet:
            note = "Dump U-Net: the model changed during the job (refiner?); no maps after the change."
            if note not in run.comments:
                run.comments.append(note)
            return
        call = denoiser_call(params, run.p)
        run.view_inputs = None
        if call.cond_counts is not None:
            run.job.denoiser_call(
                pass_index=call.pass_index,
                step=call.step,
                schedule_step=call.schedule_step,
                cond_counts=call.cond_counts,
            )
            if run.job.wants_view("x0") or run.job.wants_view("cfg"):
                run.view_inputs = (denoiser, params.x, params.sigma, call.cond_counts)

    def on_cfg_denoised(self, params: Any) -> None:
        """Every row's raw prediction: the guidance map of each cond row against its image's uncond row."""
        run = self.run
        if run is None or run.job is None or run.view_inputs is None or not run.job.wants_view("cfg"):
            return
        denoiser, x_in, sigma, _counts = run.view_inputs
        if params.x.shape[0] != x_in.shape[0]:
            return  # not the rows announced (InstructPix2Pix adds a third block)
        run.job.denoised(predicted_x0(denoiser, x_in, params.x, sigma))

    def on_cfg_after_cfg(self, params: Any) -> None:
        """The guided prediction, one row per image: the x0 view."""
        run = self.run
        if run is None or run.job is None or run.view_inputs is None or not run.job.wants_view("x0"):
            return
        denoiser, x_in, sigma, counts = run.view_inputs
        firsts = first_cond_rows(counts)
        run.job.guided(predicted_x0(denoiser, x_in[firsts], params.x, sigma[firsts]))

    def postprocess_batch(self, p: Any, batch_number: int, count: int) -> None:
        run = self._run_of(p)
        if run is None or run.job is None:
            return
        first = batch_number * p.batch_size
        for image in range(first, first + count):
            run.maps[image] = run.job.take_maps(image)
        run.generated = max(run.generated, first + count)

    def on_image_saved(self, params: Any) -> None:
        run = self.run
        if run is not None and params.p is run.p and params.filename:
            run.saved[id(params.image)] = params.filename

    def postprocess(self, p: Any, processed: Any) -> None:
        run = self._run_of(p)
        if run is None:
            return
        try:
            self._deliver(run, processed)
        finally:
            run.close()
            self.run, self.finished = None, run

    # --- helpers -------------------------------------------------------------------------------------------------

    def _reset_on_close(self, p: Any) -> None:
        """Also reset when the webui closes `p`: it does so in a `finally` around every job (UI and API), so a run
        that raised — and so never reached `postprocess` — leaves no hook behind it either."""
        close = p.close

        def close_and_reset() -> None:
            try:
                close()
            finally:
                if self.run is not None and self.run.p is p:
                    self.reset()

        p.close = close_and_reset

    def _run_of(self, p: Any) -> Run | None:
        return self.run if self.run is not None and self.run.p is p else None

    def _refuse(self, run: Run, unet: Any, err: DumpUnetError) -> None:
        """Stop the job at the U-Net's first call with `err` (nothing has been computed yet)."""
        log.error("%s", err)
        if unet is None:
            run.comments.append(str(err))
            return
        hooks = HookSet()

        def stop(*_args: Any) -> None:
            hooks.close()
            raise err

        hooks.pre(unet, stop)
        run.refusal = hooks

    def _deliver(self, run: Run, processed: Any) -> None:
        p, job = run.p, run.job
        if job is not None:
            run.comments.extend(note for note in job.notes() if note not in run.comments)
            for tab in (job.plan.features, job.plan.attention, job.plan.heatmap):
                if tab is not None and job.steps_seen:
                    missing = job.missing_steps(tab, int(p.steps))
                    if missing:
                        run.comments.append(f"Dump U-Net: {tab.tab} steps {missing} were never reached.")
        first, extras = processed.index_of_first_image, outputs.images_after_each(p)
        positions = outputs.image_positions(processed, run.generated, extras)
        infotexts = processed.infotexts
        run.owners = {i: infotexts[first + i] for i in range(len(positions)) if first + i < len(infotexts)}
        run.files = {
            i: run.saved[id(processed.images[at])]
            for i, at in enumerate(positions)
            if id(processed.images[at]) in run.saved
        }
        if job is not None and job.plan.heatmap is not None:
            _add_word_maps(run, processed, positions)
        if job is not None and run.request.settings.prompt_tensor.enabled and job.role != "baseline":
            _add_prompt_maps(run)
        output = run.request.settings.output
        if output.save_images and not getattr(p, "do_not_save_samples", False):
            outputs.save_maps(p, outputs.for_saving(run.maps), run.files, run.owners, run.save_folder)
        outputs.insert_maps(processed, outputs.for_gallery(run.maps, output.display_min), positions, extras)
        if getattr(p, CELL, None) == "map":  # a view is its own summary picture, like a block's averaged map
            cell = [dataclasses.replace(m, averaged=True) if is_view(m.key.place) else m for m in run.maps.get(0, ())]
            outputs.map_first(processed, cell)
        elif getattr(p, CELL, None) == HEAT_CELL:
            heat = [dataclasses.replace(m, averaged=True) for m in run.maps.get(0, ()) if m.key.kind == "heat"]
            outputs.map_first(processed, heat[:1])
        for comment in run.comments:
            p.comment(comment)
            processed.comments = f"{processed.comments}\n{comment}".strip()


def _add_word_maps(run: Run, processed: Any, positions: list[int]) -> None:
    """Word heat maps after each image's other maps, drawn over the image as the gallery has it."""
    settings = run.job.plan.heatmap.settings
    for index, at in enumerate(positions):
        try:
            pictures = heatmap_tab.word_pictures(run.job, index, processed.images[at], settings, shared.sd_model)
        except DumpUnetError as err:
            run.comments.append(f"Dump U-Net: no word heat maps for image {index + 1}: {err}")
            continue
        run.maps.setdefault(index, []).extend(pictures)


def _add_prompt_maps(run: Run) -> None:
    """The prompt tensors the job's U-Net read, each after the first image that used it."""
    try:
        drawn = prompt_tensor.prompt_maps(run.job, run.p, run.request.settings.prompt_tensor, shared.sd_model)
    except DumpUnetError as err:
        run.comments.append(f"Dump U-Net: no prompt tensor maps: {err}")
        return
    for index, pictures in drawn.items():
        run.maps.setdefault(index, []).extend(pictures)


def _check_prompts(p: Any, names: tuple[str, ...]) -> None:
    """Parse every prompt of the job now, so a mistake in batch 3 does not cost batches 1 and 2."""
    for field_name, prompts in (
        ("Prompt", p.all_prompts),
        ("Negative prompt", p.all_negative_prompts),
        ("Hires prompt", getattr(p, "all_hr_prompts", None) or []),
        ("Hires negative prompt", getattr(p, "all_hr_negative_prompts", None) or []),
    ):
        for text in dict.fromkeys(prompts):
            parse_layer_prompt(text, names, field=field_name)
