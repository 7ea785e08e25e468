"""Figures across many runs, for `grokking reproduce`: the best validation accuracy against the training
fraction (Power et al. Fig. 2), validation accuracy against sharpness (their sharpness figure), and the
operation table a run learns from (Fig. 1, right). Each takes plain records (a sweep.json's points), not
run dirs, so that a figure can be redrawn from committed results alone."""

from __future__ import annotations

import statistics
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.ticker import PercentFormatter

from grokking.config import RunConfig
from grokking.operations import get_operation
from grokking.plot import _frame, plt, save_figure
from grokking.tasks import load_task


def _fractions(points: list[dict[str, Any]]) -> list[float]:
    return sorted({p["values"]["train_frac"] for p in points})


def best_accuracy_figure(series: Sequence[tuple[str, list[dict[str, Any]]]], title: str, path: Path) -> Path:
    """One line a series: the mean over seeds of the best validation accuracy within the budget against the
    training fraction, the band from the lowest to the highest seed, each seed a dot. A point whose runs
    have no evaluation yet is left out; `title` says what was run."""
    fig, ax = plt.subplots(figsize=(8.5, 5.2))
    colors = plt.get_cmap("tab10").colors + plt.get_cmap("Dark2").colors
    for number, (label, points) in enumerate(series):
        color = colors[number % len(colors)]
        xs, means, lows, highs = [], [], [], []
        for frac in _fractions(points):
            best = [p["best_val_acc"] for p in points if p["values"]["train_frac"] == frac]
            best = [b for b in best if b is not None]
            if not best:
                continue
            ax.scatter([frac] * len(best), best, s=10, color=color, alpha=0.45, linewidths=0, zorder=3)
            xs.append(frac)
            means.append(statistics.fmean(best))
            lows.append(min(best))
            highs.append(max(best))
        seeds = len({p["values"].get("seed") for p in points})
        ax.plot(
            xs,
            means,
            "-o",
            color=color,
            markersize=4,
            linewidth=1.6,
            label=f"{label} ({seeds} seed{'s' * (seeds > 1)})",
        )
        ax.fill_between(xs, lows, highs, color=color, alpha=0.12, linewidth=0)
    ax.set_ylim(-0.02, 1.02)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    _frame(ax, "training data fraction", "best validation accuracy within the budget")
    ax.set_title(textwrap.fill(title, 95), fontsize=10)
    ax.legend(fontsize=7.5, frameon=False, loc="best", ncol=2 if len(series) > 6 else 1)
    return save_figure(fig, path)


def sharpness_figure(rows: list[dict[str, Any]], title: str, path: Path) -> Path:
    """Each run's final validation accuracy against the sharpness of its final weights, coloured by its
    series, with the Spearman rank correlation over all runs in the title."""
    fig, ax = plt.subplots(figsize=(7.5, 5))
    colors = plt.get_cmap("tab10").colors
    for number, label in enumerate(dict.fromkeys(r["series"] for r in rows)):
        mine = [r for r in rows if r["series"] == label]
        ax.scatter([r["sharpness"] for r in mine], [r["val_acc"] for r in mine], s=22, alpha=0.8,
                   color=colors[number % len(colors)], label=label, linewidths=0)  # fmt: skip
    positive = [r["sharpness"] for r in rows if r["sharpness"] > 0]
    decades_apart = bool(positive) and max(positive) > 100 * min(positive)
    if decades_apart and len(positive) < len(rows):  # some are 0: linear near 0, logarithmic beyond
        ax.set_xscale("symlog", linthresh=min(positive))
    elif decades_apart:
        ax.set_xscale("log")
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    _frame(ax, "sharpness φ of the final weights (Keskar's ε-sharpness)", "final validation accuracy")
    rho = spearman([r["sharpness"] for r in rows], [r["val_acc"] for r in rows])
    ax.set_title(textwrap.fill(f"{title} · Spearman ρ = {rho:.2f} over {len(rows)} runs", 90), fontsize=10)
    ax.legend(fontsize=7.5, frameon=False)
    return save_figure(fig, path)


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Spearman's rank correlation (ties get their mean rank); nan for fewer than 3 runs or a constant."""
    if len(xs) < 3:
        return float("nan")
    ranks = [_ranks(np.asarray(v, dtype=float)) for v in (xs, ys)]
    if min(r.std() for r in ranks) == 0:
        return float("nan")
    return float(np.corrcoef(*ranks)[0, 1])


def _ranks(values: np.ndarray) -> np.ndarray:
    order = values.argsort(kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values))
    for value in np.unique(values):  # ties share their mean rank
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    return ranks


HELD_OUT, NO_EQUATION = -1, -2


def table_cells(config: RunConfig) -> np.ndarray:
    """The operation's table, x down and y across: each training equation's answer, `HELD_OUT` where the
    equation is in the validation split, `NO_EQUATION` where the table has none (y = 0 for division)."""
    data = load_task(config)
    layout, rows = data.layout, data.dataset.inputs
    size = get_operation(config.operation).n_elements(config.p)
    cells = np.full((size, size), NO_EQUATION)
    cells[rows[:, layout.x].numpy(), rows[:, layout.y].numpy()] = HELD_OUT
    train = data.train_indices
    cells[rows[train, layout.x].numpy(), rows[train, layout.y].numpy()] = data.dataset.targets[train].numpy()
    return cells


def table_figure(config: RunConfig, title: str, path: Path) -> Path:
    """The table of `table_cells`: the answers of the training equations shown, the validation equations
    blank (what the network must fill in), as in Power et al. Fig. 1 (right)."""
    cells = table_cells(config)
    n_train, n_rows = int((cells >= 0).sum()), int((cells > NO_EQUATION).sum())
    fig, ax = plt.subplots(figsize=(7, 7))
    ax.imshow(np.ma.masked_less(cells, 0), cmap="viridis", interpolation="nearest")  # held out: left white
    if len(cells) <= 24:
        for (x, y), c in np.ndenumerate(cells):
            if c > NO_EQUATION:
                ax.text(y, x, "?" if c == HELD_OUT else str(c), ha="center", va="center", fontsize=7,
                        color="black" if c == HELD_OUT else "white")  # fmt: skip
    ax.set_xlabel("y")
    ax.set_ylabel("x")
    task = get_operation(config.operation).describe(config.p)
    ax.set_title(textwrap.fill(f"{title} · {task}: {n_train} of {n_rows} equations ({n_train / n_rows:.0%}) for "
                               "training, the rest (?) held out", 70), fontsize=10)  # fmt: skip
    return save_figure(fig, path)
