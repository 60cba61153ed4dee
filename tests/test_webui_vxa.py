"""The VXA tab, its API and the token inspector inside the fake webui (SD1 and SDXL), on the real tiny U-Nets and
CLIP encoders: the original's controls, a run from the button, clear messages for bad input, PNG info on disk,
the API routes, and tables that agree with the webui's own encoder."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
import torch
import unets
from fakewebui.fixture import webui
from fakewebui.tiny_model import ID_END, ID_START, clip_tokenizer
from PIL import Image

from lib_dumpunet.tokens import BpeVocabulary, EmbeddingIndex, TokenTable, chunk_prompt

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "a (red:1.2) hat, a long neck"


@pytest.fixture(scope="module", params=[unets.SD1, unets.SDXL], ids=lambda f: f.name)
def w(request):
    with webui(request.param, extensions=[ROOT]) as session:
        session.create_ui()
        yield session


def photo(width=96, height=72):
    return np.random.default_rng(0).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def the_tab(w):
    from lib_dumpunet.webui import vxa_tab

    tabs = [t for t in w.script_callbacks.ui_tabs_callback() if t[1] == "VXA"]
    assert len(tabs) == 1
    _blocks, title, elem_id = tabs[0]
    assert (title, elem_id) == ("VXA", "visualize_cross_attention")
    return vxa_tab


def button(vxa_tab):
    """The function the "Visualize Cross-Attention" button runs: wrapped by the webui's `wrap_gradio_gpu_call`
    (queue lock, state), as a user's click reaches it."""
    tab, c = vxa_tab.build()
    for dependency, fn in zip(tab.dependencies, tab.fns, strict=True):
        if c["button"]._id in dependency["targets"] or any(
            isinstance(t, list | tuple) and c["button"]._id in t for t in dependency["targets"]
        ):
            return fn.fn
    raise AssertionError("the button has no click handler")


def click(vxa_tab, image, *, tokens="hat, neck", t="1.0", layer="M00", per_item=False):
    """What the button sends: every input in the tab's order (the accordion's at their defaults)."""
    more = (True, 0, "posterior mean", "mean", 0.5, "jet", 0, per_item, True)
    return button(vxa_tab)(image, PROMPT, tokens, t, layer, "masked", *more)


def test_the_original_controls_labels_and_defaults(w):
    vxa_tab = the_tab(w)
    _tab, c = vxa_tab.build()
    assert c["prompt"].label == "Prompt" and c["prompt"].placeholder == "Prompt to be visualized"
    assert c["tokens"].label == "Indices of tokens to be visualized"
    assert (c["t"].label, c["t"].value) == ("Time embedding", "1.0")
    assert c["layer"].label == "Cross-attention layer" and c["layer"].value == "M00"
    assert c["layer"].choices[0] == "All layers" and "M00" in c["layer"].choices
    assert c["output"].label == "Output mode" and c["output"].value == "masked"
    assert {"masked", "grey"} <= set(c["output"].choices)
    assert c["button"].value == "Visualize Cross-Attention" and c["button"].elem_id == "vxa_gen_btn"
    assert c["image"].elem_id == "vxa_input_image" and c["output_image"].elem_id == "vxa_output"


def test_the_layer_list_is_the_loaded_models(w):
    vxa_tab = the_tab(w)
    layers = vxa_tab.layers_now()
    if w.flavour is unets.SDXL:
        assert "M00.attn2.9" in layers and "OUT11" not in layers
    else:
        assert layers[-1] == "OUT11" and len(layers) == 17


def test_a_click_shows_the_map_saves_it_with_its_settings(w):
    vxa_tab = the_tab(w)
    image, gallery, table, layer_update, message = click(vxa_tab, photo(), layer="All layers", per_item=True)
    assert image.shape == (72, 96, 3)
    assert gallery["visible"] is True and [label for _, label in gallery["value"]] == ["hat", "neck"]
    assert [row[1] for row in table[:4]] == ["<start>", "a", "red", "hat"] and table[2][4] == pytest.approx(1.2)
    assert "M00" in layer_update["choices"]
    assert "VXA tokens: &quot;hat, neck&quot;" in message or 'VXA tokens: "hat, neck"' in message
    saved = sorted((w.data_dir / "outputs" / "vxa").glob("*.png"))
    assert saved, "saved under outputs/vxa"
    info = Image.open(saved[-1]).info["parameters"]
    assert "VXA prompt:" in info and "VXA layer: All layers" in info and "Model:" in info


@pytest.mark.parametrize(
    ("image", "tokens", "t", "message"),
    [
        (None, "hat", "1.0", "no image"),
        ("photo", "hta", "1.0", "no word 'hta'"),
        ("photo", "1, 999", "1.0", "past the end"),
        ("photo", "hat", "abc", "Time embedding"),
        ("photo", "hat", "1000", "outside 0–999"),
    ],
)
def test_bad_input_is_a_message_never_a_copy_of_the_input(w, image, tokens, t, message):
    vxa_tab = the_tab(w)
    shown, gallery, _table, _layers, html = click(vxa_tab, photo() if image == "photo" else None, tokens=tokens, t=t)
    assert shown is None and gallery["visible"] is False
    assert message in html and "error-text-color" in html


def test_the_api_runs_vxa_and_refuses_mistakes(w):
    from fastapi.testclient import TestClient

    the_tab(w)
    client = TestClient(w.app)
    buffer = io.BytesIO()
    Image.fromarray(photo()).save(buffer, format="PNG")
    body = {"image": base64.b64encode(buffer.getvalue()).decode(), "prompt": PROMPT, "tokens": "neck", "t": 500}
    answer = client.post("/dumpunet/v1/vxa", json={**body, "layer": "All layers", "output": "colour"})
    assert answer.status_code == 200, answer.text
    data = answer.json()
    assert Image.open(io.BytesIO(base64.b64decode(data["image"]))).size == (96, 72)
    assert data["columns"] == [7] and "VXA output: colour" in data["info"]
    bad = client.post("/dumpunet/v1/vxa", json={**body, "tokens": "elbow"})
    assert bad.status_code == 422 and "no word 'elbow'" in bad.json()["detail"]
    typo = client.post("/dumpunet/v1/vxa", json={**body, "layr": "M00"})
    assert typo.status_code == 422 and "unknown field(s) layr" in typo.json()["detail"]
    tokens = client.post("/dumpunet/v1/tokens", json={"prompt": PROMPT}).json()
    assert tokens["headers"][:3] == ["position", "token", "word"] and tokens["labels"][:2] == ["BOS", "a"]
    assert "M00" in client.get("/dumpunet/v1/vxa/layers").json()["layers"]


def test_the_webuis_chunks_and_the_librarys_agree(w):
    """The inspector reads the webui encoder's chunks; the library's own chunker follows the same rules."""
    from lib_dumpunet.webui.tokens import token_table

    model = w.sd_model
    vec = torch.zeros(2, 64)  # SD1's context and each SDXL encoder are 64 wide
    emb = w.textual_inversion.textual_inversion.Embedding(
        vec if w.flavour is unets.SD1 else {"clip_l": vec, "clip_g": vec}, "myemb"
    )
    emb.vectors, emb.shape = 2, 64  # set by whoever builds an Embedding, as the webui's loader does
    w.sd_hijack.model_hijack.embedding_db.register_embedding(emb, model)
    tok = clip_tokenizer()

    def tokenize(texts):
        return tok(list(texts), truncation=False, add_special_tokens=False)["input_ids"] if texts else []

    index = EmbeddingIndex({"myemb": 2}, tokenize)
    comma = tok.get_vocab()[",</w>"]
    prompts = [
        PROMPT,
        "(myemb:1.1) " + ", ".join(["one two three four five six"] * 15) + " BREAK [hat]",
        "a\\(b\\) [c] (unclosed BREAK d",
    ]
    for prompt in prompts:
        ours = chunk_prompt(prompt, tokenize, start=ID_START, end=ID_END, comma=comma, embeddings=index)
        library = TokenTable.from_chunks(ours, BpeVocabulary.of(tok))
        webuis = token_table(prompt, model)
        assert [r.cells() for r in webuis.rows] == [r.cells() for r in library.rows], prompt
    table = token_table(prompts[1], model)
    assert [r.embedding for r in table.rows[1:3]] == ["myemb", "myemb"]
    from lib_dumpunet.webui.tokens import token_labels  # what WebuiHost gives the Q*K maps

    assert token_labels(prompts[1], model)[:3] == ["BOS", "<myemb>", "<myemb>"]


def test_a_checkpoint_switch_is_followed(w):
    """The original kept the modules of the model loaded when the tab was built (VXA #3); here the layer list and
    the hooks follow whatever model is loaded when the button is pressed. Runs last: it loads another model."""
    from fakewebui.tiny_model import build

    vxa_tab = the_tab(w)
    press = button(vxa_tab)  # the tab was built with the first model
    old_unet = w.unet
    other = unets.SD1 if w.flavour is unets.SDXL else unets.SD2
    info = w.sd_models.CheckpointInfo(f"tiny-{other.name}-switch.safetensors", builder=lambda: build(other, 3))
    w.sd_models.load_model(info)
    try:
        assert w.unet is not old_unet
        more = (True, 0, "posterior mean", "mean", 0.5, "jet", 0, False, False)
        layer = "OUT11"  # SD1 and SD2 have it, SDXL has not
        image, _gallery, _table, layers, message = press(photo(), PROMPT, "neck", "500", layer, "grey", *more)
        assert image is not None and image.shape == (72, 96, 3), message
        assert layer in layers["choices"]
        assert f"Model: tiny-{other.name}-switch" in message
        for unet in (old_unet, w.unet):
            assert all(not m._forward_hooks and not m._forward_pre_hooks for m in unet.modules())
    finally:
        w.sd_models.load_model(w.checkpoint_info)
