"""Stand-in for webui v1.10.1 `modules/sd_emphasis.py`: what `(word:1.5)` weights do to the encoder's output.

Each mode is a class named by the `emphasis` setting. It receives the chunk's ids (`tokens`), a (B, 77)
`multipliers` tensor and the encoder output `z` (B, 77, C), and leaves the result in `z`.
"""

from __future__ import annotations

import torch


class Emphasis:
    """Base mode: leaves `z` as the encoder produced it."""

    name: str = "Base"
    description: str = ""
    tokens: list[list[int]]
    multipliers: torch.Tensor
    z: torch.Tensor

    def after_transformers(self) -> None:
        """Change `self.z` after the transformer has encoded one chunk column."""


class EmphasisNone(Emphasis):
    name = "None"
    description = "brackets and weights are plain text"


class EmphasisIgnore(Emphasis):
    name = "Ignore"
    description = "weights are parsed, then not applied"


class EmphasisOriginal(Emphasis):
    name = "Original"
    description = "scale every token vector by its weight, then restore the mean of the whole output"

    def after_transformers(self) -> None:
        mean_before = self.z.mean()
        scaled = self.z * self.multipliers.unsqueeze(-1)
        self.z = scaled * (mean_before / scaled.mean())


class EmphasisOriginalNoNorm(EmphasisOriginal):
    name = "No norm"
    description = "scale every token vector by its weight, nothing else"

    def after_transformers(self) -> None:
        self.z = self.z * self.multipliers.unsqueeze(-1)


options: list[type[Emphasis]] = [EmphasisNone, EmphasisIgnore, EmphasisOriginal, EmphasisOriginalNoNorm]


def get_current_option(emphasis_option_name: str) -> type[Emphasis]:
    """The mode class called `emphasis_option_name`; an unknown name falls back to "Original"."""
    return {mode.name: mode for mode in options}.get(emphasis_option_name, EmphasisOriginal)


def get_options_descriptions() -> str:
    return ", ".join(f"{mode.name}: {mode.description}" for mode in options)
