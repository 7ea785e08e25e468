"""Evaluation of saved checkpoints."""

from grokking.evaluate import evaluate_checkpoints
from grokking.rundir import RunDir
from grokking.train import train

from .conftest import TINY


def test_checkpoints_of_different_splits_evaluated_together_each_use_their_own(tmp_path):
    """Task data is cached across the checkpoints of one call; two runs of the same seed on different
    splits must not share it (a cache keyed by the seed instead of the split's seed did)."""
    paths = []
    for split_seed in (0, 5):
        run = RunDir(tmp_path / f"split{split_seed}")
        train(TINY.replace(steps=4, split_seed=split_seed), run)
        paths.append(run.latest_path)
    together = evaluate_checkpoints(paths)
    alone = [row for path in paths for row in evaluate_checkpoints([path])]
    assert together == alone
    assert together[0]["val_loss"] != together[1]["val_loss"]
