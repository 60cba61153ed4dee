"""Benchmark of the diffusers host: what capturing and the whole rendered job cost next to plain generation.

    python tests/benchmarks/bench_diffusers.py                  # demo model, then the full-size SD1.5 U-Net
    python tests/benchmarks/bench_diffusers.py --only demo      # or: --only sd15; --reps N (default 3)

Rows, per model (each names its latent size and steps). One process; variants interleaved with a rotating order
after a warm-up; ratio = median over repetitions of variant time / plain time of the same repetition, with the
range, and the ratio of the fastest runs of each side (the least disturbed on a shared machine):
  a  sampling with the features of every block captured at every step vs nothing attached      target ≤ 1.05×
  b  the whole job — plan, hooks, sampling, VAE decode, every map rendered — vs plain sampling + decode  ≤ 1.25×
Models: the repository's demo model (`demo/model`, 64×64 images, 8² latent, its DDIM scheduler, 20 steps); and a
full-size SD1.5-layout diffusers `UNet2DConditionModel` (860 M parameters, the SD1.5 config) with random weights,
at a 32² latent (256×256), 3 steps, with a tiny VAE and text encoder (the same on both sides; only the U-Net is
full size). fp32 on the CPU, one thread by default. This is not a test: nothing asserts a timing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
for _path in (ROOT, ROOT / "tests"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import tiny_diffusers  # noqa: E402
from diffusers import UNet2DConditionModel  # noqa: E402

from lib_dumpunet.cli.main import DEFAULT_MODEL  # noqa: E402
from lib_dumpunet.diffusers import Generation, Model, load_model, prepare, run  # noqa: E402
from lib_dumpunet.diffusers.generate import decode, denoise  # noqa: E402
from lib_dumpunet.diffusers.host import DiffusersHost  # noqa: E402
from lib_dumpunet.diffusers.layout import diffusers_layout  # noqa: E402
from lib_dumpunet.job import Job  # noqa: E402
from lib_dumpunet.settings import from_mapping  # noqa: E402

PROMPT = "a large red circle and a small blue square on a white background"


def _log(message: str) -> None:
    sys.stderr.write(f"[bench] {message}\n")


def sd15_model(root: Path) -> Model:
    """A model whose U-Net is SD1.5's (random weights); VAE and text encoder from a tiny folder, 768 wide."""
    small = load_model(tiny_diffusers.build_folder(root, "sd1"))
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=64,
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
        cross_attention_dim=768,
        attention_head_dim=8,
    ).eval().requires_grad_(False)  # fmt: skip
    text_encoder = tiny_diffusers.randomize(tiny_diffusers._text(768), 1).requires_grad_(False)
    text = type(small.text)(small.text.tokenizers, [text_encoder])
    return Model(small.folder, "sd1", unet, small.vae, text, small.scheduler, diffusers_layout(unet))


def _every(model: Model) -> str:
    return f"{model.layout.names[0]}-{model.layout.names[-1]}"


def variants(model: Model, gen: Generation, scratch: Path) -> dict[str, Callable[[], dict[str, float]]]:
    """Each variant returns its timings by name: "plain" (sampling) and "plain+decode" come from one plain run."""
    features = {"features.enabled": True, "features.layers": _every(model)}
    plan = prepare(model, from_mapping(features), gen, dump_base=scratch)
    args = ([gen.prompt], [gen.negative], gen.seeds(0))

    def plain() -> dict[str, float]:
        start = time.perf_counter()
        latents = denoise(model, gen, *args)
        sampled = time.perf_counter()
        decode(model, latents)
        return {"plain": sampled - start, "plain+decode": time.perf_counter() - start}

    def captured_sampling() -> dict[str, float]:
        with Job(plan, model.layout, DiffusersHost(model.text)) as job:
            job.begin_batch(0, [gen.prompt], [gen.negative], gen.seeds(0))
            start = time.perf_counter()
            denoise(model, gen, *args, job=job)
            elapsed = time.perf_counter() - start
        assert len(job.capture) == len(model.layout.names) * gen.steps
        return {"a": elapsed}

    def whole_job() -> dict[str, float]:
        start = time.perf_counter()
        result = run(model, prepare(model, from_mapping(features), gen, dump_base=scratch), gen)
        elapsed = time.perf_counter() - start
        assert len(result.images[0].maps) == len(model.layout.names) * gen.steps
        return {"b": elapsed}

    return {"plain": plain, "a": captured_sampling, "b": whole_job}


def measure(model: Model, gen: Generation, reps: int, scratch: Path) -> dict[str, list[float]]:
    runs = variants(model, gen, scratch)
    for name in ("plain", "b"):  # warm-up: allocator, text encodings, first hooks (b does all that a does)
        _log(f"warm-up {name}")
        runs[name]()
    times: dict[str, list[float]] = {}
    names = list(runs)
    for rep in range(reps):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            for key, seconds in runs[name]().items():
                times.setdefault(key, []).append(seconds)
        _log(f"repetition {rep + 1}/{reps}: " + ", ".join(f"{n} {t[-1]:.2f}s" for n, t in times.items()))
    return times


def rows(label: str, times: dict[str, list[float]]) -> list[str]:
    out = []
    for row, base, variant, target, what in (
        ("a", "plain", "a", 1.05, "sampling, features of every block captured at every step"),
        ("b", "plain+decode", "b", 1.25, "whole job with every map rendered vs sampling + decode"),
    ):
        ratios = [v / b for v, b in zip(times[variant], times[base], strict=True)]
        ratio = statistics.median(ratios)
        fastest = min(times[variant]) / min(times[base])  # the least disturbed runs of a shared machine
        verdict = "met" if ratio <= target else "NOT met"
        out.append(
            f"| {row} | {label} | {what} | {statistics.median(times[base]):.2f} s | "
            f"{statistics.median(times[variant]):.2f} s | {ratio:.3f}× ({min(ratios):.3f}–{max(ratios):.3f}) | "
            f"{fastest:.3f}× | ≤ {target}× | {verdict} |"
        )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("demo", "sd15"))
    parser.add_argument("--reps", type=int, default=3, help="repetitions on the small model")
    parser.add_argument("--sd15-reps", type=int, default=2, help="repetitions on the full-size U-Net")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="the small model (default: demo/model)")
    parser.add_argument("--steps", type=int, default=20, help="steps on the small model")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    table = [
        "| row | model, latent, steps | what | plain | with Dump U-Net | ratio (median, range) | fastest/fastest |"
        " target | |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        if args.only in (None, "demo"):
            model = load_model(args.model)
            size = 8 * int(model.unet.config.sample_size)
            gen = Generation(PROMPT, "", seed=1, steps=args.steps, width=size, height=size)
            label = f"{model.name}, {size // 8}² latent, {gen.steps} steps, {args.threads} thread(s)"
            _log(label)
            table += rows(label, measure(model, gen, args.reps, scratch))
        if args.only in (None, "sd15"):
            model = sd15_model(scratch / "models")
            gen = Generation(PROMPT, "", seed=1, steps=3, width=256, height=256)
            label = f"SD1.5 U-Net (860M, random), 32² latent, {gen.steps} steps, {args.threads} thread(s)"
            _log(label)
            table += rows(label, measure(model, gen, args.sd15_reps, scratch))
    sys.stdout.write("\n".join(table) + "\n")


if __name__ == "__main__":
    main()
