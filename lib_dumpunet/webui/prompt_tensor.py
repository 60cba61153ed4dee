"""The prompt tensor view in the webui: the loaded model's conditionings of a finished job, as gallery maps.

`WebuiPromptSource` is `lib_dumpunet.prompt_view.PromptSource` over the webui's own conditioning path:
`prompt_parser.get_learned_conditioning` with the job's size, sampler step count and prompt-editing rules (so a
`[a:b:0.5]` schedule comes back entry by entry), negative prompts marked as such (SDXL zeroes an empty one, as it
does when sampling), SDXL's pooled vector kept; the token inspector's table of the same encoder labels the rows.
`prompt_maps` draws one job's pictures, each filed under the first image whose sampling used that conditioning. With
hires fix and prompts of its own (Hires prompt, Hires negative prompt), the hires pass's texts are drawn too, encoded
as `calculate_hr_conds` does: the upscaled size, the hires sampler's step count, the first pass's count as the base of
prompt editing. The engine erases per-block constructs from a different Hires prompt, so those texts are read erased.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from modules import devices, prompt_parser, sd_samplers, shared

from lib_dumpunet.errors import DumpUnetError
from lib_dumpunet.layer_prompt import parse_layer_prompt
from lib_dumpunet.prompt_view import Encoding, HiresPass, Part, PromptViewSettings, collect, render
from lib_dumpunet.render import MapImage
from lib_dumpunet.tokens import TokenTable
from lib_dumpunet.webui.tokens import token_table

__all__ = ["WebuiPromptSource", "hires_pass", "hires_schedule_steps", "prompt_maps", "schedule_steps"]

log = logging.getLogger(__name__)

_VOCABULARY_MIN = 49408  # CLIP's token-embedding table has this many rows; position tables far fewer


def schedule_steps(p: Any) -> int:
    """The step count the webui builds the first pass's prompt schedules with (second-order samplers: calls)."""
    config = sd_samplers.find_sampler_config(getattr(p, "sampler_name", None))
    return int(config.total_steps(int(p.steps))) if config is not None else int(p.steps)


def hires_schedule_steps(p: Any) -> int:
    """The step count the webui builds the hires pass's prompt schedules with (its own sampler's model calls)."""
    steps = int(getattr(p, "hr_second_pass_steps", 0) or p.steps)
    config = sd_samplers.find_sampler_config(getattr(p, "hr_sampler_name", None) or getattr(p, "sampler_name", None))
    return int(config.total_steps(steps)) if config is not None else steps


def _width(module: torch.nn.Module) -> int | None:
    for sub in module.modules():
        if isinstance(sub, torch.nn.Embedding) and sub.num_embeddings >= _VOCABULARY_MIN:
            return int(sub.weight.shape[1])
    return None


def _parts(model: Any) -> tuple[Part, ...]:
    """SDXL: the two text encoders' widths in context order (CLIP-L, then OpenCLIP-G); () for one encoder."""
    conditioner = getattr(model, "conditioner", None)
    if conditioner is None:
        return ()
    parts = []
    for embedder in getattr(conditioner, "embedders", ()):
        if not hasattr(embedder, "tokenize_line"):
            continue
        width = _width(embedder)
        if width is not None:
            parts.append(Part("OpenCLIP-G" if "OpenCLIP" in type(embedder).__name__ else "CLIP-L", width))
    return tuple(parts) if len(parts) > 1 else ()


class WebuiPromptSource:
    """`PromptSource` for a job on `p` with the loaded `model`; `pass_index` 1 encodes as the hires pass does."""

    def __init__(self, p: Any, model: Any, pass_index: int = 0) -> None:
        self.p, self.model, self.pass_index = p, model, pass_index
        self._parts = _parts(model)

    @property
    def parts(self) -> tuple[Part, ...]:
        return self._parts

    def encode(self, text: str, *, negative: bool) -> list[Encoding]:
        p, steps, old = self.p, schedule_steps(self.p), getattr(shared.opts, "use_old_scheduling", False)
        width, height, hires_steps = p.width, p.height, None
        if self.pass_index:
            width, height = getattr(p, "hr_upscale_to_x", 0) or width, getattr(p, "hr_upscale_to_y", 0) or height
            hires_steps = hires_schedule_steps(p)
        texts = prompt_parser.SdConditioning([text], is_negative_prompt=negative, width=width, height=height)
        with devices.autocast():
            (schedule,) = prompt_parser.get_learned_conditioning(self.model, texts, steps, hires_steps, old)
        (entries,) = prompt_parser.get_learned_conditioning_prompt_schedules([text], steps, hires_steps, old)
        own = [t for _end, t in entries] if len(entries) == len(schedule) else [None] * len(schedule)
        return [Encoding(s.end_at_step, *self._split(s.cond), text=t) for s, t in zip(schedule, own, strict=True)]

    def _split(self, cond: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(context, pooled vector or None) of one schedule entry's conditioning."""
        if not isinstance(cond, dict):
            return cond, None
        vector = cond.get("vector")
        pooled = None
        if vector is not None and self._parts:
            pooled = vector.reshape(-1)[: self._parts[-1].width]  # sgm puts OpenCLIP-G's pooled output first
        return cond["crossattn"], pooled

    def token_table(self, text: str) -> TokenTable | None:
        try:
            return token_table(text, self.model)
        except DumpUnetError as err:
            log.warning("no token labels for the prompt tensor: %s", err)
            return None


def _erased(text: str, names: tuple[str, ...]) -> str:
    """`text` as the engine hands a Hires prompt of its own to the webui: per-block constructs erased (a text that
    cannot be read as such is left as it is; the job's prompt check reports it)."""
    try:
        return parse_layer_prompt(text, names).erase()
    except DumpUnetError:
        return text


def hires_pass(job: Any, p: Any, model: Any) -> HiresPass | None:
    """The hires pass's own texts, per image whose Hires prompt or Hires negative prompt differs from its prompt or
    negative prompt; None without hires fix or when the hires pass reads the first pass's texts."""
    if not getattr(p, "enable_hr", False):
        return None
    hr_prompts = list(getattr(p, "all_hr_prompts", None) or [])
    hr_negatives = list(getattr(p, "all_hr_negative_prompts", None) or [])
    prompts, negatives = list(p.all_prompts), list(p.all_negative_prompts)
    own_prompts: dict[int, list[str]] = {}
    own_negatives: dict[int, str] = {}
    for image in sorted(job.images):
        if image < min(len(hr_prompts), len(prompts)) and hr_prompts[image] != prompts[image]:
            own_prompts[image] = job.host.split_and(_erased(hr_prompts[image], job.layout.names))
        if image < min(len(hr_negatives), len(negatives)) and hr_negatives[image] != negatives[image]:
            own_negatives[image] = hr_negatives[image]  # the engine hands a different one over unchanged
    if not own_prompts and not own_negatives:
        return None
    steps = int(getattr(p, "hr_second_pass_steps", 0) or p.steps)
    per_step = max(1, hires_schedule_steps(p) // steps)
    source = WebuiPromptSource(p, model, pass_index=1)
    return HiresPass(source, own_prompts, own_negatives, steps=steps, calls_per_step=per_step)


def prompt_maps(job: Any, p: Any, settings: PromptViewSettings, model: Any) -> dict[int, list[MapImage]]:
    """The job's prompt tensors (the hires pass's own texts included), drawn, by the index of the image each is
    shown after."""
    steps = int(p.steps)
    per_step = max(1, schedule_steps(p) // steps)
    hires = hires_pass(job, p, model)
    tensors = collect(job, WebuiPromptSource(p, model), settings, steps=steps, calls_per_step=per_step, hires=hires)
    out: dict[int, list[MapImage]] = {}
    for m in render(tensors, settings):
        out.setdefault(m.key.image, []).append(m)
    return out
