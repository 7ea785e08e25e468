"""The benchmark runs both contenders from the same init and reports figures (no timing asserts)."""

import json

import pytest
import torch
from typer.testing import CliRunner

from grokking import main
from grokking.bench import bench_seeds, bench_speed, bench_subnormals, bench_time_to_grok, startup_seconds
from grokking.config import resolve
from grokking.roofline import MatmulRecorder, step_roofline
from grokking.rundir import RunDir
from grokking.train import train


def test_speed_mode_times_every_variant_and_the_reference_for_the_same_steps(tiny):
    variants = [("fp32", False), ("bf16", False)]  # compiling is for the slow test below
    result = bench_speed(resolve(tiny), steps=6, rounds=2, variants=variants)
    assert result["steps_timed"] == 6 and result["reference_steps_per_s"] > 0
    assert [row["variant"] for row in result["engines"]] == ["fp32", "bf16"]
    for row in result["engines"]:
        assert row["steps_per_s"] > 0 and row["warmup_s"] > 0
        assert row["speedup"] == row["steps_per_s"] / result["reference_steps_per_s"]
        assert row["share_of_fp32_roofline"] == row["steps_per_s"] / result["roofline_steps_per_s"]
    assert result["step_matmul_gflop"] > 0 and result["warmup_steps"] >= 3
    assert result["first_timed_step"] > tiny.eval_every  # after the dense evaluations of a run's start
    assert result["device"] == "cpu" and result["threads"] >= 1 and result["peak_rss_mib"] > 0


@pytest.mark.slow
def test_start_up_is_timed_in_fresh_processes():
    timings = startup_seconds("quick", repeats=1)
    assert set(timings) == {"help_s", "dry_run_s", "first_step_s"}
    assert 0 < timings["help_s"] < timings["first_step_s"]  # a training imports torch, --help does not


@pytest.mark.slow
def test_engine_and_reference_grok_at_similar_steps(tiny):
    """Same init and batches: the engine changes float rounding only, so both generalize, and
    in the same range of steps (about 15 s on 2 cores)."""
    config = resolve(tiny.replace(p=23, train_frac=0.8, d_model=64, steps=2000))
    engine, reference = bench_time_to_grok(config, seeds=[0], max_steps=1500)["runs"]
    assert (engine["contender"], reference["contender"]) == ("engine", "reference")
    assert engine["steps"] is not None and reference["steps"] is not None
    assert 0.75 <= engine["steps"] / reference["steps"] <= 1.33


def test_bench_cli_prints_json():
    result = CliRunner().invoke(
        main,
        [
            "bench",
            "--preset",
            "quick",
            "--steps",
            "4",
            "--rounds",
            "2",
            "--device",
            "cpu",
            "--json",
            "--precision",
            "fp32",
            "--no-compile",
            "--no-startup",
        ],
    )
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert figures["config"]["p"] == 47 and [row["variant"] for row in figures["engines"]] == ["fp32"]


def test_seeds_mode_reports_aggregate_seed_steps(tiny):
    result = bench_seeds(resolve(tiny), n_seeds=3, steps=4, rounds=2)
    assert result["seeds"] == 3 and result["steps_timed"] == 4
    assert result["speedup"] == result["together_seed_steps_per_s"] / result["sequential_seed_steps_per_s"]


def test_subnormals_mode_continues_a_run_both_ways_and_leaves_it_untouched(tiny, tmp_path):
    run = RunDir(tmp_path / "run")
    train(resolve(tiny.replace(steps=12)), run)
    before = {path: path.read_bytes() for path in run.path.rglob("*") if path.is_file()}
    result = bench_subnormals(run, steps=4, rounds=2)
    assert result["from_step"] == 12 and result["steps_timed"] == 4
    assert result["speedup"] == result["flushed_steps_per_s"] / result["subnormal_steps_per_s"]
    assert (torch.tensor([1e-39]) * 2).item() == 0.0  # training's setting is back
    assert {path: path.read_bytes() for path in run.path.rglob("*") if path.is_file()} == before


def test_subnormals_mode_of_a_missing_run_dir_is_one_line(tmp_path):
    result = CliRunner().invoke(main, ["bench", "--subnormals", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "does not exist" in result.output and "Traceback" not in result.output


def test_the_roofline_counts_the_matrix_products_of_a_step():
    layer = torch.nn.Linear(8, 16, bias=True)
    inputs = torch.randn(32, 8)

    def step():
        layer(inputs).sum().backward()

    recorder = MatmulRecorder()
    with recorder:
        step()
    # forward x·Wᵀ (32x8 by 8x16); backward: the weight's gradient (16x32 by 32x8); no input gradient
    assert dict(recorder.shapes) == {(1, 32, 8, 16): 1, (1, 16, 32, 8): 1}
    limit = step_roofline(step)
    assert limit["step_matmul_gflop"] == pytest.approx(2 * 2 * 32 * 8 * 16 / 1e9)
    assert limit["matmul_gflop_per_s"] > 0 and limit["roofline_steps_per_s"] > 0
