"""`dumpunet estimate --name NAME -p PROMPT`: the Embedding Estimate tab's run, on a local diffusers model.

The same library run as the webui tab (`lib_dumpunet.estimate`), with the diffusers model as its host. Prompts are
encoded by `lib_dumpunet.estimate.clip_text` on the folder's own CLIP encoders, the webui's way (emphasis
`(word:1.4)` applied and mean-restored, 75-token chunks, BREAK): SD1 and SD2 folders hold the layer the webui uses as
the encoder's last layer; SDXL takes both encoders' penultimate layers and the second one's projected pooled output.
U-NET mode wraps the diffusers U-Net as a k-diffusion denoiser on the scheduler's ᾱ table and prediction type, at
the U-Net's native sample size (SDXL adds the size/crop ids of that size). The file is written to
`<embeddings>/dumpunet-estimate/<name>.safetensors` (or `.pt`), ready to copy into the webui's embeddings folder.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

from lib_dumpunet.errors import DumpUnetError
from lib_dumpunet.estimate import settings as est
from lib_dumpunet.estimate.clip_text import ClipPromptEncoder
from lib_dumpunet.estimate.denoise import ScheduleDenoiser
from lib_dumpunet.estimate.model import Cond

__all__ = ["add_parser", "diffusers_denoiser", "diffusers_encoder", "run_command"]


def add_parser(commands: Any, default_model: Path) -> None:
    """The `estimate` subcommand."""
    d = est.EstimateSettings()
    p = commands.add_parser("estimate", help="a textual-inversion embedding that reproduces a prompt (no images)")
    p.add_argument("--name", required=True, help="the embedding's name (its prompt word and file name)")
    p.add_argument("-p", "--prompt", default="")
    p.add_argument("-n", "--negative", default="", help="negative prompt")
    p.add_argument("--target", choices=("prompt", "negative"), default="prompt", help="which prompt to reproduce")
    p.add_argument("--mode", choices=("transformer", "unet"), default="transformer")
    p.add_argument("--tokens", type=int, default=d.tokens, help="vectors (with --init-text: see --vectors-from)")
    p.add_argument("--init-text", default="", help="start from these words' token vectors (default: random)")
    p.add_argument("--vectors-from", choices=est.VECTOR_SOURCES, default=d.vectors_from)
    p.add_argument("--lr", type=float, default=d.learning_rate, help="learning rate (default: %(default)s)")
    p.add_argument("--optimizer", choices=est.OPTIMIZERS, default=d.optimizer)
    p.add_argument("--loss", choices=est.LOSSES, default=d.loss)
    p.add_argument("--schedule", choices=est.SCHEDULES, default=d.schedule)
    p.add_argument("--iterations", type=int, default=d.iterations, help="learning steps (default: %(default)s)")
    p.add_argument("--all-rows", action="store_true", help="Transformer: match all 77 rows")
    p.add_argument("--steps", type=int, default=d.steps, help="U-NET: steps of the reference trajectory")
    p.add_argument("--cfg-scale", type=float, default=d.cfg_scale)
    p.add_argument("--sampler", choices=est.SAMPLERS, default=d.sampler)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--overwrite", action="store_true", help="replace an embedding of that name")
    p.add_argument("--format", choices=est.FILE_FORMATS, default=d.file_format)
    g = p.add_argument_group("model and output")
    g.add_argument("--model", type=Path, default=default_model, help="diffusers SD1/SD2/SDXL folder")
    g.add_argument("--out", type=Path, default=Path("dumpunet-out"), help="embeddings folder (default: %(default)s)")
    g.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    g.add_argument("--quiet", action="store_true", help="no progress line")
    g.add_argument("--debug", action="store_true", help="log what Dump U-Net does to stderr")


def settings_from_args(args: argparse.Namespace) -> est.EstimateSettings:
    return est.from_values(
        target="Prompts" if args.target == "prompt" else "Negative_Prompts",
        prompt=args.prompt,
        negative_prompt=args.negative,
        mode="Transformer" if args.mode == "transformer" else "U-NET",
        tokens=args.tokens,
        vectors_from=args.vectors_from,
        init_text=args.init_text,
        learning_rate=args.lr,
        optimizer=args.optimizer,
        loss=args.loss,
        schedule=args.schedule,
        iterations=args.iterations,
        all_rows=args.all_rows,
        steps=args.steps,
        cfg_scale=args.cfg_scale,
        sampler=args.sampler,
        seed=args.seed,
        name=args.name,
        overwrite=args.overwrite,
        file_format=args.format,
    )


def diffusers_encoder(model: Any) -> ClipPromptEncoder:
    """The webui-style prompt encoder the diffusers front-end already built on the folder's encoders."""
    return model.text.encoder


def diffusers_denoiser(model: Any) -> tuple[ScheduleDenoiser, tuple[int, int, int, int]]:
    """(denoiser, latent shape) at the U-Net's native sample size."""
    unet, config = model.unet, model.scheduler.config
    size = int(unet.config.sample_size)
    shape = (1, int(unet.config.in_channels), size, size)
    pixels = size * 8
    time_ids = torch.tensor([[pixels, pixels, 0, 0, pixels, pixels]], dtype=torch.float32, device=model.device)

    def apply(x: torch.Tensor, t: torch.Tensor, cond: Cond) -> torch.Tensor:
        x = x.to(model.dtype)
        if isinstance(cond, dict):
            extra = {"text_embeds": cond["vector"].to(model.dtype), "time_ids": time_ids.expand(x.shape[0], -1)}
            out = unet(x, t, encoder_hidden_states=cond["crossattn"].to(model.dtype), added_cond_kwargs=extra)
        else:
            out = unet(x, t, encoder_hidden_states=cond.to(model.dtype))
        return out.sample.float()

    alphas = getattr(model.scheduler, "alphas_cumprod", None)
    if alphas is None:
        raise DumpUnetError(f"{model.folder}: the scheduler has no alphas_cumprod table; U-NET mode needs one.")
    prediction = "v" if config.get("prediction_type") == "v_prediction" else "eps"
    return ScheduleDenoiser(apply, alphas, prediction), shape


class _Progress:
    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    def iteration(self, done: int, total: int, loss: float) -> None:
        if not self.quiet:
            sys.stderr.write(f"\rstep {done}/{total}  loss {loss:.6g}   ")
            if done == total:
                sys.stderr.write("\n")

    def stop_requested(self) -> bool:
        return False


def run_command(args: argparse.Namespace, command_line: str) -> Path:
    """Estimate and save; returns the written file."""
    from lib_dumpunet.diffusers.model import load_model  # imports diffusers: only once the options parse
    from lib_dumpunet.estimate.run import run_estimate

    settings = settings_from_args(args)
    model = load_model(args.model, device=args.device)
    encoder = diffusers_encoder(model)
    denoiser, shape = diffusers_denoiser(model) if settings.mode == "U-NET" else (None, None)
    run = run_estimate(
        settings,
        encoder,
        args.out,
        denoiser=denoiser,
        latent_shape=shape,
        device=args.device,
        monitor=_Progress(args.quiet),
    )
    final = run.result.final
    if final is not None and not args.quiet:
        sys.stderr.write(
            f"matching loss {run.result.start.loss:.6g} → {final.loss:.6g}; rows: cosine {final.cosine:.4f}, "
            f"relative distance {final.distance:.4f}\n"
        )
    assert run.saved is not None  # the CLI never discards
    return run.saved.path
