"""Prompts to cross-attention contexts, the way the webui builds them, on a diffusers model's CLIP encoders.

A prompt is cut at `AND` into weighted sub-prompts (`a cat AND a dog :0.5`), each becomes one cond row. A
sub-prompt's tokens are laid out in chunks of 75 (a new chunk also starts at `BREAK`), each chunk framed as
[BOS] tokens [EOS] padding — 77 positions — and encoded on its own; the chunks' encodings are joined along the
token axis, so a prompt of any length is used whole. SD1/SD2 use the encoder's last hidden state; SDXL joins its two
encoders' penultimate hidden states along the width and takes the pooled vector of the second encoder's first
chunk. Prompt emphasis `(word:1.2)` is not interpreted: the brackets are ordinary text here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["CHUNK", "Encoded", "TextEncoder", "split_and"]

CHUNK = 75  # prompt tokens per 77-position chunk
_AND = re.compile(r"\bAND\b")
_BREAK = re.compile(r"\bBREAK\b")
_WEIGHT = re.compile(r"\s*:\s*([-+]?(?:\d+(?:\.\d*)?|\.\d+))\s*$")


def split_and(prompt: str) -> list[tuple[str, float]]:
    """Sub-prompts and their weights, in row order: 'a cat AND a dog :0.5' → [('a cat ', 1.0), (' a dog', 0.5)]."""
    out = []
    for part in _AND.split(prompt):
        m = _WEIGHT.search(part)
        text, weight = (part[: m.start()], float(m.group(1))) if m else (part.rstrip(), 1.0)
        out.append((text, weight))
    return out


@dataclass(frozen=True)
class Encoded:
    context: torch.Tensor  # (tokens, width), tokens a multiple of 77
    pooled: torch.Tensor | None  # SDXL's pooled text embedding, else None


class TextEncoder:
    """One or two (SDXL) CLIP tokenizer/encoder pairs used together."""

    def __init__(self, tokenizers: list[Any], encoders: list[Any], *, penultimate: bool) -> None:
        self.tokenizers, self.encoders, self.penultimate = tokenizers, encoders, penultimate
        self._cache: dict[str, Encoded] = {}

    @property
    def device(self) -> torch.device:
        return next(self.encoders[0].parameters()).device

    def chunks(self, text: str, tokenizer: Any | None = None) -> list[list[int]]:
        """Token ids per 77-position chunk."""
        tok = tokenizer or self.tokenizers[0]
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        pieces: list[list[int]] = []
        for part in _BREAK.split(text):
            ids = tok(part, add_special_tokens=False, truncation=False, verbose=False).input_ids
            pieces += [ids[i : i + CHUNK] for i in range(0, len(ids), CHUNK)] or [[]]
        if len(pieces) > 1:  # BREAK at either end makes no empty chunk of its own
            pieces = [p for i, p in enumerate(pieces) if p or 0 < i < len(pieces) - 1] or [[]]
        return [[tok.bos_token_id, *p, tok.eos_token_id, *[pad] * (CHUNK - len(p))] for p in pieces]

    def labels(self, text: str) -> list[str]:
        """One label per context position: BOS, the tokens, EOS, then 'pad', per chunk."""
        tok = self.tokenizers[0]
        out = []
        for chunk in self.chunks(text):
            words = [w.replace("</w>", "") for w in tok.convert_ids_to_tokens(chunk)]
            words[0] = "BOS"
            end = chunk.index(tok.eos_token_id, 1)
            words[end] = "EOS"
            words[end + 1 :] = ["pad"] * (len(words) - end - 1)
            out += words
        return out

    @torch.no_grad()
    def encode(self, text: str) -> Encoded:
        if text not in self._cache:
            self._cache[text] = self._encode(text)
        return self._cache[text]

    def _encode(self, text: str) -> Encoded:
        per_encoder, pooled = [], None
        for n, (tok, encoder) in enumerate(zip(self.tokenizers, self.encoders, strict=True)):
            ids = torch.tensor(self.chunks(text, tok), device=self.device)
            out = encoder(ids, output_hidden_states=self.penultimate)
            hidden = out.hidden_states[-2] if self.penultimate else out[0]
            per_encoder.append(hidden.reshape(-1, hidden.shape[-1]))
            if n == len(self.encoders) - 1 and hasattr(out, "text_embeds"):
                pooled = out.text_embeds[0]
        return Encoded(torch.cat(per_encoder, dim=-1).float(), pooled)
