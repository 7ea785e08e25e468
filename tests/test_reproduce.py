"""`grokking reproduce`: every recipe plans at every scale, trains and draws end to end at the tiny scale,
continues where it stopped, and its figures' numbers (coset partitions, rank correlation, the operation
table) are checked against independent computations."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from grokking.analysis.projection import PAPER_SUBGROUP, _generated, best_partition, explained, s5_partitions
from grokking.config import resolve
from grokking.operations import get_operation, s5_permutations
from grokking.paper_plots import HELD_OUT, NO_EQUATION, spearman, table_cells
from grokking.reproduce import RECIPES, SCALES, TINY_STEPS, figure_targets, plan_recipe, plan_rows
from grokking.rundir import RunDir
from grokking.train import train
from tests.conftest import assert_one_line_error, invoke

PAPER_FIGURES = ("fig1-left", "fig1-center", "fig1-right", "fig2-left", "fig2-right", "fig3", "fig4")
FOLLOW_UPS = ("nanda-progress", "grokfast", "softmax-collapse")
FAST_RECIPES = ("fig1-center", "fig1-right")  # end to end in the edit loop; the others under `slow`


def test_list_names_every_figure_of_the_paper_and_the_follow_ups():
    result = invoke("reproduce", "--list", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["recipe"] for r in rows] == [*PAPER_FIGURES, *FOLLOW_UPS]
    for row in rows:  # what each needs at both scales, runs and steps counted from its plan
        for scale in ("small", "paper"):
            plan = plan_recipe(row["recipe"], scale, Path("unused"))
            assert row[scale]["runs"] == plan_rows(plan)["runs"]
            assert row[scale]["steps"] == plan_rows(plan)["steps"]
    table = invoke("reproduce", "--list")
    assert all(name in table.stdout for name in RECIPES)


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_plans_valid_runs_at_every_scale(name, scale, tmp_path):
    """Every run of every recipe is a valid config (build_sweep resolves each), named after its series."""
    plan = plan_recipe(name, scale, tmp_path)
    recipe = RECIPES[name]
    assert [s.out_dir.name for s in plan.sweeps] == [s.name for s in plan.scale.series]
    for sweep, series in zip(plan.sweeps, plan.scale.series):
        for point in sweep.points:  # the preset, the scale's and the series' settings, the grid point
            assert point.config == resolve(plan.scale.base(series).replace(**point.values)), name
            assert point.config.operation == series.settings.get("operation", plan.scale.base().operation)
    if scale == "tiny":
        assert all(p.config.steps == TINY_STEPS for s in plan.sweeps for p in s.points)
        assert all(len(s.points) <= 2 for s in plan.sweeps) and len(plan.sweeps) <= 2
    if scale == "paper" and recipe.figure in ("best", "steps"):  # Power et al.: 10⁵ steps, 3 seeds a point
        assert {p.config.steps for s in plan.sweeps for p in s.points} == {100_000}
        assert plan.scale.grid["seed"] == [0, 1, 2]


def test_paper_scale_of_fig2_right_trains_the_papers_twelve_operations(tmp_path):
    plan = plan_recipe("fig2-right", "paper", tmp_path)
    formulas = [get_operation(s.points[0].config.operation).describe(97) for s in plan.sweeps]
    assert len(formulas) == 12 and sum("S5" in f for f in formulas) == 3


def test_small_scale_states_its_departures_in_the_title(tmp_path):
    title = plan_recipe("fig2-left", "small", tmp_path).title()
    assert "small scale" in title and "x/y mod 47 instead of x·y in S5" in title and "steps=3,000" in title
    assert "paper scale" in plan_recipe("fig2-left", "paper", tmp_path).title()


@pytest.mark.slow
def test_dry_run_plans_both_scales_with_one_measured_speed_and_trains_nothing(tmp_path):
    result = invoke("reproduce", "nanda-progress", "--dry-run", "--json", "--out-dir", tmp_path / "r")
    assert result.exit_code == 0, result.output
    small, paper = json.loads(result.stdout)
    assert (small["scale"], paper["scale"]) == ("small", "paper")
    assert (small["runs"], small["steps"], paper["steps"]) == (1, 15_000, 50_000)  # Nanda et al.'s budget at paper
    assert small["speeds"] == paper["speeds"] and len(small["speeds"]) == 1  # the same model, measured once
    assert small["hours_left"] > 0 and paper["hours_left"] == pytest.approx(small["hours_left"] * 50_000 / 15_000)
    assert not (tmp_path / "r").exists()  # nothing trained, nothing written


def reproduce_tiny(name: str, out: Path) -> None:
    result = invoke("reproduce", name, "--scale", "tiny", "--out-dir", out)
    assert result.exit_code == 0, result.output
    recipe = RECIPES[name]
    plan = plan_recipe(name, "tiny", out)
    for sweep in plan.sweeps:
        for point in sweep.points:
            assert point.run.read_summary()["steps_done"] == TINY_STEPS
    if recipe.figure == "progress":
        assert (plan.sweeps[0].points[0].run.figures_dir / "progress.png").stat().st_size > 0
        return
    assert all(path.stat().st_size > 0 for path in figure_targets(plan))  # the figure and its numbers
    data = json.loads((plan.figures_dir / f"{name}.json").read_text())
    assert data["recipe"] == name and data["scale"] == "tiny"
    if "series" in data:
        assert [s["label"] for s in data["series"]] == [s.label for s in plan.scale.series]
        assert all(p["steps_done"] == TINY_STEPS for s in data["series"] for p in s["points"])


@pytest.mark.parametrize(  # fig3 runs end to end in its own test below
    "name", [pytest.param(n, marks=() if n in FAST_RECIPES else pytest.mark.slow) for n in RECIPES if n != "fig3"]
)
def test_every_recipe_runs_end_to_end_at_the_tiny_scale(name, tmp_path):
    reproduce_tiny(name, tmp_path / name)


@pytest.mark.slow
def test_a_second_run_trains_nothing_and_a_stopped_run_continues(tmp_path):
    out = tmp_path / "fig1-center"
    reproduce_tiny("fig1-center", out)
    plan = plan_recipe("fig1-center", "tiny", out)
    first = plan.sweeps[0].points[0].run
    records = first.read_metrics()
    again = invoke("reproduce", "fig1-center", "--scale", "tiny", "--out-dir", out)
    assert again.exit_code == 0 and "2 done, 0 to train" in again.stderr
    assert first.read_metrics() == records  # not trained again
    # the other point stopped half-way: cut its metrics and summary back to its mid-run checkpoint
    second = plan.sweeps[0].points[1].run
    second.summary_path.unlink()
    resumed = invoke("reproduce", "fig1-center", "--scale", "tiny", "--out-dir", out)
    assert resumed.exit_code == 0 and "1 done, 1 to train" in resumed.stderr
    assert second.read_summary()["steps_done"] == TINY_STEPS


@pytest.mark.slow
def test_draw_only_trains_nothing_and_draws_what_is_there(tmp_path):
    out = tmp_path / "fig2"
    assert_one_line_error(
        invoke("reproduce", "fig2-left", "--scale", "tiny", "--draw-only", "--out-dir", out), "has trained yet"
    )
    plan = plan_recipe("fig2-left", "tiny", out)
    first = plan.sweeps[0].points[0]
    train(first.config, first.run)  # one run of the plan, trained by hand
    result = invoke("reproduce", "fig2-left", "--scale", "tiny", "--draw-only", "--out-dir", out)
    assert result.exit_code == 0, result.output
    data = json.loads((out / "figures" / "fig2-left.json").read_text())
    points = [p for s in data["series"] for p in s["points"]]
    assert [p["status"] for p in points] == ["done"] + ["new"] * (len(points) - 1)
    assert [p for p in points if p["best_val_acc"] is not None] == points[:1]
    assert len(list(out.rglob("metrics.jsonl"))) == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["reproduce"], "name a figure to reproduce"),
        (["reproduce", "fig9"], "fig9"),
        (["reproduce", "fig3", "--scale", "huge"], "huge"),
        (["reproduce", "fig3", "--dry-run", "--draw-only"], "give one of --dry-run, --draw-only and --slurm"),
        (["reproduce", "fig3", "--slurm-opt", "time=60"], "add --slurm"),
        (["reproduce", "fig3", "--jobs", "0"], "--jobs must be between"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path):
    assert_one_line_error(invoke(*args, "--out-dir", tmp_path / "r"), message)
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_a_folder_holding_other_runs_under_a_series_name_is_refused(tmp_path):
    """fig2-right's `add` series (quick) and fig3's (paper_wd) are different runs: the second recipe is refused
    before it trains anything, and the first one's files are left as they were."""
    out = tmp_path / "shared"
    reproduce_tiny("fig2-right", out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    result = invoke("reproduce", "fig3", "--scale", "tiny", "--out-dir", out)
    assert_one_line_error(result, "holds a different sweep")
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


# the figures' numbers ---------------------------------------------------------------------------------


def test_the_papers_subgroup_is_dihedral_of_order_10_and_has_twelve_coset_partitions():
    subgroup = _generated(list(PAPER_SUBGROUP))
    involutions = [g for g in subgroup if g != tuple(range(5)) and tuple(g[i] for i in g) == tuple(range(5))]
    assert len(subgroup) == 10 and len(involutions) == 5  # D5: the identity, 4 rotations, 5 reflections
    partitions = s5_partitions()
    assert len(partitions) == 12  # 6 conjugates (one a Sylow 5-subgroup's normalizer each) × left, right cosets
    for _, labels in partitions:
        assert sorted(np.bincount(labels)) == [10] * 12
    index = {tuple(int(v) for v in perm): i for i, perm in enumerate(s5_permutations())}
    members = [index[g] for g in subgroup]
    assert sum(len(set(labels[members])) == 1 for _, labels in partitions) == 2  # H is a coset of itself, both sides


def test_best_partition_finds_planted_cosets_and_chance_stays_low():
    rng = np.random.default_rng(0)
    name, labels = s5_partitions()[7]
    centres = rng.normal(size=(12, 16)) * 3
    rows = centres[labels] + rng.normal(size=(120, 16))
    found = best_partition(rows)
    assert found["partition"] == name and (found["labels"] == labels).all()
    assert found["r2"] > 0.8 and found["r2_random_max"] < 0.3
    assert explained(rows, np.zeros(120, dtype=int)) == pytest.approx(0.0, abs=1e-12)
    assert explained(rows, np.arange(120)) == pytest.approx(1.0)


def test_spearman_matches_scipy_with_ties():
    xs = [0.3, 1.0, 1.0, 2.5, 7.0, 7.0, 9.0]
    ys = [0.99, 0.5, 0.7, 0.2, 0.2, 0.01, 0.0]
    assert spearman(xs, ys) == pytest.approx(spearmanr(xs, ys).statistic)
    assert np.isnan(spearman([1, 2], [2, 1])) and np.isnan(spearman([1, 1, 1], [1, 2, 3]))


def test_the_table_shows_exactly_the_training_equations():
    config = resolve(plan_recipe("fig1-right", "small", Path("unused")).scale.base())
    cells = table_cells(config)
    operation = get_operation(config.operation)
    train = np.argwhere(cells >= 0)
    assert len(train) == int(cells.size - (cells == NO_EQUATION).sum() - (cells == HELD_OUT).sum())
    assert (cells[:, 0] == NO_EQUATION).all()  # division has no y = 0
    for x, y in train:  # each shown answer is the operation's
        assert cells[x, y] == operation.compute(np.array([x]), np.array([y]), config.p)[0]
    assert (cells == HELD_OUT).sum() == len(train)  # half of x/y mod 11's 110 equations train


@pytest.mark.slow
def test_fig3_colours_s5_by_cosets_and_residues_mod_8(tmp_path):
    out = tmp_path / "fig3"
    reproduce_tiny("fig3", out)
    panels = json.loads((out / "figures" / "fig3.json").read_text())["panels"]
    s5, add = panels
    assert "cosets" in s5["colour"] and len(set(s5["labels"])) == 12 and len(s5["points"]) == 120
    assert add["labels"] == [x % 8 for x in range(97)]
    assert RunDir(add["run_dir"]).read_config().operation == "add"
