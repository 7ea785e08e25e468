"""One honest small run that really groks within the suite's time (about 15 s on 2 cores)."""

import pytest

from grokking.config import RunConfig
from grokking.rundir import RunDir, first_step_reaching
from grokking.train import train


@pytest.mark.slow
def test_a_small_division_table_memorizes_first_and_generalizes_later(tmp_path):
    config = RunConfig(
        preset="test", p=31, train_frac=0.7, d_model=64, n_layers=1, lr=3e-3, weight_decay=1.0,
        steps=1500, eval_every=50, checkpoint_every=1500, snapshot_every=1500, stop_on_grok=True,
        seed=0, device="cpu", batch_size=325,  # floor(651 / 2): the batch its thresholds were set with
    )  # fmt: skip
    run = RunDir(tmp_path / "run")
    summary = train(config, run)
    records = run.read_metrics()
    memorized = first_step_reaching(records, "train_acc", 0.99)
    generalized = first_step_reaching(records, "val_acc", 0.95)
    assert memorized is not None and generalized is not None, summary
    assert max(r["val_acc"] for r in records) >= 0.95
    at_memorization = next(r for r in records if r["step"] == memorized)
    assert at_memorization["val_acc"] < 0.5, "validation lags far behind when the train set is memorized"
    assert generalized >= 2 * memorized, "generalization comes well after memorization"
