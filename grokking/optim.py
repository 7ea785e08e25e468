"""The optimizer (Adam or AdamW with the config's betas, epsilon and weight decay) and the learning
rate schedule (linear warmup, then constant), shared by every way of stepping a model.

Each optimizer choice is a registry entry that says whether its update is elementwise: only then
does one optimizer over the stacked weights of several seeds (`grokking.seeds`) step each seed
exactly as its own optimizer would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from grokking.config import RunConfig


def learning_rate(config: RunConfig, step: int) -> float:
    """Linear warmup over `warmup_steps` optimizer steps, then constant."""
    return config.lr * min(1.0, step / config.warmup_steps) if config.warmup_steps else config.lr


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


def stacks_seeds(config: RunConfig) -> dict[str, bool]:
    """Whether the optimizer can step seeds stacked in one tensor as if apart, by option."""
    return {f"--optimizer {config.optimizer}": OPTIMIZER_KINDS[config.optimizer].elementwise}


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
    return OPTIMIZER_KINDS[config.optimizer].make(
        params,
        lr=learning_rate(config, 1),
        betas=(config.beta1, config.beta2),
        eps=config.eps,
        weight_decay=config.weight_decay,
    )
