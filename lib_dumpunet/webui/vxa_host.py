"""The webui's loaded model as VXA's host, and the token inspector over the webui's own encoder.

`WebuiVxaHost(sd_model)` gives `lib_dumpunet.vxa` what it needs from whatever checkpoint is loaded now: its U-Net,
the VAE posterior of an image (ldm's `encode_first_stage` returns the distribution itself; sgm's samples it, so for
SDXL the posterior's moments are read from the VAE's encoder and `quant_conv`, its own two layers), the prompt's
conditioning from the model's hijacked encoder (`get_learned_conditioning`, so emphasis, embeddings and BREAK are
the webui's), one U-Net call through `apply_model`, and the token table from the same encoder's `tokenize_line`
(`lib_dumpunet.webui.tokens`).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from modules import devices, prompt_parser

from lib_dumpunet.errors import DumpUnetError
from lib_dumpunet.layout import UNetLayout
from lib_dumpunet.tokens import TokenTable
from lib_dumpunet.vxa import Posterior
from lib_dumpunet.webui.host import unet_of
from lib_dumpunet.webui.tokens import token_table

__all__ = ["WebuiVxaHost"]

log = logging.getLogger(__name__)

_LOGVAR_RANGE = (-30.0, 20.0)  # how the VAE's Gaussian clamps its log-variance


class WebuiVxaHost:
    """`lib_dumpunet.vxa.VxaHost` over a loaded webui model."""

    def __init__(self, sd_model: Any) -> None:
        unet = unet_of(sd_model)
        if unet is None:
            msg = "VXA needs a loaded SD1.x, SD2.x or SDXL checkpoint (this one has no U-Net with blocks)"
            raise DumpUnetError(msg)
        key = getattr(getattr(sd_model, "model", None), "conditioning_key", "crossattn")
        if key not in (None, "crossattn"):
            msg = (
                f"this checkpoint's U-Net also takes an image condition ({key!r}: an inpainting or instruct model); "
                "load a plain text-to-image checkpoint for VXA"
            )
            raise DumpUnetError(msg)
        self.model = sd_model
        self._unet = unet

    @property
    def unet(self) -> torch.nn.Module:
        return self._unet

    def layout(self) -> UNetLayout:
        return UNetLayout(self._unet)

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        return self.model.alphas_cumprod

    @property
    def scale_factor(self) -> float:
        return float(getattr(self.model, "scale_factor", 1.0))

    def encode_image(self, pixels: torch.Tensor) -> Posterior:
        first_stage = self.model.first_stage_model
        with devices.autocast():
            if hasattr(first_stage, "regularization") and hasattr(first_stage, "quant_conv"):  # sgm: it would sample
                param = next(first_stage.parameters())
                moments = first_stage.quant_conv(first_stage.encoder(pixels.to(param.device, param.dtype)))
                return self._gaussian(moments)
            out = self.model.encode_first_stage(pixels.to(devices.device, devices.dtype_vae))
        if hasattr(out, "mean") and hasattr(out, "std") and not isinstance(out, torch.Tensor):
            return Posterior(out.mean.float() * self.scale_factor, out.std.float() * self.scale_factor)
        return Posterior(self.model.get_first_stage_encoding(out).float())  # a deterministic encoder

    def _gaussian(self, moments: torch.Tensor) -> Posterior:
        mean, logvar = moments.float().chunk(2, dim=1)
        std = torch.exp(0.5 * logvar.clamp(*_LOGVAR_RANGE))
        return Posterior(mean * self.scale_factor, std * self.scale_factor)

    def encode_prompt(self, prompt: str, width: int, height: int) -> Any:
        texts = prompt_parser.SdConditioning([prompt], width=width, height=height)
        with devices.autocast():
            return self.model.get_learned_conditioning(texts)

    def context_length(self, cond: Any) -> int:
        crossattn = cond["crossattn"] if isinstance(cond, dict) else cond
        return int(crossattn.shape[1])

    def tokens(self, prompt: str) -> TokenTable:
        return token_table(prompt, self.model)

    def run_unet(self, x: torch.Tensor, t: torch.Tensor, cond: Any) -> None:
        with devices.autocast():
            self.model.apply_model(x.to(devices.device), t.to(devices.device), cond)

    def facts(self) -> dict[str, str]:
        """The checkpoint's name and hash for the PNG info."""
        info = getattr(self.model, "sd_checkpoint_info", None)
        out = {}
        if info is not None:
            out["Model"] = str(getattr(info, "model_name", "") or getattr(info, "title", ""))
            shorthash = getattr(info, "shorthash", None)
            if shorthash:
                out["Model hash"] = str(shorthash)
        return {k: v for k, v in out.items() if v}
