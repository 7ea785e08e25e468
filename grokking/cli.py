"""The `grokking` command: thin Typer commands that parse options, call the package and report."""

from __future__ import annotations

import json
import signal
import warnings
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from grokking.analysis import analyze_run
from grokking.bench import bench_seeds, bench_speed, bench_subnormals, bench_time_to_grok
from grokking.config import PRESETS, GrokkingError, RunConfig, preset_config
from grokking.evaluate import evaluate_checkpoints, run_checkpoints
from grokking.plot import plot_runs
from grokking.rundir import RunDir
from grokking.seeds import train_seeds
from grokking.sweep import TrainFlags, plan_sweep, point_report, report_sweep, run_sweep, sweep_table, train_commands, write_manifest
from grokking.tasks import OPERATIONS
from grokking.train import TrainingInterrupted, default_run_dir, resolve_batch_size, resolve_device, train

main = typer.Typer(
    name="grokking",
    help="Reproduce and study grokking (Power et al. 2022) on modular arithmetic.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

TASK, MODEL, OPTIM, ACCEL, RUN = "Task", "Model", "Optimization", "Loss and accelerators", "Run, output and schedule"
PRESET_HELP = ", ".join(PRESETS)
OPERATION_HELP = "; ".join(f"{name} ({op.describe('p')})" for name, op in OPERATIONS.items())


def _presets_epilog() -> str:
    """Each preset's values that differ from the paper's defaults, for `train --help`."""
    base = RunConfig().to_dict()
    lines = ["[bold]Presets[/] (paper defaults: " + ", ".join(f"{k}={v}" for k, v in base.items() if k != "preset") + ")"]
    for name, config in PRESETS.items():
        changed = ", ".join(f"{k}={v}" for k, v in config.to_dict().items() if k != "preset" and v != base[k])
        lines.append(f"[bold]{name}[/]: {changed or 'paper defaults'}")
    return "\n\n".join(lines)


def fail(message: str) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code=2)


def _train_overrides(values: dict[str, Any]) -> dict[str, Any]:
    overrides = {k: v for k, v in values.items() if v is not None}
    if "betas" in overrides:
        overrides["beta1"], overrides["beta2"] = overrides.pop("betas")
    return overrides


def _seeds(text: str) -> list[int]:
    """'0-2' or '0,3,7' -> a list of seeds."""
    try:
        if "-" in text:
            first, last = (int(part) for part in text.split("-"))
            return list(range(first, last + 1))
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise GrokkingError(f"--seeds takes a range like 0-2 or a list like 0,3,7 (got {text!r})") from None


@main.command("train", epilog=_presets_epilog())
def train_command(
    preset: Annotated[Optional[str], typer.Option(help=f"Starting point: {PRESET_HELP}. \\[default: quick]")] = None,
    operation: Annotated[Optional[str], typer.Option("--op", help=f"Operation: {OPERATION_HELP}.", rich_help_panel=TASK)] = None,
    p: Annotated[Optional[int], typer.Option(help="Modulus (prime for div, div_odd; ignored by s5_*).", rich_help_panel=TASK)] = None,
    train_frac: Annotated[Optional[float], typer.Option(help="Fraction of the table used for training.", rich_help_panel=TASK)] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed of split, init and batches.", rich_help_panel=TASK)] = None,
    seeds: Annotated[Optional[str], typer.Option(help="Train several seeds at once, e.g. 0-15 or 0,3,7; each gets its own run dir.", rich_help_panel=TASK)] = None,
    op_token: Annotated[Optional[bool], typer.Option("--op-token/--no-op-token", help="Sequences \\[x, op, y, =], or \\[x, y, =] without.", rich_help_panel=TASK)] = None,
    model: Annotated[Optional[str], typer.Option(help="transformer, or mlp (embeddings of x and y concatenated, then hidden layers).", rich_help_panel=MODEL)] = None,
    n_layers: Annotated[Optional[int], typer.Option(help="Transformer blocks, or hidden layers of the MLP.", rich_help_panel=MODEL)] = None,
    d_model: Annotated[Optional[int], typer.Option(help="Residual width (embedding width of the MLP).", rich_help_panel=MODEL)] = None,
    n_heads: Annotated[Optional[int], typer.Option(help="Attention heads.", rich_help_panel=MODEL)] = None,
    d_mlp: Annotated[Optional[int], typer.Option(help="Hidden width of the MLPs \\[default: 4 × d-model].", rich_help_panel=MODEL)] = None,
    layer_norm: Annotated[Optional[bool], typer.Option("--layer-norm/--no-layer-norm", help="LayerNorm before attention, MLP and unembedding.", rich_help_panel=MODEL)] = None,
    activation: Annotated[Optional[str], typer.Option(help="gelu or relu.", rich_help_panel=MODEL)] = None,
    init: Annotated[Optional[str], typer.Option(help="default (PyTorch's), or nanda: matrices N(0, 1/d-model), biases 0.", rich_help_panel=MODEL)] = None,
    dropout: Annotated[Optional[float], typer.Option(help="Dropout probability.", rich_help_panel=MODEL)] = None,
    optimizer: Annotated[Optional[str], typer.Option(help="adam or adamw.", rich_help_panel=OPTIM)] = None,
    lr: Annotated[Optional[float], typer.Option(help="Learning rate after warmup.", rich_help_panel=OPTIM)] = None,
    weight_decay: Annotated[Optional[float], typer.Option(help="Weight decay (decoupled for adamw).", rich_help_panel=OPTIM)] = None,
    betas: Annotated[Optional[tuple[float, float]], typer.Option(help="Adam betas, e.g. --betas 0.9 0.98.", rich_help_panel=OPTIM)] = None,
    eps: Annotated[Optional[float], typer.Option(help="Adam epsilon.", rich_help_panel=OPTIM)] = None,
    warmup_steps: Annotated[Optional[int], typer.Option("--warmup", help="Linear warmup steps.", rich_help_panel=OPTIM)] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Batch size; 0 = the whole training split \\[default: min(512, n_train // 2)].", rich_help_panel=OPTIM)] = None,
    loss: Annotated[Optional[str], typer.Option(help="cross_entropy, or stablemax (Prieto et al. 2025).", rich_help_panel=ACCEL)] = None,
    loss_dtype: Annotated[Optional[str], typer.Option(help="float32, or float64 (delays softmax collapse).", rich_help_panel=ACCEL)] = None,
    grokfast: Annotated[Optional[str], typer.Option(help="Grokfast gradient filter (Lee et al. 2024): none, ema or ma.", rich_help_panel=ACCEL)] = None,
    grokfast_alpha: Annotated[Optional[float], typer.Option(help="Grokfast-EMA momentum α.", rich_help_panel=ACCEL)] = None,
    grokfast_lambda: Annotated[Optional[float], typer.Option(help="Grokfast amplification λ of the slow gradient.", rich_help_panel=ACCEL)] = None,
    grokfast_window: Annotated[Optional[int], typer.Option(help="Grokfast-MA window in steps.", rich_help_panel=ACCEL)] = None,
    orthograd: Annotated[Optional[bool], typer.Option("--orthograd/--no-orthograd", help="⊥Grad: drop each gradient's component along its weights (Prieto et al. 2025).", rich_help_panel=ACCEL)] = None,
    steps: Annotated[Optional[int], typer.Option(help="Optimization step budget.", rich_help_panel=RUN)] = None,
    eval_every: Annotated[Optional[int], typer.Option(help="Steps between evaluations (plus powers of two before).", rich_help_panel=RUN)] = None,
    checkpoint_every: Annotated[Optional[int], typer.Option(help="Steps between resume points (latest.pt).", rich_help_panel=RUN)] = None,
    snapshot_every: Annotated[Optional[int], typer.Option(help="Steps between kept step_*.pt (powers of two are kept too).", rich_help_panel=RUN)] = None,
    stop_on_grok: Annotated[Optional[bool], typer.Option("--stop-on-grok/--no-stop-on-grok", help="Stop after 3 evaluations in a row at val acc ≥ 99%.", rich_help_panel=RUN)] = None,
    device: Annotated[Optional[str], typer.Option(help="auto (cuda, then mps, then cpu), cpu, cuda or mps.", rich_help_panel=RUN)] = None,
    out_dir: Annotated[Path, typer.Option(help="Parent of the default run dir.", rich_help_panel=RUN)] = Path("runs"),
    run_dir: Annotated[Optional[Path], typer.Option(help="Run dir \\[default: OUT_DIR/<op>_p<p>_<preset>_s<seed>].", rich_help_panel=RUN)] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in the run dir with its saved config (flags given here override).", rich_help_panel=RUN)] = False,
    overwrite: Annotated[bool, typer.Option(help="Delete the run in the run dir and start over.", rich_help_panel=RUN)] = False,
    dry_run: Annotated[bool, typer.Option(help="Print the resolved config as JSON and exit.", rich_help_panel=RUN)] = False,
) -> None:
    """Train a model on an arithmetic table; stream metrics and checkpoints to a run dir.

    Running it again on the same run dir continues from the last checkpoint.
    """
    overrides = _train_overrides(
        dict(
            operation=operation, p=p, train_frac=train_frac, seed=seed, op_token=op_token, model=model,
            n_layers=n_layers, d_model=d_model, n_heads=n_heads, d_mlp=d_mlp, layer_norm=layer_norm,
            activation=activation, init=init, dropout=dropout, optimizer=optimizer, lr=lr, weight_decay=weight_decay, betas=betas,
            eps=eps, warmup_steps=warmup_steps, batch_size=batch_size, loss=loss, loss_dtype=loss_dtype,
            grokfast=grokfast, grokfast_alpha=grokfast_alpha, grokfast_lambda=grokfast_lambda,
            grokfast_window=grokfast_window, orthograd=orthograd, steps=steps, eval_every=eval_every,
            checkpoint_every=checkpoint_every, snapshot_every=snapshot_every, stop_on_grok=stop_on_grok, device=device,
        )
    )  # fmt: skip
    try:
        if resume and preset is None and run_dir is not None:
            config = RunDir(run_dir).read_config().replace(**overrides)
        else:
            config = preset_config(preset or "quick").replace(**overrides)
        config = resolve_batch_size(config)
        resolve_device(config.device, needs_float64=config.loss_dtype == "float64")
        if seeds is not None:
            if run_dir is not None:
                raise GrokkingError("--seeds writes one run dir per seed under --out-dir; drop --run-dir")
            configs = [config.replace(seed=s) for s in _seeds(seeds)]
            runs = [default_run_dir(c, str(out_dir)) for c in configs]
        else:
            configs, runs = [config], [RunDir(run_dir) if run_dir is not None else default_run_dir(config, str(out_dir))]
        if dry_run:
            shown = [{"run_dir": str(r.path), "config": c.to_dict()} for c, r in zip(configs, runs)]
            print(json.dumps(shown if seeds is not None else shown[0], indent=2))
            return
        for run in runs:
            console.print(f"[bold]training[/] {run.path}  ([dim]grokking plot --run-dir {run.path}[/] draws it at any time)")
        if seeds is None:
            summaries = [train(config, runs[0], resume=resume, overwrite=overwrite, console=err_console)]
        else:
            summaries = train_seeds(configs, runs, resume=resume, overwrite=overwrite, console=err_console)
    except GrokkingError as e:
        raise fail(str(e)) from None
    except TrainingInterrupted as e:
        how = f"[bold]grokking train --run-dir {runs[0].path} --resume[/]" if seeds is None else "the same command again"
        err_console.print(f"[yellow]{e}[/]; checkpoint saved. Resume with: {how}")
        raise typer.Exit(code=128 + e.signal_number) from None
    console.print(_summary_table(summaries[0]) if seeds is None else _seeds_table(configs, summaries))


def _summary_table(summary: dict[str, Any]) -> Table:
    table = Table(title="run summary", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in summary.items():
        if isinstance(value, float):
            value = f"{value:.2%}" if key.endswith("_acc") else f"{value:.4g}"
        table.add_row(key, "—" if value is None else str(value))
    return table


def _seeds_table(configs: list[RunConfig], summaries: list[dict[str, Any]]) -> Table:
    table = Table(title="run summaries", title_justify="left")
    for column in ("seed", "steps", "stopped", "memorized at", "generalized at", "final val acc"):
        table.add_column(column, justify="right")
    for config, summary in zip(configs, summaries):
        steps = [summary[k] for k in ("memorization_step", "generalization_step")]
        table.add_row(
            str(config.seed),
            f"{summary['steps_done']:,}",
            summary["stopped"],
            *("—" if s is None else f"{s:,}" for s in steps),
            f"{summary['final_val_acc']:.2%}",
        )
    return table


@main.command("sweep")
def sweep_command(
    grid: Annotated[Optional[list[str]], typer.Option(help="KEY=VALUES to sweep, e.g. train_frac=0.3,0.5 or seed=0-2; repeat for a grid. KEY: a train flag or config field.")] = None,
    preset: Annotated[str, typer.Option(help=f"Base config of every point: {PRESET_HELP}.")] = "quick",
    settings: Annotated[Optional[list[str]], typer.Option("--set", help="KEY=VALUE fixed for every point, e.g. --set eval_every=100; repeatable.")] = None,
    steps: Annotated[Optional[int], typer.Option(help="Step budget of every point.")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto (cuda, then mps, then cpu), cpu, cuda or mps.")] = None,
    out_dir: Annotated[Optional[Path], typer.Option(help="Folder of the sweep: sweep.json and one run dir a point.")] = None,
    dry_run: Annotated[bool, typer.Option(help="List the points (done, partial or new) and exit.")] = False,
    emit_commands: Annotated[bool, typer.Option(help="Write sweep.json and print one `grokking train` command a point (for GNU parallel or a SLURM array).")] = False,
) -> None:
    """Train a grid of configs, one run dir a point; running it again skips finished points and resumes the rest."""
    try:
        if out_dir is None:
            raise GrokkingError("give --out-dir DIR, the folder for the sweep's run dirs")
        flags = TrainFlags(typer.main.get_command(main).commands["train"])
        fixed = {k: v for k, v in dict(steps=steps, device=device).items() if v is not None}
        sweep = plan_sweep(preset, grid or [], out_dir, fixed, settings or [], flags.aliases)
        if emit_commands:
            commands = train_commands(sweep, flags)
            err_console.print(f"wrote {write_manifest(sweep)}; `grokking plot --sweep {out_dir}` summarizes the runs")
            print("\n".join(commands))
            return
        if dry_run:
            console.print(sweep_table([point_report(p) for p in sweep.points], f"sweep {out_dir} (dry run)"))
            return
        reports = run_sweep(sweep, console=err_console)
    except GrokkingError as e:
        raise fail(str(e)) from None
    except (TrainingInterrupted, KeyboardInterrupt) as e:
        number = e.signal_number if isinstance(e, TrainingInterrupted) else signal.SIGINT
        hint = "finished points and checkpoints are kept. Run the same command again to continue the sweep."
        err_console.print(f"[yellow]{e or 'interrupted'}[/]; {hint}", soft_wrap=True)
        raise typer.Exit(code=128 + number) from None
    console.print(sweep_table(reports, f"sweep {out_dir}"))


@main.command("plot")
def plot_command(
    run_dir: Annotated[Optional[list[Path]], typer.Option(help="Run dir to draw; repeat to overlay several runs.")] = None,
    sweep: Annotated[Optional[Path], typer.Option(help="A `grokking sweep` folder: bring DIR/sweep.json up to date with the outcomes and draw DIR/plots/sweep.png.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Output folder \\[default: RUN_DIR/plots; required with several runs].")] = None,
) -> None:
    """Draw plots/accuracy.png and plots/loss.png from metrics.jsonl (also while training), or a sweep's summary."""
    try:
        if run_dir and sweep is not None:
            raise GrokkingError("give --run-dir or --sweep, not both")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            paths = report_sweep(sweep, out) if sweep is not None else plot_runs(run_dir or [], out)
        for warning in caught:
            err_console.print(f"[yellow]warning:[/] {warning.message}")
    except GrokkingError as e:
        raise fail(str(e)) from None
    for path in paths:
        console.print(f"wrote {path}")


@main.command("eval")
def eval_command(
    checkpoint: Annotated[Optional[Path], typer.Option(help="One checkpoint file to evaluate.")] = None,
    run_dir: Annotated[Optional[Path], typer.Option(help="Evaluate every checkpoint of this run dir.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Recompute train/validation loss and accuracy of saved checkpoints on the run's split."""
    try:
        if (checkpoint is None) == (run_dir is None):
            raise GrokkingError("give exactly one of --checkpoint FILE or --run-dir DIR")
        if checkpoint is not None:
            rows = evaluate_checkpoints([checkpoint])
        else:
            run = RunDir(run_dir)
            rows = evaluate_checkpoints(run_checkpoints(run), expected=run.read_config())
    except GrokkingError as e:
        raise fail(str(e)) from None
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title="checkpoint evaluation")
    for column in ("step", "train_loss", "train_acc", "val_loss", "val_acc", "checkpoint"):
        table.add_column(column, justify="left" if column == "checkpoint" else "right")
    for row in rows:
        table.add_row(
            f"{row['step']:,}",
            f"{row['train_loss']:.4f}",
            f"{row['train_acc']:.2%}",
            f"{row['val_loss']:.4f}",
            f"{row['val_acc']:.2%}",
            Path(row["checkpoint"]).name,
        )
    console.print(table)



@main.command("bench")
def bench_command(
    preset: Annotated[str, typer.Option(help=f"Config to measure: {PRESET_HELP}.")] = "paper_wd",
    steps: Annotated[int, typer.Option(help="Timed steps per contender (speed mode).")] = 300,
    rounds: Annotated[int, typer.Option(help="Interleaved blocks per contender (speed mode).")] = 3,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = "auto",
    time_to_grok: Annotated[bool, typer.Option("--time-to-grok", help="Measure wall seconds to val acc ≥ 99% instead.")] = False,
    seeds: Annotated[str, typer.Option(help="Seeds for --time-to-grok, e.g. 0-2 or 0,3,7.")] = "0-2",
    together: Annotated[int, typer.Option(help="Instead: seed-steps/s of this many seeds trained together vs one at a time.")] = 0,
    max_steps: Annotated[int, typer.Option(help="Give up a --time-to-grok run after this many steps.")] = 20_000,
    subnormals: Annotated[Optional[Path], typer.Option(help="Instead: CPU steps/s from this run dir's latest checkpoint, subnormal floats flushed to zero vs computed.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Measure training speed: this package's engine against a plain reference loop, in one process."""
    try:
        config = resolve_batch_size(preset_config(preset).replace(device=device))
        resolve_device(device)
        if steps <= 0 or rounds <= 0 or max_steps <= 0 or together < 0:
            raise GrokkingError("--steps, --rounds and --max-steps must be positive, --together not negative")
        with Progress(console=err_console, transient=True) as progress:
            if subnormals is not None:
                result = bench_subnormals(RunDir(subnormals), steps, rounds, progress)
            elif time_to_grok:
                result = bench_time_to_grok(config, _seeds(seeds), max_steps, progress)
            elif together > 0:
                result = bench_seeds(config, together, steps, rounds, progress)
            else:
                result = bench_speed(config, steps, rounds, progress)
    except GrokkingError as e:
        raise fail(str(e)) from None
    if as_json:
        print(json.dumps(result, indent=2))
        return
    measured = f"{subnormals} from step {result['from_step']:,}" if subnormals is not None else preset
    table = Table(title=f"grokking bench · {measured} · {result['device']} ({result['device_name']})", title_justify="left")
    if subnormals is not None:
        table.add_column("measure")
        table.add_column("value", justify="right")
        table.add_row("subnormals flushed: steps/s", f"{result['flushed_steps_per_s']:,.1f}")
        table.add_row("subnormals computed: steps/s", f"{result['subnormal_steps_per_s']:,.1f}")
        table.add_row("speed-up", f"{result['speedup']:.2f}×")
    elif time_to_grok:
        for column in ("seed", "contender", "steps to val ≥ 99%", "wall seconds"):
            table.add_column(column, justify="right")
        for row in result["runs"]:
            reached = f"{row['steps']:,}" if row["steps"] is not None else f"not within {max_steps:,}"
            table.add_row(str(row["seed"]), row["contender"], reached, f"{row['seconds']:.1f}")
    elif together > 0:
        table.add_column("measure")
        table.add_column("value", justify="right")
        table.add_row("one seed at a time: seed-steps/s", f"{result['sequential_seed_steps_per_s']:,.1f}")
        table.add_row(f"{together} seeds together: seed-steps/s", f"{result['together_seed_steps_per_s']:,.1f}")
        table.add_row("speed-up", f"{result['speedup']:.2f}×")
    else:
        table.add_column("measure")
        table.add_column("value", justify="right")
        table.add_row("engine steps/s", f"{result['engine_steps_per_s']:,.1f}")
        table.add_row("reference steps/s", f"{result['reference_steps_per_s']:,.1f}")
        table.add_row("speed-up", f"{result['speedup']:.2f}×")
        for key in ("engine_peak_cuda_mib", "reference_peak_cuda_mib"):
            if key in result:
                table.add_row(key.replace("_", " "), f"{result[key]:,.0f}")
    table.add_row("peak RSS MiB", f"{result['peak_rss_mib']:,.0f}", *([""] * (len(table.columns) - 2)))
    console.print(table)
    console.print(f"torch {result['torch_version']} · {result['threads']} threads · python {result['python_version']}")


@main.command("analyze")
def analyze_command(
    run_dir: Annotated[Path, typer.Option(help="Run dir whose checkpoints to analyze.")],
    step: Annotated[Optional[int], typer.Option(help="Checkpoint step of the spectrum and the ablation \\[default: the last].")] = None,
    energy: Annotated[float, typer.Option(help="Share of the embedding's energy that the key frequencies carry.")] = 0.9,
    top_k: Annotated[Optional[int], typer.Option(help="Frequencies to ablate \\[default: the number of key frequencies].")] = None,
    draws: Annotated[int, typer.Option(help="Random sets of non-key frequencies ablated for comparison.")] = 5,
    seed: Annotated[int, typer.Option(help="Seed of the random sets.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    """Fourier analysis of a run: embedding spectrum, progress measures (Nanda et al. 2023), frequency ablation.

    Writes RUN_DIR/analysis/{spectrum,progress,ablation}.json and RUN_DIR/figures/{spectrum,progress,ablation}.png.
    """
    try:
        with Progress(console=err_console, transient=True) as progress:
            results = analyze_run(run_dir, step, energy, top_k, draws, seed, progress)
    except GrokkingError as e:
        raise fail(str(e)) from None
    if as_json:
        print(json.dumps(results, indent=2))
        return
    spectrum, ablation = results["spectrum"], results["ablation"]
    random_drop = "—" if ablation["random_mean_drop"] is None else f"{ablation['random_mean_drop']:.1%}"
    console.print(f"basis: {spectrum['basis_description']}")
    console.print(
        f"step {spectrum['step']:,}: key frequencies {spectrum['key_frequencies']} carry {spectrum['key_energy_share']:.1%} of the energy"
    )
    console.print(
        f"ablation: val acc {ablation['baseline_val_acc']:.1%} → {ablation['key_removed_val_acc']:.1%} without "
        f"{ablation['key_removed']} (drop {ablation['key_drop']:.1%}); mean drop without {ablation['random_k']} random others: {random_drop}"
    )
    for path in results["files"]:
        console.print(f"wrote {path}")
