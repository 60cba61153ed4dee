"""A prompt encoder over Hugging Face CLIP text models that encodes prompts the way the webui does.

For hosts without the webui (the diffusers front-end, tests): the prompt is read with the webui's emphasis syntax,
tokenised piece by piece, cut into chunks of 75 tokens (a chunk also ends at `BREAK` or where an embedding would not
fit; unlike the webui, no back-tracking to the last comma), wrapped as BOS + 75 + EOS and padded with the tower's pad
id after the first EOS. Embedding names in the prompt become placeholder tokens whose token-embedding rows are
replaced by the embedding's vectors (a forward hook on the token-embedding layer, so gradients reach the vectors).
Each chunk runs through the transformer; the chosen hidden layer (optionally through the final layer norm) is
weighted by the "Original" emphasis — every token row times its weight, then the whole chunk rescaled so its mean
is the unweighted mean — and chunks are joined along the token axis. Several towers (SDXL's CLIP-L and OpenCLIP-G)
are joined along the channel axis, and `vector_fn` may build SDXL's pooled vector from the last tower.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from lib_dumpunet.errors import DumpUnetError
from lib_dumpunet.estimate.emphasis import Piece, parse_emphasis
from lib_dumpunet.estimate.model import SINGLE_PART, Cond, Vectors, vector_count

__all__ = ["CHUNK_TOKENS", "ClipPromptEncoder", "ClipTower"]

CHUNK_TOKENS = 75
Emphasis = Literal["Original", "No norm", "Ignore", "None"]


@dataclass
class ClipTower:
    """One text encoder: a HF `CLIPTextModel` (or anything with `.text_model` shaped like it) and its tokenizer.

    `hidden_layer` None takes the model's last hidden state (after its final layer norm); an index takes
    `hidden_states[hidden_layer]`, passed through the final layer norm when `final_norm` (SD2, clip skip)."""

    model: nn.Module
    tokenizer: Any
    part: str = SINGLE_PART
    hidden_layer: int | None = None
    final_norm: bool = False
    pad_id: int | None = None  # None: pad with EOS (CLIP-L); OpenCLIP pads with 0

    @property
    def token_embedding(self) -> nn.Embedding:
        return self.model.text_model.embeddings.token_embedding

    @property
    def width(self) -> int:
        return int(self.token_embedding.weight.shape[1])

    def ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])


@dataclass
class _Chunk:
    ids: list[int] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    fixes: list[tuple[int, str]] = field(default_factory=list)  # (offset after BOS, embedding name)


@contextlib.contextmanager
def _spliced(tower: ClipTower, fixes: list[tuple[int, torch.Tensor]]) -> Iterator[None]:
    """While active, the token-embedding layer's output carries `fixes` (offset, rows) after BOS."""

    def splice(_module: nn.Module, _args: Any, out: torch.Tensor) -> torch.Tensor:
        rows = list(out[0])
        for offset, vec in fixes:
            rows[offset + 1 : offset + 1 + vec.shape[0]] = list(vec.to(out.dtype))
        return torch.stack(rows)[None]

    handle = tower.token_embedding.register_forward_hook(splice) if fixes else None
    try:
        yield
    finally:
        if handle is not None:
            handle.remove()


class ClipPromptEncoder:
    """`PromptEncoder` over one or more `ClipTower`s."""

    def __init__(
        self,
        towers: list[ClipTower],
        *,
        emphasis: Emphasis = "Original",
        vector_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
        unusable: Mapping[str, str] | None = None,
    ) -> None:
        self.towers = towers
        self.emphasis = emphasis
        self.vector_fn = vector_fn
        self.unusable = dict(unusable or {})  # embedding name -> why it cannot be used with this model

    @property
    def parts(self) -> dict[str, int]:
        return {tower.part: tower.width for tower in self.towers}

    # --- tokens ----------------------------------------------------------------------------------------------------

    def _chunks(self, tower: ClipTower, prompt: str, names: Mapping[str, int]) -> list[_Chunk]:
        pieces = parse_emphasis(prompt) if self.emphasis != "None" else [Piece(prompt, 1.0)]
        name_ids = sorted(((tower.ids(name), name) for name in names), key=lambda item: -len(item[0]))
        bad_ids = [(tower.ids(name), name) for name in self.unusable]
        chunks: list[_Chunk] = []
        current = _Chunk()

        def close() -> None:
            nonlocal current
            chunks.append(current)
            current = _Chunk()

        for piece in pieces:
            if piece.is_break:
                close()
                continue
            ids = tower.ids(piece.text)
            i = 0
            while i < len(ids):
                for bad, name in bad_ids:
                    if bad and ids[i : i + len(bad)] == bad:
                        raise DumpUnetError(
                            f"Prompt: the embedding '{name}' cannot be used here: {self.unusable[name]}"
                        )
                found = next(((e, n) for e, n in name_ids if e and ids[i : i + len(e)] == e), None)
                if found is not None:
                    count = names[found[1]]
                    if len(current.ids) + count > CHUNK_TOKENS:
                        close()
                    current.fixes.append((len(current.ids), found[1]))
                    current.ids += [0] * count
                    current.weights += [piece.weight] * count
                    i += len(found[0])
                else:
                    current.ids.append(ids[i])
                    current.weights.append(piece.weight)
                    i += 1
                if len(current.ids) >= CHUNK_TOKENS:
                    close()
        if current.ids or not chunks:
            close()
        return chunks

    def _chunk_ids(self, tower: ClipTower, chunk: _Chunk) -> tuple[torch.Tensor, torch.Tensor]:
        tokenizer = tower.tokenizer
        bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
        fill = CHUNK_TOKENS - len(chunk.ids)
        ids = [bos, *chunk.ids, *([eos] * fill), eos]
        if tower.pad_id is not None:
            first_eos = ids.index(eos, 1)
            ids = ids[: first_eos + 1] + [tower.pad_id] * (len(ids) - first_eos - 1)
        weights = [1.0, *chunk.weights, *([1.0] * (fill + 1))]
        device = tower.token_embedding.weight.device
        return torch.tensor([ids], device=device), torch.tensor(weights, device=device)

    # --- encoding --------------------------------------------------------------------------------------------------

    def _run(self, tower: ClipTower, ids: torch.Tensor, fixes: list[tuple[int, torch.Tensor]]):
        with _spliced(tower, fixes):
            out = tower.model(input_ids=ids, output_hidden_states=tower.hidden_layer is not None)
        if tower.hidden_layer is None:
            z = out.last_hidden_state
        else:
            z = out.hidden_states[tower.hidden_layer]
            if tower.final_norm:
                z = tower.model.text_model.final_layer_norm(z)
        pooled = getattr(out, "text_embeds", None)  # CLIPTextModelWithProjection (SDXL's second encoder)
        return z, out.pooler_output if pooled is None else pooled

    def _weighted(self, z: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        if self.emphasis in ("Ignore", "None"):
            return z
        weighted = z * weights.to(z.dtype)[None, :, None]
        if self.emphasis == "No norm":
            return weighted
        return weighted * (z.mean() / weighted.mean())

    def _encode_tower(self, tower: ClipTower, prompt: str, embeddings: Mapping[str, Vectors]):
        names = {name: vector_count(vectors) for name, vectors in embeddings.items()}
        parts, pooled = [], None
        for chunk in self._chunks(tower, prompt, names):
            ids, weights = self._chunk_ids(tower, chunk)
            fixes = [(offset, embeddings[name][tower.part]) for offset, name in chunk.fixes]
            z, chunk_pooled = self._run(tower, ids, fixes)
            pooled = chunk_pooled if pooled is None else pooled
            parts.append(self._weighted(z, weights))
        return torch.cat(parts, dim=1), pooled

    def encode(self, prompt: str, embeddings: Mapping[str, Vectors] | None = None) -> Cond:
        embeddings = embeddings or {}
        for name, vectors in embeddings.items():
            missing = set(self.parts) - set(vectors)
            if missing:
                raise DumpUnetError(f"Embedding '{name}' has no vectors for {', '.join(sorted(missing))}.")
        encoded = [self._encode_tower(tower, prompt, embeddings) for tower in self.towers]
        z = torch.cat([e[0] for e in encoded], dim=-1)
        if self.vector_fn is None:
            return z
        return {"crossattn": z, "vector": self.vector_fn(encoded[-1][1])}

    def token_rows(self, text: str) -> Vectors:
        rows = {}
        for tower in self.towers:
            table = tower.token_embedding.weight
            ids = torch.tensor(tower.ids(text), dtype=torch.long, device=table.device)
            rows[tower.part] = table[ids].detach().float().clone()
        return rows

    def random_rows(self, count: int, generator: torch.Generator) -> Vectors:
        rows = {}
        for tower in self.towers:
            table = tower.token_embedding.weight.detach().float().cpu()
            noise = torch.randn(count, table.shape[1], generator=generator)
            rows[tower.part] = (table.mean(0) + noise * table.std(0)).to(tower.token_embedding.weight.device)
        return rows
