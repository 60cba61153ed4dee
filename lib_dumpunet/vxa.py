"""VXA: where the tokens of a prompt attend in an image the user gives — one U-Net pass, its cross-attention maps.

The image is resized to a size the model accepts (sides multiples of 8, at least 64), scaled to [-1, 1] — the range
the VAE was trained on — and encoded; the latent is the posterior mean (deterministic) or a sample drawn with a
seed. Optionally it is noised to the level of the chosen timestep t with a seeded noise,
x_t = √ᾱ_t·z + √(1-ᾱ_t)·ε, so that t means what it means during sampling. The U-Net then runs once on (x_t, t, the
prompt's conditioning) while the library's cross-attention recorder (`lib_dumpunet.attention`) recomputes
softmax(q·kᵀ·scale) for the chosen layers, keeping only the picked token columns.

Per layer, the picked columns are summed (the attention paid to those tokens) and the heads are averaged (or their
maximum taken); several layers are brought to the finest grid by bilinear interpolation and averaged. The map is
brought to the image's own size (bilinear), stretched to [0, 1] by its minimum and maximum, and drawn over the image
(`lib_dumpunet.overlay`). Everything comes back in a `VxaResult`, which can also make one map per picked word.

The host — the webui, the diffusers front-end, a test — is a `VxaHost`: its U-Net and layout, its VAE's posterior,
its prompt encoder and token table, and its noise schedule. The layout is asked for on every call, so a
model switch (SD1 → SDXL) needs nothing refreshed. Every user mistake raises `DumpUnetError` before the U-Net runs.
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal, Protocol, get_args

import numpy as np
import torch
from PIL import Image
from torch import nn

from lib_dumpunet.attention import CrossAttentionRecorder, _Tap
from lib_dumpunet.capture import Capture, Key
from lib_dumpunet.errors import DumpUnetError
from lib_dumpunet.hooks import HookSet
from lib_dumpunet.layout import AttentionInfo, UNetLayout
from lib_dumpunet.overlay import COLORMAPS, MODES, Colormap, Mode, min_max, overlay, resize_heat
from lib_dumpunet.probe import Probe
from lib_dumpunet.sampling import SamplingTracker, cfg_rows
from lib_dumpunet.specs import ALL_STEPS
from lib_dumpunet.tokens import TokenPick, TokenTable

__all__ = [
    "ALL_LAYERS",
    "DEFAULT_LAYER",
    "HEAD_MODES",
    "LATENT_MODES",
    "HeadMode",
    "LatentMode",
    "Posterior",
    "VxaHost",
    "VxaResult",
    "VxaSettings",
    "layer_choices",
    "model_size",
    "parse_time",
    "resolve_layers",
    "visualize",
]

log = logging.getLogger(__name__)

ALL_LAYERS = "All layers"
DEFAULT_LAYER = "M00"  # the middle block: the original's default, and its coarsest, clearest map
MIN_SIDE = 64
MAX_SIDE = 4096
MAX_T = 999.0
TOKENS_LABEL = "Indices of tokens to be visualized"
TIME_LABEL = "Time embedding"
LAYER_LABEL = "Cross-attention layer"

HeadMode = Literal["mean", "max"]
LatentMode = Literal["mean", "sample"]
HEAD_MODES: tuple[HeadMode, ...] = get_args(HeadMode)
LATENT_MODES: tuple[LatentMode, ...] = get_args(LatentMode)


# --------------------------------------------------------------------------------------------------------------------
# Settings


@dataclass(frozen=True)
class VxaSettings:
    """The VXA tab's controls, with the original's labels in comments and its defaults where it had the control."""

    prompt: str = ""  # "Prompt"
    tokens: str = ""  # "Indices of tokens to be visualized": columns, ranges, words; blank = every prompt token
    t: float = 1.0  # "Time embedding": the timestep, 0–999
    layer: str = DEFAULT_LAYER  # "Cross-attention layer": ALL_LAYERS, a block ("M00") or one module ("M00.attn2.3")
    output: Mode = "masked"  # "Output mode"
    noise: bool = True  # noise the latent to the level of t (the original never did)
    seed: int = 0  # seed of that noise and of a posterior sample; -1 picks one
    latent: LatentMode = "mean"  # the VAE posterior's mean, or a sample of it
    heads: HeadMode = "mean"
    opacity: float = 0.5  # colour overlay only
    colormap: Colormap = "jet"
    size: int = 0  # longest side fed to the model (0: the image's own size); the map comes back at the image's size

    def checked(self) -> VxaSettings:
        """These settings with the seed chosen, or a `DumpUnetError` naming the first bad value."""
        t = parse_time(self.t)
        for name, value, allowed in (
            ("Output mode", self.output, MODES),
            ("Latent", self.latent, LATENT_MODES),
            ("Heads", self.heads, HEAD_MODES),
            ("Colour map", self.colormap, COLORMAPS),
        ):
            if value not in allowed:
                msg = f"{name} must be one of {', '.join(allowed)}, not {value!r}"
                raise DumpUnetError(msg)
        if not isinstance(self.prompt, str) or not isinstance(self.tokens, str) or not isinstance(self.layer, str):
            msg = "Prompt, tokens and layer must be text"
            raise DumpUnetError(msg)
        opacity = _number("Opacity", self.opacity, float)
        if not 0.0 <= opacity <= 1.0:
            msg = f"Opacity must be between 0 and 1, not {self.opacity}"
            raise DumpUnetError(msg)
        size = _number("Model input size", self.size, int)
        if size and not MIN_SIDE <= size <= MAX_SIDE:
            msg = f"Model input size must be 0 (the image's own) or {MIN_SIDE}–{MAX_SIDE}, not {self.size}"
            raise DumpUnetError(msg)
        seed = _number("Seed", self.seed, int)
        if seed < 0:
            seed = random.randrange(2**32)
        elif seed >= 2**63:
            msg = f"Seed {seed} is too large"
            raise DumpUnetError(msg)
        return replace(self, seed=seed, t=t, opacity=opacity, size=size, noise=bool(self.noise))

    def infotext(self, extra: dict[str, Any] | None = None) -> str:
        """The settings as PNG info: 'VXA prompt: "…", VXA tokens: hat, …' (values with , : or " are quoted)."""
        items = {f"VXA {k.replace('_', ' ')}": v for k, v in asdict(self).items()}
        if self.output != "colour":
            items.pop("VXA opacity")
            items.pop("VXA colormap")
        items.update(extra or {})
        return ", ".join(f"{k}: {_quote(v)}" for k, v in items.items())


def _quote(value: Any) -> str:
    text = str(value).lower() if isinstance(value, bool) else str(value)
    return json.dumps(text, ensure_ascii=False) if any(c in text for c in ',:"\n') or text != text.strip() else text


def _number(name: str, value: Any, kind: type) -> Any:
    """`value` as an int or float (whole floats are fine for ints), or a `DumpUnetError` naming the field."""
    try:
        number = float(value)
        if not math.isfinite(number) or (kind is int and not number.is_integer()):
            raise ValueError
    except (TypeError, ValueError):
        msg = f"{name} must be {'a whole number' if kind is int else 'a number'}, not {value!r}"
        raise DumpUnetError(msg) from None
    return kind(number) if kind is float else int(number)


def parse_time(text: str | float) -> float:
    """The "Time embedding" field: a number from 0 to 999 (the original parsed it and ignored mistakes)."""
    if isinstance(text, bool):
        value = math.nan
    elif isinstance(text, int | float):
        value = float(text)
    else:
        try:
            value = float(str(text).strip())
        except ValueError:
            msg = f"{TIME_LABEL}: {str(text).strip()!r} is not a number; type a timestep from 0 to 999, e.g. 1.0"
            raise DumpUnetError(msg) from None
    _check_time(value)
    return value


def _check_time(t: float) -> None:
    if not (math.isfinite(t) and 0.0 <= t <= MAX_T):
        msg = f"{TIME_LABEL}: {t} is outside 0–999 (0 is the clean image, 999 pure noise)"
        raise DumpUnetError(msg)


# --------------------------------------------------------------------------------------------------------------------
# Layers


def layer_choices(layout: UNetLayout) -> list[str]:
    """What the "Cross-attention layer" dropdown offers for this model: all layers, each block with
    cross-attention (all its modules), and each module of blocks that have several (SDXL's deep transformers)."""
    out = [ALL_LAYERS]
    deep: list[str] = []
    for block in layout.blocks:
        cross = [a for a in block.attentions if a.kind == "attn2"]
        if cross:
            out.append(block.name)
            if len(cross) > 1:
                deep += [a.label for a in cross]
    return out + deep


def resolve_layers(layout: UNetLayout, choice: str) -> list[AttentionInfo]:
    """The cross-attention modules `choice` names: ALL_LAYERS, a block, a module label, or a module's dotted path
    (also the original's "model.diffusion_model.middle_block.1.transformer_blocks.0.attn2")."""
    cross = layout.attentions(layout.names, "attn2")
    text = (choice or "").strip()
    if not cross:
        msg = "this U-Net has no cross-attention layers"
        raise DumpUnetError(msg)
    if text.lower() in (ALL_LAYERS.lower(), "all"):
        return cross
    upper = text.upper()
    chosen = [a for a in cross if a.block == upper] or [a for a in cross if a.label.upper() == upper]
    if not chosen:
        path = text.removeprefix("model.diffusion_model.")
        chosen = [a for a in cross if a.path == path]
    if not chosen:
        choices = ", ".join(layer_choices(layout)[:30])
        msg = f"{LAYER_LABEL}: {text!r} is not a cross-attention layer of the loaded model; choose one of: {choices}"
        raise DumpUnetError(msg)
    return chosen


# --------------------------------------------------------------------------------------------------------------------
# Host


@dataclass(frozen=True)
class Posterior:
    """The VAE's latent distribution for an image, already multiplied by the model's latent scale factor.
    `std` None: the VAE gives no spread (a deterministic encoder), so only the mean exists."""

    mean: torch.Tensor  # (1, C, h, w)
    std: torch.Tensor | None = None


class VxaHost(Protocol):
    """What VXA needs from whoever holds the model."""

    @property
    def unet(self) -> nn.Module: ...

    @property
    def alphas_cumprod(self) -> torch.Tensor: ...  # (1000,) ᾱ_t

    def layout(self) -> UNetLayout: ...  # read anew on every call: the model may have changed

    def encode_image(self, pixels: torch.Tensor) -> Posterior: ...  # (1, 3, H, W) in [-1, 1], float32, CPU

    def encode_prompt(self, prompt: str, width: int, height: int) -> Any: ...  # conditioning, opaque to VXA

    def context_length(self, cond: Any) -> int: ...  # columns of the conditioning's context

    def tokens(self, prompt: str) -> TokenTable: ...

    def run_unet(self, x: torch.Tensor, t: torch.Tensor, cond: Any) -> None: ...  # one U-Net call, batch 1


# --------------------------------------------------------------------------------------------------------------------
# Image geometry


def as_rgb(image: Any) -> np.ndarray:
    """The user's image as (H, W, 3) uint8: from a PIL image or an array (grey, RGB, RGBA; uint8 or [0, 1] floats)."""
    if image is None:
        msg = "no image: drop an image on the VXA tab (or send one) before visualizing"
        raise DumpUnetError(msg)
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    a = np.asarray(image)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=-1)
    if a.ndim != 3 or a.shape[-1] not in (3, 4) or 0 in a.shape:
        msg = f"the image has shape {a.shape}; expected height × width × RGB(A)"
        raise DumpUnetError(msg)
    a = a[..., :3]
    if a.dtype != np.uint8:
        scale = 255.0 if np.issubdtype(a.dtype, np.floating) and float(np.nanmax(a)) <= 1.0 else 1.0
        a = np.clip(np.nan_to_num(a.astype(np.float32) * scale), 0, 255).round().astype(np.uint8)
    return np.ascontiguousarray(a)


def model_size(width: int, height: int, longest: int = 0) -> tuple[int, int]:
    """(width, height) to feed the model: scaled so the longer side is `longest` (0: as is), each side rounded to a
    multiple of 8 and at least 64. Aspect ratio is kept up to that rounding."""
    scale = longest / max(width, height) if longest else 1.0
    w, h = (max(MIN_SIDE, 8 * round(side * scale / 8)) for side in (width, height))
    if max(w, h) > MAX_SIDE:
        msg = (
            f"the image is {width}×{height}, larger than the model can take at once; set the model input size "
            f"(longest side, e.g. 512 for SD1, 1024 for SDXL)"
        )
        raise DumpUnetError(msg)
    return w, h


def _pixels(rgb: np.ndarray, width: int, height: int) -> torch.Tensor:
    """uint8 RGB → (1, 3, height, width) float32 in [-1, 1] (the VAE's range; the original gave it [0, 1])."""
    if rgb.shape[:2] != (height, width):
        rgb = np.asarray(Image.fromarray(rgb).resize((width, height), Image.Resampling.LANCZOS))
    x = torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1)[None].float()
    return x / 127.5 - 1.0


# --------------------------------------------------------------------------------------------------------------------
# The run


class _PickedColumns(CrossAttentionRecorder):
    """The library's Q*K recorder on chosen modules only, keeping only the picked token columns."""

    def __init__(self, layers: Sequence[AttentionInfo], columns: Sequence[int]) -> None:
        super().__init__(sorted({a.block for a in layers}), ALL_STEPS, ("qk",))
        self.labels = {a.label for a in layers}
        self.columns = list(columns)

    def attach(self, hooks: HookSet, layout: UNetLayout, tracker: SamplingTracker, capture: Capture) -> None:
        for info in layout.attentions(self.blocks, self.attn_kind):
            if info.label in self.labels:
                module = layout.attention_module(info)
                scale = float(getattr(module, "scale", info.dim_head**-0.5))
                self._tap(hooks, layout.unet, module, _Tap(info, scale), tracker, capture)

    def store(self, capture, call, idx, place, kind, batch):
        # batch: (rows, heads, T, h, w) → only the picked columns leave the device
        super().store(capture, call, idx, place, kind, batch[:, :, self.columns])


@dataclass
class VxaResult:
    """One VXA run: the image, what was asked, and the attention paid to the picked tokens in each layer."""

    image: np.ndarray  # (H, W, 3) uint8, the user's image
    settings: VxaSettings  # with the seed that was used
    table: TokenTable
    pick: TokenPick
    size: tuple[int, int]  # (width, height) fed to the model
    layers: tuple[AttentionInfo, ...]
    attention: dict[str, torch.Tensor]  # label → (heads, picked columns, h, w), in pick.positions order
    extra: dict[str, Any] = field(default_factory=dict)  # host facts for the PNG info (model name, …)

    def layer_map(self, label: str, positions: Sequence[int] | None = None) -> torch.Tensor:
        """(h, w): the attention one layer pays to `positions` (default: all picked), heads aggregated."""
        a = self.attention[label]
        if positions is not None:
            where = {p: i for i, p in enumerate(self.pick.positions)}
            a = a[:, [where[p] for p in positions]]
        summed = a.sum(dim=1)  # (heads, h, w)
        return summed.amax(dim=0) if self.settings.heads == "max" else summed.mean(dim=0)

    def raw_map(self, positions: Sequence[int] | None = None, layers: Sequence[str] | None = None) -> torch.Tensor:
        """The layers' maps (default: all recorded) on the finest grid among them, averaged; not normalised."""
        labels = list(layers) if layers is not None else [a.label for a in self.layers]
        maps = [self.layer_map(label, positions) for label in labels]
        h, w = max((m.shape for m in maps), key=lambda s: s[0] * s[1])
        return torch.stack([resize_heat(m, h, w) for m in maps]).mean(dim=0)

    def heat(self, positions: Sequence[int] | None = None, layers: Sequence[str] | None = None) -> np.ndarray:
        """(H, W) in [0, 1] at the image's size: bilinear upsampling, then min–max normalisation."""
        height, width = self.image.shape[:2]
        return min_max(resize_heat(self.raw_map(positions, layers), height, width))

    def render(self, heat: np.ndarray | None = None) -> np.ndarray:
        """The heat map drawn as the settings ask: (H, W, 3) uint8."""
        s = self.settings
        return overlay(self.image, self.heat() if heat is None else heat, s.output, opacity=s.opacity, cmap=s.colormap)

    def per_item(self) -> list[tuple[str, np.ndarray]]:
        """One rendered map per item the user typed (word, phrase, column or range)."""
        return [(label, self.render(self.heat(positions))) for label, positions in self.pick.groups]

    def infotext(self) -> str:
        extra = {"VXA model size": f"{self.size[0]}x{self.size[1]}", "VXA columns": _columns(self.pick.positions)}
        return self.settings.infotext({**extra, **self.extra})


def _columns(positions: Sequence[int]) -> str:
    return " ".join(str(p) for p in positions)


def visualize(host: VxaHost, image: Any, settings: VxaSettings) -> VxaResult:
    """Run VXA on `image` (see the module docstring). Raises `DumpUnetError` for any bad input."""
    s = settings.checked()
    rgb = as_rgb(image)
    height, width = rgb.shape[:2]
    size = model_size(width, height, s.size)
    layout = host.layout()
    layers = resolve_layers(layout, s.layer)
    table = host.tokens(s.prompt)
    pick = table.pick(s.tokens, field=TOKENS_LABEL)

    cond = host.encode_prompt(s.prompt, *size)
    columns = host.context_length(cond)
    if columns != len(table):
        msg = f"the prompt encoder made {columns} context columns but its tokens fill {len(table)}; they must agree"
        raise DumpUnetError(msg)
    generator = torch.Generator().manual_seed(s.seed)
    with torch.no_grad():
        z = _latent(host.encode_image(_pixels(rgb, *size)), s.latent, generator)
        x = _noised(z, s.t, host.alphas_cumprod, generator) if s.noise else z
        attention = _record(host, layout, layers, pick.positions, x, s.t, cond)
    log.debug("VXA: %s at t=%s on %d layers, model size %s", pick.describe(), s.t, len(layers), size)
    return VxaResult(rgb, s, table, pick, size, tuple(layers), attention)


def _latent(posterior: Posterior, mode: LatentMode, generator: torch.Generator) -> torch.Tensor:
    if mode == "mean":
        return posterior.mean
    if posterior.std is None:
        msg = "this model's VAE gives no spread to sample from; set Latent to the posterior mean"
        raise DumpUnetError(msg)
    eps = torch.randn(posterior.mean.shape, generator=generator, dtype=torch.float32)
    return posterior.mean + posterior.std * eps.to(posterior.mean.device, posterior.mean.dtype)


def _alpha_bar(alphas_cumprod: torch.Tensor, t: float) -> float:
    """ᾱ at a (possibly fractional) timestep, linearly interpolated."""
    table = alphas_cumprod.detach().float().cpu()
    lo = min(math.floor(t), len(table) - 1)
    hi = min(lo + 1, len(table) - 1)
    frac = t - lo
    return float(table[lo] * (1 - frac) + table[hi] * frac)


def _noised(z: torch.Tensor, t: float, alphas_cumprod: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """z brought to noise level t: √ᾱ·z + √(1-ᾱ)·ε, ε from the seeded generator."""
    ab = _alpha_bar(alphas_cumprod, t)
    eps = torch.randn(z.shape, generator=generator, dtype=torch.float32).to(z.device, z.dtype)
    return math.sqrt(ab) * z + math.sqrt(1.0 - ab) * eps


def _record(host: VxaHost, layout: UNetLayout, layers: list[AttentionInfo], positions, x, t: float, cond):
    recorder = _PickedColumns(layers, positions)
    timesteps = torch.full((x.shape[0],), float(t), device=x.device)
    with Probe(host.unet, [recorder], layout=layout) as probe:
        probe.tracker.denoiser_call(pass_index=0, step=1, schedule_step=0, rows=cfg_rows([1], 0))
        host.run_unet(x, timesteps, cond)
    out: dict[str, torch.Tensor] = {}
    for info in layers:
        key = Key(0, 0, 1, info.label, "qk")
        if key not in probe.capture:
            msg = (
                f"no attention was recorded for {info.label}: its queries did not match its feature map — turn "
                "off token merging and Hypertile for VXA"
            )
            raise DumpUnetError(msg)
        out[info.label] = probe.capture[key].float()
    return out
