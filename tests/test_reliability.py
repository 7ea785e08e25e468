"""Reliability against a hostile run dir or environment (issue 36), one section per class of failure:
bounded reads, any locale, diverged models, truthful messages, the `runs` listing, no partial output."""

from __future__ import annotations

import errno
import json
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from grokking.errors import GrokkingError
from grokking.rundir import RunDir, load_checkpoint
from grokking.sweep import load_sweep

from .conftest import TINY_FLAGS, assert_one_line_error, copy_of, invoke, tree_checksums


class Hung(Exception):
    """Not an OSError, so that no reader's error handling can swallow it."""


@contextmanager
def no_hang(seconds: int = 20) -> Iterator[None]:
    """Fail, rather than wait forever, when a read blocks (a FIFO with no writer blocks its opener)."""

    def give_up(*args):
        raise Hung(f"blocked for {seconds} s")

    previous = signal.signal(signal.SIGALRM, give_up)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def limit_memory() -> None:
    """In a child: a cap on its heap, so that an unbounded read fails there instead of filling the machine."""
    cap = 6 * 2**30
    resource.setrlimit(resource.RLIMIT_DATA, (cap, cap))


def grokking_process(*args, env: dict[str, str] | None = None, timeout: int = 60) -> subprocess.CompletedProcess:
    """`grokking ARGS` in a process of its own (what a user runs), memory-capped and timed out."""
    return subprocess.run(
        [sys.executable, "-m", "grokking", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        preexec_fn=limit_memory,
    )


def make_hostile(path: Path, kind: str) -> None:
    """Replace `path` with a FIFO (no writer: opening it blocks), a link to itself or to an endless device."""
    path.unlink(missing_ok=True)
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "loop":
        path.symlink_to(path.name)
    else:
        path.symlink_to(f"/dev/{kind}")


# 1. bounded reads: only regular files, with a size bound --------------------------------------------

HOSTILE_FILES = ["config.json", "metrics.jsonl", "summary.json", ".lock", "checkpoints/latest.pt"]


def test_bounded_reads_runs_marks_each_hostile_run_dir_broken_and_lists_the_others(trained, tmp_path):
    root = tmp_path / "runs"
    copy_of(trained, root / "good")
    for kind in ("fifo", "zero", "urandom", "loop"):
        for name in HOSTILE_FILES[:4]:
            make_hostile(copy_of(trained, root / f"{kind}-{name.strip('.')}") / name, kind)
    result = grokking_process("runs", root, "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["run"]: row for row in json.loads(result.stdout)}
    assert rows.pop("good")["status"] == "finished"
    assert len(rows) == 16
    for name, row in rows.items():
        kind, file = name.split("-", 1)
        if file == "lock":  # a lock that cannot be read is stale: the run is listed as it stands
            assert row["status"] == "finished", row
        else:
            why = "cannot read" if kind == "loop" else "not a regular file"
            assert row["status"] == "broken" and why in row["problem"] and file in row["problem"], row


READERS = {
    "config.json": RunDir.read_config,
    "metrics.jsonl": RunDir.read_metrics,
    "summary.json": RunDir.read_summary,
    "checkpoints/latest.pt": lambda run: load_checkpoint(run.latest_path),
}


@pytest.mark.parametrize("name", READERS)
def test_bounded_reads_every_reader_refuses_a_fifo(trained, tmp_path, name):
    run = RunDir(copy_of(trained, tmp_path / "run"))
    make_hostile(run.path / name, "fifo")
    with no_hang(), pytest.raises(GrokkingError, match=f"{name} is a FIFO, not a regular file"):
        READERS[name](run)


@pytest.mark.parametrize("name", ["config.json", "metrics.jsonl"])
def test_bounded_reads_commands_refuse_a_fifo_in_one_line(trained, tmp_path, name):
    run = copy_of(trained, tmp_path / "run")
    make_hostile(run / name, "fifo")
    with no_hang():
        assert_one_line_error(invoke("plot", "--run-dir", run), "not a regular file")
        assert_one_line_error(invoke("analyze", "--run-dir", run), "not a regular file")
        if name == "config.json":
            assert_one_line_error(invoke("eval", "--run-dir", run), "not a regular file")


def test_bounded_reads_a_lock_that_cannot_be_read_is_stale(tmp_path):
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    make_hostile(run.lock_path, "fifo")
    with no_hang():
        assert run.training_process() is None


def test_bounded_reads_resume_from_a_hostile_latest_checkpoint_is_one_line(trained, tmp_path):
    run = copy_of(trained, tmp_path / "run")
    make_hostile(run / "checkpoints" / "latest.pt", "fifo")
    with no_hang():
        result = invoke("train", *TINY_FLAGS, "--steps", "30", "--run-dir", run, "--resume")
    assert_one_line_error(result, "latest.pt is a FIFO, not a regular file")


@pytest.mark.slow
def test_bounded_reads_an_endless_device_is_refused_by_every_command(trained, tmp_path):
    run = copy_of(trained, tmp_path / "run")
    make_hostile(run / "metrics.jsonl", "zero")
    make_hostile(run / "checkpoints" / "latest.pt", "urandom")
    for args in (["plot", "--run-dir", run], ["eval", "--checkpoint", run / "checkpoints" / "latest.pt"]):
        result = grokking_process(*args)
        assert result.returncode == 2 and "not a regular file" in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_bounded_reads_a_sweep_json_fifo_is_refused(tmp_path):
    make_hostile(tmp_path / "sweep.json", "fifo")
    with no_hang(), pytest.raises(GrokkingError, match="sweep.json is a FIFO, not a regular file"):
        load_sweep(tmp_path)


def test_bounded_reads_a_file_past_the_bound_is_refused_naming_the_bound(trained, tmp_path, monkeypatch):
    run = RunDir(copy_of(trained, tmp_path / "run"))
    monkeypatch.setattr("grokking.rundir.METRICS_LIMIT", 1000)
    with open(run.metrics_path, "ab") as f:
        f.write(b"\n" * 1000)
    with pytest.raises(GrokkingError, match="more than the 1,000 bytes"):
        run.read_metrics()
    monkeypatch.setattr("grokking.rundir.JSON_LIMIT", 10)
    with pytest.raises(GrokkingError, match=r"config\.json .* more than the 10 bytes"):
        run.read_config()


def test_bounded_reads_a_symlink_to_a_regular_file_is_still_read(trained, tmp_path):
    run = RunDir(copy_of(trained, tmp_path / "run"))
    kept = tmp_path / "kept.jsonl"
    run.metrics_path.rename(kept)
    run.metrics_path.symlink_to(kept)
    assert len(run.read_metrics()) == len(RunDir(trained).read_metrics())


# 2. any locale: output falls back to ASCII where the stream cannot encode ----------------------------

ASCII_LOCALE = {"LANG": "C", "LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONIOENCODING": "ascii"}


@pytest.mark.slow
def test_locale_training_and_listing_finish_under_an_ascii_locale(tmp_path):
    run = tmp_path / "runs" / "run"
    result = grokking_process("train", *TINY_FLAGS, "--steps", "20", "--run-dir", run, env=ASCII_LOCALE)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert RunDir(run).read_summary()["steps_done"] == 20
    assert "steps_done" in result.stdout and "| 20 " in result.stdout  # the summary table, in ASCII
    assert "train loss 2" in result.stderr and "\\u" not in result.stderr  # progress lines with stand-ins
    listing = grokking_process("runs", tmp_path / "runs", env=ASCII_LOCALE)
    assert listing.returncode == 0 and "Traceback" not in listing.stderr, listing.stderr
    assert "run" in listing.stdout and "finished" in listing.stdout and "mod 11" in listing.stdout


def test_locale_help_prints_under_an_ascii_locale():
    result = grokking_process("train", "--help", env=ASCII_LOCALE)
    assert result.returncode == 0 and "--d-mlp" in result.stdout, result.stderr


def test_locale_ascii_stand_ins_keep_the_meaning():
    from grokking.display import ascii_text

    assert ascii_text("x·y⁻¹ mod 47 — val acc ≥ 99% … 3×") == "x.y^-1 mod 47 - val acc >= 99% ... 3x"
    assert ascii_text("λ = 1 · ḡ") == "lamda = 1 . g"


def test_locale_a_failed_write_names_standard_output(trained, tmp_path):
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            [sys.executable, "-m", "grokking", "runs", str(trained.parent)],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: standard output: No space left on device"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_locale_a_failed_write_names_the_file(tmp_path, monkeypatch):
    def disk_full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", disk_full)
    run = RunDir(tmp_path / "run")
    with pytest.raises(OSError) as raised:
        run.write_summary({"steps_done": 1})
    assert raised.value.filename == str(run.summary_path) and not run.summary_path.exists()


# 3. analysis of a diverged model ----------------------------------------------------------------------


def diverge(checkpoint: Path) -> None:
    """Make the weights of `checkpoint` NaN, as a run that blew up saves them."""
    state = torch.load(checkpoint, weights_only=True)
    for tensor in state["model"].values():
        if tensor.is_floating_point():
            tensor.fill_(math.nan)
    torch.save(state, checkpoint)


def test_diverged_analysis_skips_non_finite_checkpoints_and_names_them(trained, tmp_path):
    run = RunDir(copy_of(trained, tmp_path / "run"))
    diverge(run.latest_path)
    diverge(run.snapshot_path(20))
    result = invoke("analyze", "--run-dir", run.path, "--draws", "1")
    assert result.exit_code == 0, result.output
    assert "skipped" in result.stderr and "non-finite" in result.stderr and "20" in result.stderr
    progress = json.loads((run.analysis_dir / "progress.json").read_text())
    assert [row["step"] for row in progress["checkpoints"]][-1] == 16
    assert json.loads((run.analysis_dir / "spectrum.json").read_text())["step"] == 16
    assert_one_line_error(invoke("analyze", "--run-dir", run.path, "--step", "20"), "step-20 checkpoint")


def test_diverged_analysis_of_a_run_with_no_finite_checkpoint_is_one_line(trained, tmp_path):
    run = RunDir(copy_of(trained, tmp_path / "run"))
    for checkpoint in [run.latest_path, *run.snapshots()]:
        diverge(checkpoint)
    before = tree_checksums(run.path)
    assert_one_line_error(invoke("analyze", "--run-dir", run.path), "non-finite")
    assert tree_checksums(run.path) == before


# 6. a failing command leaves no partial output ---------------------------------------------------------


def test_partial_output_analyze_writes_nothing_when_a_figure_cannot_be_written(trained, tmp_path):
    run = RunDir(copy_of(trained, tmp_path / "run"))
    run.figures_dir.write_text("not a folder")
    before = tree_checksums(run.path)
    assert_one_line_error(invoke("analyze", "--run-dir", run.path, "--draws", "1"), "figures is a file")
    assert tree_checksums(run.path) == before and not run.analysis_dir.exists()


def test_partial_output_plot_writes_nothing_when_one_figure_cannot_be_written(trained, tmp_path):
    run = RunDir(copy_of(trained, tmp_path / "run"))
    (run.plots_dir / "loss.png").mkdir(parents=True)
    before = tree_checksums(run.path)
    assert_one_line_error(invoke("plot", "--run-dir", run.path), "loss.png is a folder")
    assert tree_checksums(run.path) == before


# 4. messages that tell the truth ----------------------------------------------------------------------


def test_messages_resume_with_a_changed_flag_says_what_differs_and_what_resume_does(trained, tmp_path):
    run = copy_of(trained, tmp_path / "run")
    result = invoke("train", "--run-dir", run, "--resume", "--lr", "0.01")
    assert_one_line_error(result, "--resume continues")
    assert "lr: 0.003 -> 0.01" in result.stderr and "use --resume" not in result.stderr
    assert "--steps" in result.stderr  # what may change on resume


def test_messages_a_latest_checkpoint_without_resume_state_names_what_is_missing(trained, tmp_path):
    run = RunDir(copy_of(trained, tmp_path / "run"))
    shutil.copy(run.snapshot_path(20), run.latest_path)  # a kept snapshot holds no optimizer or RNG state
    result = invoke("train", *TINY_FLAGS, "--steps", "30", "--run-dir", run.path, "--resume")
    assert_one_line_error(result, "optimizer")
    assert "torch_rng" in result.stderr and "data split" not in result.stderr


def test_messages_a_bad_value_in_config_json_names_the_file_and_key(trained, tmp_path):
    run = RunDir(copy_of(trained, tmp_path / "run"))
    saved = json.loads(run.config_path.read_text())
    saved["config"]["lr"] = -1
    run.config_path.write_text(json.dumps(saved))
    result = invoke("plot", "--run-dir", run.path)
    assert_one_line_error(result, f"{run.config_path}: lr must be")
    assert "--lr" not in result.stderr


def test_messages_a_bad_value_in_sweep_json_names_the_file(tmp_path):
    out = tmp_path / "sweep"
    assert invoke("sweep", "--grid", "seed=0,1", "--steps", "4", "--out-dir", out, "--emit-commands").exit_code == 0
    manifest = json.loads((out / "sweep.json").read_text())
    manifest["grid"] = {"lr": [-1.0]}
    (out / "sweep.json").write_text(json.dumps(manifest))
    with pytest.raises(GrokkingError, match=r"sweep\.json: sweep point lr=-1\.0: lr must be positive"):
        load_sweep(out)


def test_messages_load_run_on_a_file_says_it_is_a_file(tmp_path):
    from grokking import load_run

    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(GrokkingError, match="is a file, not a run dir"):
        load_run(tmp_path / "notes.txt")


@pytest.mark.parametrize("jobs", ["0", "-1", "100000"])
def test_messages_sweep_dry_run_refuses_the_jobs_the_real_sweep_refuses(tmp_path, jobs):
    result = invoke("sweep", "--grid", "seed=0,1", "--out-dir", tmp_path / "s", "--dry-run", "--jobs", jobs)
    assert_one_line_error(result, "--jobs must be between 1 and")


def test_messages_emitted_commands_are_one_line_each_or_refused(tmp_path):
    out = tmp_path / "odd\nname"
    result = invoke("sweep", "--grid", "seed=0,1", "--steps", "4", "--out-dir", out, "--emit-commands")
    assert_one_line_error(result, "line break")
    assert not out.exists()  # refused before sweep.json was written


def test_messages_the_python_api_refuses_wrong_types_in_one_line(tmp_path):
    from grokking.config import PRESETS
    from grokking.train import train

    with pytest.raises(GrokkingError, match="takes a RunConfig"):
        train({"p": 47}, tmp_path / "run")
    with pytest.raises(GrokkingError, match=r"p should be of type int \(got '47'\)"):
        train(PRESETS["quick"].replace(p="47"), tmp_path / "run")
    with pytest.raises(GrokkingError, match="a run dir is a path"):
        train(PRESETS["quick"], 47)
    with pytest.raises(GrokkingError, match="--threads must be"):
        train(PRESETS["quick"], tmp_path / "run", threads="4")
    assert not (tmp_path / "run").exists()


# 5. `runs` shows impossible values as missing and every row on one line -------------------------------


def test_runs_listing_shows_non_finite_and_impossible_values_as_missing(trained, tmp_path):
    root = tmp_path / "runs"
    for name, value in (("not-a-number", "NaN"), ("infinite", "Infinity"), ("huge", "1e300")):
        run = copy_of(trained, root / name)
        with open(run / "metrics.jsonl", "a") as f:
            f.write(f'{{"step": 20, "train_acc": {value}, "val_acc": {value}, "val_loss": {value}}}\n')
    beyond = copy_of(trained, root / "beyond")
    summary = json.loads((beyond / "summary.json").read_text())
    (beyond / "summary.json").write_text(json.dumps({**summary, "steps_done": 50}))  # the budget is 20
    late = copy_of(trained, root / "late")
    with open(late / "metrics.jsonl", "a") as f:
        f.write('{"step": 90, "train_acc": 1.0, "val_acc": 1.0}\n')  # past the budget: not a step this run took
    rows = {row["run"]: row for row in json.loads(invoke("runs", root, "--json").stdout)}
    for name in ("not-a-number", "infinite", "huge"):
        assert rows[name]["val_acc"] is None, rows[name]
    assert rows["beyond"]["steps_done"] is None and rows["late"]["steps_done"] is None
    assert rows["late"]["memorization_step"] is None and rows["late"]["generalization_step"] is None
    # the rows, without the title: it names the root folder, whose path may hold "50/" (pytest-150/)
    table = "\n".join(line for line in invoke("runs", root).stdout.splitlines() if "runs under" not in line)
    assert "50/" not in table and "90/" not in table and "—/20" in table
    assert "nan" not in table.lower() and "inf%" not in table and "e+300" not in table


def test_runs_listing_keeps_each_run_dir_on_one_line_whatever_its_name(trained, tmp_path):
    root = tmp_path / "runs"
    for name in ("odd\nname", "tab\there", "[/bold] [red]x"):
        copy_of(trained, root / name)
    result = invoke("runs", root)
    assert result.exit_code == 0, result.output
    rows = [line for line in result.stdout.splitlines() if "finished" in line]
    assert len(rows) == 3, result.stdout
    assert any("odd\\nname" in row for row in rows) and any("tab\\there" in row for row in rows)
    assert any("[/bold] [red]x" in row for row in rows)


def test_runs_listing_prints_the_seed_bound_as_an_integer():
    result = invoke("train", "--seed", str(2**32), "--dry-run")
    assert_one_line_error(result, "at most 4,294,967,295")


def test_bounded_reads_json_nested_too_deeply_is_invalid_json_not_a_traceback(trained, tmp_path):
    run = RunDir(copy_of(trained, tmp_path / "run"))
    with open(run.metrics_path, "a") as f:
        f.write("[" * 100_000 + "\n")
    with pytest.warns(UserWarning, match="metrics.jsonl:7: skipped"):
        assert len(run.read_metrics()) == len(RunDir(trained).read_metrics())
    run.summary_path.write_text("{" * 100_000)
    assert run.read_summary() is None
    run.config_path.write_text("[" * 100_000)
    assert_one_line_error(invoke("plot", "--run-dir", run.path), "config.json is not valid JSON (nested too deeply)")


@pytest.mark.parametrize(
    "change", [{"final_val_acc": "high"}, {"memorization_step": "soon"}, {"steps_done": True}, {"steps_done": -5}]
)
def test_runs_listing_and_sweep_take_a_summary_with_wrong_types_for_none(tmp_path, change):
    sweep = ["sweep", "--grid", "seed=0", "--set", "p=11", "--set", "d_model=32", "--steps", "4", "--out-dir"]
    out = tmp_path / "sweep"
    assert invoke(*sweep, out).exit_code == 0
    summary_path = out / "seed=0" / "summary.json"
    summary_path.write_text(json.dumps({**json.loads(summary_path.read_text()), **change}))
    assert RunDir(out / "seed=0").read_summary() is None
    result = invoke(*sweep, out, "--dry-run")
    assert result.exit_code == 0 and "partial" in result.stdout, result.output
    listing = invoke("runs", out)
    assert listing.exit_code == 0 and "summary.json is unreadable or incomplete" in listing.stdout, listing.output


def test_diverged_eval_reports_no_accuracy_for_non_finite_weights(trained, tmp_path):
    run = RunDir(copy_of(trained, tmp_path / "run"))
    diverge(run.snapshot_path(20))
    result = invoke("eval", "--checkpoint", run.snapshot_path(20), "--json")
    assert result.exit_code == 0 and "non-finite" in result.stderr, result.output
    (row,) = json.loads(result.stdout)
    assert row["step"] == 20 and row["train_acc"] is None and row["val_acc"] is None
    table = invoke("eval", "--run-dir", run.path)
    assert table.exit_code == 0 and "nan" not in table.stdout and "—" in table.stdout, table.output


def test_partial_output_plot_sweep_leaves_sweep_json_alone_when_its_figure_cannot_be_written(tmp_path):
    out = tmp_path / "sweep"
    assert invoke("sweep", "--grid", "seed=0", "--steps", "4", "--out-dir", out, "--emit-commands").exit_code == 0
    (out / "plots").write_text("not a folder")
    before = tree_checksums(out)
    assert_one_line_error(invoke("plot", "--sweep", out), "plots is a file")
    assert tree_checksums(out) == before
