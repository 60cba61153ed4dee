"""Writes the trained demo model as a diffusers folder: `demo/model/` (or the folder given).

Takes the VAE from `demo/runs/vae.pt` and the EMA U-Net and text encoder from `demo/runs/unet.pt`, stores every
weight in fp16 safetensors, and writes the folder of a `StableDiffusionPipeline` without safety checker or feature
extractor: `model_index.json`, unet/, vae/, text_encoder/, tokenizer/, scheduler/. Each part is saved by its own
class (the pipeline class itself cannot be imported beside transformers 4.30, the webui's pin), so
`StableDiffusionPipeline.from_pretrained(folder, local_files_only=True)` loads it where a newer transformers is
installed, and every part loads alone with `<Class>.from_pretrained(folder, subfolder=...)` everywhere.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import diffusers
import models
import train
import transformers

DEMO = Path(__file__).resolve().parent
log = logging.getLogger("demo.export")


def export(target: Path) -> None:
    vae, unet, encoder = models.build_vae(), models.build_unet(), models.build_text_encoder()
    vae.load_state_dict(torch.load(train.RUNS / "vae.pt", weights_only=False)["model"])
    state = torch.load(train.RUNS / "unet.pt", weights_only=False) if (train.RUNS / "unet.pt").exists() else None
    if state is not None:
        unet.load_state_dict(state["ema_unet"])
        encoder.load_state_dict(state["ema_encoder"])
        scale = state["scale"]
        log.info("exporting the U-Net at step %d", state["step"])
    else:
        raise SystemExit("no U-Net state in demo/runs/unet.pt: run `python demo/train.py unet` first")
    vae.register_to_config(scaling_factor=scale)
    parts = {
        "unet": unet.half(),
        "vae": vae.half(),
        "text_encoder": encoder.half(),
        "tokenizer": train.tokenizer(),
        "scheduler": models.build_scheduler(),
    }
    target.mkdir(parents=True, exist_ok=True)
    for name, part in parts.items():
        if (target / name).exists():
            shutil.rmtree(target / name)
        kwargs = {"safe_serialization": True} if isinstance(part, torch.nn.Module) else {}
        part.save_pretrained(target / name, **kwargs)
    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": diffusers.__version__,
        "feature_extractor": [None, None],
        "image_encoder": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
    }
    for name, part in parts.items():
        from_transformers = isinstance(part, transformers.PreTrainedModel | transformers.PreTrainedTokenizerBase)
        library = "transformers" if from_transformers else "diffusers"
        index[name] = [library, type(part).__name__]
    (target / "model_index.json").write_text(json.dumps(dict(sorted(index.items())), indent=2) + "\n", "utf-8")
    size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    log.info("wrote %s: %.1f MB", target, size / 1e6)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("target", nargs="?", type=Path, default=DEMO / "model")
    export(parser.parse_args().target)


if __name__ == "__main__":
    main()
