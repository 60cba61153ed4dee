"""The full-size SD1.5 U-Net with random weights, for the benchmark and the slow tests.

Built from Stability-AI's own `ldm.modules.diffusionmodules.openaimodel.UNetModel` with the `unet_config` of
`v1-inference.yaml` (860 M parameters, fp32 on the CPU). It is constructed on the "meta" device and then given
CPU storage, so the default initialisation (slow for 860 M parameters) is skipped; `unets.randomize` then fills every
parameter from a fixed seed, the same values an ordinary build followed by `randomize` would get.
`use_checkpoint` is off, as the webui loads models for inference.
"""

from __future__ import annotations

import torch
import unets
from ldm.modules.diffusionmodules.openaimodel import UNetModel

__all__ = ["CONTEXT_DIM", "SD15_CONFIG", "build_sd15"]

CONTEXT_DIM = 768  # CLIP ViT-L/14

# v1-inference.yaml, model.params.unet_config.params
SD15_CONFIG = {
    "image_size": 32,
    "in_channels": 4,
    "out_channels": 4,
    "model_channels": 320,
    "attention_resolutions": [4, 2, 1],
    "num_res_blocks": 2,
    "channel_mult": [1, 2, 4, 4],
    "num_heads": 8,
    "use_spatial_transformer": True,
    "transformer_depth": 1,
    "context_dim": CONTEXT_DIM,
    "use_checkpoint": False,
    "legacy": False,
}


def build_sd15(seed: int = 0) -> UNetModel:
    """The SD1.5 U-Net, every parameter drawn from `seed`, in eval mode on the CPU."""
    with torch.device("meta"):
        unet = UNetModel(**SD15_CONFIG)
    unet.to_empty(device="cpu")
    return unets.randomize(unet, seed)
