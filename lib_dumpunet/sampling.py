"""Which image, branch and sampler step each row of each U-Net call belongs to.

The webui's CFG denoiser calls the U-Net with rows in a fixed global order: every image's cond rows first (one per
`AND` sub-prompt, consecutive), then one uncond row per image. It may send them in one call or as consecutive
slices (cond and uncond of different token lengths, `batch_cond_uncond` off), and it may drop the uncond rows
altogether (skip_early_cond, "negative guidance minimum sigma"). A second-order sampler evaluates the model more
than once per step; a hires-fix second pass samples again from step 1.

The host adapter tells `SamplingTracker` about each denoiser call (`denoiser_call`); a pre-hook on the U-Net then
asks for the rows of each model call (`unet_call`), which takes the next slice. Hooks inside the U-Net read
`tracker.current` to know, for every row, whose it is and whether this is a step to record.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = ["Branch", "Row", "SamplingTracker", "Step", "UNetCall", "cfg_rows"]

Branch = Literal["cond", "uncond"]


@dataclass(frozen=True)
class Row:
    """One row of a U-Net batch: which image of the job (global index), cond or uncond, which AND sub-prompt."""

    image: int
    branch: Branch
    sub: int = 0


def cfg_rows(cond_counts: Sequence[int], uncond: int, image_offset: int = 0) -> tuple[Row, ...]:
    """The webui's row order for one denoiser call.

    `cond_counts[i]` is the number of cond rows of the batch's image i (its AND sub-prompts, usually 1); `uncond` is
    the number of uncond rows (the batch size); `image_offset` turns batch indices into job-wide image indices.
    """
    cond = [Row(image_offset + i, "cond", sub) for i, n in enumerate(cond_counts) for sub in range(n)]
    return (*cond, *(Row(image_offset + i, "uncond") for i in range(uncond)))


@dataclass(frozen=True)
class Step:
    pass_index: int  # 0 = first pass, 1 = hires fix second pass
    step: int  # sampler step, counted from 1 within the pass
    schedule_step: int  # the denoiser's own call counter: the position in prompt-editing schedules
    first_eval: bool  # True for the first model evaluation of this sampler step (the one that is recorded)


@dataclass(frozen=True)
class UNetCall:
    """One call of the U-Net: the step it serves and the role of each of its rows (None: not attributable)."""

    step: Step
    rows: tuple[Row | None, ...]

    def indices(self, *, uncond: bool = False) -> list[int]:
        """Positions of the rows worth keeping: cond rows, plus uncond rows if asked."""
        return [i for i, r in enumerate(self.rows) if r is not None and (uncond or r.branch == "cond")]


class SamplingTracker:
    """Follows denoiser calls and hands each U-Net call its slice of rows."""

    def __init__(self) -> None:
        self._rows: tuple[Row, ...] = ()
        self._next = 0
        self._step: Step | None = None
        self._last: tuple[int, int] | None = None
        self.current: UNetCall | None = None

    def begin_batch(self) -> None:
        """A new batch starts sampling from step 1 again."""
        self._rows, self._next, self._step, self._last, self.current = (), 0, None, None, None

    def denoiser_call(self, *, pass_index: int, step: int, schedule_step: int, rows: Sequence[Row]) -> Step:
        """The host is about to run the U-Net for `rows` (in the webui's global order) at this sampler step."""
        key = (pass_index, step)
        self._step = Step(pass_index, step, schedule_step, first_eval=key != self._last)
        self._last = key
        self._rows, self._next = tuple(rows), 0
        return self._step

    def unet_call(self, batch_size: int) -> UNetCall | None:
        """The U-Net is being called with `batch_size` rows: they are the next slice of the current denoiser call."""
        if self._step is None:
            self.current = None
            return None
        start, self._next = self._next, self._next + batch_size
        rows = tuple(self._rows[i] if i < len(self._rows) else None for i in range(start, start + batch_size))
        self.current = UNetCall(self._step, rows)
        return self.current

    def end_unet_call(self) -> None:
        self.current = None
