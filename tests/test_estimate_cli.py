"""`dumpunet estimate` on tiny random diffusers folders: the file the webui loads, emphasis, refusals that write
nothing, U-NET mode through a diffusers U-Net at its native sample size."""

from __future__ import annotations

import pytest
import tiny_diffusers
import torch

from lib_dumpunet.cli import main
from lib_dumpunet.estimate import read_embedding
from lib_dumpunet.estimate.files import SUBFOLDER


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")

    class Folders(dict):
        def __missing__(self, flavour):
            self[flavour] = tiny_diffusers.build_folder(root, flavour)
            return self[flavour]

    return Folders()


def _estimate(folder, out, *args):
    return main(["estimate", "--model", str(folder), "--out", str(out), "--quiet", *args])


def test_transformer_mode_writes_an_embedding_the_webui_reads(models, tmp_path, capsys):
    code = _estimate(models["sd1"], tmp_path, "--name", "red cat", "-p", "a (red:1.4) cat", "--tokens", "3",
                     "--vectors-from", "tokens", "--iterations", "5", "--lr", "0.01", "--format", "pt")  # fmt: skip
    assert code == 0
    path = tmp_path / SUBFOLDER / "red cat.pt"
    assert f"wrote {path}" in capsys.readouterr().out
    data = torch.load(path, weights_only=True)
    assert data["name"] == "red cat" and data["step"] == 5
    assert read_embedding(path)["*"].shape == (3, 64)


def test_refusals_exit_2_and_write_nothing(models, tmp_path, capsys):
    assert _estimate(models["sd1"], tmp_path, "--name", "../up", "-p", "a cat") == 2
    assert "Save name" in capsys.readouterr().err
    assert _estimate(models["sd1"], tmp_path, "--name", "ok", "-p", "a cat", "--tokens", "0",
                     "--vectors-from", "tokens") == 2  # fmt: skip
    assert "tokens must be between 1 and 75" in capsys.readouterr().err
    assert _estimate(models["sd1"], tmp_path, "--name", "ok", "--target", "negative", "-p", "a cat") == 2
    assert "negative prompt to estimate is empty" in capsys.readouterr().err
    assert list(tmp_path.rglob("*")) == []


def test_unet_mode_runs_on_a_diffusers_unet(models, tmp_path):
    flavour = "sd1"
    code = _estimate(models[flavour], tmp_path, "--name", "neg", "--mode", "unet", "--target", "negative",
                     "-p", "a cat", "-n", "(blurry:1.4)", "--tokens", "2", "--vectors-from", "tokens",
                     "--steps", "1", "--iterations", "1")  # fmt: skip
    assert code == 0
    vectors = read_embedding(tmp_path / SUBFOLDER / "neg.safetensors")
    assert set(vectors) == {"*"}
    assert all(v.shape[0] == 2 and torch.isfinite(v).all() for v in vectors.values())
