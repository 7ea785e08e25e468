"""Accuracy and loss figures from one or more run dirs (works on runs still training)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.ticker import PercentFormatter  # noqa: E402

from grokking.config import GrokkingError, RunConfig  # noqa: E402
from grokking.rundir import RunDir, grokking_steps  # noqa: E402
from grokking.tasks import get_operation  # noqa: E402


@dataclass(frozen=True)
class Curves:
    label: str
    config: RunConfig
    records: list[dict[str, Any]]

    def series(self, key: str) -> tuple[list[int], list[float]]:
        points = [(r["step"], r[key]) for r in self.records if r["step"] > 0 and key in r]
        return [s for s, _ in points], [v for _, v in points]


def load_curves(run: RunDir) -> Curves:
    config = run.read_config()
    records = run.require_metrics()
    label = f"{get_operation(config.operation).describe(config.p)} · {config.preset} · seed {config.seed}"
    return Curves(label, config, records)


def _style(ax: Axes, name: str, ylabel: str) -> None:
    """Log-step x axis; accuracy in percent from 0 to 1, loss on a log axis."""
    if name == "accuracy":
        ax.set_ylim(-0.02, 1.02)
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    else:
        ax.set_yscale("log")
    ax.set_xscale("log")
    ax.set_xlabel("optimization step")
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)


def _mark_phases(ax: Axes, curves: Curves, color: str | None = None) -> None:
    steps = grokking_steps(curves.records)
    for key, text, default in (
        ("memorization_step", "train ≥ 99%", "tab:blue"),
        ("generalization_step", "val ≥ 99%", "tab:red"),
    ):
        if steps[key] is not None:
            ax.axvline(steps[key], color=color or default, linestyle=":", linewidth=1.2, alpha=0.8)
            ax.annotate(
                f"{text} · step {steps[key]:,}",
                xy=(steps[key], 0.5),
                xycoords=("data", "axes fraction"),
                xytext=(-4, 0),
                textcoords="offset points",
                rotation=90,
                ha="right",
                va="center",
                fontsize=8,
                color=color or default,
                bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1},
            )


def _single(curves: Curves, out: Path) -> list[Path]:
    paths = []
    for name, keys, ylabel in (
        ("accuracy", ("train_acc", "val_acc"), "accuracy"),
        ("loss", ("train_loss", "val_loss"), "cross-entropy loss"),
    ):
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for key, color, text in zip(keys, ("tab:blue", "tab:red"), ("train", "validation")):
            ax.plot(*curves.series(key), color=color, linewidth=1.6, label=text)
        if name == "accuracy":
            ax.axhline(1 / curves.config.p, color="gray", linestyle="--", linewidth=1, label=f"chance (1/{curves.config.p})")
        _mark_phases(ax, curves)
        _style(ax, name, ylabel)
        ax.set_title(curves.label)
        ax.legend(loc="center left", frameon=False)
        paths.append(_save(fig, out / f"{name}.png"))
    return paths


def _overlay(all_curves: list[Curves], out: Path) -> list[Path]:
    paths = []
    colors = plt.get_cmap("tab10").colors
    for name, (train_key, val_key), ylabel in (
        ("accuracy", ("train_acc", "val_acc"), "accuracy"),
        ("loss", ("train_loss", "val_loss"), "cross-entropy loss"),
    ):
        fig, ax = plt.subplots(figsize=(9, 5))
        for i, curves in enumerate(all_curves):
            color = colors[i % len(colors)]
            ax.plot(*curves.series(train_key), color=color, linestyle="--", linewidth=1, alpha=0.6)
            ax.plot(*curves.series(val_key), color=color, linewidth=1.6, label=curves.label)
        _style(ax, name, ylabel)
        ax.set_title(f"{ylabel}: validation (solid) and train (dashed)")
        ax.legend(fontsize=8, frameon=False)
        paths.append(_save(fig, out / f"{name}.png"))
    return paths


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path


def plot_runs(run_dirs: list[Path], out: Path | None = None) -> list[Path]:
    """Draw accuracy.png and loss.png: for one run into `<run>/plots` (or `out`), for several into `out`."""
    if not run_dirs:
        raise GrokkingError("give at least one --run-dir")
    all_curves = [load_curves(RunDir(path)) for path in run_dirs]
    if len(all_curves) == 1:
        return _single(all_curves[0], out or RunDir(run_dirs[0]).plots_dir)
    if out is None:
        raise GrokkingError("with several --run-dir, also pass --out DIR for the overlay figures")
    return _overlay(all_curves, out)
