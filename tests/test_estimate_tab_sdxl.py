"""The "Embedding Estimate" tab on an SDXL model in the fake webui: clip_l and clip_g learn through sgm's conditioner,
which runs its embedders without gradients unless they are marked trainable (only while the tab encodes)."""

from __future__ import annotations

import unets
import webuihelp
from estimatetab import embeddings_dir, run_button, values

from lib_dumpunet.estimate.files import SUBFOLDER, read_embedding


def test_sdxl_learns_both_encoders_through_the_conditioner():
    with webuihelp.session(unets.SDXL, build_ui=False) as xl:
        from lib_dumpunet.webui import estimate_tab as tab

        curve, report = run_button(*values(name="xlcat", iterations=5))
        path = embeddings_dir(xl) / SUBFOLDER / "xlcat.safetensors"
        assert path.is_file(), report
        vectors = read_embedding(path)
        assert {k: tuple(v.shape) for k, v in vectors.items()} == {"clip_l": (3, 64), "clip_g": (3, 64)}
        assert curve["loss"].iloc[-1] < curve["loss"].iloc[0]
        embedders = [e for _, e in tab._text_embedders(xl.sd_model)]
        assert not any(e.is_trainable for e in embedders)
