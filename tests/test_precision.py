"""`--precision bf16` (autocast, fp32 master weights and loss) and `--compile` (torch.compile)."""

from __future__ import annotations

import math

import pytest
import torch

import grokking.device
from grokking.config import resolve
from grokking.device import autocast
from grokking.evaluate import evaluate
from grokking.losses import per_sample_loss
from grokking.rundir import RunDir
from grokking.train import ModelStepper, SeedRun, train, train_seeds

from .conftest import without_timing

CPU = torch.device("cpu")


def test_bf16_multiplies_in_bfloat16_but_keeps_weights_gradients_and_loss_in_fp32(tmp_path, tiny):
    seed = SeedRun(resolve(tiny.replace(precision="bf16")), RunDir(tmp_path), CPU)
    inputs, targets = seed.data.train_inputs[:8], seed.data.train_targets[:8]
    with autocast("bf16", CPU):
        logits = seed.model(inputs, scored=True)
    assert logits.dtype == torch.bfloat16
    assert per_sample_loss(logits, targets, seed.config).dtype == torch.float32
    with autocast("fp32", CPU):
        assert seed.model(inputs, scored=True).dtype == torch.float32
    ModelStepper(seed).train_step(1)
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in seed.model.parameters())


def test_a_bf16_run_trains_and_differs_from_fp32(tmp_path, tiny):
    train(tiny, tmp_path / "fp32")
    train(tiny.replace(precision="bf16"), tmp_path / "bf16")
    fp32, bf16 = without_timing(tmp_path / "fp32"), without_timing(tmp_path / "bf16")
    assert [r["step"] for r in bf16] == [r["step"] for r in fp32]
    assert all(math.isfinite(r["train_loss"]) for r in bf16)
    assert bf16[-1]["train_loss"] < 0.8 * bf16[0]["train_loss"]  # it learns, as fp32 does
    assert bf16[-1]["train_loss"] == pytest.approx(fp32[-1]["train_loss"], rel=0.2)
    assert bf16 != fp32  # the switch changes the computation
    assert bf16[0]["train_loss"] == pytest.approx(fp32[0]["train_loss"], rel=2e-2)  # ... by rounding only


def test_evaluation_uses_the_runs_precision(tmp_path, tiny):
    seed = SeedRun(resolve(tiny), RunDir(tmp_path), CPU)
    fp32 = evaluate(seed.model, seed.data, seed.config)
    bf16 = evaluate(seed.model, seed.data, seed.config.replace(precision="bf16"))
    assert bf16["val_loss"] != fp32["val_loss"]
    assert bf16["val_loss"] == pytest.approx(fp32["val_loss"], rel=2e-2)


def test_bf16_seeds_trained_together_start_like_single_runs(tmp_path, tiny):
    configs = [tiny.replace(precision="bf16", seed=s) for s in (0, 1)]
    train_seeds(configs, [tmp_path / f"together{c.seed}" for c in configs])
    for config in configs:
        train(config, tmp_path / f"alone{config.seed}")
        together = without_timing(tmp_path / f"together{config.seed}")[0]
        alone = without_timing(tmp_path / f"alone{config.seed}")[0]
        assert together["train_loss"] == pytest.approx(alone["train_loss"], rel=2e-2)


def test_compile_wraps_the_forward_and_loss_of_one_seed_and_the_vectorized_loss_of_many(tmp_path, tiny, monkeypatch):
    compiled = []

    def fake_compile(function, mode=None, dynamic=None, options=None):
        compiled.append((function.__qualname__, mode, dynamic))
        return function

    monkeypatch.setattr(grokking.device.torch, "compile", fake_compile)
    train(tiny.replace(compile=True, steps=10), tmp_path / "one")
    # one graph of forward and loss, static shapes; "reduce-overhead" (CUDA graphs) is for CUDA only
    assert compiled == [("ModelStepper._loss", None, False)]
    train(tiny.replace(steps=10), tmp_path / "plain")
    assert without_timing(tmp_path / "one") == without_timing(tmp_path / "plain")
    configs = [tiny.replace(compile=True, steps=10, seed=s) for s in (0, 1)]
    train_seeds(configs, [tmp_path / "s0", tmp_path / "s1"])
    assert compiled[1:] == [("SeedStepper._loss", None, False)]  # vmapped


@pytest.mark.slow
def test_a_compiled_run_matches_the_eager_one_and_may_resume_without_compiling(tmp_path, tiny):
    config = tiny.replace(steps=6, eval_every=3, checkpoint_every=3)
    train(config.replace(compile=True), tmp_path / "compiled")
    train(config, tmp_path / "eager")
    compiled, eager = without_timing(tmp_path / "compiled"), without_timing(tmp_path / "eager")
    assert [r["step"] for r in compiled] == [r["step"] for r in eager]
    for got, want in zip(compiled, eager):
        assert got["train_loss"] == pytest.approx(want["train_loss"], rel=1e-4)
    summary = train(config.replace(steps=9), tmp_path / "compiled", resume=True)  # --compile is resumable
    assert summary["steps_done"] == 9
