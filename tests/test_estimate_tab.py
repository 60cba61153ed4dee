"""The "Embedding Estimate" tab in the fake webui: the queued job on the loaded model's own hijacked encoders, the
file in the embeddings folder, the database reloaded so the word works at once, interrupts, and refusals."""

from __future__ import annotations

import pytest
import torch
import unets
import webuihelp
from estimatetab import embeddings_dir, run_button, tab_module, values

from lib_dumpunet.estimate.estimator import row_metrics
from lib_dumpunet.estimate.files import SUBFOLDER, write_embedding


@pytest.fixture(scope="module")
def w():
    with webuihelp.session(unets.SD1, build_ui=False) as session:
        yield session


def test_the_tab_is_registered_with_every_control(w):
    tabs = w.script_callbacks.ui_tabs_callback()
    (blocks, _title, elem_id) = next(t for t in tabs if t[1] == "Embedding Estimate")
    assert elem_id == "dumpunet_estimate"
    components = blocks.dumpunet_components
    assert set(components) == set(tab_module().FIELD_ORDER)
    assert [choice[0] if isinstance(choice, tuple) else choice for choice in components["optimizer"].choices] == list(
        tab_module().est.OPTIMIZERS
    )
    (start,) = [d for d in blocks.dependencies if len(d["inputs"]) == len(components) + 1]
    by_id = {id(c): name for name, c in components.items()}
    assert [by_id.get(id(blocks.blocks[i])) for i in start["inputs"][1:]] == list(tab_module().FIELD_ORDER)


def test_estimate_saves_a_word_the_webui_uses_at_once(w):
    curve, report = run_button(*values())
    path = embeddings_dir(w) / SUBFOLDER / "estcat.safetensors"
    assert path.is_file(), report
    assert list(curve["iteration"]) == list(range(1, 61))
    db = w.sd_hijack.model_hijack.embedding_db
    assert "estcat" in db.word_embeddings
    assert "dumpunetestimatetrainingword" not in db.word_embeddings
    sd_model = w.shared.sd_model
    with torch.no_grad():
        used = sd_model.get_learned_conditioning(["estcat"])
        target = sd_model.get_learned_conditioning(["a (red:1.4) cat"])
    cosine, distance = row_metrics(used[0, 1:4], target[0, 1:4])
    assert cosine >= 0.99
    reported = float(report.split("Relative distance to the target rows</th><td>")[1].split("→")[1].split("<")[0])
    assert distance <= reported + 1e-3


def test_refusals_show_the_message_and_write_nothing(w):
    write_embedding(embeddings_dir(w), "taken", {"*": torch.zeros(2, 64)}, step=0)
    before = sorted(embeddings_dir(w).rglob("*"))
    for changes, message in [
        ({"name": ""}, "Save name"),
        ({"name": "../../outside"}, "looks like a path"),
        ({"tokens": 0}, "tokens must be between 1 and 75"),
        ({"name": "taken"}, "exists"),  # no overwrite asked
    ]:
        out = run_button(*values(**changes))
        assert message in out[-1]
    assert sorted(embeddings_dir(w).rglob("*")) == before


def test_interrupt_saves_and_interrupt_not_save_discards(w, monkeypatch):
    tab = tab_module()
    seen = []

    def stop_at_two(self, done, total, loss):
        seen.append(done)
        if done == 2:
            w.shared.state.interrupt()

    monkeypatch.setattr(tab.WebuiMonitor, "iteration", stop_at_two)
    curve, report = run_button(*values(name="short"))
    assert seen == [1, 2] and len(curve) == 2
    assert (embeddings_dir(w) / SUBFOLDER / "short.safetensors").is_file()

    def discard_at_one(self, done, total, loss):
        seen.append(done)
        tab.interrupt(True)

    seen.clear()
    monkeypatch.setattr(tab.WebuiMonitor, "iteration", discard_at_one)
    curve, report = run_button(*values(name="dropped"))
    assert seen == [1]
    assert "not saved" in report
    assert not list(embeddings_dir(w).rglob("dropped.*"))


def test_an_embedding_the_model_cannot_use_is_refused(w):
    db = w.sd_hijack.model_hijack.embedding_db
    db.skipped_embeddings["oldneg"] = getattr(w, "textual_inversion.textual_inversion").Embedding(
        torch.zeros(1, 768), "oldneg"
    )
    try:
        out = run_button(*values(name="fresh", prompt="a cat, (oldneg:1.2)"))
    finally:
        del db.skipped_embeddings["oldneg"]
    assert "oldneg" in out[-1] and "not loaded for this model" in out[-1]
    assert not list(embeddings_dir(w).rglob("fresh.*"))


def test_unet_mode_on_the_loaded_model_leaves_weights_as_they_were(w, monkeypatch):
    tab = tab_module()
    assert tab.native_size(w.sd_model) == 512  # SD1; the test steps a 64×64 image (8×8 latent) instead, for time
    monkeypatch.setattr(tab, "native_size", lambda _model: 64)
    unet = w.sd_model.model.diffusion_model
    flags = [p.requires_grad for p in unet.parameters()]
    curve, report = run_button(*values(name="unetcat", mode="U-NET", steps=1, iterations=3, cfg_scale=5.0))
    assert len(curve) == 3, report
    assert "Matching loss" in report
    assert (embeddings_dir(w) / SUBFOLDER / "unetcat.safetensors").is_file()
    assert [p.requires_grad for p in unet.parameters()] == flags
    assert not any(p.grad is not None for p in unet.parameters())
