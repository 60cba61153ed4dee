"""Stand-in for webui v1.10.1 `modules/textual_inversion/textual_inversion.py`: `Embedding` and `EmbeddingDatabase`.

An embedding answers to a prompt word (a file's stem); the text-encoder wrappers look the word's token ids up with
`find_embedding_at_position` and put its vectors in their place. The database reads `.pt`/`.bin` (webui
`string_to_param` files, tensors and plain types only) and `.safetensors` (one tensor, or SDXL's `clip_l` + `clip_g`)
from its folders, sub-folders included: on `force_reload`, or when a folder's own mtime moved on. Embeddings whose
width is not the model's go to `skipped_embeddings`. Left out: embeddings inside images, creating and training.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

import torch
from modules import devices, errors


class Embedding:
    """A textual-inversion embedding: `vec` is (vectors, width), or a dict of them per encoder for SDXL; `vectors`
    (the count) and `shape` (the width) are set by whoever builds it, as the webui's loader does."""

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
        # the tokenizer reserves int(vectors) placeholder ids: an embedding left at 0 takes no room in a prompt
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


def _fp32(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().to(devices.device, dtype=torch.float32)


def create_embedding_from_data(data, name, filename="unknown embedding file", filepath=None):
    """An `Embedding` from a file's contents: a webui file (`string_to_param` with one term), an SDXL pair
    (`clip_l`, `clip_g`), or a single tensor (a diffusers concept)."""
    if not isinstance(data, dict):
        raise ValueError(f"{filename} is not a textual-inversion embedding")
    if "string_to_param" in data:
        terms = data["string_to_param"]
        terms = getattr(terms, "_parameters", terms)
        if len(terms) != 1:
            raise ValueError(f"{filename} holds {len(terms)} terms; an embedding file holds one")
        vec = _fp32(next(iter(terms.values())))
        width, count = vec.shape[-1], vec.shape[0]
    elif {"clip_l", "clip_g"} <= data.keys():
        vec = {part: _fp32(tensor) for part, tensor in data.items()}
        width, count = vec["clip_l"].shape[-1] + vec["clip_g"].shape[-1], vec["clip_g"].shape[0]
    elif len(data) == 1 and isinstance(next(iter(data.values())), torch.Tensor):
        vec = _fp32(next(iter(data.values())))
        vec = vec.unsqueeze(0) if vec.ndim == 1 else vec
        width, count = vec.shape[-1], vec.shape[0]
    else:
        raise ValueError(f"{filename} is neither a textual-inversion embedding nor a diffusers concept")

    embedding = Embedding(vec, name, step=data.get("step"))
    embedding.sd_checkpoint = data.get("sd_checkpoint")
    embedding.sd_checkpoint_name = data.get("sd_checkpoint_name")
    embedding.vectors, embedding.shape = count, width
    if filepath:
        embedding.filename = filepath
        with open(filepath, "rb") as file:
            embedding.set_hash(hashlib.sha256(file.read()).hexdigest())
    return embedding


def _read(path: str) -> Any:
    """A file's contents, or None for a file that is not an embedding format the fake reads."""
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path, device="cpu")
    if suffix in (".pt", ".bin"):
        return torch.load(path, map_location="cpu", weights_only=True)  # the webui's unpickler is as strict
    return None


@dataclass
class DirWithTextualInversionEmbeddings:
    """A folder of embeddings and its mtime when it was last read."""

    path: str
    mtime: float | None = None

    def has_changed(self) -> bool:
        return os.path.isdir(self.path) and (self.mtime is None or os.path.getmtime(self.path) > self.mtime)

    def update(self) -> None:
        if os.path.isdir(self.path):
            self.mtime = os.path.getmtime(self.path)


class EmbeddingDatabase:
    """Embeddings by prompt word, indexed by the word's first token id for the tokenizer's lookups."""

    def __init__(self) -> None:
        self.ids_lookup: dict[int, list[tuple[list[int], Embedding]]] = {}
        self.word_embeddings: dict[str, Embedding] = {}
        self.skipped_embeddings: dict[str, Embedding] = {}
        self.expected_shape = -1
        self.embedding_dirs: dict[str, DirWithTextualInversionEmbeddings] = {}

    def add_embedding_dir(self, path: str) -> None:
        self.embedding_dirs[path] = DirWithTextualInversionEmbeddings(path)

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

    def load_from_file(self, path: str, filename: str) -> None:
        data = _read(path)
        if data is None:
            return
        name = os.path.splitext(filename)[0]
        embedding = create_embedding_from_data(data, name, filename=filename, filepath=path)
        if self.expected_shape in (-1, embedding.shape):
            from modules import shared

            self.register_embedding(embedding, shared.sd_model)
        else:
            self.skipped_embeddings[name] = embedding

    def load_from_dir(self, embdir: DirWithTextualInversionEmbeddings) -> None:
        for root, _dirs, files in os.walk(embdir.path, followlinks=True):
            for filename in sorted(files):
                path = os.path.join(root, filename)
                try:
                    if os.path.getsize(path) > 0:
                        self.load_from_file(path, filename)
                except Exception:  # the webui reports a bad file and reads the others
                    errors.report(f"Error loading embedding {filename}", exc_info=True)

    def load_textual_inversion_embeddings(self, force_reload: bool = False, sync_with_sd_model: bool = True) -> None:
        """Read every folder again when forced or when one changed; this forgets embeddings registered by hand."""
        if not force_reload and not any(embdir.has_changed() for embdir in self.embedding_dirs.values()):
            return
        for table in (self.ids_lookup, self.word_embeddings, self.skipped_embeddings):
            table.clear()
        self.expected_shape = self.get_expected_shape()
        for folder in self.embedding_dirs.values():
            self.load_from_dir(folder)
            folder.update()
        by_name = sorted(self.word_embeddings.items(), key=lambda item: item[0].lower())
        self.word_embeddings.clear()
        self.word_embeddings.update(by_name)

    def find_embedding_at_position(self, tokens: list[int], offset: int) -> tuple[Embedding | None, int | None]:
        """The registered embedding whose word's ids start at `tokens[offset]`, and how many ids that word has."""
        for ids, embedding in self.ids_lookup.get(tokens[offset], ()):
            span = len(ids)
            if tokens[offset : offset + span] == ids:
                return embedding, span
        return None, None
