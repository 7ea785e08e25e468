"""Sweeps on a SLURM cluster: the unfinished points of a sweep as one job array, through submitit.

Each array task trains one point into its ordinary run dir with `grokking.train.train_seeds`, as a
local sweep does, so everything downstream reads the results as if they had trained here. The sweep
folder gains `slurm.json` (each point's job id and log) and `slurm/` (submitit's batch script,
pickles and logs). SLURM warns a task before its time limit, and at pre-emption where the cluster
sends the user signal, with submitit's signal (USR2): the task then stops at the end of its step
with a checkpoint and submitit requeues it; the requeued task continues from latest.pt, exactly.
A point's status joins its run dir (done?) with sacct (queued, running, failed), so submitting the
same sweep again sends only what is neither done nor in the queue.

submitit is an optional extra; nothing here imports it until a SLURM sweep is asked for.
"""

from __future__ import annotations

import math
import os
import signal
import time
import typing
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from grokking.config import RunConfig
from grokking.errors import GrokkingError, first_line
from grokking.observer import Observer
from grokking.processes import available_cores
from grokking.rundir import atomic_write_json, read_json
from grokking.sweep import FALSE, TRUE, Sweep, check_jobs, point_report, write_manifest

JOBS_FILE = "slurm.json"  # beside sweep.json: {"points": {name: {"job_id", "log", "submitted"}}}
FOLDER = "slurm"  # submitit's files: batch scripts, pickled tasks and results, logs
EXTRA_HINT = "SLURM sweeps need submitit, an optional extra: install it with `uv sync --extra slurm`"
COMMON_OPTIONS = (
    "partition, time (minutes; default 60), cpus_per_task, gpus_per_node, mem (GB), account, qos, constraint, "
    "setup (a shell line run before the task)"
)
# A sweep's points run for hours, not submitit's default of 5 minutes; a task that reaches the limit
# is requeued and continues, so the limit sets the length of a sitting, not of a point.
DEFAULTS = {"job_name": "grokking", "time": 60}
MAX_TIMEOUTS = 100  # requeues after a time limit before a point counts as failed (each one resumes exactly)
OURS = {"array_parallelism": "give --jobs N instead", "additional_parameters": "it is not settable here"}
WARNING_GRACE_S = 5.0  # after a SIGTERM, how long a task waits for the warning that makes it a pre-emption

# sacct states (the first word: "CANCELLED by 0") of a job that has not ended
QUEUED = {"PENDING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "CONFIGURING", "RESV_DEL_HOLD", "SUSPENDED"}
RUNNING = {"RUNNING", "COMPLETING", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED"}
WAITING = ("queued", "running", "unknown")  # statuses that a new submission leaves alone


def require_submitit() -> Any:
    try:
        import submitit
    except ImportError:
        raise GrokkingError(EXTRA_HINT) from None
    return submitit


class PointTask:
    """One array task: train one point as a local sweep does (`train_seeds`, all the task's cores).

    submitit calls `checkpoint` when SLURM's warning arrives and requeues what it returns: the same
    call, which continues the run dir from latest.pt. Training saves that checkpoint when it stops on
    SIGTERM, so the warning is turned into one; a SIGTERM of its own (scancel) stops the task with its
    checkpoint saved but requeues nothing unless the warning follows (pre-emption sends both)."""

    def __call__(self, config: RunConfig, run_dir: str, log: Sequence[str] = ()) -> dict[str, Any]:
        from grokking.train import TrainingInterrupted, train_seeds  # the engine only in the task: start-up

        warned: list[int] = []
        warning = submitit_warning_signal()
        handler = signal.getsignal(warning)  # submitit's: dump checkpoint(), `scontrol requeue`, exit

        def stop_on_warning(number: int, frame: Any) -> None:
            warned.append(number)
            if callable(signal.getsignal(signal.SIGTERM)):  # training's (or submitit's, which ignores it)
                signal.raise_signal(signal.SIGTERM)  # train_seeds stops at the end of the step, latest.pt saved

        try:
            signal.signal(warning, stop_on_warning)
        except ValueError:  # not the main thread: signals are not ours to take
            handler = None
        try:
            threads = task_threads()
            if not warned:  # a warning before training took SIGTERM over would otherwise be lost
                summary = train_seeds([config], [run_dir], observer=TaskLog(threads), threads=threads, log=log)[0]
                print(f"done: {summary['steps_done']:,} steps, stopped: {summary['stopped']}", flush=True)
                return summary
        except TrainingInterrupted:
            deadline = time.monotonic() + WARNING_GRACE_S
            while not warned and time.monotonic() < deadline:
                time.sleep(0.05)
            if not warned:
                raise
        finally:
            if handler is not None:
                signal.signal(warning, handler)
        if not callable(handler):  # not run by submitit: nobody to requeue it
            raise TrainingInterrupted(warning)
        print("warned by SLURM: checkpoint saved, requeueing", flush=True)
        handler(warning, None)  # submitit's: exits the process
        raise TrainingInterrupted(warning)  # where it returns instead (a task of rank > 0)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """What submitit requeues after the warning: the same call, continuing from latest.pt."""
        return require_submitit().helpers.DelayedSubmission(self, *args, **kwargs)


def task_threads() -> int:
    """The CPUs SLURM gave the task, within the cores it may run on: a cluster that does not bind a
    task to its cores shows it the whole node, which the tasks sharing the node would oversubscribe."""
    cores = available_cores()
    for name in ("SLURM_CPUS_PER_TASK", "SLURM_CPUS_ON_NODE"):
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            return min(cores, int(value))
    return cores


class TaskLog(Observer):
    """Where the task's log says a sitting starts: a fresh run at step 0, a requeued one where it left off."""

    def __init__(self, threads: int):
        self.threads = threads

    def started(self, runs: Sequence[Any], total: int) -> None:
        run, threads = runs[0], f"{self.threads} thread{'s' * (self.threads > 1)}"
        print(f"training {run.run.path} from step {run.state.step:,} of {total:,} ({threads})", flush=True)


def submitit_warning_signal() -> signal.Signals:
    """The signal SLURM sends before the time limit: submitit asks for USR2 unless told otherwise."""
    return require_submitit().JobEnvironment._usr_sig()


def parse_slurm_options(specs: Sequence[str]) -> dict[str, Any]:
    """`--slurm-opt KEY=VALUE` arguments -> submitit SlurmExecutor parameters, each value of its type."""
    from submitit.slurm.slurm import SlurmExecutor, _make_sbatch_string

    hints = typing.get_type_hints(_make_sbatch_string)
    valid = sorted(SlurmExecutor._valid_parameters() - set(OURS))
    options: dict[str, Any] = {}
    for spec in specs:
        key, sep, text = spec.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key or not text.strip():
            raise GrokkingError(f"--slurm-opt takes KEY=VALUE, e.g. --slurm-opt partition=gpu (got {spec!r})")
        if key in OURS:
            raise GrokkingError(f"--slurm-opt {key}: {OURS[key]}")
        if key not in valid:
            raise GrokkingError(
                f"--slurm-opt {key}: unknown key; common keys: {COMMON_OPTIONS}; all: {', '.join(valid)}"
            )
        value = _option_value(key, text.strip(), hints[key])
        if isinstance(value, list):
            options[key] = options.get(key, []) + value
        else:
            options[key] = value
    return options


def _option_value(key: str, text: str, hint: Any) -> Any:
    """`text` as the type submitit declares for `key` (an int, a flag, a word, or one more list item)."""
    kinds = set(typing.get_args(hint) or (hint,)) - {type(None)}
    if key == "mem":  # submitit takes GB and writes the unit itself
        try:
            gigabytes = float(text.upper().removesuffix("B").removesuffix("G"))
        except ValueError:
            gigabytes = math.nan
        return gigabytes if 0 < gigabytes < math.inf else _bad(key, text, "a positive number of GB, e.g. mem=16")
    if {typing.get_origin(k) for k in kinds} & {list, Iterable, Sequence}:
        return [text]
    if bool in kinds and text.lower() in TRUE + FALSE:
        return text.lower() in TRUE
    if int in kinds:
        try:
            return int(text)
        except ValueError:
            return _bad(key, text, "a whole number")
    if str in kinds:
        return text
    return _bad(key, text, "true or false")


def _bad(key: str, text: str, expected: str) -> Any:
    raise GrokkingError(f"--slurm-opt {key}={text!r}: expected {expected}")


def slurm_executor(out_dir: Path, jobs: int | None, specs: Sequence[str]) -> Any:
    """A submitit SlurmExecutor writing to OUT_DIR/slurm, with our defaults, `--slurm-opt` values and
    at most `jobs` tasks of the array running at once (no cap of ours when None)."""
    submitit = require_submitit()
    parameters = {**DEFAULTS, **parse_slurm_options(specs)}
    if jobs is not None:
        check_jobs(jobs)
        parameters["array_parallelism"] = jobs
    try:
        executor = submitit.SlurmExecutor(folder=out_dir / FOLDER, max_num_timeout=MAX_TIMEOUTS)
    except RuntimeError:
        raise GrokkingError(
            "--slurm: `srun` is not on PATH; submit from a SLURM login node, or drop --slurm to train here"
        ) from None
    try:
        executor.update_parameters(**parameters)
    except (ValueError, TypeError) as e:
        raise GrokkingError(f"--slurm-opt: {first_line(e)}") from None
    return executor


def read_jobs(out_dir: Path) -> dict[str, dict[str, Any]]:
    """The job that each point was last submitted as, from OUT_DIR/slurm.json (none when absent)."""
    path = Path(out_dir) / JOBS_FILE
    if not path.is_file():
        return {}
    data = read_json(path)
    points = data.get("points") if isinstance(data, dict) else None
    if not isinstance(points, dict) or not all(isinstance(j, dict) and "job_id" in j for j in points.values()):
        raise GrokkingError(f"{path} names no job of any point; restore it or remove it")
    return points


def job_states(job_ids: set[str]) -> dict[str, str]:
    """sacct's state of each job (UNKNOWN where it knows none), through submitit's watcher."""
    if not job_ids:
        return {}
    from submitit.slurm.slurm import SlurmInfoWatcher

    watcher = SlurmInfoWatcher()
    for job_id in job_ids:
        watcher.register_job(job_id)
    watcher.update()
    return {job_id: watcher.get_state(job_id, mode="cache") for job_id in job_ids}


def status_of(state: str) -> str:
    """A point's status from the state of the job that holds it, when its run dir is not done."""
    word = state.split()[0].upper() if state.strip() else "UNKNOWN"
    if word in QUEUED:
        return "queued"
    if word in RUNNING:
        return "running"
    return "unknown" if word == "UNKNOWN" else "failed"


def sweep_status(sweep: Sweep) -> list[dict[str, Any]]:
    """Each point's report (`point_report`), its status done, queued, running or failed where a job
    holds it (else partial or new, as locally), and that job's id, sacct state and log."""
    jobs = read_jobs(sweep.out_dir)
    reports = [point_report(p) for p in sweep.points]
    pending = {jobs[r["name"]]["job_id"] for r in reports if r["status"] != "done" and r["name"] in jobs}
    if pending:
        require_submitit()
    states = job_states(pending)
    for report in reports:
        job = jobs.get(report["name"])
        if job is None:
            continue
        report.update(job_id=job["job_id"], log=job.get("log"))
        if report["status"] != "done":
            report["slurm_state"] = states[job["job_id"]]
            report["status"] = status_of(report["slurm_state"])
    return reports


def submit_sweep(sweep: Sweep, executor: Any, log: Sequence[str] = ()) -> tuple[list[Any], list[dict[str, Any]]]:
    """Submit every point that is neither done nor waiting in the queue as one job array of
    `executor` (one task a point), record the job ids in OUT_DIR/slurm.json, and return submitit's
    jobs (whose `result()` is each point's summary) and every point's status."""
    write_manifest(sweep)
    reports = sweep_status(sweep)
    todo = [p for p, r in zip(sweep.points, reports) if r["status"] != "done" and r["status"] not in WAITING]
    if not todo:
        return [], reports
    submitit = require_submitit()
    configs = [p.config for p in todo]
    runs = [str(p.run.path.absolute()) for p in todo]
    try:
        jobs = executor.map_array(PointTask(), configs, runs, [tuple(log)] * len(todo))
    except (submitit.core.utils.FailedJobError, submitit.core.utils.FailedSubmissionError) as e:
        raise GrokkingError(f"the cluster refused the job array: {first_line(e)}") from None
    recorded = read_jobs(sweep.out_dir)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    for point, job in zip(todo, jobs):
        recorded[point.name] = {"job_id": job.job_id, "log": str(job.paths.stderr), "submitted": now}
    atomic_write_json(sweep.out_dir / JOBS_FILE, {"points": recorded})
    submitted = {p.name for p in todo}
    for report in reports:  # as sacct will tell: these are pending now
        if report["name"] in submitted:
            job = recorded[report["name"]]
            report.update(status="queued", job_id=job["job_id"], log=job["log"], slurm_state="PENDING")
    return jobs, reports


def failure_lines(reports: Sequence[dict[str, Any]]) -> list[str]:
    """A line for each point whose job ended before the point was done, with where its log is."""
    return [
        f"{r['name']}: job {r['job_id']} ended {r['slurm_state']} before the point was done; its log: {r['log']}"
        for r in reports
        if r["status"] == "failed"
    ]


def submitted_text(jobs: Sequence[Any], reports: Sequence[dict[str, Any]]) -> str:
    """What a submission did, e.g. "4 of 4 points submitted as SLURM job 1234 (an array of 4 tasks)"."""
    if not jobs:
        return f"nothing to submit: the {len(reports)} points are done, queued or running"
    tasks = f"an array of {len(jobs)} tasks" if len(jobs) > 1 else "one task"
    return f"{len(jobs)} of {len(reports)} points submitted as SLURM job {jobs[0].job_id.split('_')[0]} ({tasks})"
