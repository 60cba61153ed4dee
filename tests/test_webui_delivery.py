"""Delivering maps in the (fake) webui (issue 11): palette images for PNG and RGB for JPEG/WebP in the gallery, on
disk and in API answers; the display minimum for tiny maps; the readable `Dump U-Net:` infotext and its paste."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
import unets
from PIL import Image
from webuihelp import features, hooks_on, map_labels, section_args, session

from lib_dumpunet.settings import FIELDS, JobSettings, changed_values, from_mapping
from lib_dumpunet.webui import infotext


@pytest.fixture(scope="module")
def w():
    with session(unets.SD1) as w:
        yield w


@pytest.fixture(autouse=True)
def _restore_options(w):
    saved = dict(w.shared.opts.data)
    yield
    w.shared.opts.data.clear()
    w.shared.opts.data.update(saved)
    assert hooks_on(w.unet) == 0


def api_image(image: Image.Image, samples_format: str) -> Image.Image:
    """An image as the webui's API answers it (api.encode_pil_to_base64, in our words): PNG keeps the mode and its
    text chunks; JPEG turns only RGBA into RGB (anything else PIL cannot write as JPEG fails); WebP as PIL saves it.
    Decoded back from base64, as a client would."""
    buffer = io.BytesIO()
    kind = samples_format.lower()
    if kind == "png":
        image.save(buffer, format="PNG")
    elif kind in ("jpg", "jpeg"):
        image = image.convert("RGB") if image.mode == "RGBA" else image
        image.save(buffer, format="JPEG", quality=80)
    elif kind == "webp":
        image.save(buffer, format="WEBP", quality=80)
    else:
        raise ValueError(f"the API cannot encode {samples_format}")
    payload = base64.b64encode(buffer.getvalue())
    return Image.open(io.BytesIO(base64.b64decode(payload)))


_JOB = {
    **features("IN00, M00", **{"features.steps": "1", "features.average": "sum"}),
    "attention.enabled": True,
    "attention.layers": "IN01",
    "attention.steps": "1",
    "attention.outputs": ["Q*K"],  # token labels: the palette's greys
    "attention.self_attention": True,  # query-point marks: the palette's white
    "output.save_images": True,
}


@pytest.mark.parametrize("samples_format", ["png", "jpg", "webp"])
def test_every_samples_format_saves_shows_and_returns_maps(w, tmp_path, samples_format):
    w.shared.opts.data["samples_format"] = samples_format
    p = w.txt2img(section_args(w, _JOB))
    p.outpath_samples = str(tmp_path)
    processed = w.run(p)
    first = processed.index_of_first_image
    labels = map_labels(w, processed)
    maps = [image for image, label in zip(processed.images[first:], labels, strict=True) if label]
    assert len(maps) >= 6
    expected_mode = "P" if samples_format == "png" else "RGB"
    assert {m.mode for m in maps if m.mode != "L"} == {expected_mode}
    for image in processed.images[first:]:
        returned = api_image(image, samples_format)
        assert returned.size == image.size
        returned.load()
    saved = sorted(Path(tmp_path).rglob(f"*dumpunet*.{samples_format}"))
    assert len(saved) == len(maps)
    for file in saved:
        with Image.open(file) as image:
            image.load()
            assert image.mode in (("P", "L") if samples_format == "png" else ("RGB", "L"))
    assert not list(Path(tmp_path).rglob("*dumpunet*.png")) or samples_format == "png"


def test_palette_maps_look_like_the_rgb_ones(w, tmp_path):
    """The same job for PNG (palette) and for JPEG (RGB): the RGB map shows exactly the palette map's colours."""
    settings = features("IN00", **{"features.steps": "1"})
    png = w.run(w.txt2img(section_args(w, settings)))
    w.shared.opts.data["samples_format"] = "jpg"
    rgb = w.run(w.txt2img(section_args(w, settings)))
    palette_map, rgb_map = png.images[png.index_of_first_image + 1], rgb.images[rgb.index_of_first_image + 1]
    assert palette_map.mode == "P" and rgb_map.mode == "RGB"
    assert np.array_equal(np.asarray(palette_map.convert("RGB")), np.asarray(rgb_map))


def test_a_jpeg_copy_of_a_big_map_gets_rgb(w):
    """With "Save copy of large images as JPG", maps over the side limit are handed over as RGB even for PNG."""
    from lib_dumpunet.webui import outputs

    w.shared.opts.data.update(export_for_4chan=True, target_side_length=100, img_downscale_threshold=4.0)
    big, small = Image.new("P", (150, 20)), Image.new("P", (50, 20))
    assert outputs.deliverable(big).mode == "RGB"
    assert outputs.deliverable(small).mode == "P"
    w.shared.opts.data["export_for_4chan"] = False
    assert outputs.deliverable(big).mode == "P"


def test_tiny_maps_are_enlarged_in_the_gallery_only(w, tmp_path):
    settings = features("M00", **{"features.steps": "1", "output.save_images": True})  # 1×1 tiles: a 31×15 map
    p = w.txt2img(section_args(w, settings))
    p.outpath_samples = str(tmp_path)
    processed = w.run(p)
    shown = processed.images[processed.index_of_first_image + 1]
    (saved,) = Path(tmp_path).rglob("*dumpunet*.png")
    with Image.open(saved) as native:
        assert native.size == (31, 15)
        factor = shown.width // native.width
        assert factor == 9, "the smallest whole factor that reaches 256 px on the longer side"
        assert shown.size == (31 * factor, 15 * factor)
        assert np.array_equal(np.asarray(shown)[::factor, ::factor], np.asarray(native))
    p = w.txt2img(section_args(w, {**settings, "output.display_min": 0, "output.save_images": False}))
    processed = w.run(p)
    assert processed.images[processed.index_of_first_image + 1].size == (31, 15)


# --- infotext ---------------------------------------------------------------------------------------------------

_CHANGED = {
    **features("IN00, IN05-OUT11(+2)"),
    "features.colors.gain": 2.5,
    "features.colors.h": "clip(v, 0, 1)",
    "attention.outputs": ["K", "Q*K"],
    "attention.query_points": "0.5,0.5; 0.25,0.75",
    "layer_prompt.dump.folder": "runs/a b",
    "output.display_min": 512,
}


def _paste(w, text: str) -> dict:
    ours = [f for f in w.infotext_utils.paste_fields["txt2img"]["fields"] if f[1] in infotext.PASTE_NAMES]
    paste = w.infotext_utils.connect_paste(None, ours, None, None, "txt2img")
    return dict(zip(["enable", *(f.path for f in FIELDS)], (u.get("value") for u in paste(text)), strict=True))


def test_the_infotext_entry_reads_as_key_value_pairs(w):
    processed = w.run(w.txt2img(section_args(w, _CHANGED)))
    text = processed.infotexts[processed.index_of_first_image]
    entry = next(line for line in text.splitlines() if "Dump U-Net:" in line)
    assert (
        'Dump U-Net: "features.enabled: True, features.layers: IN00, IN05-OUT11(+2), features.colors.gain: 2.5, '
        "features.colors.h: clip(v, 0, 1), attention.outputs: K+Q*K, attention.query_points: 0.5,0.5; 0.25,0.75, "
        'layer_prompt.dump.folder: runs/a b, output.display_min: 512"'
    ) in entry
    assert '\\"' not in entry and "{" not in entry
    parsed = w.infotext_utils.parse_generation_parameters(text)
    assert infotext.restored(parsed) == {k: tuple(v) if isinstance(v, list) else v for k, v in _flat().items()}


def _flat() -> dict:
    return changed_values(from_mapping(_CHANGED))


def test_the_infotext_pastes_back_every_setting(w):
    processed = w.run(w.txt2img(section_args(w, _CHANGED)))
    values = _paste(w, processed.infotexts[processed.index_of_first_image])
    assert values["enable"] is True
    expected = {f.path: f.default for f in FIELDS} | _flat()
    for f in FIELDS:
        want = expected[f.path]
        assert values[f.path] == (list(want) if isinstance(want, tuple) else want), f.path
    assert from_mapping({k: v for k, v in values.items() if k != "enable"}) == from_mapping(_CHANGED)


def test_texts_that_look_like_keys_are_quoted_and_survive(w):
    odd = {
        **features("IN00"),
        "features.colors.h": "clip(v, 0, 1), features.layers: M00",
        "features.colors.s": " 1.0",
        "attention.query_points": "",
        "features.dump.folder": '"quoted"',
    }
    text = infotext.encode(from_mapping(odd))
    assert from_mapping(infotext.restored({infotext.INFOTEXT_KEY: text})) == from_mapping(odd)
    quoted = w.infotext_utils.quote(text)
    parsed = w.infotext_utils.parse_generation_parameters(f"a cat\nSteps: 2, Seed: 1, Dump U-Net: {quoted}")
    assert parsed[infotext.INFOTEXT_KEY] == text


def test_the_old_json_entry_still_pastes(w):
    old = 'a cat\nSteps: 2, Seed: 1, Dump U-Net: "{\\"features.enabled\\":true,\\"features.layers\\":\\"IN00,M00\\"}"'
    values = _paste(w, old)
    assert values["enable"] is True
    assert values["features.enabled"] is True
    assert values["features.layers"] == "IN00,M00"
    assert values["features.steps"] == ""


def test_an_entry_in_neither_form_changes_nothing(w):
    values = _paste(w, 'a cat\nSteps: 2, Seed: 1, Dump U-Net: "this is: not, our format"')
    assert set(values.values()) == {None}


def test_a_default_job_encodes_to_its_switches_only():
    assert infotext.encode(from_mapping(features("IN00"))) == "features.enabled: True, features.layers: IN00"
    assert infotext.encode(JobSettings()) == ""
