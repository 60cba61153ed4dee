"""The checkpoint behind the fake webui: what `shared.sd_model` is made of before the webui hijacks it.

Stands in for the objects the webui gets from a checkpoint: ldm's `LatentDiffusion` (SD1, SD2) and sgm's
`DiffusionEngine` (SDXL), with the same attribute paths (`model.diffusion_model`, `cond_stage_model`, `conditioner`,
`first_stage_model`, `alphas_cumprod`, …) and the same calls into the U-Net. Everything that matters is real:

* the U-Net is the real ldm `UNetModel` from `tests/unets.py` (tiny widths, real layout);
* the text encoders are real `transformers.CLIPTextModel`s at tiny widths (weights from a fixed seed) driven by the
  real CLIP BPE tokenizer (`transformers.CLIPTokenizer`, vocabulary built offline from open_clip's
  `bpe_simple_vocab_16e6.txt.gz` the way open_clip builds it: 49408 ids, `<|startoftext|>` 49406, `<|endoftext|>`
  49407). Their output width equals the flavour's `context_dim` (SDXL: two encoders of 64 concatenated to 128);
* SDXL's `vector` is built like sgm's conditioner: the pooled output of the second encoder, then sinusoidal
  embeddings of original size, crop and target size (256 each per number) — then zeros up to 2816, because the
  tiny pooled output is 64 wide instead of 1280.

Only the VAE is a stand-in: a fixed linear map latent → RGB (the webui's own "approx cheap" coefficients) with
nearest upsampling ×8, and its least-squares inverse for encoding. It is deterministic, so the same seed gives
bit-identical images.

Instrumentation (not in the webui): `sd_model.text_encoder_calls` counts calls of the first text encoder (SD1/SD2:
`cond_stage_model`; SDXL: `conditioner.embedders[0]`) once the webui has wrapped it, and `sd_model.encoded_texts`
lists every text it encoded, in order.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import importlib.util
import json
import tempfile
from pathlib import Path
from typing import ClassVar

import torch
import unets
from ldm.modules.diffusionmodules.util import timestep_embedding
from torch import nn
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
from transformers.models.clip.tokenization_clip import bytes_to_unicode

VOCAB_SIZE = 49408
ID_START = 49406
ID_END = 49407
CLIP_LAYERS = 3  # enough for clip skip 2 and SDXL's "hidden" layer to differ from the last one
SDXL_EMBEDDER_WIDTH = 64  # CLIP-L and OpenCLIP-G stand-ins; 64 + 64 = unets.SDXL.context_dim
SIZE_EMBED_DIM = 256  # sgm's ConcatTimestepEmbedderND outdim for SDXL base

# The webui's "Approx cheap" latent → RGB coefficients (one row per latent channel).
LATENT_RGB = ((0.298, 0.207, 0.208), (0.187, 0.286, 0.173), (-0.158, 0.189, 0.264), (-0.184, -0.271, -0.473))


# ---------------------------------------------------------------------------------------------------------------------
# CLIP tokenizer from open_clip's vocabulary file


def bpe_vocab_path() -> Path:
    """open_clip's BPE file, found without importing open_clip (installed with --no-deps for this file only)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("open_clip is needed for its vocabulary file: pip install --no-deps open-clip-torch==2.20.0")
    return Path(spec.submodule_search_locations[0]) / "bpe_simple_vocab_16e6.txt.gz"


def _write_vocab(directory: Path, bpe_path: Path) -> tuple[Path, Path]:
    """vocab.json and merges.txt for CLIPTokenizer, built as open_clip's SimpleTokenizer builds its vocabulary."""
    with gzip.open(bpe_path) as f:
        lines = f.read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    byte_chars = list(bytes_to_unicode().values())
    vocab = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == VOCAB_SIZE
    directory.mkdir(parents=True, exist_ok=True)
    vocab_file, merges_file = directory / "vocab.json", directory / "merges.txt"
    vocab_file.write_text(json.dumps({token: i for i, token in enumerate(vocab)}, ensure_ascii=False), "utf-8")
    # CLIPTokenizer skips the first line (a version header) and reads the same 48894 merges.
    merges_file.write_text("\n".join([lines[0], *merges]), "utf-8")
    return vocab_file, merges_file


@functools.cache
def clip_tokenizer() -> CLIPTokenizer:
    """The real CLIP BPE tokenizer (stateless, shared by every fake model of the process)."""
    bpe_path = bpe_vocab_path()
    digest = hashlib.sha256(bpe_path.read_bytes()).hexdigest()[:16]
    directory = Path(tempfile.gettempdir()) / f"fakewebui-clip-vocab-{digest}"
    vocab_file, merges_file = directory / "vocab.json", directory / "merges.txt"
    if not (vocab_file.exists() and merges_file.exists()):
        # write to a private directory first, then move into place: concurrent test processes may race here
        staging = Path(tempfile.mkdtemp(prefix="fakewebui-clip-vocab-"))
        staged_vocab, staged_merges = _write_vocab(staging, bpe_path)
        directory.mkdir(parents=True, exist_ok=True)
        staged_vocab.replace(vocab_file)
        staged_merges.replace(merges_file)
        staging.rmdir()
    tokenizer = CLIPTokenizer(str(vocab_file), str(merges_file))
    assert tokenizer.bos_token_id == ID_START and tokenizer.eos_token_id == ID_END
    return tokenizer


def clip_text_model(width: int, seed: int, layers: int = CLIP_LAYERS) -> CLIPTextModel:
    """A tiny real CLIP text transformer whose hidden states are `width` wide, `layers` deep, weights from `seed`."""
    config = CLIPTextConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=width,
        intermediate_size=2 * width,
        projection_dim=width,
        num_hidden_layers=layers,
        num_attention_heads=2,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
        bos_token_id=ID_START,
        eos_token_id=ID_END,
        pad_token_id=1,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPTextModel(config)
        # A fresh LayerNorm (weight 1, bias 0) makes every output token vector zero-mean, and the webui's "Original"
        # emphasis divides by the output's mean: give the norms trained-looking affine parameters.
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, nn.LayerNorm):
                    module.weight.normal_(1.0, 0.2)
                    module.bias.normal_(0.0, 0.2)
    return model.eval()


# ---------------------------------------------------------------------------------------------------------------------
# Text encoders as the checkpoint has them (the webui wraps them: modules/sd_hijack_clip.py, sd_hijack_open_clip.py)


class FrozenCLIPEmbedder(nn.Module):
    """ldm's / sgm's `FrozenCLIPEmbedder`: HF CLIP text model + tokenizer; layer "last" (SD1) or "hidden" (SDXL)."""

    def __init__(self, transformer: CLIPTextModel, layer: str = "last", layer_idx: int | None = None) -> None:
        super().__init__()
        self.tokenizer = clip_tokenizer()
        self.transformer = transformer
        self.layer = layer
        self.layer_idx = layer_idx
        self.max_length = 77
        self.return_pooled = False
        self.input_key = "txt"
        self.is_trainable = False
        self.ucg_rate = 0.0
        self.legacy_ucg_val = None

    def forward(self, text):
        tokens = self.tokenizer(
            text, truncation=True, max_length=self.max_length, padding="max_length", return_tensors="pt"
        )["input_ids"]
        outputs = self.transformer(input_ids=tokens, output_hidden_states=self.layer == "hidden")
        if self.layer == "hidden":
            return outputs.hidden_states[self.layer_idx]
        return outputs.last_hidden_state

    def encode(self, text):
        return self(text)


class FrozenOpenCLIPEmbedder(nn.Module):
    """ldm's `FrozenOpenCLIPEmbedder` (SD2): the penultimate layer followed by the final layer norm.

    The real one holds an open_clip model and uses open_clip's tokenizer; this one holds an HF CLIP text model and
    the same BPE vocabulary through `CLIPTokenizer` (`tokenizer` attribute)."""

    def __init__(self, transformer: CLIPTextModel) -> None:
        super().__init__()
        self.tokenizer = clip_tokenizer()
        self.transformer = transformer
        self.layer = "penultimate"
        self.layer_idx = 1
        self.max_length = 77
        self.input_key = "txt"
        self.is_trainable = False
        self.ucg_rate = 0.0
        self.legacy_ucg_val = None

    def encode_with_transformer(self, tokens: torch.Tensor) -> torch.Tensor:
        hidden = self.transformer(input_ids=tokens, output_hidden_states=True).hidden_states[-1 - self.layer_idx]
        return self.transformer.text_model.final_layer_norm(hidden)

    def forward(self, text):
        tokens = self.tokenizer(
            text, truncation=True, max_length=self.max_length, padding="max_length", return_tensors="pt"
        )["input_ids"]
        return self.encode_with_transformer(tokens)

    def encode(self, text):
        return self(text)


class FrozenOpenCLIPEmbedder2(FrozenOpenCLIPEmbedder):
    """sgm's `FrozenOpenCLIPEmbedder2` (SDXL's second encoder): dict of raw "last"/"penultimate" states + "pooled"."""

    def __init__(self, transformer: CLIPTextModel) -> None:
        super().__init__(transformer)
        self.return_pooled = True
        self.legacy = False

    def encode_with_transformer(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.transformer(input_ids=tokens, output_hidden_states=True)
        return {"last": out.hidden_states[-1], "penultimate": out.hidden_states[-2], "pooled": out.pooler_output}

    def forward(self, text):
        tokens = self.tokenizer(
            text, truncation=True, max_length=self.max_length, padding="max_length", return_tensors="pt"
        )["input_ids"]
        d = self.encode_with_transformer(tokens)
        return d[self.layer], d["pooled"]


class ConcatTimestepEmbedderND(nn.Module):
    """sgm's size/crop embedder: a sinusoidal embedding of every number of the input, concatenated."""

    def __init__(self, outdim: int, input_key: str) -> None:
        super().__init__()
        self.outdim = outdim
        self.input_key = input_key
        self.is_trainable = False
        self.ucg_rate = 0.0
        self.legacy_ucg_val = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 1:
            x = x[:, None]
        b, dims = x.shape
        emb = timestep_embedding(x.reshape(b * dims), self.outdim)
        return emb.reshape(b, dims * self.outdim)


class ZeroPadding(nn.Module):
    """Not in sgm: zeros that bring the tiny `vector` to SDXL's 2816 (the real pooled output is 1280 wide)."""

    def __init__(self, width: int, input_key: str = "aesthetic_score") -> None:
        super().__init__()
        self.width = width
        self.input_key = input_key
        self.is_trainable = False
        self.ucg_rate = 0.0
        self.legacy_ucg_val = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(x.shape[0], self.width)


class GeneralConditioner(nn.Module):
    """sgm's `GeneralConditioner`: runs every embedder, 3-D outputs → "crossattn", 2-D → "vector" (concatenated)."""

    OUTPUT_DIM2KEYS: ClassVar[dict[int, str]] = {2: "vector", 3: "crossattn", 4: "concat", 5: "concat"}
    KEY2CATDIM: ClassVar[dict[str, int]] = {"vector": 1, "crossattn": 2, "concat": 1}

    def __init__(self, embedders: list[nn.Module]) -> None:
        super().__init__()
        self.embedders = nn.ModuleList(embedders)

    def forward(self, batch: dict, force_zero_embeddings: list[str] | None = None) -> dict[str, torch.Tensor]:
        output: dict[str, torch.Tensor] = {}
        force_zero_embeddings = force_zero_embeddings or []
        for embedder in self.embedders:
            context = contextlib.nullcontext if embedder.is_trainable else torch.no_grad
            with context():
                emb_out = embedder(batch[embedder.input_key])
            if not isinstance(emb_out, list | tuple):
                emb_out = [emb_out]
            for emb in emb_out:
                key = self.OUTPUT_DIM2KEYS[emb.dim()]
                if embedder.input_key in force_zero_embeddings:
                    emb = torch.zeros_like(emb)
                output[key] = torch.cat((output[key], emb), self.KEY2CATDIM[key]) if key in output else emb
        return output


# ---------------------------------------------------------------------------------------------------------------------
# U-Net wrappers, VAE stand-in, the model objects


class DiffusionWrapper(nn.Module):
    """ldm's `DiffusionWrapper` for conditioning_key "crossattn": x and t positional, `context` as a keyword."""

    def __init__(self, diffusion_model: nn.Module, conditioning_key: str = "crossattn") -> None:
        super().__init__()
        self.diffusion_model = diffusion_model
        self.conditioning_key = conditioning_key

    def forward(self, x, t, c_concat=None, c_crossattn=None, c_adm=None):
        if self.conditioning_key != "crossattn":
            raise NotImplementedError(f"the fake webui runs crossattn models only, not {self.conditioning_key!r}")
        return self.diffusion_model(x, t, context=torch.cat(c_crossattn, 1))


class OpenAIWrapper(nn.Module):
    """sgm's `OpenAIWrapper`: only x positional; timesteps, context and y as keywords."""

    def __init__(self, diffusion_model: nn.Module) -> None:
        super().__init__()
        self.diffusion_model = diffusion_model

    def forward(self, x, t, c, **kwargs):
        if "concat" in c:
            x = torch.cat((x, c["concat"]), dim=1)
        return self.diffusion_model(x, timesteps=t, context=c.get("crossattn"), y=c.get("vector"), **kwargs)


class FirstStage(nn.Module):
    """The VAE stand-in: fixed linear latent → RGB map, nearest ×8 upsampling; encode is its least-squares inverse."""

    def __init__(self, scale_factor: float) -> None:
        super().__init__()
        self.register_buffer("latent_rgb", torch.tensor(LATENT_RGB))
        self.scale_factor = scale_factor

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        rgb = torch.einsum("bchw,cr->brhw", z * self.scale_factor, self.latent_rgb)
        return nn.functional.interpolate(rgb, scale_factor=8, mode="nearest")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        pooled = nn.functional.avg_pool2d(x, 8)
        inverse = torch.linalg.pinv(self.latent_rgb)  # (3, 4)
        return torch.einsum("brhw,rc->bchw", pooled, inverse) / self.scale_factor


def alphas_cumprod() -> torch.Tensor:
    """SD's schedule: scaled-linear betas 0.00085 … 0.012 over 1000 steps."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0).to(torch.float32)


class _Instrumented(nn.Module):
    text_encoder_calls: int
    encoded_texts: list[str]

    @contextlib.contextmanager
    def ema_scope(self, context=None):
        yield

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def watch_text_encoder(self, encoder: nn.Module) -> None:
        """Count calls of `encoder` (the webui's wrapper of the first text encoder) and record the texts."""
        self.text_encoder_calls = 0
        self.encoded_texts = []

        def record(_module, args):
            self.text_encoder_calls += 1
            self.encoded_texts.extend(str(t) for t in args[0])

        encoder.register_forward_pre_hook(record)


class LatentDiffusion(_Instrumented):
    """ldm's `LatentDiffusion` (SD1, SD2), reduced to what the webui uses at inference."""

    def __init__(self, unet: nn.Module, cond_stage_model: nn.Module) -> None:
        super().__init__()
        self.model = DiffusionWrapper(unet, "crossattn")
        self.cond_stage_model = cond_stage_model
        self.first_stage_model = FirstStage(0.18215)
        self.scale_factor = 0.18215
        self.cond_stage_key = "txt"
        self.cond_stage_forward = None
        self.parameterization = "eps"
        self.register_buffer("alphas_cumprod", alphas_cumprod())
        self.text_encoder_calls = 0
        self.encoded_texts = []

    def apply_model(self, x_noisy, t, cond, return_ids=False):
        if not isinstance(cond, dict):
            cond = {"c_crossattn": cond if isinstance(cond, list) else [cond]}
        return self.model(x_noisy, t, **cond)

    def get_learned_conditioning(self, c):
        encode = getattr(self.cond_stage_model, "encode", None)
        return encode(c) if callable(encode) else self.cond_stage_model(c)

    def decode_first_stage(self, z):
        return self.first_stage_model.decode(z / self.scale_factor)

    def encode_first_stage(self, x):
        return self.first_stage_model.encode(x)

    def get_first_stage_encoding(self, encoder_posterior):
        # the real one samples a DiagonalGaussianDistribution; the stand-in VAE is deterministic
        return self.scale_factor * encoder_posterior


class DiffusionEngine(_Instrumented):
    """sgm's `DiffusionEngine` (SDXL); the webui patches `apply_model`, `get_learned_conditioning` and
    `get_first_stage_encoding` onto it (modules/sd_models_xl.py) and sets `alphas_cumprod` & co. in `extend_sdxl`."""

    def __init__(self, unet: nn.Module, conditioner: GeneralConditioner) -> None:
        super().__init__()
        self.model = OpenAIWrapper(unet)
        self.conditioner = conditioner
        self.first_stage_model = FirstStage(0.13025)
        self.scale_factor = 0.13025
        self.text_encoder_calls = 0
        self.encoded_texts = []

    def decode_first_stage(self, z):
        return self.first_stage_model.decode(z / self.scale_factor)

    def encode_first_stage(self, x):
        return self.scale_factor * self.first_stage_model.encode(x)


def build(flavour: unets.Flavour, seed: int = 0) -> LatentDiffusion | DiffusionEngine:
    """A fresh tiny checkpoint of `flavour`, every weight from `seed`."""
    unet = unets.build(flavour, seed)
    if flavour.name == "sd1":
        return LatentDiffusion(unet, FrozenCLIPEmbedder(clip_text_model(flavour.context_dim, seed + 1)))
    if flavour.name == "sd2":
        return LatentDiffusion(unet, FrozenOpenCLIPEmbedder(clip_text_model(flavour.context_dim, seed + 1)))
    clip_l = FrozenCLIPEmbedder(
        clip_text_model(SDXL_EMBEDDER_WIDTH, seed + 1), layer="hidden", layer_idx=CLIP_LAYERS - 1
    )
    clip_g = FrozenOpenCLIPEmbedder2(clip_text_model(SDXL_EMBEDDER_WIDTH, seed + 2))
    sizes = [
        ConcatTimestepEmbedderND(SIZE_EMBED_DIM, key)
        for key in ("original_size_as_tuple", "crop_coords_top_left", "target_size_as_tuple")
    ]
    padding = flavour.adm_channels - SDXL_EMBEDDER_WIDTH - 3 * 2 * SIZE_EMBED_DIM
    return DiffusionEngine(unet, GeneralConditioner([clip_l, clip_g, *sizes, ZeroPadding(padding)]))
