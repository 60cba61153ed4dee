"""The shapes world: scenes of 1–3 flat-coloured shapes on a plain background, their captions and exact masks.

A scene is a few objects (size word, colour word, shape word, centre, extent) on a background colour. Everything is
drawn from a seed: `scene_at(seed, index, split)` always returns the same scene, independently of any other index,
so a data set is just a range of indices. Some colour × shape pairs (`HELD_OUT_PAIRS`) never appear in the
"train" split; the "held_out" split puts at least one of them in every scene, for evaluating generalisation.

Rendering is exact: a pixel belongs to a shape when its centre lies inside it, with no anti-aliasing, shapes never
overlap, so the image holds only the palette's colours and `Scene.word_masks` names every pixel by the caption
words that describe it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = [
    "BACKGROUNDS",
    "COLOURS",
    "HELD_OUT_PAIRS",
    "SHAPES",
    "SIZES",
    "Rendered",
    "Scene",
    "SceneObject",
    "Split",
    "render",
    "scene_at",
]

Split = Literal["train", "held_out"]

# Shape colours and background colours are disjoint, so every colour word names one kind of region.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 210, 40),
    "purple": (150, 60, 190),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (255, 255, 255),
    "black": (0, 0, 0),
    "gray": (128, 128, 128),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")

# Extent (diameter, side, triangle base and height) as a fraction of the image side: the two size words.
SIZES: dict[str, tuple[float, float]] = {"small": (0.25, 0.34), "large": (0.42, 0.54)}

# Colour × shape pairs the training split never shows; each colour and each shape still appears with others.
HELD_OUT_PAIRS: frozenset[tuple[str, str]] = frozenset({("red", "triangle"), ("green", "circle"), ("blue", "square")})

_MAX_PLACEMENT_TRIES = 50
# Seed stream tags, so train and held-out scenes with the same index are unrelated.
_SPLIT_TAG: dict[str, int] = {"train": 1, "held_out": 2}


@dataclass(frozen=True)
class SceneObject:
    """One shape: its words, and its centre and extent as fractions of the image side."""

    size: str
    colour: str
    shape: str
    cx: float
    cy: float
    extent: float

    @property
    def words(self) -> tuple[str, str, str]:
        return (self.size, self.colour, self.shape)

    @property
    def phrase(self) -> str:
        return " ".join(self.words)

    def mask(self, side: int) -> np.ndarray:
        """Boolean (side, side) mask: pixels whose centre lies inside the shape."""
        centres = (np.arange(side, dtype=np.float64) + 0.5) / side
        dy = centres[:, None] - self.cy
        dx = centres[None, :] - self.cx
        half = self.extent / 2
        if self.shape == "circle":
            return dx * dx + dy * dy <= half * half
        if self.shape == "square":
            return (np.abs(dx) <= half) & (np.abs(dy) <= half)
        # Triangle pointing up: apex at the top centre, base along the bottom edge of the extent square.
        depth = dy + half  # 0 at the apex, `extent` at the base
        return (depth >= 0) & (depth <= self.extent) & (np.abs(dx) <= depth / 2)


@dataclass(frozen=True)
class Scene:
    """A background colour word and the objects on it, in caption order."""

    background: str
    objects: tuple[SceneObject, ...]

    @property
    def caption(self) -> str:
        phrases = [f"a {obj.phrase}" for obj in self.objects]
        listed = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
        return f"{listed} on a {self.background} background"

    def word_masks(self, side: int) -> dict[str, np.ndarray]:
        """Exact mask of every caption word that names a region: size, colour and shape words of the objects
        (the union when several objects share a word), and the background colour word and "background" for
        the pixels no object covers."""
        masks: dict[str, np.ndarray] = {}
        covered = np.zeros((side, side), dtype=bool)
        for obj in self.objects:
            mask = obj.mask(side)
            covered |= mask
            for word in obj.words:
                masks[word] = masks[word] | mask if word in masks else mask.copy()
        masks[self.background] = ~covered
        masks["background"] = ~covered
        return masks


@dataclass(frozen=True)
class Rendered:
    """A scene drawn at a size: RGB uint8 image (side, side, 3) and one mask per object, in caption order."""

    scene: Scene
    image: np.ndarray
    object_masks: tuple[np.ndarray, ...]


def render(scene: Scene, side: int) -> Rendered:
    """Draw `scene` on a `side`×`side` canvas, exactly (no anti-aliasing)."""
    image = np.empty((side, side, 3), dtype=np.uint8)
    image[:] = BACKGROUNDS[scene.background]
    masks = []
    for obj in scene.objects:
        mask = obj.mask(side)
        image[mask] = COLOURS[obj.colour]
        masks.append(mask)
    return Rendered(scene, image, tuple(masks))


def _pair_allowed(split: Split, colour: str, shape: str) -> bool:
    return split == "held_out" or (colour, shape) not in HELD_OUT_PAIRS


def _draw_words(rng: np.random.Generator, split: Split, count: int) -> list[tuple[str, str, str]]:
    colours, sizes = list(COLOURS), list(SIZES)
    allowed = [(c, s) for c in colours for s in SHAPES if _pair_allowed(split, c, s)]
    pairs = [allowed[i] for i in rng.integers(len(allowed), size=count)]
    if split == "held_out":
        held = sorted(HELD_OUT_PAIRS)
        pairs[int(rng.integers(count))] = held[int(rng.integers(len(held)))]
    return [(sizes[int(rng.integers(len(sizes)))], colour, shape) for colour, shape in pairs]


def _overlaps(a: SceneObject, b: SceneObject, gap: float) -> bool:
    # Extents are squares around the centres; keeping the squares apart keeps the shapes apart.
    reach = (a.extent + b.extent) / 2 + gap
    return abs(a.cx - b.cx) < reach and abs(a.cy - b.cy) < reach


def _place(rng: np.random.Generator, words: list[tuple[str, str, str]]) -> tuple[SceneObject, ...] | None:
    placed: list[SceneObject] = []
    for size, colour, shape in words:
        low, high = SIZES[size]
        for _ in range(_MAX_PLACEMENT_TRIES):
            extent = float(rng.uniform(low, high))
            margin = extent / 2 + 0.02
            cx, cy = (float(v) for v in rng.uniform(margin, 1 - margin, size=2))
            candidate = SceneObject(size, colour, shape, cx, cy, extent)
            if not any(_overlaps(candidate, other, 0.03) for other in placed):
                placed.append(candidate)
                break
        else:
            return None
    return tuple(placed)


def scene_at(seed: int, index: int, split: Split = "train") -> Scene:
    """The scene number `index` of the data set `seed` in `split`; the same arguments always give the same scene."""
    if split not in _SPLIT_TAG:
        raise ValueError(f"split must be 'train' or 'held_out', not {split!r}")
    rng = np.random.default_rng([seed, _SPLIT_TAG[split], index])
    while True:
        count = int(rng.integers(1, 4))
        objects = _place(rng, _draw_words(rng, split, count))
        if objects is not None:
            background = list(BACKGROUNDS)[int(rng.integers(len(BACKGROUNDS)))]
            return Scene(background, objects)
