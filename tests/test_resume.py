"""A run killed at any moment resumes to exactly the metrics of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from grokking.errors import GrokkingError
from grokking.rundir import RunDir
from grokking.train import Observer, TrainingInterrupted, is_snapshot_step, train

from .conftest import TINY_FLAGS, without_timing

# Long enough (a few seconds) that a signal lands mid-run; a checkpoint every 50 steps.
# One thread, given: resume is exact for the same thread count, which a share of the cores (--threads 0) would
# make depend on what else runs on the machine.
FLAGS = [*TINY_FLAGS, "--steps", "800", "--d-model", "64", "--checkpoint-every", "50", "--snapshot-every", "500",
         "--threads", "1"]  # fmt: skip


def train_process(run_dir: Path, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "grokking", "train", *FLAGS, "--run-dir", str(run_dir), *extra]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_step(run_dir: Path, step: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if any(r["step"] >= step for r in RunDir(run_dir).read_metrics()):
            return
        time.sleep(0.01)
    raise AssertionError(f"the run ended or stalled before step {step}: {process.communicate()}")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> list[dict]:
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    process = train_process(run_dir)
    assert process.wait() == 0, process.communicate()
    return without_timing(run_dir)


@pytest.mark.slow
@pytest.mark.parametrize("signal_number", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_killed_and_resumed_run_equals_an_uninterrupted_one(tmp_path, uninterrupted, signal_number):
    run_dir = tmp_path / "run"
    process = train_process(run_dir)
    wait_for_step(run_dir, 300, process)
    process.send_signal(signal_number)
    _, stderr = process.communicate(timeout=60)
    assert not (run_dir / "summary.json").exists(), "the signal should land before the run ends"
    if signal_number == signal.SIGKILL:
        assert process.returncode == -signal.SIGKILL
    else:
        assert process.returncode == 128 + signal_number
        assert "--resume" in stderr and "Traceback" not in stderr
    resumed = train_process(run_dir, "--resume")
    assert resumed.wait() == 0, resumed.communicate()
    assert without_timing(run_dir) == uninterrupted


def test_a_second_trainer_on_the_same_run_dir_is_refused(tmp_path, tiny):
    run = RunDir(tmp_path / "run")
    train(tiny, run)
    run.lock_path.write_text(str(os.getppid()))  # a live process "holds" it
    with pytest.raises(GrokkingError, match="is being trained by process"):
        train(tiny.replace(steps=60), run)
    with pytest.raises(GrokkingError, match="is being trained by process"):
        train(tiny, run, overwrite=True)
    assert run.read_metrics()[-1]["step"] == tiny.steps


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path, tiny):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run = RunDir(tmp_path / "run")
    train(tiny, run)
    run.lock_path.write_text(str(dead.pid))
    summary = train(tiny.replace(steps=60), run)
    assert summary["steps_done"] == 60
    assert not run.lock_path.exists()


def test_retention_is_dense_early_and_sparse_late(tiny):
    config = tiny.replace(steps=1_000_000, snapshot_every=100_000)
    kept = [s for s in range(1, config.steps + 1) if is_snapshot_step(config, s)]
    assert kept[:5] == [1, 2, 4, 8, 16]
    assert 100_000 in kept and 1_000_000 in kept and 150_000 not in kept
    assert len(kept) == 20 + 10 - 0  # 2^0..2^19 and every 100k (none of those is a power of two)


class SignalAt(Observer):
    """Sends this process SIGTERM while step `step` evaluates: after the loop decided whether it is the last."""

    def __init__(self, step: int):
        self.step = step

    def evaluated(self, run, record):
        if record["step"] == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def test_a_stop_during_a_step_stops_with_a_checkpoint(tmp_path, tiny):
    run = RunDir(tmp_path / "run")
    with pytest.raises(TrainingInterrupted) as stop:
        train(tiny, run, observer=SignalAt(4))  # checkpoint_every 10: only a stop saves latest.pt this early
    assert stop.value.step == 5 and run.latest_path.is_file()
    summary = train(tiny, run)
    assert summary["steps_done"] == tiny.steps and run.read_metrics()[0]["step"] == 1


def test_a_run_dir_from_before_a_switch_existed_resumes_where_the_switch_does_nothing(tmp_path, tiny):
    """Its config.json lacks the switch and loads the default; without biases attention_bias changes nothing,
    so the preset's value of it does not make the run 'a different config'."""
    config = tiny.replace(bias=False, steps=4)
    run = RunDir(tmp_path / "run")
    train(config, run)
    train(config.replace(attention_bias=False, steps=8), run)
    assert run.read_metrics()[-1]["step"] == 8
