"""A small stand-in for the host, to test `Job` on the real U-Net without the webui.

`ToyHost` implements the `Host` protocol with a deterministic toy text encoder (each word a fixed random vector,
77-token chunks with BOS/EOS as the webui builds them) and counts encoder calls. `sample` runs a few Euler-like
steps with classifier-free guidance, batching rows as the webui's CFG denoiser does: every image's cond rows (one
per AND sub-prompt) and then the uncond rows, in one U-Net call or split into a cond call and an uncond call.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter

import torch

from lib_dumpunet.block_prompts import ScheduledCond
from lib_dumpunet.job import Job

CHUNK = 75


def _vector(word: str, width: int) -> torch.Tensor:
    seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:4], "little")
    return torch.randn(width, generator=torch.Generator().manual_seed(seed))


def words(text: str) -> list[str]:
    return re.findall(r"\w+|[^\w\s]", text)


class ToyHost:
    def __init__(self, width: int) -> None:
        self.width = width
        self.encoded: Counter[tuple[str, int]] = Counter()

    def _chunks(self, text: str) -> list[list[str]]:
        tokens = words(text)
        chunks = [tokens[i : i + CHUNK] for i in range(0, max(len(tokens), 1), CHUNK)]
        return [["<BOS>", *c, *["<pad>"] * (CHUNK - len(c)), "<EOS>"] for c in chunks]

    def encode_now(self, text: str) -> torch.Tensor:
        return torch.stack([_vector(t, self.width) for chunk in self._chunks(text) for t in chunk])

    def encode(self, text: str, pass_index: int):
        self.encoded[(text, pass_index)] += 1
        return (ScheduledCond(10**6, self.encode_now(text)),)

    def split_and(self, prompt: str) -> list[str]:
        return [p.strip() for p in re.split(r"\bAND\b", prompt)]

    def token_labels(self, text: str) -> list[str]:
        return [t for chunk in self._chunks(text) for t in chunk]

    @property
    def empty_chunk(self) -> torch.Tensor:
        return self.encode_now("")


def sample(
    unet,
    job: Job | None,
    host: ToyHost,
    prompts: list[str],
    negatives: list[str],
    *,
    steps: int = 2,
    size: int = 64,
    first_image: int = 0,
    split: bool = False,
    seed: int = 0,
) -> torch.Tensor:
    """Sample a batch; returns the final latents. `job=None` samples with nothing attached."""
    if job is not None:
        prompts, negatives = job.begin_batch(first_image, prompts, negatives, seeds=list(range(len(prompts))))
    subs = [host.split_and(p) for p in prompts]
    cond = [host.encode_now(s) for ss in subs for s in ss]
    uncond = [host.encode_now(n) for n in negatives]
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(prompts), 4, size // 8, size // 8, generator=g)
    counts = [len(ss) for ss in subs]
    for step in range(1, steps + 1):
        if job is not None:
            job.denoiser_call(pass_index=0, step=step, schedule_step=step - 1, cond_counts=counts)
        x_in = torch.cat([x[i : i + 1].repeat(n, 1, 1, 1) for i, n in enumerate(counts)] + [x])
        t = torch.full((x_in.shape[0],), 1000.0 * (1 - step / (steps + 1)))
        with torch.no_grad():
            if split or len({c.shape[0] for c in cond + uncond}) > 1:
                n = sum(counts)
                out_c = unet(x_in[:n], t[:n], context=_stack(cond))
                out_u = unet(x_in[n:], t[n:], context=_stack(uncond))
                out = torch.cat([out_c, out_u])
            else:
                out = unet(x_in, t, context=torch.stack(cond + uncond))
        n = sum(counts)
        first_cond = [sum(counts[:i]) for i in range(len(counts))]
        guided = out[n:] + 7.0 * (out[first_cond] - out[n:])
        x = x - 0.2 * guided
    return x


def _stack(conds: list[torch.Tensor]) -> torch.Tensor:
    length = max(c.shape[0] for c in conds)
    return torch.stack([torch.cat([c, c[-1:].expand(length - c.shape[0], -1)]) for c in conds])
