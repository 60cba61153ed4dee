"""`dumpunet heatmap` end to end: word pictures named as the webui names them, for every image of a batch, AND
sub-prompts and words past token 75; the page's tab; words checked before generation (exit 2); the image unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import tiny_diffusers
from PIL import Image

from lib_dumpunet.cli import main
from lib_dumpunet.cli.heatmap import heat_words
from lib_dumpunet.cli.main import DEFAULT_MODEL
from lib_dumpunet.diffusers.generate import Generation, sample
from lib_dumpunet.diffusers.model import load_model
from lib_dumpunet.heatmap import HeatmapSettings

FILLER = " ".join(["green"] * 80)  # 80 tokens: what follows sits in the second chunk (columns 77…)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tiny_diffusers.build_folder(tmp_path_factory.mktemp("models"), "sd1")


@pytest.fixture(scope="module")
def model(folder):
    return load_model(folder)


def _run(folder, out, *args: str) -> int:
    return main(["heatmap", *args, "--model", str(folder), "--out", str(out), "--steps", "2", "--quiet"])


def _pngs(folder) -> list[str]:
    return sorted(p.name for p in folder.glob("*.png"))


def test_each_image_of_a_batch_gets_its_words_strip_and_per_step_strips(folder, tmp_path, capsys):
    code = _run(folder, tmp_path, "-p", "a red circle AND a blue square", "--words", "circle, blue square",
                "--per-step", "--seed", "7", "--batch-size", "2", "--batch-count", "2")  # fmt: skip
    assert code == 0
    assert "index.html" in capsys.readouterr().out
    places = ["blue_square", "blue_square_per_step", "circle", "circle_per_step", "words"]
    suffixes = ["", *(f"-dumpunet-heat-{place}-002" for place in places)]
    stems = ["00000-7", "00001-8", "00002-9", "00003-10"]
    assert _pngs(tmp_path) == sorted(f"{stem}{s}.png" for stem in stems for s in suffixes)
    info = Image.open(tmp_path / "00002-9-dumpunet-heat-circle-002.png").info["parameters"]
    assert info.startswith("a red circle AND a blue square\n")
    assert "Seed: 9," in info
    assert '"heatmap.words":"circle, blue square"' in info.replace('\\"', '"')
    assert info.endswith('Dump U-Net map: "heat map: circle"')
    strip = Image.open(tmp_path / "00000-7-dumpunet-heat-words-002.png")
    word = Image.open(tmp_path / "00000-7-dumpunet-heat-circle-002.png")
    assert strip.width == 2 * word.width + 2  # two words side by side, a 2-pixel gap
    page = (tmp_path / "index.html").read_text("utf-8")
    assert page.count('data-tab="i') == 4  # one tab per image: the word heat maps
    assert "Word heat maps" in page
    assert all(name in page for name in _pngs(tmp_path))


def test_a_word_in_two_and_sub_prompts_is_found_in_both(model):
    (circle,) = heat_words(model, "a red circle AND a blue circle", "", HeatmapSettings(words="circle"))
    assert [(row, cols) for row, cols in circle.rows] == [(("cond", 0), (3,)), (("cond", 1), (3,))]


def test_a_word_past_token_75_and_a_negative_word_are_found_and_mapped(folder, model, tmp_path):
    prompt = f"{FILLER} circle"
    settings = HeatmapSettings(words="circle", negative_words="blurry")
    circle, blurry = heat_words(model, prompt, "blurry", settings)
    ((_, cols),) = circle.rows
    assert cols[0] > 77  # the second chunk
    assert blurry.rows == ((("uncond", 0), (1,)),)
    code = _run(folder, tmp_path, "-p", prompt, "-n", "blurry", "--words", "circle", "--negative-words", "blurry")
    assert code == 0
    assert _pngs(tmp_path) == ["00000-1-dumpunet-heat-blurry_negative-002.png", "00000-1-dumpunet-heat-circle-002.png",
                               "00000-1-dumpunet-heat-words-002.png", "00000-1.png"]  # fmt: skip
    strip_info = Image.open(tmp_path / "00000-1-dumpunet-heat-words-002.png").info["parameters"]
    assert strip_info.endswith('Dump U-Net map: "heat maps: circle, blurry (negative)"')


def test_a_word_inside_an_emphasis_is_found(model):
    (cat,) = heat_words(model, "a (red circle:1.3) on white", "", HeatmapSettings(words="circle"))
    assert cat.rows == ((("cond", 0), (3,)),)


@pytest.mark.parametrize(
    ("args", "first_line", "caret"),
    [
        (["--words", "circle, hexagon"], "no word 'hexagon' in the prompt", "            ^~~~~~~"),
        (["--negative-words", "sharp"], "Word heat maps › Negative words: no word 'sharp'", "    ^~~~~"),
        (["--layers", "IN00"], "none of IN00 has cross-attention", None),
        (["--map-steps", "5"], "step 5 is beyond the 2 steps", None),
        (["--set", "heatmap.heads=median"], "'heatmap.heads' must be one of", None),
    ],
)
def test_a_bad_word_or_setting_exits_2_before_generation(folder, tmp_path, capsys, args, first_line, caret):
    assert _run(folder, tmp_path, "-p", "a red circle", "-n", "blurry", *args) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("dumpunet: error: ")
    assert first_line in err[0]
    if caret is not None:
        assert err[-1] == caret
    assert not list(tmp_path.glob("*"))


def test_the_generated_image_is_the_same_with_and_without_heat_maps(folder, model, tmp_path):
    prompt = "a red circle AND a blue square"
    assert _run(folder, tmp_path, "-p", prompt, "--seed", "3", "--per-step") == 0
    gen = Generation(prompt, seed=3, steps=2, width=64, height=64)
    (plain,) = sample(model, gen, [prompt], [""], [3])
    with_maps = Image.open(tmp_path / "00000-3.png")
    assert with_maps.size == plain.size == (64, 64)
    assert np.array_equal(np.asarray(with_maps.convert("RGB")), np.asarray(plain))


def test_the_demo_model_maps_every_word_of_the_default_prompt(tmp_path):
    assert main(["heatmap", "--model", str(DEFAULT_MODEL), "--out", str(tmp_path), "--steps", "4", "--quiet"]) == 0
    names = set(_pngs(tmp_path))
    words = ["a", "large", "red", "circle", "and", "small", "blue", "square", "on", "white", "background"]
    assert names == {"00000-1.png", "00000-1-dumpunet-heat-words-004.png"} | {
        f"00000-1-dumpunet-heat-{w}-004.png" for w in words
    }
    assert Image.open(tmp_path / "00000-1-dumpunet-heat-circle-004.png").size == (64, 64)


@pytest.mark.parametrize("family", ["sd2", "sdxl"])
def test_other_families_map_their_words(tmp_path_factory, family):
    model_folder = tiny_diffusers.build_folder(tmp_path_factory.mktemp("models"), family)
    out = tmp_path_factory.mktemp("out")
    assert _run(model_folder, out, "-p", "a red circle AND a blue circle", "--words", "circle", "--width", "96") == 0
    assert _pngs(out) == ["00000-1-dumpunet-heat-circle-002.png", "00000-1.png"]
    assert Image.open(out / "00000-1-dumpunet-heat-circle-002.png").size == Image.open(out / "00000-1.png").size
