"""Ablation in Fourier space: project frequencies out of the embeddings and measure validation accuracy."""

from __future__ import annotations

import copy
import math
import random
from typing import Any

import torch
from torch import nn

from grokking.analysis.fourier import FourierBasis, Spectrum
from grokking.config import RunConfig
from grokking.errors import GrokkingError
from grokking.evaluate import split_metrics
from grokking.tasks import TaskData


def without_frequencies(model: nn.Module, basis: FourierBasis, frequencies: list[int]) -> nn.Module:
    """A copy of `model` whose element embeddings have no component along the given frequencies."""
    ablated = copy.deepcopy(model)
    rows = basis.rows_of(frequencies)
    with torch.no_grad():
        weight = ablated.token_embedding.weight
        group = weight[basis.residues]
        weight[basis.residues] = group - rows.T @ (rows @ group)
    return ablated


def distinct_samples(population: list[int], k: int, draws: int, seed: int) -> list[list[int]]:
    """Up to `draws` different sorted k-subsets of `population`, drawn with `seed`."""
    rng, samples = random.Random(seed), []
    while len(samples) < min(draws, math.comb(len(population), k)):
        sample = sorted(rng.sample(population, k))
        if sample not in samples:
            samples.append(sample)
    return samples


def frequency_ablation(
    model: nn.Module,
    data: TaskData,
    config: RunConfig,
    spectrum: Spectrum,
    share: float,
    k: int | None,
    draws: int,
    seed: int,
) -> dict[str, Any]:
    """Validation accuracy without the k strongest frequencies, against k others drawn at random from
    the rest (`draws` times). They are drawn from every frequency but the k removed, not only from the
    non-key ones, so the control stays a random choice even when few frequencies are not key (with 34
    key frequencies of 48, the 14 others would be one set, the same at every draw).

    k defaults to the number of key frequencies (those carrying `share` of the energy).
    """
    basis, ranked = spectrum.basis, spectrum.ranked()
    n_key = len(spectrum.key_frequencies(share))
    k = n_key if k is None else k
    if not 1 <= k <= basis.n_frequencies:
        raise GrokkingError(f"--top-k must be between 1 and {basis.n_frequencies} frequencies (got {k})")
    if draws < 1:
        raise GrokkingError(f"--draws must be at least 1 (got {draws})")
    others = ranked[k:]
    k_random = min(k, len(others))

    def accuracy(frequencies: list[int]) -> float:
        ablated = without_frequencies(model, basis, frequencies) if frequencies else model
        return split_metrics(ablated, data.val_inputs, data.val_targets, config)["acc"]

    baseline = accuracy([])
    samples = distinct_samples(others, k_random, draws, seed) if k_random else []
    random_rows = [
        {"frequencies": s, "val_acc": a, "drop": baseline - a} for s, a in zip(samples, map(accuracy, samples))
    ]
    removed = ranked[:k]
    key_acc = accuracy(removed)
    return {
        "k": k,
        "baseline_val_acc": baseline,
        "key_removed": removed,
        "key_removed_val_acc": key_acc,
        "key_drop": baseline - key_acc,
        "random_k": k_random,
        "random_seed": seed,
        "random_draws": random_rows,
        "random_mean_drop": sum(r["drop"] for r in random_rows) / len(random_rows) if random_rows else None,
    }
