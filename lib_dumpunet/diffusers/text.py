"""Prompts to cross-attention contexts, the way the webui builds them, on a diffusers model's CLIP encoders.

A prompt is cut at `AND` into weighted sub-prompts (`a cat AND a dog :0.5`); each becomes one cond row. Encoding
itself is the library's webui-style encoder (`lib_dumpunet.estimate.clip_text`, shared with Embedding Estimate):
emphasis `(word:1.2)` with the webui's mean restoration, chunks of 75 tokens framed as [BOS] tokens [EOS] padding
(a new chunk also at `BREAK`, and after the last comma when a chunk fills up), chunks joined along the token axis so
a prompt of any length is used whole. SD1/SD2 take the encoder's last hidden state; SDXL joins its two encoders'
penultimate hidden states along the width and takes the pooled vector of the second encoder's first chunk. The token
table (and the maps' labels) reads the same chunks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch

from lib_dumpunet.estimate.clip_text import ClipPromptEncoder, ClipTower
from lib_dumpunet.estimate.model import SDXL_PARTS, SINGLE_PART
from lib_dumpunet.tokens import BpeVocabulary, TokenTable

__all__ = ["Encoded", "TextEncoder", "split_and"]

_AND = re.compile(r"\bAND\b")
_WEIGHT = re.compile(r"\s*:\s*([-+]?(?:\d+(?:\.\d*)?|\.\d+))\s*$")


def split_and(prompt: str) -> list[tuple[str, float]]:
    """Sub-prompts and their weights, in row order: 'a cat AND a dog :0.5' → [('a cat', 1.0), (' a dog', 0.5)]."""
    out = []
    for part in _AND.split(prompt):
        m = _WEIGHT.search(part)
        text, weight = (part[: m.start()], float(m.group(1))) if m else (part.rstrip(), 1.0)
        out.append((text, weight))
    return out


@dataclass(frozen=True)
class Encoded:
    context: torch.Tensor  # (tokens, width) in fp32, tokens a multiple of 77
    pooled: torch.Tensor | None  # SDXL's pooled text embedding, else None


class TextEncoder:
    """One or two (SDXL) CLIP tokenizer/encoder pairs used together, with a cache of what was encoded."""

    def __init__(self, tokenizers: list[Any], encoders: list[Any]) -> None:
        self.tokenizers, self.encoders = tokenizers, encoders
        sdxl = len(encoders) == 2
        towers = []
        for n, (tok, encoder) in enumerate(zip(tokenizers, encoders, strict=True)):
            pad = tok.pad_token_id if tok.pad_token_id not in (None, tok.eos_token_id) else None
            part = SDXL_PARTS[n] if sdxl else SINGLE_PART
            towers.append(ClipTower(encoder, tok, part=part, hidden_layer=-2 if sdxl else None, pad_id=pad))
        self.encoder = ClipPromptEncoder(towers, vector_fn=(lambda pooled: pooled) if sdxl else None)
        self._cache: dict[str, Encoded] = {}

    @torch.no_grad()
    def encode(self, text: str) -> Encoded:
        if text not in self._cache:
            cond = self.encoder.encode(text)
            if isinstance(cond, dict):
                encoded = Encoded(cond["crossattn"][0].float(), cond["vector"][0].float())
            else:
                encoded = Encoded(cond[0].float(), None)
            self._cache[text] = encoded
        return self._cache[text]

    def table(self, text: str) -> TokenTable:
        """The token inspector's table of `text` (one sub-prompt, no AND): the very chunks `encode` uses."""
        return TokenTable.from_chunks(self.encoder.chunks(text), BpeVocabulary.of(self.tokenizers[0]))

    def labels(self, text: str) -> list[str]:
        """One label per context position: BOS, the tokens, EOS, then 'pad', per 77-position chunk."""
        return self.table(text).labels()
