"""The token inspector over the webui's own text encoder: one table for the VXA tab, the Attention tab and the labels
under Q*K maps.

The hijacked encoder's `tokenize_line` builds the chunks the model is conditioned on (emphasis, textual-inversion
embeddings, BREAK, comma back-tracking, as the user's settings have them); `lib_dumpunet.tokens.TokenTable` reads
them with the encoder's own vocabulary (Hugging Face's CLIP tokenizer, or OpenCLIP's for SD2).
"""

from __future__ import annotations

from typing import Any

from lib_dumpunet.errors import DumpUnetError
from lib_dumpunet.tokens import BpeVocabulary, TokenTable

__all__ = ["text_encoder", "token_labels", "token_table"]


def text_encoder(model: Any) -> Any:
    """The (first) hijacked CLIP text encoder: cond_stage_model for SD1/SD2, the CLIP-L embedder for SDXL."""
    conditioner = getattr(model, "conditioner", None)
    if conditioner is not None and getattr(conditioner, "embedders", None):
        return conditioner.embedders[0]
    return getattr(model, "cond_stage_model", None)


def _vocabulary(encoder: Any) -> BpeVocabulary:
    tokenizer = getattr(getattr(encoder, "wrapped", None), "tokenizer", None)
    if tokenizer is None:  # OpenCLIP (SD2) keeps its tokenizer module-wide
        from open_clip import tokenizer as open_clip_tokenizer

        tokenizer = open_clip_tokenizer._tokenizer
    vocab = BpeVocabulary.of(tokenizer)
    return BpeVocabulary(vocab.piece_of, int(encoder.id_start), int(encoder.id_end))


def token_table(prompt: str, model: Any) -> TokenTable:
    """The token table of `prompt` as `model`'s encoder builds it."""
    encoder = text_encoder(model) if model is not None else None
    if encoder is None or not hasattr(encoder, "tokenize_line"):
        msg = "no Stable Diffusion model with a CLIP text encoder is loaded; load a checkpoint first"
        raise DumpUnetError(msg)
    chunks, _count = encoder.tokenize_line(prompt)
    return TokenTable.from_chunks(chunks, _vocabulary(encoder))


def token_labels(prompt: str, model: Any) -> list[str]:
    """A label per context column of `prompt` (BOS, tokens, embedding vectors, EOS, pad), or [] without a model."""
    try:
        return token_table(prompt, model).labels()
    except DumpUnetError:
        return []
