"""Every user mistake: exit code 2, one line on stderr, no traceback, run data byte-for-byte unchanged."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from grokking import main
from grokking.cli import run
from grokking.rundir import RunDir

from .conftest import TINY_FLAGS, tree_checksums

runner = CliRunner()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("errors")
    result = runner.invoke(main, ["train", *TINY_FLAGS, "--run-dir", str(root / "run")])
    assert result.exit_code == 0, result.output
    other = runner.invoke(main, ["train", *TINY_FLAGS, "--seed", "5", "--run-dir", str(root / "other")])
    assert other.exit_code == 0, other.output
    return root


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:200])


def _foreign_snapshot(run: Path) -> None:
    shutil.copy(run.parent / "other" / "checkpoints" / "step_00000040.pt", run / "checkpoints" / "step_00000099.pt")


def _truncate_latest(run: Path) -> None:
    _truncate(run / "checkpoints/latest.pt")


def _truncate_snapshot(run: Path) -> None:
    _truncate(run / "checkpoints/step_00000020.pt")


def _no_checkpoints(run: Path) -> None:  # as runs/examples commits them
    shutil.rmtree(run / "checkpoints")


def _empty_metrics(run: Path) -> None:
    (run / "metrics.jsonl").write_text("")


CUDA_MISSING = pytest.param(
    ["train", "--device", "cuda", "--dry-run"],
    None,
    "no CUDA GPU",
    marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present"),
)

CASES = [
    (["train", "--threads", "-1", "--dry-run"], None, "--threads must be 0"),
    (["train", "--op", "div", "--p", "12"], None, "must be prime"),
    (["train", "--p", "2"], None, "at least 3"),
    (["train", "--train-frac", "0"], None, "strictly between 0 and 1"),
    (["train", "--train-frac", "1.5"], None, "strictly between 0 and 1"),
    (["train", "--steps", "0"], None, "--steps must be a positive"),
    (["train", "--steps", "-5"], None, "--steps must be a positive"),
    (["train", "--batch-size", "2.5"], None, "--batch-size must be a count from 1 to the"),
    (["train", "--eval-every", "0"], None, "--eval-every must be a positive"),
    (["train", "--d-model", "30", "--n-heads", "4"], None, "divisible by --n-heads"),
    (["train", "--preset", "nope"], None, "paper_late, paper_wd, nanda_add, quick"),
    (["train", "--op", "pow"], None, "unknown operation"),
    (["train", "--optimizer", "sgd"], None, "unknown --optimizer 'sgd'"),
    (["train", "--device", "tpu"], None, "unknown --device 'tpu'"),
    CUDA_MISSING,
    (["train", *TINY_FLAGS, "--out-dir", "{run}/config.json"], None, "is a file"),
    (["train", *TINY_FLAGS, "--run-dir", "{run}", "--lr", "0.01"], None, "lr: 0.003 -> 0.01"),
    (["train", *TINY_FLAGS, "--run-dir", "{run}/checkpoints"], None, "not a grokking run dir"),
    (["train", *TINY_FLAGS, "--run-dir", "{run}/absent", "--resume"], None, "does not exist"),
    (["train", "--preset", "quick", *TINY_FLAGS, "--run-dir", "{run}/absent", "--resume"], None, "nothing to resume"),
    (["train", *TINY_FLAGS, "--run-dir", "{run}", "--resume"], _truncate_latest, "cannot load checkpoint"),
    (["plot", "--run-dir", "{run}/absent"], None, "does not exist"),
    (["plot", "--run-dir", "{run}"], _empty_metrics, "no metrics yet"),
    (["plot", "--run-dir", "{run}", "--run-dir", "{run}"], None, "--out"),
    (["eval", "--run-dir", "{run}/absent"], None, "does not exist"),
    (["eval", "--run-dir", "{run}/.."], None, "not a grokking run dir"),  # the folder above run dirs
    (["eval", "--run-dir", "{run}"], _no_checkpoints, "has no checkpoints; train it first"),
    (["eval"], None, "exactly one of"),
    (["eval", "--checkpoint", "{run}/checkpoints/step_00000020.pt"], _truncate_snapshot, "cannot load checkpoint"),
    (["eval", "--checkpoint", "{run}/config.json"], None, "cannot load checkpoint"),
    (["eval", "--run-dir", "{run}"], _foreign_snapshot, "different config"),
    (["analyze", "--run-dir", "{run}"], _foreign_snapshot, "different config"),
    (["train", *TINY_FLAGS, "--seeds", "0-x"], None, "--seeds takes a range"),
    (["train", *TINY_FLAGS, "--seeds", "0-2", "--run-dir", "{run}"], None, "drop --run-dir"),
    (["train", *TINY_FLAGS, "--seeds", "0,1,1"], None, "--seeds 1 given more than once"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "damage", "message"), CASES)
def test_bad_input_fails_cleanly_and_touches_nothing(finished_run, tmp_path, monkeypatch, args, damage, message):
    run = Path(shutil.copytree(finished_run / "run", tmp_path / "run"))
    shutil.copytree(finished_run / "other", tmp_path / "other")
    monkeypatch.chdir(tmp_path)  # default run dirs land in tmp_path/runs, never in the repo
    if damage is not None:
        damage(run)
    before = tree_checksums(tmp_path)
    result = runner.invoke(main, [a.replace("{run}", str(run)) for a in args])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert message in lines[0]
    assert "Traceback" not in result.output
    assert tree_checksums(tmp_path) == before


class WritesAFile:
    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


def test_a_malicious_checkpoint_is_refused_and_runs_no_code(tmp_path):
    target = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"step": 1, "config": {}, "model": WritesAFile(target)}, evil)
    pickle.loads(pickle.dumps(WritesAFile(tmp_path / "control")))  # the payload does work when unpickled
    assert (tmp_path / "control").exists()
    result = runner.invoke(main, ["eval", "--checkpoint", str(evil)])
    assert result.exit_code == 2
    assert "refused" in result.stderr and "Traceback" not in result.output
    assert not target.exists()


def test_readers_skip_a_torn_last_line_and_never_modify_the_run(finished_run, tmp_path):
    run = RunDir(shutil.copytree(finished_run / "run", tmp_path / "run"))
    with run.metrics_path.open("a") as f:
        f.write('{"step": 50, "train_lo')
    before = tree_checksums(run.path)
    result = runner.invoke(main, ["plot", "--run-dir", str(run.path), "--out", str(tmp_path / "plots")])
    assert result.exit_code == 0, result.output
    assert "skipped a line that is incomplete" in result.stderr
    assert runner.invoke(main, ["eval", "--run-dir", str(run.path)]).exit_code == 0
    assert tree_checksums(run.path) == before


@pytest.mark.parametrize("command", [["analyze", "--run-dir"], ["bench", "--subnormals"]])
def test_an_error_off_a_terminal_is_the_first_line_of_stderr(command, tmp_path):
    result = runner.invoke(main, [*command, str(tmp_path / "missing")])
    assert result.exit_code == 2 and result.stderr.startswith("error: "), repr(result.stderr)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["train", "--bogus"],
            "No such option: --bogus (Possible options: --log, --logits, --loss); see `grokking train --help`",
        ),
        (["train", "--seed", "x"], "Invalid value for '--seed'"),
        (["train", "--seed"], "Option '--seed' requires an argument"),
        (["bogus"], "No such command 'bogus'; see `grokking --help`"),
        (["train", "--p", "2"], "at least 3"),  # grokking's own errors take the same road
    ],
)
def test_the_command_reports_click_usage_errors_in_one_line(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        run(args)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    assert list(tmp_path.iterdir()) == []


def test_the_command_exits_0_after_a_command_that_succeeds(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        run(["train", "--preset", "quick", "--dry-run"])
    assert exit_.value.code == 0
    assert '"preset": "quick"' in capsys.readouterr().out
