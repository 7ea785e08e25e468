"""The optimizer and the schedule against hand computations of openai/grok's definitions."""

import math
from functools import partial

import pytest
import torch

from grokking.config import ARCHITECTURES, PRESETS, RunConfig
from grokking.layout import Layout
from grokking.model import build_model
from grokking.optim import OpenAIAdamW, build_optimizer, learning_rate
from grokking.rundir import RunDir
from grokking.train import train, train_seeds

from .conftest import Notes

BETAS, EPS = (0.9, 0.98), 1e-8


def steps_of(optimizer_of, weights: torch.Tensor, gradients: list[torch.Tensor]) -> torch.Tensor:
    w = weights.clone().requires_grad_()
    optimizer = optimizer_of([w])
    for g in gradients:
        w.grad = g.clone()
        optimizer.step()
    return w.detach()


@pytest.fixture
def problem():
    generator = torch.Generator().manual_seed(0)
    return torch.randn(5, 4, generator=generator), [torch.randn(5, 4, generator=generator) for _ in range(6)]


def test_without_its_extras_openais_adamw_is_torchs_adamw_and_adam(problem):
    weights, gradients = problem
    for coupled, theirs in [(False, torch.optim.AdamW), (True, torch.optim.Adam)]:
        expected = steps_of(partial(theirs, lr=0.01, betas=BETAS, eps=EPS, weight_decay=0.5), weights, gradients)
        got = steps_of(partial(OpenAIAdamW, lr=0.01, betas=BETAS, eps=EPS, weight_decay=0.5, coupled=coupled), weights,
                       gradients)  # fmt: skip
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-7)


def test_decay_toward_the_initial_weights_by_hand(problem):
    """Two steps of to_init decay: before each Adam update, p ← p + lr·wd·(p₀ − p), p₀ the weights at
    the first step; the Adam update itself is written out here."""
    weights, (g1, g2, *_) = problem
    lr, wd = 0.1, 0.5
    got = steps_of(lambda p: OpenAIAdamW(p, lr, BETAS, EPS, wd, to_init=True), weights, [g1, g2])
    p, m, v = weights.clone(), torch.zeros_like(weights), torch.zeros_like(weights)
    for step, g in enumerate([g1, g2], start=1):
        p = p + lr * wd * (weights - p)
        m, v = BETAS[0] * m + (1 - BETAS[0]) * g, BETAS[1] * v + (1 - BETAS[1]) * g * g
        m_hat, v_hat = m / (1 - BETAS[0] ** step), v / (1 - BETAS[1] ** step)
        p = p - lr * m_hat / (v_hat.sqrt() + EPS)
    torch.testing.assert_close(got, p, rtol=1e-6, atol=1e-7)
    first = weights + lr * wd * (weights - weights)  # the first decay is of p₀ toward itself: none
    assert torch.equal(first, weights)


def test_update_noise_is_gaussian_noise_added_to_the_update_direction(problem):
    weights, (g, *_) = problem
    lr, noise = 0.1, 0.3
    torch.manual_seed(7)
    got = steps_of(lambda p: OpenAIAdamW(p, lr, BETAS, EPS, 0.0, noise_factor=noise), weights, [g])
    torch.manual_seed(7)
    draw = torch.randn_like(weights)
    m, v_hat = (1 - BETAS[0]) * g, (1 - BETAS[1]) * g * g / (1 - BETAS[1])
    step_size = lr / (1 - BETAS[0])  # openai scales the noisy direction by lr / (1 − β₁ᵗ)
    torch.testing.assert_close(
        got, weights - step_size * (m / (v_hat.sqrt() + EPS) + noise * draw), rtol=1e-6, atol=1e-6
    )


def test_the_plain_options_keep_torchs_optimizers():
    """Runs without to_init and noise keep torch's arithmetic, bit for bit as before."""
    params = [torch.zeros(2, requires_grad=True)]
    assert type(build_optimizer(RunConfig(optimizer="adamw"), params)) is torch.optim.AdamW
    assert type(build_optimizer(RunConfig(optimizer="adam"), params)) is torch.optim.Adam
    assert type(build_optimizer(RunConfig(weight_decay_kind="to_init"), params)) is OpenAIAdamW
    assert type(build_optimizer(RunConfig(optimizer="adam", noise_factor=0.1), params)) is OpenAIAdamW


def test_openais_schedule_gives_the_first_update_lr_zero():
    """openai/grok's LambdaLR starts at its step 0 (lr 0) and steps after each update: update k has the
    warmup's lr of k − 1. Its own run logs lr 0.0 at the first step."""
    config = PRESETS["paper_wd"]
    assert config.warmup_from_zero
    assert [learning_rate(config, k) for k in (1, 2, 11, 12)] == [0.0, 1e-4, 1e-3, 1e-3]
    plain = config.replace(warmup_from_zero=False)
    assert [learning_rate(plain, k) for k in (1, 10, 11)] == [1e-4, 1e-3, 1e-3]


def test_annealing_is_a_cosine_from_lr_to_a_tenth():
    config = RunConfig(lr=1e-3, warmup_steps=10, anneal_lr_steps=100)
    lr = {k: learning_rate(config, k) for k in (5, 10, 60, 110, 111, 5000)}
    assert lr[5] == pytest.approx(5e-4) and lr[10] == pytest.approx(1e-3)
    assert lr[60] == pytest.approx(1e-4 + 9e-4 * (1 + math.cos(math.pi / 2)) / 2)  # halfway: 5.5e-4
    assert lr[110] == pytest.approx(1e-4) and lr[111] == lr[5000] == pytest.approx(1e-4)


def test_decay_to_init_seeds_stack_and_noisy_ones_train_apart(tmp_path, tiny):
    to_init = [tiny.replace(seed=s, steps=10, weight_decay_kind="to_init", weight_decay=5.0) for s in (0, 1)]
    together = [RunDir(tmp_path / "together" / str(c.seed)) for c in to_init]
    notes = Notes()
    train_seeds(to_init, together, observer=notes)
    assert notes.notes == []
    for config, run in zip(to_init, together):
        alone = RunDir(tmp_path / "alone" / str(config.seed))
        train(config, alone)
        for a, b in zip(run.read_metrics(), alone.read_metrics()):
            assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
    noisy = [c.replace(noise_factor=0.1, weight_noise=0.01) for c in to_init]
    train_seeds(noisy, [RunDir(tmp_path / "noisy" / str(c.seed)) for c in noisy], observer=notes)
    assert notes.notes == ["one seed at a time: --noise-factor, --weight-noise cannot step seeds stacked in one tensor"]


def test_openais_model_has_dropout_on_the_mlp_output_only():
    config = RunConfig(dropout=0.3, **ARCHITECTURES["openai"])
    block = build_model(Layout.of(7, end_token=True), config).blocks[0]
    assert (block.attn.dropout, block.drop.p, block.mlp._modules["3"].p) == (0.0, 0.0, 0.3)
    prenorm = build_model(Layout.of(7), config.replace(**ARCHITECTURES["prenorm"])).blocks[0]
    assert (prenorm.attn.dropout, prenorm.drop.p) == (0.3, 0.3)
