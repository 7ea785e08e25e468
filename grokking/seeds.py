"""Many seeds in one step: independent models trained side by side with `torch.func.vmap`.

Each seed keeps its own model, optimizer, split, batches and run dir (those of its single-seed
run); only the step is vectorized. The weights of all seeds live stacked in one tensor per
parameter, updated by one optimizer, which is exactly an independent optimizer per seed only when
every part of the step acts on each seed's slice alone: the optimizer's registry entry says its
update is elementwise, each accelerator's says it takes the seeds as a batch, and the model draws no
random numbers (dropout, weight noise). `blockers` asks each of them.

Before a seed is evaluated or saved, the training loop asks for its slice of the stacked weights
(and, for latest.pt, optimizer state) to be copied into its own model and optimizer, so checkpoints
have the ordinary single-seed format and resume either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch
from torch import nn
from torch.func import functional_call, vmap

from grokking import accelerators, model, optim
from grokking.accelerators import transform_gradients
from grokking.config import RunConfig
from grokking.device import autocast, compiled
from grokking.losses import answer_loss
from grokking.optim import build_optimizer, set_learning_rate, step_measures
from grokking.tasks import BatchSampler, TaskData


class Seed(Protocol):
    """What the stepper needs of each seed's run (`grokking.train.SeedRun` has it)."""

    config: RunConfig
    data: TaskData
    sampler: BatchSampler
    model: nn.Module
    optimizer: torch.optim.Optimizer


def blockers(config: RunConfig) -> list[str]:
    """The options of `config` whose part of the step cannot act on stacked seeds as if apart; seeds
    share one vectorized step only when there is none."""
    parts = {**optim.stacks_seeds(config), **accelerators.stacks_seeds(config), **model.stacks_seeds(config)}
    return [option for option, stacks in parts.items() if not stacks]


class SeedStepper:
    """Steps the models of several seeds of one config together."""

    def __init__(self, seeds: Sequence[Seed]):
        self.seeds = seeds
        self.config = seeds[0].config
        self.template = seeds[0].model
        self.names = [name for name, _ in self.template.named_parameters()]
        self.params = {
            name: torch.stack([dict(s.model.named_parameters())[name].detach() for s in seeds]).requires_grad_()
            for name in self.names
        }
        self.optimizer = build_optimizer(self.config, list(self.params.values()))
        self._load_optimizer_states()
        self.device = self.params[self.names[0]].device
        losses = vmap(self._loss)
        self._losses = compiled(losses, self.device) if self.config.compile else losses

    def _loss(self, params: dict[str, torch.Tensor], inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        with autocast(self.config.precision, self.device):
            logits = functional_call(self.template, params, (inputs,), {"scored": True})
        return answer_loss(logits, targets, self.config)

    def _load_optimizer_states(self) -> None:
        """Stack the seeds' own optimizer states (present when they were restored from latest.pt)."""
        states = [s.optimizer.state_dict()["state"] for s in self.seeds]
        if not states[0]:
            return
        stacked = {
            index: {
                key: value if key == "step" else torch.stack([s[index][key] for s in states])
                for key, value in state.items()
            }
            for index, state in states[0].items()
        }
        self.optimizer.load_state_dict({"state": stacked, "param_groups": self.optimizer.state_dict()["param_groups"]})

    def train_step(self, step: int, measure: bool = False) -> list[dict[str, float]]:
        """One step of every seed; with `measure`, each seed's named scalars (see ModelStepper)."""
        set_learning_rate(self.optimizer, self.config, step)
        batches = [s.sampler.indices(step) for s in self.seeds]
        inputs = torch.stack([s.data.train_inputs[b] for s, b in zip(self.seeds, batches)])
        targets = torch.stack([s.data.train_targets[b] for s, b in zip(self.seeds, batches)])
        loss = self._losses(self.params, inputs, targets).sum()  # each seed's gradient is its own
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = list(self.params.values())
        measured = step_measures(params, batch_dims=1) if measure else []
        transform_gradients(self.config, params, None, batch_dims=1)
        self.optimizer.step()
        return measured

    @torch.no_grad()
    def sync_weights(self) -> None:
        """Give each seed's model its slice of the stacked weights (before it is evaluated or saved)."""
        for i, seed in enumerate(self.seeds):
            for name, param in seed.model.named_parameters():
                param.copy_(self.params[name][i])

    def sync_optimizer(self) -> None:
        """Give each seed's optimizer its slice of the stacked state (before latest.pt is saved)."""
        state = self.optimizer.state_dict()
        for i, seed in enumerate(self.seeds):
            own: dict[Any, Any] = {
                index: {key: value if key == "step" else value[i].clone() for key, value in entry.items()}
                for index, entry in state["state"].items()
            }
            seed.optimizer.load_state_dict({"state": own, "param_groups": state["param_groups"]})
