"""The "Embedding Estimate" tab on an SDXL model in the fake webui: clip_l and clip_g learn through sgm's conditioner,
which runs its embedders without gradients unless they are marked trainable (only while the tab encodes), and
its U-Net through the webui's apply_model with the `vector`."""

from __future__ import annotations

import torch
import unets
import webuihelp
from estimatetab import embeddings_dir, run_button, values

from lib_dumpunet.estimate.files import SUBFOLDER, read_embedding


def test_sdxl_learns_both_encoders_through_the_conditioner_and_unet(monkeypatch):
    with webuihelp.session(unets.SDXL, build_ui=False) as xl:
        from lib_dumpunet.webui import estimate_tab as tab

        assert tab.native_size(xl.sd_model) == 1024  # the test steps a 64×64 image (8×8 latent) instead, for time
        monkeypatch.setattr(tab, "native_size", lambda _model: 64)
        encoder = tab.WebuiEncoder(xl.sd_model, 64, 64, empty_is_negative=True)
        start = encoder.token_rows("red cat")
        curve, report = run_button(
            *values(name="xlcat", mode="U-NET", init_text="red cat", vectors_from="init text", steps=1, iterations=2)
        )
        path = embeddings_dir(xl) / SUBFOLDER / "xlcat.safetensors"
        assert path.is_file(), report
        assert len(curve) == 2
        vectors = read_embedding(path)
        assert {k: tuple(v.shape) for k, v in vectors.items()} == {"clip_l": (2, 64), "clip_g": (2, 64)}
        for part in ("clip_l", "clip_g"):
            assert not torch.allclose(vectors[part], start[part].cpu()), part
        assert "xlcat" in xl.sd_hijack.model_hijack.embedding_db.word_embeddings
        assert not any(embedder.is_trainable for _, embedder in encoder.embedders)
