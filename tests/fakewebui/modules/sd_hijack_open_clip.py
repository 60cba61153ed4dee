"""Stand-in for webui v1.10.1 `modules/sd_hijack_open_clip.py`: wrappers of OpenCLIP encoders (SD2, SDXL's second).

The webui tokenises these with open_clip's module-wide BPE tokenizer; the tiny OpenCLIP stand-ins carry a
`CLIPTokenizer` over the same vocabulary instead, so ordinary text gets the same ids. Ids after the first EOS are
replaced by 0, OpenCLIP's padding id (see `TextConditionalModel.process_tokens`).
"""

from __future__ import annotations

from typing import Any

import torch
from modules import sd_hijack_clip


class FrozenOpenCLIPEmbedderWithCustomWords(sd_hijack_clip.FrozenCLIPEmbedderWithCustomWordsBase):
    """SD2's encoder: whatever layer the wrapped embedder's `encode_with_transformer` selects."""

    def __init__(self, wrapped: torch.nn.Module, hijack: Any) -> None:
        super().__init__(wrapped, hijack)
        vocab = wrapped.tokenizer.get_vocab()
        self.comma_token = vocab[",</w>"]
        self.id_start = wrapped.tokenizer.bos_token_id
        self.id_end = wrapped.tokenizer.eos_token_id
        self.id_pad = 0

    def encode_with_transformers(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.wrapped.encode_with_transformer(tokens)

    def encode_embedding_init_text(self, init_text: str, nvpt: int) -> torch.Tensor:
        return self._token_vectors(self.tokenize([init_text])[0])


class FrozenOpenCLIPEmbedder2WithCustomWords(FrozenOpenCLIPEmbedderWithCustomWords):
    """SDXL's OpenCLIP-G: the dict's `wrapped.layer` entry, carrying the pooled output as `.pooled`."""

    def encode_with_transformers(self, tokens: torch.Tensor) -> torch.Tensor:
        states = self.wrapped.encode_with_transformer(tokens)
        z = states[self.wrapped.layer]
        if states.get("pooled") is not None:
            z.pooled = states["pooled"]
        return z
