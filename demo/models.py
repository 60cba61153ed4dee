"""The demo model's parts: configurations of the VAE, text encoder, U-Net and scheduler, and the CLIP tokenizer.

One place says what the shipped model is: a VAE that downsamples by 8 into 4 latent channels, a CLIP-architecture
text encoder at width 64 behind the real CLIP BPE tokenizer, and a U-Net in Stable Diffusion 1's block layout
(three cross-attention down blocks and a plain one, a cross-attention middle, the mirror going up, two layers per
block: IN00–IN11, M00, OUT00–OUT11) at widths 32/64/64/64. Training and export build their models from here.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

IMAGE_SIDE = 64
LATENT_SIDE = IMAGE_SIDE // 8
CONTEXT_WIDTH = 64
MAX_TOKENS = 77
VOCAB_SIZE = 49408

VAE_CONFIG = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [32, 32, 64, 64],
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": IMAGE_SIDE,
}

TEXT_CONFIG = {
    "vocab_size": VOCAB_SIZE,
    "hidden_size": CONTEXT_WIDTH,
    "intermediate_size": 4 * CONTEXT_WIDTH,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "max_position_embeddings": MAX_TOKENS,
    "hidden_act": "quick_gelu",
    "projection_dim": CONTEXT_WIDTH,
    "bos_token_id": 49406,
    "eos_token_id": 49407,
    "pad_token_id": 49407,
}

UNET_CONFIG = {
    "sample_size": LATENT_SIDE,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
    "block_out_channels": [32, 64, 64, 64],
    "layers_per_block": 2,
    "cross_attention_dim": CONTEXT_WIDTH,
    # diffusers reads this SD1-era field as the number of heads.
    "attention_head_dim": 4,
    "norm_num_groups": 32,
}

SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "v_prediction",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "timestep_spacing": "leading",
}


def build_vae() -> AutoencoderKL:
    return AutoencoderKL(**VAE_CONFIG)


def build_text_encoder() -> CLIPTextModel:
    return CLIPTextModel(CLIPTextConfig(**TEXT_CONFIG))


def build_unet() -> UNet2DConditionModel:
    return UNet2DConditionModel(**UNET_CONFIG)


def build_scheduler() -> DDIMScheduler:
    return DDIMScheduler(**SCHEDULER_CONFIG)


def _bpe_file() -> Path:
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("open_clip ships the CLIP vocabulary: pip install --no-deps open-clip-torch")
    return Path(next(iter(spec.submodule_search_locations))) / "bpe_simple_vocab_16e6.txt.gz"


def write_clip_vocabulary(directory: Path) -> tuple[Path, Path]:
    """vocab.json and merges.txt of CLIP's byte-level BPE, from open_clip's merge list.

    The ids follow CLIP's order: the 256 byte symbols, the same symbols marked as word ends, one symbol per merge
    (48894 merges), then the start and end tokens: 49408 in all.
    """
    with gzip.open(_bpe_file(), "rt", encoding="utf-8") as handle:
        header, *rest = handle.read().split("\n")
    merges = rest[: VOCAB_SIZE - 2 * 256 - 2]
    symbols = list(_byte_symbols())
    tokens = symbols + [s + "</w>" for s in symbols] + [m.replace(" ", "") for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    if len(tokens) != VOCAB_SIZE:
        raise RuntimeError(f"built {len(tokens)} CLIP tokens instead of {VOCAB_SIZE}")
    directory.mkdir(parents=True, exist_ok=True)
    vocab_path, merges_path = directory / "vocab.json", directory / "merges.txt"
    vocab_path.write_text(json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False), "utf-8")
    merges_path.write_text("\n".join([header, *merges]) + "\n", "utf-8")
    return vocab_path, merges_path


def _byte_symbols() -> list[str]:
    """GPT-2/CLIP's printable stand-in for each byte value, in CLIP's vocabulary order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    # Bytes without a printable glyph of their own borrow code points from 256 up, in byte order.
    borrowed = [256 + i for i, _ in enumerate(b for b in range(256) if b not in printable)]
    return [chr(c) for c in printable + borrowed]


def build_tokenizer(directory: Path) -> CLIPTokenizer:
    vocab_path, merges_path = write_clip_vocabulary(directory)
    return CLIPTokenizer(str(vocab_path), str(merges_path), model_max_length=MAX_TOKENS)
