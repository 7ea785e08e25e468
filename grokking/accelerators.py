"""Gradient transforms that speed up grokking, applied between `backward()` and the optimizer step,
so they compose with any optimizer.

- Grokfast (Lee et al. 2024, "Grokfast: Accelerated Grokking by Amplifying Slow Gradients"): add
  λ times a low-pass filter of the gradient history to the gradient, g ← g + λ·ḡ, where ḡ is an
  exponential moving average (`ema`, momentum α, started at the first gradient) or the mean of the
  last `window` gradients (`ma`, applied once the window is full).
- ⊥Grad (Prieto et al. 2025, "Grokking at the edge of numerical stability"): remove from each
  parameter's gradient its component along the parameter, g ← g − (w·g / w·w) w, then rescale to
  the original gradient norm, so steps no longer just scale up the weights (naive loss minimization).
"""

from __future__ import annotations

from typing import Any

import torch

from grokking.config import RunConfig


class EmaFilter:
    """Grokfast-EMA: ḡ ← α·ḡ + (1 − α)·g (ḡ starts at the first gradient), then g ← g + λ·ḡ."""

    stacks_seeds = False  # its history is saved per model; stacked seeds would need it stacked and split back

    def __init__(self, config: RunConfig):
        self.alpha, self.lamb = config.grokfast_alpha, config.grokfast_lambda
        self.averages: list[torch.Tensor] = []

    @torch.no_grad()
    def apply(self, params: list[torch.Tensor]) -> None:
        grads = [p.grad for p in params]
        if not self.averages:
            self.averages = [g.clone() for g in grads]
        else:
            for average, g in zip(self.averages, grads):
                average.mul_(self.alpha).add_(g, alpha=1 - self.alpha)
        for g, average in zip(grads, self.averages):
            g.add_(average, alpha=self.lamb)

    def state_dict(self) -> dict[str, Any]:
        return {"averages": [a.clone() for a in self.averages]}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        self.averages = [a.to(device, copy=True) for a in state["averages"]]


class MovingAverageFilter:
    """Grokfast-MA: once `window` gradients are seen, g ← g + λ·(mean of the last `window`)."""

    stacks_seeds = False  # as EmaFilter

    def __init__(self, config: RunConfig):
        self.window, self.lamb = config.grokfast_window, config.grokfast_lambda
        self.buffers: list[torch.Tensor] = []  # a ring of the last `window` gradients per parameter
        self.seen = 0

    @torch.no_grad()
    def apply(self, params: list[torch.Tensor]) -> None:
        grads = [p.grad for p in params]
        if not self.buffers:
            self.buffers = [g.new_zeros((self.window, *g.shape)) for g in grads]
        for buffer, g in zip(self.buffers, grads):
            buffer[self.seen % self.window] = g
        self.seen += 1
        if self.seen >= self.window:
            for g, buffer in zip(grads, self.buffers):
                g.add_(buffer.mean(dim=0), alpha=self.lamb)

    def state_dict(self) -> dict[str, Any]:
        return {"buffers": [b.clone() for b in self.buffers], "seen": self.seen}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        self.buffers, self.seen = [b.to(device, copy=True) for b in state["buffers"]], int(state["seen"])


GradientFilter = EmaFilter | MovingAverageFilter
GROKFAST_FILTERS: dict[str, type[GradientFilter] | None] = {  # one entry per choice of --grokfast
    "none": None,
    "ema": EmaFilter,
    "ma": MovingAverageFilter,
}
ORTHOGRAD_STACKS_SEEDS = True  # it takes the seeds' leading dimension as a batch (`batch_dims`)


def build_grokfast(config: RunConfig) -> GradientFilter | None:
    """The Grokfast filter `config` asks for, or None."""
    kind = GROKFAST_FILTERS[config.grokfast]
    return None if kind is None else kind(config)


def stacks_seeds(config: RunConfig) -> dict[str, bool]:
    """Whether each accelerator `config` turns on can act on seeds stacked in one tensor as if apart."""
    parts = {}
    kind = GROKFAST_FILTERS[config.grokfast]
    if kind is not None:
        parts[f"--grokfast {config.grokfast}"] = kind.stacks_seeds
    if config.orthograd:
        parts["--orthograd"] = ORTHOGRAD_STACKS_SEEDS
    return parts


@torch.no_grad()
def orthogonalize_gradients(params: list[torch.Tensor], batch_dims: int = 0, eps: float = 1e-30) -> None:
    """⊥Grad in place. Each parameter is one vector, or with `batch_dims=1` one vector per entry of
    the leading dimension (seeds stacked by `grokking.seeds`)."""
    for w, g in ((p, p.grad) for p in params if p.grad is not None):
        dims = tuple(range(batch_dims, w.dim()))
        if not dims:
            continue
        along = (w * g).sum(dim=dims, keepdim=True) / ((w * w).sum(dim=dims, keepdim=True) + eps)
        orthogonal = g - along * w
        scale = g.norm(dim=dims, keepdim=True) / (orthogonal.norm(dim=dims, keepdim=True) + eps)
        g.copy_(orthogonal * scale)


def transform_gradients(
    config: RunConfig, params: list[torch.Tensor], grokfast: GradientFilter | None, batch_dims: int = 0
) -> None:
    """The accelerators between backward and the optimizer step: Grokfast's filter, then ⊥Grad."""
    if grokfast is not None:
        grokfast.apply(params)
    if config.orthograd:
        orthogonalize_gradients(params, batch_dims)
