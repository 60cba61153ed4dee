"""The prompt tensor view in the webui: the loaded model's conditionings of a finished job, as gallery maps.

`WebuiPromptSource` is `lib_dumpunet.prompt_view.PromptSource` over the webui's own conditioning path:
`prompt_parser.get_learned_conditioning` with the job's size, sampler step count and prompt-editing rules (so a
`[a:b:0.5]` schedule comes back entry by entry), negative prompts marked as such (SDXL zeroes an empty one, as it
does when sampling), SDXL's pooled vector kept; the token inspector's table of the same encoder labels the rows.
`prompt_maps` draws one job's pictures, each filed under the first image whose sampling used that conditioning.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from modules import devices, prompt_parser, sd_samplers, shared

from lib_dumpunet.errors import DumpUnetError
from lib_dumpunet.prompt_view import Encoding, Part, PromptViewSettings, collect, render
from lib_dumpunet.render import MapImage
from lib_dumpunet.tokens import TokenTable
from lib_dumpunet.webui.tokens import token_table

__all__ = ["WebuiPromptSource", "prompt_maps", "schedule_steps"]

log = logging.getLogger(__name__)

_VOCABULARY_MIN = 49408  # CLIP's token-embedding table has this many rows; position tables far fewer


def schedule_steps(p: Any) -> int:
    """The step count the webui builds the first pass's prompt schedules with (second-order samplers: calls)."""
    config = sd_samplers.find_sampler_config(getattr(p, "sampler_name", None))
    return int(config.total_steps(int(p.steps))) if config is not None else int(p.steps)


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
    """`PromptSource` for a job on `p` with the loaded `model`."""

    def __init__(self, p: Any, model: Any) -> None:
        self.p, self.model = p, model
        self._parts = _parts(model)

    @property
    def parts(self) -> tuple[Part, ...]:
        return self._parts

    def encode(self, text: str, *, negative: bool) -> list[Encoding]:
        p, steps, old = self.p, schedule_steps(self.p), getattr(shared.opts, "use_old_scheduling", False)
        texts = prompt_parser.SdConditioning([text], is_negative_prompt=negative, width=p.width, height=p.height)
        with devices.autocast():
            (schedule,) = prompt_parser.get_learned_conditioning(self.model, texts, steps, None, old)
        (entries,) = prompt_parser.get_learned_conditioning_prompt_schedules([text], steps, None, old)
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


def prompt_maps(job: Any, p: Any, settings: PromptViewSettings, model: Any) -> dict[int, list[MapImage]]:
    """The job's prompt tensors, drawn, by the index of the image each is shown after."""
    steps = int(p.steps)
    per_step = max(1, schedule_steps(p) // steps)
    tensors = collect(job, WebuiPromptSource(p, model), settings, steps=steps, calls_per_step=per_step)
    out: dict[int, list[MapImage]] = {}
    for m in render(tensors, settings):
        out.setdefault(m.key.image, []).append(m)
    return out
