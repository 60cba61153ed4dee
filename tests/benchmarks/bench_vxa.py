"""VXA benchmark on the full-size SD1.5 U-Net, on the CPU: `python tests/benchmarks/bench_vxa.py [--size 512]`.

Rows (each names the model, the image and latent size; VXA makes one U-Net call, so "steps" is 1):

  a  one VXA map with the default layer (M00) — everything `visualize` does plus drawing the masked overlay: token
     table, prompt encoding, resize, VAE posterior, seeded noise, the U-Net call with the recorder on, aggregation,
     bilinear upsampling, min–max, overlay — against one plain U-Net forward of the same latent, prompt and t;
  b  the same with all 16 cross-attention layers;
  c  drawing one map at 512×512: the original VXA's method — a Python double loop over every pixel that reads the
     heat of the pixel's cell (nearest, integer replication) and multiplies the pixel by it — against ours
     (bilinear upsampling, min–max, overlay, all vectorised). The row also says how far the two pictures differ
     (they are not meant to be equal: nearest vs bilinear, max vs min–max).

The prompt encoder and the VAE are the test host's stand-ins (`tests/vxahost.py`: a 3-layer CLIP text transformer 768
wide with the real tokenizer; a pooled linear "VAE"), so rows a and b weigh what VXA adds around the U-Net, not the
cost of a real VAE encoder. Variants are interleaved and repeated after a warm-up; ratios are per repetition, the
median and range are shown. One torch thread by default (the machine is shared). Not a test: nothing asserts a time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
for _path in (ROOT, ROOT / "tests"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import unets  # noqa: E402
from vxahost import TinyHost  # noqa: E402

from benchmarks.sd15 import CONTEXT_DIM, build_sd15  # noqa: E402
from lib_dumpunet.overlay import min_max, overlay, resize_heat  # noqa: E402
from lib_dumpunet.vxa import ALL_LAYERS, VxaSettings, model_size, visualize  # noqa: E402

PROMPT = "a girl wearing a red hat, long neck"
TOKENS = "hat"
T = 500.0


def photo(size: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(size, size, 3), dtype=np.uint8)


def one_forward(host: TinyHost, image: np.ndarray) -> float:
    """A plain U-Net forward at the same size, prompt and t (inputs prepared outside the timing)."""
    w, h = model_size(image.shape[1], image.shape[0])
    x = torch.randn(1, 4, h // 8, w // 8, generator=torch.Generator().manual_seed(0))
    cond = host.encode_prompt(PROMPT, w, h)
    t = torch.full((1,), T)
    t0 = time.perf_counter()
    with torch.no_grad():
        host.run_unet(x, t, cond)
    return time.perf_counter() - t0


def one_map(host: TinyHost, image: np.ndarray, layer: str) -> float:
    t0 = time.perf_counter()
    result = visualize(host, image, VxaSettings(prompt=PROMPT, tokens=TOKENS, t=T, layer=layer))
    result.render()
    return time.perf_counter() - t0


def original_render(image: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """The original's drawing, in its shape: divide by the maximum, then visit every pixel in Python and scale it
    by the heat of the latent cell it falls in."""
    heat = heat / heat.max()
    height, width = image.shape[:2]
    cell = round((height * width / heat.size) ** 0.5)
    out = np.zeros_like(image)
    for i in range(height):
        for j in range(width):
            out[i, j] = image[i, j] * heat[i // cell, j // cell]
    return out


def our_render(image: np.ndarray, heat: np.ndarray) -> np.ndarray:
    height, width = image.shape[:2]
    return overlay(image, min_max(resize_heat(torch.from_numpy(heat), height, width)), "masked")


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def interleave(variants: dict[str, Callable[[], float]], reps: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for rep in range(reps):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            seconds = variants[name]()
            times[name].append(seconds)
            print(f"  {rep + 1}/{reps} {name:12s} {seconds:7.3f} s", file=sys.stderr, flush=True)
    return times


def ratio_text(base: list[float], variant: list[float]) -> tuple[float, str]:
    ratios = [v / b for b, v in zip(base, variant, strict=True)]
    r = statistics.median(ratios)
    return r, f"{r:.3f}× ({min(ratios):.3f}–{max(ratios):.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=512, help="image side in pixels (default 512: 64² latent)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    setup = (
        f"SD1.5 (860M, fp32, CPU, {args.threads} thread(s)), {args.size}² image, {args.size // 8}² latent, 1 U-Net call"
    )

    print("building the SD1.5 U-Net …", file=sys.stderr, flush=True)
    host = TinyHost(unets.Flavour("sd15", CONTEXT_DIM, None), build_sd15())
    image = photo(args.size)
    variants = {
        "forward": lambda: one_forward(host, image),
        "vxa M00": lambda: one_map(host, image, "M00"),
        "vxa all": lambda: one_map(host, image, ALL_LAYERS),
    }
    for fn in variants.values():  # warm-up
        fn()
    times = interleave(variants, args.reps)

    heat = np.random.default_rng(1).random((8, 8)).astype(np.float32)  # M00's grid at 512²
    big = photo(512)
    theirs = [timed(lambda: original_render(big, heat)) for _ in range(args.reps)]
    ours = [timed(lambda: our_render(big, heat)) for _ in range(args.reps)]
    difference = np.abs(original_render(big, heat).astype(int) - our_render(big, heat).astype(int)).mean()

    base = times["forward"]
    rows = []
    for row, name, what in (("a", "vxa M00", "one VXA map, layer M00"), ("b", "vxa all", "one VXA map, all 16 layers")):
        r, text = ratio_text(base, times[name])
        verdict = "yes" if r <= 1.5 else "**no**"
        medians = f"{statistics.median(base):.2f} s", f"{statistics.median(times[name]):.2f} s"
        rows.append([row, what, setup, *medians, text, "≤ 1.5×", verdict])
    speed = statistics.median(theirs) / statistics.median(ours)
    rows.append(
        [
            "c",
            "drawing one masked map at 512² (original per-pixel loop vs ours)",
            "8² heat map → 512×512 RGB",
            f"{statistics.median(theirs) * 1e3:.0f} ms",
            f"{statistics.median(ours) * 1e3:.1f} ms",
            f"{speed:.0f}× faster (mean |Δ| {difference:.1f} of 255)",
            "faster",
            "yes" if speed > 1 else "**no**",
        ]
    )
    header = ["row", "what", "setup", "baseline", "VXA", "ratio (range)", "target", "met"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
