"""What training tells whoever watches it (the CLI's progress display, a SLURM task's log): an
`Observer` whose defaults ignore everything. Its own module, without torch, so that what watches
training can be imported before the training engine is."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class Observer:
    """What training tells whoever watches it; the defaults ignore everything. A run is a
    `grokking.train.SeedRun`."""

    def started(self, runs: Sequence[Any], total: int) -> None:
        """A loop over `runs` begins (they share their step, `runs[0].state.step`, out of `total`)."""

    def evaluated(self, run: Any, record: dict[str, Any]) -> None:
        """`run` wrote `record` to its metrics.jsonl."""

    def advanced(self, step: int, runs: Sequence[Any]) -> None:
        """The loop finished `step`."""

    def note(self, message: str) -> None:
        """Something the user should know about how the runs are trained."""
