"""Latent views: the sampling around the U-Net as pictures — the pseudo-blocks `latent`, `x0` and `cfg`.

Where the U-Net features tab names them (see `specs.VIEW_NAMES`), a `ViewRecorder` keeps, at the chosen sampler
steps, for each image:

  latent  the latent the U-Net receives (its input x, already scaled by the sampler), taken by a pre-hook on the
          U-Net from the image's first cond row, so every host gives the same thing;
  x0      the predicted clean latent after classifier-free guidance, which the host hands over (`guided`);
  cfg     the guidance: per latent pixel, the length over channels of cond − uncond of the predicted clean latent,
          one map per cond row (AND sub-prompt), from the host's per-row predictions (`denoised`).

A host that evaluates no uncond rows at a step (the webui's skip-early-CFG or NGMS) gives no `cfg` map there and a
note says so. Captured views are filed like block outputs (kind "features", place = the view's name), so dumps,
gallery order and saved names work as for blocks. `ViewPainter` draws them: latents as RGB through a linear
latent → RGB map (the webui's "Approx cheap" coefficients for SD1/SD2 and for SDXL, or one fitted by least squares
to a model's own VAE, `fit_latent_rgb`) or through the VAE itself, upscaled nearest to the image size; the guidance
as a jet heat map with its mean magnitude in the label.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from lib_dumpunet.capture import Capture, Key, Recorder
from lib_dumpunet.hooks import HookSet
from lib_dumpunet.layout import UNetLayout
from lib_dumpunet.overlay import colormap
from lib_dumpunet.render import MapImage
from lib_dumpunet.sampling import Row, SamplingTracker, Step, UNetCall
from lib_dumpunet.specs import VIEW_NAMES, StepSelection

__all__ = [
    "LATENT_CHANNELS",
    "SDXL_LATENT_RGB",
    "SD_LATENT_RGB",
    "VIEW_KIND",
    "VIEW_NAMES",
    "LatentDecoder",
    "LatentRGB",
    "ViewPainter",
    "ViewRecorder",
    "fit_latent_rgb",
    "is_view",
    "scenes",
]

log = logging.getLogger(__name__)

VIEW_KIND = "features"  # views are shown, ordered, dumped and saved among the U-Net features
LATENT_CHANNELS = 4  # SD1/SD2/SDXL; an inpainting U-Net gets 9 input channels, of which the first 4 are the latent
VAE_FACTOR = 8  # pixels per latent pixel

# The webui's "Approx cheap" preview maps (modules/sd_vae_approx.py in v1.10.1): one row per latent channel, giving
# that channel's contribution to R, G and B on the VAE's [-1, 1] scale.
SD_LATENT_RGB = (
    (0.298, 0.207, 0.208),
    (0.187, 0.286, 0.173),
    (-0.158, 0.189, 0.264),
    (-0.184, -0.271, -0.473),
)
SDXL_LATENT_RGB = (
    (0.3448, 0.4168, 0.4395),
    (-0.1953, -0.0290, 0.0250),
    (0.1074, 0.0886, -0.0163),
    (-0.3730, -0.2499, -0.2088),
)

# Latents (N, C, h, w) → pictures (N, 3, H, W) on the VAE's [-1, 1] scale.
LatentDecoder = Callable[[torch.Tensor], torch.Tensor]


def is_view(place: str) -> bool:
    return place in VIEW_NAMES


@dataclass(frozen=True)
class LatentRGB:
    """A linear latent → RGB map: rgb = Σ_c latent_c · weights[c] + bias, on the VAE's [-1, 1] scale."""

    weights: tuple[tuple[float, float, float], ...]
    bias: tuple[float, float, float] = (0.0, 0.0, 0.0)
    source: str = "approx"  # what the label says the colours come from

    @classmethod
    def for_model(cls, *, sdxl: bool) -> LatentRGB:
        """The webui's cheap approximation for the model family."""
        return cls(SDXL_LATENT_RGB if sdxl else SD_LATENT_RGB, source="approx SDXL" if sdxl else "approx")

    def __call__(self, latents: torch.Tensor) -> torch.Tensor:
        x = latents.float()
        weights = torch.tensor(self.weights, dtype=torch.float32, device=x.device)
        bias = torch.tensor(self.bias, dtype=torch.float32, device=x.device)
        return torch.einsum("nchw,cr->nrhw", x[:, : weights.shape[0]], weights) + bias[None, :, None, None]


def scenes(count: int, size: int = 64, *, seed: int = 0) -> torch.Tensor:
    """`count` simple pictures (count, 3, size, size) on the [-1, 1] scale: a plain background (mostly white) with
    three discs or squares of random colours — what a VAE sees from generated pictures, to fit a map on."""
    g = torch.Generator().manual_seed(seed)
    axis = torch.arange(size, dtype=torch.float32)
    ys, xs = torch.meshgrid(axis, axis, indexing="ij")
    white = torch.rand(count, generator=g) < 0.7
    background = torch.where(white[:, None], torch.ones(count, 3), torch.rand(count, 3, generator=g) * 2 - 1)
    out = background[:, :, None, None].expand(count, 3, size, size).clone()
    for k in range(3):
        colour = torch.rand(count, 3, generator=g) * 2 - 1
        cx, cy = (torch.rand(2, count, generator=g) * size)[:, :, None, None]
        radius = (torch.rand(count, generator=g) * 0.3 + 0.1)[:, None, None] * size
        dx, dy = xs - cx, ys - cy
        inside = dx**2 + dy**2 < radius**2 if k % 2 == 0 else (dx.abs() < radius) & (dy.abs() < radius)
        out = torch.where(inside[:, None], colour[:, :, None, None], out)
    return out


def fit_latent_rgb(
    decode: LatentDecoder,
    encode: Callable[[torch.Tensor], torch.Tensor] | None = None,
    *,
    channels: int = LATENT_CHANNELS,
    samples: int = 16,
    seed: int = 0,
    source: str = "approx fitted to the VAE",
) -> LatentRGB:
    """The least-squares linear latent → RGB map of a VAE. Latents come from encoding `scenes` (or, without an
    encoder, from a standard normal); each is decoded, every latent pixel's patch of the picture averaged, and
    [latent, 1] → patch colour solved for. The fit's R² on latents of other scenes is kept in `source`."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        if encode is not None:
            latents = encode(scenes(samples, seed=seed)).float().cpu()
            held_out = encode(scenes(samples, seed=seed + 1)).float().cpu()
        else:
            latents = torch.randn(samples, channels, 8, 8, generator=generator)
            held_out = torch.randn(samples, channels, 8, 8, generator=generator)
        patches, held_patches = _patches(decode, latents), _patches(decode, held_out)
    count, _, height, width = latents.shape
    inputs = torch.cat([latents, torch.ones(count, 1, height, width)], dim=1)
    a = inputs.permute(0, 2, 3, 1).reshape(-1, channels + 1).double()
    b = patches.permute(0, 2, 3, 1).reshape(-1, 3).double()
    solution = torch.linalg.lstsq(a, b).solution.float()
    weights = tuple(tuple(float(v) for v in row) for row in solution[:channels])
    bias = tuple(float(v) for v in solution[channels])
    fitted = LatentRGB(weights, bias, source)  # type: ignore[arg-type]
    residual = float((fitted(held_out) - held_patches).pow(2).mean())
    spread = float(held_patches.var())
    r2 = 1.0 - residual / spread if spread > 0 else 1.0
    log.debug("latent → RGB map fitted to the VAE: R² %.3f on other scenes", r2)
    return LatentRGB(weights, bias, f"{source}, R² {r2:.2f}")  # type: ignore[arg-type]


def _patches(decode: LatentDecoder, latents: torch.Tensor) -> torch.Tensor:
    """The decoded pictures averaged over each latent pixel's patch: (N, 3, h, w)."""
    pictures = decode(latents).float().cpu()
    factor = pictures.shape[-1] // latents.shape[-1]
    return torch.nn.functional.avg_pool2d(pictures, factor) if factor > 1 else pictures


# --- recording -----------------------------------------------------------------------------------------------------


class ViewRecorder(Recorder):
    """Keeps the chosen views at the chosen steps. Attach it (through a `Probe`) for `latent`; the host calls
    `begin_call` before each denoiser call's U-Net evaluations, then `denoised` and `guided` after them."""

    def __init__(self, views: Iterable[str], steps: StepSelection, *, dtype: torch.dtype | None = None) -> None:
        super().__init__(views, steps, uncond=False, dtype=dtype)
        self.views = frozenset(self.blocks)
        self._capture: Capture | None = None
        self._tracker: SamplingTracker | None = None
        self._call: UNetCall | None = None
        self._received = 0  # rows the U-Net was given since `begin_call`
        self.no_uncond: set[tuple[int, int]] = set()  # (pass, step) where a `cfg` map could not be made

    def attach(self, hooks: HookSet, layout: UNetLayout, tracker: SamplingTracker, capture: Capture) -> None:
        self._capture, self._tracker = capture, tracker
        hooks.pre(layout.unet, self._unet_input, with_kwargs=True)

    def wanted(self, view: str) -> bool:
        """True when the current denoiser call records `view`."""
        return view in self.views and self._call is not None and self.wants(self._call)

    def begin_call(self, step: Step, rows: Sequence[Row]) -> None:
        self._call = UNetCall(step, tuple(rows))
        self._received = 0

    def _unet_input(self, _module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        x = args[0] if args else kwargs["x"] if "x" in kwargs else kwargs["sample"]
        self._received += int(x.shape[0])
        call = self._tracker.current if self._tracker is not None else None
        if "latent" not in self.views or not self.wants(call):
            return
        idx = [i for i, r in enumerate(call.rows) if r is not None and r.branch == "cond" and r.sub == 0]
        if idx and self._capture is not None:
            self.store(self._capture, call, idx, "latent", VIEW_KIND, x[idx, :LATENT_CHANNELS])

    def denoised(self, x0_rows: torch.Tensor) -> None:
        """Every row's predicted clean latent of the denoiser call (the webui's order: cond rows, then uncond)."""
        call = self._call
        if "cfg" not in self.views or call is None or not self.wants(call) or self._capture is None:
            return
        if x0_rows.shape[0] != len(call.rows):
            log.warning("denoised rows %d ≠ %d expected; no cfg map", x0_rows.shape[0], len(call.rows))
            return
        uncond_at = {r.image: i for i, r in enumerate(call.rows) if r.branch == "uncond"}
        cond = [i for i, r in enumerate(call.rows) if r.branch == "cond"]
        evaluated = [i for i in cond if uncond_at.get(call.rows[i].image, len(call.rows)) < self._received]
        if len(evaluated) < len(cond):
            self.no_uncond.add((call.step.pass_index, call.step.step))
        if not evaluated:
            return
        others = [uncond_at[call.rows[i].image] for i in evaluated]
        difference = x0_rows[evaluated].float() - x0_rows[others].float()
        magnitude = difference.pow(2).sum(dim=1, keepdim=True).sqrt()  # (n, 1, h, w): L2 over channels
        self.store(self._capture, call, evaluated, "cfg", VIEW_KIND, magnitude)

    def guided(self, x0: torch.Tensor) -> None:
        """The guided prediction of the clean latent, one row per image of the denoiser call."""
        call = self._call
        if "x0" not in self.views or call is None or not self.wants(call) or self._capture is None:
            return
        firsts = [i for i, r in enumerate(call.rows) if r.branch == "cond" and r.sub == 0]
        if x0.shape[0] != len(firsts):
            log.warning("guided rows %d ≠ %d images; no x0 view", x0.shape[0], len(firsts))
            return
        step = call.step
        keys = [Key(call.rows[i].image, step.pass_index, step.step, "x0", VIEW_KIND) for i in firsts]
        self._capture.store(keys, x0[:, :LATENT_CHANNELS], self.dtype)

    def notes(self) -> list[str]:
        if not self.no_uncond:
            return []
        steps = ", ".join(f"{'hires ' if p else ''}{s}" for p, s in sorted(self.no_uncond))
        return [
            f"Dump U-Net: no cfg map at step(s) {steps}: the sampler evaluated no uncond (negative prompt) rows "
            "there (skip early CFG / NGMS), so there was no guidance to show."
        ]


# --- drawing -------------------------------------------------------------------------------------------------------

_WHAT = {"latent": "U-Net input latent", "x0": "predicted x0"}


@dataclass
class ViewPainter:
    """Draws captured views: latents through `latent_rgb` (or `vae` when given), guidance as a heat map."""

    latent_rgb: LatentRGB = field(default_factory=lambda: LatentRGB.for_model(sdxl=False))
    vae: LatentDecoder | None = None
    scale: int = VAE_FACTOR  # nearest upscaling of latent-sized pictures (8: the image's own size)

    def paint(self, key: Key, tensor: torch.Tensor) -> MapImage:
        if key.place == "cfg":
            return self._guidance(key, tensor)
        latent = tensor.detach().float()[None]
        if self.vae is not None:
            with torch.no_grad():
                rgb, source = self.vae(latent).float().cpu()[0], "VAE"
        else:
            rgb, source = self.latent_rgb(latent)[0], self.latent_rgb.source
        pixels = ((rgb.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
        image = self._enlarge(Image.fromarray(np.ascontiguousarray(pixels), "RGB"), latent.shape[-1])
        return MapImage(key, image, _label(key, f"{_WHAT[key.place]} ({source})"))

    def _guidance(self, key: Key, tensor: torch.Tensor) -> MapImage:
        magnitude = tensor.detach().float().reshape(tensor.shape[-2:]).cpu().numpy()
        peak = float(magnitude.max()) if magnitude.size else 0.0
        heat = magnitude / peak if peak > 0 else np.zeros_like(magnitude)
        image = self._enlarge(Image.fromarray(colormap(heat, "jet"), "RGB"), magnitude.shape[-1])
        what = f"guidance |cond − uncond| mean {float(magnitude.mean()):.4g}, max {peak:.4g}"
        return MapImage(key, image, _label(key, what))

    def _enlarge(self, image: Image.Image, latent_width: int) -> Image.Image:
        if image.width != latent_width or self.scale <= 1:
            return image  # already at pixel size (VAE)
        return image.resize((image.width * self.scale, image.height * self.scale), Image.Resampling.NEAREST)


def _label(key: Key, what: str) -> str:
    parts = [key.place, f"step {key.step}", what]
    if key.pass_index:
        parts.append("hires pass")
    if key.sub:
        parts.append(f"AND {key.sub + 1}")
    return ", ".join(parts)
