"""`grokking sweep` and `plot --sweep`: grid parsing, skip and resume, emitted commands, the summary."""

from __future__ import annotations

import json
import shlex
import shutil
import signal
from dataclasses import fields
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from grokking import main
from grokking.config import ARCHITECTURES, PRESETS, RunConfig, flag_fields
from grokking.device import available_cores
from grokking.errors import GrokkingError
from grokking.plot import plot_sweep
from grokking.rundir import RunDir
from grokking.sweep import (
    MANIFEST,
    NOT_WITHIN_BUDGET,
    flag_aliases,
    load_sweep,
    parse_grid,
    parse_settings,
    plan_sweep,
    write_manifest,
)
from grokking.train import TrainingInterrupted, train_seeds

from .conftest import TINY, tree_checksums, without_timing

runner = CliRunner()
QUICK = PRESETS["quick"]
# TINY as `--set` options on top of the quick preset, 20 steps a point.
TINY_SETS = [
    f"--set={k}={v}"
    for k, v in TINY.to_dict().items()
    if k not in ("preset", "steps", "train_frac") and v != getattr(QUICK, k)
]
SWEEP = [
    "sweep",
    "--preset",
    "quick",
    "--grid",
    "train_frac=0.5,0.7",
    "--grid",
    "seed=0-1",
    *TINY_SETS,
    "--steps",
    "20",
]
NAMES = ["train_frac=0.5_seed=0", "train_frac=0.5_seed=1", "train_frac=0.7_seed=0", "train_frac=0.7_seed=1"]


def invoke(*args):
    return runner.invoke(main, [str(a) for a in args])


def test_grid_values_are_parsed_with_each_fields_type():
    grid = parse_grid(
        [
            "train-frac=0.2,0.3",
            "seed=0-2",
            "p=7,11-13",
            "stop_on_grok=true,false",
            "op=add,mul",
            "d_mlp=none,64",
            "warmup=5",
        ],
    )
    assert grid == {
        "train_frac": [0.2, 0.3],
        "seed": [0, 1, 2],
        "p": [7, 11, 12, 13],
        "stop_on_grok": [True, False],
        "operation": ["add", "mul"],
        "d_mlp": [None, 64],
        "warmup_steps": [5],
    }
    assert parse_settings(["lr=1e-3", "layer_norm=no"]) == {"lr": 0.001, "layer_norm": False}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nope=1", "valid keys are operation, p, train_frac"),
        ("lr=fast", "lr='fast': not a valid float"),
        ("train_frac=0.2-0.4", "ranges a-b only for integer keys"),
        ("seed=3-1", "a range a-b needs a <= b"),
        ("seed=1.5", "not a valid int"),
        ("stop_on_grok=maybe", "(true or false)"),
        ("seed=0,1,1", "1 given more than once"),
        ("seed", "takes KEY=VALUES"),
        ("preset=quick", "choose the preset with --preset"),
    ],
)
def test_bad_grid_values_name_the_fix(spec, message):
    with pytest.raises(GrokkingError, match="^--grid") as error:
        parse_grid([spec])
    assert message in str(error.value)


def test_a_set_without_a_value_shows_an_example_that_works():
    with pytest.raises(GrokkingError, match="^--set takes KEY=VALUE, e.g. --set eval_every=100") as error:
        parse_settings(["x"])
    example = str(error.value).split("e.g. --set ")[1].split(" ")[0]
    assert parse_settings([example]) == {"eval_every": 100}


def test_every_config_field_but_the_preset_is_a_train_option():
    options = {o for param in typer.main.get_command(main).commands["train"].params for o in param.opts}
    assert set(flag_fields()) <= options
    covered = {name for names in flag_fields().values() for name in names}
    assert covered == {f.name for f in fields(RunConfig)} - {"preset"}
    assert flag_aliases()["op"] == "operation" and flag_aliases()["warmup"] == "warmup_steps"
    assert flag_fields()["--betas"] == ("beta1", "beta2")


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """Emit the commands, train the first point for 10 of its 20 steps, list, sweep, then sweep again."""
    out = tmp_path_factory.mktemp("sweep") / "frac"
    emitted = invoke(*SWEEP, "--out-dir", out, "--emit-commands")
    assert emitted.exit_code == 0, emitted.output
    commands = emitted.stdout.strip().splitlines()
    partial = invoke(*shlex.split(commands[0])[1:], "--steps", "10")
    assert partial.exit_code == 0, partial.output
    first = RunDir(out / NAMES[0])
    before = first.read_metrics()
    listed = invoke(*SWEEP, "--out-dir", out, "--dry-run")
    trained = invoke(*SWEEP, "--out-dir", out)
    assert trained.exit_code == 0, trained.output
    checksums = tree_checksums(out)
    again = invoke(*SWEEP, "--out-dir", out)
    return {
        "out": out, "commands": commands, "partial": before, "listed": listed, "trained": trained,
        "checksums": checksums, "again": again,
    }  # fmt: skip


def test_emitted_commands_reproduce_each_points_config(swept):
    points = load_sweep(swept["out"]).points
    assert [p.name for p in points] == NAMES
    assert len(swept["commands"]) == 4
    for command, point in zip(swept["commands"], points):
        words = shlex.split(command)
        assert words[:2] == ["grokking", "train"] and words[words.index("--run-dir") + 1] == str(point.run.path)
        shown = invoke(*words[1:], "--dry-run")
        assert shown.exit_code == 0, shown.output
        assert json.loads(shown.stdout)["config"] == point.config.to_dict()
        assert json.loads(shown.stdout)["run_dir"] == str(point.run.path)


def test_dry_run_lists_partial_and_new_points_and_trains_nothing(swept):
    listed = swept["listed"]
    assert listed.exit_code == 0, listed.output
    rows = {line.split()[0]: line.split()[1] for line in listed.stdout.splitlines() if "_seed=" in line}
    assert rows == {NAMES[0]: "partial", NAMES[1]: "new", NAMES[2]: "new", NAMES[3]: "new"}
    assert "10/20" in listed.stdout


def test_the_sweep_trains_every_point_and_writes_the_manifest(swept):
    out = swept["out"]
    manifest = json.loads((out / "sweep.json").read_text())
    assert manifest["grid"] == {"train_frac": [0.5, 0.7], "seed": [0, 1]}
    assert manifest["base"]["steps"] == 20 and manifest["base"]["p"] == 11
    assert [p["run_dir"] for p in manifest["points"]] == NAMES
    assert manifest["points"][3]["values"] == {"train_frac": 0.7, "seed": 1}
    assert all(p["status"] == "done" and p["steps_done"] == 20 for p in manifest["points"])  # outcomes kept current
    for name in NAMES:
        summary = json.loads((out / name / "summary.json").read_text())
        assert summary["steps_done"] == 20
        config = RunDir(out / name).read_config()
        assert (config.train_frac, config.seed) == tuple(manifest["points"][NAMES.index(name)]["values"].values())
    stderr = swept["trained"].stderr
    # train_frac=0.5 has one seed at step 10 and one new: they train one at a time; 0.7's seeds together.
    assert stderr.count("one seed at a time") == 1 and "different steps" in stderr
    assert "0 done · 2 after these · training" in stderr and "2 done · 0 after these · training" in stderr
    assert stderr.count("not generalized within 20 steps") == 4


def test_the_partial_point_resumes_instead_of_restarting(swept):
    records = RunDir(swept["out"] / NAMES[0]).read_metrics()
    assert [r["step"] for r in records] == [1, 2, 4, 8, 10, 20]
    assert records[:5] == swept["partial"]  # the same lines, elapsed_s included: not retrained


def test_running_the_sweep_again_skips_finished_points(swept):
    again = swept["again"]
    assert again.exit_code == 0, again.output
    assert "4 done, 0 to train" in again.stderr
    assert tree_checksums(swept["out"]) == swept["checksums"]


def test_plot_sweep_writes_the_summary_and_the_figure(swept, tmp_path):
    out = Path(shutil.copytree(swept["out"], tmp_path / "frac"))
    generalized = json.loads((out / NAMES[2] / "summary.json").read_text()) | {"generalization_step": 16}
    (out / NAMES[2] / "summary.json").write_text(json.dumps(generalized))
    result = invoke("plot", "--sweep", out)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "sweep.json").read_text())
    assert report["grid"] == {"train_frac": [0.5, 0.7], "seed": [0, 1]}
    for row, name in zip(report["points"], NAMES):
        summary = json.loads((out / name / "summary.json").read_text())
        assert row["name"] == name and row["status"] == "done" and row["budget"] == 20
        assert row["memorization_step"] == summary["memorization_step"]
        assert (row["final_train_acc"], row["final_val_acc"]) == (summary["final_train_acc"], summary["final_val_acc"])
        expected = summary["generalization_step"] if summary["generalization_step"] is not None else NOT_WITHIN_BUDGET
        assert row["generalization_step"] == expected
    assert [r["generalization_step"] for r in report["points"]].count(NOT_WITHIN_BUDGET) == 3
    assert report["points"][2]["generalization_step"] == 16
    png = (out / "plots" / "sweep.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


def test_sweep_figure_with_two_swept_keys_and_categories(tmp_path):
    grid = {"optimizer": ["adam", "adamw"], "lr": [1e-3, 1e-2], "seed": [0, 1]}
    points = [
        {"values": {"optimizer": o, "lr": lr, "seed": s}, "status": "done", "budget": 500, "steps_done": 500,
         "memorization_step": 50 + s, "generalization_step": NOT_WITHIN_BUDGET if o == "adam" and s else 300 + s}
        for o in grid["optimizer"] for lr in grid["lr"] for s in grid["seed"]
    ]  # fmt: skip
    path = plot_sweep({"grid": grid, "base": QUICK.to_dict(), "points": points}, tmp_path / "sweep.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ctrl_c_ends_the_sweep_with_a_hint_to_run_it_again(tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise TrainingInterrupted(signal.SIGINT, 7)

    monkeypatch.setattr("grokking.train.train_seeds", interrupted)  # the sweep imports it when it trains
    result = invoke(*SWEEP, "--out-dir", tmp_path / "sweep")
    assert result.exit_code == 130
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("stopped by SIGINT at step 7") and "Run the same command again" in lines[-1]
    assert "Traceback" not in result.output


def _drop_manifest(out: Path) -> None:
    (out / "sweep.json").unlink()


@pytest.mark.parametrize(
    ("args", "damage", "message"),
    [
        ([*SWEEP, "--grid", "colour=red", "--out-dir", "{out}"], None, "--grid colour: unknown key"),
        (
            [*SWEEP, "--grid", "weight_decay=-1,1", "--out-dir", "{out}"],
            None,
            "point train_frac=0.5_seed=0_weight_decay=-1.0: weight_decay must be at least 0",  # the grid key typed
        ),
        ([*SWEEP, "--set", "steps=5", "--out-dir", "{out}"], None, "steps is given both"),
        ([*SWEEP, "--set", "seed=3", "--out-dir", "{out}"], None, "seed is both swept"),
        ([*SWEEP, "--set", "lr=0.01", "--out-dir", "{out}"], None, "holds a different sweep (lr: 0.003 -> 0.01)"),
        ([*SWEEP, "--set", "lr=0.01", "--out-dir", "{out}", "--dry-run"], None, "holds a different sweep"),
        (
            [*SWEEP, "--set", "lr=0.01", "--out-dir", "{out}"],
            _drop_manifest,
            "seed=0 holds a run with a different config (lr",
        ),
        (["sweep", "--grid", "seed=0-1"], None, "give --out-dir"),
        ([*SWEEP, "--jobs", "0", "--out-dir", "{out}"], None, "--jobs must be between 1 and 256 (got 0)"),
        (["sweep", "--out-dir", "{out}"], None, "at least one --grid"),
        (["plot", "--sweep", "{out}/train_frac=0.5_seed=0"], None, "sweep.json does not exist"),
        (["plot", "--sweep", "{out}", "--run-dir", "{out}/train_frac=0.5_seed=0"], None, "not both"),
    ],
)
def test_bad_sweep_input_fails_cleanly_and_touches_nothing(swept, tmp_path, monkeypatch, args, damage, message):
    out = Path(shutil.copytree(swept["out"], tmp_path / "frac"))
    monkeypatch.chdir(tmp_path)
    if damage is not None:
        damage(out)
    before = tree_checksums(tmp_path)
    result = invoke(*(a.replace("{out}", str(out)) for a in args))
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert "Traceback" not in result.output
    assert tree_checksums(tmp_path) == before


def test_a_sweep_takes_a_named_architecture_and_knows_a_sweep_json_of_older_defaults(tmp_path):
    sweep = plan_sweep("paper_wd", ["seed=0-1"], tmp_path / "s", arch="prenorm")
    assert {k: getattr(sweep.base, k) for k in ARCHITECTURES["prenorm"]} == ARCHITECTURES["prenorm"]
    write_manifest(sweep)
    stored = json.loads((tmp_path / "s" / "sweep.json").read_text())
    stored["base"]["loss_dtype"] = "float32"  # what sweeps wrote before the default was left open
    (tmp_path / "s" / "sweep.json").write_text(json.dumps(stored))
    assert plan_sweep("paper_wd", ["seed=0-1"], tmp_path / "s", arch="prenorm").base == sweep.base


@pytest.mark.slow
def test_jobs_train_points_side_by_side_exactly_as_one_after_another(tmp_path):
    result = invoke(*SWEEP, "--jobs", "2", "--out-dir", tmp_path / "sweep")
    assert result.exit_code == 0, result.output
    threads = max(1, available_cores() // 2)
    assert result.stderr.count(f"({threads} thread") == 2  # a worker for each train_frac, its seeds together
    assert result.stderr.count("not generalized within 20 steps") == 4
    sweep = load_sweep(tmp_path / "sweep")
    for frac in (0.5, 0.7):
        group = [p for p in sweep.points if p.values["train_frac"] == frac]
        alone = [tmp_path / "alone" / p.name for p in group]
        train_seeds([p.config for p in group], alone, threads=threads)
        for point, reference in zip(group, alone):
            assert without_timing(point.run) == without_timing(reference)
    manifest = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert all(p["status"] == "done" for p in manifest["points"])


@pytest.mark.slow
def test_a_failing_worker_ends_the_sweep_with_its_error_and_the_others_finish(tmp_path, capfd):
    out = tmp_path / "sweep"
    busy = RunDir(out / "train_frac=0.5_seed=0")
    with busy.lock():  # another training holds this point
        result = invoke(*SWEEP, "--jobs", "2", "--out-dir", out)
    assert result.exit_code == 2, result.output
    worker_error = capfd.readouterr().err  # the worker's own stderr, not the CLI runner's
    assert "error: " in worker_error and "is being trained by process" in worker_error
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the sweep stopped: training train_frac=0.5") and "exit code 2" in last
    assert "Traceback" not in result.output
    for name in NAMES[2:]:  # the other seed group
        assert json.loads((out / name / "summary.json").read_text())["steps_done"] == 20


def test_a_sweep_from_before_a_switch_existed_continues_where_the_switch_does_nothing(tmp_path):
    """Its sweep.json base lacks attention_bias and loads the default; without biases that changes
    nothing, so the same sweep is not refused as a different one."""
    sweep = plan_sweep("paper_wd", ["seed=0-1"], tmp_path / "s", {"steps": 5}, [])
    write_manifest(sweep)
    manifest = tmp_path / "s" / MANIFEST
    record = json.loads(manifest.read_text())
    del record["base"]["attention_bias"]
    manifest.write_text(json.dumps(record))
    assert plan_sweep("paper_wd", ["seed=0-1"], tmp_path / "s", {"steps": 5}, []).base == sweep.base
