"""Scores the demo model: generates held-out prompts and reads the images back with the world's analyser.

    python demo/evaluate.py [--model demo/model] [--prompts 100] [--split held_out] [--grid demo/runs/eval.png]

Prompts are the captions of scenes from the world's "held_out" split (every one names at least one colour × shape
pair the training never showed) or, for comparison, of unseen "train"-split scenes. Reports colour accuracy
(asked objects found in their colour), shape accuracy (found in their colour *and* shape), count accuracy
(images with as many shapes as asked) and background accuracy, as a JSON line and a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

from lib_dumpunet.world import scene_at
from lib_dumpunet.world.analyse import analyse, score

DEMO = Path(__file__).resolve().parent
EVAL_SEED = 2024
TARGETS = {"colour": 0.90, "shape": 0.70}

log = logging.getLogger("demo.evaluate")


@dataclass(frozen=True)
class Parts:
    """The model's parts, loaded one by one (the pipeline class needs a newer transformers than the webui's)."""

    tokenizer: CLIPTokenizer
    text_encoder: CLIPTextModel
    unet: UNet2DConditionModel
    vae: AutoencoderKL
    scheduler: DDIMScheduler


def load(model: Path) -> Parts:
    common = {"local_files_only": True, "torch_dtype": torch.float32}
    return Parts(
        tokenizer=CLIPTokenizer.from_pretrained(str(model), subfolder="tokenizer", local_files_only=True),
        text_encoder=CLIPTextModel.from_pretrained(str(model), subfolder="text_encoder", **common).eval(),
        unet=UNet2DConditionModel.from_pretrained(str(model), subfolder="unet", **common).eval(),
        vae=AutoencoderKL.from_pretrained(str(model), subfolder="vae", **common).eval(),
        scheduler=DDIMScheduler.from_pretrained(str(model), subfolder="scheduler", local_files_only=True),
    )


@torch.no_grad()
def generate(parts: Parts, prompts: list[str], seeds: list[int], steps: int, guidance: float) -> list[np.ndarray]:
    """Text-to-image with classifier-free guidance (empty negative prompt), as StableDiffusionPipeline does."""
    tokens = parts.tokenizer(
        prompts + [""] * len(prompts), padding="max_length", max_length=77, truncation=True, return_tensors="pt"
    )
    context = parts.text_encoder(input_ids=tokens["input_ids"]).last_hidden_state
    side = parts.unet.config.sample_size
    latents = torch.cat([torch.randn(1, 4, side, side, generator=torch.Generator().manual_seed(s)) for s in seeds])
    scheduler = parts.scheduler
    scheduler.set_timesteps(steps)
    latents = latents * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        both = scheduler.scale_model_input(torch.cat([latents, latents]), t)
        cond, uncond = parts.unet(both, t, context).sample.chunk(2)
        latents = scheduler.step(uncond + guidance * (cond - uncond), t, latents).prev_sample
    pixels = parts.vae.decode(latents / parts.vae.config.scaling_factor).sample
    array = ((pixels.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    return list(array)


def evaluate(model: Path, count: int, split: str, steps: int, guidance: float, grid: Path | None) -> dict:
    parts = load(model)
    scenes = [scene_at(EVAL_SEED, i, split) for i in range(count)]  # type: ignore[arg-type]
    images: list[np.ndarray] = []
    for start in range(0, count, 25):
        chunk = scenes[start : start + 25]
        seeds = list(range(start, start + len(chunk)))
        images += generate(parts, [s.caption for s in chunk], seeds, steps, guidance)
    scores = [score(scene, analyse(image)) for scene, image in zip(scenes, images, strict=True)]
    asked = sum(s.asked for s in scores)
    result = {
        "split": split,
        "prompts": count,
        "objects": asked,
        "steps": steps,
        "guidance": guidance,
        "colour": sum(s.colour_hits for s in scores) / asked,
        "shape": sum(s.shape_hits for s in scores) / asked,
        "count": sum(s.count_ok for s in scores) / count,
        "background": sum(s.background_ok for s in scores) / count,
    }
    if grid is not None:
        _save_grid(images[:32], grid)
        (grid.with_suffix(".txt")).write_text("\n".join(s.caption for s in scenes[:32]) + "\n", "utf-8")
    return result


def _save_grid(images: list[np.ndarray], path: Path, columns: int = 8) -> None:
    rows = [np.concatenate(images[i : i + columns], axis=1) for i in range(0, len(images), columns)]
    if len(rows) > 1 and rows[-1].shape != rows[0].shape:
        rows = rows[:-1]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, axis=0)).save(path)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEMO / "model")
    parser.add_argument("--prompts", type=int, default=100)
    parser.add_argument("--split", choices=["held_out", "train"], default="held_out")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--grid", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    result = evaluate(args.model, args.prompts, args.split, args.steps, args.guidance, args.grid)
    sys.stdout.write(json.dumps(result) + "\n")
    rows = [
        f"| {k} | {result[k]:.1%} | {'≥ ' + format(TARGETS[k], '.0%') if k in TARGETS else '—'} |"
        for k in ("colour", "shape", "count", "background")
    ]
    sys.stdout.write("| measure | result | target |\n|---|---|---|\n" + "\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
