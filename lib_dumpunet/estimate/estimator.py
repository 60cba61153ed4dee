"""The estimate itself: N embedding vectors optimised so that one word reproduces a prompt.

Two objectives share one loop:

* **Transformer**: the text encoder's output rows of the embedding (the rows after BOS, or the whole chunk when
  `all_rows`) are compared with the rows of the target prompt as the host encodes it — emphasis applied, so a
  `(word:1.4)` row is the weighted, mean-restored row the U-Net would see. Cheap: one encoder pass per iteration.
* **U-NET**: one-step trajectory matching. A reference trajectory is sampled from a seeded latent with the target
  prompt (Karras sigmas, CFG, Euler or Euler a); at every iteration the same latent, sigma and noise are stepped once
  with the embedding in place of the target, and the two results are compared. The trajectory moves on one step per
  iteration and restarts from a new seeded latent after the last step. The branch without the embedding is the same
  for both and is computed once, without gradients.

Each iteration clears the gradients, encodes with the live vectors (a leaf tensor per part: the gradient path runs
through the encoder, and the U-Net in U-NET mode, back to them; the loss is scaled for the backward pass so that fp16
models keep small gradients), steps the optimiser and the schedule, reports to the
`Monitor` and asks it whether to stop. `evaluate` measures, before and after, the objective on a fixed evaluation
(a fixed trajectory in U-NET mode) and how close the conditioning of the bare embedding word is to the target's rows.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch
import torch.nn.functional as F  # noqa: N812

from lib_dumpunet.errors import DumpUnetError
from lib_dumpunet.estimate.denoise import guided, karras_sigmas, sampler_step
from lib_dumpunet.estimate.model import (
    Cond,
    Denoiser,
    PromptEncoder,
    Vectors,
    crossattn,
    join_conds,
    vector_count,
)
from lib_dumpunet.estimate.settings import EstimateSettings

__all__ = [
    "TRAINING_WORD",
    "Estimate",
    "Metrics",
    "Monitor",
    "estimate",
    "initial_vectors",
    "row_metrics",
]

log = logging.getLogger(__name__)

# The word the live vectors are registered under while training: one the tokenizer splits into a rare sequence.
TRAINING_WORD = "dumpunetestimatetrainingword"
EVAL_SEED_OFFSET = 7919  # the evaluation trajectory's seed, away from the training ones


@dataclass(frozen=True)
class Metrics:
    loss: float  # the objective on its fixed evaluation
    cosine: float  # mean cosine of the embedding word's rows to the target rows
    distance: float  # ‖rows − target rows‖ / ‖target rows‖


@dataclass
class Estimate:
    vectors: Vectors  # detached, CPU float32
    losses: list[float] = field(default_factory=list)  # per iteration
    start: Metrics | None = None
    final: Metrics | None = None
    stopped: bool = False  # interrupted before the last iteration

    @property
    def iterations(self) -> int:
        return len(self.losses)


class Monitor(Protocol):
    def iteration(self, done: int, total: int, loss: float) -> None: ...

    def stop_requested(self) -> bool: ...


class _Silent:
    def iteration(self, done: int, total: int, loss: float) -> None:
        pass

    def stop_requested(self) -> bool:
        return False


# --- pieces ----------------------------------------------------------------------------------------------------------


def _loss_fn(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A loss over (rows, width) tensors: "Cosine" compares each row's direction."""
    if name == "Cosine":
        return lambda a, b: (1 - F.cosine_similarity(a, b, dim=-1)).mean()
    return {"MSE": F.mse_loss, "L1": F.l1_loss, "Smooth L1": F.smooth_l1_loss, "Huber": F.huber_loss}[name]


def _optimizer(settings: EstimateSettings, params: list[torch.Tensor]) -> torch.optim.Optimizer:
    cls = getattr(torch.optim, settings.optimizer)
    extra = {"momentum": 0.9} if settings.optimizer == "SGD" else {}
    return cls(params, lr=settings.learning_rate, **extra)


def _schedule(settings: EstimateSettings, optimizer: torch.optim.Optimizer):
    if settings.schedule == "Cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=settings.iterations)
    return None


def _spread(rows: torch.Tensor, count: int) -> torch.Tensor:
    """`count` rows taken evenly from `rows` (repeating when there are fewer), as the webui's create_embedding does."""
    index = torch.tensor([i * rows.shape[0] // count for i in range(count)], device=rows.device)
    return rows[index]


def initial_vectors(settings: EstimateSettings, encoder: PromptEncoder) -> Vectors:
    """Start vectors: the init text's token rows (their count, or `tokens` of them spread over the text), or random
    vectors at the scale of the token table when the init text is blank."""
    text = settings.init_text.strip()
    if text:
        rows = encoder.token_rows(text)
        found = vector_count(rows)
        if found == 0:
            raise DumpUnetError(f"Init text '{text}' has no tokens: clear it for random vectors, or write words.")
        count = found if settings.vectors_from == "init text" else settings.tokens
        if count > 75:
            raise DumpUnetError(f"Init text has {found} tokens; an embedding holds at most 75.")
        return {part: _spread(r, count) for part, r in rows.items()}
    generator = torch.Generator().manual_seed(settings.seed)
    return encoder.random_rows(settings.tokens, generator)


def row_metrics(rows: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
    """(mean cosine per row, relative distance) of two (rows, width) tensors."""
    rows, target = rows.float(), target.float()
    cosine = F.cosine_similarity(rows, target, dim=-1).mean().item()
    distance = ((rows - target).norm() / target.norm().clamp_min(1e-12)).item()
    return cosine, distance


# --- objectives ------------------------------------------------------------------------------------------------------


class _Objective:
    def __init__(self, settings: EstimateSettings, encoder: PromptEncoder, count: int) -> None:
        self.settings = settings
        self.encoder = encoder
        self.loss_fn = _loss_fn(settings.loss)
        with torch.no_grad():
            self.target_cond = encoder.encode(settings.target_prompt)
        self.rows = slice(0, 77) if settings.all_rows else slice(1, 1 + count)

    def embedding_cond(self, vectors: Vectors) -> Cond:
        return self.encoder.encode(TRAINING_WORD, {TRAINING_WORD: vectors})

    def target_rows(self) -> torch.Tensor:
        return crossattn(self.target_cond)[0, self.rows]

    def cond_metrics(self, cond: Cond) -> tuple[float, float]:
        return row_metrics(crossattn(cond)[0, self.rows], self.target_rows())

    def loss(self, vectors: Vectors, iteration: int) -> torch.Tensor:
        raise NotImplementedError

    def evaluation_loss(self, vectors: Vectors) -> float:
        raise NotImplementedError


class TransformerObjective(_Objective):
    def _loss_of(self, cond: Cond) -> torch.Tensor:
        return self.loss_fn(crossattn(cond)[0, self.rows].float(), self.target_rows().float())

    def loss(self, vectors: Vectors, iteration: int) -> torch.Tensor:
        return self._loss_of(self.embedding_cond(vectors))

    def evaluation_loss(self, vectors: Vectors) -> float:
        with torch.no_grad():
            return self._loss_of(self.embedding_cond(vectors)).item()


class UNetObjective(_Objective):
    def __init__(
        self,
        settings: EstimateSettings,
        encoder: PromptEncoder,
        count: int,
        denoiser: Denoiser,
        latent_shape: tuple[int, ...],
        device: torch.device,
    ) -> None:
        super().__init__(settings, encoder, count)
        self.denoiser = denoiser
        self.latent_shape = latent_shape
        self.device = device
        with torch.no_grad():
            self.fixed_cond = encoder.encode(settings.other_prompt)
        self.sigmas = karras_sigmas(settings.steps, denoiser.sigma_min, denoiser.sigma_max).tolist()
        self.x: torch.Tensor | None = None

    def _noise(self, seed: int, step: int, like: torch.Tensor) -> torch.Tensor | None:
        if self.settings.sampler != "Euler a":
            return None
        generator = torch.Generator().manual_seed(seed * 1_000 + step)
        return torch.randn(like.shape, generator=generator).to(like)

    def start_latent(self, seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return (torch.randn(self.latent_shape, generator=generator) * self.sigmas[0]).to(self.device)

    def _combine(self, learned: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        if self.settings.target == "Prompts":
            return guided(learned, fixed, self.settings.cfg_scale)
        return guided(fixed, learned, self.settings.cfg_scale)

    def _reference(self, x: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The fixed branch and the target branch, in one batch when their token lengths match (as the webui does)."""
        if crossattn(self.fixed_cond).shape != crossattn(self.target_cond).shape:
            return self.denoiser(x, sigma, self.fixed_cond), self.denoiser(x, sigma, self.target_cond)
        both = self.denoiser(
            torch.cat([x, x]), torch.cat([sigma, sigma]), join_conds([self.fixed_cond, self.target_cond])
        )
        return both[: x.shape[0]], both[x.shape[0] :]

    def _pair(self, x: torch.Tensor, step: int, seed: int, vectors: Vectors) -> tuple[torch.Tensor, torch.Tensor]:
        """(trained step, target step) from latent `x` at schedule position `step`."""
        sigma, sigma_next = self.sigmas[step], self.sigmas[step + 1]
        sigma_t = torch.full((x.shape[0],), sigma, device=x.device)
        noise = self._noise(seed, step, x)
        with torch.no_grad():
            fixed, target = self._reference(x, sigma_t)
            x_target = sampler_step(self.settings.sampler, x, self._combine(target, fixed), sigma, sigma_next, noise)
        learned = self.denoiser(x, sigma_t, self.embedding_cond(vectors))
        x_trained = sampler_step(self.settings.sampler, x, self._combine(learned, fixed), sigma, sigma_next, noise)
        return x_trained, x_target

    def _compare(self, trained: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(trained.float().flatten(1), target.float().flatten(1))

    def loss(self, vectors: Vectors, iteration: int) -> torch.Tensor:
        steps = self.settings.steps
        step, cycle = iteration % steps, iteration // steps
        seed = self.settings.seed + cycle
        if step == 0 or self.x is None:
            self.x = self.start_latent(seed)
        trained, target = self._pair(self.x, step, seed, vectors)
        self.x = target
        return self._compare(trained, target)

    def evaluation_loss(self, vectors: Vectors) -> float:
        seed = self.settings.seed + EVAL_SEED_OFFSET
        x = self.start_latent(seed)
        total = 0.0
        with torch.no_grad():
            for step in range(self.settings.steps):
                trained, x = self._pair(x, step, seed, vectors)
                total += self._compare(trained, x).item()
        return total / self.settings.steps


class _LossScale:
    """Backward of a scaled loss, so that small gradients survive fp16 text encoders and U-Nets; the leaves' (fp32)
    gradients are divided back. A non-finite gradient halves the scale and skips that step's update."""

    def __init__(self, scale: float = 2.0**12) -> None:
        self.scale = scale

    def backward(self, loss: torch.Tensor, leaves: list[torch.Tensor]) -> bool:
        (loss * self.scale).backward()
        grads = [leaf.grad for leaf in leaves if leaf.grad is not None]
        if not all(bool(torch.isfinite(g).all()) for g in grads):
            self.scale /= 2
            log.info("Gradient overflow: loss scale lowered to %g, step skipped", self.scale)
            return False
        for g in grads:
            g.div_(self.scale)
        return True


# --- the loop --------------------------------------------------------------------------------------------------------


def _metrics(objective: _Objective, vectors: Vectors) -> Metrics:
    with torch.no_grad():
        cosine, distance = objective.cond_metrics(objective.embedding_cond(vectors))
    return Metrics(loss=objective.evaluation_loss(vectors), cosine=cosine, distance=distance)


def estimate(
    settings: EstimateSettings,
    encoder: PromptEncoder,
    *,
    denoiser: Denoiser | None = None,
    latent_shape: tuple[int, ...] | None = None,
    device: torch.device | str = "cpu",
    monitor: Monitor | None = None,
) -> Estimate:
    """Run one estimate. U-NET mode needs `denoiser` and the latent shape (1, C, H, W) of the model's native size."""
    settings.validate()
    monitor = monitor or _Silent()
    device = torch.device(device)
    start = initial_vectors(settings, encoder)
    live = {part: v.detach().to(device, torch.float32).clone().requires_grad_(True) for part, v in start.items()}
    count = vector_count(live)
    if settings.mode == "U-NET":
        if denoiser is None or latent_shape is None:
            raise DumpUnetError("U-NET mode needs a loaded model with a U-Net.")
        objective: _Objective = UNetObjective(settings, encoder, count, denoiser, latent_shape, device)
    else:
        objective = TransformerObjective(settings, encoder, count)

    optimizer = _optimizer(settings, list(live.values()))
    scaler = _LossScale()
    schedule = _schedule(settings, optimizer)
    result = Estimate(vectors={}, start=_metrics(objective, live))
    log.info("Estimate '%s' (%s, %d vectors): start %s", settings.name, settings.mode, count, result.start)
    for iteration in range(settings.iterations):
        if monitor.stop_requested():
            result.stopped = True
            break
        optimizer.zero_grad(set_to_none=True)
        loss = objective.loss(live, iteration)
        if not math.isfinite(loss.item()):
            raise DumpUnetError(f"The loss became {loss.item()} at step {iteration + 1}: lower the learning rate.")
        if scaler.backward(loss, list(live.values())):
            optimizer.step()
        if schedule is not None:
            schedule.step()
        result.losses.append(loss.item())
        monitor.iteration(iteration + 1, settings.iterations, result.losses[-1])
    result.vectors = {part: v.detach().to("cpu", torch.float32).clone() for part, v in live.items()}
    result.final = _metrics(objective, live)
    log.info("Estimate '%s': final %s after %d iterations", settings.name, result.final, result.iterations)
    return result
