"""Reads an image of the shapes world back: background, and every shape's colour, shape, size and mask.

Each pixel takes the nearest palette colour (world images are flat, so this is exact on them and tolerant of the
soft edges a generator draws); the background is the colour most of the border has; every other colour region
is split into 4-connected components, and components smaller than `min_area` of the image are dropped as edge
debris. A component's shape comes from two numbers that survive the soft, rounded edges a small generator draws:
where its mass sits in its bounding box (an upward triangle's centroid lies two thirds of the way down, a circle's
or square's halfway) and how much of the box it fills (square 1, circle π/4).
`match` pairs the shapes found with the ones a scene asked for (so an asked object's mask in a generated image can be
read), and `score` counts how many were met.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lib_dumpunet.world.scene import BACKGROUNDS, COLOURS, Scene

__all__ = ["Analysis", "FoundShape", "Score", "analyse", "match", "score"]

_PALETTE_NAMES: tuple[str, ...] = (*COLOURS, *BACKGROUNDS)
_PALETTE = np.array([*COLOURS.values(), *BACKGROUNDS.values()], dtype=np.float32)
_SHAPE_COLOURS = len(COLOURS)

_TRIANGLE_CENTROID = 0.56  # centroid depth / box height: triangle 2/3, circle and square 1/2
_SQUARE_FILL = 0.86  # area / box: square 1, circle ≈ 0.785
_LARGE_EXTENT = 0.38  # between the small (≤ 0.34) and large (≥ 0.42) extents of the world


@dataclass(frozen=True)
class FoundShape:
    """A shape found in an image: words, bounding box (top, left, bottom, right; exclusive) and mask."""

    colour: str
    shape: str
    size: str
    area: int
    box: tuple[int, int, int, int]
    mask: np.ndarray


@dataclass(frozen=True)
class Analysis:
    background: str
    shapes: tuple[FoundShape, ...]


@dataclass(frozen=True)
class Score:
    """How one image meets its scene: objects asked, of which found in the right colour, and also in the right
    shape (colour and shape on the same object); whether the count and the background are right."""

    asked: int
    colour_hits: int
    shape_hits: int
    count_ok: bool
    background_ok: bool


def _classes(image: np.ndarray) -> np.ndarray:
    pixels = image[..., :3].astype(np.float32)
    distances = ((pixels[..., None, :] - _PALETTE) ** 2).sum(axis=-1)
    return distances.argmin(axis=-1)


def _background(classes: np.ndarray) -> int:
    border = np.concatenate([classes[0], classes[-1], classes[1:-1, 0], classes[1:-1, -1]])
    counts = np.bincount(border, minlength=len(_PALETTE_NAMES))
    return int(counts.argmax())


def _components(mask: np.ndarray) -> np.ndarray:
    """Labels of the 4-connected components of `mask` (-1 outside it), by propagating the smallest index."""
    h, w = mask.shape
    outside = h * w
    labels = np.where(mask, np.arange(h * w).reshape(h, w), outside)
    while True:
        padded = np.pad(labels, 1, constant_values=outside)
        neighbours = np.minimum.reduce(
            [padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:], labels]
        )
        updated = np.where(mask, neighbours, outside)
        if np.array_equal(updated, labels):
            return np.where(mask, labels, -1)
        labels = updated


def _shape_of(mask: np.ndarray, box: tuple[int, int, int, int]) -> str:
    top, left, bottom, right = box
    crop = mask[top:bottom, left:right]
    rows = np.nonzero(crop)[0]
    centroid = (rows.mean() + 0.5) / crop.shape[0]
    if centroid > _TRIANGLE_CENTROID:
        return "triangle"
    return "square" if crop.mean() >= _SQUARE_FILL else "circle"


def analyse(image: np.ndarray, min_area: float = 0.015) -> Analysis:
    """Background and shapes of an RGB(A) uint8 image (h, w, 3|4), largest shapes first."""
    classes = _classes(image)
    background = _background(classes)
    side_area = classes.size
    found: list[FoundShape] = []
    for colour in range(_SHAPE_COLOURS):
        if colour == background:
            continue
        labels = _components(classes == colour)
        ids, areas = np.unique(labels[labels >= 0], return_counts=True)
        for label, area in zip(ids.tolist(), areas.tolist(), strict=True):
            if area < min_area * side_area:
                continue
            mask = labels == label
            rows, cols = np.nonzero(mask)
            box = (int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1)
            extent = max(box[2] - box[0], box[3] - box[1]) / max(classes.shape)
            size = "large" if extent >= _LARGE_EXTENT else "small"
            found.append(FoundShape(_PALETTE_NAMES[colour], _shape_of(mask, box), size, int(area), box, mask))
    found.sort(key=lambda s: -s.area)
    return Analysis(_PALETTE_NAMES[background], tuple(found))


def match(scene: Scene, analysis: Analysis) -> tuple[FoundShape | None, ...]:
    """Per asked object (caption order), the found shape standing for it, one to one: a shape of the same colour
    and shape first, then one of the same colour; None where no shape of its colour is left."""
    unused = list(analysis.shapes)
    matched: list[FoundShape | None] = [None] * len(scene.objects)
    for exact in (True, False):
        for i, obj in enumerate(scene.objects):
            if matched[i] is not None:
                continue
            found = next((s for s in unused if s.colour == obj.colour and (s.shape == obj.shape or not exact)), None)
            if found is not None:
                unused.remove(found)
                matched[i] = found
    return tuple(matched)


def score(scene: Scene, analysis: Analysis) -> Score:
    """How `analysis` meets `scene`, with the objects paired by `match`."""
    pairs = [(obj, found) for obj, found in zip(scene.objects, match(scene, analysis), strict=True) if found]
    return Score(
        asked=len(scene.objects),
        colour_hits=len(pairs),
        shape_hits=sum(found.shape == obj.shape for obj, found in pairs),
        count_ok=len(analysis.shapes) == len(scene.objects),
        background_ok=analysis.background == scene.background,
    )
