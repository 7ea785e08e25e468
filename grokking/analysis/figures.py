"""Figures of the analysis: the embedding spectrum, the progress measures, the frequency ablation."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator, PercentFormatter, ScalarFormatter  # noqa: E402

from grokking.analysis.fourier import Spectrum  # noqa: E402
from grokking.plot import Curves, mark_phases, save_figure, style_axes  # noqa: E402

KEY_COLOR, OTHER_COLOR = "tab:red", "tab:gray"


MAX_LISTED = 10  # key frequencies named in a figure; the json lists them all


def listed(frequencies: list[int]) -> str:
    """'18, 14, 12' or, past MAX_LISTED, the first ones and how many there are in all."""
    shown = ", ".join(map(str, frequencies[:MAX_LISTED]))
    return shown + (f", … ({len(frequencies)} in all)" if len(frequencies) > MAX_LISTED else "")


def spectrum_figure(spectrum: Spectrum, share: float, title: str, path: Path) -> Path:
    """Bars of each frequency's share of the embedding's non-constant energy; key frequencies in red,
    the stronger the darker."""
    energy = spectrum.energy / spectrum.energy.sum().clamp_min(1e-30)
    key = spectrum.key_frequencies(share)
    frequencies = range(1, len(energy) + 1)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    strongest = energy.max().clamp_min(1e-30)
    colors = [  # key bars shaded by their energy, so that the strong ones stand out among many keys
        matplotlib.colors.to_rgba(KEY_COLOR, 0.3 + 0.7 * (energy[f - 1] / strongest).item())
        if f in key
        else OTHER_COLOR
        for f in frequencies
    ]
    ax.bar(frequencies, energy.tolist(), color=colors)
    ax.axhline(1 / len(energy), color="gray", linestyle="--", linewidth=1, label="flat spectrum (no structure)")
    ax.legend(loc="upper left", frameon=False, fontsize=8)
    for f in key:
        ax.annotate(
            str(f), (f, energy[f - 1].item()), xytext=(0, 2), textcoords="offset points", ha="center", fontsize=8
        )
    info = spectrum.to_json(share)
    lines = [
        f"key frequencies (≥ {share:.0%} of the energy): {listed(key)}",
        f"they carry {info['key_energy_share']:.1%}; "
        f"constant component: {info['constant_share_of_all']:.1%} of all energy",
    ]
    if spectrum.outside_norm is not None:
        lines.append(f"embedding of 0 (outside the basis): norm {spectrum.outside_norm:.3g}")
    ax.text(0.99, 0.97, "\n".join(lines), transform=ax.transAxes, ha="right", va="top", fontsize=8,
            bbox={"facecolor": "white", "edgecolor": "lightgray", "alpha": 0.9})  # fmt: skip
    ax.set_ylim(0, 1.3 * energy.max().item())  # room for the text box
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlabel(f"frequency k  (cos and sin of 2πk·i/{spectrum.basis.m})")
    ax.set_ylabel("share of non-constant energy")
    ax.set_xlim(0.3, len(energy) + 0.7)
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_title(f"{title}\nbasis: {spectrum.basis.name}", fontsize=10)
    return save_figure(fig, path)


LOSS_FLOOR = 1e-8  # losses below it (a loss of exactly 0 among them) are drawn on it: a log axis has no 0


def _floored(values: list[float | None]) -> list[float]:
    return [math.nan if v is None else max(v, LOSS_FLOOR) for v in values]


def progress_figure(curves: Curves, rows: list[dict[str, Any]], title: str, path: Path) -> Path:
    """Accuracy from metrics.jsonl above the progress measures of each checkpoint, on one log-step axis: Nanda
    et al.'s restricted and excluded loss beside train and test loss (their Fig. 7), the project's variants of
    those losses, the Fourier sparsity measures, and the weight norm."""
    measured = [r for r in rows if r["step"] > 0]
    steps = [r["step"] for r in measured]
    fig, axes = plt.subplots(5, 1, figsize=(9, 14), sharex=True, height_ratios=[1.1, 1.5, 1.2, 1, 0.9])
    accuracy, losses, variants, sparsity, norm = axes
    for key, color, text in (("train_acc", "tab:blue", "train"), ("val_acc", "tab:red", "validation")):
        accuracy.plot(*curves.series(key), color=color, linewidth=1.6, label=text)
    accuracy.axhline(
        1 / curves.config.p, color="gray", linestyle="--", linewidth=1, label=f"chance (1/{curves.config.p})"
    )
    drawn: dict[Any, list[float]] = {losses: [], variants: []}  # what each loss panel shows, for its range
    for ax in (losses, variants):
        for key, color, text in (("train_loss", "tab:blue", "train loss"), ("val_loss", "tab:red", "test loss")):
            x, y = curves.series(key)
            ax.plot(x, _floored(y), color=color, linewidth=1.1, alpha=0.6, label=text)
            drawn[ax] += _floored(y)
    for ax, key, color, style, text in (
        (losses, "restricted_loss", "tab:green", "-", "restricted loss (Nanda: key cos/sin w(x+y) by class; all rows)"),
        (losses, "excluded_loss", "tab:purple", "--", "excluded loss (Nanda: those directions removed; train rows)"),
        (variants, "restricted_loss_variant", "tab:olive", "-", "restricted loss variant (cos/sin w(x+y−c); all rows)"),
        (variants, "excluded_loss_variant", "tab:pink", "--", "excluded loss variant (w(x+y−c) removed; train rows)"),
    ):  # fmt: skip
        values = _floored([r.get(key) for r in measured])
        ax.plot(steps, values, color=color, linestyle=style, marker=".", linewidth=1.6, label=text)
        drawn[ax] += values
    finite = {ax: [v for v in values if math.isfinite(v)] for ax, values in drawn.items()}
    for ax in (losses, variants):
        if finite[ax] and min(finite[ax]) <= LOSS_FLOOR:
            ax.axhline(LOSS_FLOOR, color="gray", linestyle=":", linewidth=0.8,
                       label=f"floor {LOSS_FLOOR:.0e}: losses below it (or exactly 0) drawn on it")  # fmt: skip
    for key, color, style, text in (
        ("gini_W_E", "black", "-", "Gini of W_E's Fourier norms (Nanda)"),
        ("gini_W_L", "tab:orange", "-", "Gini of W_L = W_U·W_out's Fourier norms (Nanda)"),
        ("fourier_gini_variant", "tab:gray", ":", "embedding Gini variant (the same definition as W_E's)"),
        ("neurons_clustered_frac", "tab:cyan", "--", "share of neurons in a frequency cluster (≥ 85 %)"),
    ):
        values = [r.get(key) for r in measured]
        if any(v is not None for v in values):
            sparsity.plot(steps, [math.nan if v is None else v for v in values], color=color, linestyle=style,
                          marker=".", label=text)  # fmt: skip
    norm.plot(steps, [r["weight_norm"] for r in measured], color="tab:brown", marker=".")
    for ax, name, ylabel in (
        (accuracy, "accuracy", "accuracy"),
        (losses, "loss", "cross-entropy\n(Nanda et al. Fig. 7)"),
        (variants, "loss", "run's loss\n(project's variants)"),
        (sparsity, "gini", "Fourier sparsity"),
        (norm, "norm", "total weight norm"),
    ):
        style_axes(ax, name, ylabel)
        mark_phases(ax, curves)
        if ax is not norm:
            ax.set_xlabel("")
    for ax in (losses, variants):
        if finite[ax]:  # every loss drawn stays inside the axis
            ax.set_ylim(min(finite[ax]) / 3, max(finite[ax]) * 3)
    for ax in (sparsity, norm):
        ax.set_yscale("linear")
        ax.yaxis.set_major_locator(MaxNLocator(nbins=5))
        ax.yaxis.set_major_formatter(ScalarFormatter(useOffset=False))
    sparsity.set_ylim(0, 1)
    accuracy.legend(loc="center left", frameon=False, fontsize=8)
    for ax, where in ((losses, "lower left"), (variants, "lower left"), (sparsity, "upper left")):
        ax.legend(loc=where, frameon=True, framealpha=0.85, edgecolor="none", fontsize=7)
    accuracy.set_title(title, fontsize=10)
    return save_figure(fig, path)


def ablation_figure(ablation: dict[str, Any], title: str, path: Path) -> Path:
    """Validation accuracy with no ablation, without the key frequencies, and without random ones."""
    labels = ["no ablation", wrapped(f"without the {ablation['k']} strongest: {listed(ablation['key_removed'])}")]
    values = [ablation["baseline_val_acc"], ablation["key_removed_val_acc"]]
    colors = ["tab:blue", KEY_COLOR]
    for number, draw in enumerate(ablation["random_draws"], start=1):
        labels.append(
            wrapped(f"without {len(draw['frequencies'])} others, draw {number}: {listed(draw['frequencies'])}")
        )
        values.append(draw["val_acc"])
        colors.append(OTHER_COLOR)
    fig, ax = plt.subplots(figsize=(10, 1.6 + 0.6 * len(values)))
    bars = ax.barh(range(len(values)), values, color=colors)
    ax.bar_label(bars, labels=[f"{v:.1%}" for v in values], padding=3, fontsize=8)
    ax.set_yticks(range(len(values)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.1)
    ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlabel("validation accuracy")
    ax.spines[["top", "right"]].set_visible(False)
    mean = ablation["random_mean_drop"]
    drops = f"accuracy lost: {ablation['key_drop']:.1%} without the strongest"
    if mean is not None:
        drops += f", {mean:.1%} without others (mean of {len(ablation['random_draws'])} draws)"
    ax.set_title(
        wrapped(f"{title}\nremoving {ablation['k']} frequencies from the embeddings\n{drops}", 90), fontsize=10
    )
    return save_figure(fig, path)


def wrapped(text: str, width: int = 60) -> str:
    """Long labels and titles on several lines, so that nothing is clipped; the line breaks a text
    already has are kept."""
    return "\n".join(textwrap.fill(line, width) for line in text.splitlines())
