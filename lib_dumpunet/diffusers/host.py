"""The `Host` a `Job` needs, on a diffusers model: its text encoder, its AND split, its tokens, its empty chunk.

Per-block prompts are encoded with the same encoder as the job's own prompts (one schedule segment: the standalone
front-end has no prompt editing), so a per-block text equal to the prompt gives exactly the prompt's context.
"""

from __future__ import annotations

import torch

from lib_dumpunet.block_prompts import Schedule, ScheduledCond
from lib_dumpunet.diffusers.text import TextEncoder, split_and

__all__ = ["DiffusersHost"]

_FOREVER = 10**9


class DiffusersHost:
    """`lib_dumpunet.job.Host` for a diffusers model's text encoder(s)."""

    def __init__(self, text: TextEncoder) -> None:
        self.text = text

    def encode(self, text: str, pass_index: int) -> Schedule:
        return (ScheduledCond(_FOREVER, self.text.encode(text).context),)

    def split_and(self, prompt: str) -> list[str]:
        return [text for text, _weight in split_and(prompt)]

    def token_labels(self, text: str) -> list[str]:
        return self.text.labels(text)

    @property
    def empty_chunk(self) -> torch.Tensor:
        return self.text.encode("").context
