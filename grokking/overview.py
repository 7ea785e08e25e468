"""`grokking runs`: one row per run dir under a folder (sweeps included), read from the run dirs alone.

A broken run dir gives a row that says what is wrong (`status` broken, `problem` one sentence), never
an exception; what cannot be known of it is None.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from grokking.config import RunConfig, preset_overrides
from grokking.errors import GrokkingError, first_line
from grokking.operations import get_operation
from grokking.rundir import RunDir, is_step_count, summarize

COLUMNS = ("run", "task", "preset", "steps", "mem. at", "gen. at", "val acc", "best val", "status", "problem")
CHANGES_WIDTH = 40  # characters of a preset's changes shown in the table


def find_run_dirs(root: Path) -> list[Path]:
    """Every folder under `root` holding a config.json, sorted; a run dir's own folders (checkpoints/,
    plots/, ...) are not searched, symbolic links are not followed, unreadable folders are skipped."""
    found = []
    for folder, subfolders, files in os.walk(root):  # os.walk skips what it cannot list
        if "config.json" in files:
            found.append(Path(folder))
            subfolders.clear()
    return sorted(found)


def run_row(path: Path, root: Path) -> dict[str, Any]:
    """The row of the run dir `path` (named relative to `root`); never raises for a broken run dir."""
    run = RunDir(path)
    problems: list[str] = []
    config, changes = None, None
    try:
        config = run.read_config()
        changes = preset_overrides(config)
    except (GrokkingError, OSError) as e:
        problems.append(_sentence(e, run, "config.json"))
    records = _read_metrics(run, problems)
    summary, summary_readable = None, True
    try:
        summary = run.read_summary()
    except GrokkingError as e:
        problems.append(_sentence(e, run, "summary.json"))
        summary_readable = False
    if summary is None and summary_readable and run.summary_path.exists():
        problems.append("summary.json is unreadable or incomplete")
    so_far = summarize(records or [])
    steps_done = max(so_far["last_step"], summary["steps_done"] if summary else 0)
    state = _status(run, config, records is not None and summary_readable, summary, steps_done)
    budget = config.steps if config else None
    if state == "new":
        problems.append("no metrics yet")
    best_step = _possible_step(so_far["best_val_step"], budget)  # the best of an impossible step is not shown
    row = {
        "run": str(path.relative_to(root)) if path != root else path.resolve().name,
        "operation": get_operation(config.operation).describe(config.p) if config else None,
        "preset": config.preset if config else None,
        "changes": changes,
        "steps_done": _possible_step(steps_done, budget),
        "budget": budget,
        "memorization_step": _possible_step(so_far["memorization_step"], budget),
        "generalization_step": _possible_step(so_far["generalization_step"], budget),
        "val_acc": _possible_accuracy(so_far["final_val_acc"]),
        "best_val_acc": _possible_accuracy(so_far["best_val_acc"]) if best_step is not None else None,
        "best_val_step": best_step,
        "status": state,
        "problem": "; ".join(problems) or None,
    }
    return row


# A hand-edited or foreign file can hold values no run gives; shown as they are they would pass for
# results ("50/40" steps, an accuracy of NaN or 1e300), so they are missing (None) instead.


def _possible_step(step: int | None, budget: int | None) -> int | None:
    return step if step is not None and is_step_count(step) and (budget is None or step <= budget) else None


def _possible_accuracy(value: float | None) -> float | None:
    return value if isinstance(value, (int, float)) and 0.0 <= value <= 1.0 else None  # NaN fails both


def overview(root: Path) -> list[dict[str, Any]]:
    """The rows of every run dir under `root`."""
    if not root.is_dir():
        raise GrokkingError(f"{root} is not a folder; give the folder that holds your run dirs (default: runs)")
    return [run_row(path, root) for path in find_run_dirs(root)]


def _read_metrics(run: RunDir, problems: list[str]) -> list[dict[str, Any]] | None:
    """The run's valid metrics records (None when metrics.jsonl cannot be read); skipped lines and
    read errors are added to `problems`."""
    with warnings.catch_warnings(record=True) as skipped:
        warnings.simplefilter("always")
        try:
            records = run.read_metrics()
        except GrokkingError as e:
            problems.append(_sentence(e, run, "metrics.jsonl"))
            return None
    if skipped:
        problems.append(f"{len(skipped)} bad metrics line{'s' if len(skipped) > 1 else ''} skipped")
    return records


def _status(
    run: RunDir, config: RunConfig | None, readable: bool, summary: dict[str, Any] | None, steps_done: int
) -> str:
    """running (a live process holds the lock), broken (config, metrics or summary unreadable), grokked or
    diverged (as summary.json says), finished (summary at the budget), interrupted or new."""
    if run.training_process() is not None:
        return "running"
    if config is None or not readable:
        return "broken"
    if summary is not None and summary.get("stopped") in ("grokked", "diverged"):
        return summary["stopped"]
    if summary is not None and summary["steps_done"] >= config.steps:
        return "finished"
    return "interrupted" if steps_done else "new"


def _sentence(error: Exception, run: RunDir, file: str) -> str:
    """An error's first sentence, naming `file` without the run dir's path (the row names the run dir)."""
    text = first_line(error).replace(f"{run.path}{os.sep}", "").split("; ")[0]
    return text if file in text else f"{file}: {text}"


def overview_table_rows(rows: list[dict[str, Any]]) -> list[list[str]]:
    """Each row's cells as text, in the order of COLUMNS."""
    return [_cells(row) for row in rows]


def _cells(row: dict[str, Any]) -> list[str]:
    changes = row["changes"] or ""
    if len(changes) > CHANGES_WIDTH:
        changes = changes[: CHANGES_WIDTH - 1] + "…"
    preset = row["preset"] or ""
    accuracy, best = row["val_acc"], row["best_val_acc"]
    return [
        row["run"],
        row["operation"] or "",
        f"{preset} ({changes})" if changes else preset,
        f"{_count(row['steps_done'])}/{_count(row['budget'])}",
        _count(row["memorization_step"]),
        _count(row["generalization_step"]),
        "—" if accuracy is None else f"{accuracy:.1%}",
        "—" if best is None else f"{best:.1%} at {row['best_val_step']:,}",
        row["status"],
        row["problem"] or "",
    ]


def _count(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"
