"""Settings of one embedding estimate: the typed record behind the "Embedding Estimate" tab, the CLI and the API.

The fields follow the original extension's controls where they work, with the broken ones left out: optimisers are
those of `torch.optim` that take one dense tensor and a learning rate (no LBFGS, SparseAdam; Lion and Prodigy are not
installed with the webui), losses are the regression losses that compare two tensors of one shape, and the learning
rate schedule is constant or cosine (the original built schedulers without their required arguments). Values from
the UI are checked by `from_values`, with messages that name the control.
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

from lib_dumpunet.errors import DumpUnetError
from lib_dumpunet.estimate.files import check_name

__all__ = [
    "FILE_FORMATS",
    "LOSSES",
    "MAX_PROMPT_LENGTH",
    "MAX_VECTORS",
    "MODES",
    "OPTIMIZERS",
    "SAMPLERS",
    "SCHEDULES",
    "TARGETS",
    "VECTOR_SOURCES",
    "EstimateSettings",
    "from_values",
]

Target = Literal["Prompts", "Negative_Prompts"]
Mode = Literal["Transformer", "U-NET"]
VectorSource = Literal["init text", "tokens"]
FileFormat = Literal["safetensors", "pt"]
Optimizer = Literal["Adam", "AdamW", "NAdam", "RAdam", "Adamax", "Adagrad", "RMSprop", "SGD"]
Loss = Literal["MSE", "L1", "Smooth L1", "Huber", "Cosine"]
Schedule = Literal["Constant", "Cosine"]
Sampler = Literal["Euler", "Euler a"]

TARGETS: tuple[str, ...] = typing.get_args(Target)
MODES: tuple[str, ...] = typing.get_args(Mode)
VECTOR_SOURCES: tuple[str, ...] = typing.get_args(VectorSource)
FILE_FORMATS: tuple[str, ...] = typing.get_args(FileFormat)
OPTIMIZERS: tuple[str, ...] = typing.get_args(Optimizer)
LOSSES: tuple[str, ...] = typing.get_args(Loss)
SCHEDULES: tuple[str, ...] = typing.get_args(Schedule)
SAMPLERS: tuple[str, ...] = typing.get_args(Sampler)

MAX_VECTORS = 75  # one chunk
MAX_ITERATIONS = 100_000
MAX_STEPS = 150
MAX_PROMPT_LENGTH = 10_000


@dataclass(frozen=True)
class EstimateSettings:
    """One estimate. `target` says which prompt the embedding replaces: "Prompts" puts it in the prompt (the
    negative prompt stays as written), "Negative_Prompts" in the negative prompt."""

    target: Target = "Prompts"
    prompt: str = ""
    negative_prompt: str = ""
    mode: Mode = "Transformer"
    tokens: int = 1  # embedding vectors, unless taken from the init text
    vectors_from: VectorSource = "init text"
    init_text: str = ""  # blank: random vectors at the token table's scale
    learning_rate: float = 0.005
    optimizer: Optimizer = "Adam"
    loss: Loss = "MSE"
    schedule: Schedule = "Constant"
    iterations: int = 100
    all_rows: bool = False  # Transformer: match every row of the chunk, not only the embedding's rows
    steps: int = 20  # U-NET: sampling steps of the reference trajectory
    cfg_scale: float = 7.0
    sampler: Sampler = "Euler"
    seed: int = 0
    name: str = ""
    overwrite: bool = False
    file_format: FileFormat = "safetensors"

    @property
    def target_prompt(self) -> str:
        return self.prompt if self.target == "Prompts" else self.negative_prompt

    @property
    def other_prompt(self) -> str:
        return self.negative_prompt if self.target == "Prompts" else self.prompt

    def validate(self) -> EstimateSettings:
        """Check everything that does not need the model; returns self."""
        check_name(self.name)
        if not self.target_prompt.strip():
            which = "prompt" if self.target == "Prompts" else "negative prompt"
            raise DumpUnetError(f"The {which} to estimate is empty: write it, or change 'Training type'.")
        if self.vectors_from == "tokens" or not self.init_text.strip():
            _check_range("tokens", self.tokens, 1, MAX_VECTORS)
        _check_range("Learning steps", self.iterations, 1, MAX_ITERATIONS)
        if not (math.isfinite(self.learning_rate) and 0 < self.learning_rate <= 1):
            raise DumpUnetError(f"Learning rate must be above 0 and at most 1, not {self.learning_rate}.")
        if self.mode == "U-NET":
            _check_range("Steps", self.steps, 1, MAX_STEPS)
            if not (math.isfinite(self.cfg_scale) and 0 <= self.cfg_scale <= 50):
                raise DumpUnetError(f"cfg_scale must be between 0 and 50, not {self.cfg_scale}.")
        return self


def _check_range(label: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise DumpUnetError(f"{label} must be between {low} and {high}, not {value}.")


def _coerce(name: str, annotation: Any, value: Any) -> Any:
    choices = typing.get_args(annotation) if typing.get_origin(annotation) is Literal else None
    if choices is not None:
        if value not in choices:
            raise DumpUnetError(f"{name}: '{value}' is not one of {', '.join(map(str, choices))}.")
        return value
    kind = annotation
    if kind is str:
        if not isinstance(value, str):
            raise DumpUnetError(f"{name} must be text.")
        if len(value) > MAX_PROMPT_LENGTH:
            raise DumpUnetError(f"{name} is longer than {MAX_PROMPT_LENGTH} characters.")
        return value
    if kind is bool:
        return bool(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DumpUnetError(f"{name} must be a number, not {value!r}.") from None
    if not math.isfinite(number):
        raise DumpUnetError(f"{name} must be a finite number.")
    if kind is int:
        if number != int(number):
            raise DumpUnetError(f"{name} must be a whole number, not {value}.")
        return int(number)
    return number


def from_values(**values: Any) -> EstimateSettings:
    """A validated record from keyword values (UI, API, CLI); unknown keys are an error."""
    hints = typing.get_type_hints(EstimateSettings)
    known = {f.name for f in fields(EstimateSettings)}
    unknown = set(values) - known
    if unknown:
        raise DumpUnetError(f"Unknown estimate setting(s): {', '.join(sorted(unknown))}.")
    coerced = {key: _coerce(key, hints[key], value) for key, value in values.items()}
    return replace(EstimateSettings(), **coerced).validate()
