"""Side-by-side benchmark of Dump U-Net on the full-size SD1.5 U-Net, on the CPU: `python tests/benchmarks/bench.py`.

Every variant runs in this one process against the same model; variants are interleaved and repeated (the order
rotates from one repetition to the next) after a warm-up, so drift in the machine's speed hits every side alike.
Ratios are taken per repetition between the variant and the nothing-attached run of the same repetition, and the
median is reported with the range. Peak memory comes from separate runs: the peak of torch's own allocations (from
the profiler's allocator hook), and the process's resident high-water mark (Linux VmHWM, reset through
/proc/self/clear_refs) as a cross-check. See README.md in this folder for what each row means and how it is measured.

This is not a test: nothing here asserts a timing. It prints the table as Markdown at the end.
"""

from __future__ import annotations

import argparse
import colorsys
import ctypes
import gc
import io
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
for _path in (ROOT, ROOT / "tests"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from jobdriver import ToyHost, sample  # noqa: E402

from benchmarks.sd15 import CONTEXT_DIM, build_sd15  # noqa: E402
from lib_dumpunet.capture import Key  # noqa: E402
from lib_dumpunet.colorize import Colorizer, ColorSettings  # noqa: E402
from lib_dumpunet.grid import grid_shape, tile  # noqa: E402
from lib_dumpunet.hooks import HookSet  # noqa: E402
from lib_dumpunet.job import Job, make_plan  # noqa: E402
from lib_dumpunet.layout import UNetLayout  # noqa: E402
from lib_dumpunet.render import render  # noqa: E402
from lib_dumpunet.settings import from_mapping  # noqa: E402

MODEL = "SD1.5 (860M, fp32, CPU"  # + ", N thread(s))"
STEPS = 3
SMALL = 256  # image size: 32² latent
LARGE = 512  # image size: 64² latent
MIB = 1 << 20

PROMPT = "a cute girl"
LAYER_PROMPT = "a (~: IN00-OUT11: cute ; M00: excellent :~) girl"

FEATURES = {"features.enabled": True, "features.layers": "IN00-OUT11", "features.average": "disable"}
CROSS_QK = {"attention.enabled": True, "attention.layers": "IN00-OUT11", "attention.outputs": ["Q*K"]}
SELF_64 = {
    "attention.enabled": True,
    "attention.layers": "IN01, IN02, OUT09-OUT11",
    "attention.self_attention": True,
    "attention.query_points": "4x4",
}
LAYER_PROMPTS = {"layer_prompt.enabled": True}
LATENT_VIEWS = {"features.enabled": True, "features.layers": "latent, x0"}
ALL_VIEWS = {"features.enabled": True, "features.layers": "latent, x0, cfg"}


# --- measuring ---------------------------------------------------------------------------------------------------


def _status_bytes(name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(name)


class Malloc:
    """glibc's allocator, set up for timing or for measuring memory (no-op where there is no glibc).

    timing: big blocks come from the heap (no mmap) and the heap is never trimmed, so the gigabytes of temporaries a
    CPU forward allocates are reused instead of being handed back to the kernel and faulted in again on every U-Net
    call (on the benchmark VM that churn cost a third of the run as system time and most of the run-to-run noise).
    memory: every block above 128 KiB is its own mmap, unmapped when freed, so the resident high-water mark follows
    the memory that is live; freed heap is handed back before each measured run.
    """

    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4

    def __init__(self) -> None:
        try:
            self.libc = ctypes.CDLL("libc.so.6")
            self.libc.mallopt  # noqa: B018 -- glibc only
        except (OSError, AttributeError):
            self.libc = None
        self.mode = "default"

    def timing(self) -> None:
        if self.libc is not None:
            self.libc.mallopt(self.M_MMAP_MAX, 0)
            self.libc.mallopt(self.M_TRIM_THRESHOLD, 2**31 - 1)
        self.mode = "timing"

    def memory(self) -> None:
        if self.libc is not None:
            self.libc.mallopt(self.M_MMAP_MAX, 65536)
            self.libc.mallopt(self.M_MMAP_THRESHOLD, 128 << 10)
            self.libc.mallopt(self.M_TRIM_THRESHOLD, 128 << 10)
        self.mode = "memory"
        self.trim()

    def trim(self) -> None:
        if self.libc is not None:
            self.libc.malloc_trim(0)


MALLOC = Malloc()


def _can_reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        _status_bytes("VmHWM")
    except OSError:
        return False
    return True


MEMORY = _can_reset_peak()


class Peak:
    """Time and memory of this process during a `with` block.

    `.rss` = resident high-water mark − resident at the start (the allocator's view, see `Malloc`). In memory mode
    the block also runs under torch's profiler with `profile_memory=True`, which reports every allocation and free of
    torch's CPU allocator: `.allocated` = the highest total of torch allocations above the start (exact, independent
    of how glibc keeps its heap; 0 when not profiled)."""

    def __enter__(self) -> Peak:
        gc.collect()
        self.profiler = None
        if MALLOC.mode == "memory":
            MALLOC.trim()
            self.profiler = torch.profiler.profile(
                activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True
            )
            self.profiler.__enter__()
        self.start = 0
        if MEMORY:
            Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
            self.start = _status_bytes("VmRSS")
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.t0
        self.rss = _status_bytes("VmHWM") - self.start if MEMORY else 0
        self.allocated = 0
        if self.profiler is not None:
            self.profiler.__exit__(*exc)
            self.allocated = _allocation_peak(self.profiler)


def _allocation_peak(profiler: torch.profiler.profile) -> int:
    """The highest running total of the allocations (+) and frees (−) the profiler saw, in bytes."""
    events = sorted(
        (e.start_ns(), e.nbytes()) for e in profiler.profiler.kineto_results.events() if e.name() == "[memory]"
    )
    total = peak = 0
    for _, nbytes in events:
        total += nbytes
        peak = max(peak, total)
    return peak


class HookClock:
    """Times every hook Dump U-Net registers while the block runs: `.seconds` = wall time spent inside them.

    The hooks run before or after a module, never around one, so no time is counted twice. Unlike the ratio of two
    runs, this share of a run does not move with the machine's speed from one run to the next."""

    def __enter__(self) -> HookClock:
        self.seconds = 0.0
        self._saved = forward, pre = HookSet.forward, HookSet.pre

        def timed(fn: Callable) -> Callable:
            def hook(*args, **kwargs):
                t0 = time.perf_counter()
                try:
                    return fn(*args, **kwargs)
                finally:
                    self.seconds += time.perf_counter() - t0

            return hook

        HookSet.forward = lambda hooks, module, fn, **kw: forward(hooks, module, timed(fn), **kw)
        HookSet.pre = lambda hooks, module, fn, **kw: pre(hooks, module, timed(fn), **kw)
        return self

    def __exit__(self, *exc: object) -> None:
        HookSet.forward, HookSet.pre = self._saved


@dataclass
class Run:
    """One measured run of a variant."""

    seconds: float  # the whole run
    sampled: float  # up to the end of sampling
    rss: int  # resident high-water mark above the start, bytes
    allocated: int  # peak of torch's allocations above the start, bytes (memory runs only)
    info: dict = field(default_factory=dict)


# --- variants ----------------------------------------------------------------------------------------------------


@dataclass
class Bench:
    unet: torch.nn.Module
    layout: UNetLayout
    dump_base: Path

    def plain(
        self, *, size: int = SMALL, steps: int = STEPS, batches: int = 1, prompt: str = PROMPT, sampler=sample
    ) -> Run:
        """Nothing attached: the host samples on its own."""
        host = ToyHost(CONTEXT_DIM)
        with Peak() as p:
            for b in range(batches):
                sampler(self.unet, None, host, [prompt], [""], steps=steps, size=size, first_image=b)
            sampled = time.perf_counter() - p.t0
        return Run(p.seconds, sampled, p.rss, p.allocated, {"encoded": sum(host.encoded.values())})

    def job(
        self,
        settings: dict,
        *,
        size: int = SMALL,
        steps: int = STEPS,
        batches: int = 1,
        prompt: str = PROMPT,
        take_maps: bool = True,
        sampler=sample,
    ) -> Run:
        """A whole Dump U-Net job: plan, attach, sample every batch, then render every image's maps."""
        host = ToyHost(CONTEXT_DIM)
        with Peak() as p, HookClock() as clock:
            plan = make_plan(
                from_mapping(settings), self.layout, job_steps=steps, dump_base=self.dump_base, shared=False
            )
            with Job(plan, self.layout, host) as job:
                for b in range(batches):
                    sampler(self.unet, job, host, [prompt], [""], steps=steps, size=size, first_image=b)
                sampled = time.perf_counter() - p.t0
                captured = job.capture.nbytes
                maps = [m for image in range(batches) for m in job.take_maps(image)] if take_maps else []
        info = {"encoded": sum(host.encoded.values()), "distinct": len(host.encoded), "captured": captured}
        info["in_hooks"] = clock.seconds / sampled  # share of sampling spent inside Dump U-Net's hooks
        info["maps"] = len(maps)
        return Run(p.seconds, sampled, p.rss, p.allocated, info)


_VIEW_WORK = {"seconds": 0.0}  # time `guided_sample` spent handing the job its views (reset per run)


def guided_sample(unet, job, host, prompts, negatives, *, steps: int = STEPS, size: int = SMALL, first_image: int = 0):
    """The loop of `jobdriver.sample` (one U-Net call per step, CFG 7), also handing the job what a host with latent
    views hands it after the call: every row's prediction and the guided one. Used on both sides of row j."""
    if job is not None:
        prompts, negatives = job.begin_batch(first_image, prompts, negatives, seeds=list(range(len(prompts))))
    context = torch.stack([host.encode_now(t) for t in [*prompts, *negatives]])
    x = torch.randn(len(prompts), 4, size // 8, size // 8, generator=torch.Generator().manual_seed(0))
    for step in range(1, steps + 1):
        if job is not None:
            job.denoiser_call(pass_index=0, step=step, schedule_step=step - 1, cond_counts=[1] * len(prompts))
        x_in = torch.cat([x, x])
        t = torch.full((x_in.shape[0],), 1000.0 * (1 - step / (steps + 1)))
        out = unet(x_in, t, context=context)
        cond, uncond = out.chunk(2)
        guided = uncond + 7.0 * (cond - uncond)
        if job is not None:
            handed = time.perf_counter()
            if job.wants_view("cfg"):
                job.denoised(out)
            if job.wants_view("x0"):
                job.guided(guided)
            _VIEW_WORK["seconds"] += time.perf_counter() - handed
        x = x - 0.2 * guided
    return x


def measure_views(bench: Bench, reps: int) -> dict[str, list[Run]]:
    """Row j: latent views (latent + x0, and with cfg) at every step vs nothing attached, on one sampling loop."""

    def views(settings: dict) -> Run:
        _VIEW_WORK["seconds"] = 0.0
        run = bench.job(settings, sampler=guided_sample)
        run.info["in_hooks"] += _VIEW_WORK["seconds"] / run.sampled  # the host's side of the views counts too
        return run

    variants: dict[str, Callable[[], Run]] = {
        "plain": lambda: bench.plain(sampler=guided_sample),
        "latent+x0": lambda: views(LATENT_VIEWS),
        "latent+x0+cfg": lambda: views(ALL_VIEWS),
    }
    for run in variants.values():
        run()  # warm-up
    return interleave(variants, reps, "views")


def view_rows(views: dict[str, list[Run]], threads: int) -> list[list[str]]:
    model = f"{MODEL}, {threads} thread{'s' if threads > 1 else ''})"
    small = f"{model} · 32² latent (256×256) · {STEPS} steps · 1 image, CFG (2 rows)"
    plain, lx, all_views = views["plain"], views["latent+x0"], views["latent+x0+cfg"]
    return [
        _time_row("j", "time: latent views — the U-Net's input latent and the guided x0 at every step — vs nothing "
                  "attached; 'in hooks' includes the host handing over x0", small, plain, lx, sampled=True,
                  target=1.05),
        _time_row("j+", f"time: the same + the cfg map at every step, and drawing all {all_views[0].info['maps']} "
                  "pictures (cheap latent → RGB, nearest ×8) — the whole job", small, plain, all_views, sampled=False,
                  target=None),
    ]  # fmt: skip


def warm_up(bench: Bench) -> None:
    """One short run of every 32² variant: first-call costs (kernels, fonts, tables) are paid here."""
    bench.plain(steps=1)
    bench.job(FEATURES, steps=1)
    bench.job(CROSS_QK, steps=1)
    bench.job(LAYER_PROMPTS, steps=1, prompt=LAYER_PROMPT)


def rotated(items: list, by: int) -> list:
    by %= len(items)
    return items[by:] + items[:by]


def interleave(variants: dict[str, Callable[[], Run]], reps: int, label: str, shift: int = 0) -> dict[str, list[Run]]:
    """Run every variant `reps` times, one of each per repetition, the order rotating from one repetition to the
    next (starting `shift` places on)."""
    runs: dict[str, list[Run]] = {name: [] for name in variants}
    for rep in range(reps):
        for name in rotated(list(variants), rep + shift):
            r = variants[name]()
            runs[name].append(r)
            _log(
                f"{label} {rep + 1}/{reps} {name:16s} {r.sampled:6.2f} s sampled, {r.seconds:6.2f} s in all, "
                + (f"peak: torch +{r.allocated / MIB:.1f} MiB, RSS +{r.rss / MIB:.0f} MiB" if r.allocated else "")
            )
    return runs


def measure_generation(bench: Bench, reps: int) -> dict[str, list[Run]]:
    """Rows a, b, d, f (times): all 32² variants."""
    variants: dict[str, Callable[[], Run]] = {
        "plain": lambda: bench.plain(),
        "features": lambda: bench.job(FEATURES),
        "qk": lambda: bench.job(CROSS_QK),
        "plain x2": lambda: bench.plain(batches=2),
        "layer prompt x2": lambda: bench.job(LAYER_PROMPTS, batches=2, prompt=LAYER_PROMPT),
    }
    return interleave(variants, reps, "time")


def measure_memory(bench: Bench, reps: int) -> dict[str, list[Run]]:
    """Rows e and g (peak memory). e: one U-Net call with 2 rows at 64², nothing vs the self-attention recorder;
    g: 3 steps at 32², nothing vs all 25 blocks captured. The recorder goes first in the first repetition, so any
    first-call cost lands on its side."""
    variants_64 = {
        "self 64": lambda: bench.job(SELF_64, size=LARGE, steps=1, take_maps=False),
        "plain 64": lambda: bench.plain(size=LARGE, steps=1),
    }
    variants_32 = {"features": lambda: bench.job(FEATURES, take_maps=False), "plain": lambda: bench.plain()}
    # The first runs after the allocator changes mode carry its old state (tens of MiB): one short run of each first.
    bench.plain(steps=1)
    bench.job(FEATURES, steps=1, take_maps=False)
    return {**interleave(variants_32, reps, "memory"), **interleave(variants_64, reps, "memory")}


# --- row c: colouring one block, now and as the original did ----------------------------------------------------


def original_colorize(block: np.ndarray) -> np.ndarray:
    """The original extension's way: per tile, Auto [0,1], then one Python call per pixel through `np.vectorize`
    (H=(2+v)/3, S=1, L=0.5 → colorsys.hls_to_rgb, three float32 outputs), stacked, uint8(clip(value·256, 0, 255)),
    pasted tile by tile on the canvas."""

    def colour(v):
        h, s, l = (2 + v) / 3, 1.0, 0.5  # noqa: E741
        return colorsys.hls_to_rgb(h, l, s)

    per_pixel = np.vectorize(colour, otypes=[np.float32, np.float32, np.float32])
    channels, height, width = block.shape
    across, down = grid_shape(channels, width, height)
    canvas = np.zeros((down * (height + 1) - 1, across * (width + 1) - 1, 3), dtype=np.uint8)
    for c in range(channels):
        x = block[c].astype(np.float32)
        lo, hi = x.min(), x.max()
        v = (x - lo) / (hi - lo) if hi != lo else x
        rgb = np.stack(per_pixel(v), axis=-1)
        pixels = np.clip(rgb * 256, 0, 255).astype(np.uint8)
        row, column = divmod(c, across)
        canvas[
            row * (height + 1) : row * (height + 1) + height, column * (width + 1) : column * (width + 1) + width
        ] = pixels
    return canvas


def measure_render(reps: int) -> dict:
    """Row c: best-of and median times, interleaved; and how many pixels of the two pictures agree."""
    block = torch.randn(320, 64, 64, generator=torch.Generator().manual_seed(3))
    key = Key(0, 0, 1, "IN01", "features")
    t0 = time.perf_counter()
    colorizer = Colorizer.from_settings(ColorSettings())
    table_seconds = time.perf_counter() - t0
    ours, theirs = [], []
    inner = 10  # ours is fast: time several calls per repetition
    fast = slow = None
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(inner):
            fast = render(key, block, colorizer)[0].image
        ours.append((time.perf_counter() - t0) / inner)
        t0 = time.perf_counter()
        slow = original_colorize(block.numpy())
        theirs.append(time.perf_counter() - t0)
        _log(f"render: ours {ours[-1] * 1e3:.1f} ms, per-pixel {theirs[-1]:.2f} s")
    a, b = np.asarray(fast.convert("RGB")).astype(int), slow.astype(int)  # palette map → its colours
    return {
        "ours": ours,
        "theirs": theirs,
        "table": table_seconds,
        "size": fast.size,
        "same": a.shape == b.shape and float((a == b).all(axis=-1).mean()),
        "max_diff": int(np.abs(a - b).max()) if a.shape == b.shape else None,
    }


# --- rows h and i: delivering the maps (issue 11) ----------------------------------------------------------------


def png_bytes(image: Image.Image) -> int:
    """PNG-encode `image` as the webui does for the gallery and the API (PIL's PNG writer, default settings)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.tell()


def rgb_map(tensor: torch.Tensor, colorizer: Colorizer) -> Image.Image:
    """A feature grid as the maps were delivered before palette images: exact colours, 24-bit RGB."""
    channels, height, width = tensor.shape
    pixels = tile(colorizer.packed(tensor), *grid_shape(channels, width, height))
    return Image.frombytes("RGB", pixels.shape[::-1], np.ascontiguousarray(pixels), "raw", "RGBX")


def stand_in_image(size: int = SMALL) -> Image.Image:
    """The generated picture both sides return (the benchmark does not decode latents): smooth colours."""
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    rgb = np.stack(np.broadcast_arrays(ramp[None, :], ramp[:, None], 255 - ramp[None, :]), axis=-1)
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


def captured_features(bench: Bench) -> tuple[dict, Colorizer]:
    """Row h's input: every tensor the IN00–OUT11 feature job captures for its one image (25 blocks × 3 steps)."""
    host = ToyHost(CONTEXT_DIM)
    plan = make_plan(from_mapping(FEATURES), bench.layout, job_steps=STEPS, dump_base=bench.dump_base, shared=False)
    with Job(plan, bench.layout, host) as job:
        sample(bench.unet, job, host, [PROMPT], [""], steps=STEPS, size=SMALL)
        taken = job.capture.take_image(0)
    return taken, plan.features.colorizer


def measure_encoding(bench: Bench, reps: int) -> dict:
    """Row h: PNG-encode the job's 75 maps as RGB (before) and as palette images (after), interleaved."""
    taken, colorizer = captured_features(bench)
    before = [rgb_map(t, colorizer) for t in taken.values()]
    after = [m.image for k, t in taken.items() for m in render(k, t, colorizer)]
    difference = max(
        int(np.abs(np.asarray(a.convert("RGB"), dtype=np.int16) - np.asarray(b, dtype=np.int16)).max())
        for a, b in zip(after, before, strict=True)
    )
    result: dict = {"maps": len(after), "before": [], "after": [], "difference": difference}
    for rep in range(reps):
        for name in rotated(["before", "after"], rep):
            images = before if name == "before" else after
            t0 = time.perf_counter()
            result[f"{name} bytes"] = sum(png_bytes(image) for image in images)
            result[name].append(time.perf_counter() - t0)
        _log(f"encode {rep + 1}/{reps}: RGB {result['before'][-1]:.2f} s, palette {result['after'][-1]:.2f} s")
    result["modes"] = sorted({image.mode for image in after})
    return result


def delivered(bench: Bench, maps: str | None) -> Run:
    """Row i: a job as the webui's API answers it — sampling, then every image of the answer PNG-encoded; with
    `maps` ("palette" or "rgb") the IN00–OUT11 feature job, rendered and delivered that way; None: nothing attached."""
    picture = stand_in_image()
    host = ToyHost(CONTEXT_DIM)
    with Peak() as p, HookClock() as clock:
        images = [picture]
        if maps is None:
            sample(bench.unet, None, host, [PROMPT], [""], steps=STEPS, size=SMALL)
            sampled = time.perf_counter() - p.t0
        else:
            plan = make_plan(
                from_mapping(FEATURES), bench.layout, job_steps=STEPS, dump_base=bench.dump_base, shared=False
            )
            with Job(plan, bench.layout, host) as job:
                sample(bench.unet, job, host, [PROMPT], [""], steps=STEPS, size=SMALL)
                sampled = time.perf_counter() - p.t0
                if maps == "palette":
                    images += [m.image for m in job.take_maps(0)]
                else:
                    colorizer = plan.features.colorizer
                    images += [rgb_map(t, colorizer) for t in job.capture.take_image(0).values()]
        encoded = sum(png_bytes(image) for image in images)
    info = {"in_hooks": clock.seconds / sampled, "images": len(images), "encoded": encoded}
    return Run(p.seconds, sampled, p.rss, p.allocated, info)


def measure_delivery(bench: Bench, reps: int) -> dict[str, list[Run]]:
    """Row i: nothing attached vs the feature job delivered as palette maps vs as RGB maps, interleaved."""
    variants = {
        "api plain": lambda: delivered(bench, None),
        "api palette": lambda: delivered(bench, "palette"),
        "api rgb": lambda: delivered(bench, "rgb"),
    }
    return interleave(variants, reps, "api")


def delivery_rows(encoding: dict, api: dict[str, list[Run]], threads: int) -> list[list[str]]:
    model = f"{MODEL}, {threads} thread{'s' if threads > 1 else ''})"
    small = f"{model} · 32² latent (256×256) · {STEPS} steps · 1 image, CFG (2 rows)"
    before, after = _med(encoding["before"]), _med(encoding["after"])
    ratios = [b / a for b, a in zip(encoding["before"], encoding["after"], strict=True)]
    rows = [
        _row(
            "h", f"time: PNG-encode (PIL defaults, as the webui's gallery and API do) all {encoding['maps']} maps of "
            f"the IN00–OUT11 feature job: 24-bit RGB (before) vs palette {'/'.join(encoding['modes'])} (after); "
            f"{encoding['before bytes'] / MIB:.1f} MiB vs {encoding['after bytes'] / MIB:.1f} MiB of PNG; the "
            f"palette maps differ from the RGB ones by at most {encoding['difference']} level(s) per channel",
            f"{small} · {len(encoding['before'])} reps", _s(before), _s(after),
            f"{before / after:.1f}× less ({min(ratios):.1f}–{max(ratios):.1f})", "≥ 4× less",
            _verdict(before / after >= 4),
        ),
    ]  # fmt: skip
    plain, palette, rgb = api["api plain"], api["api palette"], api["api rgb"]
    images = palette[0].info["images"]

    def after_sampling(runs: list[Run]) -> str:  # rendering and encoding: not moved by the sampling's drift
        return _s(_med([r.seconds - r.sampled for r in runs]))

    rows.append(_time_row(
        "i", f"time: the whole job as the API answers it — sampling, maps, and all {images} images PNG-encoded "
        f"(palette maps) — vs nothing attached, its one image encoded; after sampling {after_sampling(palette)} "
        f"(palette) vs {after_sampling(rgb)} (RGB)", small, plain, palette, sampled=False,
        target=1.10,
    ))  # fmt: skip
    rows.append(_time_row(
        "i-", "time: the same with the maps delivered as 24-bit RGB, as before (informative)", small, plain, rgb,
        sampled=False, target=None,
    ))  # fmt: skip
    return rows


# --- the table ---------------------------------------------------------------------------------------------------


def _log(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def _med(values: list[float]) -> float:
    return statistics.median(values)


def _s(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds >= 0.1 else f"{seconds * 1e3:.1f} ms"


def _mib(n: float) -> str:
    return f"{n / MIB:+.0f} MiB" if MEMORY else "n/a"


def _ratio(base: list[float], variant: list[float]) -> tuple[float, str]:
    ratios = [v / b for b, v in zip(base, variant, strict=True)]
    r = _med(ratios)
    return r, f"{r:.3f}× ({min(ratios):.3f}–{max(ratios):.3f})"


def _verdict(ok: bool) -> str:
    return "yes" if ok else "**no**"


def _row(row: str, measure: str, setup: str, base: str, variant: str, ratio: str, target: str, met: str) -> list[str]:
    return [row, measure, setup, base, variant, ratio, target, met]


def _times(runs: list[Run], sampled: bool) -> list[float]:
    return [r.sampled if sampled else r.seconds for r in runs]


def _time_row(row, measure, setup, base: list[Run], variant: list[Run], *, sampled: bool, target: float | None):
    b, v = _times(base, False), _times(variant, sampled)  # nothing attached: nothing to render
    r, text = _ratio(b, v)
    goal = f"≤ {target:.2f}×" if target else "(none)"
    in_hooks = [run.info["in_hooks"] for run in variant]
    text += f"; in hooks {_med(in_hooks):.2%} of sampling ({min(in_hooks):.2%}–{max(in_hooks):.2%})"
    return _row(row, measure, setup, _s(_med(b)), _s(_med(v)), text, goal, _verdict(r <= target) if target else "")


def table(gen: dict[str, list[Run]], mem: dict[str, list[Run]], colour: dict, threads: int) -> list[list[str]]:
    model = f"{MODEL}, {threads} thread{'s' if threads > 1 else ''})"
    small = f"{model} · 32² latent (256×256) · {STEPS} steps · 1 image, CFG (2 rows)"
    plain, features, qk = gen["plain"], gen["features"], gen["qk"]
    rows = [
        _time_row("a", "time: 25 blocks captured at every step vs nothing attached", small, plain, features,
                  sampled=True, target=1.05),
        _time_row("b", f"time: the same + rendering all {features[0].info['maps']} maps (averaged map: disable) — "
                  "the whole job", small, plain, features, sampled=False, target=1.25),
    ]  # fmt: skip

    ours, theirs = _med(colour["ours"]), _med(colour["theirs"])
    w, h = colour["size"]
    rows.append(_row(
        "c", f"time: colour + tile one 320×64×64 block with the default Custom-HSL settings into a {w}×{h} canvas: "
        f"the original's per-pixel np.vectorize vs `render` ({colour['same']:.2%} of pixels identical, max "
        f"difference {colour['max_diff']} level)", f"one block (IN01 at 512×512) · {len(colour['ours'])} reps",
        _s(theirs), _s(ours), f"{theirs / ours:.0f}× faster ({min(colour['theirs']) / max(colour['ours']):.0f}–"
        f"{max(colour['theirs']) / min(colour['ours']):.0f})", "≥ 100× faster", _verdict(theirs / ours >= 100),
    ))  # fmt: skip

    rows += [
        _time_row("d", "time: Q*K of all 16 attn2 modules at every step vs nothing attached", small, plain, qk,
                  sampled=True, target=1.15),
        _time_row("d+", f"time: the same + rendering its {qk[0].info['maps']} Q*K maps with token labels", small,
                  plain, qk, sampled=False, target=None),
    ]  # fmt: skip

    large = f"{model} · 64² latent (512×512) · 1 step · one U-Net call, 2 rows"
    p64, s64 = mem["plain 64"], mem["self 64"]
    full = (64 * 64) ** 2 * 8 * 4
    base, variant, torch_extra, text = _memory(p64, s64)
    rows.append(_row(
        "e", "peak memory above resting: self-attention maps of IN01, IN02, OUT09–OUT11 (5 attn1 modules, 4×4 "
        f"query points) vs nothing attached. One full (h·w)²×heads fp32 matrix per row: {full / MIB:.0f} MiB",
        large, base, variant, f"{text}; torch extra = {torch_extra / full:.1%} of one full matrix",
        "≪ one full matrix", _verdict(torch_extra < full / 10),
    ))  # fmt: skip

    two = f"{model} · 32² latent · {STEPS} steps · 2 batches of 1 image, CFG"
    lp, px2 = gen["layer prompt x2"], gen["plain x2"]
    distinct = lp[0].info["distinct"]
    calls = sorted({r.info["encoded"] for r in lp})
    rows.append(_row(
        "f", f"text-encoder calls by the job: `{LAYER_PROMPT}` ({distinct} distinct block prompts) vs `{PROMPT}`",
        two, str(px2[0].info["encoded"]), "/".join(map(str, calls)),
        f"{max(calls) / distinct:.1f} per distinct block prompt per job", "1 per distinct block prompt per job",
        _verdict(calls == [distinct]),
    ))  # fmt: skip
    rows.append(_time_row("f", "time: the same two prompts, whole job", two, px2, lp, sampled=False, target=1.03))

    p32, f32 = mem["plain"], mem["features"]
    captured = f32[0].info["captured"]
    base, variant, torch_extra, text = _memory(p32, f32)
    rows.append(_row(
        "g", "peak memory above resting during sampling: 25 blocks captured at every step vs nothing attached "
        f"(the capture holds {captured / MIB:.1f} MiB at the end)", small, base, variant,
        f"{text}; torch extra = {torch_extra / captured:.2f}× the captured bytes", "≈ the captured bytes", "",
    ))  # fmt: skip
    return rows


def _memory(base: list[Run], variant: list[Run]) -> tuple[str, str, float, str]:
    """Cells for a memory row: both sides (torch allocations, and RSS), the torch extra, and the extras as text."""

    def cell(runs: list[Run]) -> str:
        torch_peak = [r.allocated / MIB for r in runs]
        rss = [r.rss / MIB for r in runs]
        spread = f"{min(torch_peak):.1f}–{max(torch_peak):.1f}" if max(torch_peak) > min(torch_peak) else "all equal"
        rss_text = f"RSS {_med(rss):+.0f} MiB ({min(rss):.0f}–{max(rss):.0f})" if MEMORY else "RSS n/a"
        return f"torch {_med(torch_peak):+.1f} MiB ({spread}); {rss_text}"

    torch_extra = _med([r.allocated for r in variant]) - _med([r.allocated for r in base])
    rss_extra = _med([r.rss for r in variant]) - _med([r.rss for r in base])
    text = f"torch {torch_extra / MIB:+.1f} MiB; RSS {_mib(rss_extra)}"
    return cell(base), cell(variant), torch_extra, text


HEADER = ["row", "measure", "model · latent · steps", "baseline", "with the feature", "ratio (min–max)", "target",
          "met"]  # fmt: skip


def markdown(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3, help="timed repetitions of every 32² variant (min 3, default 3)")
    parser.add_argument("--memory-reps", type=int, default=3, help="repetitions of the memory runs (min 3)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: with 2 threads, any other busy process stalls every parallel op)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random U-Net weights")
    parser.add_argument(
        "--only",
        choices=["delivery", "views"],
        help="only rows h and i (delivering maps: PNG encoding, the API's answer), or only row j (latent views)",
    )
    args = parser.parse_args(argv)
    reps, memory_reps = max(3, args.reps), max(3, args.memory_reps)
    started = time.perf_counter()
    torch.set_grad_enabled(False)
    torch.set_num_threads(args.threads)
    MALLOC.timing()
    _log(f"torch {torch.__version__}, {torch.get_num_threads()} threads; glibc tuning: {MALLOC.libc is not None}; "
         f"peak memory: {'VmHWM reset through clear_refs' if MEMORY else 'unavailable on this system'}")  # fmt: skip
    t0 = time.perf_counter()
    unet = build_sd15(args.seed)
    _log(f"built the SD1.5 U-Net in {time.perf_counter() - t0:.1f} s")
    with tempfile.TemporaryDirectory() as tmp:
        bench = Bench(unet, UNetLayout(unet), Path(tmp))
        if args.only == "delivery":
            delivered(bench, None)  # warm-up of both sides
            delivered(bench, "palette")
            encoding, api = measure_encoding(bench, reps), measure_delivery(bench, reps)
            print(markdown(delivery_rows(encoding, api, args.threads)))
            print(f"\nMedians of {reps} interleaved repetitions. Total {time.perf_counter() - started:.0f} s.")
            return
        if args.only == "views":
            print(markdown(view_rows(measure_views(bench, reps), args.threads)))
            print(f"\nMedians of {reps} interleaved repetitions. Total {time.perf_counter() - started:.0f} s.")
            return
        colour = measure_render(max(reps, 5))
        warm_up(bench)
        _log(f"warmed up at {time.perf_counter() - started:.0f} s")
        gen = measure_generation(bench, reps)
        encoding, api = measure_encoding(bench, reps), measure_delivery(bench, reps)
        views = measure_views(bench, reps)
        MALLOC.memory()
        mem = measure_memory(bench, memory_reps)
    rows = table(gen, mem, colour, args.threads) + delivery_rows(encoding, api, args.threads)
    print(markdown(rows + view_rows(views, args.threads)))
    print(
        f"\nTimes: medians of {reps} interleaved repetitions (ratios: median of the per-repetition ratios, with their "
        f"range). Memory: medians of {memory_reps}. Total {time.perf_counter() - started:.0f} s; torch "
        f"{torch.__version__}, {torch.get_num_threads()} CPU threads. Colour table built once per job in "
        f"{_s(colour['table'])} (not in row c)."
    )


if __name__ == "__main__":
    main()
