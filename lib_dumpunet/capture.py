"""What a run captured, and the recorder of block outputs.

`Capture` is the result object of a run: captured tensors, on the CPU, keyed by `Key` (image, pass, step, place,
kind, branch, AND sub-prompt). Tensors leave the accelerator the moment they are captured, with one non-blocking
copy per U-Net call holding only the rows and the layers asked for (optionally as fp16); the capture waits for those
copies before anyone reads them. Readers take one image at a time (`take_image`) so memory is given back as maps
are rendered.

`FeatureRecorder` keeps the output of chosen U-Net blocks at chosen sampler steps: what the original extension
called "U-Net features".
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import torch

from lib_dumpunet.hooks import HookSet
from lib_dumpunet.layout import UNetLayout
from lib_dumpunet.sampling import Branch, SamplingTracker, UNetCall
from lib_dumpunet.specs import StepSelection

__all__ = ["Capture", "FeatureRecorder", "Key", "Recorder"]


@dataclass(frozen=True)
class Key:
    """Where a captured tensor came from."""

    image: int  # index of the image in the job (over batch count and batch size)
    pass_index: int  # 0 = first pass, 1 = hires fix second pass
    step: int  # sampler step, from 1
    place: str  # block name ("IN04") or attention module label ("IN04.attn2", "M00.attn2.7")
    kind: str  # "features", "k", "qk", "vqk", "self", …
    branch: Branch = "cond"
    sub: int = 0  # AND sub-prompt of a cond row

    @property
    def block(self) -> str:
        return self.place.split(".", 1)[0]


@dataclass
class Capture:
    """Captured tensors of one run, on the CPU."""

    _data: dict[Key, torch.Tensor] = field(default_factory=dict)
    _pending: set[torch.device] = field(default_factory=set)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __getitem__(self, key: Key) -> torch.Tensor:
        self._sync()
        return self._data[key]

    def __iter__(self) -> Iterator[Key]:
        return iter(list(self._data))

    def keys(self) -> list[Key]:
        return list(self._data)

    def images(self) -> list[int]:
        return sorted({k.image for k in self._data})

    @property
    def nbytes(self) -> int:
        return sum(t.untyped_storage().nbytes() for t in {id(t): t for t in self._data.values()}.values())

    def store(self, keys: Sequence[Key], batch: torch.Tensor, dtype: torch.dtype | None = None) -> None:
        """Copy `batch` (one row per key, on any device) to the CPU and file row i under keys[i]."""
        batch = batch.detach()
        non_blocking = batch.device.type == "cuda"
        host = batch.to("cpu", dtype=dtype or batch.dtype, non_blocking=non_blocking, copy=True)
        if non_blocking:
            self._pending.add(batch.device)
        self._data.update(zip(keys, host.unbind(0), strict=True))

    def put(self, key: Key, tensor: torch.Tensor) -> None:
        """File an already-computed CPU tensor (e.g. a difference map)."""
        self._data[key] = tensor

    def take_image(self, image: int) -> dict[Key, torch.Tensor]:
        """Remove and return everything captured for one image."""
        self._sync()
        keys = [k for k in self._data if k.image == image]
        return {k: self._data.pop(k) for k in keys}

    def clear(self) -> None:
        self._data.clear()
        self._pending.clear()

    def _sync(self) -> None:
        for device in self._pending:
            torch.cuda.synchronize(device)
        self._pending.clear()


class Recorder:
    """What every recorder shares: which blocks, at which steps (first model evaluation of each), which rows (cond,
    or uncond too), kept in which dtype; and how what it keeps is filed."""

    def __init__(
        self,
        blocks: Iterable[str],
        steps: StepSelection,
        *,
        uncond: bool = False,
        dtype: torch.dtype | None = None,
    ) -> None:
        self.blocks = tuple(blocks)
        self.steps = steps
        self.uncond = uncond
        self.dtype = dtype

    def wants(self, call: UNetCall | None) -> bool:
        return call is not None and call.step.first_eval and call.step.step in self.steps

    def kept_rows(self, call: UNetCall) -> list[int]:
        """Positions of the call's rows this recorder keeps."""
        return call.indices(uncond=self.uncond)

    def store(self, capture: Capture, call: UNetCall, idx: list[int], place: str, kind: str, batch: torch.Tensor):
        """File `batch` (one row per position in `idx`) under the keys of those rows."""
        step = call.step
        rows = [call.rows[i] for i in idx]
        keys = [Key(r.image, step.pass_index, step.step, place, kind, r.branch, r.sub) for r in rows]  # type: ignore[union-attr]
        capture.store(keys, batch, self.dtype)


class FeatureRecorder(Recorder):
    """Records the outputs of `blocks` at the sampler steps in `steps`, filed under `kind`."""

    def __init__(
        self,
        blocks: Iterable[str],
        steps: StepSelection,
        *,
        uncond: bool = False,
        dtype: torch.dtype | None = None,
        kind: str = "features",
    ) -> None:
        super().__init__(blocks, steps, uncond=uncond, dtype=dtype)
        self.kind = kind

    def attach(self, hooks: HookSet, layout: UNetLayout, tracker: SamplingTracker, capture: Capture) -> None:
        for name in self.blocks:
            hooks.forward(layout.module(name), self._hook(name, tracker, capture))

    def _hook(self, name: str, tracker: SamplingTracker, capture: Capture):
        def record(_module, _args, output: torch.Tensor | tuple) -> None:
            call = tracker.current
            if not self.wants(call):
                return
            if isinstance(output, tuple):  # a diffusers transformer ending a block returns (hidden_states,)
                output = output[0]
            idx = self.kept_rows(call)
            if idx:
                self.store(capture, call, idx, name, self.kind, output[idx])

        return record
