"""The CLI end to end on a tiny config: train → plot → eval, and the run dir it writes."""

from __future__ import annotations

import json
import shutil

import pytest
import typer
from typer.testing import CliRunner

from grokking import main
from grokking.config import ARCHITECTURES, PRESETS, preset_overrides, resolve
from grokking.operations import OPERATIONS
from grokking.plot import differing_fields, shared_settings, sweep_departures
from grokking.rundir import RunDir

from .conftest import TINY_FLAGS

runner = CliRunner()
METRIC_KEYS = {
    "step",
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "lr",
    "weight_norm",
    "elapsed_s",
    "train_zero_loss_frac",
    "grad_norm",
    *(f"weight_norm/{layer}" for layer in ("token_embedding", "position_embedding", "blocks.0", "ln_f", "unembed")),
}


def invoke(*args: str):
    return runner.invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("cli") / "run"
    result = invoke("train", *TINY_FLAGS, "--run-dir", run_dir)
    assert result.exit_code == 0, result.output
    return RunDir(run_dir)


def test_train_writes_the_run_dir(trained):
    config = json.loads(trained.config_path.read_text())
    assert config["config"]["p"] == 11 and config["config"]["batch_size"] == 28  # min(512, ceil(55 / 2))
    assert {"grokking_version", "torch_version", "device"} <= set(config["runtime"])
    records = trained.read_metrics()
    assert all(set(r) == METRIC_KEYS for r in records)
    assert [r["step"] for r in records] == [1, 2, 4, 8, 10, 20, 30, 40]
    assert all(0 <= r["train_acc"] <= 1 and 0 <= r["val_acc"] <= 1 for r in records)
    assert records[0]["lr"] == pytest.approx(3e-3 / 10) and records[-1]["lr"] == pytest.approx(3e-3)
    snapshots = [p.name for p in trained.snapshots()]
    assert snapshots == [f"step_{s:08d}.pt" for s in (1, 2, 4, 8, 16, 20, 32, 40)]
    assert trained.latest_path.is_file()
    summary = json.loads(trained.summary_path.read_text())
    assert summary["steps_done"] == 40 and summary["stopped"] == "budget"
    assert summary["final_val_acc"] == records[-1]["val_acc"]
    assert {"memorization_step", "generalization_step", "grokking_delay"} <= set(summary)


def test_plot_draws_both_figures(trained):
    result = invoke("plot", "--run-dir", trained.path)
    assert result.exit_code == 0, result.output
    for name in ("accuracy.png", "loss.png"):
        data = (trained.plots_dir / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_plot_overlays_several_runs(trained, tmp_path):
    other = tmp_path / "other"
    assert invoke("train", *TINY_FLAGS, "--seed", "1", "--run-dir", other).exit_code == 0
    result = invoke("plot", "--run-dir", trained.path, "--run-dir", other, "--out", tmp_path / "overlay")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "overlay" / "accuracy.png").is_file() and (tmp_path / "overlay" / "loss.png").is_file()


def test_plot_titles_name_where_a_run_departs_from_its_preset():
    late = PRESETS["paper_late"]
    assert preset_overrides(late) == ""
    # seed and the resumable fields (the step budget here) do not make a variant.
    assert preset_overrides(late.replace(seed=3, steps=5000)) == ""
    assert preset_overrides(late.replace(loss_dtype="float64", train_frac=0.3)) == "train_frac=0.3, loss_dtype=float64"
    # A run's config holds its batch size resolved; the size the preset's rule gives is no override.
    assert preset_overrides(resolve(PRESETS["nanda_add"])) == ""
    assert preset_overrides(resolve(late.replace(train_frac=0.3))) == "train_frac=0.3"
    assert preset_overrides(resolve(late.replace(batch_size=64))) == "batch_size=64"


def test_eval_of_the_last_checkpoint_agrees_with_the_last_metrics_line(trained):
    result = invoke("eval", "--run-dir", trained.path, "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["step"] for r in rows] == [1, 2, 4, 8, 16, 20, 32, 40]
    last = trained.read_metrics()[-1]
    for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
        assert rows[-1][key] == pytest.approx(last[key], abs=1e-6)


def test_eval_table_of_one_checkpoint(trained):
    result = invoke("eval", "--checkpoint", trained.snapshot_path(20))
    assert result.exit_code == 0, result.output
    assert "step_00000020.pt" in result.stdout and "val_acc" in result.stdout


def test_dry_run_prints_the_paper_values_and_writes_nothing(tmp_path):
    result = invoke("train", "--preset", "paper_wd", "--out-dir", tmp_path, "--dry-run")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["run_dir"] == str(tmp_path / "div_p97_paper_wd_s0")
    config = shown["config"]
    assert (config["p"], config["lr"], config["weight_decay"], config["batch_size"]) == (97, 1e-3, 1.0, 512)
    assert (config["beta1"], config["beta2"], config["warmup_steps"], config["optimizer"]) == (0.9, 0.98, 10, "adamw")
    assert list(tmp_path.iterdir()) == []


def test_flags_override_the_preset(tmp_path):
    result = invoke("train", "--preset", "paper_late", "--p", "59", "--betas", "0.8", "0.99", "--dry-run")
    config = json.loads(result.stdout)["config"]
    assert (config["p"], config["beta1"], config["beta2"], config["optimizer"]) == (59, 0.8, 0.99, "adam")


def test_training_again_with_the_same_config_continues_instead_of_restarting(trained, tmp_path):
    run = RunDir(shutil.copytree(trained.path, tmp_path / "run"))
    before = run.read_metrics()
    result = invoke("train", *TINY_FLAGS, "--run-dir", run.path, "--steps", "50")
    assert result.exit_code == 0, result.output
    after = run.read_metrics()
    assert [r["step"] for r in after] == [r["step"] for r in before] + [50]
    assert after[: len(before)] == before


EDIT_LOOP_OPERATIONS = ("div", "s5_mul")  # one of each kind of table in the fast suite; every one in CI


@pytest.mark.parametrize(
    "operation", [pytest.param(op, marks=() if op in EDIT_LOOP_OPERATIONS else pytest.mark.slow) for op in OPERATIONS]
)
def test_every_operation_trains_plots_and_evaluates(operation, tmp_path):
    flags = [*TINY_FLAGS, "--p", "7", "--steps", "4", "--eval-every", "2", "--op", operation, "--out-dir", tmp_path]
    result = invoke("train", *flags)
    assert result.exit_code == 0, result.output
    (run_dir,) = tmp_path.iterdir()
    assert run_dir.name == (f"{operation}_quick_s0" if operation.startswith("s5") else f"{operation}_p7_quick_s0")
    assert invoke("plot", "--run-dir", run_dir).exit_code == 0
    assert (run_dir / "plots" / "accuracy.png").is_file()
    rows = json.loads(invoke("eval", "--run-dir", run_dir, "--json").stdout)
    assert rows[-1]["val_acc"] == pytest.approx(RunDir(run_dir).read_metrics()[-1]["val_acc"], abs=1e-6)


def test_an_overlays_title_names_the_preset_and_what_every_run_departs_from_it_in():
    paper_wd = PRESETS["paper_wd"]
    configs = [paper_wd.replace(precision="bf16", seed=s) for s in (0, 1)]
    assert shared_settings(configs) == "\npaper_wd · precision=bf16"
    assert shared_settings([paper_wd, paper_wd.replace(seed=1)]) == "\npaper_wd"
    assert shared_settings([paper_wd, PRESETS["quick"]]) == ""
    assert differing_fields(configs) == ["seed"]


def test_a_sweeps_title_names_where_its_base_departs_from_the_preset_outside_the_swept_keys():
    base = PRESETS["paper_wd"].replace(**ARCHITECTURES["prenorm"], train_frac=0.3).to_dict()
    assert sweep_departures(base, {"train_frac": [0.3, 0.5], "seed": [0, 1]}) == "arch=prenorm"
    assert sweep_departures(PRESETS["paper_wd"].replace(train_frac=0.3).to_dict(), {"train_frac": [0.3]}) == ""


def test_a_setting_is_the_same_option_in_every_command_that_takes_it():
    """sweep and bench take --steps, --device, --precision, --compile from RunConfig's metadata, as train."""
    commands = {c.name: c for c in typer.main.get_command(main).commands.values()}

    def option(command: str, flag: str):
        return next(p for p in commands[command].params if flag in p.opts)

    for command, flags in {"sweep": ["--steps", "--device"], "bench": ["--device", "--precision", "--compile"]}.items():
        for flag in flags:
            assert option(command, flag).help == option("train", flag).help


def test_the_operation_is_one_name_with_a_short_alias(tmp_path):
    long, short = (
        json.loads(invoke("train", flag, "add", "--dry-run").stdout)["config"]["operation"]
        for flag in ("--operation", "--op")
    )
    assert long == short == "add"
    for key in ("operation", "op"):
        result = invoke("sweep", "--grid", f"{key}=add,sub", "--steps", "5", "--out-dir", tmp_path / key, "--dry-run")
        assert result.exit_code == 0 and "operation=sub" in result.stdout
