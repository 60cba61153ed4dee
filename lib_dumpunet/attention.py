"""Attention maps, recomputed beside whatever attention kernel the host runs.

The webui replaces `CrossAttention.forward` with optimised kernels (xformers, SDP, sub-quadratic, Doggettx …), none
of which keeps the attention probabilities. Dump U-Net never replaces that forward. At the steps asked for it hooks
the module's own projections — the outputs of `to_q` and `to_k` (so hypernetworks and LoRA are included, exactly as
the kernel saw them) and the input of `to_out[0]` (the attention output before the output projection) — and after
the module has run it recomputes, in fp32, `softmax(q·kᵀ·scale)` for the rows it keeps. `scale` is the module's own,
or dim_head^-0.5 where it has none.

Kinds recorded (per image row, shapes for one row):
  "k"    cross-attention keys        (heads, tokens, dim_head)
  "qk"   cross-attention probability (heads, tokens, h, w): where each token is looked at
  "vqk"  attention output before to_out (channels, h, w)
  "self" self-attention maps         (heads, points, h, w): where each chosen query point looks

Self-attention is computed only for the chosen query points, so no (h·w)² matrix is ever built.
A layer whose query count is not h·w (token merging, Hypertile) is skipped with a warning, not mis-drawn.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from lib_dumpunet.capture import Capture, Recorder
from lib_dumpunet.hooks import HookSet
from lib_dumpunet.layout import AttentionInfo, UNetLayout
from lib_dumpunet.sampling import SamplingTracker, UNetCall
from lib_dumpunet.specs import StepSelection, parse_points

__all__ = ["CROSS_KINDS", "CrossAttentionRecorder", "SelfAttentionRecorder"]

log = logging.getLogger(__name__)

CROSS_KINDS = ("k", "qk", "vqk")


@dataclass
class _Tap:
    """What one attention module computed during the current recorded call."""

    info: AttentionInfo
    scale: float
    hw: tuple[int, int] | None = None
    q: torch.Tensor | None = None
    k: torch.Tensor | None = None
    out: torch.Tensor | None = None
    warned: bool = field(default=False, repr=False)

    def clear(self) -> None:
        self.hw = self.q = self.k = self.out = None


def _transformer_of(unet: nn.Module, info: AttentionInfo) -> nn.Module:
    head, sep, _ = info.path.rpartition(".transformer_blocks.")
    return unet.get_submodule(head if sep else info.path.rsplit(".", 1)[0])


def _out_projection(module: nn.Module) -> nn.Module:
    to_out = module.to_out
    return to_out[0] if isinstance(to_out, nn.Sequential | nn.ModuleList) else to_out  # ldm, diffusers


class _AttentionRecorder(Recorder):
    """Shared machinery: taps on every chosen attention module of `attn_kind`; after each recorded call of one,
    the maps `_maps` computes from its tap are filed."""

    attn_kind = "attn2"
    needs_out = False

    def attach(self, hooks: HookSet, layout: UNetLayout, tracker: SamplingTracker, capture: Capture) -> None:
        for info in layout.attentions(self.blocks, self.attn_kind):
            module = layout.attention_module(info)
            scale = float(getattr(module, "scale", info.dim_head**-0.5))
            self._tap(hooks, layout.unet, module, _Tap(info, scale), tracker, capture)

    def _tap(self, hooks, unet, module, tap: _Tap, tracker: SamplingTracker, capture: Capture) -> None:
        def active() -> bool:
            return self.wants(tracker.current)

        def on_transformer(_m, args):
            if active():
                tap.hw = tuple(args[0].shape[-2:])

        def on_q(_m, _a, out):
            if active():
                tap.q = out

        def on_k(_m, _a, out):
            if active():
                tap.k = out

        def on_out(_m, args):
            if active():
                tap.out = args[0]

        def on_done(_m, _a, _o):
            call = tracker.current
            if self.wants(call):
                try:
                    self._finish(tap, call, capture)
                finally:
                    tap.clear()

        hooks.pre(_transformer_of(unet, tap.info), on_transformer)
        hooks.forward(module.to_q, on_q)
        hooks.forward(module.to_k, on_k)
        if self.needs_out:
            hooks.pre(_out_projection(module), on_out)
        hooks.forward(module, on_done)

    def _usable(self, tap: _Tap, call: UNetCall) -> bool:
        """True if the tap holds a full, unmerged, untiled set of projections for this call's rows."""
        ok = (
            tap.hw is not None
            and tap.q is not None
            and tap.k is not None
            and tap.q.shape[0] == len(call.rows)
            and tap.q.shape[1] == tap.hw[0] * tap.hw[1]
        )
        if not ok and not tap.warned:
            tap.warned = True
            log.warning(
                "%s: skipped, its queries do not match the feature map (token merging or Hypertile active?)",
                tap.info.label,
            )
        return ok

    def _finish(self, tap: _Tap, call: UNetCall, capture: Capture) -> None:
        if not self._usable(tap, call):
            return
        idx = self.kept_rows(call)
        if not idx:
            return
        with torch.no_grad():
            for kind, batch in self._maps(tap, idx):
                self.store(capture, call, idx, tap.info.label, kind, batch)

    def _maps(self, tap: _Tap, idx: list[int]) -> Iterator[tuple[str, torch.Tensor]]:
        """(kind, one row of maps per kept row) for a usable tap."""
        raise NotImplementedError


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(rows, n, heads·d) → (rows, heads, n, d) in fp32."""
    rows, n, inner = x.shape
    return x.float().reshape(rows, n, heads, inner // heads).transpose(1, 2)


class CrossAttentionRecorder(_AttentionRecorder):
    """K, Q*K and V*Q*K of every cross-attention (attn2) module of `blocks`, at the sampler steps in `steps`."""

    def __init__(
        self,
        blocks: Iterable[str],
        steps: StepSelection,
        kinds: Sequence[str] = ("qk",),
        *,
        uncond: bool = False,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(blocks, steps, uncond=uncond, dtype=dtype)
        unknown = set(kinds) - set(CROSS_KINDS)
        if unknown or not kinds:
            msg = f"cross-attention outputs must be some of {CROSS_KINDS}, got {tuple(kinds)}"
            raise ValueError(msg)
        self.kinds = tuple(k for k in CROSS_KINDS if k in kinds)
        self.needs_out = "vqk" in self.kinds

    def _maps(self, tap: _Tap, idx: list[int]) -> Iterator[tuple[str, torch.Tensor]]:
        heads, (h, w) = tap.info.heads, tap.hw
        k = _heads(tap.k[idx], heads)  # (R, heads, T, d)
        if "k" in self.kinds:
            yield "k", k
        if "qk" in self.kinds:
            q = _heads(tap.q[idx], heads)  # (R, heads, N, d)
            probs = torch.softmax(q @ k.transpose(-1, -2) * tap.scale, dim=-1)  # (R, heads, N, T)
            yield "qk", probs.transpose(-1, -2).reshape(len(idx), heads, k.shape[2], h, w)
        if "vqk" in self.kinds and tap.out is not None:
            out = tap.out[idx]  # (R, N, C)
            yield "vqk", out.transpose(1, 2).reshape(len(idx), out.shape[2], h, w)


class SelfAttentionRecorder(_AttentionRecorder):
    """Where chosen query points look, in every self-attention (attn1) module of `blocks`.

    `points` are (x, y) fractions of the feature map's width and height; each becomes the nearest position of the
    layer's own grid, so one set of points works at every resolution.
    """

    attn_kind = "attn1"

    def __init__(
        self,
        blocks: Iterable[str],
        steps: StepSelection,
        points: Sequence[tuple[float, float]] = parse_points("4x4"),
        *,
        uncond: bool = False,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(blocks, steps, uncond=uncond, dtype=dtype)
        if not points or any(not (0 <= x <= 1 and 0 <= y <= 1) for x, y in points):
            msg = "self-attention query points must be (x, y) fractions between 0 and 1"
            raise ValueError(msg)
        self.points = tuple(points)

    def positions(self, h: int, w: int) -> list[int]:
        """Flat indices of the query points on an h×w grid."""
        return [min(int(y * h), h - 1) * w + min(int(x * w), w - 1) for x, y in self.points]

    def _maps(self, tap: _Tap, idx: list[int]) -> Iterator[tuple[str, torch.Tensor]]:
        heads, (h, w) = tap.info.heads, tap.hw
        q = _heads(tap.q[idx][:, self.positions(h, w)], heads)  # (R, heads, P, d): only the chosen queries
        k = _heads(tap.k[idx], heads)  # (R, heads, N, d)
        maps = torch.softmax(q @ k.transpose(-1, -2) * tap.scale, dim=-1)  # (R, heads, P, N)
        yield "self", maps.reshape(len(idx), heads, len(self.points), h, w)
