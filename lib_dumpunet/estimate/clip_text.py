"""A prompt encoder over Hugging Face CLIP text models that encodes prompts the way the webui does.

For hosts without the webui (the diffusers front-end, tests): the prompt is cut into chunks by the token inspector's
`chunk_prompt` (`lib_dumpunet.tokens`: the webui's emphasis syntax, 75 tokens a chunk, a new chunk at `BREAK`, where an
embedding would not fit, and after the last comma when a chunk fills up — the webui's comma back-tracking, 20 tokens
by default), wrapped as BOS + 75 + EOS and padded with the tower's pad id after the first EOS. Embedding names in the
prompt become placeholder tokens whose token-embedding rows are replaced by the embedding's vectors (a forward hook on
the token-embedding layer, so gradients reach the vectors).
Each chunk runs through the transformer; the chosen hidden layer (optionally through the final layer norm) is
weighted by the "Original" emphasis — every token row times its weight, then the whole chunk rescaled so its mean
is the unweighted mean — and chunks are joined along the token axis. Several towers (SDXL's CLIP-L and OpenCLIP-G)
are joined along the channel axis, and `vector_fn` may build SDXL's pooled vector from the last tower.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from lib_dumpunet.errors import DumpUnetError
from lib_dumpunet.estimate.model import SINGLE_PART, Cond, Vectors, vector_count
from lib_dumpunet.tokens import CHUNK_TOKENS, Chunk, EmbeddingIndex, chunk_prompt

__all__ = ["CHUNK_TOKENS", "ClipPromptEncoder", "ClipTower"]

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
        comma_backtrack: int = 20,
    ) -> None:
        self.towers = towers
        self.emphasis = emphasis
        self.vector_fn = vector_fn
        self.unusable = dict(unusable or {})  # embedding name -> why it cannot be used with this model
        self.comma_backtrack = comma_backtrack  # the webui setting "Prompt word wrap length limit" (0: off)

    @property
    def parts(self) -> dict[str, int]:
        return {tower.part: tower.width for tower in self.towers}

    # --- tokens ----------------------------------------------------------------------------------------------------

    def chunks(self, prompt: str, names: Mapping[str, int] | None = None, tower: int = 0) -> list[Chunk]:
        """The 77-id chunks `prompt` becomes in tower `tower` — the token inspector's `chunk_prompt`, so the tables
        shown to the user and the tensors encoded here come from one set of rules. `names`: embedding name → number
        of vectors; an embedding this model cannot use is refused by name."""
        t = self.towers[tower]
        keywords = dict.fromkeys(self.unusable, 1) | dict(names or {})

        def tokenize(texts: list[str]) -> list[list[int]]:
            return [t.ids(text) for text in texts]

        comma = t.tokenizer.get_vocab().get(",</w>") if hasattr(t.tokenizer, "get_vocab") else None
        found = chunk_prompt(
            prompt,
            tokenize,
            start=t.tokenizer.bos_token_id,
            end=t.tokenizer.eos_token_id,
            comma=comma,
            embeddings=EmbeddingIndex(keywords, tokenize) if keywords else None,
            emphasis=self.emphasis != "None",
            comma_backtrack=self.comma_backtrack,
        )
        for chunk in found:
            for fix in chunk.fixes:
                name = fix.embedding.name
                if name in self.unusable and name not in (names or {}):
                    raise DumpUnetError(f"Prompt: the embedding '{name}' cannot be used here: {self.unusable[name]}")
        return found

    def _chunk_ids(self, tower: ClipTower, chunk: Chunk) -> tuple[torch.Tensor, torch.Tensor]:
        ids = list(chunk.tokens)
        if tower.pad_id is not None:
            first_end = ids.index(tower.tokenizer.eos_token_id, 1)
            ids = ids[: first_end + 1] + [tower.pad_id] * (len(ids) - first_end - 1)
        device = tower.token_embedding.weight.device
        return torch.tensor([ids], device=device), torch.tensor(chunk.multipliers, device=device)

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
        for chunk in self.chunks(prompt, names, self.towers.index(tower)):
            ids, weights = self._chunk_ids(tower, chunk)
            fixes = [(fix.offset, embeddings[fix.embedding.name][tower.part]) for fix in chunk.fixes]
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
