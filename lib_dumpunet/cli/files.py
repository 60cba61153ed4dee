"""Files the command writes: images and maps as PNGs named the way the webui names them, with infotext inside.

An image is saved as `NNNNN-SEED.png` (the webui's default file name pattern `[seed]`, numbered on from the highest
number already in the folder); each of its maps gets the image's name plus a suffix naming kind, place and step —
`00003-42-dumpunet-unet-IN04-005.png`, `…-attn-qk-M00.attn2-010-avg.png`. Every PNG carries the webui's infotext in
its `parameters` text chunk (prompt, negative prompt, settings line with the job's `Dump U-Net: {…}` entry; a map
adds `Dump U-Net map: …`), so PNG Info in the webui reads them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, PngImagePlugin

from lib_dumpunet.render import MapImage

__all__ = ["MAP_KEY", "Saved", "Writer", "quote"]

MAP_KEY = "Dump U-Net map"
_NUMBERED = re.compile(r"^(\d{5})-")


def quote(text: str) -> str:
    """A value as the webui writes it into an infotext line: JSON-quoted only where it would break the line."""
    return json.dumps(text, ensure_ascii=False) if any(c in text for c in ',:\n"') else text


@dataclass
class Saved:
    """A written PNG: its path relative to the output folder, and what it shows."""

    file: str
    label: str
    map: MapImage | None = None
    columns: tuple[int, int] | None = None  # Q*K: (token columns before the padding, all columns), for the page


@dataclass
class Writer:
    """Writes one job's PNGs into `folder`, numbering images after those already there."""

    folder: Path
    next_number: int = field(init=False)

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        numbers = [int(m.group(1)) for p in self.folder.glob("*.png") if (m := _NUMBERED.match(p.name))]
        self.next_number = max(numbers, default=-1) + 1

    def image(self, image: Image.Image, seed: int, infotext: str) -> Saved:
        stem = f"{self.next_number:05d}-{seed}"
        self.next_number += 1
        return self._write(image, stem, infotext, "image")

    def map(self, image_stem: str, m: MapImage, owner_infotext: str, columns: tuple[int, int] | None = None) -> Saved:
        info = f"{owner_infotext}, {MAP_KEY}: {quote(m.label)}"
        saved = self._write(m.image, f"{image_stem}{m.file_suffix}", info, m.label)
        saved.map, saved.columns = m, columns
        return saved

    def _write(self, image: Image.Image, stem: str, infotext: str, label: str) -> Saved:
        meta = PngImagePlugin.PngInfo()
        meta.add_text("parameters", infotext)
        image.save(self.folder / f"{stem}.png", pnginfo=meta)
        return Saved(f"{stem}.png", label)
