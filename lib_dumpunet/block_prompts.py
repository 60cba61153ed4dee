"""Per-block prompts at sampling time: each U-Net block gets, row by row, the conditioning of its own prompt.

No forward is replaced. A pre-hook on each block whose prompt differs from the webui's swaps the `context` the block
receives (ldm blocks are called as `block(h, emb, context)`; in diffusers the block's transformers are hooked, and
receive it as `encoder_hidden_states`) for a tensor built per row of the call: rows whose
(image, branch, AND sub-prompt) has its own text for this block get that text's encoding at the current position of
its prompt-editing schedule; other rows keep the webui's. Rows of one call must share a token count, so shorter rows
are padded with empty-prompt chunks, as the webui pads cond and uncond. In a call where no row has its own text
for a block, that block's hook returns at once: its computation is exactly the webui's.

Encodings come from the host's own encoder (emphasis, textual inversion, BREAK and `[a:b:when]` behave as in any
prompt), once per distinct text and pass, prepared before sampling; here they are only looked up.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from lib_dumpunet.capture import Capture
from lib_dumpunet.hooks import HookSet
from lib_dumpunet.layout import UNetLayout
from lib_dumpunet.sampling import Row, SamplingTracker, UNetCall

__all__ = ["BlockPrompts", "ScheduledCond", "at_step", "pad_tokens"]

# how the prompt reaches a block: ldm/sgm blocks take `context`, diffusers' transformers `encoder_hidden_states`
_CONTEXT_KEYWORDS = ("context", "encoder_hidden_states")


@dataclass(frozen=True)
class ScheduledCond:
    """One segment of a prompt-editing schedule: this context is used up to and including `end_at_step`."""

    end_at_step: int
    cond: torch.Tensor  # (tokens, width)


Schedule = tuple[ScheduledCond, ...]


def at_step(schedule: Schedule, step: int) -> torch.Tensor:
    """The context at a denoiser step, by the webui's rule: the first segment that has not ended yet."""
    for segment in schedule:
        if step <= segment.end_at_step:
            return segment.cond
    return schedule[-1].cond


def pad_tokens(cond: torch.Tensor, tokens: int, empty_chunk: torch.Tensor | None) -> torch.Tensor:
    """Lengthen a (tokens, width) context to `tokens` with empty-prompt chunks (or by repeating its last vector)."""
    missing = tokens - cond.shape[0]
    if missing <= 0:
        return cond
    if empty_chunk is not None and missing % empty_chunk.shape[0] == 0:
        filler = empty_chunk.to(cond).repeat(missing // empty_chunk.shape[0], 1)
    else:
        filler = cond[-1:].expand(missing, -1)
    return torch.cat([cond, filler])


@dataclass
class BlockPrompts:
    """The per-block prompt switch for one job (a probe attachment).

    `texts[row][block]` is the text a row must get in a block (rows as (image, branch, sub) of `sampling.Row`);
    `schedules[(pass_index, text)]` its encoding; a text without an encoding for a pass is not used in that pass
    (e.g. a hires pass with its own prompt). Both may grow between batches (`add`), before their rows sample.
    """

    texts: dict[Row, dict[str, str]] = field(default_factory=dict)
    schedules: dict[tuple[int, str], Schedule] = field(default_factory=dict)
    empty_chunk: torch.Tensor | None = None  # (77, width): the encoding of the empty prompt
    _built: dict[tuple, torch.Tensor] = field(default_factory=dict, repr=False)
    _built_for: UNetCall | None = field(default=None, repr=False)

    def add(self, texts: Mapping[Row, Mapping[str, str]], schedules: Mapping[tuple[int, str], Schedule]) -> None:
        for row, blocks in texts.items():
            self.texts.setdefault(row, {}).update(blocks)
        self.schedules.update(schedules)

    @property
    def blocks(self) -> set[str]:
        return {block for blocks in self.texts.values() for block in blocks}

    def distinct_texts(self) -> set[str]:
        return {text for blocks in self.texts.values() for text in blocks.values()}

    def attach(self, hooks: HookSet, layout: UNetLayout, tracker: SamplingTracker, capture: Capture) -> None:
        # every block could be named by a later batch, so all are hooked; unnamed ones return at once
        for name in layout.names:
            for module in layout.context_modules(name):
                hooks.pre(module, self._switch(name, tracker), with_kwargs=True)

    def _switch(self, block: str, tracker: SamplingTracker):
        def switch(_module, args: tuple, kwargs: dict):
            call = tracker.current
            if call is None:
                return None
            texts = tuple(self._text(row, block, call.step.pass_index) for row in call.rows)
            if all(t is None for t in texts):
                return None
            keyword = next((k for k in _CONTEXT_KEYWORDS if kwargs.get(k) is not None), None)
            if keyword is None and len(args) < 3:
                return None
            context = kwargs[keyword] if keyword else args[2]
            new = self._context(call, texts, context)
            if keyword:
                return args, {**kwargs, keyword: new}
            return (*args[:2], new, *args[3:]), kwargs

        return switch

    def _text(self, row: Row | None, block: str, pass_index: int) -> str | None:
        """The row's own text for this block, if it has one prepared for this pass."""
        text = None if row is None else self.texts.get(row, {}).get(block)
        return text if (pass_index, text) in self.schedules else None

    def _context(self, call: UNetCall, texts: tuple[str | None, ...], context: torch.Tensor) -> torch.Tensor:
        """The context for this call's rows, built once per distinct row texts and call (blocks share it)."""
        if self._built_for is not call:
            self._built.clear()
            self._built_for = call
        key = (texts, context.data_ptr())
        if key not in self._built:
            step = call.step
            rows = [
                context[i]
                if text is None
                else at_step(self.schedules[(step.pass_index, text)], step.schedule_step).to(context)
                for i, text in enumerate(texts)
            ]
            tokens = max(r.shape[0] for r in rows)
            self._built[key] = torch.stack([pad_tokens(r, tokens, self.empty_chunk) for r in rows])
        return self._built[key]
