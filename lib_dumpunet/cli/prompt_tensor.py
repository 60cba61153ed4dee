"""The prompt tensor view on the command line: `--prompt-tensor` draws what the diffusers model's U-Net read.

`TextEncoderSource` is `lib_dumpunet.prompt_view.PromptSource` over the front-end's webui-style encoder
(`lib_dumpunet.diffusers.text.TextEncoder`): the very contexts sampling used (one schedule entry: the front-end has
no prompt editing), SDXL's pooled vector, and the token inspector's table of the chunks that encoder built — the
same rules, so the same labels, as in the webui. `prompt_maps` draws a finished job's pictures by image index.
"""

from __future__ import annotations

from typing import Any

from lib_dumpunet.prompt_view import Encoding, Part, PromptViewSettings, collect, render
from lib_dumpunet.render import MapImage
from lib_dumpunet.tokens import BpeVocabulary, TokenTable

__all__ = ["TextEncoderSource", "prompt_maps"]

_WHOLE_JOB = 10**9  # a context used at every step
_PART_NAMES = ("CLIP-L", "OpenCLIP-G")


class TextEncoderSource:
    """`PromptSource` over a `TextEncoder` (one CLIP encoder, or SDXL's two)."""

    def __init__(self, text: Any) -> None:
        self.text = text

    @property
    def parts(self) -> tuple[Part, ...]:
        encoders = self.text.encoders
        if len(encoders) != len(_PART_NAMES):
            return ()
        return tuple(Part(name, int(e.config.hidden_size)) for name, e in zip(_PART_NAMES, encoders, strict=True))

    def encode(self, text: str, *, negative: bool) -> list[Encoding]:
        encoded = self.text.encode(text)
        return [Encoding(_WHOLE_JOB, encoded.context, encoded.pooled, text)]

    def token_table(self, text: str) -> TokenTable:
        return TokenTable.from_chunks(self.text.encoder.chunks(text), BpeVocabulary.of(self.text.tokenizers[0]))


def prompt_maps(job: Any, text: Any, settings: PromptViewSettings) -> dict[int, list[MapImage]]:
    """A finished job's prompt tensors, drawn, by the index of the image each is shown after."""
    out: dict[int, list[MapImage]] = {}
    for m in render(collect(job, TextEncoderSource(text), settings), settings):
        out.setdefault(m.key.image, []).append(m)
    return out
