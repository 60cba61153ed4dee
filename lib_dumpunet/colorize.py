"""Turning stacks of 2-D maps (feature channels, attention maps, difference maps) into 8-bit images.

One settings record, `ColorSettings`, holds the "Colorization" controls with the original extension's defaults;
`Colorizer.from_settings` checks it (bad choices, numbers and colour expressions raise `DumpUnetError` before any
image is generated) and returns a callable that colours a whole (N, h, w) stack at once:

1. value transform — Auto [0,1], Auto [-1,1], Linear(clamp min, clamp max) or Sigmoid(gain, offset), with min and
   max taken per map ("tile", as the original did) or over the whole stack ("block", so maps can be compared);
   White/Black uses the absolute-value variants. Auto leaves a map unchanged when its min equals its max;
2. colour method — White/Black (grey = v), Red/Blue (positive red, negative blue) or Custom (three expressions in v,
   as RGB or as HSL with `colorsys.hls_to_rgb` semantics);
3. pixels — `uint8(clip(value * 256, 0, 255))`, truncating as the original did, so 1.0 → 255 and 0.5 → 128.

v is clipped into [-1, 1] before it is coloured, and a colour depends on v alone, so every method is a lookup
table: Custom expressions are evaluated once on `LUT_SAMPLES` evenly spaced v (nearest sample is used), White/Black
and Red/Blue are tabulated exactly by their 8-bit level. NaN values become black and never raise. `average_map`
computes the "Show averaged map" image. Formulas: reference/dumpunet-spec.md §4.1–4.3 and §4.5.

For images, a colour table is also quantised once into a 256-entry palette (`Colorizer.indexed`, mode "P"): 16 greys
first (black for gaps and NaN, white for marks, the greys between for the edges of label text), then at most 240
colours, each standing for a contiguous stretch of the table chosen so that the largest error on any channel is as
small as it can be (0 when the table has at most 240 runs of colour; 1 level for Red/Blue, 2 for the default hue
sweep (2+v)/3, 4 for the attention tab's (2-2*v)/3); table entries that are exactly one of the greys keep it, so gaps
and NaN stay exactly black. A palette image is a third of RGB's bytes and PNG-encodes several times faster.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import torch

from lib_dumpunet.errors import DumpUnetError
from lib_dumpunet.expr import Expression, compile_expression

__all__ = [
    "AVERAGES",
    "GREYS",
    "LABELS",
    "LUT_SAMPLES",
    "METHODS",
    "NORMALIZE",
    "SPACES",
    "TRANSFORMS",
    "Average",
    "ColorSettings",
    "Colorizer",
    "Method",
    "Normalize",
    "Space",
    "Transform",
    "average_map",
    "hls_to_rgb",
]

Method = Literal["White/Black", "Red/Blue", "Custom"]
Transform = Literal["Auto [0,1]", "Auto [-1,1]", "Linear", "Sigmoid"]
Space = Literal["RGB", "HSL"]
Normalize = Literal["tile", "block"]
Average = Literal["sum", "1-norm", "2-norm"]

METHODS: tuple[Method, ...] = get_args(Method)
TRANSFORMS: tuple[Transform, ...] = get_args(Transform)
SPACES: tuple[Space, ...] = get_args(Space)
NORMALIZE: tuple[Normalize, ...] = get_args(Normalize)
AVERAGES: tuple[Average, ...] = get_args(Average)

# Evenly spaced values of v in [-1, 1] at which Custom colours are tabulated (a step of 1/32768).
LUT_SAMPLES = 65537
_HALF = (LUT_SAMPLES - 1) // 2
# How many values are transformed and coloured at a time (a few maps): 256 KiB of float32.
_CHUNK = 1 << 16
# Palette images: the first GREYS entries are evenly spaced greys (0 = black, GREYS - 1 = white); the colours follow.
GREYS = 16
_GREY_STEP = 255 // (GREYS - 1)  # 17: the greys are 0, 17, 34 … 255
_PALETTE_COLOURS = 256 - GREYS


@dataclass(frozen=True)
class ColorSettings:
    """The "Colorization" controls of one output tab, with the original extension's defaults."""

    method: Method = "Custom"
    transform: Transform = "Auto [0,1]"
    clamp_min: float = -1.0  # Linear
    clamp_max: float = 1.0  # Linear
    gain: float = 1.0  # Sigmoid
    offset: float = 0.0  # Sigmoid
    space: Space = "HSL"  # Custom
    r: str = "abs(v)"
    g: str = "abs(v)"
    b: str = "abs(v)"
    h: str = "(2+v)/3"
    s: str = "1.0"
    l: str = "0.5"  # noqa: E741 -- the L of HSL
    normalize: Normalize = "tile"


# The UI label of every settings field: error messages name the control the user has to change.
LABELS: dict[str, str] = {
    "method": "Colorize method",
    "transform": "Value transform",
    "clamp_min": "Clamp min.",
    "clamp_max": "Clamp max.",
    "gain": "gain",
    "offset": "offset X",
    "space": "Color space",
    "r": "R",
    "g": "G",
    "b": "B",
    "h": "H",
    "s": "S",
    "l": "L",
    "normalize": "Normalization",
}


@dataclass(frozen=True)
class _Palette:
    """A colour lookup table; its last entry is black and is where NaN values go.

    `levels=True`: indexed by the signed 8-bit level trunc(clip(v·256, −255, 255)) + 255 (511 entries + black), which
    reproduces the original's truncation exactly. `levels=False`: indexed by the nearest of `LUT_SAMPLES` samples of
    v in [−1, 1]. `table` is uint8 (mode L) or uint32 RGBX pixels (mode RGB: bytes R, G, B, 0 in memory) so one
    `take` gathers whole pixels, and PIL can read them as raw "RGBX".
    """

    table: np.ndarray
    mode: Literal["L", "RGB"]
    levels: bool

    def positions(self, v: np.ndarray) -> np.ndarray:
        """The table entry of each transformed value v (float32 (n, h, w), overwritten), as int32."""
        nan = np.isnan(v)
        if self.levels:
            v *= 256.0
            np.clip(v, -255.0, 255.0, out=v)
            np.trunc(v, out=v)
            v += 255.0
        else:
            np.clip(v, -1.0, 1.0, out=v)
            v *= float(_HALF)
            v += _HALF + 0.5  # truncating the non-negative index below then rounds to the nearest sample
        if nan.any():
            v[nan] = len(self.table) - 1  # the black entry
        return v.astype(np.int32)

    def fill(self, v: np.ndarray, out: np.ndarray, *, indexed: bool = False) -> None:
        """Colour transformed values v (float32 (n, h, w), overwritten) into `out` ((n, h, w) of `table`'s dtype, or
        uint8 palette indices when `indexed`)."""
        table = self.indices if indexed else self.table
        # Every index is in range; mode="clip" only spares `take` from buffering `out`.
        table.take(self.positions(v), out=out, mode="clip")

    @functools.cached_property
    def quantised(self) -> tuple[np.ndarray, np.ndarray]:
        """(palette indices per table entry (uint8), the 256 palette colours (uint8 (256, 3))), made on first use."""
        if self.mode == "L":
            return self.table, np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)
        rgb = self.table.view(np.uint8).reshape(-1, 4)[:, :3]
        return _quantise(rgb[:-1])  # the NaN entry is appended as black below

    @property
    def indices(self) -> np.ndarray:
        return self.quantised[0]


@dataclass(frozen=True)
class Colorizer:
    """Colours stacks of 2-D maps according to one `ColorSettings`; build it with `Colorizer.from_settings`."""

    settings: ColorSettings
    mode: Literal["L", "RGB"]
    _palette: _Palette = dataclasses.field(repr=False, compare=False)

    @classmethod
    def from_settings(cls, settings: ColorSettings, *, field_prefix: str = "") -> Colorizer:
        """Check `settings` and tabulate its colours; raise `DumpUnetError` naming the control to fix.

        `field_prefix` is put verbatim before each control's label in messages (e.g. "U-Net features: ").
        Only the expressions the chosen method and colour space use are compiled.
        """
        _check(settings, field_prefix)
        if settings.method == "White/Black":
            return cls(settings, "L", _palette(_white_black_levels(), levels=True))
        if settings.method == "Red/Blue":
            return cls(settings, "RGB", _palette(_red_blue_levels(), levels=True))
        names = ("r", "g", "b") if settings.space == "RGB" else ("h", "s", "l")
        exprs = [compile_expression(getattr(settings, n), field=field_prefix + LABELS[n]) for n in names]
        return cls(settings, "RGB", _custom_palette(settings.space, *exprs))

    def transform(self, maps: np.ndarray | torch.Tensor) -> np.ndarray:
        """The value transform alone: float32 v (N, h, w) for maps (N, h, w), before v is clipped to [-1, 1]."""
        x = _as_maps(maps)
        if x.size == 0:
            return np.zeros(x.shape, dtype=np.float32)
        with np.errstate(all="ignore"):
            return _transform(x, self.settings, *_ranges(x, self.settings))

    def __call__(self, maps: np.ndarray | torch.Tensor) -> np.ndarray:
        """Colour maps (N, h, w) (numpy or torch, any float dtype): uint8 (N, h, w) in mode L, else (N, h, w, 3)."""
        out = self.packed(maps)
        if self.mode == "L":
            return out
        return np.ascontiguousarray(out.view(np.uint8).reshape(*out.shape, 4)[..., :3])

    @property
    def image_mode(self) -> Literal["L", "P"]:
        """The PIL mode of `indexed` pixels: "L" (grey levels) or "P" (indices into `palette`)."""
        return "L" if self.mode == "L" else "P"

    @property
    def palette(self) -> np.ndarray:
        """The 256 colours (uint8 (256, 3)) that `indexed` values of mode P stand for; greys first (see `GREYS`)."""
        return self._palette.quantised[1]

    @property
    def white(self) -> int:
        """The `indexed` value of white (query-point marks)."""
        return 255 if self.mode == "L" else GREYS - 1

    def indexed(self, maps: np.ndarray | torch.Tensor, *, out: np.ndarray | None = None) -> np.ndarray:
        """Colour maps (N, h, w) into uint8 (N, h, w): grey levels (mode L), or indices into `palette` (mode RGB),
        whose colours differ from `packed`'s by at most `max_palette_error` per channel. `out` as in `packed`."""
        return self._colour(maps, out, indexed=True)

    @property
    def max_palette_error(self) -> int:
        """The largest difference, on any channel, between a palette colour and the exact colour it stands for."""
        if self.mode == "L":
            return 0
        indices, colours = self._palette.quantised
        rgb = self._palette.table.view(np.uint8).reshape(-1, 4)[:, :3].astype(np.int16)
        return int(np.abs(colours[indices].astype(np.int16) - rgb).max())

    @property
    def dtype(self) -> np.dtype:
        """What `packed` returns: uint8 (mode L) or uint32 (mode RGB)."""
        return self._palette.table.dtype

    def packed(self, maps: np.ndarray | torch.Tensor, *, out: np.ndarray | None = None) -> np.ndarray:
        """Colour maps (N, h, w) into uint8 (N, h, w) in mode L, or one uint32 RGBX pixel each in mode RGB (the
        fastest form: PIL reads it as raw "RGBX"; see `render`). `out`: a C-contiguous (N, h, w) array of `dtype`
        to write into, every element of which is overwritten."""
        return self._colour(maps, out, indexed=False)

    def _colour(self, maps: np.ndarray | torch.Tensor, out: np.ndarray | None, *, indexed: bool) -> np.ndarray:
        x = _as_maps(maps)
        dtype = np.dtype(np.uint8) if indexed else self.dtype
        if out is None:
            out = np.zeros(x.shape, dtype=dtype)
        elif out.shape != x.shape or out.dtype != dtype:
            raise ValueError(f"out must be {x.shape} {dtype}, got {out.shape} {out.dtype}")
        if x.size:
            with np.errstate(all="ignore"):
                lo, hi = _ranges(x, self.settings)
                # A few maps at a time: the temporaries stay in cache and are reused instead of faulted in afresh.
                step = max(1, _CHUNK // (x.shape[1] * x.shape[2]))
                for start in range(0, x.shape[0], step):
                    maps_ = slice(start, start + step)
                    v = _transform(x[maps_], self.settings, _rows(lo, maps_), _rows(hi, maps_))
                    self._palette.fill(v, out[maps_], indexed=indexed)
        return out


def average_map(x: np.ndarray | torch.Tensor, how: Average) -> np.ndarray:
    """The "Show averaged map" image of a (C, h, w) stack, float32 (h, w), as the original computed it.

    "sum" is the mean over channels (despite its name), "1-norm" is Σ|v|/C, "2-norm" is sqrt(Σv²)/C (not RMS).
    """
    arr = _as_maps(x)
    channels = arr.shape[0]
    if channels == 0:
        raise ValueError("average_map needs at least one channel")
    if how == "sum":
        result = arr.mean(axis=0, dtype=np.float64)
    elif how == "1-norm":
        result = np.abs(arr).sum(axis=0, dtype=np.float64) / channels
    elif how == "2-norm":
        result = np.sqrt(np.square(arr, dtype=np.float64).sum(axis=0)) / channels
    else:
        raise DumpUnetError(f"Show averaged map: unknown choice {how!r}; choose one of {', '.join(AVERAGES)}")
    return result.astype(np.float32)


def hls_to_rgb(h: np.ndarray, l: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # noqa: E741
    """`colorsys.hls_to_rgb` on whole arrays (broadcast together, float64); the hue wraps modulo 1."""
    h, l, s = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (h, l, s)))  # noqa: E741
    with np.errstate(all="ignore"):
        m2 = np.where(l <= 0.5, l * (1.0 + s), l + s - (l * s))
        m1 = 2.0 * l - m2
        channels = (_hue_ramp(m1, m2, h + 1.0 / 3.0), _hue_ramp(m1, m2, h), _hue_ramp(m1, m2, h - 1.0 / 3.0))
        grey = s == 0.0
        r, g, b = (np.where(grey, l, c) for c in channels)
    return r, g, b


def _hue_ramp(m1: np.ndarray, m2: np.ndarray, hue: np.ndarray) -> np.ndarray:
    hue = np.mod(hue, 1.0)
    return np.select(
        [hue < 1.0 / 6.0, hue < 0.5, hue < 2.0 / 3.0],
        [m1 + (m2 - m1) * hue * 6.0, m2, m1 + (m2 - m1) * (2.0 / 3.0 - hue) * 6.0],
        default=m1,
    )


# --- checking ----------------------------------------------------------------------------------------------------


def _check(settings: ColorSettings, prefix: str) -> None:
    for name, choices in (("method", METHODS), ("transform", TRANSFORMS), ("space", SPACES), ("normalize", NORMALIZE)):
        value = getattr(settings, name)
        if value not in choices:
            raise DumpUnetError(
                f"{prefix}{LABELS[name]}: unknown choice {value!r}; choose one of {', '.join(map(repr, choices))}"
            )
    numbers = {name: _number(settings, name, prefix) for name in ("clamp_min", "clamp_max", "gain", "offset")}
    if numbers["clamp_min"] >= numbers["clamp_max"]:
        raise DumpUnetError(
            f"{prefix}{LABELS['clamp_min']} ({numbers['clamp_min']:g}) must be smaller than "
            f"{LABELS['clamp_max']} ({numbers['clamp_max']:g})"
        )
    if numbers["gain"] <= 0:
        raise DumpUnetError(f"{prefix}{LABELS['gain']} must be greater than 0, got {numbers['gain']:g}")


def _number(settings: ColorSettings, name: str, prefix: str) -> float:
    value = getattr(settings, name)
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise DumpUnetError(f"{prefix}{LABELS[name]}: expected a number, got {value!r}")
    if not math.isfinite(value):
        raise DumpUnetError(f"{prefix}{LABELS[name]}: expected a finite number, got {value!r}")
    return float(value)


# --- value transforms --------------------------------------------------------------------------------------------


def _as_maps(maps: np.ndarray | torch.Tensor) -> np.ndarray:
    """float32 (N, h, w) numpy view or copy of `maps`; the caller's data is never written to."""
    if isinstance(maps, torch.Tensor):
        maps = maps.detach().to(device="cpu", dtype=torch.float32).numpy()
    arr = np.asarray(maps, dtype=np.float32)
    if arr.ndim != 3:
        raise ValueError(f"expected a stack of 2-D maps shaped (N, h, w), got shape {tuple(arr.shape)}")
    return arr


def _ranges(x: np.ndarray, settings: ColorSettings) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The min and max the Auto transforms scale by (None for the other transforms)."""
    if settings.transform in ("Auto [0,1]", "Auto [-1,1]"):
        return _min_max(x, settings.normalize)
    return None, None


def _min_max(x: np.ndarray, normalize: Normalize) -> tuple[np.ndarray, np.ndarray]:
    """NaN-ignoring min and max of each map ("tile", shape (N, 1, 1)) or of the whole stack ("block", (1, 1, 1)).

    A map with no number at all gets min +inf and max −inf.
    """
    flat = x.reshape(x.shape[0] if normalize == "tile" else 1, -1)
    lo, hi = flat.min(axis=1), flat.max(axis=1)
    if np.isnan(lo).any() or np.isnan(hi).any():  # a NaN poisons min/max; only then pay for masking it out
        nan = np.isnan(flat)
        lo = np.where(nan, np.float32(np.inf), flat).min(axis=1)
        hi = np.where(nan, np.float32(-np.inf), flat).max(axis=1)
    return lo.reshape(-1, 1, 1), hi.reshape(-1, 1, 1)


def _rows(stat: np.ndarray | None, maps: slice) -> np.ndarray | None:
    """The per-map statistics of `maps`; a whole-stack statistic applies to every map."""
    return stat if stat is None or stat.shape[0] == 1 else stat[maps]


def _transform(x: np.ndarray, settings: ColorSettings, lo: np.ndarray | None, hi: np.ndarray | None) -> np.ndarray:
    """v = transform(x) for maps x (n, h, w) as a new float32 array; x is only read.

    `lo`/`hi` are the min and max of the Auto transforms, shaped to broadcast against x (see `_ranges`).
    """
    white_black = settings.method == "White/Black"
    if lo is not None and hi is not None:
        return _auto(x, lo, hi, symmetric=settings.transform == "Auto [-1,1]")
    if settings.transform == "Linear":
        low, high = float(settings.clamp_min), float(settings.clamp_max)
        v = np.clip(x, low, high)
        if white_black:  # (|clamp(x)| − X)/(Y − X), X = 0 if the signs differ else min(|lo|, |hi|), Y = max(…)
            top = max(abs(low), abs(high))
            bottom = 0.0 if _sign(low) != _sign(high) else min(abs(low), abs(high))
            np.abs(v, out=v)
            v -= bottom
            v /= top - bottom
        else:  # 2·((clamp(x) − lo)/(hi − lo) − 0.5), computed as (clamp(x) − lo)/((hi − lo)/2) − 1: the same floats
            v -= low
            v /= (high - low) / 2.0
            v -= 1.0
        return v
    # Sigmoid: s = 1/(1 + exp(−gain·(x + offset))); 2·|s − 0.5| for White/Black, else 2·(s − 0.5)
    v = np.add(x, float(settings.offset), dtype=np.float32)
    v *= -float(settings.gain)
    np.exp(v, out=v)
    v += 1.0
    np.reciprocal(v, out=v)
    v -= 0.5
    if white_black:
        np.abs(v, out=v)
    v *= 2.0
    return v


def _auto(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, *, symmetric: bool) -> np.ndarray:
    """(x − min)/(max − min), or 2·(that − 0.5); a map whose min equals its max (or has no number) is left as is."""
    span = hi - lo
    if symmetric:  # 2·(t − 0.5) is computed as (x − min)/((max − min)/2) − 1, which rounds to the same floats
        span = span / 2
    scaled = span > 0  # False for constant maps and for maps with no number
    shift = np.where(scaled, lo, np.float32(0))
    divisor = np.where(scaled, span, np.float32(1))
    v = np.subtract(x, shift, dtype=np.float32)
    v /= divisor
    if symmetric:
        v -= scaled.astype(np.float32)
    return v


def _sign(value: float) -> int:
    return (value > 0) - (value < 0)


# --- palettes ----------------------------------------------------------------------------------------------------


def _pixels(values: np.ndarray) -> np.ndarray:
    """The original's pixel rule, uint8(clip(value·256, 0, 255)), with NaN → 0."""
    with np.errstate(all="ignore"):
        scaled = np.nan_to_num(np.asarray(values, dtype=np.float64) * 256.0, nan=0.0, posinf=255.0, neginf=0.0)
    return np.clip(scaled, 0.0, 255.0).astype(np.uint8)


def _level_values() -> np.ndarray:
    """The signed 8-bit levels −255…255 that `_Palette(levels=True)` indexes."""
    return np.arange(-255, 256, dtype=np.int64)


def _white_black_levels() -> np.ndarray:
    return np.maximum(_level_values(), 0).astype(np.uint8)


def _red_blue_levels() -> np.ndarray:
    q = _level_values()
    return np.stack([np.maximum(q, 0), np.zeros_like(q), np.maximum(-q, 0)], axis=-1).astype(np.uint8)


def _custom_palette(space: Space, first: Expression, second: Expression, third: Expression) -> _Palette:
    v = np.linspace(-1.0, 1.0, LUT_SAMPLES)
    # RGB: R, G, B expressions; HSL: H, S, L expressions, which colorsys takes in the order h, l, s.
    rgb = (first(v), second(v), third(v)) if space == "RGB" else hls_to_rgb(first(v), third(v), second(v))
    return _palette(np.stack([_pixels(c) for c in rgb], axis=-1), levels=False)


def _palette(colours: np.ndarray, *, levels: bool) -> _Palette:
    """Append the black NaN entry; pack RGB triples into 4-byte RGBX pixels so `take` moves whole pixels."""
    black = np.zeros((1, *colours.shape[1:]), dtype=np.uint8)
    table = np.ascontiguousarray(np.concatenate([colours, black]))
    if table.ndim == 1:
        return _Palette(table, "L", levels)
    rgbx = np.zeros((len(table), 4), dtype=np.uint8)
    rgbx[:, :3] = table
    return _Palette(rgbx.view(np.uint32).reshape(-1), "RGB", levels)


# --- palette images ----------------------------------------------------------------------------------------------


def _quantise(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Palette indices for a colour table rgb (n, 3) with a black NaN entry appended, and the 256 palette colours.

    Runs of equal neighbouring entries are merged, then cut into the fewest contiguous stretches whose channels each
    span at most 2·e levels, for the smallest e that needs no more than 240 stretches; a stretch is shown as the
    middle of its span, so no channel is off by more than e.
    """
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[:GREYS] = np.arange(GREYS, dtype=np.uint8)[:, None] * _GREY_STEP
    starts = np.flatnonzero(np.concatenate([[True], (rgb[1:] != rgb[:-1]).any(axis=1)]))
    runs = rgb[starts].astype(np.int16)
    rows = runs.tolist()
    low, high = 0, 128  # the error e: high always fits (one stretch spans at most 255 levels)
    best = _stretches(rows, high)
    while low < high:
        middle = (low + high) // 2
        cut = _stretches(rows, middle)
        if len(cut) <= _PALETTE_COLOURS:
            high, best = middle, cut
        else:
            low = middle + 1
    bounds = [*best, len(runs)]
    run_colour = np.empty(len(runs), dtype=np.int64)
    for k, (a, b) in enumerate(itertools.pairwise(bounds)):
        stretch = runs[a:b]
        palette[GREYS + k] = (stretch.min(axis=0) + stretch.max(axis=0) + 1) // 2
        run_colour[a:b] = GREYS + k
    per_entry = np.repeat(run_colour, np.diff([*starts, len(rgb)]))
    # Table entries that are exactly one of the greys (black, white …) are shown as that grey, with no error.
    grey = (rgb[:, 0] == rgb[:, 1]) & (rgb[:, 1] == rgb[:, 2]) & (rgb[:, 0].astype(np.int64) % _GREY_STEP == 0)
    per_entry[grey] = rgb[grey, 0] // _GREY_STEP
    return np.concatenate([per_entry, [0]]).astype(np.uint8), palette


def _stretches(rows: list[list[int]], error: int) -> list[int]:
    """Where each stretch of `rows` (the runs' colours) starts, cut greedily at a span of 2·error: the fewest."""
    starts = [0]
    limit = 2 * error
    r_lo, g_lo, b_lo = r_hi, g_hi, b_hi = rows[0]
    for k, (r, g, b) in enumerate(rows):
        r_lo, r_hi = min(r_lo, r), max(r_hi, r)
        g_lo, g_hi = min(g_lo, g), max(g_hi, g)
        b_lo, b_hi = min(b_lo, b), max(b_hi, b)
        if r_hi - r_lo > limit or g_hi - g_lo > limit or b_hi - b_lo > limit:
            starts.append(k)
            if len(starts) > _PALETTE_COLOURS:
                return starts  # too many already: this error does not fit
            r_lo, g_lo, b_lo = r_hi, g_hi, b_hi = r, g, b
    return starts
