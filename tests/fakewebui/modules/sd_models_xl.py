"""Mirror of modules/sd_models_xl.py: what the webui patches onto sgm's DiffusionEngine and GeneralConditioner."""

from __future__ import annotations

import torch
from modules import devices, prompt_parser, shared


def get_learned_conditioning(self, batch: prompt_parser.SdConditioning | list[str]):
    for embedder in self.conditioner.embedders:
        embedder.ucg_rate = 0.0

    width = getattr(batch, "width", 1024) or 1024
    height = getattr(batch, "height", 1024) or 1024
    is_negative_prompt = getattr(batch, "is_negative_prompt", False)
    aesthetic_score = (
        shared.opts.sdxl_refiner_low_aesthetic_score
        if is_negative_prompt
        else shared.opts.sdxl_refiner_high_aesthetic_score
    )

    devices_args = dict(device=devices.device, dtype=devices.dtype)

    sdxl_conds = {
        "txt": batch,
        "original_size_as_tuple": torch.tensor([height, width], **devices_args).repeat(len(batch), 1),
        "crop_coords_top_left": torch.tensor(
            [shared.opts.sdxl_crop_top, shared.opts.sdxl_crop_left], **devices_args
        ).repeat(len(batch), 1),
        "target_size_as_tuple": torch.tensor([height, width], **devices_args).repeat(len(batch), 1),
        "aesthetic_score": torch.tensor([aesthetic_score], **devices_args).repeat(len(batch), 1),
    }

    force_zero_negative_prompt = is_negative_prompt and all(x == "" for x in batch)
    c = self.conditioner(sdxl_conds, force_zero_embeddings=["txt"] if force_zero_negative_prompt else [])

    return c


def apply_model(self, x, t, cond):
    """WARNING: This function is called once per denoising iteration."""
    if self.is_sdxl_inpaint:
        x = torch.cat([x] + cond["c_concat"], dim=1)

    return self.model(x, t, cond)


def get_first_stage_encoding(self, x):
    """SDXL's encode_first_stage does everything; this is just there for compatibility"""
    return x


def encode_embedding_init_text(self, init_text, nvpt):
    res = []

    for embedder in [embedder for embedder in self.embedders if hasattr(embedder, "encode_embedding_init_text")]:
        encoded = embedder.encode_embedding_init_text(init_text, nvpt)
        res.append(encoded)

    return torch.cat(res, dim=1)


def tokenize(self, texts):
    for embedder in [embedder for embedder in self.embedders if hasattr(embedder, "tokenize")]:
        return embedder.tokenize(texts)

    raise AssertionError("no tokenizer available")


def process_texts(self, texts):
    for embedder in [embedder for embedder in self.embedders if hasattr(embedder, "process_texts")]:
        return embedder.process_texts(texts)


def get_target_prompt_token_count(self, token_count):
    for embedder in [embedder for embedder in self.embedders if hasattr(embedder, "get_target_prompt_token_count")]:
        return embedder.get_target_prompt_token_count(token_count)


def patch(engine_class, conditioner_class):
    """The webui does this at import on sgm's classes; the fake does it on the fixture model's classes."""
    engine_class.apply_model = apply_model
    engine_class.get_learned_conditioning = get_learned_conditioning
    engine_class.get_first_stage_encoding = get_first_stage_encoding
    conditioner_class.encode_embedding_init_text = encode_embedding_init_text
    conditioner_class.tokenize = tokenize
    conditioner_class.process_texts = process_texts
    conditioner_class.get_target_prompt_token_count = get_target_prompt_token_count


def extend_sdxl(model):
    """this adds a bunch of parameters to make SDXL model look a bit more like SD1.5 to the rest of the codebase."""
    patch(type(model), type(model.conditioner))

    dtype = next(model.model.diffusion_model.parameters()).dtype
    model.model.diffusion_model.dtype = dtype
    model.model.conditioning_key = "crossattn"
    model.cond_stage_key = "txt"
    # model.cond_stage_model will be set in sd_hijack

    model.parameterization = "eps"
    # sgm's LegacyDDPMDiscretization: scaled-linear betas 0.00085 ... 0.012 over 1000 steps
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    model.alphas_cumprod = torch.cumprod(1.0 - betas, dim=0).to(device=devices.device, dtype=torch.float32)

    model.conditioner.wrapped = torch.nn.Module()
