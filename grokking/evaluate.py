"""Evaluation of a model, or of saved checkpoints, on the whole train and validation splits."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from grokking.config import RunConfig
from grokking.device import autocast
from grokking.errors import GrokkingError, first_line
from grokking.losses import correct, per_sample_loss
from grokking.model import MLP, Transformer, build_model
from grokking.rundir import RunDir, check_same_config, checkpoint_config, load_checkpoint
from grokking.tasks import TaskData, TaskSpec, load_task

DEFAULT_CONFIG = RunConfig()


@torch.no_grad()
def split_metrics(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, config: RunConfig) -> dict[str, float]:
    """Mean loss (the run's training loss), accuracy, and the fraction of answers whose loss is
    exactly zero (softmax collapse), over a whole split in one pass."""
    was_training = model.training
    model.eval()
    with autocast(config.precision, inputs.device):
        logits = model(inputs, scored=True)
    model.train(was_training)
    losses = per_sample_loss(logits, targets, config)
    return {
        "loss": losses.mean().item(),
        "acc": correct(logits, targets).float().mean().item(),
        "zero_loss_frac": (losses == 0).float().mean().item(),
    }


def evaluate(model: nn.Module, data: TaskData, config: RunConfig = DEFAULT_CONFIG) -> dict[str, float]:
    """Train and validation loss and accuracy; `config` says which loss (default: cross-entropy)."""
    train = split_metrics(model, data.train_inputs, data.train_targets, config)
    val = split_metrics(model, data.val_inputs, data.val_targets, config)
    return {
        "train_loss": train["loss"],
        "train_acc": train["acc"],
        "val_loss": val["loss"],
        "val_acc": val["acc"],
        "train_zero_loss_frac": train["zero_loss_frac"],
    }


def model_from_checkpoint(state: dict[str, Any], config: RunConfig, data: TaskData) -> Transformer | MLP:
    model = build_model(data.layout, config)
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError, TypeError) as e:
        raise GrokkingError(
            f"checkpoint weights do not fit its config ({first_line(e)}); the file is corrupt"
        ) from None
    return model


def evaluate_checkpoints(paths: list[Path], expected: RunConfig | None = None) -> list[dict[str, Any]]:
    """Evaluate each checkpoint file on its run's split; rows sorted by step.

    With `expected` (the run dir's config), a checkpoint trained with a different config is refused.
    """
    rows, cache = [], {}
    for path in paths:
        state = load_checkpoint(path)
        config = checkpoint_config(state, path)
        if expected is not None:
            check_belongs(expected, config, path)
        spec = TaskSpec.of(config)  # all that load_task reads, so checkpoints share data only when it is the same
        if spec not in cache:
            cache[spec] = load_task(spec)
        data = cache[spec]
        if finite_weights(state):
            metrics = evaluate(model_from_checkpoint(state, config, data), data, config)
        else:  # NaN logits give an argmax, hence an "accuracy", that means nothing: none is reported
            warnings.warn(f"{path} has non-finite (NaN or infinite) weights: the run had diverged", stacklevel=2)
            metrics = dict.fromkeys(("train_loss", "train_acc", "val_loss", "val_acc", "train_zero_loss_frac"))
        rows.append({"checkpoint": str(path), "step": int(state["step"]), **metrics})
    return sorted(rows, key=lambda row: row["step"])


def finite_weights(state: dict[str, Any]) -> bool:
    """Whether a checkpoint's weights are all finite; a diverged run saves NaN or infinite ones."""
    return all(tensor.isfinite().all() for tensor in state["model"].values() if tensor.is_floating_point())


def check_belongs(run_config: RunConfig, config: RunConfig, path: Path) -> None:
    """Refuse a checkpoint whose config is not its run dir's (in more than the resumable fields)."""
    what = f"checkpoint {path} was trained with a different config than its run dir"
    check_same_config(run_config, config, what, "it does not belong there")


def run_states(run: RunDir, config: RunConfig) -> dict[int, dict[str, Any]]:
    """Every checkpoint of a run dir, loaded, by step; each must be of the run's config."""
    return {step: load_run_state(path, config) for step, path in checkpoint_paths(run).items()}


def load_run_state(path: Path, config: RunConfig) -> dict[str, Any]:
    """One checkpoint of a run dir, loaded; it must be of the run's config."""
    state = load_checkpoint(path)
    check_belongs(config, checkpoint_config(state, path), path)
    return state


def checkpoint_paths(run: RunDir) -> dict[int, Path]:
    """The checkpoints of a run dir by step, in order: every kept step (named by its file), plus
    latest.pt if it is newer."""
    run.require_exists()
    paths = {int(path.stem.removeprefix("step_")): path for path in run.snapshots()}
    if run.latest_path.exists():  # one that is not a regular file is warned of, not passed over
        try:
            latest_step = int(load_checkpoint(run.latest_path)["step"])
        except GrokkingError as error:
            if not paths:
                raise
            warnings.warn(f"{error}; skipped, the kept step_*.pt are used", stacklevel=2)
        else:
            paths.setdefault(latest_step, run.latest_path)
    if not paths:
        run.read_config()  # a folder that is not a run dir says so rather than lacking checkpoints
        raise GrokkingError(f"{run.path} has no checkpoints; train it first (or again, if it was copied without them)")
    return dict(sorted(paths.items()))


def run_checkpoints(run: RunDir) -> list[Path]:
    """The checkpoints of a run dir to evaluate: every kept step, plus latest.pt if it is newer."""
    return list(checkpoint_paths(run).values())
