"""Stand-in for webui v1.10.1 `modules/sd_hijack_clip.py`: the wrappers the webui puts around CLIP text encoders.

Contract kept: a prompt line is split by `prompt_parser.parse_prompt_attention` into weighted pieces, tokenised
without BOS/EOS, and poured into bodies of `chunk_length` (75) ids; `BREAK` starts a new body, a full body moves the
words after a comma among its last `opts.comma_padding_backtrack` ids into the next one, and a textual-inversion
embedding takes as many placeholder ids (0) as it has vectors plus a `PromptChunkFix`. Each body becomes a 77-id
`PromptChunk`: BOS, body, EOS, EOS-padding. `forward` encodes chunk column by chunk column (setting `hijack.fixes`
for `EmbeddingsWithFixes`) and joins the results along the token axis; emphasis comes from `sd_emphasis`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from modules import devices, prompt_parser, sd_emphasis
from modules.shared import opts


class PromptChunkFix(NamedTuple):
    """Where (offset in the body, i.e. without BOS) an embedding's vectors replace placeholder ids."""

    offset: int
    embedding: Any


@dataclass
class PromptChunk:
    """One 77-id chunk of a prompt: ids, one emphasis multiplier per id, and textual-inversion fixes."""

    tokens: list[int] = field(default_factory=list)
    multipliers: list[float] = field(default_factory=list)
    fixes: list[PromptChunkFix] = field(default_factory=list)


class _Chunker:
    """Pours weighted ids into 75-id bodies and seals each into a 77-id `PromptChunk`."""

    def __init__(self, model: TextConditionalModel) -> None:
        self.model = model
        self.sealed: list[PromptChunk] = []
        self.body = PromptChunk()
        self.comma_at = -1  # index of the last comma in the current body, -1 when none
        self.token_count = 0

    @property
    def full(self) -> bool:
        return len(self.body.tokens) >= self.model.chunk_length

    def seal(self, final: bool = False) -> None:
        size = self.model.chunk_length
        body = self.body
        self.token_count += len(body.tokens) if final else size
        padding = size - len(body.tokens) + 1  # the EOS itself, then EOS-padding up to 77
        self.sealed.append(
            PromptChunk(
                tokens=[self.model.id_start, *body.tokens] + [self.model.id_end] * padding,
                multipliers=[1.0, *body.multipliers] + [1.0] * padding,
                fixes=body.fixes,
            )
        )
        self.body = PromptChunk()
        self.comma_at = -1

    def make_room(self, before_comma: bool) -> None:
        """Seal a full body; unless a comma comes next, carry the words after a recent comma over."""
        if not self.full:
            return
        window = opts.comma_padding_backtrack
        near = self.comma_at >= 0 and len(self.body.tokens) - self.comma_at <= window
        if before_comma or not window or not near:
            self.seal()
            return
        cut = self.comma_at + 1
        moved_ids, moved_weights = self.body.tokens[cut:], self.body.multipliers[cut:]
        del self.body.tokens[cut:], self.body.multipliers[cut:]
        self.seal()  # as in the webui, fixes stay with the chunk they were found in
        self.body.tokens, self.body.multipliers = moved_ids, moved_weights

    def add_ids(self, ids: list[int], weight: float) -> None:
        model, db = self.model, self.model.hijack.embedding_db
        at = 0
        while at < len(ids):
            is_comma = ids[at] == model.comma_token
            if is_comma:
                self.comma_at = len(self.body.tokens)
            self.make_room(is_comma)
            embedding, span = db.find_embedding_at_position(ids, at)
            if embedding is None:
                self.body.tokens.append(ids[at])
                self.body.multipliers.append(weight)
                at += 1
                continue
            width = int(embedding.vectors)
            if len(self.body.tokens) + width > model.chunk_length:
                self.seal()
            self.body.fixes.append(PromptChunkFix(len(self.body.tokens), embedding))
            self.body.tokens.extend([0] * width)
            self.body.multipliers.extend([weight] * width)
            at += span

    def finish(self) -> tuple[list[PromptChunk], int]:
        if self.body.tokens or not self.sealed:
            self.seal(final=True)
        return self.sealed, self.token_count


def _infotext_name(name: str) -> str:
    return name.replace(":", "").replace(",", "")


class TextConditionalModel(torch.nn.Module):
    """Base of the webui's text-encoder wrappers: prompt lines → chunks → (B, 77·n, C)."""

    def __init__(self) -> None:
        super().__init__()
        from modules import sd_hijack

        self.hijack = sd_hijack.model_hijack
        self.chunk_length = 75
        self.is_trainable = False
        self.input_key = "txt"
        self.return_pooled = False
        self.comma_token: int | None = None
        self.id_start: int | None = None
        self.id_end: int | None = None
        self.id_pad: int | None = None

    # what subclasses provide
    def tokenize(self, texts: list[str]) -> list[list[int]]:
        raise NotImplementedError

    def encode_with_transformers(self, tokens: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def encode_embedding_init_text(self, init_text: str, nvpt: int) -> torch.Tensor:
        raise NotImplementedError

    # chunking
    def empty_chunk(self) -> PromptChunk:
        size = self.chunk_length + 2
        return PromptChunk(tokens=[self.id_start] + [self.id_end] * (size - 1), multipliers=[1.0] * size)

    def get_target_prompt_token_count(self, token_count: int) -> int:
        return self.chunk_length * math.ceil(max(token_count, 1) / self.chunk_length)

    def tokenize_line(self, line: str) -> tuple[list[PromptChunk], int]:
        pieces = [[line, 1.0]] if opts.emphasis == "None" else prompt_parser.parse_prompt_attention(line)
        chunker = _Chunker(self)
        for ids, (text, weight) in zip(self.tokenize([text for text, _ in pieces]), pieces, strict=True):
            if weight == -1 and text == "BREAK":
                chunker.seal()
            else:
                chunker.add_ids(ids, weight)
        return chunker.finish()

    def process_texts(self, texts: list[str]) -> tuple[list[list[PromptChunk]], int]:
        known: dict[str, tuple[list[PromptChunk], int]] = {}
        for text in texts:
            if text not in known:
                known[text] = self.tokenize_line(text)
        longest = max((count for _, count in known.values()), default=0)
        return [known[text][0] for text in texts], longest

    # encoding
    def forward(self, texts: list[str]) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        per_text, _ = self.process_texts(texts)
        columns = max(len(chunks) for chunks in per_text)
        used: dict[str, Any] = {}
        encoded = []
        for index in range(columns):
            column = [chunks[index] if index < len(chunks) else self.empty_chunk() for chunks in per_text]
            self.hijack.fixes = [chunk.fixes for chunk in column]
            used.update((fix.embedding.name, fix.embedding) for chunk in column for fix in chunk.fixes)
            encoded.append(self.process_tokens([c.tokens for c in column], [c.multipliers for c in column]))
        self._note_infotext(texts, used)
        joined = torch.hstack(encoded)
        return (joined, encoded[0].pooled) if self.return_pooled else joined

    def _note_infotext(self, texts: list[str], used: dict[str, Any]) -> None:
        params = self.hijack.extra_generation_params
        hashes = [f"{_infotext_name(name)}: {emb.shorthash}" for name, emb in used.items() if emb.shorthash]
        if hashes and opts.textual_inversion_add_hashes_to_infotext:
            params["TI hashes"] = ", ".join(hashes + ([params["TI hashes"]] if params.get("TI hashes") else []))
        if opts.emphasis != "Original" and any("(" in t or "[" in t for t in texts):
            params["Emphasis"] = opts.emphasis

    def process_tokens(self, remade_batch_tokens: list[list[int]], batch_multipliers: list[list[float]]) -> Any:
        ids = torch.tensor(remade_batch_tokens, device=devices.device)
        if self.id_pad != self.id_end:  # OpenCLIP pads with its own id after the first EOS
            seen_end = (ids == self.id_end).long().cumsum(dim=1)
            after_first_end = torch.nn.functional.pad(seen_end[:, :-1], (1, 0)) > 0
            ids = ids.masked_fill(after_first_end, self.id_pad)

        z = self.encode_with_transformers(ids)
        pooled = getattr(z, "pooled", None)

        emphasis = sd_emphasis.get_current_option(opts.emphasis)()
        emphasis.tokens = remade_batch_tokens
        emphasis.multipliers = torch.tensor(batch_multipliers, device=z.device, dtype=z.dtype)
        emphasis.z = z
        emphasis.after_transformers()
        z = emphasis.z
        if pooled is not None:
            z.pooled = pooled
        return z


class FrozenCLIPEmbedderWithCustomWordsBase(TextConditionalModel):
    """A wrapper of an ldm/sgm CLIP-family embedder (`wrapped`) that takes unlimited, weighted prompts."""

    def __init__(self, wrapped: torch.nn.Module, hijack: Any) -> None:
        super().__init__()
        self.hijack = hijack
        self.wrapped = wrapped
        self.is_trainable = getattr(wrapped, "is_trainable", False)
        self.input_key = getattr(wrapped, "input_key", "txt")
        self.return_pooled = getattr(wrapped, "return_pooled", False)
        self.legacy_ucg_val = None  # sgm's GeneralConditioner reads it

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        return self.wrapped.tokenizer(texts, truncation=False, add_special_tokens=False)["input_ids"]

    def _token_vectors(self, ids: list[int]) -> torch.Tensor:
        """The token-embedding layer's vectors for `ids` (before the transformer, without textual inversion)."""
        layer = self.wrapped.transformer.text_model.embeddings.token_embedding
        layer = getattr(layer, "wrapped", layer)
        return layer(torch.tensor(ids, device=layer.weight.device, dtype=torch.long))


class FrozenCLIPEmbedderWithCustomWords(FrozenCLIPEmbedderWithCustomWordsBase):
    """SD1's encoder (HF CLIP): clip skip takes an earlier hidden state through the final layer norm."""

    def __init__(self, wrapped: torch.nn.Module, hijack: Any) -> None:
        super().__init__(wrapped, hijack)
        self.tokenizer = wrapped.tokenizer
        self.comma_token = self.tokenizer.get_vocab().get(",</w>")
        self.id_start = self.tokenizer.bos_token_id
        self.id_end = self.id_pad = self.tokenizer.eos_token_id

    def encode_with_transformers(self, tokens: torch.Tensor) -> torch.Tensor:
        skip = opts.CLIP_stop_at_last_layers
        out = self.wrapped.transformer(input_ids=tokens, output_hidden_states=skip > 1)
        if skip <= 1:
            return out.last_hidden_state
        return self.wrapped.transformer.text_model.final_layer_norm(out.hidden_states[-skip])

    def encode_embedding_init_text(self, init_text: str, nvpt: int) -> torch.Tensor:
        return self._token_vectors(self.tokenize([init_text])[0][:nvpt])


class FrozenCLIPEmbedderForSDXLWithCustomWords(FrozenCLIPEmbedderWithCustomWords):
    """SDXL's CLIP-L: a hidden layer (`wrapped.layer_idx`) without the final norm, or clip skip when
    `opts.sdxl_clip_l_skip` is on."""

    def encode_with_transformers(self, tokens: torch.Tensor) -> torch.Tensor:
        states = self.wrapped.transformer(input_ids=tokens, output_hidden_states=True)
        if opts.sdxl_clip_l_skip is True:
            return states.hidden_states[-opts.CLIP_stop_at_last_layers]
        if self.wrapped.layer == "last":
            return states.last_hidden_state
        return states.hidden_states[self.wrapped.layer_idx]
