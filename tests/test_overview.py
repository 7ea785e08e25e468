"""`grokking runs`: one row per run dir, statuses, sweeps found recursively, broken run dirs as rows."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from grokking import main
from grokking.errors import GrokkingError
from grokking.overview import COLUMNS, find_run_dirs, overview, overview_table_rows, run_row
from grokking.rundir import RunDir
from grokking.train import train

from .conftest import TINY

EXAMPLES = Path(__file__).parent.parent / "runs" / "examples"
KEYS = {
    "best_val_acc",
    "best_val_step",
    "run",
    "operation",
    "preset",
    "changes",
    "steps_done",
    "budget",
    "memorization_step",
    "generalization_step",
    "val_acc",
    "status",
    "problem",
}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("overview") / "finished"
    train(TINY.replace(steps=8), path)
    return path


def copy(run: Path, to: Path) -> Path:
    return Path(shutil.copytree(run, to))


def edit_summary(run: Path, **changes) -> None:
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, **changes}))


def test_every_status_is_told_and_sweeps_are_found_recursively(finished, tmp_path):
    root = tmp_path / "runs"
    runs = {name: copy(finished, root / name) for name in ("done", "grokked", "diverged", "stopped", "running", "new")}
    edit_summary(runs["grokked"], stopped="grokked")
    edit_summary(runs["diverged"], stopped="diverged")
    (runs["stopped"] / "summary.json").unlink()
    (runs["running"] / ".lock").write_text(str(os.getppid()))  # a live process that is not this one
    (runs["new"] / "summary.json").unlink()
    (runs["new"] / "metrics.jsonl").unlink()
    sweep = copy(finished, root / "topic" / "sweep" / "seed=0")
    (sweep.parent / "sweep.json").write_text("{}")
    rows = {row["run"]: row for row in overview(root)}
    assert {name: row["status"] for name, row in rows.items()} == {
        "diverged": "diverged",
        "done": "finished",
        "grokked": "grokked",
        "new": "new",
        "running": "running",
        "stopped": "interrupted",
        "topic/sweep/seed=0": "finished",
    }
    records = RunDir(finished).read_metrics()
    done = rows["done"]
    assert set(done) == KEYS
    assert (done["steps_done"], done["budget"], done["val_acc"]) == (8, 8, records[-1]["val_acc"])
    best = max(records, key=lambda r: r["val_acc"])
    assert (done["best_val_acc"], done["best_val_step"]) == (best["val_acc"], best["step"])
    assert done["operation"] == "x/y (= x·y⁻¹) mod 11" and done["preset"] == "tiny" and done["changes"] == ""
    assert done["problem"] is None and rows["running"]["problem"] is None
    assert rows["new"]["steps_done"] == 0 and rows["new"]["problem"] == "no metrics yet"
    json.dumps(list(rows.values()), allow_nan=False)


def test_a_broken_run_dir_is_a_row_saying_what_is_wrong(finished, tmp_path):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    noisy = copy(finished, tmp_path / "noisy")
    with (noisy / "metrics.jsonl").open("a") as f:
        f.write("{torn\n")
    nan = copy(finished, tmp_path / "nan")
    with (nan / "metrics.jsonl").open("a") as f:
        f.write('{"step": 9, "val_acc": NaN}\n')  # Python's json reads NaN; strict JSON cannot write it
    (nan / ".lock").write_text("9" * 30)  # not a pid
    (nan / "summary.json").write_text("[]")

    broken = run_row(tmp_path / "broken", tmp_path)
    assert set(broken) == KEYS and broken["status"] == "broken"
    assert broken["problem"].startswith("config.json is not valid JSON") and str(tmp_path) not in broken["problem"]
    assert broken["operation"] is broken["preset"] is broken["budget"] is broken["changes"] is None
    noisy_row = run_row(noisy, tmp_path)
    assert noisy_row["status"] == "finished" and noisy_row["problem"] == "1 bad metrics line skipped"
    nan_row = run_row(nan, tmp_path)
    # step 9 of an 8-step budget and an accuracy of NaN are no run's values: missing, not shown
    assert (nan_row["steps_done"], nan_row["val_acc"], nan_row["status"]) == (None, None, "interrupted")
    assert nan_row["problem"] == "summary.json is unreadable or incomplete"
    json.dumps([broken, noisy_row, nan_row], allow_nan=False)
    assert overview_table_rows([broken])[0][-2:] == ["broken", broken["problem"]]


def test_run_dirs_are_searched_but_not_their_folders_nor_links(finished, tmp_path):
    root = tmp_path / "runs"
    run = copy(finished, root / "a")
    (run / "checkpoints" / "config.json").write_text("{}")
    (root / "link").symlink_to(run, target_is_directory=True)
    assert find_run_dirs(root) == [run]
    assert [row["run"] for row in overview(run)] == ["a"]  # the root itself may be a run dir
    for missing in (tmp_path / "absent", run / "config.json"):
        with pytest.raises(GrokkingError, match="is not a folder"):
            overview(missing)


def test_table_cells():
    row = {
        "run": "a",
        "operation": "x+y mod 97",
        "preset": "paper_wd",
        "changes": "norm_position=pre, bias=True, positions=learned, activation=gelu",
        "steps_done": 12000,
        "budget": 100000,
        "memorization_step": 1500,
        "generalization_step": None,
        "val_acc": 0.4567,
        "best_val_acc": 0.95,
        "best_val_step": 11000,
        "status": "interrupted",
        "problem": None,
    }
    [cells] = overview_table_rows([row])
    assert len(cells) == len(COLUMNS)
    assert cells[2] == "paper_wd (norm_position=pre, bias=True, positions…)"
    assert cells[3:] == ["12,000/100,000", "1,500", "—", "45.7%", "95.0% at 11,000", "interrupted", ""]


def test_the_command_prints_a_table_and_json(finished, tmp_path):
    root = tmp_path / "runs"
    copy(finished, root / "a")
    table = CliRunner().invoke(main, ["runs", str(root)])
    assert table.exit_code == 0 and "finished" in table.stdout and "8/8" in table.stdout
    rows = json.loads(CliRunner().invoke(main, ["runs", str(root), "--json"]).stdout)
    assert [row["run"] for row in rows] == ["a"]
    missing = CliRunner().invoke(main, ["runs", str(tmp_path / "absent")])
    assert missing.exit_code == 2 and "is not a folder" in missing.stderr


def test_the_committed_examples_are_all_listed_and_none_is_broken():
    rows = overview(EXAMPLES)
    configs = [p.parent for p in EXAMPLES.rglob("config.json") if "checkpoints" not in p.relative_to(EXAMPLES).parts]
    assert sorted(row["run"] for row in rows) == sorted(str(p.relative_to(EXAMPLES)) for p in configs)
    assert find_run_dirs(EXAMPLES) == sorted(configs)
    assert not [row for row in rows if row["status"] == "broken"]
    json.dumps(rows, allow_nan=False)
