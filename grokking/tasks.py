"""Algorithmic tasks: an operations registry, the full table of a binary operation, and its split.

Each example is the token sequence `[x, op, y, =]` whose answer is the token `c = x ∘ y`.
Tokens 0..p-1 are the numbers, `p` is the operation symbol and `p + 1` is `=`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from grokking.config import GrokkingError


@dataclass(frozen=True)
class Operation:
    name: str
    formula: str
    compute: Callable[[np.ndarray, np.ndarray, int], np.ndarray]
    needs_prime: bool  # the formula needs inverses mod p
    y_nonzero: bool  # y ranges over 1..p-1 instead of 0..p-1


def _divide(x: np.ndarray, y: np.ndarray, p: int) -> np.ndarray:
    inverse = np.array([pow(int(v), -1, p) for v in range(1, p)])  # inverse[v - 1] = v⁻¹ mod p
    return (x * inverse[y - 1]) % p


OPERATIONS: dict[str, Operation] = {
    op.name: op
    for op in [
        Operation("div", "x/y = x·y⁻¹ mod p", _divide, needs_prime=True, y_nonzero=True),
    ]
}


def get_operation(name: str) -> Operation:
    try:
        return OPERATIONS[name]
    except KeyError:
        raise GrokkingError(f"unknown operation {name!r}; choose one of {', '.join(OPERATIONS)}") from None


def is_prime(n: int) -> bool:
    return n >= 2 and all(n % d for d in range(2, int(n**0.5) + 1))


def validate_task(operation: str, p: int) -> None:
    op = get_operation(operation)
    if p < 3:
        raise GrokkingError(f"--p must be at least 3 (got {p})")
    if op.needs_prime and not is_prime(p):
        raise GrokkingError(f"--p must be prime for operation {op.name!r} (got {p}); try 97, 59 or 47")


@dataclass(frozen=True)
class Dataset:
    """The whole table of an operation: `inputs` [N, 4] tokens and `targets` [N] answers."""

    inputs: torch.Tensor
    targets: torch.Tensor
    vocab_size: int
    n_classes: int


def build_dataset(operation: str, p: int) -> Dataset:
    validate_task(operation, p)
    op = get_operation(operation)
    ys = np.arange(1 if op.y_nonzero else 0, p)
    x, y = (a.ravel() for a in np.meshgrid(np.arange(p), ys, indexing="ij"))
    answers = op.compute(x, y, p)
    inputs = np.stack([x, np.full_like(x, p), y, np.full_like(x, p + 1)], axis=1)
    return Dataset(
        inputs=torch.from_numpy(inputs).long(),
        targets=torch.from_numpy(answers).long(),
        vocab_size=p + 2,
        n_classes=p,
    )


def n_examples(operation: str, p: int) -> int:
    """Size of the whole table: p·p, or p·(p-1) when y ranges over 1..p-1."""
    return p * (p - 1 if get_operation(operation).y_nonzero else p)


def n_train_examples(n_examples: int, train_frac: float) -> int:
    return min(max(round(train_frac * n_examples), 1), n_examples - 1)


def split_indices(n_examples: int, train_frac: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A deterministic random split into (train, validation) index tensors, decided by `seed` alone."""
    order = torch.from_numpy(np.random.default_rng([seed, 0]).permutation(n_examples))
    n_train = n_train_examples(n_examples, train_frac)
    return order[:n_train].sort().values, order[n_train:].sort().values
