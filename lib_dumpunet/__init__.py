"""Dump U-Net: look inside Stable Diffusion's U-Net.

The library half of the webui extension. It imports torch, numpy, PIL and einops only; everything that talks to the
webui (its `modules.*` and gradio) lives in `lib_dumpunet.webui`, and `scripts/dumpunet.py` is the thin entry the
webui loads.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
