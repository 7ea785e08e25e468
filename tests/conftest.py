"""Shared fixtures: tiny configs that train in well under a second."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from grokking import main
from grokking.config import RunConfig
from grokking.rundir import RunDir
from grokking.train import Observer

TINY = RunConfig(
    preset="tiny",
    p=11,
    train_frac=0.5,
    steps=40,
    lr=3e-3,
    d_model=32,
    n_heads=4,
    n_layers=1,
    eval_every=10,
    checkpoint_every=10,
    snapshot_every=20,
    device="cpu",
)

TINY_FLAGS = [
    "--p", "11", "--train-frac", "0.5", "--steps", "40", "--lr", "3e-3", "--d-model", "32",
    "--n-heads", "4", "--n-layers", "1", "--eval-every", "10", "--checkpoint-every", "10",
    "--snapshot-every", "20", "--device", "cpu", "--no-stop-on-grok",
]  # fmt: skip


TIMING_KEYS = {"elapsed_s"}


def without_timing(run: RunDir | Path) -> list[dict]:
    """A run's metrics without the wall-clock keys, which differ between identical runs."""
    records = (run if isinstance(run, RunDir) else RunDir(run)).read_metrics()
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]


@pytest.fixture
def tiny() -> RunConfig:
    return TINY


def tree_checksums(root: Path) -> dict[str, str]:
    """sha256 of every file under root (empty when root does not exist)."""
    if not root.exists():
        return {}
    if root.is_file():
        return {root.name: hashlib.sha256(root.read_bytes()).hexdigest()}
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block on `n` intra-op threads, then restore the count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class Notes(Observer):
    """An observer that keeps what training notes (e.g. why seeds train one at a time)."""

    def __init__(self):
        self.notes = []

    def note(self, message):
        self.notes.append(message)


def invoke(*args):
    """The CLI, in this process, with every argument as text."""
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_line_error(result, message: str, code: int = 2) -> None:
    """What every user mistake gets: `message` in one line on stderr, exit `code`, no traceback."""
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.output


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A tiny run dir trained by the CLI once per test module; tests change copies of it."""
    run = tmp_path_factory.mktemp("trained") / "run"
    assert invoke("train", *TINY_FLAGS, "--steps", "20", "--run-dir", run).exit_code == 0
    return run


def copy_of(run: Path, to: Path) -> Path:
    return Path(shutil.copytree(run, to))
