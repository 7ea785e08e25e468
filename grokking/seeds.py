"""Many seeds in one process: independent models trained side by side with `torch.func.vmap`.

Each seed keeps its own `Trainer` (its split, init, batches, run dir, checkpoints and metrics are
those of its single-seed run); only the optimizer step is vectorized. The weights of all seeds
live stacked in one tensor per parameter, updated by one AdamW, which is exactly independent
AdamW per seed because every AdamW operation is elementwise. Before a seed is evaluated or saved,
its slice of the stacked weights (and, for latest.pt, optimizer state) is copied into its own
model and optimizer, so checkpoints have the ordinary single-seed format and resume either way.
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

import torch
from rich.console import Console
from rich.progress import Progress
from torch.func import functional_call, vmap

from grokking.config import GrokkingError, RunConfig
from grokking.losses import answer_loss
from grokking.rundir import GENERALIZED, RunDir
from grokking.train import (
    Trainer,
    TrainingInterrupted,
    build_optimizer,
    live_display,
    open_trainer,
    prepare_run_dir,
    resolve_batch_size,
    resolve_device,
    set_learning_rate,
    stop_signals,
    transform_gradients,
)


class SeedGroup:
    """Trainers of one config that differ only in their seed, stepped together."""

    def __init__(self, trainers: list[Trainer]):
        self.trainers = trainers
        self.config = trainers[0].config
        self.template = trainers[0].model
        self.names = [name for name, _ in self.template.named_parameters()]
        self.params = {
            name: torch.stack([dict(t.model.named_parameters())[name].detach() for t in trainers]).requires_grad_()
            for name in self.names
        }
        self.optimizer = build_optimizer(self.config, list(self.params.values()))
        self._load_optimizer_states()
        self._losses = vmap(self._loss)

    def _loss(self, params: dict[str, torch.Tensor], inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return answer_loss(functional_call(self.template, params, (inputs,)), targets, self.config)

    def _load_optimizer_states(self) -> None:
        """Stack the seeds' own optimizer states (present when they were restored from latest.pt)."""
        states = [t.optimizer.state_dict()["state"] for t in self.trainers]
        if not states[0]:
            return
        stacked = {
            index: {key: value if key == "step" else torch.stack([s[index][key] for s in states]) for key, value in state.items()}
            for index, state in states[0].items()
        }
        self.optimizer.load_state_dict({"state": stacked, "param_groups": self.optimizer.state_dict()["param_groups"]})

    def train_step(self, step: int) -> None:
        set_learning_rate(self.optimizer, self.config, step)
        batches = [t.sampler.indices(step) for t in self.trainers]
        inputs = torch.stack([t.data.train_inputs[b] for t, b in zip(self.trainers, batches)])
        targets = torch.stack([t.data.train_targets[b] for t, b in zip(self.trainers, batches)])
        loss = self._losses(self.params, inputs, targets).sum()  # each seed's gradient is its own
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        transform_gradients(self.config, list(self.params.values()), None, batch_dims=1)
        self.optimizer.step()

    @torch.no_grad()
    def copy_weights_to_seeds(self) -> None:
        """Give each seed's model its slice of the stacked weights (before it is evaluated or saved)."""
        for i, trainer in enumerate(self.trainers):
            for name, param in trainer.model.named_parameters():
                param.copy_(self.params[name][i])

    def copy_optimizer_to_seeds(self) -> None:
        """Give each seed's optimizer its slice of the stacked state (before latest.pt is saved)."""
        state = self.optimizer.state_dict()
        for i, trainer in enumerate(self.trainers):
            own = {
                index: {key: value if key == "step" else value[i].clone() for key, value in entry.items()}
                for index, entry in state["state"].items()
            }
            trainer.optimizer.load_state_dict({"state": own, "param_groups": state["param_groups"]})

    def done(self) -> bool:
        return all(t.grokked() for t in self.trainers)

    def run_loop(self, stop_requests: list[int], progress: Progress | None) -> None:
        """Train all seeds until the budget, all of them grokked (with stop_on_grok) or a stop signal."""
        config, trainers = self.config, self.trainers
        task = progress.add_task("train", total=config.steps, completed=trainers[0].state.step, **self._fields()) if progress else None
        for trainer in trainers:
            trainer.start_clock()
        step = trainers[0].state.step
        while step < config.steps and not self.done():
            step += 1
            self.train_step(step)
            known_final = step == config.steps or bool(stop_requests)
            if any(t.needs_weights(step, known_final) for t in trainers):
                self.copy_weights_to_seeds()
            for trainer in trainers:
                trainer.evaluate_step(step, progress)
            final = known_final or self.done()
            if final or step % config.checkpoint_every == 0:
                self.copy_optimizer_to_seeds()
            for trainer in trainers:
                trainer.save_step(step, final)
            if progress is not None:
                progress.update(task, completed=step, **self._fields())
            if stop_requests:
                raise TrainingInterrupted(stop_requests[0], step)

    def _fields(self) -> dict[str, str]:
        accuracies = [t.state.last["val_acc"] for t in self.trainers if t.state.last]
        if not accuracies:
            return {"metrics": f"{len(self.trainers)} seeds · waiting for the first evaluation"}
        generalized = sum(a >= GENERALIZED for a in accuracies)
        return {
            "metrics": f"{len(self.trainers)} seeds · val acc {min(accuracies):.1%}–{max(accuracies):.1%} · "
            f"{generalized} at ≥ 99%"
        }


def trainable_together(config: RunConfig) -> bool:
    """Whether seeds of `config` can share one vectorized step (not with dropout or a Grokfast filter)."""
    return config.dropout == 0 and config.grokfast == "none"


def train_seeds(
    configs: list[RunConfig],
    runs: list[RunDir],
    resume: bool = False,
    overwrite: bool = False,
    console: Console | None = None,
) -> list[dict[str, Any]]:
    """Train several seeds of one config together, each into its own run dir; return their summaries."""
    configs = [resolve_batch_size(c) for c in configs]
    if len({c.replace(seed=0) for c in configs}) != 1:
        raise GrokkingError("seeds trained together must share every setting but the seed")
    if not trainable_together(configs[0]):
        raise GrokkingError("--seeds trains seeds together only without dropout and --grokfast; train them one at a time")
    device = resolve_device(configs[0].device, needs_float64=configs[0].loss_dtype == "float64")
    continuing = [prepare_run_dir(c, r, resume, overwrite) for c, r in zip(configs, runs)]
    with ExitStack() as locks:
        for run in runs:
            locks.enter_context(run.lock())
        trainers = [open_trainer(c, r, device, cont) for c, r, cont in zip(configs, runs, continuing)]
        steps = sorted({t.state.step for t in trainers})
        if len(steps) > 1:
            raise GrokkingError(f"these run dirs stopped at different steps {steps}; resume them one at a time")
        for trainer in trainers:
            trainer.begin(device)
        group = SeedGroup(trainers)
        with stop_signals() as stop_requests, live_display(console) as progress:
            group.run_loop(stop_requests, progress)
        return [t.finish() for t in trainers]
