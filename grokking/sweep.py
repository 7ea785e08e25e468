"""Parameter sweeps: a grid over RunConfig fields, one ordinary run dir a point, skip done, resume partial.

`sweep.json` in the sweep folder names the grid, the base config and the points with their outcomes
so far (rewritten as the sweep trains and by `grokking plot --sweep`); every point is a run dir
`<key>=<value>_…` beside it, trained by `grokking.train.train_seeds` (the seeds of one point
together where they can be), so a stopped sweep continues where it stopped. The keys and the
flags of emitted commands come from the config's own field metadata.
"""

from __future__ import annotations

import itertools
import math
import multiprocessing
import re
import shlex
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from grokking.config import (
    RESUMABLE_FIELDS,
    RunConfig,
    architecture,
    base_type,
    config_differences,
    field_types,
    flag_alias,
    flag_fields,
    int_span,
    preset_config,
    repeated,
    resolve,
)
from grokking.errors import GrokkingError, first_line
from grokking.observer import Observer
from grokking.processes import available_cores
from grokking.rundir import (
    RunDir,
    atomic_write_json,
    best_validation,
    check_same_config,
    read_json,
    require_directory_path,
    summarize,
)

MANIFEST = "sweep.json"
NOT_WITHIN_BUDGET = "not within budget"
TRUE, FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")
MAX_POINTS = 10_000
MAX_JOBS = 256
BEST = tuple(best_validation([]))  # the keys of the best validation accuracy and its step


def flag_aliases() -> dict[str, str]:
    """Sweep keys spelled as the short alias of a `grokking train` flag, e.g. {'op': 'operation'}."""
    aliases = {flag_alias(names[0]): names[0] for names in flag_fields().values() if len(names) == 1}
    return {alias[2:].replace("-", "_"): name for alias, name in aliases.items() if alias is not None}


def command_line(config: RunConfig, run: RunDir) -> str:
    """`grokking train --preset P --run-dir DIR` plus a flag for every field that differs from P."""
    preset = preset_config(config.preset)
    words = ["grokking", "train", "--preset", config.preset, "--run-dir", str(run.path)]
    for flag, names in flag_fields().items():
        values = [getattr(config, name) for name in names]
        if values == [getattr(preset, name) for name in names]:
            continue
        if None in values:
            raise GrokkingError(f"`grokking train` cannot set {', '.join(names)} back to its default (None)")
        if isinstance(values[0], bool):
            words.append(flag if values[0] else "--no-" + flag[2:])
        else:
            words += [flag, *(_text(v) for v in values)]
    return shlex.join(words)


def _text(value: Any) -> str:
    """A value as a command-line word: floats in their shortest exact form, bools as true/false."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "none" if value is None else repr(value) if isinstance(value, float) else str(value)


def field_of(key: str, option: str) -> str:
    """The RunConfig field a --grid/--set key names: a field (train_frac, train-frac) or a train flag (op)."""
    types = field_types()
    name = key.strip().replace("-", "_")
    name = name if name in types else flag_aliases().get(name, name)
    if name == "preset":
        raise GrokkingError(f"{option} preset: choose the preset with --preset; a sweep point has one preset")
    if name not in types:
        valid = ", ".join(k for k in types if k != "preset")
        raise GrokkingError(f"{option} {key}: unknown key; valid keys are {valid}")
    return name


def parse_value(name: str, text: str, option: str) -> Any:
    """One value of field `name`, parsed with the field's type (int, float, bool, str, or optional)."""
    kind = field_types()[name]
    base = base_type(kind)
    word = text.strip()
    if base is not kind and word.lower() in ("none", "null"):
        return None
    if base is bool and word.lower() in TRUE + FALSE:
        return word.lower() in TRUE
    if base is not bool:
        try:
            value = base(word)
            if not isinstance(value, float) or math.isfinite(value):
                return value
        except ValueError:
            pass
    if base is bool:
        hint = " (true or false)"
    elif base is float and word.lower().lstrip("+-") in ("nan", "inf", "infinity"):
        hint = " (finite numbers only)"
    else:
        hint = " (ranges a-b only for integer keys)" if "-" in word[1:] else ""
    raise GrokkingError(f"{option} {name}={text!r}: not a valid {base.__name__}{hint}")


def parse_values(name: str, text: str, option: str = "--grid") -> list[Any]:
    """`0.2,0.3`, an integer range `0-2`, or a mix `0-2,5` -> the values, in order, without repeats."""
    values: list[Any] = []
    integer = base_type(field_types()[name]) is int
    for word in text.split(","):
        span = int_span(word, f"{option} {name}=") if integer else None
        values += span if span is not None else [parse_value(name, word, option)]
    twice = repeated([_text(v) for v in values])
    if twice:
        raise GrokkingError(f"{option} {name}: {', '.join(twice)} given more than once")
    return values


def _split(spec: str, option: str) -> tuple[str, str]:
    key, sep, text = spec.partition("=")
    if not sep or not key.strip() or not text.strip():
        example = (
            "KEY=VALUES, e.g. --grid train_frac=0.3,0.5"
            if option == "--grid"
            else "KEY=VALUE, e.g. --set eval_every=100"
        )
        raise GrokkingError(f"{option} takes {example} (got {spec!r})")
    return key, text


def parse_grid(specs: list[str]) -> dict[str, list[Any]]:
    """`--grid` arguments -> {field: values}, in the order given."""
    grid: dict[str, list[Any]] = {}
    for spec in specs:
        key, text = _split(spec, "--grid")
        name = field_of(key, "--grid")
        if name in grid:
            raise GrokkingError(f"--grid {name} is given twice; list all its values in one --grid")
        grid[name] = parse_values(name, text, "--grid")
    return grid


def parse_settings(specs: list[str]) -> dict[str, Any]:
    """`--set` arguments -> {field: value}."""
    settings: dict[str, Any] = {}
    for spec in specs:
        key, text = _split(spec, "--set")
        name = field_of(key, "--set")
        settings[name] = parse_value(name, text, "--set")
    return settings


@dataclass(frozen=True)
class Point:
    """One combination of the swept values: its name, values, resolved config and run dir."""

    name: str
    values: dict[str, Any]
    config: RunConfig
    run: RunDir


@dataclass(frozen=True)
class Sweep:
    out_dir: Path
    base: RunConfig
    grid: dict[str, list[Any]]
    points: list[Point]


def point_name(values: dict[str, Any]) -> str:
    """`train_frac=0.3_seed=1`: stable, readable, and safe as a folder name."""
    return "_".join(f"{k}={re.sub(r'[^A-Za-z0-9.+-]', '-', _text(v))}" for k, v in values.items())


def build_sweep(base: RunConfig, grid: dict[str, list[Any]], out_dir: Path) -> Sweep:
    """Every grid point's validated config and run dir; refuses run dirs that hold other runs."""
    if not grid:
        raise GrokkingError("give at least one --grid KEY=VALUES, e.g. --grid train_frac=0.3,0.5")
    size = math.prod(len(values) for values in grid.values())
    if size > MAX_POINTS:
        raise GrokkingError(f"the grid has {size:,} points; split it into sweeps of at most {MAX_POINTS:,}")
    require_directory_path(out_dir, "--out-dir")
    points = []
    for combination in itertools.product(*grid.values()):
        values = dict(zip(grid, combination))
        name = point_name(values)
        config = RunConfig.from_dict({**base.to_dict(), **values}, source=f"sweep point {name}")
        try:
            config = resolve(config)
        except GrokkingError as e:
            raise GrokkingError(f"sweep point {name}: {e}") from None
        points.append(Point(name, values, config, RunDir(out_dir / name)))
    if len({p.name for p in points}) < len(points):
        raise GrokkingError(
            "two grid values give the same run dir name; make the values differ in more than punctuation"
        )
    sweep = Sweep(out_dir, base, grid, points)
    _check_manifest(sweep)
    for point in points:
        point_state(point)
    return sweep


def plan_sweep(
    preset: str,
    grid_specs: list[str],
    out_dir: Path,
    settings: dict[str, Any] | None = None,
    set_specs: list[str] | None = None,
    arch: str | None = None,
) -> Sweep:
    """The sweep of `grokking sweep`: the preset, its named architecture (`--arch`), fixed settings
    (`--steps`…, `--set`) and the grid."""
    fixed = parse_settings(set_specs or [])
    for name, value in (settings or {}).items():
        if name in fixed:
            raise GrokkingError(f"{name} is given both as --{name.replace('_', '-')} and with --set; give it once")
        fixed[name] = value
    grid = parse_grid(grid_specs)
    both = sorted(set(grid) & set(fixed))
    if both:
        raise GrokkingError(f"{', '.join(both)} is both swept (--grid) and fixed; give it once")
    base = preset_config(preset).replace(**(architecture(arch) if arch is not None else {}))
    return build_sweep(base.replace(**fixed), grid, out_dir)


def load_sweep(out_dir: Path) -> Sweep:
    """The sweep described by `out_dir/sweep.json`."""
    path = Path(out_dir) / MANIFEST
    try:
        data = read_json(path)
    except FileNotFoundError:
        raise GrokkingError(f"{path} does not exist; pass the --out-dir of a `grokking sweep`") from None
    grid = data.get("grid") if isinstance(data, dict) else None
    if not isinstance(grid, dict) or not all(isinstance(v, list) for v in grid.values()) or "base" not in data:
        raise GrokkingError(f"{path} has no grid and base config; it was not written by `grokking sweep`")
    for key, values in grid.items():
        scalars = all(v is None or isinstance(v, (bool, int, float, str)) for v in values)
        if key not in field_types() or key == "preset" or not values or not scalars or repeated(values):
            raise GrokkingError(f"{path}: grid key {key!r} has no valid list of values; restore the file or remove it")
    base = RunConfig.from_dict(data["base"], source=str(path))
    try:
        return build_sweep(base, grid, Path(out_dir))
    except GrokkingError as e:  # a grid value of the file: name the file
        raise GrokkingError(f"{path}: {e}") from None


def _check_manifest(sweep: Sweep) -> None:
    """Refuse to replace the sweep.json of a different sweep (other swept keys or base config)."""
    path = sweep.out_dir / MANIFEST
    try:
        old = read_json(path)
    except FileNotFoundError:
        return
    old_base = RunConfig.from_dict(old.get("base"), source=str(path)) if isinstance(old, dict) else None
    old_keys = list(old.get("grid") or {}) if isinstance(old, dict) else None
    # compared resolved, so that a default left open (None) equals the value an older sweep.json wrote out
    new = resolve(sweep.base)
    differences = (
        config_differences(resolve(old_base), new, ignore=RESUMABLE_FIELDS) if old_base else ["no base config"]
    )
    if old_keys != list(sweep.grid):
        differences.append(f"swept keys: {old_keys} -> {list(sweep.grid)}")
    if differences:
        raise GrokkingError(
            f"{sweep.out_dir} holds a different sweep ({'; '.join(differences)}); choose another --out-dir"
        )


def point_state(point: Point) -> tuple[str, dict[str, Any] | None]:
    """'done' (with its summary.json), 'partial' or 'new'; a run dir holding another config is refused."""
    run = point.run
    if not run.config_path.is_file():
        return "new", None
    check_same_config(
        run.read_config(), point.config, f"{run.path} holds a run with a different config", "choose another --out-dir"
    )
    summary = run.read_summary()
    if summary is None:
        return "partial", None
    steps_done = summary["steps_done"]
    grokked = summary.get("stopped") == "grokked" and point.config.stop_on_grok
    return ("done", summary) if steps_done >= point.config.steps or grokked else ("partial", None)


def point_report(point: Point) -> dict[str, Any]:
    """A point's outcome: memorization and generalization steps (or "not within budget") and accuracies."""
    status, summary = point_state(point)
    row = {"name": point.name, "values": point.values, "status": status}
    keys = ("memorization_step", "generalization_step", "final_train_acc", "final_val_acc", *BEST)
    if summary is not None:
        if not set(BEST) <= set(summary):  # a summary.json written before they were recorded
            summary = {**summary, **best_validation(point.run.read_metrics())}
        outcome = {"steps_done": summary["steps_done"], **{k: summary.get(k) for k in keys}}
        if outcome["generalization_step"] is None:
            outcome["generalization_step"] = NOT_WITHIN_BUDGET
    else:
        so_far = summarize(point.run.read_metrics())
        outcome = {"steps_done": so_far["last_step"], **{k: so_far[k] for k in keys}}
    return {**row, **outcome, "budget": point.config.steps}


def sweep_record(sweep: Sweep) -> dict[str, Any]:
    """The content of sweep.json: grid, base config, and every point's run dir, values and outcome so far."""
    points = [{"run_dir": p.run.path.name, **point_report(p)} for p in sweep.points]
    return {"grid": sweep.grid, "base": sweep.base.to_dict(), "points": points}


def write_manifest(sweep: Sweep, record: dict[str, Any] | None = None) -> Path:
    """Write sweep.json from `record` (default: the sweep's record now)."""
    path = sweep.out_dir / MANIFEST
    atomic_write_json(path, record or sweep_record(sweep))
    return path


def train_commands(sweep: Sweep) -> list[str]:
    """One `grokking train …` line a point, reproducing its config exactly (for GNU parallel, SLURM).

    A line break or other control character in a run dir's path would split its command (shell quoting
    keeps it, but line by line readers do not), so such a sweep is refused: call this before writing."""
    commands = [command_line(p.config, p.run) for p in sweep.points]
    if any(not char.isprintable() for line in commands for char in line):
        raise GrokkingError(
            f"{str(sweep.out_dir)!r} holds a line break or another control character, which would split the "
            "commands one a line; choose an --out-dir without one"
        )
    return commands


def check_jobs(jobs: int) -> None:
    """--jobs: points trained at once, here or as tasks of a SLURM array; checked the same way whether the
    sweep trains or only plans (--dry-run, --emit-commands)."""
    if not 1 <= jobs <= MAX_JOBS:
        raise GrokkingError(f"--jobs must be between 1 and {MAX_JOBS} (got {jobs})")


def _seed_groups(points: list[Point]) -> list[list[Point]]:
    """Points that differ only in their seed, in grid order."""
    groups: dict[tuple[str, ...], list[Point]] = {}
    for point in points:
        groups.setdefault(tuple(_text(v) for k, v in point.values.items() if k != "seed"), []).append(point)
    return list(groups.values())


def outcome_text(report: dict[str, Any]) -> str:
    memorized, generalized, steps = report["memorization_step"], report["generalization_step"], report["steps_done"]
    first = f"memorized at {memorized:,}" if memorized is not None else "not memorized"
    return f"{first} · " + (
        f"generalized at {generalized:,}" if isinstance(generalized, int) else f"not generalized within {steps:,} steps"
    )


def run_sweep(
    sweep: Sweep,
    observer: Observer | None = None,
    say: Callable[[str], None] = lambda line: None,
    log: Sequence[str] = (),
    jobs: int = 1,
) -> list[dict[str, Any]]:
    """Train every point that is not done (the seeds of a point together where they can be), telling
    `say` what happens, each point logged to the experiment loggers `log`; return every point's report.
    With `jobs` > 1, that many points (or seed groups) train side by side, each in its own process
    with an equal share of the cores (at least one thread), and `observer` is not told their steps."""
    return run_sweeps([sweep], observer, say, log, jobs)[0]


def run_sweeps(
    sweeps: Sequence[Sweep],
    observer: Observer | None = None,
    say: Callable[[str], None] = lambda line: None,
    log: Sequence[str] = (),
    jobs: int = 1,
) -> list[list[dict[str, Any]]]:
    """`run_sweep` over several sweeps at once (a recipe's series): their points share the `jobs`, so a
    sweep of one point does not leave the other cores idle; each sweep's reports, in order."""
    from grokking.train import train_seeds  # the engine (and torch) only when a sweep trains: start-up

    check_jobs(jobs)
    groups: list[tuple[Sweep, list[Point]]] = []
    names, total, done = _namer(sweeps), 0, 0
    for sweep in sweeps:
        write_manifest(sweep)
        todo = [p for p in sweep.points if point_state(p)[0] != "done"]
        total, done = total + len(sweep.points), done + len(sweep.points) - len(todo)
        finished = len(sweep.points) - len(todo)
        say(f"sweep {sweep.out_dir}: {len(sweep.points)} points, {finished} done, {len(todo)} to train")
        groups += [(sweep, group) for group in _seed_groups(todo)]
    if jobs > 1:
        _train_side_by_side(groups, jobs, say, log, names)
    else:
        for sweep, group in groups:
            left = total - done - len(group)
            say(f"{done} done · {left} after these · training {names(sweep, group)}")
            train_seeds([p.config for p in group], [p.run for p in group], observer=observer, log=log)
            write_manifest(sweep)
            for point in group:
                done += 1
                say(f"  ✓ {names(sweep, [point])}: {outcome_text(point_report(point))}")
    return [[point_report(p) for p in sweep.points] for sweep in sweeps]


def _namer(sweeps: Sequence[Sweep]) -> Callable[[Sweep, list[Point]], str]:
    """Names of a group's points for messages, after their sweep's folder where several sweeps train
    (`s5_mul/seed=0`)."""
    several = len(sweeps) > 1
    return lambda sweep, group: ", ".join(f"{sweep.out_dir.name}/{p.name}" if several else p.name for p in group)


def _train_side_by_side(
    groups: list[tuple[Sweep, list[Point]]],
    jobs: int,
    say: Callable[[str], None],
    log: Sequence[str],
    names: Callable[[Sweep, list[Point]], str],
) -> None:
    """Train `groups` in up to `jobs` worker processes at once. A stop signal is passed on to the
    workers, which save their checkpoints; a worker that fails lets the others finish, starts no more,
    and its error (already printed by the worker) ends the sweep."""
    from grokking.train import TrainingInterrupted, stop_signals  # as in run_sweep

    threads = max(1, available_cores() // jobs)
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no inherited torch threads or locks
    waiting, running, failed, stopping = list(groups), {}, [], False
    with stop_signals() as stop_requests:
        while running or (waiting and not stop_requests and not failed):
            while waiting and len(running) < jobs and not stop_requests and not failed:
                sweep, group = waiting.pop(0)
                arguments = ([p.config for p in group], [p.run.path for p in group], threads, tuple(log))
                worker = context.Process(target=train_in_worker, args=arguments)
                with ctrl_c_ignored():  # the worker inherits this until its training takes Ctrl-C over
                    worker.start()
                running[worker] = (sweep, group)
                say(f"training {names(sweep, group)} ({threads} thread{'s' * (threads > 1)})")
            if stop_requests and not stopping:
                stopping = True
                for worker in running:
                    worker.terminate()  # SIGTERM: the worker saves its checkpoint and stops
            wait([w.sentinel for w in running], timeout=0.5)
            for worker in [w for w in running if not w.is_alive()]:
                sweep, group = running.pop(worker)
                write_manifest(sweep)
                if worker.exitcode == 0:
                    for point in group:
                        say(f"  ✓ {names(sweep, [point])}: {outcome_text(point_report(point))}")
                elif not stop_requests:
                    failed.append(f"{names(sweep, group)} ({exit_text(worker.exitcode)})")
        if stop_requests:
            raise TrainingInterrupted(stop_requests[0])
    if failed:
        raise GrokkingError(f"the sweep stopped: training {'; '.join(failed)} failed; the points done are kept")


@contextmanager
def ctrl_c_ignored() -> Iterator[None]:
    """Ignore SIGINT inside the block (in the main thread; elsewhere signals are not ours to change)."""
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def exit_text(code: int | None) -> str:
    """How a worker process ended, e.g. "exit code 2: its error is above" or "killed by SIGKILL"."""
    if code is not None and code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}: its error is above"


def train_in_worker(configs: list[RunConfig], runs: list[Path], threads: int, log: Sequence[str]) -> None:
    """A sweep worker process: train one group of points; its exit code tells the sweep how it ended
    (0 done, 2 an error it printed as one line, 128 + the signal number when stopped)."""
    from grokking.train import TrainingInterrupted, train_seeds  # as in run_sweep

    try:
        train_seeds(configs, runs, threads=threads, log=log)
    except TrainingInterrupted as stop:
        sys.exit(128 + stop.signal_number)
    except (GrokkingError, OSError) as error:
        print(f"error: {first_line(error)}", file=sys.stderr, flush=True)
        sys.exit(2)


def refresh_manifest(out_dir: Path) -> dict[str, Any]:
    """Bring `out_dir/sweep.json` up to date with every point's outcome and return its record."""
    sweep = load_sweep(out_dir)
    record = sweep_record(sweep)
    write_manifest(sweep, record)
    return record
