"""Tiny random-weight diffusers Stable Diffusion folders for tests: SD1, SD2 and SDXL flavours, built offline.

Each folder is what `save_pretrained` writes for a real model (model_index.json, unet/, vae/, text_encoder/,
tokenizer/, scheduler/; SDXL adds text_encoder_2/ and tokenizer_2/), with the real block layout at tiny widths and
the real CLIP BPE vocabulary (from open_clip's merge list), so the whole standalone path runs as on a real model.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, EulerDiscreteScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

VOCAB = 49408


def _byte_table() -> list[str]:
    """The printable character CLIP's BPE uses for each byte value, in vocabulary order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return [table[b] for b in printable] + [table[b] for b in range(256) if b not in printable]


def write_tokenizer(directory: Path, pad: str = "<|endoftext|>") -> CLIPTokenizer:
    spec = importlib.util.find_spec("open_clip")
    bpe = Path(next(iter(spec.submodule_search_locations))) / "bpe_simple_vocab_16e6.txt.gz"
    with gzip.open(bpe) as f:
        lines = f.read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    chars = _byte_table()
    tokens = [*chars, *(c + "</w>" for c in chars), *("".join(m.split()) for m in merges)]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}), "utf-8")
    (directory / "merges.txt").write_text("\n".join([lines[0], *merges]), "utf-8")
    tok = CLIPTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"), pad_token=pad)
    tok.save_pretrained(directory)
    return tok


def _text(width: int, projection: bool = False):
    config = CLIPTextConfig(
        vocab_size=VOCAB,
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=77,
        projection_dim=width,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
    )
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)


def _vae() -> AutoencoderKL:
    return AutoencoderKL(
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        block_out_channels=[32, 32, 32, 32],
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=64,
    )


# The widths of tests/unets.py's ldm U-Nets, so that the two layouts of one config can be compared.
CONTEXT = {"sd1": 64, "sd2": 96, "sdxl": 128}


def unet_sd1() -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=8,
        block_out_channels=(32, 64, 128, 128),
        layers_per_block=2,
        cross_attention_dim=CONTEXT["sd1"],
        attention_head_dim=2,  # SD1 configs mean the number of heads here
        norm_num_groups=32,
    )


def unet_sd2() -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=8,
        block_out_channels=(32, 64, 128, 128),
        layers_per_block=2,
        cross_attention_dim=CONTEXT["sd2"],
        attention_head_dim=(2, 4, 8, 8),  # the number of heads: SD2 has a head width of 16 everywhere (here too)
        use_linear_projection=True,
        norm_num_groups=32,
    )


def unet_sdxl() -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=8,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(32, 64, 128),
        layers_per_block=2,
        transformer_layers_per_block=(1, 2, 10),
        attention_head_dim=(2, 4, 8),
        cross_attention_dim=CONTEXT["sdxl"],
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=8 * 6 + CONTEXT["sdxl"] // 2,
        norm_num_groups=32,
    )


UNETS = {"sd1": unet_sd1, "sd2": unet_sd2, "sdxl": unet_sdxl}


def randomize(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Re-draw every parameter (diffusers zero-initialises output projections, which would hide the prompt)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.2 if p.ndim > 1 else 0.02))
    return module.eval()


def build_folder(root: Path, flavour: str = "sd1", seed: int = 0) -> Path:
    """Save a tiny random model of `flavour` ("sd1", "sd2", "sdxl") under root/flavour and return the folder."""
    folder = root / flavour
    if (folder / "model_index.json").is_file():
        return folder
    torch.manual_seed(seed)
    unet = randomize(UNETS[flavour](), seed)
    unet.save_pretrained(folder / "unet")
    _vae().save_pretrained(folder / "vae")
    scheduler = DDIMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False, set_alpha_to_one=False
    )
    if flavour == "sd2":
        scheduler = EulerDiscreteScheduler.from_config(scheduler.config)
    scheduler.save_pretrained(folder / "scheduler")
    index = {
        "_class_name": "StableDiffusionXLPipeline" if flavour == "sdxl" else "StableDiffusionPipeline",
        "_diffusers_version": "0.35.2",
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "scheduler": ["diffusers", type(scheduler).__name__],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
    }
    if flavour == "sdxl":
        half = CONTEXT["sdxl"] // 2
        randomize(_text(half), seed + 1).save_pretrained(folder / "text_encoder")
        randomize(_text(half, projection=True), seed + 2).save_pretrained(folder / "text_encoder_2")
        write_tokenizer(folder / "tokenizer")
        write_tokenizer(folder / "tokenizer_2", pad="!")
        index |= {
            "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
            "tokenizer_2": ["transformers", "CLIPTokenizer"],
        }
    else:
        randomize(_text(CONTEXT[flavour]), seed + 1).save_pretrained(folder / "text_encoder")
        write_tokenizer(folder / "tokenizer", pad="!" if flavour == "sd2" else "<|endoftext|>")
    (folder / "model_index.json").write_text(json.dumps(index, indent=2), "utf-8")
    return folder
