"""A task's data: the whole table of an operation as token rows in its `Layout`, its train/validation
split, the split resident on a device (`TaskData`), and the batches of each step.

Everything that decides the data is a field of `TaskSpec`: `load_task` reads nothing else, so a
cache of task data keyed by the spec cannot hand one run another run's data.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch

from grokking.config import RunConfig
from grokking.layout import Layout
from grokking.operations import get_operation, n_train_examples, openai_rows, validate_task


@dataclass(frozen=True)
class Dataset:
    """The whole table of an operation: `inputs` [N, L] tokens in `layout`, and `targets` [N] answers."""

    inputs: torch.Tensor
    targets: torch.Tensor
    layout: Layout

    def __post_init__(self) -> None:
        self.layout.check(self.inputs.numpy())  # the fast forward's precondition, checked once per table

    @property
    def vocab_size(self) -> int:
        return self.layout.vocab_size

    @property
    def n_classes(self) -> int:
        return self.layout.n_elements

    def scored_targets(self, rows: torch.Tensor) -> torch.Tensor:
        """What the loss scores for these rows: the answers [R], or one column per scored token [R, T]."""
        return torch.from_numpy(self.layout.targets(self.targets[rows].numpy()))


def build_dataset(operation: str, p: int, op_token: bool = True, end_token: bool = False) -> Dataset:
    validate_task(operation, p)
    op = get_operation(operation)
    n = op.n_elements(p)
    x, y = (a.ravel() for a in np.meshgrid(np.arange(n), np.arange(1 if op.y_nonzero else 0, n), indexing="ij"))
    answers = op.compute(x, y, p)
    layout = Layout.of(n, op_token, end_token)
    return Dataset(torch.from_numpy(layout.tokens(x, y, answers)).long(), torch.from_numpy(answers).long(), layout)


def shuffled_rows(spec: TaskSpec, n_examples: int) -> tuple[np.ndarray, np.ndarray]:
    """The table's rows in the order the split takes them (the training rows first), and for each of
    the first `label_noise` of them the row whose answer it is given instead of its own.

    split "openai" is openai/grok's `make_data`: its list of equations shuffled by
    np.random.RandomState(seed), then `rng.choice` of the equations whose answers the first ones take;
    "nanda" is Nanda et al.'s `gen_train_test` (`random.seed(seed); random.shuffle(pairs)`, the table
    in the same x-major order); "permutation" and the label noise of "nanda" draw from numpy Generators."""
    if spec.split == "openai":
        order = openai_rows(spec.operation, spec.p)
        rng = np.random.RandomState(spec.split_seed)
        rng.shuffle(order)
        return order, order[rng.randint(0, n_examples, size=spec.label_noise)]  # what rng.choice draws
    if spec.split == "nanda":
        pairs = list(range(n_examples))
        random.Random(spec.split_seed).shuffle(pairs)
        order = np.array(pairs)
    else:
        order = np.random.default_rng([spec.split_seed, 0]).permutation(n_examples)
    return order, np.random.default_rng([spec.split_seed, 2]).integers(0, n_examples, size=spec.label_noise)


def halves(order: np.ndarray, n_train: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The training rows (the first `n_train` of `order`) and the validation rows, each sorted."""
    rows = torch.from_numpy(order)
    return rows[:n_train].sort().values, rows[n_train:].sort().values


@dataclass(frozen=True)
class TaskSpec:
    """The config fields that decide a task's data (table, layout and split), and nothing else."""

    operation: str
    p: int
    op_token: bool
    end_token: bool
    train_frac: float
    split_seed: int
    split: str = "permutation"
    label_noise: int = 0

    @classmethod
    def of(cls, config: RunConfig) -> TaskSpec:
        return cls(
            config.operation,
            config.p,
            config.op_token,
            config.end_token,
            config.train_frac,
            config.data_seed,
            config.split,
            config.label_noise,
        )


@dataclass(frozen=True)
class TaskData:
    """A task's table and its split, resident on one device."""

    dataset: Dataset
    train_indices: torch.Tensor  # rows of the table in the training split (on the CPU)
    noisy_rows: torch.Tensor  # training rows given another equation's answer (label noise), on the CPU
    train_inputs: torch.Tensor
    train_targets: torch.Tensor  # what the loss scores: answers [N], or answers and eos [N, 2]
    val_inputs: torch.Tensor
    val_targets: torch.Tensor

    @property
    def n_train(self) -> int:
        return len(self.train_targets)

    @property
    def layout(self) -> Layout:
        return self.dataset.layout


def load_task(task: RunConfig | TaskSpec, device: torch.device | str = "cpu") -> TaskData:
    """The data of a run's task (`task`: its config, or the spec of the config)."""
    spec = task if isinstance(task, TaskSpec) else TaskSpec.of(task)
    dataset = build_dataset(spec.operation, spec.p, spec.op_token, spec.end_token)
    n_examples = len(dataset.targets)
    order, donors = shuffled_rows(spec, n_examples)
    train_idx, val_idx = halves(order, n_train_examples(n_examples, spec.train_frac, spec.split))
    noisy = torch.from_numpy(order[: spec.label_noise])
    answers = dataset.targets.clone()
    answers[noisy] = dataset.targets[torch.from_numpy(donors)]  # validation rows are never among them
    train_targets = torch.from_numpy(dataset.layout.targets(answers[train_idx].numpy()))
    inputs = dataset.inputs.to(device)
    train_rows, val_rows = train_idx.to(device), val_idx.to(device)
    return TaskData(
        dataset,
        train_idx,
        noisy,
        inputs[train_rows],
        train_targets.to(device),
        inputs[val_rows],
        dataset.scored_targets(val_idx).to(device),
    )


class BatchSampler:
    """Shuffled epochs without replacement; the batch of a step depends only on (seed, step),
    so the sampler's whole state is the step and resume needs nothing else. With `keep_last`, each
    epoch ends with the examples left over, a shorter batch (as openai/grok's loader); otherwise they
    wait for a later epoch's shuffle."""

    def __init__(self, seed: int, n_train: int, batch_size: int, device: torch.device, keep_last: bool = False):
        self.seed, self.n_train, self.batch_size, self.device = seed, n_train, batch_size, device
        self.per_epoch = -(-n_train // batch_size) if keep_last else n_train // batch_size
        self._epoch, self._order = -1, torch.empty(0)

    @classmethod
    def of(cls, config: RunConfig, n_train: int, device: torch.device) -> BatchSampler:
        """The sampler a run of `config` (resolved) trains with."""
        return cls(config.seed, n_train, config.batch_size, device, keep_last=config.last_batch == "keep")

    def indices(self, step: int) -> torch.Tensor:
        epoch, index = divmod(step - 1, self.per_epoch)
        if epoch != self._epoch:
            order = np.random.default_rng([self.seed, 1, epoch]).permutation(self.n_train)
            self._epoch, self._order = epoch, torch.from_numpy(order).to(self.device)
        return self._order[index * self.batch_size : (index + 1) * self.batch_size]
