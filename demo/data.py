"""Batches of the shapes world for training: images as tensors in [-1, 1] and their captions.

Scenes come from `lib_dumpunet.world` by index, so a training run that resumes at step n draws exactly the batches
it would have drawn without stopping.
"""

from __future__ import annotations

import numpy as np
import torch

from lib_dumpunet.world import Scene, Split, render, scene_at


def scenes(seed: int, start: int, count: int, split: Split = "train") -> list[Scene]:
    return [scene_at(seed, index, split) for index in range(start, start + count)]


def images(batch: list[Scene], side: int) -> torch.Tensor:
    """(n, 3, side, side) float tensor in [-1, 1]."""
    array = np.stack([render(scene, side).image for scene in batch])
    return torch.from_numpy(array).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
