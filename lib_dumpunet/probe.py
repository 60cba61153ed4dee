"""The probe: everything Dump U-Net attaches to a U-Net for one job, as one context manager.

    with Probe(unet, [FeatureRecorder(["IN04", "M00"], parse_steps("1-5"))]) as probe:
        ...  # the host samples; for each denoiser call it tells probe.tracker which rows are which
    probe.capture  # the result: what was recorded, on the CPU

On entry the probe hooks the U-Net itself (to give each model call its rows, see `sampling`) and lets each
attachment (recorders of features or attention, the per-block prompt switch) add its own hooks to the same
`HookSet`. On exit — normal, exception or interrupt — every hook is removed, newest first. The probe never replaces
a `forward`; the generated image only changes when an attachment is meant to change it (per-block prompts).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from torch import nn

from lib_dumpunet.capture import Capture
from lib_dumpunet.hooks import HookSet
from lib_dumpunet.layout import UNetLayout
from lib_dumpunet.sampling import SamplingTracker

__all__ = ["Attachment", "Probe"]


class Attachment(Protocol):
    """Something that hooks into the U-Net for a job: a recorder, or the per-block prompt switch."""

    def attach(self, hooks: HookSet, layout: UNetLayout, tracker: SamplingTracker, capture: Capture) -> None: ...


class Probe(AbstractContextManager):
    """Row tracking plus the given attachments on one U-Net, for the duration of a `with` block."""

    def __init__(self, unet: nn.Module, attachments: Sequence[Attachment], *, layout: UNetLayout | None = None):
        self.unet = unet
        self.layout = layout if layout is not None else UNetLayout(unet)
        self.attachments = tuple(attachments)
        self.tracker = SamplingTracker()
        self.capture = Capture()
        self.hooks = HookSet()

    def __enter__(self) -> Probe:
        try:
            self.hooks.pre(self.unet, self._before_call, with_kwargs=True)
            self.hooks.forward(self.unet, self._after_call)
            for attachment in self.attachments:
                attachment.attach(self.hooks, self.layout, self.tracker, self.capture)
        except BaseException:
            self.hooks.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.hooks.close()
        self.tracker.end_unet_call()

    def _before_call(self, _module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        x = args[0] if args else kwargs["x"] if "x" in kwargs else kwargs["sample"]  # ldm/sgm, diffusers
        self.tracker.unet_call(x.shape[0])

    def _after_call(self, _module: nn.Module, _args: tuple, _output: Any) -> None:
        self.tracker.end_unet_call()
