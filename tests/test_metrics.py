"""The metrics path: what the step measures and what evaluation adds reach metrics.jsonl and figures."""

import math

import pytest
import torch
from typer.testing import CliRunner

from grokking import main
from grokking.config import resolve
from grokking.losses import answer_loss
from grokking.model import build_model
from grokking.rundir import RunDir
from grokking.tasks import BatchSampler, load_task
from grokking.train import train, train_seeds


def test_records_hold_the_gradient_norm_and_each_layers_weight_norm(tmp_path, tiny):
    config = resolve(tiny.replace(steps=4, n_layers=2))
    run = RunDir(tmp_path / "run")
    train(config, run)
    first = run.read_metrics()[0]
    # the gradient norm of step 1, computed by hand from the initial model and step 1's batch
    data = load_task(config)
    model = build_model(data.layout, config)
    batch = BatchSampler.of(config, data.n_train, torch.device("cpu")).indices(1)
    answer_loss(model(data.train_inputs[batch], scored=True), data.train_targets[batch], config).backward()
    by_hand = torch.sqrt(sum(p.grad.pow(2).sum() for p in model.parameters())).item()
    assert first["step"] == 1 and first["grad_norm"] == pytest.approx(by_hand, rel=1e-5)
    layers = {k.removeprefix("weight_norm/") for k in first if k.startswith("weight_norm/")}
    assert layers == {"token_embedding", "position_embedding", "blocks.0", "blocks.1", "ln_f", "unembed"}
    total = math.sqrt(sum(first[f"weight_norm/{layer}"] ** 2 for layer in layers))
    assert total == pytest.approx(first["weight_norm"], rel=1e-5)


def test_seeds_trained_together_measure_each_seeds_own_gradient(tmp_path, tiny):
    configs = [tiny.replace(seed=s, steps=8) for s in (0, 1)]
    together = [RunDir(tmp_path / "together" / str(c.seed)) for c in configs]
    train_seeds(configs, together)
    for config, run in zip(configs, together):
        alone = RunDir(tmp_path / "alone" / str(config.seed))
        train(config, alone)
        for a, b in zip(run.read_metrics(), alone.read_metrics()):
            assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
            assert a["weight_norm/unembed"] == pytest.approx(b["weight_norm/unembed"], rel=1e-4)
    assert together[0].read_metrics()[-1]["grad_norm"] != together[1].read_metrics()[-1]["grad_norm"]


def test_plot_draws_any_metric_of_one_run_or_several(tmp_path, tiny):
    runs = [tmp_path / f"s{s}" for s in (0, 1)]
    for seed, path in enumerate(runs):
        train(tiny.replace(seed=seed, steps=10), path)
    runner = CliRunner()
    result = runner.invoke(main, ["plot", "--run-dir", str(runs[0]), "--metric", "grad_norm", "--metric",
                                  "weight_norm/unembed"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (runs[0] / "plots" / "metric_grad_norm.png").stat().st_size > 0
    assert (runs[0] / "plots" / "metric_weight_norm-unembed.png").stat().st_size > 0
    overlay = ["plot", "--run-dir", str(runs[0]), "--run-dir", str(runs[1]), "--out", str(tmp_path / "both")]
    assert runner.invoke(main, [*overlay, "--metric", "grad_norm"]).exit_code == 0
    assert (tmp_path / "both" / "metric_grad_norm.png").is_file()
    unknown = runner.invoke(main, ["plot", "--run-dir", str(runs[0]), "--metric", "nope"])
    assert unknown.exit_code == 2 and "--metric nope: not in the metrics" in unknown.output
    assert "grad_norm" in unknown.output
