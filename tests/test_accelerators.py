"""Loss options (StableMax, float64) and gradient accelerators (Grokfast, ⊥Grad)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from grokking.accelerators import EmaFilter, MovingAverageFilter, orthogonalize_gradients
from grokking.config import RunConfig
from grokking.device import configure_torch, resolve_device
from grokking.errors import GrokkingError
from grokking.losses import per_sample_loss, stablemax_log_probs
from grokking.rundir import RunDir
from grokking.train import train, train_seeds

from .conftest import Notes, without_timing


def test_stablemax_is_the_normalized_piecewise_function():
    logits = torch.tensor([[2.0, 0.0, -1.0, -3.0]], dtype=torch.float64)
    s = torch.tensor([3.0, 1.0, 1 / 2, 1 / 4], dtype=torch.float64)  # x + 1 for x ≥ 0, 1 / (1 − x) below
    torch.testing.assert_close(stablemax_log_probs(logits).exp(), s[None] / s.sum())


def test_softmax_collapse_shows_as_zero_loss_in_float32_only():
    logits = torch.tensor([[20.0, 0.0, 0.0]])  # confident and correct: exp(-20) is below float32 rounding
    target = torch.tensor([0])
    assert per_sample_loss(logits, target, RunConfig()).item() == 0.0
    assert per_sample_loss(logits, target, RunConfig(loss_dtype="float64")).item() > 0.0
    assert per_sample_loss(logits, target, RunConfig(loss="stablemax")).item() > 0.0
    assert per_sample_loss(logits, target, RunConfig(loss_dtype="float64")).dtype == torch.float64


def test_cross_entropy_option_is_torchs_cross_entropy():
    logits, targets = torch.randn(16, 7), torch.randint(0, 7, (16,))
    torch.testing.assert_close(
        per_sample_loss(logits, targets, RunConfig()), F.cross_entropy(logits, targets, reduction="none")
    )


def parameters_with_grads(*grads: list[float]) -> list[torch.Tensor]:
    params = [torch.zeros(len(g), requires_grad=True) for g in grads]
    for p, g in zip(params, grads):
        p.grad = torch.tensor(g)
    return params


def test_grokfast_ema_adds_lambda_times_the_running_average():
    ema = EmaFilter(RunConfig(grokfast="ema", grokfast_alpha=0.5, grokfast_lambda=2.0))
    first = parameters_with_grads([1.0, 2.0])
    ema.apply(first)  # the average starts at the first gradient
    torch.testing.assert_close(first[0].grad, torch.tensor([3.0, 6.0]))
    second = parameters_with_grads([3.0, 0.0])
    ema.apply(second)  # average 0.5 * [1, 2] + 0.5 * [3, 0] = [2, 1]
    torch.testing.assert_close(second[0].grad, torch.tensor([7.0, 2.0]))


def test_grokfast_ma_waits_for_a_full_window_then_adds_its_mean():
    ma = MovingAverageFilter(RunConfig(grokfast="ma", grokfast_window=2, grokfast_lambda=1.0))
    grads = [[1.0], [3.0], [5.0]]
    seen = []
    for g in grads:
        params = parameters_with_grads(g)
        ma.apply(params)
        seen.append(params[0].grad.item())
    assert seen == [1.0, 3.0 + 2.0, 5.0 + 4.0]


def test_orthograd_removes_the_component_along_the_weights_and_keeps_the_norm():
    w = torch.randn(5, 3, requires_grad=True)
    g = torch.randn(5, 3)
    w.grad = g.clone()
    orthogonalize_gradients([w])
    assert torch.dot(w.grad.flatten(), w.detach().flatten()).abs() < 1e-5
    assert w.grad.norm().item() == pytest.approx(g.norm().item(), rel=1e-5)


def test_orthograd_on_stacked_seeds_treats_each_seed_alone():
    stacked = torch.randn(3, 4, 2, requires_grad=True)
    stacked.grad = torch.randn(3, 4, 2)
    singles = []
    for i in range(3):
        w = stacked[i].detach().clone().requires_grad_()
        w.grad = stacked.grad[i].clone()
        orthogonalize_gradients([w])
        singles.append(w.grad)
    orthogonalize_gradients([stacked], batch_dims=1)
    torch.testing.assert_close(stacked.grad, torch.stack(singles))


TRAINING_OPTIONS = {  # the accelerators, and openai/grok's training options
    "grokfast-ema": dict(grokfast="ema"),
    "grokfast-ma": dict(grokfast="ma", grokfast_window=8),
    "orthograd+stablemax": dict(orthograd=True, loss="stablemax", loss_dtype="float64"),
    "decay to init": dict(weight_decay_kind="to_init", weight_decay=5.0),
    "update noise": dict(noise_factor=0.5),
    "weight noise": dict(weight_noise=0.05),
    "annealing": dict(anneal_lr_steps=15),
    "label noise": dict(label_noise=10),
    "openai split and schedule": dict(split="openai", warmup_from_zero=True),
    "a fraction a batch": dict(batch_size=0.25),
    "dropout on the MLP only": dict(dropout=0.3, attention_dropout=False),
}


EDIT_LOOP_OPTIONS = ("grokfast-ema", "decay to init")  # the fast suite resumes one of each kind; CI every one


@pytest.mark.parametrize(
    "options",
    [
        pytest.param(options, id=name, marks=() if name in EDIT_LOOP_OPTIONS else pytest.mark.slow)
        for name, options in TRAINING_OPTIONS.items()
    ],
)
def test_training_options_change_training_and_resume_exactly(tmp_path, tiny, options):
    config = tiny.replace(**options)
    whole, halves, plain = (RunDir(tmp_path / name) for name in ("whole", "halves", "plain"))
    train(config, whole)
    train(config.replace(steps=20), halves)
    train(config, halves)  # continues from latest.pt at step 20, filter state included
    assert without_timing(halves) == without_timing(whole)
    train(tiny, plain)
    assert without_timing(plain)[-1]["train_loss"] != without_timing(whole)[-1]["train_loss"]


def test_orthograd_and_stablemax_seeds_together_start_like_single_runs(tmp_path, tiny):
    configs = [tiny.replace(seed=s, orthograd=True, loss="stablemax") for s in (0, 1)]
    runs = [RunDir(tmp_path / "together" / str(c.seed)) for c in configs]
    train_seeds(configs, runs)
    for config, together in zip(configs, runs):
        single = RunDir(tmp_path / "alone" / str(config.seed))
        train(config, single)
        for a, b in zip(together.read_metrics()[:4], single.read_metrics()[:4]):
            assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)


def test_grokfast_seeds_train_one_at_a_time_exactly_like_single_runs(tmp_path, tiny):
    configs = [tiny.replace(seed=s, grokfast="ema", steps=20) for s in (0, 1)]
    notes = Notes()
    train_seeds(configs, [RunDir(tmp_path / "seeds" / str(c.seed)) for c in configs], observer=notes)
    assert len(notes.notes) == 1 and "one seed at a time" in notes.notes[0]
    for config in configs:
        train(config, RunDir(tmp_path / "alone" / str(config.seed)))
        assert without_timing(RunDir(tmp_path / "seeds" / str(config.seed))) == without_timing(
            RunDir(tmp_path / "alone" / str(config.seed))
        )


def test_float64_loss_is_refused_on_mps_which_lacks_float64(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto").type == "mps"
    with pytest.raises(GrokkingError, match="MPS has no float64"):
        resolve_device("auto", needs_float64=True)


def test_cpu_training_flushes_subnormal_floats_which_x86_computes_slowly():
    if not torch.set_flush_denormal(False):
        pytest.skip("this CPU cannot flush subnormal floats")
    assert (torch.tensor([1e-39]) * 2).item() > 0
    configure_torch(resolve_device("cpu"))
    assert (torch.tensor([1e-39]) * 2).item() == 0.0
