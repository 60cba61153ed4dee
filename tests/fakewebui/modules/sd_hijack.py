"""Stand-in for webui v1.10.1 `modules/sd_hijack.py`: `model_hijack` and `EmbeddingsWithFixes`.

`model_hijack.hijack(model)` replaces each text encoder by its webui wrapper (`sd_hijack_clip`,
`sd_hijack_open_clip`) and its token-embedding layer by `EmbeddingsWithFixes`, which splices textual-inversion
vectors in where the wrapper's `fixes` say. Cross-attention optimisations are not swapped: ldm's own attention runs.
It also collects what the text encoders add to the infotext (`extra_generation_params`, `comments`).
"""

from __future__ import annotations

from typing import Any

import torch
from modules import devices, sd_hijack_clip, sd_hijack_open_clip
from modules.shared_cmd_options import cmd_opts
from modules.textual_inversion import textual_inversion


class EmbeddingsWithFixes(torch.nn.Module):
    """A token-embedding layer that overwrites placeholder positions with embedding vectors.

    `embeddings` is the hijack object; its `fixes` (one list of `PromptChunkFix` per batch row) are consumed by the
    next call. Offsets count from after BOS. `vec` may be a dict keyed by encoder (`textual_inversion_key`)."""

    def __init__(self, wrapped: torch.nn.Module, embeddings: Any, textual_inversion_key: str = "clip_l") -> None:
        super().__init__()
        self.wrapped = wrapped
        self.embeddings = embeddings
        self.textual_inversion_key = textual_inversion_key
        self.weight = wrapped.weight

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        pending, self.embeddings.fixes = self.embeddings.fixes, None
        vectors = self.wrapped(input_ids)
        if not pending or not any(pending):
            return vectors
        return torch.stack([self._splice(row, fixes) for row, fixes in zip(vectors, pending, strict=True)])

    def _splice(self, row: torch.Tensor, fixes: list) -> torch.Tensor:
        for offset, embedding in fixes:
            vec = embedding.vec
            if isinstance(vec, dict):
                vec = vec[self.textual_inversion_key]
            vec = devices.cond_cast_unet(vec)
            start = offset + 1
            stop = min(row.shape[0], start + vec.shape[0])
            row = torch.cat([row[:start], vec[: stop - start].to(row.dtype), row[stop:]])
        return row


# encoder class name → (webui wrapper, textual-inversion key)
_WRAPPERS = {
    "FrozenCLIPEmbedder": (sd_hijack_clip.FrozenCLIPEmbedderWithCustomWords, "clip_l"),
    "FrozenOpenCLIPEmbedder": (sd_hijack_open_clip.FrozenOpenCLIPEmbedderWithCustomWords, "clip_l"),
}
_SDXL_WRAPPERS = {
    "FrozenCLIPEmbedder": (sd_hijack_clip.FrozenCLIPEmbedderForSDXLWithCustomWords, "clip_l"),
    "FrozenOpenCLIPEmbedder2": (sd_hijack_open_clip.FrozenOpenCLIPEmbedder2WithCustomWords, "clip_g"),
}


class StableDiffusionModelHijack:
    fixes: list | None = None
    layers = None
    circular_enabled = False
    clip = None
    optimization_method: str | None = None

    def __init__(self) -> None:
        self.extra_generation_params: dict[str, Any] = {}
        self.comments: list[str] = []
        self.embedding_db = textual_inversion.EmbeddingDatabase()
        self.embedding_db.add_embedding_dir(cmd_opts.embeddings_dir)

    def _wrap(self, encoder: torch.nn.Module, table: dict) -> torch.nn.Module | None:
        found = table.get(type(encoder).__name__)
        if found is None:
            return None
        wrapper, key = found
        embeddings = encoder.transformer.text_model.embeddings
        if not isinstance(embeddings.token_embedding, EmbeddingsWithFixes):
            embeddings.token_embedding = EmbeddingsWithFixes(embeddings.token_embedding, self, key)
        return wrapper(encoder, self)

    def hijack(self, m: Any) -> None:
        conditioner = getattr(m, "conditioner", None)
        if conditioner is not None:  # SDXL: the embedders are wrapped in place
            wrapped = []
            for index, embedder in enumerate(conditioner.embedders):
                replacement = self._wrap(embedder, _SDXL_WRAPPERS)
                if replacement is not None:
                    conditioner.embedders[index] = replacement
                    wrapped.append(replacement)
            m.cond_stage_model = wrapped[0] if len(wrapped) == 1 else conditioner
        else:
            replacement = self._wrap(m.cond_stage_model, _WRAPPERS)
            if replacement is not None:
                m.cond_stage_model = replacement
        self.apply_optimizations()
        self.clip = m.cond_stage_model

    def apply_optimizations(self, option: str | None = None) -> None:
        self.optimization_method = apply_optimizations(option)

    def undo_hijack(self, m: Any) -> None:
        """The fake never unloads a model, so nothing is unwrapped."""

    def redo_hijack(self, m: Any) -> None:
        self.undo_hijack(m)
        self.hijack(m)

    def apply_circular(self, enable: bool) -> None:
        self.circular_enabled = enable

    def clear_comments(self) -> None:
        self.comments = []
        self.extra_generation_params = {}

    def get_prompt_lengths(self, text: str) -> tuple[Any, Any]:
        """(tokens used, tokens available) for the UI's counter."""
        if self.clip is None:
            return "-", "-"
        _, used = self.clip.process_texts([text])
        return used, self.clip.get_target_prompt_token_count(used)


def apply_optimizations(option: str | None = None) -> str:
    """The name of the cross-attention optimisation put in place: always "None", ldm's own attention runs."""
    return "None"


def undo_optimizations() -> None:
    """Put the original attention back (what the webui does for training): the fake never replaced it."""


model_hijack = StableDiffusionModelHijack()
