"""Loading a local diffusers Stable Diffusion folder (SD1.x, SD2.x or SDXL) without ever touching a network.

The folder is what `save_pretrained` writes: `model_index.json` naming each component's library and class, and one
sub-folder per component (unet, vae, text_encoder, tokenizer, scheduler; SDXL adds text_encoder_2, tokenizer_2).
Each component is loaded by its own class with `local_files_only`. The family is told by structure: two text
encoders make SDXL; otherwise a text encoder of more than 768 wide (or a 1024-wide context) is SD2's.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from lib_dumpunet.diffusers.layout import diffusers_layout
from lib_dumpunet.diffusers.text import TextEncoder
from lib_dumpunet.errors import DumpUnetError
from lib_dumpunet.layout import UNetLayout

__all__ = ["SAMPLERS", "Model", "load_model", "make_scheduler"]

log = logging.getLogger(__name__)

Family = Literal["sd1", "sd2", "sdxl"]

# `--sampler` names → diffusers scheduler classes (built from the folder's own scheduler config)
SAMPLERS = {
    "euler": "EulerDiscreteScheduler",
    "euler-a": "EulerAncestralDiscreteScheduler",
    "ddim": "DDIMScheduler",
    "dpm++2m": "DPMSolverMultistepScheduler",
    "heun": "HeunDiscreteScheduler",
    "pndm": "PNDMScheduler",
}


@dataclass
class Model:
    """The components Dump U-Net drives, on one device and in one dtype."""

    folder: Path
    family: Family
    unet: Any
    vae: Any
    text: TextEncoder
    scheduler: Any
    layout: UNetLayout

    @property
    def name(self) -> str:
        return self.folder.name if self.folder.name != "model" else f"{self.folder.parent.name}-model"

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype


def _component(folder: Path, name: str, spec: list) -> Any:
    library, cls_name = spec
    try:
        cls = getattr(importlib.import_module(library), cls_name)
    except (ImportError, AttributeError) as err:
        msg = f"{folder}: component {name} needs {library}.{cls_name}, which cannot be imported ({err})"
        raise DumpUnetError(msg) from err
    if name == "scheduler":
        return cls.from_pretrained(folder, subfolder=name, local_files_only=True)
    if library == "diffusers":  # without `accelerate` diffusers would warn on every load otherwise
        return cls.from_pretrained(folder / name, local_files_only=True, low_cpu_mem_usage=False)
    return cls.from_pretrained(folder / name, local_files_only=True)


def load_model(folder: str | Path, *, device: str = "cpu", dtype: torch.dtype = torch.float32) -> Model:
    """Load a diffusers SD1/SD2/SDXL folder; DumpUnetError says what is missing if it is not one."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    folder = Path(folder).expanduser()
    index_file = folder / "model_index.json"
    if not index_file.is_file():
        msg = f"--model {folder}: no model_index.json there; give a diffusers Stable Diffusion folder (save_pretrained)"
        raise DumpUnetError(msg)
    index = json.loads(index_file.read_text(encoding="utf-8"))
    needed = ["unet", "vae", "text_encoder", "tokenizer", "scheduler"]
    missing = [n for n in needed if not isinstance(index.get(n), list) or index[n][0] is None]
    if missing:
        msg = f"--model {folder}: model_index.json lacks {', '.join(missing)}; this is not a Stable Diffusion folder"
        raise DumpUnetError(msg)
    parts = {
        n: _component(folder, n, index[n]) for n in [*needed, "text_encoder_2", "tokenizer_2"] if _present(index, n)
    }
    for n, part in parts.items():
        if isinstance(part, torch.nn.Module):
            parts[n] = part.to(device=device, dtype=dtype).eval().requires_grad_(False)
    sdxl = "text_encoder_2" in parts
    tokenizers = [parts["tokenizer"], *([parts["tokenizer_2"]] if sdxl else [])]
    encoders = [parts["text_encoder"], *([parts["text_encoder_2"]] if sdxl else [])]
    context = parts["unet"].config.cross_attention_dim
    sd2 = context == 1024 or bool(parts["unet"].config.use_linear_projection)
    family: Family = "sdxl" if sdxl else "sd2" if sd2 else "sd1"
    text = TextEncoder(tokenizers, encoders)
    log.debug("loaded %s (%s) from %s", family, type(parts["unet"]).__name__, folder)
    return Model(folder, family, parts["unet"], parts["vae"], text, parts["scheduler"], diffusers_layout(parts["unet"]))


def _present(index: dict, name: str) -> bool:
    spec = index.get(name)
    return isinstance(spec, list) and spec[0] is not None


def make_scheduler(model: Model, sampler: str | None) -> Any:
    """A fresh scheduler: the folder's own (None) or one of `SAMPLERS` configured like it."""
    if sampler is None:
        return type(model.scheduler).from_config(model.scheduler.config)
    if sampler not in SAMPLERS:
        msg = f"--sampler {sampler!r}: choose one of {', '.join(SAMPLERS)}"
        raise DumpUnetError(msg)
    cls = getattr(importlib.import_module("diffusers"), SAMPLERS[sampler])
    return cls.from_config(model.scheduler.config)
