"""`grokking sweep --slurm`: one job array through submitit, run by a fake SLURM (tests/fake_slurm.py)
whose tasks are real processes: real submission, batch script, signals, requeue and results."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import submitit
from typer.testing import CliRunner

from grokking import main
from grokking.rundir import RunDir
from grokking.slurm import parse_slurm_options, read_jobs, status_of, submit_sweep, sweep_status
from grokking.sweep import load_sweep, plan_sweep
from grokking.train import train_seeds

from .conftest import without_timing

runner = CliRunner()
FAKE = Path(__file__).with_name("fake_slurm.py")
COMMANDS = ("sbatch", "srun", "sacct", "scontrol", "scancel")
# `--preset quick --steps 50` on a small table; one CPU a task, so that runs repeat bit for bit.
SWEEP = ["sweep", "--preset", "quick", "--set", "p=11", "--steps", "50", "--slurm", "--slurm-opt", "cpus_per_task=1"]


class FakeSlurm:
    """The fake scheduler's state folder, as the tests read it."""

    def __init__(self, state: Path):
        self.state = state

    def submissions(self) -> list[str]:
        path = self.state / "sbatch.log"
        return path.read_text().splitlines() if path.exists() else []

    def read(self, task: str, kind: str) -> str:
        path = self.state / "tasks" / f"{task}.{kind}"
        return path.read_text() if path.exists() else ""

    def wait_until_ended(self, timeout: float = 120) -> None:
        """Until every task of every job has ended (not pending, running or requeued)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = [p.read_text() for p in (self.state / "tasks").glob("*.state")]
            if states and all(s in ("COMPLETED", "FAILED", "CANCELLED") for s in states):
                return
            time.sleep(0.1)
        raise AssertionError(f"the fake SLURM's tasks did not end: {states}")

    def schedulers(self) -> list[int]:
        return [int(p.read_text()) for p in (self.state / "jobs").glob("*.scheduler")]


@pytest.fixture
def slurm(tmp_path, monkeypatch):
    """SLURM's commands on PATH, faked by fake_slurm.py; the schedulers it started are ended after the test."""
    bin_dir, state = tmp_path / "bin", tmp_path / "fake-slurm"
    bin_dir.mkdir()
    for name in COMMANDS:
        wrapper = bin_dir / name
        wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} {FAKE} {name} "$@"\n')
        wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM_DIR", str(state))
    monkeypatch.setenv("SUBMITIT_LOG_LEVEL", "WARNING")
    fake = FakeSlurm(state)
    yield fake
    for pid in fake.schedulers() if (state / "jobs").exists() else []:
        try:
            os.killpg(pid, signal.SIGKILL)  # each scheduler leads its own session, with its tasks
        except ProcessLookupError:
            pass


def invoke(*args):
    return runner.invoke(main, [str(a) for a in args])


def reference(tmp_path: Path, seed: int) -> list[dict]:
    """The metrics of the point trained here, uninterrupted, on one thread."""
    sweep = plan_sweep("quick", [f"seed={seed}"], tmp_path / "reference", {"steps": 50}, ["p=11"])
    point = sweep.points[0]
    train_seeds([point.config], [point.run], threads=1)
    return without_timing(point.run)


@pytest.mark.slow
def test_sweep_is_one_array_whose_tasks_train_the_points_and_rerunning_submits_nothing(slurm, tmp_path):
    out = tmp_path / "sweep"
    result = invoke(*SWEEP, "--grid", "seed=0-3", "--jobs", 2, "--out-dir", out)
    assert result.exit_code == 0, result.output
    assert "4 of 4 points submitted as SLURM job 1000 (an array of 4 tasks)" in result.output
    (job,) = slurm.submissions()
    script = Path(job.split()[1]).read_text()
    assert "#SBATCH --array=0-3%2" in script and "#SBATCH --cpus-per-task=1" in script
    assert "#SBATCH --signal=USR2@90" in script and "#SBATCH --time=60" in script
    slurm.wait_until_ended()
    sweep = load_sweep(out)
    for point in sweep.points:
        summary = point.run.read_summary()
        assert summary is not None and summary["steps_done"] == 50
    # submitit collects each task's result: the summary its training returned
    jobs = read_jobs(out)
    results = [submitit.SlurmJob(out / "slurm", jobs[p.name]["job_id"]).result() for p in sweep.points]
    assert results == [p.run.read_summary() for p in sweep.points]
    assert [jobs[p.name]["job_id"] for p in sweep.points] == [f"1000_{i}" for i in range(4)]
    assert [r["status"] for r in sweep_status(sweep)] == ["done"] * 4

    again = invoke(*SWEEP, "--grid", "seed=0-3", "--out-dir", out)
    assert again.exit_code == 0, again.output
    assert "nothing to submit" in again.output
    assert len(slurm.submissions()) == 1

    status = invoke("sweep", "--status", "--out-dir", out)
    assert status.exit_code == 0, status.output
    assert status.output.count("done") == 4 and "1000_3" in status.output
    runs = invoke("runs", out, "--json")  # submitit's folder beside the run dirs is no run of its own
    assert runs.exit_code == 0 and len(json.loads(runs.output)) == 4


def stop_mid_run(slurm: FakeSlurm, tasks: dict[str, RunDir]) -> list[int]:
    """Freeze each task's training (SIGSTOP) between its first and its last evaluation; their pids."""
    frozen: dict[str, int] = {}
    deadline = time.monotonic() + 120
    while len(frozen) < len(tasks) and time.monotonic() < deadline:
        for task, run in tasks.items():
            pid = slurm.read(task, "step")
            if task not in frozen and pid and run.metrics_path.is_file() and run.metrics_path.read_text():
                os.kill(int(pid), signal.SIGSTOP)
                assert run.read_summary() is None, f"task {task} finished before it could be stopped mid-run"
                frozen[task] = int(pid)
        time.sleep(0.01)
    assert len(frozen) == len(tasks), f"only {sorted(frozen)} of the tasks started training"
    return list(frozen.values())


@pytest.mark.slow
def test_preempted_task_resumes_exactly_and_a_cancelled_point_is_reported_then_resubmitted(slurm, tmp_path):
    out = tmp_path / "sweep"
    result = invoke(*SWEEP, "--grid", "seed=0-1", "--out-dir", out)
    assert result.exit_code == 0, result.output
    preempted, cancelled = load_sweep(out).points
    frozen = stop_mid_run(slurm, {"1000_0": preempted.run, "1000_1": cancelled.run})
    submitit.SlurmJob(out / "slurm", "1000_0")._interrupt()  # pre-emption as submitit fakes it: SIGTERM, then USR2
    subprocess.run(["scancel", "1000_1"], check=True)  # SIGTERM alone: a checkpoint, and no requeue
    for pid in frozen:
        os.kill(pid, signal.SIGCONT)
    slurm.wait_until_ended()

    assert slurm.read("1000_0", "restarts") == "1" and slurm.read("1000_0", "state") == "COMPLETED"
    assert slurm.read("1000_1", "restarts") == "" and slurm.read("1000_1", "state") == "CANCELLED"
    sittings = re.findall(r"from step (\d+) of 50 \((\d+) threads?\)", (out / "slurm" / "1000_0_0_log.out").read_text())
    assert sittings[0] == ("0", "1") and 0 < int(sittings[1][0]) < 50  # resumed where it stopped, on its one CPU
    assert without_timing(preempted.run) == reference(tmp_path, 0)
    reports = sweep_status(load_sweep(out))
    assert [(r["status"], r["job_id"]) for r in reports] == [("done", "1000_0"), ("failed", "1000_1")]
    assert Path(reports[1]["log"]).is_file() and reports[1]["log"].endswith("1000_1_0_log.err")
    assert "stopped by SIGTERM" in Path(reports[1]["log"]).read_text()
    status = invoke("sweep", "--status", "--out-dir", out)
    assert status.exit_code == 0 and "job 1000_1 ended CANCELLED before the point was done; its log: " in status.output

    again = invoke(*SWEEP, "--grid", "seed=0-1", "--out-dir", out)
    assert again.exit_code == 0, again.output
    assert "1 of 2 points submitted as SLURM job 1001 (one task)" in again.output
    slurm.wait_until_ended()
    (sitting,) = re.findall(r"from step (\d+) of 50", (out / "slurm" / "1001_0_log.out").read_text())
    assert 0 < int(sitting) < 50  # from the checkpoint the cancelled task saved
    assert without_timing(cancelled.run) == reference(tmp_path, 1)
    assert [r["status"] for r in sweep_status(load_sweep(out))] == ["done", "done"]


@pytest.mark.slow
def test_points_run_through_submitits_local_executor(tmp_path):
    # one point: the local executor's tasks share this machine's cores, each taking all of them
    sweep = plan_sweep("quick", ["seed=0"], tmp_path / "sweep", {"steps": 50}, ["p=11"])
    executor = submitit.LocalExecutor(folder=tmp_path / "sweep" / "slurm")
    executor.update_parameters(timeout_min=10)
    (job,), reports = submit_sweep(sweep, executor)
    assert [(r["status"], r["job_id"]) for r in reports] == [("queued", job.job_id)]
    assert job.result() == sweep.points[0].run.read_summary() and job.result()["steps_done"] == 50
    assert submit_sweep(sweep, executor)[0] == []  # done: nothing to submit


def test_slurm_options_take_submitits_types():
    options = parse_slurm_options(
        ["partition=gpu", "time=120", "cpus-per-task=4", "mem=16GB", "exclusive=true", "setup=module load a", "setup=b"]
    )
    assert options == {
        "partition": "gpu",
        "time": 120,
        "cpus_per_task": 4,
        "mem": 16.0,
        "exclusive": True,
        "setup": ["module load a", "b"],
    }


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--slurm-opt", "colour=blue"], "--slurm-opt colour: unknown key; common keys: partition"),
        (["--slurm-opt", "time=2h"], "--slurm-opt time='2h': expected a whole number"),
        (["--slurm-opt", "mem=lots"], "expected a positive number of GB"),
        (["--slurm-opt", "array_parallelism=4"], "--slurm-opt array_parallelism: give --jobs N instead"),
        (["--slurm-opt", "partition"], "--slurm-opt takes KEY=VALUE"),
        (["--jobs", "0"], "--jobs must be between 1 and 256"),
        ([], "--slurm: `srun` is not on PATH; submit from a SLURM login node"),
    ],
)
def test_bad_slurm_settings_are_one_line(tmp_path, monkeypatch, options, message):
    monkeypatch.setenv("PATH", str(tmp_path))  # no srun here
    result = invoke("sweep", "--grid", "seed=0-1", "--slurm", *options, "--out-dir", tmp_path / "sweep")
    assert result.exit_code == 2 and message in result.output
    assert result.output.count("\n") == 1 and not (tmp_path / "sweep").exists()


def test_without_the_extra_slurm_names_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)  # as if not installed: `import submitit` fails
    result = invoke("sweep", "--grid", "seed=0-1", "--slurm", "--out-dir", tmp_path / "sweep")
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert "`uv sync --extra slurm`" in result.output


@pytest.mark.parametrize(
    ("state", "status"),
    [("PENDING", "queued"), ("REQUEUED", "queued"), ("RUNNING", "running"), ("CANCELLED by 0", "failed")]
    + [("TIMEOUT", "failed"), ("OUT_OF_MEMORY", "failed"), ("COMPLETED", "failed"), ("UNKNOWN", "unknown")],
)
def test_a_points_status_follows_its_jobs_state_until_its_run_dir_is_done(state, status):
    assert status_of(state) == status  # COMPLETED without a finished run dir: the task ended early


def test_slurm_opt_needs_slurm(tmp_path):
    result = invoke("sweep", "--grid", "seed=0-1", "--slurm-opt", "time=5", "--out-dir", tmp_path / "sweep")
    assert result.exit_code == 2 and "add --slurm" in result.output


@pytest.mark.slow
def test_reproduce_submits_one_array_a_series_and_draws_what_the_cluster_trained(slurm, tmp_path):
    out = tmp_path / "fig3"
    submitted = invoke(
        "reproduce", "fig3", "--scale", "tiny", "--out-dir", out, "--slurm", "--slurm-opt", "cpus_per_task=1"
    )
    assert submitted.exit_code == 0, submitted.output
    assert len(slurm.submissions()) == 2  # s5_mul and add, one array each
    slurm.wait_until_ended()
    drawn = invoke("reproduce", "fig3", "--scale", "tiny", "--out-dir", out, "--draw-only")
    assert drawn.exit_code == 0, drawn.output
    panels = json.loads((out / "figures" / "fig3.json").read_text())["panels"]
    assert [panel["step"] for panel in panels] == [20, 20]
    assert [RunDir(panel["run_dir"]).read_summary()["steps_done"] for panel in panels] == [20, 20]
