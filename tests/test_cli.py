"""The `dumpunet` command end to end on a tiny random diffusers folder: PNGs named as the webui names them, with
their infotext; dumps; the page; and refusals with the webui's messages, exit status 2, before any generation."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import tiny_diffusers
from PIL import Image

from lib_dumpunet.cli import main
from lib_dumpunet.dump import read_dump


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tiny_diffusers.build_folder(tmp_path_factory.mktemp("models"), "sd1")


def _run(folder, out, *args: str) -> int:
    return main([*args, "--model", str(folder), "--out", str(out), "--steps", "2", "--quiet"])


def test_features_write_images_maps_and_page(folder, tmp_path, capsys):
    code = _run(folder, tmp_path, "features", "-p", "a red circle", "--seed", "42", "--layers", "IN01,M00",
                "--average", "sum", "--map-steps", "2")  # fmt: skip
    assert code == 0
    assert "index.html" in capsys.readouterr().out
    names = sorted(p.name for p in tmp_path.glob("*.png"))
    assert names == [
        "00000-42-dumpunet-unet-IN01-002-avg.png",
        "00000-42-dumpunet-unet-IN01-002.png",
        "00000-42-dumpunet-unet-M00-002-avg.png",
        "00000-42-dumpunet-unet-M00-002.png",
        "00000-42.png",
    ]
    info = Image.open(tmp_path / "00000-42-dumpunet-unet-M00-002.png").info["parameters"]
    assert info.startswith("a red circle\n")
    assert "Seed: 42" in info
    assert '"features.layers":"IN01,M00"' in info.replace('\\"', '"')
    assert info.endswith('Dump U-Net map: "M00, step 2, U-Net features"')
    page = (tmp_path / "index.html").read_text("utf-8")
    assert all(name in page for name in names)
    assert 'data-tab="i0-features"' in page


def test_numbers_continue_after_the_files_already_there(folder, tmp_path):
    for _ in range(2):
        assert _run(folder, tmp_path, "features", "-p", "x", "--layers", "M00", "--map-steps", "1") == 0
    assert sorted(p.name for p in tmp_path.glob("0000?-1.png")) == ["00000-1.png", "00001-1.png"]


def test_batches_number_images_and_seeds_as_the_webui_does(folder, tmp_path):
    code = _run(folder, tmp_path, "features", "-p", "x", "--seed", "10", "--batch-size", "2", "--batch-count", "2",
                "--layers", "M00", "--map-steps", "2")  # fmt: skip
    assert code == 0
    images = sorted(p.name for p in tmp_path.glob("*.png") if "dumpunet" not in p.name)
    assert images == ["00000-10.png", "00001-11.png", "00002-12.png", "00003-13.png"]
    for stem in (i.removesuffix(".png") for i in images):
        assert (tmp_path / f"{stem}-dumpunet-unet-M00-002.png").is_file()
        assert f"Seed: {stem.split('-')[1]}," in Image.open(tmp_path / f"{stem}.png").info["parameters"]


def test_attention_with_and_self_attention_and_dumps(folder, tmp_path):
    code = _run(folder, tmp_path, "attention", "-p", "a red circle AND a blue square", "--layers", "M00",
                "--outputs", "Q*K,V*Q*K", "--self-attention", "--query-points", "2x2", "--dump")  # fmt: skip
    assert code == 0
    names = {p.name for p in tmp_path.glob("*.png")}
    assert "00000-1-dumpunet-attn-qk-M00.attn2-001-and2.png" in names
    assert "00000-1-dumpunet-attn-vqk-M00.attn2-002.png" in names
    assert "00000-1-dumpunet-attn-self-M00.attn1-002.png" in names
    (dump_folder,) = (tmp_path / "dumpunet").iterdir()
    kinds = {(e.kind, e.sub) for e in read_dump(dump_folder)}
    assert kinds == {("qk", 0), ("qk", 1), ("vqk", 0), ("vqk", 1), ("self", 0), ("self", 1)}


def test_layer_prompt_difference_saves_both_images_and_the_differences(folder, tmp_path):
    code = _run(folder, tmp_path, "layer-prompt", "-p", "a (~: M00: blue square :~) circle", "--diff",
                "--layers", "M00", "--map-steps", "2")  # fmt: skip
    assert code == 0
    names = sorted(p.name for p in tmp_path.glob("*.png"))
    assert names == ["00000-1.png", "00001-1-dumpunet-diff-M00-002.png", "00001-1.png"]
    assert "without per-block prompts" in (tmp_path / "index.html").read_text("utf-8")


def test_demo_runs_features_and_cross_attention_of_every_block(folder, tmp_path):
    assert main(["demo", "--model", str(folder), "--out", str(tmp_path), "--steps", "4", "--quiet"]) == 0
    names = {p.name for p in tmp_path.glob("*.png")}
    assert {f"00000-1-dumpunet-unet-{b}-004-avg.png" for b in ("IN00", "M00", "OUT11")} <= names
    assert "00000-1-dumpunet-attn-qk-OUT11.attn2-001-avg.png" in names
    steps = {m.group(1) for n in names if (m := re.search(r"-unet-\w+-(\d{3})", n))}
    assert sorted(steps) == ["001", "002", "003", "004"]
    page = (tmp_path / "index.html").read_text("utf-8")
    assert page.count('class="crop"') == 16 * 4 * 2  # Q*K maps show the prompt's columns: 16 layers, 4 steps, 2 each


@pytest.mark.parametrize(
    ("args", "first_line", "caret"),
    [
        (["features", "--layers", "IN01,IN99"], "U-Net features › Layers: 'IN99' is not a block", "         ^~~~"),
        (["features", "--layers", "M00", "--map-steps", "1,5"], "step 5 is beyond the 2 steps", None),
        (["layer-prompt", "-p", "a (~: M00 blue :~)"], "Prompt: expected 'BLOCKS: text'", "          ^~~~~~~~~"),
        (["attention", "--layers", "IN00"], "none of IN00 has attention layers", None),
        (["features", "--set", "features.colors.method=Rainbow"], "features.colors.method", None),
        (["features", "--width", "100"], "must be positive multiples of 8", None),
    ],
)
def test_mistakes_exit_2_with_the_webui_message_before_generation(folder, tmp_path, capsys, args, first_line, caret):
    if "-p" not in args:
        args = [*args, "-p", "a cat"]
    assert _run(folder, tmp_path, *args) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("dumpunet: error: ")
    assert first_line in err[0]
    if caret is not None:
        assert err[-1] == caret
        assert len(err) == 3  # the message, the excerpt, the caret under it
    else:
        assert len(err) == 1
    assert not list(tmp_path.glob("*"))


def test_usage_mistakes_exit_2_with_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["features", "--steps", "many", "-p", "x"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "invalid int value: 'many'" in err[0]


def test_a_folder_that_is_no_model_is_refused(tmp_path, capsys):
    assert main(["features", "-p", "x", "--model", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "no model_index.json" in capsys.readouterr().err


def test_python_dash_m_runs_the_command():
    done = subprocess.run([sys.executable, "-m", "lib_dumpunet", "--help"], capture_output=True, text=True, check=False)
    assert done.returncode == 0
    assert all(c in done.stdout for c in ("demo", "features", "attention", "layer-prompt"))
