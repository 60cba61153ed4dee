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

from lib_dumpunet.world import SHAPES, scene_at
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


class _CrossAttentionRecorder:
    """Attention processor for the cross-attention layers: runs the layer's usual processor unchanged, and adds
    the softmax(q·kᵀ) probabilities of the conditional rows, averaged over heads, to a per-size sum."""

    def __init__(self, inner: object, sums: dict[int, torch.Tensor], rows: int) -> None:
        self.inner, self.sums, self.rows = inner, sums, rows

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        q = attn.to_q(hidden_states[: self.rows])
        k = attn.to_k(encoder_hidden_states[: self.rows])
        b, n, _ = q.shape
        q = q.view(b, n, attn.heads, -1).transpose(1, 2)
        k = k.view(b, k.shape[1], attn.heads, -1).transpose(1, 2)
        probs = torch.softmax(q @ k.transpose(-1, -2) * attn.scale, dim=-1).mean(dim=1)  # (b, pixels, tokens)
        self.sums[n] = self.sums.get(n, 0) + probs
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)


def _token_maps(sums: dict[int, torch.Tensor], side: int) -> torch.Tensor:
    """(b, tokens, side, side): every layer's maps upsampled to the image and added, each layer normalised."""
    total = 0
    for pixels, probs in sums.items():
        grid = int(pixels**0.5)
        maps = probs.transpose(1, 2).reshape(probs.shape[0], probs.shape[2], grid, grid)
        maps = torch.nn.functional.interpolate(maps, size=(side, side), mode="bilinear", align_corners=False)
        total = total + maps / maps.sum(dim=(2, 3), keepdim=True)
    return total


@torch.no_grad()
def generate(
    parts: Parts, prompts: list[str], seeds: list[int], steps: int, guidance: float, maps: list | None = None
) -> list[np.ndarray]:
    """Text-to-image with classifier-free guidance (empty negative prompt), as StableDiffusionPipeline does.
    With `maps` (a list), appends each image's summed cross-attention maps per token (77, h, w)."""
    tokens = parts.tokenizer(
        prompts + [""] * len(prompts), padding="max_length", max_length=77, truncation=True, return_tensors="pt"
    )
    context = parts.text_encoder(input_ids=tokens["input_ids"]).last_hidden_state
    side = parts.unet.config.sample_size
    latents = torch.cat([torch.randn(1, 4, side, side, generator=torch.Generator().manual_seed(s)) for s in seeds])
    scheduler = parts.scheduler
    scheduler.set_timesteps(steps)
    latents = latents * scheduler.init_noise_sigma
    sums: dict[int, torch.Tensor] = {}
    if maps is not None:
        processors = parts.unet.attn_processors
        parts.unet.set_attn_processor(
            {
                name: _CrossAttentionRecorder(proc, sums, len(prompts)) if "attn2" in name else proc
                for name, proc in processors.items()
            }
        )
    for t in scheduler.timesteps:
        both = scheduler.scale_model_input(torch.cat([latents, latents]), t)
        cond, uncond = parts.unet(both, t, context).sample.chunk(2)
        latents = scheduler.step(uncond + guidance * (cond - uncond), t, latents).prev_sample
    if maps is not None:
        parts.unet.set_attn_processor(processors)
        maps.extend(_token_maps(sums, parts.vae.config.sample_size))
    pixels = parts.vae.decode(latents / parts.vae.config.scaling_factor).sample
    array = ((pixels.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    return list(array)


def _attention_on_objects(parts: Parts, scenes: list, analyses: list, maps: list) -> dict:
    """For every asked object found in its colour: the share of its shape word's (and colour word's)
    cross-attention mass that falls on the object, against the object's share of the image (what a map that
    ignored the image would get), and how often the map's peak lies on the object."""
    shape_ids = {parts.tokenizer.convert_tokens_to_ids(f"{s}</w>") for s in SHAPES}
    shares: dict[str, list[float]] = {"shape_word": [], "colour_word": [], "area": []}
    peaks = 0
    for scene, analysis, token_maps in zip(scenes, analyses, maps, strict=True):
        ids = parts.tokenizer(scene.caption).input_ids
        positions = [i for i, t in enumerate(ids) if t in shape_ids]
        unused = list(analysis.shapes)
        for obj, pos in zip(scene.objects, positions, strict=True):
            found = next((f for f in unused if f.colour == obj.colour and f.shape == obj.shape), None)
            found = found or next((f for f in unused if f.colour == obj.colour), None)
            if found is None:
                continue
            unused.remove(found)
            mask = torch.from_numpy(found.mask)
            for key, token in (("shape_word", pos), ("colour_word", pos - 1)):
                token_map = token_maps[token]
                shares[key].append(float(token_map[mask].sum() / token_map.sum()))
            shares["area"].append(float(mask.float().mean()))
            peaks += bool(mask.flatten()[int(token_maps[pos].argmax())])
    n = max(1, len(shares["area"]))
    result = {f"attention_{k}_share": sum(v) / n for k, v in shares.items()}
    result["attention_peak_on_object"] = peaks / n
    result["attention_objects"] = len(shares["area"])
    return result


def evaluate(model: Path, count: int, split: str, steps: int, guidance: float, grid: Path | None) -> dict:
    parts = load(model)
    scenes = [scene_at(EVAL_SEED, i, split) for i in range(count)]  # type: ignore[arg-type]
    images: list[np.ndarray] = []
    maps: list[torch.Tensor] = []
    for start in range(0, count, 25):
        chunk = scenes[start : start + 25]
        seeds = list(range(start, start + len(chunk)))
        images += generate(parts, [s.caption for s in chunk], seeds, steps, guidance, maps)
    analyses = [analyse(image) for image in images]
    scores = [score(scene, analysis) for scene, analysis in zip(scenes, analyses, strict=True)]
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
        **_attention_on_objects(parts, scenes, analyses, maps),
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
