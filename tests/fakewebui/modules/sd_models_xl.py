"""Test double of webui v1.10.1 `modules/sd_models_xl.py`: what the webui adds to sgm's `DiffusionEngine` (SDXL) so
the rest of it can treat the model like SD1 — `get_learned_conditioning` building the conditioner's input batch
(prompts plus size, crop and aesthetic-score tensors), `apply_model`, and the text-encoder helpers on the
`GeneralConditioner` that SD1's `cond_stage_model` has. The webui patches sgm's classes at import; the fake patches
the tiny model's classes in `extend_sdxl`."""

from __future__ import annotations

import torch
from modules import devices, prompt_parser, shared


def get_learned_conditioning(self, batch: prompt_parser.SdConditioning | list[str]):
    """{"crossattn", "vector"} for the prompts; an all-empty negative batch gets zero text embeddings."""
    for embedder in self.conditioner.embedders:
        embedder.ucg_rate = 0.0
    negative = getattr(batch, "is_negative_prompt", False)
    height, width = getattr(batch, "height", None) or 1024, getattr(batch, "width", None) or 1024
    score = shared.opts.sdxl_refiner_low_aesthetic_score if negative else shared.opts.sdxl_refiner_high_aesthetic_score

    def per_prompt(*values):
        return torch.tensor([values], device=devices.device, dtype=devices.dtype).expand(len(batch), -1)

    inputs = {
        "txt": batch,
        "original_size_as_tuple": per_prompt(height, width),
        "crop_coords_top_left": per_prompt(shared.opts.sdxl_crop_top, shared.opts.sdxl_crop_left),
        "target_size_as_tuple": per_prompt(height, width),
        "aesthetic_score": per_prompt(score),
    }
    zeroed = ["txt"] if negative and all(text == "" for text in batch) else []
    return self.conditioner(inputs, force_zero_embeddings=zeroed)


def apply_model(self, x, t, cond):
    if self.is_sdxl_inpaint:
        x = torch.cat([x, *cond["c_concat"]], dim=1)
    return self.model(x, t, cond)


def get_first_stage_encoding(self, x):
    """sgm's encode_first_stage already returns the scaled latent."""
    return x


def _embedders_with(conditioner, method):
    return [e for e in conditioner.embedders if hasattr(e, method)]


def encode_embedding_init_text(self, init_text, nvpt):
    """Every text encoder's embedding of `init_text`, side by side (CLIP-L then OpenCLIP-bigG widths)."""
    found = _embedders_with(self, "encode_embedding_init_text")
    return torch.cat([e.encode_embedding_init_text(init_text, nvpt) for e in found], dim=1)


def tokenize(self, texts):
    found = _embedders_with(self, "tokenize")
    if not found:
        raise AssertionError("no tokenizer available")
    return found[0].tokenize(texts)


def process_texts(self, texts):
    found = _embedders_with(self, "process_texts")
    return found[0].process_texts(texts) if found else None


def get_target_prompt_token_count(self, token_count):
    found = _embedders_with(self, "get_target_prompt_token_count")
    return found[0].get_target_prompt_token_count(token_count) if found else None


def patch(engine_class, conditioner_class):
    for name in ("apply_model", "get_learned_conditioning", "get_first_stage_encoding"):
        setattr(engine_class, name, globals()[name])
    for name in ("encode_embedding_init_text", "tokenize", "process_texts", "get_target_prompt_token_count"):
        setattr(conditioner_class, name, globals()[name])


def extend_sdxl(model):
    """Gives an SDXL model the attributes SD1 code reads: conditioning key, eps parameterization and the
    DDPM schedule (sgm's legacy discretisation: betas linear in sqrt from 0.00085 to 0.012 over 1000 steps)."""
    patch(type(model), type(model.conditioner))
    unet = model.model.diffusion_model
    unet.dtype = next(unet.parameters()).dtype
    model.model.conditioning_key = "crossattn"
    model.cond_stage_key = "txt"
    model.parameterization = "eps"
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    model.alphas_cumprod = torch.cumprod(1.0 - betas, dim=0).to(device=devices.device, dtype=torch.float32)
    model.conditioner.wrapped = torch.nn.Module()  # sd_hijack sets cond_stage_model to the conditioner
