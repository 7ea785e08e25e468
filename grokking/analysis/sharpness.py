"""The sharpness of a checkpoint: Keskar et al.'s (2017, §2.2.2) ε-sharpness in a random subspace, the
measure openai/grok's `grok/measure.py` (`get_sharpness`) names, with its defaults (a 10-dimensional
subspace, ε = 1e-3, 10 L-BFGS iterations), on the training split with the run's own loss:

    φ = (max over y in the box of f(x₀ + A·y) − f(x₀)) / (1 + f(x₀)) · 100,

A the pseudo-inverse of 10 random unit directions A⁺ (uniform in [−1, 1], rows normalized) and the
box |y_i| ≤ ε·(|(A⁺x₀)_i| + 1). A flat minimum gives φ near 0; a sharp one, a large φ.

Two choices differ from the released code and are recorded with the result: openai's passes the loss
itself to scipy's bounded minimizer and negates the outcome, so as released it measures how far the loss
can fall inside the box, not how far it can rise; here the rise is maximized, as Keskar et al. and its
docstring define it. And where openai runs scipy's L-BFGS-B, here 10 steps of projected sign-gradient
ascent search the box (the ε-box is so small that the loss is nearly linear in it, its maximum near a
corner: L-BFGS's first steps, scaled by the tiny gradient, did not move the weights at all in float32).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from grokking.config import RunConfig
from grokking.losses import answer_loss
from grokking.tasks import TaskData

SUBSPACE, EPSILON, ITERATIONS = 10, 1e-3, 10  # openai/grok's get_sharpness defaults
ASCENT = 0.5  # each step moves every coordinate half the box's half-width toward the rise


def sharpness(
    model: nn.Module,
    data: TaskData,
    config: RunConfig,
    subspace: int = SUBSPACE,
    epsilon: float = EPSILON,
    iterations: int = ITERATIONS,
    seed: int = 0,
) -> dict[str, Any]:
    """ε-sharpness of `model` on the training split (see the module's docstring); the directions are
    drawn from `seed`, so the same checkpoint and seed give the same value."""
    model.eval()
    names = [name for name, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    x0 = torch.cat([p.detach().flatten() for p in model.parameters()])
    generator = torch.Generator().manual_seed(seed)
    directions = torch.rand(subspace, len(x0), generator=generator, dtype=torch.float64) * 2 - 1
    directions /= directions.norm(dim=1, keepdim=True)  # A⁺, rows of unit length
    lift = (directions.T @ torch.linalg.inv(directions @ directions.T)).to(x0.dtype)  # A = pinv(A⁺): full row rank
    bound = epsilon * ((directions @ x0.double()).abs() + 1).to(x0.dtype)

    def loss_at(y: torch.Tensor) -> torch.Tensor:
        weights = dict(zip(names, (x0 + lift @ y).split([s.numel() for s in shapes])))
        weights = {name: w.view(shape) for (name, w), shape in zip(weights.items(), shapes)}
        logits = functional_call(model, weights, (data.train_inputs,), {"scored": True})
        return answer_loss(logits, data.train_targets, config)

    corner = torch.zeros(subspace, dtype=x0.dtype)  # y / bound, in [-1, 1]: the box scaled to a cube
    losses = []
    for _ in range(iterations + 1):
        corner.requires_grad_()
        loss = loss_at(bound * corner)
        losses.append(loss.item())
        (slope,) = torch.autograd.grad(loss, corner)
        corner = (corner.detach() + ASCENT * slope.sign()).clamp(-1, 1)
    start, peak = losses[0], max(losses)
    return {
        "sharpness": (peak - start) / (1 + start) * 100,
        "train_loss": start,
        "max_train_loss_in_box": peak,
        "subspace": subspace,
        "epsilon": epsilon,
        "iterations": iterations,
        "seed": seed,
        "definition": "Keskar et al. 2017 §2.2.2 ε-sharpness in a random subspace, openai/grok's defaults, "
        "maximized by projected sign-gradient ascent (openai's released code minimizes with L-BFGS-B; see "
        "grokking/analysis/sharpness.py)",
    }
