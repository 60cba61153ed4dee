"""Trains the demo model on the shapes world, on a CPU, in resumable stages.

    python demo/train.py vae   --steps 1500     # autoencoder on 32×32 crops, then a few full-size steps
    python demo/train.py text  --steps 400      # text encoder pre-trained to say which words describe each shape
    python demo/train.py unet  --until 06:25    # the U-Net (and the text encoder at a lower rate), v-prediction

Every stage writes its state to `demo/runs/<stage>.pt` every few minutes and on exit, and resumes from it; the
loss goes to `demo/runs/<stage>.log`. `demo/export.py` turns the states into the diffusers folder `demo/model/`.
The run is deterministic given the seed: batches are drawn from the world by index, so resuming draws the same
batches an unbroken run would.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import logging
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import data
import models

from lib_dumpunet.world import BACKGROUNDS, COLOURS, SHAPES, SIZES, Scene

RUNS = Path(__file__).resolve().parent / "runs"
SEED = 1234
SAVE_EVERY_S = 180

log = logging.getLogger("demo.train")


def _setup(stage: str) -> None:
    RUNS.mkdir(exist_ok=True)
    torch.set_num_threads(1)
    handlers = [logging.FileHandler(RUNS / f"{stage}.log"), logging.StreamHandler()]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", handlers=handlers)


def _load(stage: str) -> dict | None:
    path = RUNS / f"{stage}.pt"
    return torch.load(path, weights_only=False) if path.exists() else None


def _save(stage: str, state: dict) -> None:
    path = RUNS / f"{stage}.pt"
    partial = path.with_suffix(".tmp")
    torch.save(state, partial)
    partial.replace(path)


def _warmup_lr(step: int, base: float, warmup: int) -> float:
    return base * min(1.0, (step + 1) / warmup)


# --------------------------------------------------------------------------------------------------- VAE


def train_vae(steps: int, batch: int, full_steps: int) -> None:
    vae = models.build_vae()
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=0.0)
    step = 0
    if (state := _load("vae")) is not None:
        vae.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step = state["step"]
    saved = time.monotonic()
    total = steps + full_steps
    while step < total:
        crop = step < steps
        x = data.images(data.scenes(SEED, step * batch, batch), models.IMAGE_SIDE)
        if crop:
            # Aligned 32×32 crops: a quarter of the cost, the same 8-pixel grid as the full image.
            g = torch.Generator().manual_seed(step)
            oy, ox = (int(v) * 8 for v in torch.randint(0, 5, (2,), generator=g))
            x = x[:, :, oy : oy + 32, ox : ox + 32]
        for group in opt.param_groups:
            group["lr"] = _warmup_lr(step, 1e-3 if crop else 3e-4, 50)
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample()).sample
        rec = F.mse_loss(recon, x) + 0.5 * F.l1_loss(recon, x)
        kl = posterior.kl().mean()
        loss = rec + 1e-6 * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % 10 == 0:
            log.info("vae step %d rec %.5f kl %.1f %s", step, rec.item(), kl.item(), "crop" if crop else "full")
        if time.monotonic() - saved > SAVE_EVERY_S or step == total:
            _save("vae", {"model": vae.state_dict(), "opt": opt.state_dict(), "step": step})
            saved = time.monotonic()


# --------------------------------------------------------------------------------------------------- captions


def tokenizer():
    return models.build_tokenizer(RUNS / "tokenizer")


def token_ids(tok, captions: list[str]) -> torch.Tensor:
    return tok(captions, padding="max_length", max_length=models.MAX_TOKENS, truncation=True, return_tensors="pt")[
        "input_ids"
    ]


_COLOUR_IDS = {c: i for i, c in enumerate(COLOURS)}
_SIZE_IDS = {s: i for i, s in enumerate(SIZES)}
_SHAPE_IDS = {s: i for i, s in enumerate(SHAPES)}
_BACKGROUND_IDS = {b: i for i, b in enumerate(BACKGROUNDS)}


def _word_targets(tok, batch: list[Scene], ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per token: the colour, size and shape of the object a shape word names (-100 elsewhere); per caption: the
    count and background, read at the end token."""
    shape_token = {tok.convert_tokens_to_ids(f"{s}</w>"): s for s in SHAPES}
    colour = torch.full(ids.shape, -100)
    size = torch.full(ids.shape, -100)
    shape = torch.full(ids.shape, -100)
    for row, scene in enumerate(batch):
        positions = [i for i, t in enumerate(ids[row].tolist()) if t in shape_token]
        for pos, obj in zip(positions, scene.objects, strict=True):
            colour[row, pos] = _COLOUR_IDS[obj.colour]
            size[row, pos] = _SIZE_IDS[obj.size]
            shape[row, pos] = _SHAPE_IDS[obj.shape]
    count = torch.tensor([len(s.objects) - 1 for s in batch])
    background = torch.tensor([_BACKGROUND_IDS[s.background] for s in batch])
    return {"colour": colour, "size": size, "shape": shape, "count": count, "background": background}


def train_text(steps: int, batch: int) -> None:
    """Pre-trains the text encoder so that each shape word's output says its object's colour, size and shape, and
    the end token says how many objects and which background: the U-Net then starts from words that already
    carry their adjectives."""
    tok = tokenizer()
    encoder = models.build_text_encoder()
    width = models.CONTEXT_WIDTH
    heads = torch.nn.ModuleDict(
        {
            "colour": torch.nn.Linear(width, len(COLOURS)),
            "size": torch.nn.Linear(width, len(SIZES)),
            "shape": torch.nn.Linear(width, len(SHAPES)),
            "count": torch.nn.Linear(width, 3),
            "background": torch.nn.Linear(width, len(BACKGROUNDS)),
        }
    )
    params = list(encoder.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)
    for step in range(steps):
        scenes = data.scenes(SEED + 1, step * batch, batch)
        ids = token_ids(tok, [s.caption for s in scenes])
        targets = _word_targets(tok, scenes, ids)
        hidden = encoder(input_ids=ids).last_hidden_state
        end = hidden[torch.arange(len(scenes)), ids.argmax(dim=1)]
        losses = {
            name: F.cross_entropy(heads[name](hidden).flatten(0, 1), targets[name].flatten(), ignore_index=-100)
            for name in ("colour", "size", "shape")
        }
        losses["count"] = F.cross_entropy(heads["count"](end), targets["count"])
        losses["background"] = F.cross_entropy(heads["background"](end), targets["background"])
        loss = sum(losses.values())
        for group in opt.param_groups:
            group["lr"] = _warmup_lr(step, 1e-3, 30)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % 20 == 0:
            log.info("text step %d %s", step + 1, " ".join(f"{k} {v.item():.3f}" for k, v in losses.items()))
    _save("text", {"model": encoder.state_dict(), "step": steps})


# --------------------------------------------------------------------------------------------------- U-Net


def _cache_latents(count: int, batch: int = 128) -> dict:
    """Posterior means and standard deviations of `count` training scenes under the trained VAE, their caption
    tokens, and the scaling factor that gives the latents unit variance."""
    path = RUNS / "latents.pt"
    if path.exists():
        return torch.load(path, weights_only=False)
    vae = models.build_vae()
    vae.load_state_dict(_load("vae")["model"])
    vae.eval()
    tok = tokenizer()
    means, stds, ids = [], [], []
    with torch.no_grad():
        for start in range(0, count, batch):
            scenes = data.scenes(SEED + 2, start, min(batch, count - start))
            posterior = vae.encode(data.images(scenes, models.IMAGE_SIDE)).latent_dist
            means.append(posterior.mean.half())
            stds.append(posterior.std.half())
            ids.append(token_ids(tok, [s.caption for s in scenes]).int())
            if start % (batch * 20) == 0:
                log.info("cached latents %d/%d", start, count)
    mean = torch.cat(means)
    cache = {"mean": mean, "std": torch.cat(stds), "ids": torch.cat(ids), "scale": float(1.0 / mean.float().std())}
    torch.save(cache, path)
    return cache


def _ema_update(ema: torch.nn.Module, live: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        for e, p in zip(ema.parameters(), live.parameters(), strict=True):
            e.lerp_(p, 1.0 - decay)


def _deadline(until: str | None) -> float:
    if until is None:
        return math.inf
    hour, minute = (int(v) for v in until.split(":"))
    now = dt.datetime.now(dt.timezone.utc)
    end = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    return time.monotonic() + (end - now).total_seconds()


def train_unet(batch: int, until: str | None, max_steps: int, cache_count: int) -> None:
    """v-prediction with min-SNR-5 weighting, 10 % empty captions for classifier-free guidance, EMA weights; the
    text encoder (pre-trained by the `text` stage) is fine-tuned at a tenth of the U-Net's rate."""
    cache = _cache_latents(cache_count)
    scale = cache["scale"]
    unet, encoder = models.build_unet(), models.build_text_encoder()
    encoder.load_state_dict(_load("text")["model"])
    ema_unet, ema_encoder = copy.deepcopy(unet), copy.deepcopy(encoder)
    # The token table (49408 rows, of which the world uses 20) keeps its pre-trained rows: updating it densely
    # every step would cost more than the rest of the text encoder.
    encoder.text_model.embeddings.token_embedding.weight.requires_grad_(False)
    text_params = [p for p in encoder.parameters() if p.requires_grad]
    base_lr, text_lr = 8e-4, 8e-5
    opt = torch.optim.AdamW(
        [{"params": list(unet.parameters()), "lr": base_lr}, {"params": text_params, "lr": text_lr}],
        weight_decay=1e-2,
        fused=True,
    )
    step = warm_from = 0
    if (state := _load("unet")) is not None:
        unet.load_state_dict(state["unet"])
        encoder.load_state_dict(state["encoder"])
        ema_unet.load_state_dict(state["ema_unet"])
        ema_encoder.load_state_dict(state["ema_encoder"])
        step = warm_from = state["step"]
        try:
            opt.load_state_dict(state["opt"])
            warm_from = state.get("warm_from", 0)
        except ValueError:
            log.info("optimizer state does not fit the parameter groups: fresh moments, warm-up again")
    scheduler = models.build_scheduler()
    alphas = scheduler.alphas_cumprod.float()
    snr = alphas / (1 - alphas)
    weight = torch.clamp(snr, max=5.0) / (snr + 1)  # min-SNR-5 for a v target
    tok = tokenizer()
    empty = token_ids(tok, [""])[0].int()
    stop_at = _deadline(until)
    saved, started, running = time.monotonic(), time.monotonic(), None

    def save() -> None:
        _save(
            "unet",
            {
                "unet": unet.state_dict(),
                "encoder": encoder.state_dict(),
                "ema_unet": ema_unet.state_dict(),
                "ema_encoder": ema_encoder.state_dict(),
                "opt": opt.state_dict(),
                "step": step,
                "warm_from": warm_from,
                "scale": scale,
            },
        )

    total = cache["mean"].shape[0]
    while step < max_steps and time.monotonic() < stop_at:
        g = torch.Generator().manual_seed(SEED * 1000 + step)
        rows = torch.randint(0, total, (batch,), generator=g)
        latents = cache["mean"][rows].float() + cache["std"][rows].float() * torch.randn(
            batch, 4, models.LATENT_SIDE, models.LATENT_SIDE, generator=g
        )
        latents = latents * scale
        ids = cache["ids"][rows].clone()
        ids[torch.rand(batch, generator=g) < 0.1] = empty
        noise = torch.randn(latents.shape, generator=g)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (batch,), generator=g)
        a = alphas[t].sqrt().view(-1, 1, 1, 1)
        s = (1 - alphas[t]).sqrt().view(-1, 1, 1, 1)
        noisy = a * latents + s * noise
        target = a * noise - s * latents
        context = encoder(input_ids=ids.long()).last_hidden_state
        pred = unet(noisy, t, context).sample
        loss = (weight[t] * (pred - target).pow(2).mean(dim=(1, 2, 3))).mean()
        for group, base in zip(opt.param_groups, (base_lr, text_lr), strict=True):
            group["lr"] = _warmup_lr(step - warm_from, base, 200)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(unet.parameters()) + text_params, 1.0)
        opt.step()
        decay = min(0.999, (1 + step) / (10 + step))
        _ema_update(ema_unet, unet, decay)
        _ema_update(ema_encoder, encoder, decay)
        step += 1
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if step % 50 == 0:
            elapsed = time.monotonic() - started
            log.info("unet step %d loss %.4f (avg %.4f) %.2f s/step", step, loss.item(), running, elapsed / 50)
            started = time.monotonic()
        if time.monotonic() - saved > SAVE_EVERY_S:
            save()
            saved = time.monotonic()
    save()
    log.info("unet stopped at step %d", step)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=["vae", "text", "unet"])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--full-steps", type=int, default=100)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--cache", type=int, default=24000, help="training scenes whose latents are cached")
    parser.add_argument("--until", default=None, help="UTC time HH:MM at which the U-Net stage saves and stops")
    args = parser.parse_args()
    _setup(args.stage)
    if args.stage == "vae":
        train_vae(args.steps, args.batch, args.full_steps)
    elif args.stage == "text":
        train_text(args.steps, args.batch)
    else:
        train_unet(args.batch, args.until, args.steps, args.cache)


if __name__ == "__main__":
    main()
