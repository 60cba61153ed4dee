"""Dump U-Net outside the webui, on a local diffusers Stable Diffusion folder (SD1.x, SD2.x, SDXL).

The only part of the library that imports diffusers (an optional extra: `pip install 'sd-webui-dumpunet[diffusers]'`).
`layout` maps a `UNet2DConditionModel` onto the webui's block names; `model` loads a folder offline; `text` encodes
prompts as the webui does; `generate` samples with classifier-free guidance, telling the job about every row; `run`
drives a whole `Job` (features, attention, per-block prompts, difference maps, dumps) and returns images and maps.
"""

from __future__ import annotations

from lib_dumpunet.diffusers.generate import Generation, sample
from lib_dumpunet.diffusers.layout import diffusers_layout
from lib_dumpunet.diffusers.model import SAMPLERS, Model, load_model
from lib_dumpunet.diffusers.run import GeneratedImage, JobResult, prepare, run

__all__ = [
    "SAMPLERS",
    "GeneratedImage",
    "Generation",
    "JobResult",
    "Model",
    "diffusers_layout",
    "load_model",
    "prepare",
    "run",
    "sample",
]
