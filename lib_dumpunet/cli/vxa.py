"""`dumpunet vxa IMAGE --prompt …`: VXA's cross-attention heat map of an image, on a local diffusers model.

The same library run as the webui's VXA tab (`lib_dumpunet.vxa`), with the diffusers front-end as its host: the
U-Net and its layout (`lib_dumpunet.diffusers.layout`), the VAE's `latent_dist` (mean and spread, times the VAE's
scaling factor), the scheduler's ᾱ table, and the front-end's prompt encoder (`lib_dumpunet.diffusers.text`, which
follows the webui's chunk rules, as the token table does, without comma back-tracking). Writes `vxa-<image>.png`
(the settings as PNG info) and, with `--per-item`, one more PNG per picked item into `--out`.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import torch
from PIL import Image, PngImagePlugin

from lib_dumpunet.errors import DumpUnetError
from lib_dumpunet.layout import UNetLayout
from lib_dumpunet.overlay import COLORMAPS, MODES
from lib_dumpunet.tokens import TokenTable
from lib_dumpunet.vxa import (
    DEFAULT_LAYER,
    HEAD_MODES,
    LATENT_MODES,
    Posterior,
    VxaSettings,
    parse_time,
    visualize,
)

__all__ = ["DiffusersVxaHost", "add_parser", "run_command"]


def add_parser(commands: Any, default_model: Path) -> None:
    """The `vxa` subcommand."""
    p = commands.add_parser("vxa", help="cross-attention heat map of an image (the webui's VXA tab)")
    p.add_argument("image", type=Path, help="the image (PNG, JPEG, WebP …)")
    p.add_argument("-p", "--prompt", required=True)
    p.add_argument("--tokens", default="", help='columns, ranges or words, e.g. "hat, neck" or "1, 3" (default: all)')
    p.add_argument("-t", "--time", default="1.0", help="timestep 0–999 (default: %(default)s)")
    p.add_argument("--layer", default=DEFAULT_LAYER, help="'All layers', a block (M00) or a module (M00.attn2.3)")
    p.add_argument("--output", choices=MODES, default="masked")
    p.add_argument("--no-noise", action="store_true", help="feed the clean latent (the original VXA's way)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise and of a posterior sample (-1: random)")
    p.add_argument("--latent", choices=LATENT_MODES, default="mean")
    p.add_argument("--heads", choices=HEAD_MODES, default="mean")
    p.add_argument("--opacity", type=float, default=0.5, help="colour overlay opacity (with --output colour)")
    p.add_argument("--colormap", choices=COLORMAPS, default="jet")
    p.add_argument("--size", type=int, default=0, help="longest side fed to the model (default: the image's own)")
    p.add_argument("--per-item", action="store_true", help="also one map per picked item")
    g = p.add_argument_group("model and output")
    g.add_argument("--model", type=Path, default=default_model, help="diffusers SD1/SD2/SDXL folder")
    g.add_argument("--out", type=Path, default=Path("dumpunet-out"), help="output folder (default: %(default)s)")
    g.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    g.add_argument("--quiet", action="store_true")
    g.add_argument("--debug", action="store_true", help="log what Dump U-Net does to stderr")


def settings_of(args: argparse.Namespace) -> VxaSettings:
    return VxaSettings(
        prompt=args.prompt,
        tokens=args.tokens,
        t=parse_time(args.time),
        layer=args.layer,
        output=args.output,
        noise=not args.no_noise,
        seed=args.seed,
        latent=args.latent,
        heads=args.heads,
        opacity=args.opacity,
        colormap=args.colormap,
        size=args.size,
    ).checked()


class DiffusersVxaHost:
    """`lib_dumpunet.vxa.VxaHost` over a loaded diffusers `Model`."""

    def __init__(self, model: Any) -> None:
        self.model = model

    @property
    def unet(self) -> torch.nn.Module:
        return self.model.unet

    def layout(self) -> UNetLayout:
        return self.model.layout

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        table = getattr(self.model.scheduler, "alphas_cumprod", None)
        if table is None:
            msg = f"the model's scheduler ({type(self.model.scheduler).__name__}) has no ᾱ table to noise with"
            raise DumpUnetError(msg)
        return table

    def encode_image(self, pixels: torch.Tensor) -> Posterior:
        vae = self.model.vae
        with torch.no_grad():
            dist = vae.encode(pixels.to(self.model.device, vae.dtype)).latent_dist
        scale = float(vae.config.scaling_factor)
        return Posterior(dist.mean.float() * scale, dist.std.float() * scale)

    def encode_prompt(self, prompt: str, width: int, height: int) -> tuple[torch.Tensor, dict | None]:
        encoded = self.model.text.encode(prompt)
        context = encoded.context[None].to(self.model.device, self.model.dtype)
        added = None
        if getattr(self.model.unet.config, "addition_embed_type", None) == "text_time":
            ids = encoded.context.new_tensor([[height, width, 0, 0, height, width]]).to(
                self.model.device, self.model.dtype
            )
            added = {"text_embeds": encoded.pooled[None].to(self.model.device, self.model.dtype), "time_ids": ids}
        return context, added

    def context_length(self, cond: tuple[torch.Tensor, dict | None]) -> int:
        return int(cond[0].shape[1])

    def tokens(self, prompt: str) -> TokenTable:
        return self.model.text.table(prompt)  # the chunks the encoder conditions on; VXA checks the length matches

    def run_unet(self, x: torch.Tensor, t: torch.Tensor, cond: tuple[torch.Tensor, dict | None]) -> None:
        context, added = cond
        self.model.unet(
            x.to(self.model.device, self.model.dtype),
            t.to(self.model.device),
            encoder_hidden_states=context,
            added_cond_kwargs=added,
            return_dict=False,
        )


def _png_info(text: str) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", text)
    return info


def _stem(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:60] or "item"


def run_command(args: argparse.Namespace, command_line: str) -> Path:
    """Run VXA as `args` say; returns the main PNG's path."""
    from lib_dumpunet.diffusers.model import load_model  # imports diffusers and transformers

    settings = settings_of(args)
    try:
        image = Image.open(args.image).convert("RGB")
    except OSError as err:
        msg = f"cannot read the image {args.image}: {err}"
        raise DumpUnetError(msg) from err
    host = DiffusersVxaHost(load_model(args.model, device=args.device))
    result = visualize(host, image, settings)
    result.extra["Model"] = host.model.name
    info = result.infotext()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"vxa-{_stem(args.image.stem)}.png"
    Image.fromarray(result.render()).save(path, pnginfo=_png_info(info))
    if args.per_item:
        for label, picture in result.per_item():
            Image.fromarray(picture).save(path.with_name(f"{path.stem}-{_stem(label)}.png"), pnginfo=_png_info(info))
    (args.out / f"{path.stem}.txt").write_text(f"{command_line}\n{info}\n", encoding="utf-8")
    return path
