"""The extension's UI in real gradio 3.41 (as the webui 1.10 builds it), its info panel, X/Y/Z axes and the API."""

from __future__ import annotations

import gradio as gr
import numpy as np
import pytest
import unets
from webuihelp import SCRIPT, SECTION, features, hooks_on, map_labels, script_args, section_args, session

from lib_dumpunet.errors import DumpUnetError
from lib_dumpunet.settings import FIELDS


@pytest.fixture(scope="module")
def w():
    with session(unets.SD1) as w:
        yield w


def script(w, title: str, *, is_img2img: bool = False):
    return next(s for s in w.runner(is_img2img).scripts if s.title() == title)


def by_id(w, elem_id: str):
    return next(b for b in w.demo.blocks.values() if getattr(b, "elem_id", None) == elem_id)


def by_class(w, name: str):
    return next(b for b in w.demo.blocks.values() if name in (getattr(b, "elem_classes", None) or []))


def event_for(w, component, value):
    """Call the function the UI attached to `component`'s change event with `value`."""
    for fn in w.demo.fns:
        if [b._id for b in fn.inputs] == [component._id] and fn.fn is not None:
            return fn.fn(value)
    raise LookupError("no change handler")


# --- building ---------------------------------------------------------------------------------------------------


def test_gradio_is_the_webuis_version():
    assert gr.__version__ == "3.41.2"


@pytest.mark.parametrize("is_img2img", [False, True])
def test_both_entries_in_both_tabs(w, is_img2img):
    runner = w.runner(is_img2img)
    assert SCRIPT in [s.title() for s in runner.selectable_scripts]
    assert SECTION in [s.title() for s in runner.alwayson_scripts]
    dropdown, section = script(w, SCRIPT, is_img2img=is_img2img), script(w, SECTION, is_img2img=is_img2img)
    assert dropdown.args_to - dropdown.args_from == len(FIELDS)
    assert section.args_to - section.args_from == 1 + len(FIELDS)


def test_every_element_id_of_ours_is_unique_in_the_page(w):
    """Both tabs, both entries: no id twice. gradio 3.41 puts an HTML component's id on two nested elements, so
    ours have none (classes instead)."""
    blocks = list(w.demo.blocks.values())
    ours = [b.elem_id for b in blocks if str(getattr(b, "elem_id", None) or "").startswith("dumpunet")]
    assert len(ours) >= 150, "every input of both entries in both tabs"
    assert len(ours) == len(set(ours)), sorted({i for i in ours if ours.count(i) > 1})
    others = [b.elem_id for b in blocks if getattr(b, "elem_id", None) and b.elem_id not in ours]
    assert not set(ours) & set(others)
    html_with_ids = [b.elem_id for b in blocks if isinstance(b, gr.HTML) and str(b.elem_id or "").startswith("dump")]
    assert html_with_ids == []
    for tab in ("txt2img", "img2img"):
        for prefix in (f"dumpunet-{tab}", f"dumpunet-{tab}-section"):
            for panel in ("features", "attention", "layerprompt-diff"):
                assert by_class(w, f"{prefix}-{panel}-layerinfo") is not None
                assert by_class(w, f"{prefix}-{panel}-colorization-desc") is not None


def test_controls_carry_the_declared_defaults_in_order(w):
    for title, offset in ((SCRIPT, 0), (SECTION, 1)):
        controls = script(w, title).controls[offset:]
        for f, control in zip(FIELDS, controls, strict=True):
            expected = list(f.default) if isinstance(f.default, tuple) else f.default
            assert control.value == expected, f.path
    assert script(w, SECTION).controls[0].value is False, "the section is off by default"


def test_the_originals_labels_ids_and_ranges(w):
    checkbox = by_id(w, "dumpunet-txt2img-features-checkbox")
    assert (checkbox.label, checkbox.value) == ("Extract U-Net features", False)
    assert by_id(w, "dumpunet-txt2img-features-layer").placeholder == "eg. IN00-OUT03(+2),OUT10"
    assert by_id(w, "dumpunet-txt2img-features-steps").label == "Image saving steps"
    average = by_id(w, "dumpunet-txt2img-features-average")
    assert (average.choices, average.value) == (
        [("disable",) * 2, ("sum",) * 2, ("1-norm",) * 2, ("2-norm",) * 2],
        "disable",
    )
    method = by_id(w, "dumpunet-txt2img-layerprompt-diff-colorization-method")
    assert (method.label, method.value) == ("Colorize method", "Custom")
    assert by_id(w, "dumpunet-img2img-attention-checkbox").label == "Extract attention layers' features"
    assert by_id(w, "dumpunet-txt2img-section-layerprompt-checkbox").label == "Enable Layer Prompt"
    controls = dict(zip([f.path for f in FIELDS], script(w, SCRIPT).controls, strict=True))
    clamp_min, gain = controls["features.colors.clamp_min"], controls["features.colors.gain"]
    assert (clamp_min.minimum, clamp_min.maximum, clamp_min.value, clamp_min.step) == (-10, -0.1, -1, 0.1)
    assert (gain.minimum, gain.maximum, gain.value) == (0.1, 10, 1.0)
    assert controls["features.colors.h"].value == "(2+v)/3"
    undescribed = [path for path, c in controls.items() if not getattr(c, "info", None)]
    assert undescribed == [], "every control has a description"


def test_colour_rows_show_and_hide_as_in_the_original(w):
    controls = dict(zip([f.path for f in FIELDS], script(w, SCRIPT).controls, strict=True))
    assert event_for(w, controls["features.colors.method"], "White/Black")["visible"] is False
    assert event_for(w, controls["features.colors.method"], "Custom")["visible"] is True
    linear, sigmoid = event_for(w, controls["features.colors.transform"], "Sigmoid")
    assert (linear["visible"], sigmoid["visible"]) == (False, True)
    rgb, hsl = event_for(w, controls["features.colors.space"], "RGB")
    assert (rgb["visible"], hsl["visible"]) == (True, False)


# --- Selected Layer Info -------------------------------------------------------------------------------------------


def _info(w, tab, width=520, height=776, **values):
    from lib_dumpunet.webui.entry import refresh

    return refresh(tab, {f"{tab}.{k}": v for k, v in values.items()}, width, height)


def test_info_shows_shapes_from_the_loaded_model(w):
    html = _info(w, "features", layers="IN00-IN01, M00")
    assert "IN00" in html
    assert "(4, 97, 65) → (32, 97, 65)" in html
    assert "Res, Trans×1" in html
    attention = _info(w, "attention", layers="IN01", outputs=["Q*K"])
    assert "IN01.attn2" in attention
    assert "97×65 queries" in attention


def test_info_shows_mistakes_before_generation(w):
    html = _info(w, "features", layers="IN00-IN12")
    assert "is not a block of this model" in html
    assert "^~~~" in html
    attack = _info(w, "features", layers="IN00", **{"colors.h": "__import__('os').system('id')"})
    assert "dumpunet-error" in attack
    assert "H" in attack
    assert "Enter Layers" in _info(w, "layer_prompt")


def test_info_never_starts_loading_a_model(w, monkeypatch):
    loads = []
    monkeypatch.setattr(w.sd_models, "model_data", w.sd_models.ModelData())  # nothing loaded yet
    monkeypatch.setattr(w.sd_models, "load_model", lambda *a, **k: loads.append(a))
    assert "No Stable Diffusion U-Net is loaded" in _info(w, "features", layers="IN00")
    assert loads == [], "typing in Layers does not load a checkpoint"
    w.shared.sd_model  # noqa: B018 — the webui's own accessor does
    assert len(loads) == 1


def test_info_follows_the_size_sliders(w):
    width = by_id(w, "txt2img_width")
    info = by_class(w, "dumpunet-txt2img-features-layerinfo")
    wired = [fn for fn in w.demo.fns if info in fn.outputs and width in fn.inputs]
    assert wired, "changing the width refreshes the panel"
    inputs = wired[0].inputs
    values = [c.value for c in inputs]
    values[[c._id for c in inputs].index(by_id(w, "dumpunet-txt2img-features-layer")._id)] = "M00"
    values[inputs.index(width)] = 256
    html = wired[0].fn(*values)
    assert "256×512" in html
    assert "(128, 8, 4) → (128, 8, 4)" in html, "M00 of the tiny model at a 32×64 latent"


# --- X/Y/Z ---------------------------------------------------------------------------------------------------------


def test_axes_are_registered_once_even_after_a_reload(w):
    labels = [o.label for o in w.xyz_module().axis_options if o.label.startswith("Dump U-Net")]
    assert labels == [
        "Dump U-Net: per-block prompt blocks",
        "Dump U-Net: layers",
        "Dump U-Net: steps",
        "Dump U-Net: heat map word",
    ]
    w.reload_ui()
    again = [o.label for o in w.xyz_module().axis_options if o.label.startswith("Dump U-Net")]
    assert again == labels
    ours = [c for c in w.script_callbacks.callback_map["callbacks_cfg_denoiser"] if "dumpunet" in c.script]
    assert len(ours) == 1


def test_per_block_prompt_axis_sweeps_the_constructs(w):
    p = w.txt2img(prompt="a cat, (~: OUT11: red hat ; _: plain :~)", seed=5)
    processed = w.xyz_plot(p, "Dump U-Net: per-block prompt blocks", "IN00, M00-OUT00(+1)", include_lone_images=True)
    cells = processed.images[processed.index_of_first_image :]
    assert len(cells) == 3
    assert "(~: IN00: red hat ; _: plain :~)" in processed.infotexts[-3]
    assert "(~: OUT00: red hat ; _: plain :~)" in processed.infotexts[-1]
    arrays = [np.asarray(c) for c in cells]
    assert not np.array_equal(arrays[0], arrays[1])
    assert hooks_on(w.unet) == 0


def test_per_block_prompt_axis_needs_a_construct(w):
    with pytest.raises(DumpUnetError, match="needs a"):
        w.xyz_plot(w.txt2img(prompt="no constructs"), "Dump U-Net: per-block prompt blocks", "IN00")


def test_layers_axis_shows_each_blocks_averaged_map(w):
    processed = w.xyz_plot(w.txt2img(seed=5), "Dump U-Net: layers", "IN00, M00", include_lone_images=True)
    cells = processed.images[processed.index_of_first_image :]
    assert [c.size for c in cells] == [(64, 64), (64, 64)], "maps scaled to the image so the grid lines up"
    assert 'Dump U-Net map: "IN00, step 1, U-Net features, averaged"' in processed.infotexts[-2]
    assert not np.array_equal(np.asarray(cells[0]), np.asarray(cells[1]))


def test_steps_axis(w):
    p = w.txt2img(section_args(w, features("M00")), seed=5, steps=3)
    processed = w.xyz_plot(p, "Dump U-Net: steps", "1-3(+2)", include_lone_images=True)
    assert [t.rsplit("Dump U-Net map: ", 1)[1] for t in processed.infotexts[-2:]] == [
        '"M00, step 1, U-Net features, averaged"',
        '"M00, step 3, U-Net features, averaged"',
    ]


def test_steps_axis_without_blocks_says_what_is_missing(w):
    w.errors.reported.clear()
    w.xyz_plot(w.txt2img(seed=5, steps=3), "Dump U-Net: steps", "1-3(+2)")
    assert any(
        "the Dump U-Net: steps axis shows the averaged map of blocks that nothing" in r for r in w.errors.reported
    )
    assert hooks_on(w.unet) == 0


# --- API ---------------------------------------------------------------------------------------------------------


def test_api_positional_and_dict_arguments_agree(w):
    values = [f.default for f in FIELDS]
    paths = [f.path for f in FIELDS]
    values[paths.index("features.enabled")] = True
    values[paths.index("features.layers")] = "IN00"
    positional = w.api_script_args(w.runner(), alwayson_scripts={SECTION: {"args": [True, *values]}})
    by_name = section_args(w, features("IN00"))
    labels = [map_labels(w, w.run(w.txt2img(args))) for args in (positional, by_name)]
    assert labels[0] == labels[1] == [None, "IN00, step 1, U-Net features", "IN00, step 2, U-Net features"]


def test_api_dropdown_script_by_name(w):
    processed = w.run(w.txt2img(script_args(w, features("OUT11", **{"features.steps": "2"}))))
    assert map_labels(w, processed) == [None, "OUT11, step 2, U-Net features"]
    assert hooks_on(w.unet) == 0


def test_the_dropdown_script_wins_over_the_section(w):
    args = script_args(w, features("OUT11", **{"features.steps": "2"}))
    section = script(w, SECTION)
    args[section.args_from : section.args_from + 2] = [True, features("IN00")]
    processed = w.run(w.txt2img(args))
    assert map_labels(w, processed) == [None, "OUT11, step 2, U-Net features"]
    assert "the section was ignored" in processed.comments


# --- host details --------------------------------------------------------------------------------------------------


def test_dump_folders_are_confined_when_the_webui_is_shared(w):
    w.shared.cmd_opts.listen = True
    try:
        outside = _info(w, "features", layers="IN00", **{"dump.enabled": True, "dump.folder": "/tmp/elsewhere"})
        inside = _info(w, "features", layers="IN00", **{"dump.enabled": True, "dump.folder": "dumps/run1"})
    finally:
        w.shared.cmd_opts.listen = False
    assert "only be written inside its output folder" in outside
    assert "dumpunet-error" not in inside
    local = _info(w, "features", layers="IN00", **{"dump.enabled": True, "dump.folder": "/tmp/elsewhere"})
    assert "dumpunet-error" not in local, "a local webui may write where its user says"


def test_token_labels_come_from_the_webuis_tokenizer(w):
    from lib_dumpunet.webui.host import WebuiHost

    host = WebuiHost(w.txt2img())
    labels = host.token_labels("a photo of a cat")
    assert labels[:7] == ["BOS", "a", "photo", "of", "a", "cat", "EOS"]
    assert labels[7:] == ["pad"] * 70
    assert len(host.token_labels("cat " * 80)) == 154
    assert host.split_and("a cat AND a dog :1.5") == ["a cat", " a dog"], "exactly the webui's sub-prompts"
    schedule = host.encode("a [cat:dog:1] here", 0)
    assert [s.end_at_step for s in schedule] == [1, 2]
    assert schedule[0].cond.shape == (77, unets.SD1.context_dim)
    assert not schedule[0].cond.equal(schedule[1].cond)
