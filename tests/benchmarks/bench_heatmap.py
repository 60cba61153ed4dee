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

from benchmarks.bench import MALLOC, PROMPT, SMALL, Bench, HookClock, Run, interleave  # noqa: E402
from benchmarks.sd15 import build_sd15  # noqa: E402
from lib_dumpunet.heatmap import HeatmapSettings, WordColumns, render_words, word_heats  # noqa: E402
from lib_dumpunet.job import Job, make_plan  # noqa: E402
from lib_dumpunet.layout import UNetLayout  # noqa: E402
from lib_dumpunet.settings import from_mapping  # noqa: E402

HEAT = {"heatmap.enabled": True, "heatmap.words": "girl"}
WORDS = [WordColumns("cute", ((("cond", 0), (2,)),)), WordColumns("girl", ((("cond", 0), (3,)),))]


def drawing_seconds(bench: Bench, steps: int) -> float:
    """Seconds to turn one image's recorded sums into its word pictures (two words, with per-step strips)."""
    host = ToyHost(768)
    plan = make_plan(from_mapping(HEAT), bench.layout, job_steps=steps, dump_base=bench.dump_base, shared=False)
    with Job(plan, bench.layout, host) as job:
        sample(bench.unet, job, host, [PROMPT], [""], steps=steps, size=SMALL)
        job.take_maps(0)
    words = WORDS
    picture = np.full((SMALL, SMALL, 3), 128, np.uint8)
    t0 = time.perf_counter()
    heats = word_heats(job.heat[0], 0, words)
    render_words(picture, heats, HeatmapSettings(per_step=True))
    return time.perf_counter() - t0


def whole_plain(bench: Bench, steps: int) -> Run:
    """What a user waits for without word heat maps: sampling, and the picture (a stand-in, the same on both sides)."""
    host = ToyHost(768)
    t0 = time.perf_counter()
    sample(bench.unet, None, host, [PROMPT], [""], steps=steps, size=SMALL)
    sampled = time.perf_counter() - t0
    return Run(sampled, sampled, 0, 0)


def whole_heat(bench: Bench, steps: int) -> Run:
    """The same with word heat maps (every attn2 layer, every step): plan, hooks, sampling, the sums taken from the
    job, and two words' pictures and their strip drawn over the picture — everything the webui does for them."""
    host = ToyHost(768)
    t0 = time.perf_counter()
    with HookClock() as clock:
        settings = from_mapping(HEAT)
        plan = make_plan(settings, bench.layout, job_steps=steps, dump_base=bench.dump_base, shared=False)
        with Job(plan, bench.layout, host) as job:
            sample(bench.unet, job, host, [PROMPT], [""], steps=steps, size=SMALL)
            sampled = time.perf_counter() - t0
            job.take_maps(0)
        picture = np.full((SMALL, SMALL, 3), 128, np.uint8)
        render_words(picture, word_heats(job.heat.pop(0), 0, WORDS), settings.heatmap)
    seconds = time.perf_counter() - t0
    return Run(seconds, sampled, 0, 0, {"in_hooks": clock.seconds / sampled, "after": seconds - sampled})


def whole_job_row(bench: Bench, steps: int, reps: int) -> str:
    """The table row of the whole job with word heat maps vs the plain generation (issue 13's overhead target)."""
    whole_heat(bench, 1)
    runs = interleave(
        {"plain": lambda: whole_plain(bench, steps), "heat": lambda: whole_heat(bench, steps)}, reps, "whole"
    )
    ratios = [h.seconds / p.seconds for p, h in zip(runs["plain"], runs["heat"], strict=True)]
    plain = statistics.median(r.seconds for r in runs["plain"])
    heat = statistics.median(r.seconds for r in runs["heat"])
    after = statistics.median(r.info["after"] for r in runs["heat"])
    return (
        f"| whole job | as above, plus taking the sums and drawing two words and their strip | {plain:.2f} s | "
        f"{heat:.2f} s (of which {after * 1000:.0f} ms after sampling) | "
        f"{statistics.median(ratios):.3f}× ({min(ratios):.3f}–{max(ratios):.3f}) | ≤ 1.10× |"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", choices=("all", "whole"), default="all", help="whole: only the whole-job row")
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)
    torch.set_num_threads(args.threads)
    MALLOC.timing()
    started = time.perf_counter()
    unet = build_sd15(0)
    reps = max(1, args.reps)
    with tempfile.TemporaryDirectory() as tmp:
        bench = Bench(unet, UNetLayout(unet), Path(tmp))
        rows = sampling_rows(bench, args.steps, reps) if args.only == "all" else []
        rows.append(whole_job_row(bench, args.steps, reps))
    print("| measure | setup | plain | word heat maps | ratio (range) | target |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))
    print(f"\nMedians of {reps} interleaved repetitions. Total {time.perf_counter() - started:.0f} s.")


def sampling_rows(bench: Bench, steps: int, reps: int) -> list[str]:
    """Sampling alone with and without the recorder, the share spent in its hooks, and the drawing on its own."""
    bench.plain(steps=1)
    bench.job(HEAT, steps=1)
    runs = interleave(
        {"plain": lambda: bench.plain(steps=steps), "heat": lambda: bench.job(HEAT, steps=steps)}, reps, "time"
    )
    drawing = drawing_seconds(bench, steps)
    ratios = [h.sampled / p.sampled for p, h in zip(runs["plain"], runs["heat"], strict=True)]
    plain = statistics.median(r.sampled for r in runs["plain"])
    heat = statistics.median(r.sampled for r in runs["heat"])
    in_hooks = statistics.median(r.info["in_hooks"] for r in runs["heat"])
    return [
        f"| sampling | SD1.5 860M fp32 CPU {torch.get_num_threads()} thread(s), {SMALL}² image (32² latent), "
        f"{steps} steps, batch 1, all 16 attn2 layers, every step | {plain:.2f} s | {heat:.2f} s | "
        f"{statistics.median(ratios):.3f}× ({min(ratios):.3f}–{max(ratios):.3f}) | ≤ 1.10× |",
        f"| time inside the recorder's hooks | as above | – | {in_hooks:.1%} of sampling | – | – |",
        f"| drawing | two words + per-step strips, one image | – | {drawing * 1000:.0f} ms | – | – |",
    ]


if __name__ == "__main__":
    main()
