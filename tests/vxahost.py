"""A `VxaHost` for tests: the real tiny ldm U-Nets, a real tiny CLIP text transformer fed the real tokenizer's chunks,
and a stand-in VAE whose posterior is a fixed linear map of 8×8-pooled pixels with a constant spread.

It records what VXA hands it (the pixels, the U-Net inputs), so tests can check the VAE range, the latent and the
noise. Also used by the VXA benchmark.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
import unets
from fakewebui.tiny_model import ID_END, ID_START, LATENT_RGB, alphas_cumprod, clip_text_model, clip_tokenizer

from lib_dumpunet.layout import UNetLayout
from lib_dumpunet.tokens import BpeVocabulary, TokenTable, chunk_prompt
from lib_dumpunet.vxa import Posterior

TOKENIZER = clip_tokenizer()
VOCAB = BpeVocabulary.of(TOKENIZER)
COMMA = TOKENIZER.get_vocab()[",</w>"]
LATENT_SCALE = 0.18215
POSTERIOR_STD = 0.1


def tokenize(texts: list[str]) -> list[list[int]]:
    return TOKENIZER(list(texts), truncation=False, add_special_tokens=False)["input_ids"] if texts else []


class TinyHost:
    """VXA's host over a tiny U-Net of `flavour`."""

    def __init__(self, flavour: unets.Flavour, unet: torch.nn.Module, seed: int = 0) -> None:
        self.flavour = flavour
        self._unet = unet
        self.text_model = clip_text_model(flavour.context_dim, seed + 1)
        self.to_latent = torch.linalg.pinv(torch.tensor(LATENT_RGB))  # (3, 4)
        self.pixels_seen: list[torch.Tensor] = []
        self.unet_inputs: list[tuple[torch.Tensor, torch.Tensor]] = []

    @property
    def unet(self) -> torch.nn.Module:
        return self._unet

    def layout(self) -> UNetLayout:
        return UNetLayout(self._unet)

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        return alphas_cumprod()

    def chunks(self, prompt: str):
        return chunk_prompt(prompt, tokenize, start=ID_START, end=ID_END, comma=COMMA)

    def tokens(self, prompt: str) -> TokenTable:
        return TokenTable.from_chunks(self.chunks(prompt), VOCAB)

    def encode_image(self, pixels: torch.Tensor) -> Posterior:
        self.pixels_seen.append(pixels.clone())
        mean = torch.einsum("brhw,rc->bchw", F.avg_pool2d(pixels, 8), self.to_latent) * LATENT_SCALE
        return Posterior(mean, torch.full_like(mean, POSTERIOR_STD))

    def encode_prompt(self, prompt: str, width: int, height: int) -> dict[str, torch.Tensor]:
        parts = []
        with torch.no_grad():
            for chunk in self.chunks(prompt):
                z = self.text_model(input_ids=torch.tensor([chunk.tokens])).last_hidden_state
                parts.append(z * torch.tensor(chunk.multipliers)[None, :, None])
        cond = {"context": torch.cat(parts, dim=1)}
        if self.flavour.adm_channels:
            cond["y"] = torch.zeros(1, self.flavour.adm_channels)
        return cond

    def context_length(self, cond: dict[str, torch.Tensor]) -> int:
        return int(cond["context"].shape[1])

    def run_unet(self, x: torch.Tensor, t: torch.Tensor, cond: dict[str, torch.Tensor]) -> None:
        self.unet_inputs.append((x.clone(), t.clone()))
        with unets.webui_skip_resize():
            self._unet(x, t, **cond)
