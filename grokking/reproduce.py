"""`grokking reproduce FIGURE`: each figure of Power et al. (2022), and of the follow-ups this package
implements, as a recipe. A recipe is data, not a training path: a preset, the settings every run shares, a
grid (training fractions, seeds), the series drawn as lines (one sweep each), a budget at two scales, and
the figure drawn from the run dirs. Training goes through `sweep` (finished points skipped, partial ones
resumed, `--jobs` and the SLURM executor apply), so a reproduction stopped at any point continues.

`paper` is the paper's setting as this package reads it; `small` is a reduction that finishes on a 2-core
CPU, its departures written into the figure's title and `reproduce --list`.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grokking.config import RunConfig, architecture, preset_config, resolve
from grokking.errors import GrokkingError, pick
from grokking.observer import Observer
from grokking.rundir import atomic_write_json, check_targets, require_directory_path
from grokking.sweep import Sweep, build_sweep, point_report, point_state, run_sweeps, sweep_record, write_manifest

SCALES = ("small", "paper", "tiny")
TINY_STEPS = 20
OUT_ROOT = Path("runs/reproduce")
PROBE_STEPS = 50  # the measured speed behind --dry-run's estimate: this many steps and one evaluation


@dataclass(frozen=True)
class Series:
    """One line of a figure: its sweep's folder, its legend entry, and the settings it adds."""

    name: str
    label: str
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Scale:
    """A recipe at one scale: every run is `preset` + `settings` + its series' settings + a grid point."""

    preset: str
    settings: dict[str, Any]
    grid: dict[str, list[Any]]
    series: tuple[Series, ...]
    note: str = ""  # how this scale departs from the paper in kind (the values are listed from the settings)
    arch: str | None = None  # a named architecture (`grokking train --arch`) in place of the preset's

    def base(self, series: Series | None = None) -> RunConfig:
        model = architecture(self.arch) if self.arch else {}
        return preset_config(self.preset).replace(**{**model, **self.settings, **(series.settings if series else {})})


@dataclass(frozen=True)
class Recipe:
    name: str
    source: str  # the figure reproduced
    shows: str  # what it shows, in one line
    figure: str  # how it is drawn: a key of FIGURES
    small: Scale
    paper: Scale
    runs_of: str | None = None  # draws the runs of this other recipe (and trains them where needed)

    def scale(self, name: str) -> Scale:
        return pick({"small": self.small, "paper": self.paper, "tiny": tiny(self.small)}, name, "--scale")


def tiny(scale: Scale) -> Scale:
    """A smoke test of a recipe: the small scale with `TINY_STEPS` steps, its first two series, and two runs a
    series (the first two values of its first grid key, the first of the others), to check in seconds that it
    runs here."""
    grid = {key: values[: 2 if number == 0 else 1] for number, (key, values) in enumerate(scale.grid.items())}
    every = {"eval_every": TINY_STEPS // 2, "checkpoint_every": TINY_STEPS // 2, "snapshot_every": TINY_STEPS // 2}
    settings = {**scale.settings, "steps": TINY_STEPS, **every}
    return Scale(scale.preset, settings, grid, scale.series[:2], "a smoke test, not a result", scale.arch)


SEEDS = [0, 1, 2]  # Power et al. Fig. 2: "averaged over 3 seeds"
PAPER_FRACTIONS = [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
SMALL_FRACTIONS = [0.3, 0.5, 0.7]
# The small scale's common ground: quick's model and optimizer (pre-LN, width 64, AdamW lr 2e-3, weight decay 1)
# on x/y mod 47, a run stopped two evaluations after validation accuracy first reached 99 % (the best accuracy
# within the budget is then already ≥ 99 %, so stopping does not change what Fig. 2 shows).
SMALL = {"operation": "div", "p": 47, "eval_every": 100, "stop_on_grok": True, "snapshot_every": 100_000}
PAPER_OPERATIONS = (  # Power et al. Fig. 2 (right), in their order
    "add", "sub", "div", "div_odd", "sq_sum", "quad", "quad_x", "cube_xy", "cube_xy2_y", "s5_mul", "s5_conj", "s5_xyx",
)  # fmt: skip
NO_DECAY = {"optimizer": "adam", "weight_decay": 0.0}
INTERVENTIONS = (  # Power et al. Fig. 2 (left): the interventions openai/grok's options can express
    Series("adamw_wd1", "AdamW, weight decay 1"),
    Series("adamw_wd1_to_init", "AdamW, weight decay 1 toward the initial weights", {"weight_decay_kind": "to_init"}),
    Series("adam", "Adam", NO_DECAY),
    Series("adam_full_batch", "Adam, full batch", {**NO_DECAY, "batch_size": -1}),
    Series("adam_dropout", "Adam, dropout 0.1", {**NO_DECAY, "dropout": 0.1}),
    Series("adam_update_noise", "Adam, update noise 0.1", {**NO_DECAY, "noise_factor": 0.1}),
)


def operation_series(names: Sequence[str]) -> tuple[Series, ...]:
    from grokking.operations import get_operation

    return tuple(Series(name, get_operation(name).formula, {"operation": name}) for name in names)


def fig2(
    series: tuple[Series, ...], small_series: tuple[Series, ...], note: str, paper: dict[str, Any]
) -> dict[str, Scale]:
    """Power et al. Fig. 2's two scales: 10⁵ steps of `paper_wd`, 3 seeds and 7 fractions; small, 3,000 steps of
    the small common ground at 3 fractions. Both stop a run once it has generalized: its best validation
    accuracy within the budget, what the figure plots, is then ≥ 99 % already."""
    small_grid, paper_grid = (
        {"train_frac": SMALL_FRACTIONS, "seed": SEEDS},
        {"train_frac": PAPER_FRACTIONS, "seed": SEEDS},
    )
    return {
        "small": Scale("quick", {**SMALL, "steps": 3000}, small_grid, small_series, note),
        "paper": Scale("paper_wd", {**paper, "stop_on_grok": True}, paper_grid, series),
    }


FIG2_LEFT = Recipe(
    "fig2-left",
    "Power et al. 2022, Fig. 2 (left)",
    "best validation accuracy within the budget against the training fraction, one line per optimization intervention",
    "best",
    **fig2(INTERVENTIONS, INTERVENTIONS, "x/y mod 47 instead of x·y in S5", {"operation": "s5_mul"}),
)
GROKFAST = {"operation": "mul", "weight_decay": 0.005, "eval_every": 100}
GROKFAST_SERIES = (
    Series("adam_l2", "Adam + L2 0.005"),
    Series("adam_l2_grokfast", "Adam + L2 0.005 + Grokfast-EMA (α 0.98, λ 2)", {"grokfast": "ema"}),
)
COLLAPSE = {"operation": "add", "optimizer": "adam", "weight_decay": 0.0, "eval_every": 100}
COLLAPSE_SERIES = (
    Series("cross_entropy", "cross-entropy (float32)"),
    Series("stablemax", "StableMax", {"loss": "stablemax"}),
    Series("orthograd", "⊥Grad, cross-entropy", {"orthograd": True}),
)

RECIPES: dict[str, Recipe] = {
    recipe.name: recipe
    for recipe in [
        Recipe(
            "fig1-left",
            "Power et al. 2022, Fig. 1 (left)",
            "train and validation accuracy of x/y mod 97 on half the table: memorized early, generalized far later",
            "curves",
            small=Scale(
                "paper_wd",
                {"steps": 10_000},
                {"seed": [0]},
                (Series("adamw", "AdamW, weight decay 1"),),
                "AdamW with weight decay 1 instead of Adam without it, which needs 10⁵–10⁶ steps",
            ),
            paper=Scale("paper_late", {}, {"seed": [0]}, (Series("adam", "Adam, no weight decay"),)),
        ),
        Recipe(
            "fig1-center",
            "Power et al. 2022, Fig. 1 (centre)",
            "steps until validation (and train) accuracy ≥ 99 % against the training fraction",
            "steps",
            small=Scale(
                "quick",
                {**SMALL, "steps": 5000},
                {"train_frac": [0.3, 0.4, 0.5, 0.6, 0.7, 0.8], "seed": SEEDS},
                (Series("div", "x/y mod 47"),),
                "x/y mod 47 instead of x·y in S5",
            ),
            paper=Scale(
                "paper_wd",
                {"operation": "s5_mul", "stop_on_grok": True},
                {"train_frac": PAPER_FRACTIONS, "seed": SEEDS},
                (Series("s5_mul", "x·y in S5"),),
            ),
        ),
        Recipe(
            "fig1-right",
            "Power et al. 2022, Fig. 1 (right)",
            "the operation table the network sees: training equations filled in, the held-out ones blank",
            "table",
            small=Scale("paper_wd", {"p": 11}, {}, (), "x/y mod 11, small enough to print its answers"),
            paper=Scale("paper_wd", {}, {}, ()),
        ),
        FIG2_LEFT,
        Recipe(
            "fig2-right",
            "Power et al. 2022, Fig. 2 (right)",
            "best validation accuracy within the budget against the training fraction, one line per operation",
            "best",
            **fig2(
                operation_series(PAPER_OPERATIONS),
                operation_series(PAPER_OPERATIONS[:9]),
                "the 9 operations mod 47, without S5's 3",
                {},
            ),
        ),
        Recipe(
            "fig3",
            "Power et al. 2022, Fig. 3",
            "t-SNE of the output layer: in S5, clusters that are cosets of a subgroup; mod 97, the residues mod 8",
            "projection",
            small=Scale(
                "paper_wd",
                {"train_frac": 0.8, "steps": 10_000, "stop_on_grok": True, "eval_every": 100},
                {"seed": [0]},
                operation_series(("s5_mul", "add")),
                "80 % of the table for training, where the paper scale has 50 % (there x·y in S5 had not "
                "generalized by step 12,500 in a trial here); stopped once generalized",
            ),
            paper=Scale("paper_wd", {"train_frac": 0.5}, {"seed": [0]}, operation_series(("s5_mul", "add"))),
        ),
        Recipe(
            "fig4",
            "Power et al. 2022, sharpness (their Fig. 4)",
            "final validation accuracy against the sharpness of the final weights, over fig2-left's runs",
            "sharpness",
            small=FIG2_LEFT.small,
            paper=FIG2_LEFT.paper,
            runs_of="fig2-left",
        ),
        Recipe(
            "nanda-progress",
            "Nanda et al. 2023, progress measures",
            "restricted and excluded loss, Gini and weight norm of x+y mod 113 through grokking",
            "progress",
            small=Scale(
                "nanda_add",
                {"steps": 15_000, "snapshot_every": 1000},
                {"seed": [0]},
                (Series("nanda_add", "x+y mod 113"),),
                "15,000 of their 40,000 full-batch steps",
            ),
            paper=Scale("nanda_add", {"snapshot_every": 1000}, {"seed": [0]}, (Series("nanda_add", "x+y mod 113"),)),
        ),
        Recipe(
            "grokfast",
            "Lee et al. 2024 (Grokfast), x·y mod 97",
            "Grokfast-EMA against its control (the same Adam + L2) over 3 seeds",
            "curves",
            small=Scale(
                "paper_late",
                {**GROKFAST, "steps": 5000, "stop_on_grok": True},
                {"seed": SEEDS},
                GROKFAST_SERIES,
                "a 5,000-step budget",
                "prenorm",
            ),
            paper=Scale("paper_late", {**GROKFAST, "steps": 50_000}, {"seed": SEEDS}, GROKFAST_SERIES, arch="prenorm"),
        ),
        Recipe(
            "softmax-collapse",
            "Prieto et al. 2025, softmax collapse",
            "without weight decay: cross-entropy in float32 against StableMax and ⊥Grad, x+y mod 97",
            "curves",
            small=Scale(
                "quick",
                {**COLLAPSE, "p": 47, "steps": 5000, "stop_on_grok": True},
                {"seed": SEEDS},
                COLLAPSE_SERIES,
                "quick's model, x+y mod 47",
            ),
            paper=Scale("paper_late", {**COLLAPSE, "steps": 100_000}, {"seed": SEEDS}, COLLAPSE_SERIES),
        ),
    ]
}


def get_recipe(name: str) -> Recipe:
    return pick(RECIPES, name, "figure")


@dataclass(frozen=True)
class Plan:
    """A recipe at one scale, laid out on disk: one sweep a series under `out_dir`."""

    recipe: Recipe
    scale_name: str
    out_dir: Path
    sweeps: list[Sweep]

    @property
    def scale(self) -> Scale:
        return self.recipe.scale(self.scale_name)

    @property
    def figures_dir(self) -> Path:
        return self.out_dir / "figures"

    def title(self) -> str:
        """What was run, for the figure: the source, the scale and how it departs from the paper."""
        if self.scale_name == "paper":  # the settings are the paper's
            return f"{self.recipe.source} · paper scale: {settings_text(self.scale)}"
        note = f"{self.scale.note}; " if self.scale.note else ""
        return f"{self.recipe.source} · small scale ({note}{settings_text(self.scale)})"


def settings_text(scale: Scale) -> str:
    """`preset quick · p=47 · steps=3,000 · train_frac 0.3, 0.5, 0.7 · seeds 0, 1, 2`."""
    words = [f"preset {scale.preset}"] + ([f"arch {scale.arch}"] if scale.arch else [])
    per_series = set.intersection(*(set(s.settings) for s in scale.series)) if scale.series else set()
    words += [f"{k}={v:,}" if isinstance(v, int) and not isinstance(v, bool) else f"{k}={v}"
              for k, v in scale.settings.items() if k != "snapshot_every" and k not in per_series]  # fmt: skip
    words += [f"{'seeds' if k == 'seed' else k} {', '.join(map(str, v))}" for k, v in scale.grid.items()]
    return " · ".join(words)


def default_out_dir(recipe: Recipe, scale: str) -> Path:
    return OUT_ROOT / f"{recipe.runs_of or recipe.name}-{scale}"


def plan_recipe(name: str, scale: str, out_dir: Path | None = None) -> Plan:
    """The sweeps of recipe `name` at `scale` under `out_dir` (default runs/reproduce/<recipe>-<scale>)."""
    recipe = get_recipe(name)
    chosen = recipe.scale(scale)
    out_dir = default_out_dir(recipe, scale) if out_dir is None else out_dir
    require_directory_path(out_dir, "--out-dir")
    sweeps = []
    for series in chosen.series:
        grid = chosen.grid or {"seed": [chosen.base(series).seed]}
        sweeps.append(build_sweep(chosen.base(series), grid, out_dir / series.name))
    return Plan(recipe, scale, out_dir, sweeps)


def plan_rows(plan: Plan) -> dict[str, Any]:
    """Runs and steps of a plan: in all, and still to train (a run stopped on grokking may end earlier)."""
    points = [p for sweep in plan.sweeps for p in sweep.points]
    left = [(p, point_report(p)) for p in points if point_state(p)[0] != "done"]
    return {
        "recipe": plan.recipe.name,
        "scale": plan.scale_name,
        "runs": len(points),
        "runs_done": len(points) - len(left),
        "steps": sum(p.config.steps for p in points),
        "steps_left": sum(p.config.steps - report["steps_done"] for p, report in left),
        "out_dir": str(plan.out_dir),
    }


def cost_key(config: RunConfig) -> tuple[Any, ...]:
    """What a step's cost depends on: the model's shape, the batch and the table (not the seed or fraction's
    other effects)."""
    from grokking.operations import get_operation

    names = ("model", "n_layers", "d_model", "n_heads", "d_mlp", "batch_size", "end_token", "logits", "loss_dtype")
    return (*(getattr(config, n) for n in names), get_operation(config.operation).n_elements(config.p), config.device)


def measure_speed(config: RunConfig) -> float:
    """Steps per second of `config` here: a `PROBE_STEPS`-step training with one evaluation, in a temporary
    run dir (start-up not counted)."""
    from grokking.train import train

    probe = config.replace(
        seed=0, steps=PROBE_STEPS, eval_every=PROBE_STEPS, checkpoint_every=PROBE_STEPS, stop_on_grok=False
    )
    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        summary = train(probe, Path(scratch) / "probe")
        return summary["steps_per_s"] or PROBE_STEPS / (time.perf_counter() - started)


def estimate(plan: Plan, speeds: dict[tuple[Any, ...], float] | None = None) -> dict[str, Any]:
    """`plan_rows` plus the hours the steps left would take one after another at the speed measured here
    (each distinct step cost measured once and kept in `speeds`), an upper bound where runs stop on grokking."""
    speeds = {} if speeds is None else speeds
    seconds, used = 0.0, set()
    for sweep in plan.sweeps:
        for point in sweep.points:
            status, _ = point_state(point)
            if status == "done":
                continue
            key = cost_key(point.config)
            if key not in speeds:
                speeds[key] = measure_speed(point.config)
            used.add(round(speeds[key], 1))
            seconds += (point.config.steps - point_report(point)["steps_done"]) / speeds[key]
    return {**plan_rows(plan), "hours_left": seconds / 3600, "speeds": sorted(used)}


def run_recipe(
    plan: Plan,
    observer: Observer | None = None,
    say: Callable[[str], None] = lambda line: None,
    log: Sequence[str] = (),
    jobs: int = 1,
) -> list[Path]:
    """Train what the plan still needs (through `run_sweeps`: finished points skipped, partial ones resumed)
    and draw the figure; return the files written."""
    check_targets(figure_targets(plan))
    run_sweeps(plan.sweeps, observer, say, log, jobs)
    return draw(plan)


def figure_targets(plan: Plan) -> list[Path]:
    """The files `draw` writes, checked before training so that a file in the way is found first."""
    name, folder = plan.recipe.name, plan.figures_dir
    figures = [folder / name / "accuracy.png", folder / name / "loss.png"] if plan.recipe.figure == "curves" else []
    return [*(figures or [folder / f"{name}.png"]), folder / f"{name}.json"]


def draw(plan: Plan) -> list[Path]:
    """The recipe's figure from the run dirs as they are (points without results yet are left out), and
    the numbers it shows as JSON beside it."""
    if plan.sweeps and not _run_dirs(plan):
        raise GrokkingError(f"no run of {plan.out_dir} has trained yet; run it without --draw-only first")
    records = []
    for sweep in plan.sweeps:
        write_manifest(sweep)
        records.append(sweep_record(sweep))
    return FIGURES[plan.recipe.figure](plan, records)


def _series_points(plan: Plan, records: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    return [(series.label, record["points"]) for series, record in zip(plan.scale.series, records)]


def _series_data(series: list[tuple[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    """The points a figure of series shows (`_series_points`), as written beside it."""
    return {"series": [{"label": label, "points": points} for label, points in series]}


def _write(plan: Plan, data: Any, figure: Path) -> list[Path]:
    path = plan.figures_dir / f"{plan.recipe.name}.json"
    atomic_write_json(path, {"recipe": plan.recipe.name, "scale": plan.scale_name, "title": plan.title(), **data})
    return [figure, path]


def draw_steps(plan: Plan, records: list[dict[str, Any]]) -> list[Path]:
    from grokking.plot import plot_sweep

    figure = plot_sweep(records[0], plan.figures_dir / f"{plan.recipe.name}.png", note=plan.title())
    return _write(plan, _series_data(_series_points(plan, records)), figure)


def draw_best(plan: Plan, records: list[dict[str, Any]]) -> list[Path]:
    from grokking.paper_plots import best_accuracy_figure

    series = _series_points(plan, records)
    figure = best_accuracy_figure(series, plan.title(), plan.figures_dir / f"{plan.recipe.name}.png")
    return _write(plan, _series_data(series), figure)


def draw_table(plan: Plan, records: list[dict[str, Any]]) -> list[Path]:
    from grokking.paper_plots import table_figure

    config = resolve(plan.scale.base())
    figure = table_figure(config, plan.recipe.source, plan.figures_dir / f"{plan.recipe.name}.png")
    return _write(plan, {"config": config.to_dict()}, figure)


def _run_dirs(plan: Plan) -> list[Path]:
    """The run dirs that have trained at least one evaluation, in the plan's order."""
    return [p.run.path for sweep in plan.sweeps for p in sweep.points if p.run.metrics_path.is_file()]


def draw_curves(plan: Plan, records: list[dict[str, Any]]) -> list[Path]:
    from grokking.plot import plot_runs

    paths = plot_runs(_run_dirs(plan), plan.figures_dir / plan.recipe.name)
    return _write(plan, _series_data(_series_points(plan, records)), paths[0])


def draw_projection(plan: Plan, records: list[dict[str, Any]]) -> list[Path]:
    from grokking.analysis.projection import projection, projection_figure

    panels = [projection(run) for run in _run_dirs(plan)]
    figure = projection_figure(panels, plan.title(), plan.figures_dir / f"{plan.recipe.name}.png")
    return _write(plan, {"panels": panels}, figure)


def draw_sharpness(plan: Plan, records: list[dict[str, Any]]) -> list[Path]:
    from grokking.analysis.sharpness import sharpness
    from grokking.evaluate import load_run_state, model_from_checkpoint
    from grokking.paper_plots import sharpness_figure
    from grokking.tasks import load_task

    rows = []
    for series, sweep in zip(plan.scale.series, plan.sweeps):
        for point in sweep.points:
            report = point_report(point)
            if report["status"] != "done" or not point.run.latest_path.is_file():
                continue
            data = load_task(point.config)
            model = model_from_checkpoint(load_run_state(point.run.latest_path, point.config), point.config, data)
            measured = sharpness(model, data, point.config)
            rows.append({"series": series.label, "run_dir": str(point.run.path), "val_acc": report["final_val_acc"],
                         "sharpness": measured["sharpness"], "train_loss": measured["train_loss"]})  # fmt: skip
    if not rows:
        raise GrokkingError(f"no run of {plan.out_dir} has finished with a checkpoint; train it first")
    figure = sharpness_figure(rows, plan.title(), plan.figures_dir / f"{plan.recipe.name}.png")
    return _write(plan, {"runs": rows}, figure)


def draw_progress(plan: Plan, records: list[dict[str, Any]]) -> list[Path]:
    from grokking.analysis.analyze import analyze_run

    results = analyze_run(_run_dirs(plan)[0])
    return [Path(path) for path in results["files"]]


FIGURES: dict[str, Callable[[Plan, list[dict[str, Any]]], list[Path]]] = {
    "steps": draw_steps,
    "best": draw_best,
    "table": draw_table,
    "curves": draw_curves,
    "projection": draw_projection,
    "sharpness": draw_sharpness,
    "progress": draw_progress,
}


def listing() -> list[dict[str, Any]]:
    """`reproduce --list`: every recipe, what it shows, and its runs and steps at both scales (no training)."""
    rows = []
    for recipe in RECIPES.values():
        row: dict[str, Any] = {"recipe": recipe.name, "source": recipe.source, "shows": recipe.shows}
        for scale in ("small", "paper"):
            chosen = recipe.scale(scale)
            n_points = math.prod(len(v) for v in chosen.grid.values()) if chosen.grid else 1
            runs = n_points * len(chosen.series)
            steps = sum(chosen.base(s).steps for s in chosen.series) * n_points
            row[scale] = {"runs": runs, "steps": steps, "departs": chosen.note, "settings": settings_text(chosen)}
        row["needs"] = NEEDS.get(recipe.figure, "")
        row["runs_of"] = recipe.runs_of
        rows.append(row)
    return rows


NEEDS = {
    "projection": "scikit-learn (uv sync --extra tsne) and each run's last checkpoint",
    "sharpness": "each run's last checkpoint",
    "progress": "the run's kept checkpoints (--snapshot-every)",
    "table": "no training",
}
