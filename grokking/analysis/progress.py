"""Progress measures of Nanda et al. (2023, §5): weight norm, Fourier sparsity, restricted and excluded loss.

Nanda's own definitions are in `nanda.py`; this module adds the project's variants (`*_variant` in the json):
the logits over the table are read as a function of (x, y, c) on the group: index(x) + s·index(y) − index(c)
(s = −1 for sub and div) is the argument of the directions cos/sin(w_k(x ± y − c)). For mul and div the
rows with x = 0 or y = 0 lie outside the group and are left out; the logit of the class 0 is kept as the
model computed it (it is never the answer on the rows that remain).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from grokking.analysis.fourier import FourierBasis, model_spectrum
from grokking.analysis.nanda import NandaSetup, gini, operands
from grokking.config import RunConfig
from grokking.losses import answer_loss
from grokking.model import weight_norm
from grokking.tasks import Dataset, TaskData


@dataclass(frozen=True)
class AnswerGrid:
    """The rows of the table on the group, and the argument index(x) + s·index(y) − index(c) of each logit."""

    rows: torch.Tensor  # [R] rows of the table whose x and y lie in the group
    classes: torch.Tensor  # [m] the answer classes in group order (the basis's residues)
    argument: torch.Tensor  # [R, m] (index(x) + s·index(y) − k) mod m for class column k

    @classmethod
    def build(cls, basis: FourierBasis, dataset: Dataset) -> AnswerGrid:
        """From the table's token rows."""
        x, y = operands(dataset)
        a, b = basis.index_of[x], basis.index_of[y]
        rows = torch.nonzero((a >= 0) & (b >= 0)).flatten()
        total = a[rows] + basis.y_sign * b[rows]
        argument = (total[:, None] - torch.arange(basis.m)[None, :]) % basis.m
        return cls(rows, basis.residues, argument)

    def component(self, logits: torch.Tensor, basis_rows: torch.Tensor) -> torch.Tensor:
        """The part [R, m] of the logits (on the grid) along the directions φ(x + s·y − c), φ in `basis_rows`.

        Such a direction takes each value φ(t) on as many cells as there are rows, so the projection
        is the Fourier filter of the logits' means along the diagonals x + s·y − c = t.
        """
        on_grid = logits[self.rows][:, self.classes]
        diagonal_means = torch.zeros(len(self.classes)).index_add_(0, self.argument.flatten(), on_grid.flatten())
        diagonal_means /= len(self.rows)
        filtered = basis_rows.T @ (basis_rows @ diagonal_means)
        return filtered[self.argument]


@torch.no_grad()
def frequency_losses(
    model: nn.Module,
    data: TaskData,
    config: RunConfig,
    grid: AnswerGrid,
    basis: FourierBasis,
    key: list[int],
    logits: torch.Tensor | None = None,
) -> dict[str, float]:
    """The run's loss with only the key frequencies and the constant kept (restricted, whole table) and
    with the key frequencies removed (excluded, training rows), both over the rows on the grid.

    `logits`: the model's logits over the table, when already computed."""
    if logits is None:
        model.eval()
        logits = model(data.dataset.inputs)
    logits = logits.float().cpu()
    targets = data.dataset.targets.cpu()[grid.rows]
    key_part = grid.component(logits, basis.rows_of(key))
    restricted, excluded = logits[grid.rows].clone(), logits[grid.rows].clone()
    restricted[:, grid.classes] = key_part + grid.component(logits, basis.matrix[:1])
    excluded[:, grid.classes] -= key_part
    on_train = torch.isin(grid.rows, data.train_indices)
    return {
        "restricted_loss": answer_loss(restricted, targets, config).item(),
        "excluded_loss": answer_loss(excluded[on_train], targets[on_train], config).item(),
    }


@torch.no_grad()
def progress_measures(
    model: nn.Module,
    data: TaskData,
    config: RunConfig,
    grid: AnswerGrid,
    basis: FourierBasis,
    key_variant: list[int],
    nanda: NandaSetup,
    key: list[int],
) -> dict[str, Any]:
    """The progress measures of one checkpoint (its losses and accuracies are in metrics.jsonl): Nanda's with
    the key frequencies `key`, then the project's variants with `key_variant` (from the embedding's energy)."""
    model.eval()
    logits = model(data.dataset.inputs)
    variant = frequency_losses(model, data, config, grid, basis, key_variant, logits)
    return {
        "weight_norm": weight_norm(model),
        **nanda.measures(model, data, logits, key),
        "restricted_loss_variant": variant["restricted_loss"],
        "excluded_loss_variant": variant["excluded_loss"],
        "fourier_gini_variant": gini(model_spectrum(model, basis).component_norms),
    }
