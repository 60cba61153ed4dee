"""Overhead of word heat maps on the full-size SD1.5 U-Net, on the CPU: `python tests/benchmarks/bench_heatmap.py`.

Side by side in one process (the machinery of `bench.py`: interleaved, rotating repetitions after a warm-up):
sampling with nothing attached, and a whole job recording word heat maps over every attn2 layer at every step
(the recorder's Q*K recomputation, the per-layer upsampling to the latent grid and the per-step sums), then the
word maps of one image drawn over a stand-in picture. Not a test: it prints a Markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
for _path in (HERE.parents[1], HERE.parents[1] / "tests"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from jobdriver import ToyHost, sample  # noqa: E402

from benchmarks.bench import PROMPT, SMALL, Bench, interleave  # noqa: E402
from benchmarks.sd15 import build_sd15  # noqa: E402
from lib_dumpunet.heatmap import HeatmapSettings, WordColumns, render_words, word_heats  # noqa: E402
from lib_dumpunet.job import Job, make_plan  # noqa: E402
from lib_dumpunet.layout import UNetLayout  # noqa: E402
from lib_dumpunet.settings import from_mapping  # noqa: E402

HEAT = {"heatmap.enabled": True, "heatmap.words": "girl"}


def drawing_seconds(bench: Bench, steps: int) -> float:
    """Seconds to turn one image's recorded sums into its word pictures (two words, with per-step strips)."""
    host = ToyHost(768)
    plan = make_plan(from_mapping(HEAT), bench.layout, job_steps=steps, dump_base=bench.dump_base, shared=False)
    with Job(plan, bench.layout, host) as job:
        sample(bench.unet, job, host, [PROMPT], [""], steps=steps, size=SMALL)
        job.take_maps(0)
    words = [WordColumns("cute", ((("cond", 0), (2,)),)), WordColumns("girl", ((("cond", 0), (3,)),))]
    picture = np.full((SMALL, SMALL, 3), 128, np.uint8)
    t0 = time.perf_counter()
    heats = word_heats(job.heat[0], 0, words)
    render_words(picture, heats, HeatmapSettings(per_step=True))
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    unet = build_sd15(0)
    with tempfile.TemporaryDirectory() as tmp:
        bench = Bench(unet, UNetLayout(unet), Path(tmp))
        bench.plain(steps=1)
        bench.job(HEAT, steps=1)
        runs = interleave(
            {"plain": lambda: bench.plain(steps=args.steps), "heat": lambda: bench.job(HEAT, steps=args.steps)},
            max(1, args.reps),
            "time",
        )
        drawing = drawing_seconds(bench, args.steps)
    ratios = [h.sampled / p.sampled for p, h in zip(runs["plain"], runs["heat"], strict=True)]
    plain = statistics.median(r.sampled for r in runs["plain"])
    heat = statistics.median(r.sampled for r in runs["heat"])
    print("| measure | setup | plain | word heat maps | ratio (range) | target |")
    print("|---|---|---|---|---|---|")
    print(
        f"| sampling | SD1.5 860M fp32 CPU {torch.get_num_threads()} thread(s), {SMALL}² image (32² latent), "
        f"{args.steps} steps, batch 1, all 16 attn2 layers, every step | {plain:.2f} s | {heat:.2f} s | "
        f"{statistics.median(ratios):.3f}× ({min(ratios):.3f}–{max(ratios):.3f}) | ≤ 1.10× |"
    )
    in_hooks = statistics.median(r.info["in_hooks"] for r in runs["heat"])
    print(f"| time inside the recorder's hooks | as above | – | {in_hooks:.1%} of sampling | – | – |")
    print(f"| drawing | two words + per-step strips, one image | – | {drawing * 1000:.0f} ms | – | – |")
    print(f"\nMedians of {len(ratios)} interleaved repetitions. Total {time.perf_counter() - started:.0f} s.")


if __name__ == "__main__":
    main()
