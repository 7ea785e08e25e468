"""The optimizer (Adam or AdamW with the config's betas, epsilon and weight decay, openai/grok's decay
toward the initial weights and update noise) and the learning rate schedule (openai/grok's: linear
warmup, then constant or a cosine annealing), shared by every way of stepping a model.

Each optimizer choice is a registry entry that says whether its update is elementwise: only then
does one optimizer over the stacked weights of several seeds (`grokking.seeds`) step each seed
exactly as its own optimizer would.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from grokking.config import RunConfig


def learning_rate(config: RunConfig, step: int) -> float:
    """The lr of update `step` (from 1), as openai/grok's `_scheduler_lr`: linear warmup over `warmup_steps`,
    then constant, or with `anneal_lr_steps` a cosine from lr to lr/10 over that many steps, then lr/10.
    openai's scheduler gives update k the lr of its step k-1 (`warmup_from_zero`); otherwise the one of k."""
    t = step - 1 if config.warmup_from_zero else step
    warmup, peak = config.warmup_steps, config.lr
    if t <= warmup and (warmup or config.warmup_from_zero):
        return peak * (t / max(warmup, 1))
    if config.anneal_lr_steps == 0:
        return peak
    if t > warmup + config.anneal_lr_steps:
        return peak / 10
    cosine = (1 + math.cos(math.pi * (t - warmup) / config.anneal_lr_steps)) / 2
    return peak / 10 + (peak - peak / 10) * cosine


def set_learning_rate(optimizer: torch.optim.Optimizer, config: RunConfig, step: int) -> None:
    for group in optimizer.param_groups:
        group["lr"] = learning_rate(config, step)


@dataclass(frozen=True)
class OptimizerKind:
    make: Callable[..., torch.optim.Optimizer]
    elementwise: bool  # every update and state entry of a weight depends on that weight's own entries only


OPTIMIZER_KINDS = {  # one entry per choice of --optimizer (config.OPTIMIZERS)
    "adam": OptimizerKind(torch.optim.Adam, elementwise=True),
    "adamw": OptimizerKind(torch.optim.AdamW, elementwise=True),
}


class OpenAIAdamW(torch.optim.Optimizer):
    """openai/grok's CustomAdamW (grok/training.py), the optimizer of the paper's runs: Adam, whose weight
    decay is decoupled and pulls toward zero (p ← p − lr·wd·p, torch's AdamW) or toward the initial
    weights (`to_init`: p ← p + lr·wd·(p₀ − p)), applied before the update; and Gaussian noise of std
    `noise_factor` added to the direction m/(√v̂ + ε) before its step size lr/(1 − β₁ᵗ) scales it. With `coupled`
    the decay is Adam's L2 term added to the gradient instead (this project's --optimizer adam).

    Used only where torch's Adam(W) cannot do the same (to_init, noise), so that every other run keeps
    torch's arithmetic; every state entry is per weight, so seeds stacked in one tensor step as if apart
    unless noise is drawn."""

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: float,
        betas: tuple[float, float],
        eps: float,
        weight_decay: float,
        to_init: bool = False,
        noise_factor: float = 0.0,
        coupled: bool = False,
    ):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, to_init=to_init)
        super().__init__(params, defaults | dict(noise_factor=noise_factor, coupled=coupled))

    @torch.no_grad()
    def step(self, closure: None = None) -> None:
        for group in self.param_groups:
            lr, wd, (beta1, beta2) = group["lr"], group["weight_decay"], group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"], state["exp_avg_sq"] = torch.zeros_like(p), torch.zeros_like(p)
                    if group["to_init"]:
                        state["init"] = p.detach().clone()
                grad = p.grad + wd * p if group["coupled"] and wd else p.grad
                if wd and not group["coupled"]:
                    if group["to_init"]:
                        p.add_((state["init"] - p) * (lr * wd))
                    else:
                        p.mul_(1 - lr * wd)
                state["step"] += 1
                step = state["step"].item()
                state["exp_avg"].mul_(beta1).add_(grad, alpha=1 - beta1)
                state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                denominator = (state["exp_avg_sq"].sqrt() / math.sqrt(1 - beta2**step)).add_(group["eps"])
                update = state["exp_avg"] / denominator
                if group["noise_factor"]:
                    update += torch.randn_like(update) * group["noise_factor"]
                p.add_(update, alpha=-lr / (1 - beta1**step))


def uses_openai_adamw(config: RunConfig) -> bool:
    """Whether `config` needs what only OpenAIAdamW does: decay toward the initial weights, or update noise."""
    return config.weight_decay_kind == "to_init" or config.noise_factor > 0


def stacks_seeds(config: RunConfig) -> dict[str, bool]:
    """Whether the optimizer can step seeds stacked in one tensor as if apart, by option: update noise
    cannot (one draw over the stacked tensor is not each seed's own draw)."""
    parts = {f"--optimizer {config.optimizer}": OPTIMIZER_KINDS[config.optimizer].elementwise}
    if config.noise_factor > 0:
        parts["--noise-factor"] = False
    return parts


def gradient_norm(params: Iterable[torch.Tensor], batch_dims: int = 0) -> torch.Tensor:
    """The L2 norm of all the parameters' gradients together: a scalar, or one per entry of the leading
    `batch_dims` dimensions (seeds stacked by `grokking.seeds`)."""
    squares = [p.grad.detach().float().pow(2).flatten(batch_dims).sum(-1) for p in params if p.grad is not None]
    return torch.stack(squares).sum(0).sqrt()


def step_measures(params: list[torch.Tensor], batch_dims: int = 0) -> list[dict[str, float]]:
    """The named scalars a training step measures at an evaluation, one dict per seed, from the gradients
    before the accelerators change them (`batch_dims=1`: seeds stacked). A training-time metric is one
    entry here; it reaches metrics.jsonl, the loggers and `grokking plot --metric` as it is."""
    measures = {"grad_norm": gradient_norm(params, batch_dims)}
    columns = {name: values.reshape(-1).tolist() for name, values in measures.items()}
    return [dict(zip(columns, row)) for row in zip(*columns.values())]


def build_optimizer(config: RunConfig, params: Iterable[torch.Tensor]) -> torch.optim.Optimizer:
    betas, decay = (config.beta1, config.beta2), config.weight_decay
    common = dict(lr=learning_rate(config, 1), betas=betas, eps=config.eps, weight_decay=decay)
    if uses_openai_adamw(config):
        return OpenAIAdamW(
            params,
            **common,
            to_init=config.weight_decay_kind == "to_init",
            noise_factor=config.noise_factor,
            coupled=config.optimizer == "adam",
        )
    return OPTIMIZER_KINDS[config.optimizer].make(params, **common)
