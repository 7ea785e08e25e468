"""Figures: accuracy and loss of one or more run dirs (also while training), and a sweep's steps to grok."""

from __future__ import annotations

import io
import math
import os
import re
import statistics
import textwrap
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, PercentFormatter  # noqa: E402

from grokking.config import (  # noqa: E402
    GENERALIZED,
    MEMORIZED,
    PRESETS,
    RESUMABLE_FIELDS,
    RunConfig,
    inert_fields,
    preset_overrides,
)
from grokking.errors import GrokkingError  # noqa: E402
from grokking.operations import get_operation  # noqa: E402
from grokking.rundir import RunDir, atomic_write_bytes, check_targets, grokking_steps  # noqa: E402


@dataclass(frozen=True)
class Curves:
    label: str
    config: RunConfig
    records: list[dict[str, Any]]

    def series(self, key: str, positive: bool = False) -> tuple[list[int], list[float]]:
        """Steps and values of `key` (null where a value was not finite); with `positive`, values that a
        log axis cannot show (exact zeros, from softmax collapse) are gaps too."""
        points = [(r["step"], r.get(key)) for r in self.records if r["step"] > 0 and key in r]
        keep = (lambda v: v is not None and v > 0) if positive else (lambda v: v is not None)
        return [s for s, _ in points], [v if keep(v) else math.nan for _, v in points]

    def has_zero(self, key: str) -> bool:
        return any(r.get(key) == 0 for r in self.records)


def load_curves(run: RunDir) -> Curves:
    config = run.read_config()
    records = run.require_metrics()
    label = f"{get_operation(config.operation).describe(config.p)} · {config.preset} · seed {config.seed}"
    overrides = textwrap.fill(preset_overrides(config), 90)
    return Curves(f"{label}\n{overrides}" if overrides else label, config, records)


def chance_line(ax: Axes, config: RunConfig) -> None:
    """The accuracy of guessing: one over the number of possible answers (p, or 120 for S5)."""
    n = get_operation(config.operation).n_elements(config.p)
    ax.axhline(1 / n, color="gray", linestyle="--", linewidth=1, label=f"chance (1/{n})")


def style_axes(ax: Axes, name: str, ylabel: str) -> None:
    """Log-step x axis; accuracy in percent from 0 to 1, loss on a log axis. An axis whose drawn data
    has no positive value (a run evaluated only at step 0, losses all exactly 0) stays linear: a log
    axis of nothing cannot be drawn."""
    limits = ax.dataLim
    if name == "accuracy":
        ax.set_ylim(-0.02, 1.02)
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    elif math.isfinite(limits.y1) and limits.y1 > 0:
        ax.set_yscale("log")
    if math.isfinite(limits.x1) and limits.x1 > 0:
        ax.set_xscale("log")
    _frame(ax, "optimization step", ylabel)


def _frame(ax: Axes, xlabel: str, ylabel: str) -> None:
    """Axis labels, a light major grid, no top or right spine: the look of every figure here."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)


def mark_phases(ax: Axes, curves: Curves, color: str | None = None) -> None:
    steps = grokking_steps(curves.records)
    for key, text, default in (
        ("memorization_step", f"train ≥ {MEMORIZED:.0%}", "tab:blue"),
        ("generalization_step", f"val ≥ {GENERALIZED:.0%}", "tab:red"),
    ):
        if steps[key] is not None:
            ax.axvline(steps[key], color=color or default, linestyle=":", linewidth=1.2, alpha=0.8)
            # right of the line: past both steps the curves lie at the top or the bottom, never mid-height
            ax.annotate(
                f"{text} · step {steps[key]:,}",
                xy=(steps[key], 0.5),
                xycoords=("data", "axes fraction"),
                xytext=(4, 0),
                textcoords="offset points",
                rotation=90,
                ha="left",
                va="center",
                fontsize=8,
                color=color or default,
                bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1},
            )


KINDS = ("accuracy", "loss")


def draw_run(ax: Axes, run: Curves | RunDir | str | os.PathLike, kind: str = "accuracy") -> Axes:
    """Draw a run's train and validation accuracy (or loss) into `ax`, as `grokking plot` does: log step
    axis, chance line, the memorization and generalization steps marked. For notebooks."""
    if kind not in KINDS:
        raise GrokkingError(f"kind must be one of {', '.join(KINDS)} (got {kind!r})")
    curves = run if isinstance(run, Curves) else load_curves(run if isinstance(run, RunDir) else RunDir(run))
    keys = ("train_acc", "val_acc") if kind == "accuracy" else ("train_loss", "val_loss")
    for key, color, text in zip(keys, ("tab:blue", "tab:red"), ("train", "validation")):
        if kind == "loss" and curves.has_zero(key):
            text += " (gaps: loss exactly 0 in float32)"
        ax.plot(*curves.series(key, positive=kind == "loss"), color=color, linewidth=1.6, label=text)
    if kind == "accuracy":
        chance_line(ax, curves.config)
    mark_phases(ax, curves)
    style_axes(ax, kind, "accuracy" if kind == "accuracy" else _loss_label(curves.config))
    ax.set_title(curves.label)
    ax.legend(loc="center left", frameon=False)
    return ax


def _single(curves: Curves, out: Path) -> list[Path]:
    paths = []
    for kind in KINDS:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        draw_run(ax, curves, kind)
        paths.append(save_figure(fig, out / f"{kind}.png"))
    return paths


def _overlay(all_curves: list[Curves], out: Path) -> list[Path]:
    paths = []
    colors = plt.get_cmap("tab10").colors
    labels = overlay_labels(all_curves)
    task = get_operation(all_curves[0].config.operation).describe(all_curves[0].config.p)
    shared = shared_settings([c.config for c in all_curves])
    for name, (train_key, val_key), ylabel in (
        ("accuracy", ("train_acc", "val_acc"), "accuracy"),
        ("loss", ("train_loss", "val_loss"), _loss_label(all_curves[0].config)),
    ):
        fig, ax = plt.subplots(figsize=(9, 5))
        for i, (curves, label) in enumerate(zip(all_curves, labels)):
            color = colors[i % len(colors)]
            positive = name == "loss"
            ax.plot(*curves.series(train_key, positive), color=color, linestyle="--", linewidth=1, alpha=0.6)
            ax.plot(*curves.series(val_key, positive), color=color, linewidth=1.6, label=label)
            generalized = grokking_steps(curves.records)["generalization_step"]
            if generalized is not None:  # where validation first passed 99 %
                at = next(r for r in curves.records if r["step"] == generalized)
                ax.plot(generalized, at[val_key], "o", color=color, markersize=5, markeredgecolor="white")
        style_axes(ax, name, ylabel)
        marks = f"; dots: val ≥ {GENERALIZED:.0%} first" if name == "accuracy" else ""
        ax.set_title(f"{task} · {name}: validation (solid) and train (dashed){marks}{shared}")
        ax.legend(fontsize=8, frameon=False)
        paths.append(save_figure(fig, out / f"{name}.png"))
    return paths


def shared_settings(configs: list[RunConfig]) -> str:
    """A title's second line for runs overlaid: their preset and where all of them depart from it
    (e.g. "paper_wd · precision=bf16"), or nothing when they do not share a preset."""
    if len({c.preset for c in configs}) > 1 or configs[0].preset not in PRESETS:
        return ""
    first, apart = configs[0], differing_fields(configs)
    departures = preset_overrides(first.replace(**{k: getattr(PRESETS[first.preset], k) for k in apart}))
    return "\n" + textwrap.fill(" · ".join(filter(None, [first.preset, departures])), 100)


def differing_fields(configs: list[RunConfig]) -> list[str]:
    """The config fields whose values tell overlaid runs apart (not those that may change on resume)."""
    dicts = [c.to_dict() for c in configs]
    ignored = RESUMABLE_FIELDS | {"eval_every"} | set.intersection(*(inert_fields(c) for c in configs))
    return [k for k in dicts[0] if k not in ignored and len({repr(d[k]) for d in dicts}) > 1]


def overlay_labels(all_curves: list[Curves]) -> list[str]:
    """Each run's legend entry: the config values that tell it apart from the other runs overlaid
    (fields that may change on resume, such as the step budget, do not count)."""
    configs = [c.config.to_dict() for c in all_curves]
    keys = differing_fields([c.config for c in all_curves])
    if not keys:
        return [c.label for c in all_curves]
    return [", ".join(f"{k}={c[k]}" for k in keys) for c in configs]


def _loss_label(config: RunConfig) -> str:
    return "StableMax loss" if config.loss == "stablemax" else "cross-entropy loss"


def save_figure(fig: plt.Figure, path: Path) -> Path:
    """Write `fig` as a PNG at `path` atomically (a full disk leaves the old figure, not half a new one)."""
    buffer = io.BytesIO()
    try:
        fig.tight_layout()
        fig.savefig(buffer, dpi=150, format="png")
    finally:
        plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def metric_file(key: str) -> str:
    """The figure of a metrics.jsonl key, e.g. `metric_weight_norm-unembed.png` for weight_norm/unembed."""
    return "metric_" + re.sub(r"[^A-Za-z0-9_.]", "-", key) + ".png"


def metric_figure(all_curves: list[Curves], key: str, out: Path) -> Path:
    """Any key of metrics.jsonl against the step, one line a run (a single run also gets its phases)."""
    missing = [c.label.split("\n")[0] for c in all_curves if not any(key in r for r in c.records)]
    if missing:
        known = sorted({k for c in all_curves for r in c.records for k in r} - {"step"})
        raise GrokkingError(f"--metric {key}: not in the metrics of {missing[0]}; its keys are {', '.join(known)}")
    fig, ax = plt.subplots(figsize=(8, 4.5))
    labels = overlay_labels(all_curves) if len(all_curves) > 1 else [all_curves[0].label]
    colors = plt.get_cmap("tab10").colors
    values = []
    for i, (curves, label) in enumerate(zip(all_curves, labels)):
        steps, series = curves.series(key)
        values += [v for v in series if math.isfinite(v)]
        ax.plot(steps, series, color=colors[i % len(colors)], linewidth=1.6, label=label if len(labels) > 1 else key)
    if len(all_curves) == 1:
        mark_phases(ax, all_curves[0])
    if values and min(values) > 0 and max(values) > 100 * min(values):  # spans decades: a log axis shows them
        ax.set_yscale("log")
    if ax.dataLim.x1 > 0:
        ax.set_xscale("log")
    _frame(ax, "optimization step", key)
    ax.set_title(all_curves[0].label if len(all_curves) == 1 else f"{key} of {len(all_curves)} runs")
    ax.legend(fontsize=8, frameon=False)
    return save_figure(fig, out / metric_file(key))


def plot_runs(run_dirs: list[Path], out: Path | None = None, metrics: Sequence[str] = ()) -> list[Path]:
    """Draw accuracy.png and loss.png, and a figure of each key in `metrics`: for one run into
    `<run>/plots` (or `out`), for several into `out`."""
    if not run_dirs:
        raise GrokkingError("give at least one --run-dir")
    all_curves = [load_curves(RunDir(path)) for path in run_dirs]
    if len(all_curves) > 1 and out is None:
        raise GrokkingError("with several --run-dir, also pass --out DIR for the overlay figures")
    out = out or RunDir(run_dirs[0]).plots_dir
    check_targets([*(out / f"{kind}.png" for kind in KINDS), *(out / metric_file(key) for key in metrics)])
    paths = _single(all_curves[0], out) if len(all_curves) == 1 else _overlay(all_curves, out)
    return paths + [metric_figure(all_curves, key, out) for key in dict.fromkeys(metrics)]


def watch_runs(
    run_dirs: list[Path],
    out: Path | None,
    interval: float,
    drew: Callable[[list[Path]], None],
    metrics: Sequence[str] = (),
) -> list[Path]:
    """Redraw the figures of `run_dirs` every `interval` seconds while any of them trains (its lock is
    held by a live process); draw once more after the last one stops, and return those paths."""
    while True:
        training = any(RunDir(path).training_process() is not None for path in run_dirs)
        try:
            paths = plot_runs(run_dirs, out, metrics)
            drew(paths)
        except GrokkingError:
            if not training:  # not waiting for a first evaluation: a real error
                raise
        if not training:
            return paths
        time.sleep(interval)


def _sweep_axis(values: list[Any]) -> tuple[dict[str, float], str]:
    """Plot positions of the swept values and the x scale: numbers as they are, others as categories."""
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return {repr(v): float(i) for i, v in enumerate(values)}, "category"
    spread = min(values) > 0 and max(values) >= 20 * min(values)
    return {repr(v): float(v) for v in values}, "log" if spread else "linear"


def _jitter(x: float, index: int, count: int, scale: str, width: float) -> float:
    """Spread the seeds of one x a little sideways so that equal steps stay visible."""
    offset = (index - (count - 1) / 2) * width
    return x * 10**offset if scale == "log" else x + offset


def _median_steps(steps: list[int | str]) -> float:
    """Median over seeds, a seed that did not generalize counting as infinitely late (nan if that is the median)."""
    median = statistics.median(s if isinstance(s, int) else math.inf for s in steps)
    return median if math.isfinite(median) else math.nan


def sweep_departures(base: dict[str, Any], grid: dict[str, list[Any]]) -> str:
    """Where a sweep's base config departs from its preset, outside the swept keys (e.g.
    `arch=prenorm`), so that a sweep of a variant is not mistaken for one of the preset."""
    config = RunConfig.from_dict(base, "sweep.json")
    if config.preset not in PRESETS:
        return ""
    return preset_overrides(config.replace(**{key: getattr(PRESETS[config.preset], key) for key in grid}))


def plot_sweep(summary: dict[str, Any], path: Path, note: str = "") -> Path:
    """Steps to validation (and train) accuracy ≥ 99% against the swept value, after Power et al. Fig. 1 (centre).

    x is the first swept key other than seed; each value of the other keys gets its own line. Each seed
    is a dot, the line is the median over seeds, memorization is drawn lighter, and a seed that did not
    generalize within its budget is an open triangle at its last step. Points without a result yet are left out.
    `note` replaces the title's description of the runs (a recipe states its scale there).
    """
    grid, points = summary["grid"], summary["points"]
    keys = [k for k in grid if k != "seed"] or ["seed"]
    x_key, line_keys = keys[0], keys[1:]
    positions, scale = _sweep_axis(grid[x_key])
    low, high = min(positions.values()), max(positions.values())
    width = 0.012 * ((math.log10(high / low) if scale == "log" else high - low) or 1.0)
    lines: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for point in points:
        lines.setdefault(tuple(repr(point["values"][k]) for k in line_keys), []).append(point)
    colors = ["tab:red"] if len(lines) == 1 else plt.get_cmap("tab10").colors
    fig, ax = plt.subplots(figsize=(8, 5))
    handles: list[Line2D] = []
    budgets = sorted({p["budget"] for p in points})
    missed = False
    for number, (line, members) in enumerate(lines.items()):
        color = colors[number % len(colors)]
        memory_color = "tab:blue" if len(lines) == 1 else color
        for key, shade, alpha, size in (
            ("memorization_step", memory_color, 0.35, 18),
            ("generalization_step", color, 0.9, 30),
        ):
            xs, medians = [], []
            for value in grid[x_key]:
                finished = [p for p in members if repr(p["values"][x_key]) == repr(value) and p[key] is not None]
                for index, p in enumerate(finished):
                    x = _jitter(positions[repr(value)], index, len(finished), scale, width)
                    if isinstance(p[key], int):
                        ax.scatter(x, p[key], s=size, color=shade, alpha=alpha, zorder=3, linewidths=0)
                    else:
                        missed = True
                        ax.scatter(x, p["steps_done"], s=50, marker="^", facecolors="none", edgecolors=shade, zorder=3)
                        best = p.get("best_val_acc")
                        if key == "generalization_step" and best is not None:  # how far it got; seeds stacked
                            ax.annotate(f"{best:.0%}", (x, p["steps_done"]), xytext=(0, 7 + 9 * index),
                                        textcoords="offset points", ha="center", fontsize=7, color=shade)  # fmt: skip
                if finished:
                    xs.append(positions[repr(value)])
                    medians.append(_median_steps([p[key] for p in finished]))
            style = "-" if key == "generalization_step" else "--"
            ax.plot(xs, medians, style, color=shade, alpha=alpha, linewidth=1.6 if style == "-" else 1.2)
        if line_keys:
            text = ", ".join(f"{k}={v}" for k, v in zip(line_keys, line))
            handles.append(Line2D([], [], color=color, marker="o", label=text))
    ink = "tab:red" if len(lines) == 1 else "dimgray"
    handles += [
        Line2D([], [], color=ink, marker="o", linewidth=1.6, label="val acc ≥ 99% (generalized): seeds, median"),
        Line2D([], [], color="tab:blue" if len(lines) == 1 else "dimgray", marker="o", linestyle="--", alpha=0.45,
               label="train acc ≥ 99% (memorized): seeds, median"),
    ]  # fmt: skip
    if missed:
        budget = f"{budgets[0]:,} steps" if len(budgets) == 1 else "its budget"
        handles.append(
            Line2D(
                [],
                [],
                color=ink,
                marker="^",
                markerfacecolor="none",
                linestyle="none",
                label=f"not within {budget} (its best val acc above)",
            )
        )
    if len(budgets) == 1:
        ax.axhline(budgets[0], color="gray", linestyle=":", linewidth=1)
    if scale == "log":
        ax.set_xscale("log")
    elif scale == "category":
        ax.set_xticks(list(positions.values()), [str(v) for v in grid[x_key]])
    ax.set_yscale("log")
    if missed:  # room above the budget for the seeds' best accuracies
        ax.set_ylim(top=max(budgets) * 2.5)
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:,.0f}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    _frame(ax, x_key, "optimization steps")
    base, seeds = summary["base"], len(grid.get("seed", [None]))
    task = "" if {"operation", "p"} & set(grid) else f"{get_operation(base['operation']).describe(base['p'])} · "
    settings = " · ".join(filter(None, [f"preset {base['preset']}", sweep_departures(base, grid)]))
    described = note or f"{task}{settings} · {seeds} seed{'s' * (seeds > 1)} a point"
    ax.set_title("steps until accuracy ≥ 99%\n" + textwrap.fill(described, 100), fontsize=11 if not note else 9)
    ax.legend(handles=handles, fontsize=8, frameon=False, loc="best")
    return save_figure(fig, path)
