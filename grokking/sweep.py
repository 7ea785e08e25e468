"""Parameter sweeps: a grid over RunConfig fields, one ordinary run dir a point, skip done, resume partial.

`sweep.json` in the sweep folder names the grid, the base config and the points with their outcomes
so far (rewritten as the sweep trains and by `grokking plot --sweep`); every point is a run dir
`<key>=<value>_…` beside it, trained by `grokking.train.train` (or, for the seeds of one
point, together by `grokking.seeds.train_seeds`), so a stopped sweep continues where it stopped.
"""

from __future__ import annotations

import itertools
import json
import re
import shlex
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from grokking.config import RESUMABLE_FIELDS, GrokkingError, RunConfig, config_differences, preset_config
from grokking.plot import plot_sweep
from grokking.rundir import RunDir, atomic_write_json, grokking_steps
from grokking.seeds import train_seeds
from grokking.train import resolve_batch_size, train

MANIFEST = "sweep.json"
NOT_WITHIN_BUDGET = "not within budget"
TRUE, FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def field_types() -> dict[str, type]:
    """Each RunConfig field's type, e.g. {'p': int, 'batch_size': int | None, ...}."""
    return typing.get_type_hints(RunConfig)


class TrainFlags:
    """How `grokking train` sets each config field, read from the train command's click parameters.

    An option named like a field sets that field; a multi-value option such as `--betas A B` sets
    the numbered fields of its singular name (beta1, beta2).
    """

    def __init__(self, command: Any):
        known = set(field_types())
        self.options: dict[tuple[str, ...], Any] = {}
        for param in command.params:
            numbered = tuple(f"{param.name.removesuffix('s')}{i}" for i in range(1, param.nargs + 1))
            if param.name in known:
                self.options[(param.name,)] = param
            elif param.nargs > 1 and set(numbered) <= known:
                self.options[numbered] = param
        self.aliases = {
            option.lstrip("-").replace("-", "_"): targets[0]
            for targets, param in self.options.items()
            if len(targets) == 1
            for option in param.opts
        }

    def command_line(self, config: RunConfig, run: RunDir) -> str:
        """`grokking train --preset P --run-dir DIR` plus a flag for every field that differs from P."""
        preset = preset_config(config.preset)
        words = ["grokking", "train", "--preset", config.preset, "--run-dir", str(run.path)]
        covered = {"preset"}
        for targets, param in self.options.items():
            covered.update(targets)
            values = [getattr(config, name) for name in targets]
            if values == [getattr(preset, name) for name in targets]:
                continue
            if None in values:
                raise GrokkingError(f"`grokking train` cannot set {', '.join(targets)} back to its default (None)")
            if param.is_flag:
                words.append(param.opts[0] if values[0] else param.secondary_opts[0])
            else:
                words += [param.opts[0], *(_text(v) for v in values)]
        missing = [k for k, v in config.to_dict().items() if k not in covered and v != getattr(preset, k)]
        if missing:
            raise GrokkingError(f"`grokking train` has no flag for {', '.join(missing)}; --emit-commands cannot reproduce it")
        return shlex.join(words)


def _text(value: Any) -> str:
    """A value as a command-line word: floats in their shortest exact form, bools as true/false."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "none" if value is None else repr(value) if isinstance(value, float) else str(value)


def field_of(key: str, aliases: dict[str, str], option: str) -> str:
    """The RunConfig field a --grid/--set key names: a field (train_frac, train-frac) or a train flag (op)."""
    types = field_types()
    name = key.strip().replace("-", "_")
    name = name if name in types else aliases.get(name, name)
    if name == "preset":
        raise GrokkingError(f"{option} preset: choose the preset with --preset; a sweep point has one preset")
    if name not in types:
        valid = ", ".join(k for k in types if k != "preset")
        raise GrokkingError(f"{option} {key}: unknown key; valid keys are {valid}")
    return name


def parse_value(name: str, text: str, option: str) -> Any:
    """One value of field `name`, parsed with the field's type (int, float, bool, str, or optional)."""
    kind = field_types()[name]
    options = [t for t in typing.get_args(kind) if t is not type(None)] or [kind]
    word = text.strip()
    if len(options) < len(typing.get_args(kind)) and word.lower() in ("none", "null"):
        return None
    base = options[0]
    if base is bool and word.lower() in TRUE + FALSE:
        return word.lower() in TRUE
    if base is not bool:
        try:
            return base(word)
        except ValueError:
            pass
    hint = " (true or false)" if base is bool else " (ranges a-b only for integer keys)" if "-" in word[1:] else ""
    raise GrokkingError(f"{option} {name}={text!r}: not a valid {base.__name__}{hint}")


def parse_values(name: str, text: str, option: str = "--grid") -> list[Any]:
    """`0.2,0.3`, an integer range `0-2`, or a mix `0-2,5` -> the values, in order, without repeats."""
    values: list[Any] = []
    integer = field_types()[name] in (int, int | None)
    for word in text.split(","):
        span = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", word) if integer else None
        if span is not None and int(span[1]) > int(span[2]):
            raise GrokkingError(f"{option} {name}={word}: a range a-b needs a <= b")
        values += range(int(span[1]), int(span[2]) + 1) if span else [parse_value(name, word, option)]
    repeated = sorted({_text(v) for v in values if values.count(v) > 1})
    if repeated:
        raise GrokkingError(f"{option} {name}: {', '.join(repeated)} given more than once")
    return values


def _split(spec: str, option: str) -> tuple[str, str]:
    key, sep, text = spec.partition("=")
    if not sep or not key.strip() or not text.strip():
        raise GrokkingError(f"{option} takes KEY=VALUES, e.g. {option} train_frac=0.3,0.5 (got {spec!r})")
    return key, text


def parse_grid(specs: list[str], aliases: dict[str, str] | None = None) -> dict[str, list[Any]]:
    """`--grid` arguments -> {field: values}, in the order given."""
    grid: dict[str, list[Any]] = {}
    for spec in specs:
        key, text = _split(spec, "--grid")
        name = field_of(key, aliases or {}, "--grid")
        if name in grid:
            raise GrokkingError(f"--grid {name} is given twice; list all its values in one --grid")
        grid[name] = parse_values(name, text, "--grid")
    return grid


def parse_settings(specs: list[str], aliases: dict[str, str] | None = None) -> dict[str, Any]:
    """`--set` arguments -> {field: value}."""
    settings: dict[str, Any] = {}
    for spec in specs:
        key, text = _split(spec, "--set")
        name = field_of(key, aliases or {}, "--set")
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
    for path in (out_dir, *out_dir.parents):
        if path.exists() and not path.is_dir():
            raise GrokkingError(f"{path} is a file, not a directory; choose another --out-dir")
    points = []
    for combination in itertools.product(*grid.values()):
        values = dict(zip(grid, combination))
        name = point_name(values)
        try:
            config = resolve_batch_size(RunConfig.from_dict({**base.to_dict(), **values}, source=name))
        except GrokkingError as e:
            raise GrokkingError(f"sweep point {name}: {e}") from None
        points.append(Point(name, values, config, RunDir(out_dir / name)))
    if len({p.name for p in points}) < len(points):
        raise GrokkingError("two grid values give the same run dir name; make the values differ in more than punctuation")
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
    aliases: dict[str, str] | None = None,
) -> Sweep:
    """The sweep of `grokking sweep`: the preset, fixed settings (`--steps`…, `--set`) and the grid."""
    fixed = parse_settings(set_specs or [], aliases)
    for name, value in (settings or {}).items():
        if name in fixed:
            raise GrokkingError(f"{name} is given both as --{name.replace('_', '-')} and with --set; give it once")
        fixed[name] = value
    grid = parse_grid(grid_specs, aliases)
    both = sorted(set(grid) & set(fixed))
    if both:
        raise GrokkingError(f"{', '.join(both)} is both swept (--grid) and fixed; give it once")
    return build_sweep(preset_config(preset).replace(**fixed), grid, out_dir)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GrokkingError(f"cannot read {path} ({e}); restore it or remove it") from None


def load_sweep(out_dir: Path) -> Sweep:
    """The sweep described by `out_dir/sweep.json`."""
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        raise GrokkingError(f"{path} does not exist; pass the --out-dir of a `grokking sweep`")
    data = _read_json(path)
    grid = data.get("grid") if isinstance(data, dict) else None
    if not isinstance(grid, dict) or not all(isinstance(v, list) for v in grid.values()) or "base" not in data:
        raise GrokkingError(f"{path} has no grid and base config; it was not written by `grokking sweep`")
    return build_sweep(RunConfig.from_dict(data["base"], source=str(path)), grid, Path(out_dir))


def _check_manifest(sweep: Sweep) -> None:
    """Refuse to replace the sweep.json of a different sweep (other swept keys or base config)."""
    path = sweep.out_dir / MANIFEST
    if not path.is_file():
        return
    old = _read_json(path)
    old_base = RunConfig.from_dict(old.get("base"), source=str(path)) if isinstance(old, dict) else None
    old_keys = list(old.get("grid") or {}) if isinstance(old, dict) else None
    differences = config_differences(old_base, sweep.base, ignore=RESUMABLE_FIELDS) if old_base else ["no base config"]
    if old_keys != list(sweep.grid):
        differences.append(f"swept keys: {old_keys} -> {list(sweep.grid)}")
    if differences:
        raise GrokkingError(f"{sweep.out_dir} holds a different sweep ({'; '.join(differences)}); choose another --out-dir")


def point_state(point: Point) -> tuple[str, dict[str, Any] | None]:
    """'done' (with its summary.json), 'partial' or 'new'; a run dir holding another config is refused."""
    run = point.run
    if not run.config_path.is_file():
        return "new", None
    differences = config_differences(run.read_config(), point.config, ignore=RESUMABLE_FIELDS)
    if differences:
        raise GrokkingError(f"{run.path} holds a run with a different config ({'; '.join(differences)}); choose another --out-dir")
    summary = _read_json(run.summary_path) if run.summary_path.is_file() else {}
    steps_done = summary.get("steps_done") if isinstance(summary, dict) else None
    if not isinstance(steps_done, int):
        return "partial", None
    grokked = summary.get("stopped") == "grokked" and point.config.stop_on_grok
    return ("done", summary) if steps_done >= point.config.steps or grokked else ("partial", None)


def point_report(point: Point) -> dict[str, Any]:
    """A point's outcome: memorization and generalization steps (or "not within budget") and accuracies."""
    status, summary = point_state(point)
    row = {"name": point.name, "values": point.values, "status": status}
    if summary is not None:
        generalized = summary.get("generalization_step")
        outcome = {
            "steps_done": summary["steps_done"],
            "memorization_step": summary.get("memorization_step"),
            "generalization_step": NOT_WITHIN_BUDGET if generalized is None else generalized,
            "final_train_acc": summary.get("final_train_acc"),
            "final_val_acc": summary.get("final_val_acc"),
        }
    else:
        records = point.run.read_metrics()
        last = records[-1] if records else {}
        steps = grokking_steps(records)
        outcome = {
            "steps_done": last.get("step", 0),
            "memorization_step": steps["memorization_step"],
            "generalization_step": steps["generalization_step"],
            "final_train_acc": last.get("train_acc"),
            "final_val_acc": last.get("val_acc"),
        }
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


def train_commands(sweep: Sweep, flags: TrainFlags) -> list[str]:
    """One `grokking train …` line a point, reproducing its config exactly (for GNU parallel, SLURM)."""
    return [flags.command_line(p.config, p.run) for p in sweep.points]


def _seed_groups(points: list[Point]) -> list[list[Point]]:
    """Points that differ only in their seed, in grid order."""
    groups: dict[tuple[str, ...], list[Point]] = {}
    for point in points:
        groups.setdefault(tuple(_text(v) for k, v in point.values.items() if k != "seed"), []).append(point)
    return list(groups.values())


def _outcome(report: dict[str, Any]) -> str:
    memorized, generalized, steps = report["memorization_step"], report["generalization_step"], report["steps_done"]
    first = f"memorized at {memorized:,}" if memorized is not None else "not memorized"
    return f"{first} · " + (f"generalized at {generalized:,}" if isinstance(generalized, int) else f"not generalized within {steps:,} steps")


def run_sweep(sweep: Sweep, console: Console | None = None) -> list[dict[str, Any]]:
    """Train every point that is not done (seeds of a point together where possible); return all reports."""
    log = console or Console(quiet=True)
    write_manifest(sweep)
    todo = [p for p in sweep.points if point_state(p)[0] != "done"]
    done = len(sweep.points) - len(todo)
    log.print(f"[bold]sweep[/] {sweep.out_dir}: {len(sweep.points)} points, {done} done, {len(todo)} to train")
    for group in _seed_groups(todo):
        left = len(sweep.points) - done - len(group)
        log.print(f"[bold]{done} done · {left} after these · training[/] {', '.join(p.name for p in group)}")
        _train_group(group, console, log)
        write_manifest(sweep)
        for point in group:
            done += 1
            log.print(f"  [green]✓[/] {point.name}: {_outcome(point_report(point))}")
    return [point_report(p) for p in sweep.points]


def _train_group(group: list[Point], console: Console | None, log: Console) -> None:
    """The seeds of one point together with train_seeds; one at a time where it refuses (e.g. dropout, unequal steps)."""
    if len(group) > 1:
        try:
            train_seeds([p.config for p in group], [p.run for p in group], console=console)
            return
        except GrokkingError as e:  # raised before anything is written
            log.print(f"  [dim]one seed at a time: {e}[/]")
    for point in group:
        train(point.config, point.run, console=console)


def sweep_table(reports: list[dict[str, Any]], title: str) -> Table:
    """One row a point: status, steps done of the budget, memorization and generalization steps
    (`> N`: not within the N steps trained)."""
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("point", no_wrap=True)
    for column in ("status", "steps", "mem. at", "gen. at", "val acc"):
        table.add_column(column, justify="left" if column == "status" else "right", no_wrap=True)
    for r in reports:
        generalized, accuracy = r["generalization_step"], r["final_val_acc"]
        table.add_row(
            r["name"],
            r["status"],
            f"{r['steps_done']:,}/{r['budget']:,}",
            "—" if r["memorization_step"] is None else f"{r['memorization_step']:,}",
            "—" if generalized is None else f"{generalized:,}" if isinstance(generalized, int) else f"> {r['steps_done']:,}",
            "—" if accuracy is None else f"{accuracy:.1%}",
        )
    return table


def report_sweep(out_dir: Path, out: Path | None = None) -> list[Path]:
    """Bring `sweep.json` up to date with every point's outcome and draw `plots/sweep.png` (or into `out`)."""
    sweep = load_sweep(out_dir)
    record = sweep_record(sweep)
    return [write_manifest(sweep, record), plot_sweep(record, (out or sweep.out_dir / "plots") / "sweep.png")]
