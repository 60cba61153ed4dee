"""VXA benchmarks: speed on the full-size SD1.5 U-Net, and heat-map accuracy on the demo model (the shapes world).

    python tests/benchmarks/bench_vxa.py [--size 512] [--reps 3]       speed (rows a–c)
    python tests/benchmarks/bench_vxa.py --iou [--model demo/model]    accuracy against the shapes' true masks

Speed rows (each names the model, the image and latent size; VXA makes one U-Net call, so "steps" is 1):

  a  one VXA map with the default layer (M00) — everything `visualize` does plus drawing the masked overlay: token
     table, prompt encoding, resize, VAE posterior, seeded noise, the U-Net call with the recorder on, aggregation,
     bilinear upsampling, min–max, overlay — against one plain U-Net forward of the same latent, prompt and t.
     Side by side (separate runs, interleaved) and within each VXA run: its whole time against its own U-Net call
     less the time spent inside Dump U-Net's hooks (`HookClock`, as in bench.py), which machine drift cannot move;
  b  the same with all 16 cross-attention layers;
  c  drawing one map at 512×512: the original VXA's method — a Python double loop over every pixel that reads the
     heat of the pixel's cell (nearest, integer replication) and multiplies the pixel by it — against ours
     (bilinear upsampling, min–max, overlay, all vectorised). The row also says how far the two pictures differ
     (they are not meant to be equal: nearest vs bilinear, max vs min–max).

The prompt encoder and the VAE are the test host's stand-ins (`tests/vxahost.py`: a 3-layer CLIP text transformer 768
wide with the real tokenizer; a pooled linear "VAE"), so rows a and b weigh what VXA adds around the U-Net, not the
cost of a real VAE encoder. Variants are interleaved and repeated after a warm-up; ratios are per repetition, the
median and range are shown. One torch thread by default (the machine is shared). Not a test: nothing asserts a time.

Accuracy (`--iou`): scenes of the shapes world (`lib_dumpunet.world`, "train" split of seed 7, indices from 100000,
so none was trained on) are drawn at the model's size; VXA runs once per scene and t, with every word of the caption
that names an object picked (its size, colour and shape words; the mask of a word two objects share is the union),
at all layers.
For each word, each layer's map and the all-layer average are brought to the image size, min–max normalised and
thresholded at τ (default 0.4, as DAAM's evaluation); the IoU with the word's exact mask is averaged over words and
scenes. The table gives the mean IoU per layer (with its grid) and t, and the best layer/t among layers whose grid
has more than one cell (a one-cell map is flat: it scores the uniform baseline, the mask's share of the image, which
is printed too).
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

from benchmarks.bench import HookClock  # noqa: E402
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


WITHIN: dict[str, list[float]] = {}  # variant → per run: total ÷ (its own U-Net call minus the time in hooks)


def one_map(host: TinyHost, image: np.ndarray, layer: str) -> float:
    """One VXA map, drawn. Also files, per run, the ratio of the whole to the plain-forward part of its own U-Net
    call (the call's time less the time inside Dump U-Net's hooks): a ratio the machine's drift does not move."""
    unet_seconds = []
    run_unet = host.run_unet

    def timed(x, t, cond):
        t1 = time.perf_counter()
        try:
            return run_unet(x, t, cond)
        finally:
            unet_seconds.append(time.perf_counter() - t1)

    host.run_unet = timed
    try:
        with HookClock() as clock:
            t0 = time.perf_counter()
            result = visualize(host, image, VxaSettings(prompt=PROMPT, tokens=TOKENS, t=T, layer=layer))
            result.render()
            total = time.perf_counter() - t0
    finally:
        host.run_unet = run_unet
    WITHIN.setdefault(layer, []).append(total / (sum(unet_seconds) - clock.seconds))
    return total


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


def iou(heat: np.ndarray, mask: np.ndarray, threshold: float) -> float:
    hot = heat >= threshold
    union = np.logical_or(hot, mask).sum()
    return float(np.logical_and(hot, mask).sum() / union) if union else 1.0


def measure_iou(model_dir: Path, scenes: int, times: list[float], threshold: float, device: str) -> None:
    """The accuracy table (see the module docstring) on a diffusers model folder of the shapes world."""
    from lib_dumpunet.cli.vxa import DiffusersVxaHost
    from lib_dumpunet.diffusers.model import load_model
    from lib_dumpunet.world import render, scene_at

    host = DiffusersVxaHost(load_model(model_dir, device=device))
    side = 8 * int(host.unet.config.sample_size)
    labels: list[str] = []
    scores: dict[tuple[str, float], list[float]] = {}
    uniform: list[float] = []
    for n in range(scenes):
        scene = scene_at(7, 100000 + n, "train")
        picture = render(scene, side)
        masks = scene.word_masks(side)
        words = sorted({word for obj in scene.objects for word in obj.words})  # what names an object
        pick = ", ".join(f'"{w}"' for w in words)
        for t in times:
            settings = VxaSettings(prompt=scene.caption, tokens=pick, t=t, layer=ALL_LAYERS, seed=n)
            result = visualize(host, picture.image, settings)
            labels = [a.label for a in result.layers]
            grids = {label: tuple(result.attention[label].shape[-2:]) for label in labels}
            for word, (_, positions) in zip(words, result.pick.groups, strict=True):
                for label in [*labels, ALL_LAYERS]:
                    layers = None if label == ALL_LAYERS else [label]
                    scores.setdefault((label, t), []).append(
                        iou(result.heat(positions, layers), masks[word], threshold)
                    )
                if t == times[0]:
                    uniform.append(float(masks[word].mean()))
        print(f"  scene {n + 1}/{scenes}: {scene.caption}", file=sys.stderr, flush=True)
    header = ["layer", *(f"t={t:g}" for t in times)]
    print(f"VXA heat-map IoU (τ={threshold}) on {model_dir.name}, {scenes} scenes, {side}² images, region words")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    flat = {label for label, grid in grids.items() if grid == (1, 1)}
    for label in [*labels, ALL_LAYERS]:
        cells = [f"{statistics.mean(scores[(label, t)]):.3f}" for t in times]
        note = f" ({grids[label][0]}×{grids[label][1]})" if label in grids else ""
        print(f"| {label}{note} | " + " | ".join(cells) + " |")
    best = max((k for k in scores if k[0] not in flat), key=lambda k: statistics.mean(scores[k]))
    print(f"\nbest: {best[0]} at t={best[1]:g}, mean IoU {statistics.mean(scores[best]):.3f}; ")
    print(f"uniform-map baseline (IoU = mask share): {statistics.mean(uniform):.3f}; one-cell layers are flat: {flat}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=512, help="image side in pixels (default 512: 64² latent)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--iou", action="store_true", help="accuracy on the demo model instead of speed")
    parser.add_argument("--model", type=Path, default=ROOT / "demo" / "model")
    parser.add_argument("--scenes", type=int, default=16)
    parser.add_argument("--times", default="1,250,500,750")
    parser.add_argument("--threshold", type=float, default=0.4)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.iou:
        times = [float(t) for t in args.times.split(",")]
        measure_iou(args.model, args.scenes, times, args.threshold, args.device)
        return
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
        within = WITHIN["M00" if name == "vxa M00" else ALL_LAYERS][1:]  # without the warm-up
        text += f"; within each run {statistics.median(within):.3f}× ({min(within):.3f}–{max(within):.3f})"
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
