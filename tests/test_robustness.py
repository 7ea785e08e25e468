"""Hostile and mistaken input: nothing a user types or a disk does loses data or prints a traceback."""

from __future__ import annotations

import json
import math
import os
import shlex
import shutil
import signal
from dataclasses import fields
from pathlib import Path

import pytest
import torch
import typer

from grokking import main
from grokking.config import RunConfig, base_type, field_types, flag_name
from grokking.errors import GrokkingError
from grokking.rundir import RunDir, load_checkpoint
from grokking.train import TrainingInterrupted

from .conftest import TINY, TINY_FLAGS, assert_one_line_error, copy_of, invoke, tree_checksums

# --overwrite ------------------------------------------------------------------------------------


def test_overwrite_never_deletes_a_file_grokking_did_not_write(trained, tmp_path):
    run = copy_of(trained, tmp_path / "run")
    (run / "notes.txt").write_text("keep")
    (run / "src").mkdir()
    (run / "src" / "main.py").write_text("keep")
    (run / "checkpoints" / "mine.bin").write_text("keep")
    before = tree_checksums(tmp_path)
    result = invoke("train", *TINY_FLAGS, "--steps", "20", "--run-dir", run, "--overwrite")
    assert_one_line_error(result, "--overwrite would delete what grokking did not write")
    assert "notes.txt" in result.stderr and "src/" in result.stderr and "checkpoints/mine.bin" in result.stderr
    assert tree_checksums(tmp_path) == before


def test_overwrite_refuses_a_folder_whose_config_json_is_not_ours(tmp_path):
    demo = tmp_path / "demo"
    (demo / "src").mkdir(parents=True)
    (demo / "config.json").write_text('{"name": "app"}')
    (demo / "notes.txt").write_text("keep")
    before = tree_checksums(tmp_path)
    result = invoke("train", *TINY_FLAGS, "--steps", "20", "--run-dir", demo, "--overwrite")
    assert_one_line_error(result, "not written by grokking")
    assert tree_checksums(tmp_path) == before and (demo / "src").is_dir()


def test_overwrite_never_follows_a_symlink_out(trained, tmp_path):
    run = copy_of(trained, tmp_path / "run")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("keep")
    (run / "plots").mkdir(exist_ok=True)
    os.symlink(outside, run / "plots" / "link.png")
    result = invoke("train", *TINY_FLAGS, "--steps", "20", "--run-dir", run, "--overwrite")
    assert_one_line_error(result, "plots/link.png")
    assert (outside / "precious.txt").read_text() == "keep"
    link = tmp_path / "linked-run"
    os.symlink(run, link)
    assert_one_line_error(invoke("train", *TINY_FLAGS, "--run-dir", link, "--overwrite"), "symbolic link")


def test_overwrite_replaces_a_run_that_holds_only_grokking_files(trained, tmp_path):
    run = copy_of(trained, tmp_path / "run")
    assert invoke("plot", "--run-dir", run).exit_code == 0
    (run / "checkpoints" / ".latest.pt.abc_1234.tmp").write_bytes(b"torn")
    result = invoke("train", *TINY_FLAGS, "--steps", "4", "--run-dir", run, "--overwrite")
    assert result.exit_code == 0, result.output
    assert [r["step"] for r in RunDir(run).read_metrics()] == [1, 2, 4]
    assert not (run / "plots").exists()


def test_overwrite_of_several_seeds_checks_every_run_dir_before_deleting_any(trained, tmp_path):
    out = tmp_path / "out"
    assert invoke("train", *TINY_FLAGS, "--steps", "4", "--seeds", "0-1", "--out-dir", out).exit_code == 0
    second = next(p for p in sorted(out.iterdir()) if p.name.endswith("_s1"))
    (second / "notes.txt").write_text("keep")
    before = tree_checksums(tmp_path)
    result = invoke("train", *TINY_FLAGS, "--steps", "4", "--seeds", "0-1", "--out-dir", out, "--overwrite")
    assert_one_line_error(result, "notes.txt")
    assert tree_checksums(tmp_path) == before  # seed 0's run dir too
    result = invoke("train", *TINY_FLAGS, "--steps", "4", "--run-dir", trained, "--overwrite", "--resume")
    assert_one_line_error(result, "give one of them")


def test_overwrite_keeps_files_that_only_look_like_grokkings(trained, tmp_path):
    run = copy_of(trained, tmp_path / "run")
    (run / "plots").mkdir(exist_ok=True)
    (run / "plots" / "my_figure.png").write_bytes(b"png")
    (run / ".notes.tmp").write_text("keep")
    assert invoke("train", *TINY_FLAGS, "--steps", "24", "--run-dir", run).exit_code == 0
    assert (run / ".notes.tmp").read_text() == "keep"  # not a temp file of ours, so resume keeps it
    (run / "lock").write_text("mine")  # grokking's lock is .lock
    before = tree_checksums(tmp_path)
    result = invoke("train", *TINY_FLAGS, "--steps", "20", "--run-dir", run, "--overwrite")
    assert_one_line_error(result, "plots/my_figure.png")
    assert ", lock, " in result.stderr
    assert tree_checksums(tmp_path) == before


def test_a_run_dir_with_metrics_but_no_checkpoint_is_not_silently_restarted(trained, tmp_path):
    run = copy_of(trained, tmp_path / "run")
    shutil.rmtree(run / "checkpoints")  # as runs are shared and committed
    before = tree_checksums(tmp_path)
    for extra in ([], ["--resume"]):
        result = invoke("train", *TINY_FLAGS, "--steps", "20", "--run-dir", run, *extra)
        assert_one_line_error(result, "no checkpoint to continue from; give --overwrite")
    assert tree_checksums(tmp_path) == before
    (run / "summary.json").unlink()  # as a run killed before its first checkpoint: it starts again
    assert invoke("train", *TINY_FLAGS, "--steps", "20", "--run-dir", run).exit_code == 0
    assert (run / "checkpoints" / "latest.pt").is_file()


@pytest.mark.parametrize(
    "record",
    [
        {"step": 2, "train_loss": 1.0, "val_loss": 2.0},
        {"step": 0, "train_loss": 0.0, "val_loss": 0.0, "train_acc": 0.1, "val_acc": 0.1},
        {"step": 3},
    ],
)
def test_plot_draws_metrics_that_give_a_log_axis_nothing_to_show(trained, tmp_path, record):
    run = copy_of(trained, tmp_path / "run")
    (run / "metrics.jsonl").write_text(json.dumps(record) + "\n")
    result = invoke("plot", "--run-dir", run)
    assert result.exit_code == 0, result.output
    assert (run / "plots" / "loss.png").is_file() and (run / "plots" / "accuracy.png").is_file()


def test_a_copy_of_a_checkpoint_under_another_name_is_not_taken_for_one(trained, tmp_path):
    run = copy_of(trained, tmp_path / "run")
    kept = sorted((run / "checkpoints").glob("step_*.pt"))
    shutil.copy(kept[0], run / "checkpoints" / f"{kept[0].stem} copy.pt")
    assert RunDir(run).snapshots() == kept
    assert invoke("eval", "--run-dir", run).exit_code == 0


# numbers -----------------------------------------------------------------------------------------

FLOAT_FIELDS = [f.name for f in fields(RunConfig) if f.metadata and base_type(field_types()[f.name]) is float]
INT_FIELDS = [f.name for f in fields(RunConfig) if f.metadata and base_type(field_types()[f.name]) is int]


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("name", FLOAT_FIELDS)
def test_every_float_field_refuses_non_finite_values_naming_its_flag(name, value):
    with pytest.raises(GrokkingError, match=f"^{flag_name(name)} must be") as error:
        TINY.replace(**{name: value}).validate()
    assert str(value) in str(error.value)


@pytest.mark.parametrize("name", INT_FIELDS)
def test_every_integer_field_refuses_huge_and_negative_values_naming_its_flag(name):
    for value in (10**30, -1):
        with pytest.raises(GrokkingError, match=f"^{flag_name(name)} must be"):
            TINY.replace(**{name: value}).validate()


def test_every_error_names_a_flag_that_exists():
    train = typer.main.get_command(main).commands["train"]
    real = {o for param in train.params for o in param.opts}
    assert {flag_name(f.name) for f in fields(RunConfig) if f.metadata} <= real


def test_nan_on_the_command_line_is_one_line(tmp_path):
    result = invoke("train", *TINY_FLAGS, "--lr", "nan", "--run-dir", tmp_path / "run")
    assert_one_line_error(result, "--lr must be positive")
    assert not (tmp_path / "run").exists()


# sizes -------------------------------------------------------------------------------------------


def test_a_checkpoint_that_asks_for_a_huge_model_is_refused_before_anything_is_built(trained, tmp_path):
    state = load_checkpoint(trained / "checkpoints" / "latest.pt")
    state["config"]["d_mlp"] = 10**12
    evil = tmp_path / "huge.pt"
    torch.save(state, evil)
    assert_one_line_error(invoke("eval", "--checkpoint", evil), "parameters")
    state["config"]["d_mlp"], state["config"]["d_model"], state["config"]["n_layers"] = 16384, 4096, 64
    torch.save(state, evil)
    assert_one_line_error(invoke("eval", "--checkpoint", evil), "parameters")


def test_seed_counts_and_grids_are_bounded_and_planned_quickly(tmp_path):
    assert_one_line_error(invoke("train", *TINY_FLAGS, "--seeds", "0-5000", "--dry-run"), "at most 1,024")
    assert_one_line_error(invoke("train", *TINY_FLAGS, "--seeds", "0-999999", "--dry-run"), "at most 100,000")
    big = ["sweep", "--grid", "seed=0-99", "--grid", "p=7-207", "--out-dir", tmp_path / "s", "--dry-run"]
    assert_one_line_error(invoke(*big), "split it into sweeps")


# printed hints -------------------------------------------------------------------------------------


def test_printed_hints_are_shell_quoted(tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise TrainingInterrupted(signal.SIGINT, 3)

    monkeypatch.setattr("grokking.train.train_seeds", interrupted)  # the command imports it when it trains
    run = tmp_path / "x; touch PWNED"
    result = invoke("train", *TINY_FLAGS, "--run-dir", run)
    assert result.exit_code == 130
    hint = result.stderr.split("Resume with: ")[1].strip()
    assert shlex.split(hint) == ["grokking", "train", "--run-dir", str(run), "--resume"]
    assert shlex.quote(str(run)) in result.stdout  # the plot hint


# the lock and temp files ---------------------------------------------------------------------------


def test_the_lock_holds_its_pid_from_the_moment_it_exists(tmp_path, monkeypatch):
    run = RunDir(tmp_path / "run")
    seen = []
    real_link = os.link

    def link(source, target):  # the moment the lock appears, it already names its owner
        seen.append(Path(source).read_text())
        real_link(source, target)

    monkeypatch.setattr(os, "link", link)
    with run.lock():
        assert seen == [str(os.getpid())] and run.lock_path.read_text() == str(os.getpid())
        assert [p.name for p in run.path.iterdir()] == [".lock"]  # no temp file left behind
    assert not run.lock_path.exists()


def test_a_lock_held_by_another_live_process_is_respected(tmp_path):
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.lock_path.write_text(str(os.getppid()))  # a live process that is not this one
    with pytest.raises(GrokkingError, match="being trained by process"):
        with run.lock():
            pass
    assert run.lock_path.read_text() == str(os.getppid())


def test_orphan_temp_files_of_a_killed_write_are_removed_when_training_resumes(trained, tmp_path):
    run = copy_of(trained, tmp_path / "run")
    orphans = [run / ".metrics.jsonl.x1yz_789.tmp", run / "checkpoints" / ".latest.pt.x2yz_789.tmp"]
    for orphan in orphans:
        orphan.write_bytes(b"half")
    assert invoke("train", *TINY_FLAGS, "--steps", "24", "--run-dir", run).exit_code == 0
    assert not any(o.exists() for o in orphans)


# malformed run-dir files -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        b'{"step": 30, "train_acc": "high", "val_acc": 0.5}',
        b'{"step": 30, "train_acc": null, "val_acc": 0.5, "note": [1]}',
        b'{"step": "30", "val_acc": 0.5}',
        b'{"step": -3, "val_acc": 0.5}',
        b"\xff\xfe not utf-8",
        b"[1, 2]",
    ],
)
def test_a_malformed_metrics_line_is_skipped_and_the_run_still_closes(trained, tmp_path, line):
    run = copy_of(trained, tmp_path / "run")
    with (run / "metrics.jsonl").open("ab") as f:
        f.write(line + b"\n")
    with pytest.warns(UserWarning, match=r"metrics.jsonl:\d+: skipped a line"):
        records = RunDir(run).read_metrics()
    assert [r["step"] for r in records] == [1, 2, 4, 8, 10, 20]
    result = invoke("train", *TINY_FLAGS, "--steps", "30", "--run-dir", run)
    assert result.exit_code == 0, result.output
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps_done"] == 30 and isinstance(summary["final_val_acc"], float)


def test_a_config_with_nonsense_values_is_refused(trained, tmp_path):
    run = copy_of(trained, tmp_path / "run")
    data = json.loads((run / "config.json").read_text())
    data["config"]["p"] = -5
    (run / "config.json").write_text(json.dumps(data))
    assert_one_line_error(invoke("plot", "--run-dir", run), "config.json: p must be")


def test_a_checkpoint_with_a_step_that_is_not_a_count_is_refused(trained, tmp_path):
    state = load_checkpoint(trained / "checkpoints" / "latest.pt")
    state["step"] = 2.5
    bad = tmp_path / "bad.pt"
    torch.save(state, bad)
    assert_one_line_error(invoke("eval", "--checkpoint", bad), "not a count of steps")


def test_a_latest_checkpoint_with_a_grokked_step_that_is_not_a_count_is_refused(trained, tmp_path):
    run = copy_of(trained, tmp_path / "run")
    state = load_checkpoint(run / "checkpoints" / "latest.pt")
    state["grokked_step"] = "soon"
    torch.save(state, run / "checkpoints" / "latest.pt")
    result = invoke("train", *TINY_FLAGS, "--run-dir", run, "--resume")
    assert_one_line_error(result, "is corrupt or incomplete (step 'soon' is not a count of steps)")


def test_a_sweep_json_with_empty_lists_is_refused(tmp_path):
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "sweep.json").write_text(json.dumps({"grid": {"seed": []}, "base": TINY.to_dict(), "points": []}))
    assert_one_line_error(invoke("plot", "--sweep", out), "no valid list of values")


# silent nonsense ---------------------------------------------------------------------------------------


def test_a_nan_loss_stops_the_run_with_a_checkpoint_and_valid_json(tmp_path, monkeypatch):
    from grokking import train as train_module

    real = train_module.evaluate
    calls = []

    def diverging(model, data, config):  # the fifth evaluation (step 10) sees the loss blow up
        calls.append(1)
        metrics = real(model, data, config)
        return {**metrics, "train_loss": math.nan, "val_loss": math.inf} if len(calls) >= 5 else metrics

    monkeypatch.setattr(train_module, "evaluate", diverging)
    run = tmp_path / "run"
    result = invoke("train", *TINY_FLAGS, "--run-dir", run)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.stderr.strip().splitlines()[-1].startswith("error: training diverged")  # after the progress lines
    lines = (run / "metrics.jsonl").read_text().splitlines()
    last = json.loads(lines[-1])  # strict JSON: NaN and infinity written as null
    assert last["step"] == 10 and last["train_loss"] is None and last["val_loss"] is None
    assert "NaN" not in "".join(lines) and "Infinity" not in "".join(lines)
    assert load_checkpoint(run / "checkpoints" / "latest.pt")["step"] == 10
    assert json.loads((run / "summary.json").read_text())["stopped"] == "diverged"


def test_resuming_with_fewer_steps_than_done_is_refused_and_changes_nothing(trained, tmp_path):
    run = copy_of(trained, tmp_path / "run")
    before = tree_checksums(run)
    assert_one_line_error(invoke("train", "--run-dir", run, "--resume", "--steps", "10"), "below the 20 steps")
    assert tree_checksums(run) == before


def test_an_empty_seed_list_is_refused(tmp_path):
    assert_one_line_error(invoke("train", *TINY_FLAGS, "--seeds", "", "--dry-run"), "--seeds takes a range")


# the file system ------------------------------------------------------------------------------------------


def test_file_system_errors_are_one_line(trained, tmp_path):
    long_name = tmp_path / ("a" * 300) / "run"
    assert_one_line_error(invoke("train", *TINY_FLAGS, "--steps", "4", "--run-dir", long_name), "File name too long")
    loop = tmp_path / "loop"
    os.symlink(loop, loop)
    assert_one_line_error(invoke("train", *TINY_FLAGS, "--steps", "4", "--run-dir", loop / "run"), "loop")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert_one_line_error(invoke("plot", "--run-dir", trained, "--out", blocker / "plots"), "is a file where a folder")


def test_a_folder_where_metrics_jsonl_should_be_is_one_line(trained, tmp_path):
    run = copy_of(trained, tmp_path / "run")
    (run / "metrics.jsonl").unlink()
    (run / "metrics.jsonl").mkdir()
    assert_one_line_error(invoke("plot", "--run-dir", run), "metrics.jsonl is a folder, not a regular file")


def test_ctrl_c_during_set_up_is_one_line_and_exit_130(monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("grokking.cli.plan_runs", interrupt)
    result = invoke("train", *TINY_FLAGS, "--dry-run")
    assert_one_line_error(result, "interrupted", code=130)


@pytest.mark.parametrize("content", ["0", "-1", str(10**30), "", "pid"])
def test_a_lock_that_names_no_process_is_stale(tmp_path, content):
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.lock_path.write_text(content)  # 0 and -1 would reach a whole process group through os.kill
    assert run.training_process() is None
    with run.lock():
        assert run.lock_path.read_text() == str(os.getpid())


def test_a_torn_latest_checkpoint_leaves_the_kept_ones_usable(trained, tmp_path):
    run = copy_of(trained, tmp_path / "run")
    (run / "checkpoints" / "latest.pt").write_bytes(b"")
    result = invoke("eval", "--run-dir", run)
    assert result.exit_code == 0, result.output
    assert "latest.pt" in result.stderr and "skipped" in result.stderr
    assert_one_line_error(invoke("train", *TINY_FLAGS, "--run-dir", run, "--resume"), "restore it from a copy")


def test_a_run_dir_that_left_a_default_open_resumes_and_evaluates(trained, tmp_path):
    run = copy_of(trained, tmp_path / "run")
    saved = json.loads((run / "config.json").read_text())
    saved["config"]["loss_dtype"] = None  # as config.json was written before the loss dtype was resolved
    (run / "config.json").write_text(json.dumps(saved))
    assert invoke("eval", "--run-dir", run).exit_code == 0
    result = invoke("train", "--run-dir", run, "--resume", "--steps", "24", "--threads", "1")
    assert result.exit_code == 0, result.output
