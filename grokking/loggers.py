"""Optional experiment loggers: TensorBoard event files and Weights & Biases runs, fed each record
that training appends to metrics.jsonl.

Both are extras (`uv sync --extra tensorboard`, `uv sync --extra wandb`), so they are imported only
inside the functions that use them: `import grokking.loggers` works on the default install.
metrics.jsonl stays the source of truth: a logger that fails (disk, network) warns once and is
dropped, and training goes on.

Both name a metric the same way (`tag`): `train_loss` -> `loss/train`, `val_acc` -> `acc/val`, so
each section of the dashboard holds a metric's train and val curves; other keys keep their
metrics.jsonl name (`lr`, `weight_norm`, `elapsed_s`).
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import textwrap
import warnings
from collections.abc import Sequence
from contextlib import suppress
from typing import Any, Protocol

from grokking.config import RunConfig
from grokking.errors import GrokkingError, first_line
from grokking.rundir import JSON_LIMIT, RunDir, atomic_write_bytes, read_regular

LOGGERS = ("tensorboard", "wandb")
INSTALL = {
    "tensorboard": "uv sync --extra tensorboard (or: pip install tensorboard)",
    "wandb": "uv sync --extra wandb (or: pip install wandb)",
}
TENSORBOARD_DIR = "tensorboard"  # in the run dir: `tensorboard --logdir runs` finds every run
WANDB_ID_FILE = "wandb_id"  # in the run dir: the W&B run id, so a resumed run continues its W&B run
SPLITS = ("train", "val")
HPARAM_METRICS = ("loss/train", "loss/val", "acc/train", "acc/val")  # HParams columns: these scalars' last values


class RunLogger(Protocol):
    def log(self, record: dict[str, Any]) -> None:
        """One metrics.jsonl record: {"step": int, "train_loss": float, ...}; values may be None."""

    def close(self) -> None: ...


def check_available(names: Sequence[str]) -> None:
    """GrokkingError (one line naming the install command) for an unknown name or a missing extra."""
    for name in names:
        if name not in LOGGERS:
            raise GrokkingError(f"unknown logger {name!r}; choose one of {', '.join(LOGGERS)}")
        if importlib.util.find_spec(name) is None:
            raise GrokkingError(f"--log {name} needs the optional {name} package; install it with {INSTALL[name]}")


def open_loggers(names: Sequence[str], run: RunDir, config: RunConfig, start_step: int) -> list[RunLogger]:
    """One logger per name for this run dir; start_step is the step training resumes from (0 for a new run).

    A logger that cannot start warns and is left out; a missing extra raises GrokkingError."""
    check_available(names)
    loggers: list[RunLogger] = []
    for name in names:
        try:
            logger = OPENERS[name](run, config, start_step)
        except Exception as e:  # noqa: BLE001 - whatever the library raises, training goes on without it
            warn_stopped(name, run, e)
        else:
            loggers.append(Guarded(name, run, logger))
    return loggers


def tag(key: str) -> str:
    """The name a metrics.jsonl key is logged under: `train_loss` -> `loss/train`; others unchanged."""
    split, _, metric = key.partition("_")
    return f"{metric}/{split}" if split in SPLITS and metric else key


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """A record's values to log, by tag: every key but `step`, without the missing (None) ones."""
    return {tag(key): value for key, value in record.items() if key != "step" and value is not None}


def warn_stopped(name: str, run: RunDir, error: Exception) -> None:
    warnings.warn(
        f"{name} logging stopped: {first_line(error)} (run {run.path}); metrics.jsonl has every record", stacklevel=2
    )


class Guarded:
    """A logger whose first failure warns once and turns it off, so training goes on without it."""

    def __init__(self, name: str, run: RunDir, logger: RunLogger):
        self.name, self.run, self.logger = name, run, logger

    def log(self, record: dict[str, Any]) -> None:
        if self.logger is not None:
            try:
                self.logger.log(record)
            except Exception as e:  # noqa: BLE001 - a full disk or a lost network must not stop training
                self.stop(e)

    def close(self) -> None:
        logger, self.logger = self.logger, None
        if logger is not None:
            try:
                logger.close()
            except Exception as e:  # noqa: BLE001
                warn_stopped(self.name, self.run, e)

    def stop(self, error: Exception) -> None:
        warn_stopped(self.name, self.run, error)
        logger, self.logger = self.logger, None
        with suppress(Exception):  # release its files and threads if it still can; it has said why it stopped
            logger.close()


class TensorBoardLogger:
    """Event files in RUN/tensorboard/: a scalar per metric (named by `tag`) at each record's step, and
    the config as text (`config`) and as hparams (the HParams tab), written at each (re)start."""

    def __init__(self, run: RunDir, config: RunConfig, start_step: int):
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        # TensorBoard drops the events at or after purge_step of the files before this one: what an
        # earlier attempt logged past the checkpoint this run resumes from, as metrics.jsonl drops its
        # records. From step 1 for a new run too: a run dir without a checkpoint starts over at 0.
        self.writer = SummaryWriter(log_dir=str(run.path / TENSORBOARD_DIR), purge_step=start_step + 1)
        settings = config.to_dict()
        self.writer.add_text("config", textwrap.indent(json.dumps(settings, indent=2), "    "), start_step)
        # add_hparams would put them in a new sub-run (a folder per call); written into this run's own
        # file instead, the HParams tab shows them beside this run's curves
        experiment, session_start, self.session_end = hparams(settings, dict.fromkeys(HPARAM_METRICS, 0))
        self.writer.file_writer.add_summary(experiment, start_step)
        self.writer.file_writer.add_summary(session_start, start_step)
        self.writer.flush()

    def log(self, record: dict[str, Any]) -> None:
        for name, value in scalars(record).items():
            self.writer.add_scalar(name, value, record["step"])
        self.writer.flush()  # so that `tensorboard --logdir runs` shows a live run

    def close(self) -> None:
        self.writer.file_writer.add_summary(self.session_end)  # the HParams tab's status: finished
        self.writer.close()


class WandbLogger:
    """A W&B run: project = the run dir's parent folder, name = the run dir's name, id = RUN/wandb_id.

    Offline (files under W&B's own folder, ./wandb or $WANDB_DIR; `wandb sync` uploads them) unless the
    environment configures W&B: WANDB_MODE set (e.g. online after `wandb login`), or WANDB_API_KEY."""

    def __init__(self, run: RunDir, config: RunConfig, start_step: int):
        import wandb

        self.run = wandb.init(
            project=run.path.parent.name or "grokking",
            name=run.path.name,
            id=wandb_id(run),
            resume="allow",
            config=config.to_dict(),
            mode=None if os.environ.get("WANDB_MODE") or os.environ.get("WANDB_API_KEY") else "offline",
            # create_new: one run per seed when seeds train side by side in this process (W&B's default
            # would hand every seed the first seed's run); console off: W&B would record every frame
            # of the live progress display
            reinit="create_new",
            settings=wandb.Settings(console="off"),
        )

    def log(self, record: dict[str, Any]) -> None:
        self.run.log(scalars(record), step=record["step"])

    def close(self) -> None:
        self.run.finish()


def wandb_id(run: RunDir) -> str:
    """The W&B run id stored in the run dir, made the first time."""
    path = run.path / WANDB_ID_FILE
    try:
        stored = read_regular(path, JSON_LIMIT).decode("ascii", "replace").strip()
    except FileNotFoundError:
        stored = ""
    if stored:
        return stored
    new = secrets.token_hex(6)
    atomic_write_bytes(path, (new + "\n").encode())
    return new


OPENERS = {"tensorboard": TensorBoardLogger, "wandb": WandbLogger}
