"""Several seeds trained together: ordinary run dirs, the same start as single-seed runs, exact resume."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from grokking import accelerators, main, optim
from grokking import config as config_module
from grokking.config import resolve
from grokking.errors import GrokkingError
from grokking.rundir import RunDir
from grokking.train import train, train_seeds

from .conftest import TINY_FLAGS, Notes, without_timing

SEEDS = [0, 1, 2]


def runs_in(root, configs):
    return [RunDir(root / f"s{c.seed}") for c in configs]


def test_each_seed_starts_exactly_like_its_single_seed_run(tmp_path, tiny):
    configs = [tiny.replace(seed=s) for s in SEEDS]
    train_seeds(configs, runs_in(tmp_path / "together", configs))
    for config in configs:
        single = RunDir(tmp_path / "alone" / f"s{config.seed}")
        train(config, single)
        together = RunDir(tmp_path / "together" / f"s{config.seed}")
        assert (
            json.loads(together.config_path.read_text())["config"]
            == json.loads(single.config_path.read_text())["config"]
        )
        first, reference = together.read_metrics()[0], single.read_metrics()[0]
        assert first["step"] == reference["step"] == 1
        for key in ("train_loss", "val_loss", "train_acc", "val_acc", "weight_norm"):
            assert first[key] == pytest.approx(reference[key], rel=1e-4, abs=1e-5)
        steps = [r["step"] for r in together.read_metrics()]
        assert steps == [r["step"] for r in single.read_metrics()]
        assert [p.name for p in together.snapshots()] == [p.name for p in single.snapshots()]


def test_seeds_differ_from_each_other(tmp_path, tiny):
    configs = [tiny.replace(seed=s) for s in SEEDS]
    runs = runs_in(tmp_path, configs)
    train_seeds(configs, runs)
    finals = [r.read_metrics()[-1]["train_loss"] for r in runs]
    assert len(set(finals)) == len(finals)


def test_a_stopped_group_resumes_to_exactly_the_uninterrupted_metrics(tmp_path, tiny):
    configs = [tiny.replace(seed=s, steps=40) for s in SEEDS]
    uninterrupted = runs_in(tmp_path / "whole", configs)
    train_seeds(configs, uninterrupted)
    halves = runs_in(tmp_path / "halves", configs)
    train_seeds([c.replace(steps=20) for c in configs], halves)
    train_seeds(configs, halves)  # continues from each seed's latest.pt at step 20
    for whole, half in zip(uninterrupted, halves):
        assert without_timing(half) == without_timing(whole)


def test_a_group_checkpoint_resumes_as_a_single_seed_run(tmp_path, tiny):
    configs = [tiny.replace(seed=s, steps=20) for s in SEEDS]
    runs = runs_in(tmp_path, configs)
    train_seeds(configs, runs)
    summary = train(configs[1].replace(steps=40), runs[1])
    assert summary["steps_done"] == 40
    assert [r["step"] for r in runs[1].read_metrics()][-3:] == [20, 30, 40]


def test_seeds_must_share_the_config(tmp_path, tiny):
    with pytest.raises(GrokkingError, match="share every setting"):
        train_seeds([tiny, tiny.replace(seed=1, lr=0.01)], [RunDir(tmp_path / "a"), RunDir(tmp_path / "b")])
    assert not any(tmp_path.iterdir())


def test_seeds_with_dropout_train_one_at_a_time_exactly_like_single_runs(tmp_path, tiny):
    configs = [tiny.replace(seed=s, dropout=0.1, steps=20) for s in SEEDS[:2]]
    runs = runs_in(tmp_path / "seeds", configs)
    train_seeds(configs, runs)
    for config, run in zip(configs, runs):
        alone = RunDir(tmp_path / "alone" / str(config.seed))
        train(config, alone)
        assert without_timing(run) == without_timing(alone)


def test_cli_trains_a_seed_range_into_ordinary_run_dirs_and_plots_the_spread(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["train", *TINY_FLAGS, "--seeds", "0-2", "--out-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    run_dirs = sorted(tmp_path.iterdir())
    assert [p.name for p in run_dirs] == [f"div_p11_quick_s{s}" for s in SEEDS]
    assert "generalized at" in result.stdout
    plot = runner.invoke(
        main, ["plot", *[a for d in run_dirs for a in ("--run-dir", str(d))], "--out", str(tmp_path / "spread")]
    )
    assert plot.exit_code == 0, plot.output
    assert (tmp_path / "spread" / "accuracy.png").is_file()
    listed = runner.invoke(main, ["train", *TINY_FLAGS, "--seeds", "0,3,7", "--out-dir", str(tmp_path), "--dry-run"])
    assert [json.loads(listed.stdout)[i]["config"]["seed"] for i in range(3)] == [0, 3, 7]


def test_a_seed_that_grokked_stays_grokked_while_the_group_trains_on(tmp_path, tiny, monkeypatch):
    """A seed that grokked stays grokked when its accuracy dips later, so a --stop-on-grok group
    stops once every seed has grokked at some point."""
    from grokking import train as train_module

    accuracies = iter([1.0, 1.0, 1.0, 0.5, 0.5])
    monkeypatch.setattr(
        train_module,
        "evaluate",
        lambda model, data, config: {"train_loss": 0.0, "train_acc": 1.0, "val_loss": 0.0, "val_acc": next(accuracies)},
    )
    config = resolve(tiny.replace(stop_on_grok=True))
    trainer = train_module.SeedRun(config, RunDir(tmp_path / "run"), torch.device("cpu"))
    trainer.run.path.mkdir()
    trainer.start_clock()
    for step in (1, 2, 4):
        trainer.record(step)
    assert trainer.grokked() and trainer.state.grokked_step == 4
    trainer.record(8)
    assert trainer.state.grok_streak == 0 and trainer.grokked() and trainer.state.grokked_step == 4


def test_seeds_together_take_the_shorter_last_batch_like_single_runs(tmp_path, tiny):
    config = tiny.replace(last_batch="keep", batch_size=8, vocab="openai", steps=12)  # 55 examples: 6 x 8 + 7 a pass
    configs = [config.replace(seed=s) for s in (0, 1)]
    train_seeds(configs, runs_in(tmp_path / "together", configs))
    for c in configs:
        train(c, RunDir(tmp_path / "alone" / f"s{c.seed}"))
        together, alone = (
            without_timing(tmp_path / "together" / f"s{c.seed}"),
            without_timing(tmp_path / "alone" / f"s{c.seed}"),
        )
        assert [r["step"] for r in together] == [r["step"] for r in alone]
        for got, want in zip(together, alone):
            assert got["train_loss"] == pytest.approx(want["train_loss"], rel=1e-4, abs=1e-5)


def test_every_choice_has_a_registry_entry_that_says_whether_it_stacks():
    assert set(optim.OPTIMIZER_KINDS) == set(config_module.OPTIMIZERS)
    assert set(accelerators.GROKFAST_FILTERS) == set(config_module.GROKFAST_FILTERS)


@pytest.mark.parametrize("name", [n for n, kind in optim.OPTIMIZER_KINDS.items() if kind.elementwise])
def test_an_optimizer_registered_as_elementwise_steps_stacked_seeds_as_if_apart(name, tiny):
    """The contract behind `elementwise=True`: one optimizer over two stacked weights gives each the
    updates its own optimizer would. An entry that claims it falsely fails here."""
    config = tiny.replace(optimizer=name, weight_decay=0.5)
    generator = torch.Generator().manual_seed(0)
    weights = [torch.randn(4, 3, generator=generator) for _ in range(2)]
    gradients = [[torch.randn(4, 3, generator=generator) for _ in range(2)] for _ in range(5)]
    stacked = torch.stack(weights).requires_grad_()
    apart = [w.clone().requires_grad_() for w in weights]
    together = optim.build_optimizer(config, [stacked])
    alone = [optim.build_optimizer(config, [w]) for w in apart]
    for step_gradients in gradients:
        stacked.grad = torch.stack(step_gradients)
        together.step()
        for w, opt, g in zip(apart, alone, step_gradients):
            w.grad = g
            opt.step()
    torch.testing.assert_close(stacked.detach(), torch.stack([w.detach() for w in apart]), rtol=0, atol=0)


def test_a_part_that_cannot_stack_seeds_makes_them_train_one_at_a_time(tmp_path, tiny, monkeypatch):
    kind = optim.OPTIMIZER_KINDS["adamw"]
    monkeypatch.setitem(optim.OPTIMIZER_KINDS, "adamw", optim.OptimizerKind(kind.make, elementwise=False))
    configs = [tiny.replace(seed=s, steps=10) for s in (0, 1)]
    notes = Notes()
    train_seeds(configs, [RunDir(tmp_path / "seeds" / str(c.seed)) for c in configs], observer=notes)
    assert notes.notes == ["one seed at a time: --optimizer adamw cannot step seeds stacked in one tensor"]
    for config in configs:
        train(config, RunDir(tmp_path / "alone" / str(config.seed)))
        assert without_timing(RunDir(tmp_path / "seeds" / str(config.seed))) == without_timing(
            RunDir(tmp_path / "alone" / str(config.seed))
        )
