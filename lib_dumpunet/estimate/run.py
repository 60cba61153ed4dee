"""One estimate from settings to a file: check everything first, optimise, then save unless told not to.

Hosts (the webui tab, the CLI) call `run_estimate`. The save name, the file's place and the overwrite rule are
checked before any optimisation, so a bad name or an existing embedding costs nothing; an interrupted run is saved
with what it has learnt unless the host's monitor says `discard()`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from lib_dumpunet.estimate.estimator import Estimate, Monitor, estimate
from lib_dumpunet.estimate.files import SavedEmbedding, target_path, write_embedding
from lib_dumpunet.estimate.model import Denoiser, PromptEncoder
from lib_dumpunet.estimate.settings import EstimateSettings

__all__ = ["EstimateRun", "run_estimate"]


@dataclass
class EstimateRun:
    result: Estimate
    saved: SavedEmbedding | None  # None: interrupted without saving


def run_estimate(
    settings: EstimateSettings,
    encoder: PromptEncoder,
    folder: str | Path,
    *,
    denoiser: Denoiser | None = None,
    latent_shape: tuple[int, ...] | None = None,
    device: torch.device | str = "cpu",
    monitor: Monitor | None = None,
    checkpoint: tuple[str, str] | None = None,
) -> EstimateRun:
    """Estimate and write `<folder>/dumpunet-estimate/<name>.<format>`. `monitor.discard()`, if it exists and says
    True after the loop, skips saving ("Interrupt (not save)")."""
    settings.validate()
    target_path(Path(folder), settings.name, settings.file_format, overwrite=settings.overwrite)
    result = estimate(settings, encoder, denoiser=denoiser, latent_shape=latent_shape, device=device, monitor=monitor)
    discard = getattr(monitor, "discard", None)
    if callable(discard) and discard():
        return EstimateRun(result, None)
    saved = write_embedding(
        folder,
        settings.name,
        result.vectors,
        step=result.iterations,
        file_format=settings.file_format,
        overwrite=settings.overwrite,
        checkpoint=checkpoint,
    )
    return EstimateRun(result, saved)
