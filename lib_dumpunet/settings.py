"""The job's settings: one typed record per feature, and the one field list everything else derives from.

`JobSettings` groups the four tabs of the original UI — U-Net features, Attention, Layer Prompt, Settings — each a
frozen dataclass with the original's defaults. `FIELDS` flattens them, in declaration order, into dotted paths
("features.layers", "attention.colors.gain" …): the webui UI returns its components in exactly this order, the API
accepts values in this order (or a dict keyed by these paths), and the infotext stores the non-default ones.
Values arriving from the UI or the API are checked here (types, choices, finite numbers, the length of every text:
`text_limit`) with messages naming the setting; what needs the model (block names, steps) is checked when the job is
built.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from lib_dumpunet.colorize import ColorSettings
from lib_dumpunet.errors import DumpUnetError
from lib_dumpunet.expr import MAX_LENGTH as MAX_EXPRESSION_LENGTH
from lib_dumpunet.heatmap import HeatmapSettings
from lib_dumpunet.paths import MAX_FOLDER_LENGTH
from lib_dumpunet.prompt_view import PromptViewSettings
from lib_dumpunet.specs import MAX_POINTS_LENGTH, MAX_SPEC_LENGTH
from lib_dumpunet.tokens import MAX_PICK_LENGTH

__all__ = [
    "ATTENTION_OUTPUTS",
    "AVERAGE_CHOICES",
    "FIELDS",
    "LATENT_DECODERS",
    "AttentionSettings",
    "DumpSettings",
    "FeatureSettings",
    "Field",
    "JobSettings",
    "LayerPromptSettings",
    "OutputSettings",
    "changed_values",
    "check_value",
    "from_mapping",
    "from_values",
    "get",
    "text_limit",
]

AverageChoice = Literal["disable", "sum", "1-norm", "2-norm"]
AttentionOutput = Literal["K", "Q*K", "V*Q*K"]
DumpFormatChoice = Literal["npy", "legacy"]
LatentDecoderChoice = Literal["approx", "vae"]
AVERAGE_CHOICES: tuple[str, ...] = typing.get_args(AverageChoice)
ATTENTION_OUTPUTS: tuple[str, ...] = typing.get_args(AttentionOutput)
LATENT_DECODERS: tuple[str, ...] = typing.get_args(LatentDecoderChoice)


@dataclass(frozen=True)
class DumpSettings:
    """ "Dump Setting": raw tensors to files."""

    enabled: bool = False
    folder: str = ""
    format: DumpFormatChoice = "npy"


@dataclass(frozen=True)
class FeatureSettings:
    """Tab "U-Net features": block outputs as channel grids."""

    enabled: bool = False
    layers: str = ""
    steps: str = ""
    average: AverageChoice = "disable"
    colors: ColorSettings = field(default_factory=ColorSettings)
    dump: DumpSettings = field(default_factory=DumpSettings)
    # How the `latent` and `x0` views become RGB: the cheap linear approximation, or the model's VAE (slow on CPU).
    latent_decoder: LatentDecoderChoice = "approx"


@dataclass(frozen=True)
class AttentionSettings:
    """Tab "Attention": cross-attention K, Q*K, V*Q*K, and self-attention query maps."""

    enabled: bool = False
    layers: str = ""
    steps: str = ""
    average: AverageChoice = "disable"
    outputs: tuple[AttentionOutput, ...] = ()
    token_labels: bool = True
    self_attention: bool = False
    query_points: str = "4x4"
    colors: ColorSettings = field(default_factory=ColorSettings)
    dump: DumpSettings = field(default_factory=DumpSettings)


@dataclass(frozen=True)
class LayerPromptSettings:
    """Tab "Layer Prompt": the (~: … :~) syntax, and difference maps of features with and without it."""

    enabled: bool = False
    diff: bool = False
    layers: str = ""
    steps: str = ""
    average: AverageChoice = "disable"
    colors: ColorSettings = field(default_factory=ColorSettings)
    dump: DumpSettings = field(default_factory=DumpSettings)


@dataclass(frozen=True)
class OutputSettings:
    """Tab "Settings"."""

    save_images: bool = False
    save_path: str = ""
    uncond: bool = False  # also capture the uncond (negative prompt) rows
    fp16: bool = False  # keep captured tensors as fp16 (half the memory)
    debug: bool = False  # "log to stderr"
    # Gallery maps whose longer side is shorter than this are enlarged (nearest, whole factors); 0 = never.
    display_min: int = 256


@dataclass(frozen=True)
class JobSettings:
    features: FeatureSettings = field(default_factory=FeatureSettings)
    attention: AttentionSettings = field(default_factory=AttentionSettings)
    layer_prompt: LayerPromptSettings = field(default_factory=LayerPromptSettings)
    output: OutputSettings = field(default_factory=OutputSettings)
    heatmap: HeatmapSettings = field(default_factory=HeatmapSettings)  # the fifth tab, "Word heat maps"
    prompt_tensor: PromptViewSettings = field(default_factory=PromptViewSettings)  # Attention tab › Prompt tensor

    @property
    def active(self) -> bool:
        tabs = (self.features, self.attention, self.layer_prompt, self.heatmap, self.prompt_tensor)
        return any(tab.enabled for tab in tabs)


@dataclass(frozen=True)
class Field:
    """One leaf setting: its dotted path, type and default."""

    path: str
    type: Any
    default: Any

    @property
    def choices(self) -> tuple[Any, ...] | None:
        inner = typing.get_args(self.type)[0] if typing.get_origin(self.type) is tuple else self.type
        return typing.get_args(inner) if typing.get_origin(inner) is Literal else None


def _fields(cls: type, prefix: str = "") -> list[Field]:
    hints = typing.get_type_hints(cls)
    out: list[Field] = []
    defaults = cls()
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            out += _fields(kind, f"{prefix}{f.name}.")
        else:
            out.append(Field(f"{prefix}{f.name}", kind, getattr(defaults, f.name)))
    return out


FIELDS: tuple[Field, ...] = tuple(_fields(JobSettings))
_BY_PATH = {f.path: f for f in FIELDS}

# The longest text each text setting takes, by the last part of its path; the parser of each applies the same limit.
_TEXT_LIMITS = {
    "layers": MAX_SPEC_LENGTH,
    "steps": MAX_SPEC_LENGTH,
    "query_points": MAX_POINTS_LENGTH,
    "folder": MAX_FOLDER_LENGTH,
    "save_path": MAX_FOLDER_LENGTH,
    "words": MAX_PICK_LENGTH,
    "negative_words": MAX_PICK_LENGTH,
    **dict.fromkeys("rgbhsl", MAX_EXPRESSION_LENGTH),
}


# The largest value of each whole-number setting.
_MAX_INT = {"output.display_min": 4096}


def text_limit(path: str) -> int:
    """The most characters the text setting `path` may hold."""
    limit = _TEXT_LIMITS.get(path.rpartition(".")[2])
    if limit is None:
        msg = f"{path!r} is not a text setting"
        raise KeyError(msg)
    return limit


def check_value(path: str, value: Any) -> Any:
    """`value` as setting `path` holds it, or a DumpUnetError naming the setting (KeyError: no such setting)."""
    return _check(_BY_PATH[path], value)


def _check(f: Field, value: Any) -> Any:
    """`value` as the field's type, or a DumpUnetError naming the field."""

    def bad(expected: str) -> DumpUnetError:
        shown = repr(value)
        shown = shown if len(shown) <= 60 else f"{shown[:60]}…"
        return DumpUnetError(f"setting {f.path!r} must be {expected}, got {shown}")

    choices = f.choices
    if typing.get_origin(f.type) is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise bad(f"a list of some of {choices}")
        unknown = [v for v in value if v not in choices]
        if unknown:
            raise bad(f"a list of some of {choices}")
        return tuple(c for c in choices if c in value)
    if choices is not None:
        if value not in choices:
            raise bad(f"one of {choices}")
        return value
    if f.type is bool:
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if f.type is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise bad("a finite number")
        return float(value)
    if f.type is int:
        whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        if isinstance(value, bool) or not whole or not 0 <= value <= _MAX_INT[f.path]:
            raise bad(f"a whole number from 0 to {_MAX_INT[f.path]}")
        return int(value)
    if f.type is str:
        if value is None:
            return ""
        if not isinstance(value, str):
            raise bad("text")
        limit = text_limit(f.path)
        if len(value) > limit:
            msg = f"setting {f.path!r} is {len(value):,} characters long; at most {limit:,} are allowed — shorten it"
            raise DumpUnetError(msg)
        return value
    msg = f"unsupported setting type {f.type!r}"
    raise TypeError(msg)


def _build(cls: type, values: Mapping[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        path = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(hints[f.name]):
            kwargs[f.name] = _build(hints[f.name], values, f"{path}.")
        elif path in values:
            kwargs[f.name] = _check(_BY_PATH[path], values[path])
    return cls(**kwargs)


def from_values(values: Sequence[Any]) -> JobSettings:
    """Settings from values in `FIELDS` order (what the webui passes a script); missing trailing values default.

    A dict in first place (`[{"features.layers": "IN00-OUT11", …}]`) is read by field path instead, for API
    callers; whatever follows it is ignored (the API replaces this script's whole slice of the argument list with
    what the caller sent, so the arguments of the scripts listed after it follow).
    """
    if values and isinstance(values[0], Mapping):
        return from_mapping(values[0])
    if len(values) > len(FIELDS):
        msg = f"got {len(values)} settings, expected at most {len(FIELDS)}"
        raise DumpUnetError(msg)
    return _build(JobSettings, {f.path: v for f, v in zip(FIELDS, values, strict=False)})


def from_mapping(data: Mapping[str, Any]) -> JobSettings:
    """Settings from a dict keyed by field path ("features.layers"), or nested dicts ({"features": {…}})."""
    flat = _flatten(data)
    unknown = sorted(set(flat) - set(_BY_PATH))
    if unknown:
        msg = f"unknown settings {unknown}; known ones are {[f.path for f in FIELDS]}"
        raise DumpUnetError(msg)
    return _build(JobSettings, flat)


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{path}."))
        else:
            flat[path] = value
    return flat


def get(settings: JobSettings, path: str) -> Any:
    value: Any = settings
    for part in path.split("."):
        value = getattr(value, part)
    return value


def changed_values(settings: JobSettings) -> dict[str, Any]:
    """The fields that differ from their defaults, by path (lists for tuples), for infotext and API echoes."""
    out = {}
    for f in FIELDS:
        value = get(settings, f.path)
        if value != f.default:
            out[f.path] = list(value) if isinstance(value, tuple) else value
    return out
