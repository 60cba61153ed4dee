"""The shipped demo model folder: what the issue promises about it, read from its files (no generation).

Its size, its pipeline index, the Stable Diffusion 1 block layout of its U-Net, the VAE's factor 8 and 4 latent
channels, a text encoder of 77 positions, and a tokenizer identical to the real CLIP BPE tokenizer built from
open_clip's vocabulary file. Every part loads offline.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "demo" / "model"
CAPTIONS = [
    "a small red circle, a large blue square and a green triangle on a white background",
    "a large purple triangle on a gray background",
    "",
]


def _config(part: str) -> dict:
    name = "config.json" if part != "scheduler" else "scheduler_config.json"
    return json.loads((MODEL / part / name).read_text("utf-8"))


def test_folder_is_at_most_25_mb():
    size = sum(p.stat().st_size for p in MODEL.rglob("*") if p.is_file())
    assert 5e6 < size <= 25e6


def test_index_names_a_stable_diffusion_pipeline_without_safety_parts():
    index = json.loads((MODEL / "model_index.json").read_text("utf-8"))
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert index["safety_checker"] == [None, None]
    assert index["feature_extractor"] == [None, None]
    assert index["unet"] == ["diffusers", "UNet2DConditionModel"]
    assert index["vae"] == ["diffusers", "AutoencoderKL"]
    assert index["text_encoder"] == ["transformers", "CLIPTextModel"]
    assert index["tokenizer"] == ["transformers", "CLIPTokenizer"]
    for part in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (MODEL / part).is_dir(), part


def test_unet_has_the_sd1_block_layout_and_reads_the_text_width():
    unet, text = _config("unet"), _config("text_encoder")
    assert unet["down_block_types"] == ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"]
    assert unet["mid_block_type"] in (None, "UNetMidBlock2DCrossAttn")
    assert unet["up_block_types"] == ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3
    assert unet["layers_per_block"] == 2
    assert unet["in_channels"] == unet["out_channels"] == 4
    assert unet["cross_attention_dim"] == text["hidden_size"]
    assert text["max_position_embeddings"] == 77
    assert text["vocab_size"] == 49408


def test_vae_downsamples_by_8_into_4_channels():
    vae = _config("vae")
    assert len(vae["down_block_types"]) == 4  # three downsamplers: factor 8
    assert vae["latent_channels"] == 4
    assert vae["sample_size"] == 8 * _config("unet")["sample_size"]
    assert 0 < vae["scaling_factor"] < 10


def test_tokenizer_is_the_real_clip_bpe_tokenizer(tmp_path):
    transformers = pytest.importorskip("transformers")
    sys.path.insert(0, str(ROOT / "demo"))
    try:
        import models
    finally:
        sys.path.remove(str(ROOT / "demo"))
    shipped = transformers.CLIPTokenizer.from_pretrained(str(MODEL / "tokenizer"), local_files_only=True)
    built = models.build_tokenizer(tmp_path)
    assert shipped.get_vocab() == built.get_vocab()
    assert len(shipped) == 49408
    assert shipped.convert_tokens_to_ids(["<|startoftext|>", "<|endoftext|>"]) == [49406, 49407]
    for caption in CAPTIONS:
        assert shipped(caption).input_ids == built(caption).input_ids
    assert shipped.model_max_length == 77


def test_every_part_loads_offline():
    diffusers = pytest.importorskip("diffusers")
    transformers = pytest.importorskip("transformers")
    unet = diffusers.UNet2DConditionModel.from_pretrained(str(MODEL), subfolder="unet", local_files_only=True)
    vae = diffusers.AutoencoderKL.from_pretrained(str(MODEL), subfolder="vae", local_files_only=True)
    text = transformers.CLIPTextModel.from_pretrained(str(MODEL), subfolder="text_encoder", local_files_only=True)
    scheduler = diffusers.DDIMScheduler.from_pretrained(str(MODEL), subfolder="scheduler", local_files_only=True)
    assert scheduler.config.prediction_type == "v_prediction"
    assert sum(p.numel() for p in unet.parameters()) < 5_000_000
    assert vae.config.latent_channels == 4
    assert text.config.hidden_size == unet.config.cross_attention_dim
