"""A fake SLURM for tests: `sbatch`, `srun`, `sacct`, `scontrol requeue` and `scancel` as far as
submitit and `grokking sweep --slurm` use them, running a job array's tasks on this machine as real
processes. Run as `python fake_slurm.py COMMAND ARGS...` (the test puts one shell wrapper a command
on PATH); its state lives in $FAKE_SLURM_DIR, where the tests read it too.

What it keeps of SLURM: sbatch answers "Submitted batch job N" at once and a scheduler process runs
the batch script once per array task (`--array=0-3%2`: at most 2 at once), with the SLURM_*
variables submitit reads, the task's stdout and stderr appended to `--output`/`--error`, and its CPUs
limited to `--cpus-per-task` (as a cgroup would); srun runs the step in place of itself, so signals
reach it; `scancel --signal SIG ID` signals the running step (as submitit's `_interrupt` does);
`scontrol requeue ID` makes the task run again once it exits; sacct reports each task's state.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

STATE = Path(os.environ.get("FAKE_SLURM_DIR", "fake-slurm"))
TASKS = STATE / "tasks"
JOBS = STATE / "jobs"


def task_file(task: str, kind: str) -> Path:
    return TASKS / f"{task}.{kind}"


def read(task: str, kind: str, default: str = "") -> str:
    try:
        return task_file(task, kind).read_text()
    except FileNotFoundError:
        return default


def write(task: str, kind: str, text: str) -> None:
    path = task_file(task, kind)
    path.with_suffix(".tmp").write_text(text)
    path.with_suffix(".tmp").replace(path)


def tasks_of(job: str) -> list[str]:
    """`1000` -> every task of job 1000 (`1000_0`, …, or `1000` itself); `1000_2` -> that task."""
    if "_" in job:
        return [job]
    record = json.loads((JOBS / f"{job}.json").read_text())
    return [task for task, _ in record["tasks"]]


def sbatch(args: list[str]) -> None:
    script = Path(args[-1])
    options: dict[str, str] = {}
    for line in script.read_text().splitlines():
        if line.startswith("#SBATCH --"):
            key, _, value = line.removeprefix("#SBATCH --").partition("=")
            options[key] = shlex.split(value)[0] if value else "true"
    TASKS.mkdir(parents=True, exist_ok=True)
    JOBS.mkdir(parents=True, exist_ok=True)
    with open(STATE / "next_id", "a+") as counter:
        fcntl.flock(counter, fcntl.LOCK_EX)
        counter.seek(0)
        job = str(int(counter.read() or 1000))
        counter.seek(0)
        counter.truncate()
        counter.write(str(int(job) + 1))
    if "array" in options:
        span, _, parallel = options["array"].partition("%")
        first, last = (int(n) for n in span.split("-"))
        tasks = [(f"{job}_{i}", i) for i in range(first, last + 1)]
        parallelism = int(parallel or len(tasks))
    else:
        tasks, parallelism = [(job, None)], 1
    record = {"script": str(script), "options": options, "tasks": tasks, "parallelism": parallelism}
    (JOBS / f"{job}.json").write_text(json.dumps(record))
    for task, _ in tasks:
        write(task, "state", "PENDING")
    with open(STATE / "sbatch.log", "a") as calls:
        calls.write(f"{job} {script}\n")
    scheduler = subprocess.Popen(
        [sys.executable, __file__, "schedule", job],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=open(STATE / f"scheduler_{job}.err", "w"),
        start_new_session=True,  # outlives sbatch, which submitit waits for
    )
    (JOBS / f"{job}.scheduler").write_text(str(scheduler.pid))
    print(f"Submitted batch job {job}")


def expand(pattern: str, job: str, index: int | None) -> str:
    text = pattern.replace("%A", job).replace("%j", job).replace("%t", "0")
    return text.replace("%a", str(index)) if index is not None else text


def schedule(args: list[str]) -> None:
    """Run the job's tasks, at most `parallelism` at once, a requeued task again after the others."""
    job = args[0]
    record = json.loads((JOBS / f"{job}.json").read_text())
    options = record["options"]
    waiting = [tuple(t) for t in record["tasks"]]
    running: dict[str, tuple[subprocess.Popen, int | None, list[int]]] = {}
    cpus = int(options.get("cpus-per-task", "0"))
    allowed = sorted(os.sched_getaffinity(0))
    while waiting or running:
        while waiting and len(running) < record["parallelism"]:
            task, index = waiting.pop(0)
            if task_file(task, "cancel").exists():
                write(task, "state", "CANCELLED")
                continue
            env = dict(os.environ, SLURM_JOB_ID=job, SLURM_NTASKS="1", SLURM_JOB_NUM_NODES="1", SLURM_NODEID="0")
            env.update(SLURM_PROCID="0", SLURM_LOCALID="0", SLURM_JOB_NODELIST="localhost")
            env["SLURM_RESTART_COUNT"] = read(task, "restarts", "0")
            if index is not None:
                env.update(SLURM_ARRAY_JOB_ID=job, SLURM_ARRAY_TASK_ID=str(index))
            if cpus:
                env["SLURM_CPUS_PER_TASK"] = str(cpus)
            taken = {c for _, _, mine in running.values() for c in mine}
            mine = ([c for c in allowed if c not in taken] + allowed)[:cpus]  # a node's cores, none shared
            write(task, "state", "RUNNING")
            with (
                open(expand(options["output"], job, index), "a") as out,
                open(expand(options.get("error", options["output"]), job, index), "a") as err,
            ):
                process = subprocess.Popen(
                    ["bash", record["script"]],
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    preexec_fn=(lambda: os.sched_setaffinity(0, mine)) if cpus else None,  # noqa: B023
                )
            running[task] = (process, index, mine)
        time.sleep(0.05)
        for task, (process, index, _) in list(running.items()):
            code = process.poll()
            if code is None:
                continue
            del running[task]
            task_file(task, "step").unlink(missing_ok=True)
            if task_file(task, "requeue").exists():
                task_file(task, "requeue").unlink()
                write(task, "restarts", str(int(read(task, "restarts", "0")) + 1))
                write(task, "state", "REQUEUED")
                waiting.append((task, index))
            elif task_file(task, "cancel").exists():
                write(task, "state", "CANCELLED")
            else:
                write(task, "state", "COMPLETED" if code == 0 else "FAILED")


def srun(args: list[str]) -> None:
    """Run the step in place of srun (so that it gets the signals), its output appended to --output/--error."""
    files = {}
    while args and args[0].startswith("--"):
        option = args.pop(0)
        if option in ("--output", "--error"):
            files[option] = args.pop(0)
    job, index = os.environ["SLURM_JOB_ID"], os.environ.get("SLURM_ARRAY_TASK_ID")
    task = f"{job}_{index}" if index is not None else job
    for option, fd in (("--output", 1), ("--error", 2)):
        if option in files:
            path = expand(files[option], job, int(index) if index is not None else None)
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND), fd)
    write(task, "step", str(os.getpid()))
    os.execvp(args[0], args)


def sacct(args: list[str]) -> None:
    fields = args[args.index("-o") + 1].split(",")
    jobs = [args[i + 1] for i, word in enumerate(args) if word == "-j"]
    print("|".join(fields))
    for job in jobs:
        if not (JOBS / f"{job.split('_')[0]}.json").exists():
            continue
        for task in tasks_of(job):
            values = {"JobID": task, "State": read(task, "state", "PENDING"), "NodeList": "localhost"}
            print("|".join(values.get(f, "") for f in fields))


def scontrol(args: list[str]) -> None:
    if args[0] != "requeue":
        sys.exit(f"fake scontrol: only `scontrol requeue` is faked (got {args})")
    for task in tasks_of(args[1]):
        task_file(task, "requeue").touch()


def scancel(args: list[str]) -> None:
    number = None
    jobs = []
    while args:
        word = args.pop(0)
        if word.startswith("--signal"):
            name = word.partition("=")[2] or args.pop(0)
            number = signal.Signals["SIG" + name.upper().removeprefix("SIG")]
        else:
            jobs.append(word)
    for job in jobs:
        for task in tasks_of(job):
            if number is None:
                task_file(task, "cancel").touch()
            step = read(task, "step")
            if step and read(task, "state") == "RUNNING":
                os.kill(int(step), number or signal.SIGTERM)


if __name__ == "__main__":
    {"sbatch": sbatch, "schedule": schedule, "srun": srun, "sacct": sacct, "scontrol": scontrol, "scancel": scancel}[
        sys.argv[1]
    ](sys.argv[2:])
