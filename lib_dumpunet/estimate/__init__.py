"""Embedding Estimate: a textual-inversion embedding that reproduces a prompt, emphasis included, without images.

`settings` holds the typed record of one estimate, `estimator` the optimisation (Transformer and U-NET modes),
`files` the textual-inversion file writer and reader in the webui's loader format, `model` the two protocols a host
implements (prompt encoder, denoiser), `clip_text` a webui-faithful prompt encoder over Hugging Face CLIP models,
and `denoise` the k-diffusion view of a U-Net and one sampler step. Prompts are read with the library's one emphasis
parser and chunker (`lib_dumpunet.emphasis`, `lib_dumpunet.tokens`).
"""

from __future__ import annotations

from lib_dumpunet.estimate.estimator import Estimate, Metrics, Monitor, estimate
from lib_dumpunet.estimate.files import SavedEmbedding, check_name, read_embedding, write_embedding
from lib_dumpunet.estimate.settings import EstimateSettings, from_values

__all__ = [
    "Estimate",
    "EstimateSettings",
    "Metrics",
    "Monitor",
    "SavedEmbedding",
    "check_name",
    "estimate",
    "from_values",
    "read_embedding",
    "write_embedding",
]
