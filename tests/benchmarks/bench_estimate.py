"""Embedding Estimate benchmark: time and memory per learning step, against plain textual-inversion training.

`python tests/benchmarks/bench_estimate.py [--size 256] [--reps 3] [--tiny]`

Models: the full-size SD1.5 U-Net with random weights (`sd15.py`, 860 M parameters, fp32, CPU) and a CLIP ViT-L/14
sized text transformer (768 wide, 12 layers, random weights, the real tokenizer), both frozen; `--tiny` swaps in the
test models for a quick look. One image, CFG on, the embedding has 3 vectors. Rows, per learning step:

  TI       plain textual-inversion training at the same size: "a photo of <word>" encoded with the live vectors, the
           latent noised at a random timestep, one U-Net call (1 row), eps MSE, backward, optimiser step;
  T        Transformer mode: one encoder pass of the embedding word, row loss, backward, step (no U-Net);
  U        U-NET mode as built here: the branch without the embedding and the target branch in one U-Net call without
           gradients (2 rows), the embedding's branch with gradients (1 row), one sampler step each, MSE, backward;
  U-orig   the original extension's structure for the same step: the trained CFG pair (2 rows) with gradients and
           the target CFG pair (2 rows) computed outside `no_grad`, so both graphs are built.

Time: median seconds per step over `--reps` steps after one warm-up step, variants interleaved. Memory: the peak of
torch's CPU allocations during one step above what was allocated before it (torch profiler with memory on). Not a
test: nothing asserts a number. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
for _path in (ROOT, ROOT / "tests"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import estimate_models as em  # noqa: E402
import unets  # noqa: E402
from fakewebui.tiny_model import clip_tokenizer  # noqa: E402

from benchmarks.sd15 import CONTEXT_DIM, build_sd15  # noqa: E402
from lib_dumpunet.estimate import EstimateSettings  # noqa: E402
from lib_dumpunet.estimate.clip_text import ClipPromptEncoder, ClipTower  # noqa: E402
from lib_dumpunet.estimate.denoise import ScheduleDenoiser, guided, sampler_step  # noqa: E402
from lib_dumpunet.estimate.estimator import TRAINING_WORD, TransformerObjective, UNetObjective  # noqa: E402
from lib_dumpunet.estimate.model import join_conds  # noqa: E402

MIB = 1 << 20
PROMPT = "a (red:1.4) cat"
NEGATIVE = "lowres, blurry"
VECTORS = 3


def clip_l_sized(seed: int = 1):
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=CONTEXT_DIM,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=1,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CLIPTextModel(config).eval().requires_grad_(False)


def models(tiny: bool):
    if tiny:
        unet = unets.build_sd1().requires_grad_(False)
        return em.sd1_encoder(), unet, "tiny SD1 (ldm U-Net 32 ch, CLIP 64×2)"
    unet = build_sd15().requires_grad_(False)
    encoder = ClipPromptEncoder([ClipTower(clip_l_sized(), clip_tokenizer())])
    return encoder, unet, "SD1.5 U-Net (860M) + CLIP-L-sized text model, fp32 CPU"


class Variants:
    def __init__(self, encoder, unet, latent: int) -> None:
        self.encoder, self.unet = encoder, unet
        self.denoiser = ScheduleDenoiser(lambda x, t, c: unet(x, t, context=c), em.alphas_cumprod(), "eps")
        settings = {
            "prompt": PROMPT,
            "negative_prompt": NEGATIVE,
            "name": "bench",
            "tokens": VECTORS,
            "vectors_from": "tokens",
            "steps": 20,
            "mode": "U-NET",
        }
        self.settings = EstimateSettings(**settings)
        self.shape = (1, 4, latent, latent)
        self.unet_objective = UNetObjective(self.settings, encoder, VECTORS, self.denoiser, self.shape, "cpu")
        self.transformer_objective = TransformerObjective(self.settings, encoder, VECTORS)
        g = torch.Generator().manual_seed(0)
        width = encoder.parts["*"]
        self.vectors = {"*": (torch.randn(VECTORS, width, generator=g) * 0.015).requires_grad_(True)}
        self.optimizer = torch.optim.Adam(list(self.vectors.values()), lr=0.005)
        self.x0 = torch.randn(self.shape, generator=g)
        self.alphas = em.alphas_cumprod()
        self.iteration = 0

    def _step(self, loss: torch.Tensor) -> None:
        loss.backward()
        self.optimizer.step()
        self.iteration += 1

    def ti(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        c = self.encoder.encode(f"a photo of {TRAINING_WORD}", {TRAINING_WORD: self.vectors})
        t = torch.randint(0, 1000, (1,), generator=torch.Generator().manual_seed(self.iteration))
        noise = torch.randn(self.shape, generator=torch.Generator().manual_seed(self.iteration))
        a = self.alphas[t].reshape(-1, 1, 1, 1)
        x_t = a.sqrt() * self.x0 + (1 - a).sqrt() * noise
        self._step(F.mse_loss(self.unet(x_t, t.float(), context=c), noise))

    def transformer(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self._step(self.transformer_objective.loss(self.vectors, self.iteration))

    def unet_mode(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self._step(self.unet_objective.loss(self.vectors, self.iteration))

    def unet_original(self) -> None:
        """Both CFG pairs with graphs, as the original computed them."""
        self.optimizer.zero_grad(set_to_none=True)
        obj = self.unet_objective
        step = self.iteration % self.settings.steps
        x = obj.start_latent(self.iteration) if step == 0 or obj.x is None else obj.x
        sigma, sigma_next = obj.sigmas[step], obj.sigmas[step + 1]
        sig = torch.full((2,), sigma)
        learned = obj.embedding_cond(self.vectors)
        pair = self.denoiser(torch.cat([x, x]), sig, join_conds([learned, obj.fixed_cond]))
        target = self.denoiser(torch.cat([x, x]), sig, join_conds([obj.target_cond, obj.fixed_cond]))
        x_t = sampler_step("Euler", x, guided(target[:1], target[1:], 7.0), sigma, sigma_next, None).detach()
        x_e = sampler_step("Euler", x, guided(pair[:1], pair[1:], 7.0), sigma, sigma_next, None)
        obj.x = x_t
        self._step(F.mse_loss(x_e, x_t))


def allocation_peak(fn: Callable[[], None]) -> int:
    """Highest running total of torch CPU allocations during `fn` (bytes)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]")
    total = peak = 0
    for _, nbytes in events:
        total += nbytes
        peak = max(peak, total)
    return peak


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="image size (latent = size/8); default 256")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tiny", action="store_true", help="the test models instead of SD1.5")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    encoder, unet, label = models(args.tiny)
    bench = Variants(encoder, unet, args.size // 8)
    variants = {"TI": bench.ti, "T": bench.transformer, "U": bench.unet_mode, "U-orig": bench.unet_original}
    times: dict[str, list[float]] = {name: [] for name in variants}
    for name, fn in variants.items():  # warm-up
        print(f"warm-up {name}", file=sys.stderr)
        fn()
    for rep in range(args.reps):
        order = list(variants)[rep % len(variants) :] + list(variants)[: rep % len(variants)]
        for name in order:
            t0 = time.perf_counter()
            variants[name]()
            times[name].append(time.perf_counter() - t0)
            print(f"rep {rep + 1} {name}: {times[name][-1]:.2f} s", file=sys.stderr)
    peaks = {name: allocation_peak(fn) for name, fn in variants.items()}
    base_t, base_m = statistics.median(times["TI"]), peaks["TI"]
    print(
        f"\n{label}; image {args.size}² (latent {args.size // 8}²), 1 image, CFG 7, {VECTORS} vectors, "
        f"{args.threads} thread(s), median of {args.reps}\n"
    )
    print("| row | s / step | × TI | peak torch alloc MiB | × TI |")
    print("|---|---|---|---|---|")
    for name in variants:
        t = statistics.median(times[name])
        print(f"| {name} | {t:.3f} | {t / base_t:.2f} | {peaks[name] / MIB:.0f} | {peaks[name] / base_m:.2f} |")


if __name__ == "__main__":
    main()
