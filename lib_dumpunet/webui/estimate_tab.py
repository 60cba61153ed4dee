"""The "Embedding Estimate" tab: estimate a textual-inversion embedding from a prompt, as a webui job.

The library (`lib_dumpunet.estimate`) does the work against two small protocols; this module implements them on the
loaded webui model. `WebuiEncoder` encodes with the model's own hijacked text encoders (so emphasis, BREAK, existing
embeddings and clip skip are the webui's), registering the live vectors as a temporary `Embedding` in the embedding
database for each encode and removing it afterwards; SDXL's conditioner runs its embedders under `no_grad` unless
they are marked trainable, so they are, for the duration of an encode. `WebuiDenoiser` is the U-Net behind
`apply_model` on the model's noise schedule. Model weights are frozen while the job runs (the webui leaves them
trainable) and the cross-attention optimisations are undone for U-NET mode unless the webui's training option keeps
them, as the webui's own embedding training does.

The Estimate button runs through `call_queue.wrap_gradio_gpu_call` (queue lock, `shared.state` job, progress bar
through the task id our JavaScript supplies, errors shown in the result panel). Interrupt stops within one
iteration and saves; "Interrupt (not save)" stops and discards. The file is written under the embeddings folder and
the embedding database is reloaded, so the word works at once.
"""

from __future__ import annotations

import contextlib
import html
import logging
import re
from collections.abc import Iterator, Mapping
from typing import Any

import gradio as gr
import torch
from modules import call_queue, devices, prompt_parser, sd_hijack, shared
from modules.textual_inversion import textual_inversion

from lib_dumpunet.errors import DumpUnetError
from lib_dumpunet.estimate import settings as est
from lib_dumpunet.estimate.denoise import ScheduleDenoiser
from lib_dumpunet.estimate.model import SINGLE_PART, Cond, Vectors, vector_count
from lib_dumpunet.estimate.run import EstimateRun, run_estimate

__all__ = ["FIELD_ORDER", "TAB_ID", "TAB_TITLE", "WebuiEncoder", "build_tab", "estimate_job", "on_ui_tabs"]

log = logging.getLogger(__name__)

TAB_TITLE = "Embedding Estimate"
TAB_ID = "dumpunet_estimate"
VOCAB_MIN = 49408  # CLIP's token table; the position table (77 rows) is never mistaken for it

# The settings fields in the order the tab hands them to the job (after the task id).
FIELD_ORDER = (
    "target",
    "steps",
    "cfg_scale",
    "tokens",
    "prompt",
    "negative_prompt",
    "mode",
    "learning_rate",
    "optimizer",
    "loss",
    "schedule",
    "iterations",
    "init_text",
    "vectors_from",
    "all_rows",
    "sampler",
    "seed",
    "name",
    "overwrite",
    "file_format",
)


# --- the model as the estimator sees it ------------------------------------------------------------------------------


def _text_embedders(sd_model: Any) -> list[tuple[str, Any]]:
    """(part, hijacked text encoder) pairs: one "*" for SD1/SD2, "clip_l" and "clip_g" for SDXL."""
    conditioner = getattr(sd_model, "conditioner", None)
    if conditioner is None:
        return [(SINGLE_PART, sd_model.cond_stage_model)]
    found = []
    for embedder in conditioner.embedders:
        if hasattr(embedder, "tokenize") and hasattr(embedder, "encode_embedding_init_text"):
            found.append(("clip_g" if "OpenCLIP" in type(embedder).__name__ else "clip_l", embedder))
    if sorted(part for part, _ in found) != ["clip_g", "clip_l"]:
        raise DumpUnetError("This SDXL model's text encoders are not the CLIP-L + OpenCLIP-G pair the webui hijacks.")
    return found


def _token_table(embedder: Any) -> torch.Tensor:
    for module in embedder.modules():
        if isinstance(module, torch.nn.Embedding) and module.num_embeddings >= VOCAB_MIN:
            return module.weight
    raise DumpUnetError("Could not find the text encoder's token-embedding table.")


@contextlib.contextmanager
def _frozen(*modules: torch.nn.Module | None) -> Iterator[None]:
    """No weight gradients while the block runs; every parameter's flag restored afterwards."""
    saved = [(p, p.requires_grad) for m in modules if m is not None for p in m.parameters()]
    for p, _ in saved:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in reversed(saved):
            p.requires_grad_(flag)


def _word_pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![\w]){re.escape(name)}(?![\w])", re.IGNORECASE)


class WebuiEncoder:
    """`PromptEncoder` on the loaded webui model."""

    def __init__(self, sd_model: Any, width: int, height: int, *, empty_is_negative: bool) -> None:
        self.sd_model = sd_model
        self.width, self.height = width, height
        self.empty_is_negative = empty_is_negative
        self.embedders = _text_embedders(sd_model)
        self.db = sd_hijack.model_hijack.embedding_db

    @property
    def parts(self) -> dict[str, int]:
        return {part: int(_token_table(embedder).shape[1]) for part, embedder in self.embedders}

    def _check_prompt(self, prompt: str) -> None:
        for name, embedding in getattr(self.db, "skipped_embeddings", {}).items():
            if _word_pattern(name).search(prompt):
                width = getattr(embedding, "shape", "?")
                raise DumpUnetError(
                    f"Prompt: the embedding '{name}' is in the embeddings folder but not loaded for this model "
                    f"(its vectors are {width} wide, the model takes {sum(self.parts.values())}): remove it from the "
                    "prompt or load a model it was made for."
                )

    @contextlib.contextmanager
    def _registered(self, embeddings: Mapping[str, Vectors]) -> Iterator[None]:
        names = []
        try:
            for name, vectors in embeddings.items():
                vec = vectors[SINGLE_PART] if SINGLE_PART in vectors else dict(vectors)
                embedding = textual_inversion.Embedding(vec, name)
                embedding.vectors = vector_count(vectors)
                embedding.shape = sum(v.shape[-1] for v in vectors.values())
                self.db.register_embedding(embedding, self.sd_model)
                names.append(name)
            yield
        finally:
            for name in reversed(names):
                self.db.register_embedding_by_name(None, self.sd_model, name)

    @contextlib.contextmanager
    def _trainable_embedders(self, active: bool) -> Iterator[None]:
        flags = [(e, e.is_trainable) for _, e in self.embedders if active and hasattr(e, "is_trainable")]
        for embedder, _ in flags:
            embedder.is_trainable = True
        try:
            yield
        finally:
            for embedder, flag in reversed(flags):
                embedder.is_trainable = flag

    def encode(self, prompt: str, embeddings: Mapping[str, Vectors] | None = None) -> Cond:
        self._check_prompt(prompt)
        embeddings = embeddings or {}
        texts = prompt_parser.SdConditioning(
            [prompt], is_negative_prompt=self.empty_is_negative and not prompt, width=self.width, height=self.height
        )
        with self._registered(embeddings), self._trainable_embedders(bool(embeddings)), devices.autocast():
            return self.sd_model.get_learned_conditioning(texts)

    def token_rows(self, text: str) -> Vectors:
        rows = {}
        for part, embedder in self.embedders:
            table = _token_table(embedder)
            ids = torch.tensor(embedder.tokenize([text])[0], dtype=torch.long, device=table.device)
            rows[part] = table[ids].detach().float().clone()
        return rows

    def random_rows(self, count: int, generator: torch.Generator) -> Vectors:
        rows = {}
        for part, embedder in self.embedders:
            table = _token_table(embedder).detach().float()
            noise = torch.randn(count, table.shape[1], generator=generator).to(table.device)
            rows[part] = table.mean(0) + noise * table.std(0)
        return rows


def webui_denoiser(sd_model: Any) -> ScheduleDenoiser:
    """The loaded model's U-Net as a k-diffusion denoiser; refuses models with extra image conditioning."""
    if getattr(sd_model, "is_sdxl_inpaint", False) or getattr(sd_model.model, "conditioning_key", "crossattn") not in (
        "crossattn",
        None,
    ):
        raise DumpUnetError("U-NET mode needs a plain text-to-image model, not an inpainting or instruct model.")

    def apply(x: torch.Tensor, t: torch.Tensor, cond: Cond) -> torch.Tensor:
        wrapped = dict(cond) if isinstance(cond, dict) else {"c_crossattn": [cond]}
        with devices.autocast():
            return sd_model.apply_model(x, t, wrapped).float()

    return ScheduleDenoiser(apply, sd_model.alphas_cumprod, getattr(sd_model, "parameterization", "eps"))


def native_size(sd_model: Any) -> int:
    if getattr(sd_model, "is_sdxl", False):
        return 1024
    if getattr(sd_model, "is_sd2", False) and getattr(sd_model, "parameterization", "eps") == "v":
        return 768
    return 512


# --- the job ---------------------------------------------------------------------------------------------------------


class _Control:
    """Interrupt flags for the running estimate (one job at a time: the queue lock guarantees it)."""

    discard_requested = False


class WebuiMonitor:
    def __init__(self, total: int) -> None:
        shared.state.job_count = 1
        shared.state.sampling_steps = total
        shared.state.sampling_step = 0
        shared.state.textinfo = "Embedding Estimate: preparing"

    def iteration(self, done: int, total: int, loss: float) -> None:
        shared.state.sampling_step = done
        shared.state.textinfo = f"Embedding Estimate: step {done}/{total}, loss {loss:.6g}"

    def stop_requested(self) -> bool:
        return bool(shared.state.interrupted)

    def discard(self) -> bool:
        return _Control.discard_requested


@contextlib.contextmanager
def _training_attention(active: bool) -> Iterator[None]:
    """Plain attention for backward passes unless the webui's option keeps the optimised kernels."""
    undo = active and not getattr(shared.opts, "training_xattention_optimizations", False)
    if undo:
        sd_hijack.undo_optimizations()
    try:
        yield
    finally:
        if undo:
            sd_hijack.apply_optimizations()


def _checkpoint(sd_model: Any) -> tuple[str, str] | None:
    info = getattr(sd_model, "sd_checkpoint_info", None)
    if info is None:
        return None
    return str(getattr(info, "shorthash", "") or ""), str(getattr(info, "model_name", "") or "")


def settings_from(values: list[Any] | tuple[Any, ...]) -> est.EstimateSettings:
    if len(values) != len(FIELD_ORDER):
        raise DumpUnetError(f"Embedding Estimate expects {len(FIELD_ORDER)} values, got {len(values)}.")
    return est.from_values(**dict(zip(FIELD_ORDER, values, strict=True)))


def run_job(settings: est.EstimateSettings) -> EstimateRun:
    """Run one estimate on the loaded model and save it; callers hold the queue lock."""
    _Control.discard_requested = False
    sd_model = shared.sd_model
    size = native_size(sd_model)
    encoder = WebuiEncoder(sd_model, size, size, empty_is_negative=settings.target == "Prompts")
    unet_mode = settings.mode == "U-NET"
    denoiser = webui_denoiser(sd_model) if unet_mode else None
    channels = int(getattr(sd_model, "latent_channels", 4))
    text_models = [embedder for _, embedder in encoder.embedders]
    with _frozen(*text_models, sd_model.model if unet_mode else None), _training_attention(unet_mode):
        run = run_estimate(
            settings,
            encoder,
            shared.cmd_opts.embeddings_dir,
            denoiser=denoiser,
            latent_shape=(1, channels, size // 8, size // 8),
            device=devices.device,
            monitor=WebuiMonitor(settings.iterations),
            checkpoint=_checkpoint(sd_model),
        )
    if run.saved is not None:
        sd_hijack.model_hijack.embedding_db.load_textual_inversion_embeddings(force_reload=True)
    return run


def report_html(run: EstimateRun) -> str:
    r = run.result
    rows = [
        ("Saved", html.escape(str(run.saved.path)) if run.saved else "not saved (interrupted without saving)"),
        ("Use it as", html.escape(run.saved.name) if run.saved else "—"),
        ("Vectors", str(vector_count(r.vectors))),
        ("Iterations", f"{r.iterations}{' (interrupted)' if r.stopped else ''}"),
    ]
    if r.start and r.final:
        rows += [
            ("Matching loss", f"{r.start.loss:.6g} → {r.final.loss:.6g}"),
            ("Cosine to the target rows", f"{r.start.cosine:.4f} → {r.final.cosine:.4f}"),
            ("Relative distance to the target rows", f"{r.start.distance:.4f} → {r.final.distance:.4f}"),
        ]
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return f"<table class='dumpunet-estimate-report'>{body}</table>"


def loss_frame(losses: list[float]):
    import pandas as pd

    return pd.DataFrame({"iteration": list(range(1, len(losses) + 1)), "loss": losses})


def estimate_job(_task_id: str, *values: Any):
    """The Estimate button: (loss curve, report HTML). Raised errors become the webui's error message."""
    settings = settings_from(values)
    run = run_job(settings)
    return loss_frame(run.result.losses), report_html(run)


def interrupt(discard: bool) -> None:
    _Control.discard_requested = discard
    shared.state.interrupt()


# --- the UI ----------------------------------------------------------------------------------------------------------


def _prompt_section(d: est.EstimateSettings) -> dict[str, gr.components.Component]:
    c: dict[str, gr.components.Component] = {}
    c["target"] = gr.Radio(list(est.TARGETS), value=d.target, label="Training type")
    c["prompt"] = gr.Textbox(label="Your prompt", lines=4, max_lines=16, value=d.prompt)
    c["negative_prompt"] = gr.Textbox(label="Your negative prompt", lines=4, max_lines=16, value=d.negative_prompt)
    return c


def _vector_section(d: est.EstimateSettings) -> dict[str, gr.components.Component]:
    c: dict[str, gr.components.Component] = {}
    with gr.Row():
        c["tokens"] = gr.Slider(1, est.MAX_VECTORS, value=d.tokens, step=1, label="tokens")
        c["vectors_from"] = gr.Radio(
            list(est.VECTOR_SOURCES), value=d.vectors_from, label="Number of vectors from the init text, or 'tokens'"
        )
    c["init_text"] = gr.Textbox(label="Init text (blank: random vectors; emphasis is not applied here)", lines=1)
    return c


def _training_section(d: est.EstimateSettings) -> dict[str, gr.components.Component]:
    c: dict[str, gr.components.Component] = {}
    c["mode"] = gr.Radio(
        list(est.MODES),
        value=d.mode,
        label="Training part: Transformer matches the text encoder's rows; U-NET matches one sampler step",
    )
    with gr.Row():
        c["learning_rate"] = gr.Number(value=d.learning_rate, label="Learning rate", minimum=0, maximum=1)
        c["iterations"] = gr.Number(value=d.iterations, label="Learning steps", precision=0, minimum=1)
        c["optimizer"] = gr.Dropdown(list(est.OPTIMIZERS), value=d.optimizer, label="Optimizer")
        c["loss"] = gr.Dropdown(list(est.LOSSES), value=d.loss, label="Loss")
        c["schedule"] = gr.Dropdown(list(est.SCHEDULES), value=d.schedule, label="Learning rate schedule")
    c["all_rows"] = gr.Checkbox(value=d.all_rows, label="Transformer: match all 77 rows, not only the embedding's")
    with gr.Row():
        c["steps"] = gr.Slider(1, est.MAX_STEPS, value=d.steps, step=1, label="Steps (U-NET)")
        c["cfg_scale"] = gr.Slider(0, 50, value=d.cfg_scale, step=0.5, label="cfg_scale (U-NET)")
        c["sampler"] = gr.Dropdown(list(est.SAMPLERS), value=d.sampler, label="Sampler (U-NET)")
        c["seed"] = gr.Number(value=d.seed, label="Seed", precision=0)
    return c


def _save_section(d: est.EstimateSettings) -> dict[str, gr.components.Component]:
    c: dict[str, gr.components.Component] = {}
    with gr.Row():
        c["name"] = gr.Textbox(label="Save embedding name", value=d.name)
        c["overwrite"] = gr.Checkbox(value=d.overwrite, label="Overwrite an embedding of that name")
        c["file_format"] = gr.Radio(list(est.FILE_FORMATS), value=d.file_format, label="File format")
    return c


def build_tab() -> gr.Blocks:
    defaults = est.EstimateSettings()
    with gr.Blocks(analytics_enabled=False) as tab:
        task_id = gr.Textbox(visible=False, elem_id=f"{TAB_ID}_task")
        components: dict[str, gr.components.Component] = {}
        with gr.Row():
            with gr.Column():
                for section in (_prompt_section, _vector_section, _training_section, _save_section):
                    components.update(section(defaults))
                with gr.Row():
                    start = gr.Button("Estimate!", variant="primary", elem_id=f"{TAB_ID}_start")
                    stop = gr.Button("Interrupt", elem_id=f"{TAB_ID}_interrupt")
                    drop = gr.Button("Interrupt (not save)", elem_id=f"{TAB_ID}_discard")
            with gr.Column():
                gr.HTML(elem_id=f"{TAB_ID}_progress")
                curve = gr.LinePlot(x="iteration", y="loss", title="Loss", elem_id=f"{TAB_ID}_curve")
                report = gr.HTML(elem_id=f"{TAB_ID}_report")
        start.click(
            fn=call_queue.wrap_gradio_gpu_call(estimate_job, extra_outputs=[gr.update()]),
            _js="dumpunetEstimateSubmit",
            inputs=[task_id, *(components[name] for name in FIELD_ORDER)],
            outputs=[curve, report],
        )
        stop.click(fn=lambda: interrupt(False), inputs=[], outputs=[], queue=False)
        drop.click(fn=lambda: interrupt(True), inputs=[], outputs=[], queue=False)
    tab.dumpunet_components = components  # for tests and the API: the inputs by settings field
    return tab


def on_ui_tabs():
    return [(build_tab(), TAB_TITLE, TAB_ID)]
