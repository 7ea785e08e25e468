"""Nanda et al. (2023)'s progress measures as their code defines them, beside the project's own variants.

Where each definition comes from (repository mechanistic-interpretability-grokking/progress-measures-paper):

- restricted loss: `transformers.py` `calculate_trig_loss`, with `helpers.py` `get_component_cos_xpy`,
  `get_component_sin_xpy` and `test_logits(..., bias_correction=True, mode='all')`; the paper's Fig. 7 is the
  analysis notebook's `trig_loss`, with the key frequencies of the final model.
- excluded loss: the notebook's `calculate_excluded_loss_2D_full` (every key frequency removed at once, Fig. 7),
  and per key frequency `transformers.py` `calculate_excluded_loss` (the notebook's `excluded_loss_2D`, Fig. 12).
- key frequencies: `transformers.py` `calculate_key_freqs` and the notebook's neuron clusters (a neuron joins
  the cluster of its frequency when that frequency explains at least 85 % of its variance).
- Gini coefficients (paper §5.1) of the norms of the Fourier components of W_E (the notebook's
  `get_fourier_embedding`) and of W_L = W_U·W_out (its `W_Lf = fourier_basis @ W_L`).

Their model computes x+y mod 113 on the whole p×p table. Here the same definitions run on the group of the
operation (`FourierBasis`): for `add` they are theirs exactly; for `sub` the directions are cos/sin(w(x − y));
for `mul` and `div` they are carried to the discrete logarithms (x = g^a, y = g^b, directions
cos/sin(w(a ± b)), rows with x = 0 or y = 0 and the class 0 left out).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from grokking.analysis.fourier import FourierBasis
from grokking.errors import GrokkingError
from grokking.tasks import Dataset, TaskData

CLUSTER_THRESHOLD = 0.85  # Nanda et al.'s notebook: neuron_freqs[neuron_frac_explained < 0.85] = -1

SOURCE = "mechanistic-interpretability-grokking/progress-measures-paper"
MEASURES = {
    "restricted_loss": "Nanda et al. (Fig. 7): each answer class's logits over the whole table projected onto "
    "cos(w(x+y)) and sin(w(x+y)) for the key frequencies w, plus the mean over inputs of what the projection "
    "leaves out (their bias correction); cross-entropy in float64 on the whole table "
    "(transformers.py calculate_trig_loss, helpers.py test_logits)",
    "excluded_loss": "Nanda et al. (Fig. 7): the logits' components along cos/sin(w(x+y)) of every key frequency "
    "removed (no bias correction); cross-entropy on the training rows (notebook calculate_excluded_loss_2D_full)",
    "excluded_loss_per_frequency": "Nanda et al. (Fig. 12): the same with one key frequency removed at a time "
    "(transformers.py calculate_excluded_loss)",
    "gini_W_E": "Nanda et al.: Gini coefficient of the norms of the Fourier components (constant, cos w, sin w) of "
    "the element embeddings W_E",
    "gini_W_L": "Nanda et al.: Gini coefficient of the norms of the Fourier components, over the answer classes, "
    "of W_L = W_U·W_out (the last block's neuron-to-logit map)",
    "neurons_clustered_frac": "share of the last MLP's neurons whose dominant frequency explains at least "
    f"{CLUSTER_THRESHOLD:.0%} of the variance of their activation at `=` over the table (Nanda's neuron clusters)",
    "key_frequencies_neurons": "this checkpoint's cluster frequencies (transformers.py recomputes them at each "
    "checkpoint; the losses here use the final checkpoint's, as the paper's notebook does)",
    "restricted_loss_variant": "project's variant: the logits' part along cos/sin(w(x+y−c)) for the embedding's key "
    "frequencies plus their overall mean, a function of x+y−c alone (2 coefficients per frequency shared by all "
    "classes, where Nanda's has 2 per class); the run's own loss function; whole table",
    "excluded_loss_variant": "project's variant: the part along cos/sin(w(x+y−c)) of the embedding's key "
    "frequencies removed (less than Nanda's per-class cos/sin(w(x+y)) directions remove); training rows",
    "fourier_gini_variant": "project's variant: Gini of the embedding's Fourier component norms in the operation's "
    "basis; the same definition as gini_W_E, kept under the project's name",
}


def operands(dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """The x and y tokens of each row."""
    inputs, layout = dataset.inputs.cpu(), dataset.layout
    return inputs[:, layout.x], inputs[:, layout.y]


@dataclass(frozen=True)
class GroupTable:
    """The rows of the table whose x and y lie in the group, in the order a·m + b of their group indices
    (Nanda's batch order `(x y)` for x+y mod p), with the answers' group indices and the training rows."""

    basis: FourierBasis
    rows: torch.Tensor  # [m²] the table row of (a, b) at a·m + b
    targets: torch.Tensor  # [m²] the answer's group index
    is_train: torch.Tensor  # [m²] bool

    @classmethod
    def build(cls, basis: FourierBasis, data: TaskData) -> GroupTable:
        x, y = operands(data.dataset)
        a, b = basis.index_of[x], basis.index_of[y]
        inside = (a >= 0) & (b >= 0)
        m = basis.m
        rows = torch.full((m * m,), -1, dtype=torch.long)
        rows[a[inside] * m + b[inside]] = torch.nonzero(inside).flatten()
        if (rows < 0).any():
            raise GrokkingError(f"the table lacks {(rows < 0).sum()} of the {m * m} pairs of the group")
        targets = basis.index_of[data.dataset.targets.cpu()[rows]]
        return cls(basis, rows, targets, torch.isin(rows, data.train_indices.cpu()))

    def class_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """[m², m] float64: the logits of the answer classes in group order (the first n columns of the model's
        output are the answers 0..n−1; columns past them, other tokens of the vocabulary, are not read)."""
        return logits.detach().cpu().double()[self.rows][:, self.basis.residues]


def trig_directions(basis: FourierBasis, frequencies: list[int]) -> torch.Tensor:
    """[r, m²] unit vectors cos(2πw(a + s·b)/m) and sin(…) over the grid, for each w (s = the basis's y_sign).

    For x+y mod p these are Nanda's `cos_xpy_direction` and `sin_xpy_direction` (their (cos_x cos_y − sin_x sin_y)/√2
    and (sin_x cos_y + cos_x sin_y)/√2 of normalized 1-D waves); a sine that vanishes (w = m/2) is dropped.
    """
    m = basis.m
    k = torch.arange(m, dtype=torch.float64)
    angle_unit = (k[:, None] + basis.y_sign * k[None, :]).flatten() * (2 * math.pi / m)
    rows = []
    for w in frequencies:
        for wave in (torch.cos(w * angle_unit), torch.sin(w * angle_unit)):
            norm = wave.norm()
            if norm > 1e-6 * m:
                rows.append(wave / norm)
    return torch.stack(rows) if rows else torch.zeros(0, m * m, dtype=torch.float64)


def project(table: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """The part of each class's column of `table` [m², classes] along the (orthonormal) directions [r, m²]."""
    return directions.T @ (directions @ table)


def restricted_logits(table: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """Nanda's restricted logits: the projection, plus the mean over inputs of what it leaves out."""
    kept = project(table, directions)
    return kept + (table - kept).mean(dim=0, keepdim=True)


def excluded_logits(table: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """Nanda's excluded logits: the logits without their part along the directions (no bias correction)."""
    return table - project(table, directions)


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean cross-entropy in float64 (their `cross_entropy_high_precision`)."""
    log_probs = F.log_softmax(logits.double(), dim=-1)
    return -log_probs.gather(1, targets[:, None]).mean().item()


def frequency_losses(table_logits: torch.Tensor, table: GroupTable, key: list[int]) -> dict[str, Any]:
    """Restricted loss (whole table), excluded loss (all key frequencies removed, training rows) and the
    excluded loss of each key frequency alone, from the class logits [m², m] of `table`."""
    basis, train = table.basis, table.is_train
    restricted = restricted_logits(table_logits, trig_directions(basis, key))
    excluded = excluded_logits(table_logits, trig_directions(basis, key))
    per_frequency = {
        str(w): cross_entropy(excluded_logits(table_logits, trig_directions(basis, [w]))[train], table.targets[train])
        for w in key
    }
    return {
        "restricted_loss": cross_entropy(restricted, table.targets),
        "excluded_loss": cross_entropy(excluded[train], table.targets[train]),
        "excluded_loss_per_frequency": per_frequency,
    }


def fourier_norms(by_element: torch.Tensor, basis: FourierBasis) -> torch.Tensor:
    """[m] norms of the Fourier components of a matrix whose row r belongs to element r (W_E, or W_L by class)."""
    rows = by_element.detach().cpu().double()[basis.residues]
    return (basis.matrix.double() @ rows).norm(dim=1)


def neuron_logit_map(model: nn.Module, n_classes: int) -> torch.Tensor:
    """W_L = W_U·W_out [n_classes, d_mlp]: what each neuron of the last block's MLP adds to each answer's logit."""
    return model.unembed.weight[:n_classes] @ model.blocks[-1].mlp.w_out.weight


@dataclass(frozen=True)
class NeuronClusters:
    """Each neuron's dominant frequency and the share of its variance that frequency explains."""

    frequency: torch.Tensor  # [d_mlp] dominant frequency, 0 for a neuron constant over the table (dead)
    explained: torch.Tensor  # [d_mlp] share of its variance (linear and quadratic terms of that frequency)
    threshold: float = CLUSTER_THRESHOLD

    @property
    def clustered(self) -> torch.Tensor:
        return (self.explained >= self.threshold) & (self.frequency > 0)

    def counts(self) -> dict[int, int]:
        """Neurons in each frequency's cluster, by frequency."""
        frequencies, counts = torch.unique(self.frequency[self.clustered], return_counts=True)
        return dict(zip(frequencies.tolist(), counts.tolist()))

    def key_frequencies(self) -> list[int]:
        """The frequencies with a cluster, ascending (as their np.unique gives them)."""
        return sorted(self.counts())

    def to_json(self) -> dict[str, Any]:
        live = self.frequency > 0
        return {
            "threshold": self.threshold,
            "key_frequencies": self.key_frequencies(),
            "cluster_sizes": {str(f): c for f, c in self.counts().items()},
            "n_neurons": len(self.frequency),
            "dead_neurons": int((~live).sum()),
            "unclustered_neurons": int((live & ~self.clustered).sum()),
            "argmax_frequencies": sorted(set(self.frequency[live].tolist())),
            "argmax_frequencies_note": "every live neuron's dominant frequency, no threshold: what "
            "transformers.py calculate_key_freqs returns (np.unique of the argmax)",
            "neuron_frequency": self.frequency.tolist(),
            "neuron_explained": [round(v, 6) for v in self.explained.tolist()],
        }


def neuron_clusters(activations: torch.Tensor, basis: FourierBasis) -> NeuronClusters:
    """Clusters of neurons from their activations [m, m, d_mlp] over the grid of group indices (a, b).

    Centered over the grid and put in the 2-D Fourier basis, a neuron's share for frequency w is that of the
    eight terms (const, cos w, sin w)² other than (const, const), Nanda's `extract_freq_2d`; its frequency is the
    one with the largest share, over w = 1..floor(m/2).
    """
    acts = activations.detach().cpu().double()
    acts = acts - acts.mean(dim=(0, 1), keepdim=True)
    matrix = basis.matrix.double()
    spectrum = torch.einsum("gb,fbn->fgn", matrix, torch.einsum("fa,abn->fbn", matrix, acts)).pow(2)
    total = spectrum.sum(dim=(0, 1))
    frequencies = torch.arange(1, basis.n_frequencies + 1)
    of_row = basis.row_frequency
    member = ((of_row[None, :] == frequencies[:, None]) | (of_row[None, :] == 0)).double()  # [W, m]
    share = torch.einsum("wf,fgn,wg->wn", member, spectrum, member) / total.clamp_min(1e-300)
    explained, best = share.max(dim=0)
    dead = total <= 1e-20 * total.max().clamp_min(1e-300)
    frequency = torch.where(dead, 0, frequencies[best])
    return NeuronClusters(frequency, torch.where(dead, 0.0, explained))


def at_position(activation: torch.Tensor, position: int, length: int) -> torch.Tensor:
    """A hooked activation at one position: [N, d] as it is, [N, length, d] at `position`, [N, 1, d] squeezed
    (the model's fast forward runs its last block at `=` only)."""
    if activation.dim() == 2:
        return activation
    if activation.shape[1] == length:
        return activation[:, position]
    if activation.shape[1] == 1:
        return activation[:, 0]
    raise GrokkingError(f"unexpected MLP activation shape {tuple(activation.shape)}")


@torch.no_grad()
def neuron_activations(model: nn.Module, data: TaskData, table: GroupTable) -> torch.Tensor:
    """[m, m, d_mlp]: the last block's MLP activations at `=` for each (a, b) of the grid."""
    inputs = data.dataset.inputs[table.rows].to(next(model.parameters()).device)
    captured: list[torch.Tensor] = []
    handle = model.blocks[-1].mlp.hook_post.register_forward_hook(lambda module, args, out: captured.append(out))
    model.eval()
    try:
        model.forward_all(inputs) if hasattr(model, "forward_all") else model(inputs)
    finally:
        handle.remove()
    acts = at_position(captured[-1], data.layout.equals, inputs.shape[1])
    m = table.basis.m
    return acts.float().cpu().reshape(m, m, -1)


@dataclass(frozen=True)
class NandaSetup:
    """What a run allows of Nanda's measures, decided once: the grid, and why neuron measures are skipped."""

    table: GroupTable
    neurons_reason: str | None  # None when the model has a transformer MLP to read
    notes: list[str]

    @classmethod
    def build(cls, basis: FourierBasis, data: TaskData, model: nn.Module, layer_norm: bool) -> NandaSetup:
        if basis.generator is not None:
            scope = (
                "not in Nanda et al.: their definitions carried to the discrete logarithms a, b of x = g^a, y = g^b "
                "(directions cos/sin(w(a±b)) over Z_(p−1)); rows with x = 0 or y = 0 and the class 0 are left out"
            )
        elif basis.y_sign == 1:
            scope = "Nanda et al.'s definitions exactly (their task is x+y mod p)"
        else:
            scope = "Nanda et al.'s definitions with directions cos/sin(w(x−y)) for x−y mod p (theirs are for x+y)"
        reason = None
        extra = []
        if not hasattr(model, "blocks") or len(model.blocks) == 0:
            reason = "the MLP baseline has no transformer block: no neurons at `=` and no W_out to read"
        else:
            if len(model.blocks) > 1:
                extra.append("neurons and W_L are the last block's (Nanda's model has one)")
            if layer_norm:
                extra.append("W_L = W_U·W_out ignores the LayerNorm between them (Nanda's model has none)")
        return cls(GroupTable.build(basis, data), reason, [scope, *extra])

    def clusters(self, model: nn.Module, data: TaskData) -> NeuronClusters | None:
        if self.neurons_reason is not None:
            return None
        return neuron_clusters(neuron_activations(model, data, self.table), self.table.basis)

    @torch.no_grad()
    def measures(self, model: nn.Module, data: TaskData, logits: torch.Tensor, key: list[int]) -> dict[str, Any]:
        """Nanda's measures of one checkpoint, given its answer logits over the whole table."""
        basis, n = self.table.basis, data.dataset.n_classes
        clusters = self.clusters(model, data)
        gini_w_l = None if clusters is None else gini(fourier_norms(neuron_logit_map(model, n), basis))
        return {
            **frequency_losses(self.table.class_logits(logits), self.table, key),
            "gini_W_E": gini(fourier_norms(model.token_embedding.weight, basis)),
            "gini_W_L": gini_w_l,
            "neurons_clustered_frac": None if clusters is None else clusters.clustered.double().mean().item(),
            "key_frequencies_neurons": None if clusters is None else clusters.key_frequencies(),
        }


def gini(values: torch.Tensor) -> float:
    """Gini coefficient (Hurley & Rickard) of non-negative values: 0 when all are equal, (n−1)/n when one holds
    everything."""
    x = values.detach().flatten().double().sort().values
    n, total = len(x), x.sum()
    if total <= 0:
        return 0.0
    ranks = torch.arange(1, n + 1, dtype=torch.float64)
    return ((2 * ranks - n - 1) * x).sum().item() / (n * total.item())
