"""The run directory: config.json, metrics.jsonl, checkpoints/, summary.json, plots/.

Every write of a whole file is atomic (a temp file in the same directory, then `os.replace`), so a
run killed at any moment leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from grokking.config import GrokkingError, RunConfig

MEMORIZED = 0.99  # train accuracy that counts as memorized
GENERALIZED = 0.99  # validation accuracy that counts as generalized


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2) + "\n").encode())


class RunDir:
    """Paths and readers/writers of one run directory."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def summary_path(self) -> Path:
        return self.path / "summary.json"

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def latest_path(self) -> Path:
        return self.checkpoint_dir / "latest.pt"

    @property
    def plots_dir(self) -> Path:
        return self.path / "plots"

    def snapshot_path(self, step: int) -> Path:
        return self.checkpoint_dir / f"step_{step:08d}.pt"

    def snapshots(self) -> list[Path]:
        return sorted(self.checkpoint_dir.glob("step_*.pt"))

    def require_exists(self) -> None:
        if not self.path.is_dir():
            raise GrokkingError(f"run dir {self.path} does not exist; pass the folder `grokking train` wrote")

    @property
    def lock_path(self) -> Path:
        return self.path / ".lock"

    def check_unlocked(self) -> None:
        """Refuse when a live process holds the lock; a lock left by a dead process does not count."""
        owner = _lock_owner(self.lock_path)
        if owner is not None and owner != os.getpid() and _process_alive(owner):
            raise GrokkingError(f"{self.path} is being trained by process {owner}; wait for it or stop it first")

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold `.lock` (holding our pid) while training; a stale lock of a dead process is taken over."""
        self.path.mkdir(parents=True, exist_ok=True)
        while True:
            try:
                fd = os.open(self.lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                break
            except FileExistsError:
                self.check_unlocked()
                self.lock_path.unlink(missing_ok=True)
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        try:
            yield
        finally:
            self.lock_path.unlink(missing_ok=True)

    def has_visible_files(self) -> bool:
        return self.path.is_dir() and any(not p.name.startswith(".") for p in self.path.iterdir())

    # config.json -------------------------------------------------------------------------------

    def write_config(self, config: RunConfig, runtime: dict[str, Any]) -> None:
        atomic_write_json(self.config_path, {"config": config.to_dict(), "runtime": runtime})

    def read_config(self) -> RunConfig:
        self.require_exists()
        if not self.config_path.is_file():
            raise GrokkingError(f"{self.config_path} is missing: {self.path} is not a grokking run dir")
        try:
            data = json.loads(self.config_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise GrokkingError(f"{self.config_path} is not valid JSON ({e}); restore it or start a new run") from None
        if not isinstance(data, dict) or "config" not in data:
            raise GrokkingError(f"{self.config_path} has no 'config' object; it was not written by grokking")
        return RunConfig.from_dict(data["config"], source=str(self.config_path))

    # metrics.jsonl -----------------------------------------------------------------------------

    def append_metrics(self, record: dict[str, Any]) -> None:
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()

    def read_metrics(self) -> list[dict[str, Any]]:
        """All complete records; a torn or corrupt line (a killed run) is skipped with a warning."""
        if not self.metrics_path.is_file():
            return []
        records = []
        for number, line in enumerate(self.metrics_path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                warnings.warn(f"{self.metrics_path}:{number}: skipped an incomplete line", stacklevel=2)
                continue
            if isinstance(record, dict) and isinstance(record.get("step"), int):
                records.append(record)
        return records

    def require_metrics(self) -> list[dict[str, Any]]:
        self.require_exists()
        records = self.read_metrics()
        if not records:
            raise GrokkingError(f"{self.path} has no metrics yet; train first, or wait for the first evaluation")
        return records

    def truncate_metrics(self, last_step: int) -> None:
        """Keep only the records up to `last_step` (used on resume, so nothing is counted twice)."""
        kept = [r for r in self.read_metrics() if r["step"] <= last_step]
        atomic_write_bytes(self.metrics_path, "".join(json.dumps(r) + "\n" for r in kept).encode())

    # summary.json ------------------------------------------------------------------------------

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_json(self.summary_path, summary)

    # checkpoints -------------------------------------------------------------------------------

    def save_checkpoint(self, path: Path, state: dict[str, Any]) -> None:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint of plain tensors and primitives; anything that would run code is refused."""
    if not path.is_file():
        raise GrokkingError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for bad files
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "weights_only" in str(e) or "Unsupported global" in str(e):
            reason = "it holds Python objects other than tensors (refused: loading it could run code)"
        raise GrokkingError(f"cannot load checkpoint {path}: {reason}; it is corrupt or not from grokking") from None
    if not isinstance(state, dict) or not {"step", "config", "model"} <= set(state):
        raise GrokkingError(f"checkpoint {path} lacks step/config/model; it was not written by grokking")
    return state


def checkpoint_config(state: dict[str, Any], path: Path) -> RunConfig:
    return RunConfig.from_dict(state["config"], source=f"config in {path}")


def first_step_reaching(records: Iterable[dict[str, Any]], key: str, threshold: float) -> int | None:
    return next((r["step"] for r in records if r.get(key, 0.0) >= threshold), None)


def grokking_steps(records: list[dict[str, Any]]) -> dict[str, int | None]:
    """Memorization step (train acc ≥ 0.99), generalization step (val acc ≥ 0.99) and their gap."""
    memorized = first_step_reaching(records, "train_acc", MEMORIZED)
    generalized = first_step_reaching(records, "val_acc", GENERALIZED)
    gap = generalized - memorized if memorized is not None and generalized is not None else None
    return {"memorization_step": memorized, "generalization_step": generalized, "grokking_delay": gap}


def _lock_owner(lock_path: Path) -> int | None:
    """The pid in a lock file, or None when there is no lock (or it is unreadable, i.e. stale)."""
    try:
        return int(lock_path.read_text().strip())
    except (OSError, ValueError):
        return None


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
