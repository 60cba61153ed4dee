"""Writing captured tensors to files, and reading them back.

Default format: one `.npy` file per captured tensor (its full shape and dtype, loadable with `numpy.load`), plus
`manifest.jsonl` with one line per file saying what it is (image, seed, prompt, place, kind, step, pass, branch, AND
sub-prompt, shape, dtype). Each job writes into its own new sub-folder of the dump folder, so runs never overwrite
each other. `read_dump(folder)` loads a job folder back exactly.

Legacy format (the original extension's): one headerless little-endian float32 `.bin` file per channel, named
`{image:03d}-{block}-{step:03d}-{channel:04d}-{time}.bin`, all flat in the dump folder; the shape must be known to
read them (`numpy.fromfile(f, numpy.float32).reshape(h, w)`).

Files are written by one background thread: sampling only ever waits for the copy that captured the tensor.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from lib_dumpunet.capture import Key
from lib_dumpunet.errors import DumpUnetError

__all__ = ["DumpEntry", "DumpFormat", "DumpWriter", "read_dump"]

DumpFormat = Literal["npy", "legacy"]
MANIFEST = "manifest.jsonl"


@dataclass(frozen=True)
class DumpEntry:
    """One dumped tensor, as the manifest describes it."""

    file: str
    image: int
    pass_index: int
    step: int
    place: str
    kind: str
    branch: str
    sub: int
    shape: tuple[int, ...]
    dtype: str
    seed: int | None = None
    prompt: str | None = None


@dataclass(frozen=True)
class Dump:
    """A job folder read back: its entries and a loader."""

    folder: Path
    entries: tuple[DumpEntry, ...]

    def __iter__(self) -> Iterator[DumpEntry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def load(self, entry: DumpEntry) -> np.ndarray:
        return np.load(self.folder / entry.file, allow_pickle=False)


def read_dump(folder: str | Path) -> Dump:
    """Read a job folder written in the default format."""
    folder = Path(folder)
    manifest = folder / MANIFEST
    if not manifest.is_file():
        msg = f"{folder} has no {MANIFEST}: it is not a Dump U-Net dump folder"
        raise DumpUnetError(msg)
    entries = []
    for line in manifest.read_text(encoding="utf-8").splitlines():
        if line.strip():
            data = json.loads(line)
            data["shape"] = tuple(data["shape"])
            entries.append(DumpEntry(**data))
    return Dump(folder, tuple(entries))


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    if tensor.dtype == torch.bfloat16:  # numpy has no bfloat16
        tensor = tensor.float()
    return tensor.detach().cpu().contiguous().numpy()


class DumpWriter(AbstractContextManager):
    """Writes tensors of one job under `root` in the background; `close()` (or leaving `with`) waits for them."""

    def __init__(self, root: str | Path, fmt: DumpFormat = "npy", *, label: str = "") -> None:
        root = Path(root)
        if root.exists() and not root.is_dir():
            msg = f"the dump folder {root} exists and is not a folder"
            raise DumpUnetError(msg)
        self.format = fmt
        self.stamp = int(time.time())
        if fmt == "legacy":
            self.folder = root
        else:
            self.folder = _new_folder(root, time.strftime("%Y%m%d-%H%M%S") + (f"-{label}" if label else ""))
        self.folder.mkdir(parents=True, exist_ok=True)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dumpunet-dump")
        self._futures: list[Future] = []
        self._manifest_lock = threading.Lock()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write(self, key: Key, tensor: torch.Tensor, *, seed: int | None = None, prompt: str | None = None) -> None:
        """Queue one captured tensor (on the CPU) for writing."""
        if self.format == "legacy":
            self._futures.append(self._pool.submit(self._write_legacy, key, tensor))
        else:
            self._futures.append(self._pool.submit(self._write_npy, key, tensor, seed, prompt))

    def close(self) -> None:
        """Wait for every queued file; re-raise the first write error."""
        try:
            for future in self._futures:
                future.result()
        finally:
            self._futures.clear()
            self._pool.shutdown(wait=True)

    def _write_npy(self, key: Key, tensor: torch.Tensor, seed: int | None, prompt: str | None) -> None:
        array = _numpy(tensor)
        name = f"{key.image:04d}-p{key.pass_index}-s{key.step:03d}-{key.place}-{key.kind}"
        if key.branch != "cond":
            name += f"-{key.branch}"
        if key.sub:
            name += f"-and{key.sub}"
        np.save(self.folder / f"{name}.npy", array, allow_pickle=False)
        entry = DumpEntry(
            file=f"{name}.npy",
            image=key.image,
            pass_index=key.pass_index,
            step=key.step,
            place=key.place,
            kind=key.kind,
            branch=key.branch,
            sub=key.sub,
            shape=tuple(array.shape),
            dtype=str(array.dtype),
            seed=seed,
            prompt=prompt,
        )
        with self._manifest_lock, (self.folder / MANIFEST).open("a", encoding="utf-8") as f:
            f.write(json.dumps(asdict(entry), ensure_ascii=False) + "\n")

    def _write_legacy(self, key: Key, tensor: torch.Tensor) -> None:
        maps = _numpy(tensor.float()).astype("<f4", copy=False)
        maps = maps.reshape(-1, *maps.shape[-2:])
        for channel, plane in enumerate(maps):
            name = f"{key.image:03d}-{key.block}-{key.step:03d}-{channel:04d}-{self.stamp}.bin"
            plane.tofile(self.folder / name)


def _new_folder(root: Path, name: str) -> Path:
    candidate, n = root / name, 1
    while candidate.exists():
        n += 1
        candidate = root / f"{name}-{n}"
    return candidate
