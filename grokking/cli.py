"""The `grokking` command: Typer commands that parse options, call one package function and print.

`train`'s config options are generated from RunConfig's field metadata, so a new hyperparameter is
one field in config.py. The training engine, the analysis and the plots (torch, matplotlib) are
imported by the commands that use them, so that `--help` and a wrong flag answer at once. Every
command shares one error handling (`command`): a GrokkingError is one line on stderr and exit code
2, Ctrl-C during set-up is one line and exit code 130.
"""

from __future__ import annotations

import functools
import inspect
import os
import shlex
import signal
import sys
import typing
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import Progress
from rich.text import Text

from grokking import display
from grokking.config import (
    ACCEL,
    ARCHITECTURES,
    MODEL,
    OPTIM,
    PRESETS,
    RUN,
    TASK,
    RunConfig,
    base_type,
    field_types,
    fields_from_flags,
    flag_fields,
    parse_int_range,
    preset_config,
    resolve,
)
from grokking.errors import GrokkingError, first_line
from grokking.loggers import check_available
from grokking.overview import overview
from grokking.processes import check_thread_count
from grokking.reproduce import RECIPES, TINY_STEPS, draw, estimate, listing, plan_recipe, run_recipe
from grokking.rundir import RunDir, check_targets, plan_runs, to_json
from grokking.slurm import COMMON_OPTIONS as COMMON_SLURM_OPTIONS
from grokking.slurm import failure_lines, slurm_executor, submit_sweep, submitted_text, sweep_status
from grokking.sweep import (
    MANIFEST,
    check_jobs,
    load_sweep,
    plan_sweep,
    point_report,
    refresh_manifest,
    run_sweep,
    train_commands,
    write_manifest,
)

if TYPE_CHECKING:
    from grokking.train import TrainingInterrupted

main = typer.Typer(
    name="grokking",
    help="Reproduce and study grokking (Power et al. 2022) on modular arithmetic.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
# In a log file, tables as wide as they need; with stdout closed (`>&-`) sys.stdout is None.
console = Console(width=None if sys.stdout and sys.stdout.isatty() else 200)
err_console = Console(stderr=True)
PRESET_HELP = ", ".join(PRESETS)
PANELS = [TASK, MODEL, OPTIM, ACCEL, RUN]  # the order of train --help
LOG_HELP = (
    "Also log to tensorboard (event files in the run dir) or wandb (offline unless W&B is configured); repeatable."
)
SlurmOptions = Annotated[
    list[str] | None,
    typer.Option(
        help=f"SLURM setting KEY=VALUE of every task, passed to submitit: {COMMON_SLURM_OPTIONS}; repeatable.",
        rich_help_panel="On a cluster",
    ),
]
ARCH_HELP = "; ".join(
    f"{name} ({', '.join(f'{k}={v}' for k, v in switches.items())})" for name, switches in ARCHITECTURES.items()
)


def report_error(message: str) -> None:
    err_console.print(Text.assemble(("error: ", "bold red"), message), soft_wrap=True, highlight=False)


def stopped(error: TrainingInterrupted, hint: str) -> typer.Exit:
    """Tell the user a run stopped on a signal, its checkpoint kept, and how to go on."""
    err_console.print(
        Text.assemble((str(error), "yellow"), f"; checkpoint saved. {hint}"), soft_wrap=True, highlight=False
    )
    return typer.Exit(code=128 + error.signal_number)


def os_error_text(error: OSError) -> str:
    """One line for a file-system error: the path, what went wrong, and what to do."""
    where = " -> ".join(str(name) for name in (error.filename, error.filename2) if name is not None) or "a file"
    problem = error.strerror or first_line(error)
    return f"{where}: {problem}; free space, fix the path or its permissions, or choose another"


def show_warning(message: Warning | str, *args: Any, **kwargs: Any) -> None:
    """A warning (e.g. a skipped metrics line) as one line on stderr, without Python's source line."""
    err_console.print(Text.assemble(("warning: ", "yellow"), str(message)), soft_wrap=True, highlight=False)


def command(function: Callable[..., None]) -> Callable[..., None]:
    """The error handling every command shares: no traceback for anything a user can cause."""

    @functools.wraps(function)
    def run(*args: Any, **kwargs: Any) -> None:
        with display.guarded_output():
            guarded(*args, **kwargs)

    def guarded(*args: Any, **kwargs: Any) -> None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("always")
                warnings.showwarning = show_warning
                function(*args, **kwargs)
                display.flush_output()
        except GrokkingError as e:
            report_error(str(e))
            raise typer.Exit(code=2) from None
        except BrokenPipeError:  # the reader of our output went away (e.g. `| head`): nothing to say
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(code=0) from None
        except OSError as e:  # the disk or the file system: full, read-only, a name too long, a loop...
            report_error(os_error_text(e))
            raise typer.Exit(code=2) from None
        except KeyboardInterrupt:
            err_console.print("interrupted", style="yellow")
            raise typer.Exit(code=128 + signal.SIGINT) from None

    return run


def config_options(only: tuple[str, ...] = ()) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give a command one option per `grokking train` flag of RunConfig (or per field in `only`), from
    the fields' metadata: the same flag, help and panel wherever a setting is an option. Their values
    reach the command as keyword arguments named after the flag (`--train-frac` -> train_frac), unset
    ones as None; `given_fields` turns them into config fields."""

    def decorate(function: Callable[..., None]) -> Callable[..., None]:
        types = field_types()
        options = []
        for flag, names in flag_fields().items():
            if only and not set(names) & set(only):
                continue
            meta = RunConfig.__dataclass_fields__[names[0]].metadata
            kind = base_type(types[names[0]])
            declared = [f"{flag}/--no-{flag[2:]}" if kind is bool else flag, *filter(None, [meta["alias"]])]
            annotation = tuple[(kind,) * len(names)] if len(names) > 1 else kind  # type: ignore[misc]
            option = typer.Option(*declared, help=meta["help"], rich_help_panel=meta["panel"], show_default=False)
            kwarg = flag[2:].replace("-", "_")
            options.append(
                inspect.Parameter(
                    kwarg, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[annotation | None, option]
                )
            )
        signature = inspect.signature(function, eval_str=True).parameters.values()
        own = [p for p in signature if p.kind is not p.VAR_KEYWORD]
        ordered = sorted(options + own, key=_panel_rank)  # stable: panels in PANELS order, each in declaration order
        function.__signature__ = inspect.Signature(ordered)  # type: ignore[attr-defined]
        return function

    return decorate


def given_fields(flags: dict[str, Any]) -> dict[str, Any]:
    """The config fields set by the options `config_options` added (those given on the command line)."""
    return fields_from_flags({"--" + name.replace("_", "-"): value for name, value in flags.items()})


def _panel_rank(parameter: inspect.Parameter) -> int:
    panel = typing.get_args(parameter.annotation)[1].rich_help_panel
    return PANELS.index(panel) if panel in PANELS else -1


def _presets_epilog() -> str:
    """Each preset's values that differ from the paper's defaults, for `train --help`."""
    base = RunConfig().to_dict()
    lines = [
        "[bold]Presets[/] (paper defaults: " + ", ".join(f"{k}={v}" for k, v in base.items() if k != "preset") + ")"
    ]
    for name, config in PRESETS.items():
        changed = ", ".join(f"{k}={v}" for k, v in config.to_dict().items() if k != "preset" and v != base[k])
        lines.append(f"[bold]{name}[/]: {changed or 'paper defaults'}")
    return "\n\n".join(lines)


@main.command("train", epilog=_presets_epilog())
@command
@config_options()
def train_command(
    *,
    preset: Annotated[str | None, typer.Option(help=f"Starting point: {PRESET_HELP}. \\[default: quick]")] = None,
    arch: Annotated[
        str | None,
        typer.Option(
            help=f"Set every architecture switch as a named model does: {ARCH_HELP}. Flags given here override.",
            rich_help_panel=MODEL,
        ),
    ] = None,
    seeds: Annotated[
        str | None,
        typer.Option(
            help="Train several seeds at once, e.g. 0-15 or 0,3,7; each gets its own run dir.", rich_help_panel=TASK
        ),
    ] = None,
    out_dir: Annotated[Path, typer.Option(help="Parent of the default run dir.", rich_help_panel=RUN)] = Path("runs"),
    run_dir: Annotated[
        Path | None, typer.Option(help="Run dir \\[default: OUT_DIR/<op>_p<p>_<preset>_s<seed>].", rich_help_panel=RUN)
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            help="Continue the run in the run dir with its saved config (flags given here override).",
            rich_help_panel=RUN,
        ),
    ] = False,
    overwrite: Annotated[
        bool, typer.Option(help="Delete the run in the run dir and start over.", rich_help_panel=RUN)
    ] = False,
    dry_run: Annotated[
        bool, typer.Option(help="Print the resolved config as JSON and exit.", rich_help_panel=RUN)
    ] = False,
    threads: Annotated[
        int,
        typer.Option(
            help="CPU threads; 0: a fair share of the cores among the grokking trainings running on this machine, "
            "re-checked at every evaluation (give a count for runs repeatable bit for bit).",
            rich_help_panel=RUN,
        ),
    ] = 0,
    log: Annotated[list[str] | None, typer.Option(help=LOG_HELP, rich_help_panel=RUN)] = None,
    **flags: Any,
) -> None:
    """Train a model on an arithmetic table; stream metrics and checkpoints to a run dir.

    Running it again on the same run dir continues from the last checkpoint.
    """
    overrides = given_fields(flags)
    check_available(log or ())
    check_thread_count(threads)
    plan = plan_runs(preset, overrides, seeds, run_dir, out_dir, resume, arch)
    configs, runs = [c for c, _ in plan], [r for _, r in plan]
    if dry_run:
        shown = [{"run_dir": str(r.path), "config": c.to_dict()} for c, r in plan]
        print(to_json(shown if seeds is not None else shown[0], indent=2))
        return
    from grokking.train import TrainingInterrupted, train_seeds  # the engine and torch, once there is work

    for run in runs:
        plot_hint = shlex.join(["grokking", "plot", "--run-dir", str(run.path)])
        line = Text.assemble(("training ", "bold"), str(run.path), "  (", (plot_hint, "dim"), " draws it at any time)")
        console.print(line, soft_wrap=True)
    try:
        with display.TrainingProgress(err_console) as observer:
            summaries = train_seeds(configs, runs, resume, overwrite, observer, threads, log or ())
    except TrainingInterrupted as e:
        again = shlex.join(["grokking", "train", "--run-dir", str(runs[0].path), "--resume"])
        raise stopped(
            e, f"Resume with: {again}" if seeds is None else "Run the same command again to continue."
        ) from None
    console.print(display.summary_table(summaries[0]) if seeds is None else display.seeds_table(configs, summaries))


@main.command("sweep")
@command
@config_options(("steps", "device"))
def sweep_command(
    *,
    grid: Annotated[
        list[str] | None,
        typer.Option(
            help="KEY=VALUES to sweep, e.g. train_frac=0.3,0.5 or seed=0-2; repeat for a grid. "
            "KEY: a train flag or config field."
        ),
    ] = None,
    preset: Annotated[str, typer.Option(help=f"Base config of every point: {PRESET_HELP}.")] = "quick",
    arch: Annotated[str | None, typer.Option(help=f"Named architecture of every point: {ARCH_HELP}.")] = None,
    settings: Annotated[
        list[str] | None,
        typer.Option("--set", help="KEY=VALUE fixed for every point, e.g. --set eval_every=100; repeatable."),
    ] = None,
    out_dir: Annotated[
        Path | None, typer.Option(help="Folder of the sweep: sweep.json and one run dir a point.")
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="List the points (done, partial or new) and exit.")] = False,
    log: Annotated[list[str] | None, typer.Option(help=LOG_HELP)] = None,
    jobs: Annotated[
        int | None,
        typer.Option(
            help="Points trained side by side, each in its own process with an equal share of the cores "
            "(at least one thread); 1 trains one point after another with a progress bar. "
            "With --slurm: tasks of the array running at once. \\[default: 1; with --slurm: no cap]"
        ),
    ] = None,
    emit_commands: Annotated[
        bool,
        typer.Option(
            help="Write sweep.json and print one `grokking train` command a point (for GNU parallel or a SLURM array)."
        ),
    ] = False,
    slurm: Annotated[
        bool,
        typer.Option(
            help="Submit the points not done or queued as one SLURM job array (submitit; `uv sync --extra slurm`) "
            "and return; a task stopped at its time limit or pre-empted is requeued and resumes.",
            rich_help_panel="On a cluster",
        ),
    ] = False,
    slurm_opt: SlurmOptions = None,
    status: Annotated[
        bool,
        typer.Option(
            help="Show each point of the sweep in --out-dir as done, queued, running or failed, "
            "with its SLURM job and log, and exit.",
            rich_help_panel="On a cluster",
        ),
    ] = False,
    **flags: Any,
) -> None:
    """Train a grid of configs, one run dir a point; running it again skips finished points and resumes the rest."""
    from grokking.train import TrainingInterrupted

    if out_dir is None:
        raise GrokkingError("give --out-dir DIR, the folder for the sweep's run dirs")
    if status:
        reports = sweep_status(load_sweep(out_dir))
        console.print(display.sweep_table(reports, f"sweep {out_dir}"))
        for line in failure_lines(reports):
            err_console.print(line, markup=False, highlight=False)
        return
    if slurm_opt and not slurm:
        raise GrokkingError("--slurm-opt sets the SLURM tasks of --slurm; add --slurm")
    if slurm and (emit_commands or dry_run):
        raise GrokkingError("--slurm submits the sweep; give it without --emit-commands and --dry-run")
    executor = slurm_executor(out_dir, jobs, slurm_opt or []) if slurm else None
    fixed = given_fields(flags)
    check_available(log or ())
    if executor is None:
        jobs = 1 if jobs is None else jobs  # here, one point after another unless told
        check_jobs(jobs)
    sweep = plan_sweep(preset, grid or [], out_dir, fixed, settings or [], arch)
    if emit_commands:
        commands = train_commands(sweep)
        plot_hint = shlex.join(["grokking", "plot", "--sweep", str(out_dir)])
        err_console.print(
            f"wrote {write_manifest(sweep)}; `{plot_hint}` summarizes the runs", markup=False, highlight=False
        )
        print("\n".join(commands))
        return
    if dry_run:
        console.print(display.sweep_table([point_report(p) for p in sweep.points], f"sweep {out_dir} (dry run)"))
        return
    if executor is not None:
        submitted, reports = submit_sweep(sweep, executor, log or ())
        console.print(display.sweep_table(reports, f"sweep {out_dir}"))
        follow = shlex.join(["grokking", "sweep", "--status", "--out-dir", str(out_dir)])
        done = submitted_text(submitted, reports)
        err_console.print(f"{done}; `{follow}` follows them", markup=False, highlight=False)
        return
    try:
        with display.TrainingProgress(err_console) as observer:
            say = observer.console.print
            reports = run_sweep(sweep, observer, lambda line: say(line, markup=False, highlight=False), log or (), jobs)
    except TrainingInterrupted as e:
        raise stopped(e, "Finished points are kept. Run the same command again to continue the sweep.") from None
    console.print(display.sweep_table(reports, f"sweep {out_dir}"))


@main.command("reproduce")
@command
def reproduce_command(
    figure: Annotated[
        str | None, typer.Argument(help=f"The recipe: {', '.join(RECIPES)}; `--list` describes them.")
    ] = None,
    scale: Annotated[
        str | None,
        typer.Option(
            help="small: a reduction that finishes on a 2-core CPU (its departures in the figure's title); "
            "paper: the paper's setting (its budget, fractions, seeds and operations); "
            f"tiny: a smoke test ({TINY_STEPS} steps, two series of two runs). "
            "\\[default: small; with --dry-run, small and paper]"
        ),
    ] = None,
    list_recipes: Annotated[
        bool, typer.Option("--list", help="Describe every recipe: what it reproduces, runs and steps at both scales.")
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            help="Print the plan: runs, steps, and the time left estimated from a short training measured here."
        ),
    ] = False,
    draw_only: Annotated[
        bool, typer.Option(help="Draw the figure from the run dirs as they are, training nothing.")
    ] = False,
    out_dir: Annotated[
        Path | None,
        typer.Option(help="Folder of the recipe's sweeps and figures/ \\[default: runs/reproduce/RECIPE-SCALE]."),
    ] = None,
    jobs: Annotated[
        int | None,
        typer.Option(
            help="Runs trained side by side, each in its own process with an equal share of the cores; with "
            "--slurm, tasks of each array running at once. \\[default: 1; with --slurm: no cap]"
        ),
    ] = None,
    log: Annotated[list[str] | None, typer.Option(help=LOG_HELP)] = None,
    slurm: Annotated[
        bool,
        typer.Option(
            help="Submit each series' runs not done as a SLURM job array (submitit) and return; "
            "draw with --draw-only once they are done.",
            rich_help_panel="On a cluster",
        ),
    ] = False,
    slurm_opt: SlurmOptions = None,
    as_json: Annotated[bool, typer.Option("--json", help="With --list or --dry-run: print JSON.")] = False,
) -> None:
    """Reproduce a figure of Power et al. (2022) or a follow-up: train its runs (a sweep a series; finished runs
    skipped, stopped ones resumed) and draw it into OUT_DIR/figures/."""
    from grokking.train import TrainingInterrupted

    if list_recipes:
        rows = listing()
        print(to_json(rows, indent=2)) if as_json else console.print(display.recipes_table(rows))
        return
    if figure is None:
        raise GrokkingError(f"name a figure to reproduce: {', '.join(RECIPES)} (`grokking reproduce --list`)")
    if sum([dry_run, draw_only, slurm]) > 1:
        raise GrokkingError("give one of --dry-run, --draw-only and --slurm")
    if slurm_opt and not slurm:
        raise GrokkingError("--slurm-opt sets the SLURM tasks of --slurm; add --slurm")
    if jobs is not None:
        check_jobs(jobs)
    check_available(log or ())
    if dry_run:
        speeds: dict = {}  # measured once for the scales that share a step's cost
        plans = [plan_recipe(figure, s, out_dir) for s in ([scale] if scale else ["small", "paper"])]
        rows = [estimate(plan, speeds) for plan in plans]
        print(to_json(rows, indent=2)) if as_json else console.print(display.plan_table(rows))
        return
    plan = plan_recipe(figure, scale or "small", out_dir)
    if slurm:
        for sweep in plan.sweeps:
            submitted, reports = submit_sweep(sweep, slurm_executor(sweep.out_dir, jobs, slurm_opt or []), log or ())
            console.print(display.sweep_table(reports, f"sweep {sweep.out_dir}"))
            err_console.print(submitted_text(submitted, reports), markup=False, highlight=False)
        return
    if draw_only:
        paths = draw(plan)
    else:
        try:
            with display.TrainingProgress(err_console) as observer:
                say = observer.console.print
                paths = run_recipe(
                    plan, observer, lambda line: say(line, markup=False, highlight=False), log or (), jobs or 1
                )
        except TrainingInterrupted as e:
            raise stopped(e, "Finished runs are kept. Run the same command again to continue.") from None
    for path in paths:
        console.print(f"wrote {path}", markup=False, highlight=False)


@main.command("plot")
@command
def plot_command(
    run_dir: Annotated[list[Path] | None, typer.Option(help="Run dir to draw; repeat to overlay several runs.")] = None,
    sweep: Annotated[
        Path | None,
        typer.Option(
            help=f"A `grokking sweep` folder: bring DIR/{MANIFEST} up to date with the outcomes "
            "and draw DIR/plots/sweep.png."
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Output folder \\[default: RUN_DIR/plots; required with several runs].")
    ] = None,
    watch: Annotated[
        float | None,
        typer.Option(
            help="Redraw every SECONDS while the runs train; stop when they stop (or on Ctrl-C).", metavar="SECONDS"
        ),
    ] = None,
    metric: Annotated[
        list[str] | None,
        typer.Option(
            help="Also draw this key of metrics.jsonl (e.g. grad_norm, weight_norm/unembed) into "
            "plots/metric_KEY.png; repeatable."
        ),
    ] = None,
) -> None:
    """Draw plots/accuracy.png and plots/loss.png from metrics.jsonl (also while training), or a sweep's summary."""
    from grokking.plot import plot_runs, plot_sweep, watch_runs

    if run_dir and sweep is not None:
        raise GrokkingError("give --run-dir or --sweep, not both")
    if metric and sweep is not None:
        raise GrokkingError("--metric draws run dirs: give it with --run-dir")
    if watch is not None and (sweep is not None or not (0.1 <= watch <= 86_400)):
        raise GrokkingError("--watch takes SECONDS between 0.1 and 86400, and works with --run-dir")
    if watch is not None:

        def drew(drawn: list[Path]) -> None:
            err_console.print(f"drew {len(drawn)} figures")

        done = watch_runs(run_dir or [], out, watch, drew, metric or ())
        paths = done
    elif sweep is not None:
        figure = (out or sweep / "plots") / "sweep.png"
        check_targets([figure])  # before sweep.json is refreshed: a refusal writes nothing
        paths = [sweep / MANIFEST, plot_sweep(refresh_manifest(sweep), figure)]
    else:
        paths = plot_runs(run_dir or [], out, metric or ())
    for path in paths:
        console.print(f"wrote {path}", markup=False, highlight=False)


@main.command("eval")
@command
def eval_command(
    checkpoint: Annotated[Path | None, typer.Option(help="One checkpoint file to evaluate.")] = None,
    run_dir: Annotated[Path | None, typer.Option(help="Evaluate every checkpoint of this run dir.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Recompute train/validation loss and accuracy of saved checkpoints on the run's split."""
    from grokking.evaluate import evaluate_checkpoints, run_checkpoints

    if (checkpoint is None) == (run_dir is None):
        raise GrokkingError("give exactly one of --checkpoint FILE or --run-dir DIR")
    if checkpoint is not None:
        rows = evaluate_checkpoints([checkpoint])
    else:
        run = RunDir(run_dir)
        rows = evaluate_checkpoints(run_checkpoints(run), expected=run.read_config())
    if as_json:
        print(to_json(rows, indent=2))
    else:
        console.print(display.eval_table(rows))


@main.command("bench")
@command
@config_options(("device", "precision", "compile"))
def bench_command(
    *,
    preset: Annotated[str, typer.Option(help=f"Config to measure: {PRESET_HELP}.")] = "paper_wd",
    steps: Annotated[int, typer.Option(help="Timed steps per contender (speed mode).")] = 300,
    rounds: Annotated[int, typer.Option(help="Interleaved blocks per contender (speed mode).")] = 3,
    time_to_grok: Annotated[
        bool, typer.Option("--time-to-grok", help="Measure wall seconds to val acc ≥ 99% instead.")
    ] = False,
    seeds: Annotated[str, typer.Option(help="Seeds for --time-to-grok, e.g. 0-2 or 0,3,7.")] = "0-2",
    together: Annotated[
        int, typer.Option(help="Instead: seed-steps/s of this many seeds trained together vs one at a time.")
    ] = 0,
    max_steps: Annotated[int, typer.Option(help="Give up a --time-to-grok run after this many steps.")] = 20_000,
    subnormals: Annotated[
        Path | None,
        typer.Option(
            help="Instead: CPU steps/s from this run dir's latest checkpoint, "
            "subnormal floats flushed to zero vs computed."
        ),
    ] = None,
    startup: Annotated[
        bool,
        typer.Option(help="Speed mode: also time --help, train --dry-run and a 1-step training (whole processes)."),
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    **flags: Any,
) -> None:
    """Measure training speed: this package's engine against a plain reference loop, in one process.

    The engine runs as fp32, fp32 + compile, bf16 and bf16 + compile, interleaved with the reference (eager fp32);
    --precision or --compile keeps only the variants they name. Warm-up (compiling) is timed apart."""
    from grokking.bench import VARIANTS, bench_seeds, bench_speed, bench_subnormals, bench_time_to_grok, startup_seconds

    given = given_fields(flags)
    config = resolve(preset_config(preset).replace(**given))
    variants = [(p, c) for p, c in VARIANTS if given.get("precision", p) == p and given.get("compile", c) == c]
    if not (0 < steps <= 10**6 and 0 < rounds <= steps and 0 < max_steps <= 10**7 and 0 <= together <= 1024):
        raise GrokkingError(
            "--steps (1-1e6), --rounds (1-steps) and --max-steps (1-1e7) must be positive, --together 0-1024"
        )
    with Progress(console=err_console, transient=True, disable=not err_console.is_terminal) as progress:
        if subnormals is not None:
            result = bench_subnormals(RunDir(subnormals), steps, rounds, progress)
        elif time_to_grok:
            result = bench_time_to_grok(config, parse_int_range(seeds, "--seeds"), max_steps, progress)
        elif together > 0:
            result = bench_seeds(config, together, steps, rounds, progress)
        else:
            result = bench_speed(config, steps, rounds, progress, variants)
            if startup:
                result["startup"] = startup_seconds(preset)
    if as_json:
        print(to_json(result, indent=2))
        return
    engine = "" if result["mode"] == "speed" else f" · {config.precision}" + (" · compiled" if config.compile else "")
    measured = f"{subnormals} from step {result['from_step']:,}" if subnormals is not None else preset + engine
    console.print(display.bench_table(result, measured))
    console.print(f"torch {result['torch_version']} · {result['threads']} threads · python {result['python_version']}")


@main.command("runs")
@command
def runs_command(
    root: Annotated[Path, typer.Argument(help="Folder to search for run dirs, sweeps included.")] = Path("runs"),
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """One row per run dir under ROOT: task, preset and what departs from it, steps, memorization and
    generalization step, last validation accuracy, status (running, finished, grokked, interrupted, ...)."""
    rows = overview(root)
    if as_json:
        print(to_json(rows, indent=2))
    else:
        console.print(display.runs_table(rows, f"runs under {root}"))


@main.command("analyze")
@command
def analyze_command(
    run_dir: Annotated[Path, typer.Option(help="Run dir whose checkpoints to analyze.")],
    step: Annotated[
        int | None, typer.Option(help="Checkpoint step of the spectrum and the ablation \\[default: the last].")
    ] = None,
    energy: Annotated[
        float, typer.Option(help="Share of the embedding's energy that the key frequencies carry.")
    ] = 0.9,
    top_k: Annotated[
        int | None, typer.Option(help="Frequencies to ablate \\[default: the number of key frequencies].")
    ] = None,
    draws: Annotated[int, typer.Option(help="Random sets of non-key frequencies ablated for comparison.")] = 5,
    seed: Annotated[int, typer.Option(help="Seed of the random sets.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    """Analysis of a run: embedding spectrum, progress measures (Nanda et al. 2023), frequency ablation, sharpness.

    Writes RUN_DIR/analysis/{spectrum,progress,ablation,sharpness}.json and figures/{spectrum,progress,ablation}.png.
    """
    from grokking.analysis import analyze_run

    with Progress(console=err_console, transient=True, disable=not err_console.is_terminal) as progress:
        results = analyze_run(run_dir, step, energy, top_k, draws, seed, progress)
    if as_json:
        print(to_json(results, indent=2))
        return
    for line in [*display.analysis_lines(results), *(f"wrote {path}" for path in results["files"])]:
        console.print(line, markup=False, highlight=False)


def usage_error_text(error: Exception) -> str:
    """One line for a command-line mistake click caught (an unknown option, a missing or malformed
    value): its message, and where the valid options are listed."""
    context = getattr(error, "ctx", None)
    where = f"; see `{context.command_path} --help`" if context is not None else ""
    return error.format_message().rstrip(".") + where  # type: ignore[attr-defined]


def run(args: list[str] | None = None) -> None:
    """The `grokking` command: the app, with click's usage errors as one line on stderr, exit 2.

    Click's own form is a usage line, a hint and a boxed message; ours matches every other error.
    Typer ships its own copy of click (private), so its exceptions are recognised by what they carry.
    """
    with display.guarded_output():  # the help and usage errors, printed outside any command, too
        try:
            code = main(args=args, prog_name="grokking", standalone_mode=False)
        except Exception as error:
            if not (hasattr(error, "format_message") and hasattr(error, "exit_code")):
                raise
            if type(error).__name__ != "NoArgsIsHelpError":  # `grokking` alone: the help, shown already
                report_error(usage_error_text(error))
            code = error.exit_code
    sys.exit(code if isinstance(code, int) else 0)
