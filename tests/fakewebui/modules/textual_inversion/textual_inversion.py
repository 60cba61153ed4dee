"""Stand-in for webui v1.10.1 `modules/textual_inversion/textual_inversion.py`: `Embedding` and the in-memory part
of `EmbeddingDatabase`.

A test (or an extension) registers an `Embedding` under a prompt word; the text-encoder wrappers then look the
word's token ids up with `find_embedding_at_position` and put the embedding's vectors in their place. Files are
never read: `load_textual_inversion_embeddings` keeps what was registered.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch


class Embedding:
    """A textual-inversion embedding: `vec` is (vectors, width), or a dict of them per encoder for SDXL; `vectors`
    (the count) and `shape` (the width) are set by the caller."""

    sd_checkpoint: str | None = None
    sd_checkpoint_name: str | None = None
    optimizer_state_dict: dict | None = None
    filename: str | None = None
    hash: str | None = None
    shorthash: str | None = None
    cached_checksum: str | None = None

    def __init__(self, vec: Any, name: str, step: int | None = None) -> None:
        self.vec = vec
        self.name = name
        self.step = step
        # as in the webui, whoever builds an embedding sets these (its loader does): the tokenizer reserves
        # int(vectors) placeholder ids, so an embedding left at 0 takes no room in the prompt
        self.shape: int | None = None
        self.vectors = 0

    def checksum(self) -> str:
        """A short, stable fingerprint of the vectors (four hex digits)."""
        if self.cached_checksum is None:
            tensors = self.vec.values() if isinstance(self.vec, dict) else [self.vec]
            digest = hashlib.sha256()
            for tensor in tensors:
                digest.update(tensor.detach().to(torch.float32).cpu().numpy().tobytes())
            self.cached_checksum = digest.hexdigest()[:4]
        return str(self.cached_checksum)

    def set_hash(self, v: str) -> None:
        self.hash = v
        self.shorthash = v[:12]


class EmbeddingDatabase:
    """Registered embeddings by prompt word, indexed by the word's first token id for the tokenizer's lookups."""

    expected_shape: int = -1  # not checked: the fake loads no files whose width could mismatch

    def __init__(self) -> None:
        self.ids_lookup: dict[int, list[tuple[list[int], Embedding]]] = {}
        self.word_embeddings: dict[str, Embedding] = {}
        self.skipped_embeddings: dict[str, Embedding] = {}
        self.embedding_dirs: dict[str, str] = {}

    def add_embedding_dir(self, path: str) -> None:
        self.embedding_dirs[path] = path

    def clear_embedding_dirs(self) -> None:
        self.embedding_dirs = {}

    def register_embedding(self, embedding: Embedding, model: Any) -> Embedding:
        """Register under the embedding's own name."""
        return self.register_embedding_by_name(embedding, model, name=embedding.name)

    def register_embedding_by_name(self, embedding: Embedding | None, model: Any, name: str) -> Embedding | None:
        """Register `embedding` as prompt word `name`, replacing an earlier one; `None` unregisters the word."""
        (ids,) = model.cond_stage_model.tokenize([name])
        candidates = [entry for entry in self.ids_lookup.get(ids[0], []) if entry[1].name != name]
        self.word_embeddings.pop(name, None)
        if embedding:
            candidates.append((ids, embedding))
            self.word_embeddings.update({name: embedding})
        if candidates:  # the longest word wins when several start with the same token
            self.ids_lookup[ids[0]] = sorted(candidates, key=lambda entry: -len(entry[0]))
        else:
            self.ids_lookup.pop(ids[0], None)
        return embedding

    def get_expected_shape(self) -> int:
        from modules import shared

        return shared.sd_model.cond_stage_model.encode_embedding_init_text(",", 1).shape[1]

    def load_textual_inversion_embeddings(self, force_reload: bool = False, sync_with_sd_model: bool = True) -> None:
        """No embedding files in the fake: what was registered stays."""

    def find_embedding_at_position(self, tokens: list[int], offset: int) -> tuple[Embedding | None, int | None]:
        """The registered embedding whose word's ids start at `tokens[offset]`, and how many ids that word has."""
        for ids, embedding in self.ids_lookup.get(tokens[offset], ()):
            span = len(ids)
            if tokens[offset : offset + span] == ids:
                return embedding, span
        return None, None
