"""What the estimator needs from a model, as two small protocols, and the conditioning type they exchange.

`PromptEncoder` turns prompts into the U-Net's conditioning the way the host encodes them (emphasis, textual
inversion, chunks), and can encode a prompt that uses embeddings given as tensors, with gradients flowing back into
those tensors. `Denoiser` is the U-Net seen from a k-diffusion sampler: a latent at a noise level `sigma` in, the
predicted clean latent out. The webui adapter implements both on the loaded model; tests implement them on tiny real
architectures. Embedding vectors are a dict from part to an (N, width) tensor: one part "*" for SD1/SD2, "clip_l"
and "clip_g" for SDXL, exactly the keys a textual-inversion file stores.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, Union

import torch

__all__ = [
    "SDXL_PARTS",
    "SINGLE_PART",
    "Cond",
    "Denoiser",
    "PromptEncoder",
    "Vectors",
    "crossattn",
    "join_conds",
    "vector_count",
]

SINGLE_PART = "*"
SDXL_PARTS = ("clip_l", "clip_g")

Vectors = dict[str, torch.Tensor]
# SD1/SD2: a (B, 77·k, C) tensor; SDXL: {"crossattn": (B, 77·k, C), "vector": (B, D)}.
Cond = Union[torch.Tensor, dict[str, torch.Tensor]]  # noqa: UP007 (a runtime alias)


class PromptEncoder(Protocol):
    """The host's prompt encoder."""

    @property
    def parts(self) -> dict[str, int]:
        """Embedding parts and their widths: {"*": 768} (SD1), {"clip_l": 768, "clip_g": 1280} (SDXL)."""
        ...

    def encode(self, prompt: str, embeddings: Mapping[str, Vectors] | None = None) -> Cond:
        """The conditioning of `prompt` (batch 1). Words in `embeddings` stand for those vectors, which may require
        grad; without them, unknown words are ordinary text. Raises DumpUnetError for a prompt it cannot encode."""
        ...

    def token_rows(self, text: str) -> Vectors:
        """The token-embedding rows of `text` (before the transformer, no emphasis): the usual init vectors."""
        ...

    def random_rows(self, count: int, generator: torch.Generator) -> Vectors:
        """`count` random vectors at the scale of the token-embedding table."""
        ...


class Denoiser(Protocol):
    """A U-Net wrapped as k-diffusion's denoisers are: `denoised = D(x, sigma, cond)`."""

    @property
    def sigma_min(self) -> float: ...

    @property
    def sigma_max(self) -> float: ...

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, cond: Cond) -> torch.Tensor: ...


def crossattn(cond: Cond) -> torch.Tensor:
    """The cross-attention context of a conditioning."""
    return cond["crossattn"] if isinstance(cond, dict) else cond


def join_conds(conds: list[Cond]) -> Cond:
    """Stack conditionings along the batch (all of one token length)."""
    if isinstance(conds[0], dict):
        return {key: torch.cat([c[key] for c in conds]) for key in conds[0]}  # type: ignore[index]
    return torch.cat(conds)  # type: ignore[arg-type]


def vector_count(vectors: Vectors) -> int:
    return int(next(iter(vectors.values())).shape[0])
