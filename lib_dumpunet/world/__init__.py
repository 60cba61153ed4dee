"""The shapes world: a procedural data set whose truth is known, and an analyser that reads images back.

`scene` draws scenes of flat-coloured shapes from a seed, with captions and exact per-word masks; `analyse` finds
the shapes in an image (colour, shape, size, mask) so generated images can be scored against their prompts.
"""

from __future__ import annotations

from lib_dumpunet.world.scene import (
    BACKGROUNDS,
    COLOURS,
    HELD_OUT_PAIRS,
    SHAPES,
    SIZES,
    Rendered,
    Scene,
    SceneObject,
    Split,
    render,
    scene_at,
)

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
