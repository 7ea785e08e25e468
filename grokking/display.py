"""What the commands show: the training progress (a rich bar on a terminal, one plain line per
evaluation in a log file) and the tables of results."""

from __future__ import annotations

import codecs
import sys
import unicodedata
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TextIO

from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from grokking.config import GENERALIZED, RunConfig
from grokking.errors import naming
from grokking.observer import Observer
from grokking.overview import COLUMNS, overview_table_rows

if TYPE_CHECKING:
    from grokking.train import SeedRun

# ASCII stand-ins for the characters our output uses, where a stream cannot encode them (LANG=C,
# PYTHONIOENCODING=ascii); others fall back to their decomposition (ḡ -> g), a letter's name (λ -> lamda) or ?.
ASCII_STAND_INS = {
    "·": ".", "−": "-", "—": "-", "–": "-", "…": "...", "≥": ">=", "≤": "<=", "≈": "~", "←": "<-", "→": "->",
    "×": "x", "±": "+/-", "│": "|", "━": "-", "✓": "v", "•": "*", "§": "S", "√": "sqrt", "∘": "o", "⊥": "_|_",
}  # fmt: skip
SUPERSCRIPTS = "⁰¹²³⁴⁵⁶⁷⁸⁹⁻⁺"
FROM_SUPERSCRIPT = str.maketrans(SUPERSCRIPTS, "0123456789-+")


def ascii_text(text: str) -> str:
    """`text` with every character outside ASCII replaced by a stand-in; a run of superscripts becomes
    an exponent (y⁻¹ -> y^-1)."""
    out, superscript = [], False
    for char in text:
        if char.isascii():
            out.append(char)
        elif char in SUPERSCRIPTS:
            out.append(("" if superscript else "^") + char.translate(FROM_SUPERSCRIPT))
        else:
            out.append(_ascii_char(char))
        superscript = char in SUPERSCRIPTS
    return "".join(out)


def _ascii_char(char: str) -> str:
    if char in ASCII_STAND_INS:
        return ASCII_STAND_INS[char]
    decomposed = unicodedata.normalize("NFKD", char).encode("ascii", "ignore").decode()
    if decomposed:
        return decomposed
    return unicodedata.name(char, "?").split()[-1].lower() if char.isalpha() else "?"


class OutputStream:
    """sys.stdout or sys.stderr for a command: a character the stream's encoding lacks is written as its
    ASCII stand-in instead of raising (so that LANG=C never loses a finished run's summary to a print),
    and a failed write names the stream ("standard output: No space left on device")."""

    def __init__(self, stream: TextIO, name: str):
        self._stream, self._name = stream, name

    def write(self, text: str) -> int:
        encoding = getattr(self._stream, "encoding", None) or "utf-8"
        try:
            text.encode(encoding)
        except UnicodeEncodeError:  # checked here: stderr would write \u2502 rather than raise
            text = text.encode(encoding, "grokking.ascii").decode(encoding)
        with naming(self._name):
            return self._stream.write(text)

    def flush(self) -> None:
        with naming(self._name):
            self._stream.flush()

    def __getattr__(self, name: str) -> Any:  # encoding, isatty, fileno...: the stream's own
        return getattr(self._stream, name)


def _encode_as_ascii(error: UnicodeError) -> tuple[str, int]:
    if not isinstance(error, UnicodeEncodeError):
        raise error
    return ascii_text(error.object[error.start : error.end]), error.end


codecs.register_error("grokking.ascii", _encode_as_ascii)


@contextmanager
def guarded_output() -> Iterator[None]:
    """Standard output and error as `OutputStream`s while a command runs (a closed one stays None)."""
    saved = sys.stdout, sys.stderr
    if sys.stdout is not None:
        sys.stdout = OutputStream(sys.stdout, "standard output")  # type: ignore[assignment]
    if sys.stderr is not None:
        sys.stderr = OutputStream(sys.stderr, "standard error")  # type: ignore[assignment]
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


def flush_output() -> None:
    """Flush standard output, so that a failed write is told by the command, not lost at exit."""
    if sys.stdout is not None:
        sys.stdout.flush()


def plain(text: str) -> Text:
    """`text` for a table cell or title as it is, on one line: not read as rich markup (a folder named
    "[/x]" would be a markup error) and its control characters escaped (a line break would split a row)."""
    return Text("".join(char if char.isprintable() else repr(char)[1:-1] for char in text))


class RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(f"{task.speed:,.0f} steps/s" if task.speed else "… steps/s", style="magenta")


def metrics_text(last: dict[str, float]) -> str:
    if not last:
        return "waiting for the first evaluation"
    return (
        f"train loss {last['train_loss']:.3g} acc {last['train_acc']:.1%} │ "
        f"val loss {last['val_loss']:.3g} acc {last['val_acc']:.1%}"
    )


def seeds_text(runs: Sequence[SeedRun]) -> str:
    accuracies = [r.state.last["val_acc"] for r in runs if r.state.last]
    if not accuracies:
        return f"{len(runs)} seeds · waiting for the first evaluation"
    generalized = sum(a >= GENERALIZED for a in accuracies)
    spread = f"{min(accuracies):.1%}–{max(accuracies):.1%}"
    return f"{len(runs)} seeds · val acc {spread} · {generalized} at ≥ {GENERALIZED:.0%}"


class TrainingProgress(Observer):
    """A progress bar on a terminal; elsewhere (a log file, SLURM, nohup) one unwrapped line per
    evaluation and no bar. Use it as a context manager around the training call."""

    def __init__(self, console: Console):
        self.console = console
        self.progress = None
        if console.is_terminal:
            self.progress = Progress(
                TextColumn("[bold]step"),
                MofNCompleteColumn(),
                BarColumn(),
                RateColumn(),
                TimeRemainingColumn(),
                TextColumn("[cyan]{task.fields[metrics]}"),
                console=console,
            )
        self.task: Any = None

    def __enter__(self) -> TrainingProgress:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self.progress is not None:
            self.progress.stop()

    @staticmethod
    def _text(runs: Sequence[SeedRun]) -> str:
        return metrics_text(runs[0].state.last) if len(runs) == 1 else seeds_text(runs)

    def started(self, runs: Sequence[SeedRun], total: int) -> None:
        if self.progress is not None:
            if self.task is not None:
                self.progress.update(self.task, visible=False)
            self.task = self.progress.add_task(
                "train", total=total, completed=runs[0].state.step, metrics=self._text(runs)
            )

    def evaluated(self, run: SeedRun, record: dict[str, Any]) -> None:
        step, config = record["step"], run.config
        if self.progress is None and step % config.eval_every == 0:
            line = f"{run.run.path.name} step {step:,}/{config.steps:,}  {metrics_text(run.state.last)}"
            self.console.print(line, soft_wrap=True, highlight=False, markup=False)

    def advanced(self, step: int, runs: Sequence[SeedRun]) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=step, metrics=self._text(runs))

    def note(self, message: str) -> None:
        self.console.print(message, style="dim", soft_wrap=True, highlight=False, markup=False)


def _steps(value: Any) -> str:
    return "—" if value is None else f"{value:,}"


def summary_table(summary: dict[str, Any]) -> Table:
    table = Table(title="run summary", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in summary.items():
        if isinstance(value, float):
            value = f"{value:.2%}" if key.endswith("_acc") else f"{value:.4g}"
        table.add_row(key, "—" if value is None else str(value))
    return table


def seeds_table(configs: list[RunConfig], summaries: list[dict[str, Any]]) -> Table:
    table = Table(title="run summaries", title_justify="left")
    for column in ("seed", "steps", "stopped", "memorized at", "generalized at", "final val acc"):
        table.add_column(column, justify="right")
    for config, summary in zip(configs, summaries):
        accuracy = summary["final_val_acc"]
        table.add_row(
            str(config.seed),
            f"{summary['steps_done']:,}",
            summary["stopped"],
            _steps(summary["memorization_step"]),
            _steps(summary["generalization_step"]),
            "—" if accuracy is None else f"{accuracy:.2%}",
        )
    return table


EVAL_METRICS = ("train_loss", "train_acc", "val_loss", "val_acc")  # the columns of `grokking eval`


def eval_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="checkpoint evaluation")
    for column in ("step", *EVAL_METRICS, "checkpoint"):
        table.add_column(column, justify="left" if column == "checkpoint" else "right")
    for row in rows:
        table.add_row(
            f"{row['step']:,}",
            *(_number(row[key], ".2%" if key.endswith("acc") else ".4f") for key in EVAL_METRICS),
            plain(Path(row["checkpoint"]).name),
        )
    return table


def _number(value: float | None, form: str) -> str:
    return "—" if value is None else format(value, form)


def sweep_table(reports: list[dict[str, Any]], title: str) -> Table:
    """One row a point: status, steps done of the budget, memorization and generalization steps
    (`> N`: not within the N steps trained), and where points went to SLURM their job and log."""
    table = Table(title=plain(title), title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("point", no_wrap=True)
    for column in ("status", "steps", "mem. at", "gen. at", "val acc", "best val"):
        table.add_column(column, justify="left" if column == "status" else "right", no_wrap=True)
    jobs = any("job_id" in r for r in reports)
    if jobs:
        table.add_column("job", no_wrap=True)
        table.add_column("log", overflow="fold")
    for r in reports:
        generalized, accuracy, best = r["generalization_step"], r["final_val_acc"], r["best_val_acc"]
        table.add_row(
            plain(r["name"]),
            r["status"],
            f"{r['steps_done']:,}/{r['budget']:,}",
            _steps(r["memorization_step"]),
            _steps(generalized) if not isinstance(generalized, str) else f"> {r['steps_done']:,}",
            "—" if accuracy is None else f"{accuracy:.1%}",
            "—" if best is None else f"{best:.1%}",
            *((r.get("job_id", "—"), r.get("log") or "—") if jobs else ()),
        )
    return table


def runs_table(rows: list[dict[str, Any]], title: str) -> Table:
    """`grokking runs`: one row per run dir."""
    table = Table(title=plain(title), title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in COLUMNS:  # the cells overview_table_rows gives, in its order
        right = column in ("steps", "mem. at", "gen. at", "val acc", "best val")
        table.add_column(column, justify="right" if right else "left")
    for cells in overview_table_rows(rows):
        table.add_row(*map(plain, cells))
    return table


def bench_table(result: dict[str, Any], measured: str) -> Table:
    """The figures of one `grokking bench` mode."""
    title = f"grokking bench · {measured} · {result['device']} ({result['device_name']})"
    table = Table(title=title, title_justify="left")
    mode = result["mode"]
    if mode == "time_to_grok":
        for column in ("seed", "contender", "steps to val ≥ 99%", "wall seconds"):
            table.add_column(column, justify="right")
        for row in result["runs"]:
            reached = f"{row['steps']:,}" if row["steps"] is not None else f"not within {result['max_steps']:,}"
            table.add_row(str(row["seed"]), row["contender"], reached, f"{row['seconds']:.1f}")
    elif mode == "speed":
        _speed_rows(table, result)
    else:
        table.add_column("measure")
        table.add_column("value", justify="right")
        rows = {
            "subnormals": [
                ("subnormals flushed: steps/s", "flushed_steps_per_s"),
                ("subnormals computed: steps/s", "subnormal_steps_per_s"),
            ],
            "seeds": [
                ("one seed at a time: seed-steps/s", "sequential_seed_steps_per_s"),
                (f"{result.get('seeds')} seeds together: seed-steps/s", "together_seed_steps_per_s"),
            ],
        }[mode]
        for label, key in rows:
            table.add_row(label, f"{result[key]:,.1f}")
        table.add_row("speed-up", f"{result['speedup']:.2f}×")
        if "together_peak_cuda_mib" in result:
            table.add_row("together peak CUDA MiB", f"{result['together_peak_cuda_mib']:,.0f}")
    table.add_row("peak RSS MiB", f"{result['peak_rss_mib']:,.0f}", *([""] * (len(table.columns) - 2)))
    return table


def _speed_rows(table: Table, result: dict[str, Any]) -> None:
    """Speed mode: each engine variant and the reference, against the reference and the fp32 roofline; the
    roofline itself; the start-up times."""
    roofline = "roofline_steps_per_s" in result
    for column in (
        "measured",
        "steps/s",
        "÷ reference",
        "÷ fp32 roofline",
        f"warm-up ({result['warmup_steps']} steps)",
    ):
        table.add_column(column, justify="left" if column == "measured" else "right")
    for row in result["engines"]:
        share = f"{row['share_of_fp32_roofline']:.0%}" if roofline else "—"
        table.add_row(
            f"engine, {row['variant']}", f"{row['steps_per_s']:,.1f}", f"{row['speedup']:.2f}×", share,
            f"{row['warmup_s']:.1f} s",
        )  # fmt: skip
    reference = result["reference_steps_per_s"]
    share = f"{reference / result['roofline_steps_per_s']:.0%}" if roofline else "—"
    table.add_row("reference loop, fp32", f"{reference:,.1f}", "1.00×", share, "")
    if roofline:
        products = f"{result['step_matmul_gflop']:.2f} GFLOP a step at {result['matmul_gflop_per_s']:,.0f} GFLOP/s"
        table.add_row(f"fp32 roofline ({products})", f"{result['roofline_steps_per_s']:,.1f}", "", "", "")
    for key, label in (("help_s", "`grokking --help`"), ("dry_run_s", "`train --dry-run`"),
                       ("first_step_s", "a 1-step training")):  # fmt: skip
        if key in result.get("startup", {}):
            table.add_row(f"{label}, whole process (median of 3)", f"{result['startup'][key]:.2f} s", "", "", "")


def analysis_lines(results: dict[str, Any]) -> list[str]:
    """What `grokking analyze` found, in four lines."""
    spectrum, ablation, sharp = results["spectrum"], results["ablation"], results["sharpness"]
    random_drop = "—" if ablation["random_mean_drop"] is None else f"{ablation['random_mean_drop']:.1%}"
    return [
        f"basis: {spectrum['basis_description']}",
        f"step {spectrum['step']:,}: key frequencies {spectrum['key_frequencies']} carry "
        f"{spectrum['key_energy_share']:.1%} of the energy",
        f"ablation: val acc {ablation['baseline_val_acc']:.1%} → {ablation['key_removed_val_acc']:.1%} without "
        f"{ablation['key_removed']} (drop {ablation['key_drop']:.1%}); mean drop without {ablation['random_k']} "
        f"random others: {random_drop}",
        f"sharpness (Keskar's ε-sharpness, ε {sharp['epsilon']:g}, {sharp['subspace']} random directions): "
        f"{sharp['sharpness']:.4g}",
    ]


def recipes_table(rows: list[dict[str, Any]]) -> Table:
    """`grokking reproduce --list`: each recipe, what it reproduces and shows, its runs and steps at both scales."""
    table = Table(title="recipes of `grokking reproduce`", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("recipe", "reproduces · shows", "small: runs, steps", "paper: runs, steps", "needs"):
        table.add_column(column, overflow="fold")
    for row in rows:
        scales = [
            "—" if not row[s]["runs"] else f"{row[s]['runs']:,} runs, {row[s]['steps']:,} steps"
            for s in ("small", "paper")
        ]
        needs = row["needs"] or (f"the runs of {row['runs_of']}" if row["runs_of"] else "")
        table.add_row(plain(row["recipe"]), plain(f"{row['source']} · {row['shows']}"), *scales, plain(needs))
    return table


def plan_table(rows: list[dict[str, Any]]) -> Table:
    """`grokking reproduce --dry-run`: runs and steps in all and still to train, and the time they would take."""
    table = Table(title="plan (nothing trained)", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("recipe", "scale", "runs (done)", "steps (left)", "measured steps/s", "estimate", "folder"):
        table.add_column(column, justify="left" if column in ("recipe", "scale", "folder") else "right")
    for row in rows:
        hours = row["hours_left"]
        time = "—" if not row["steps_left"] else f"≤ {hours:,.1f} h" if hours >= 1 else f"≤ {hours * 60:,.0f} min"
        table.add_row(
            plain(row["recipe"]),
            row["scale"],
            f"{row['runs']:,} ({row['runs_done']:,})",
            f"{row['steps']:,} ({row['steps_left']:,})",
            ", ".join(f"{s:g}" for s in row["speeds"]) or "—",
            time,
            plain(row["out_dir"]),
        )
    return table
