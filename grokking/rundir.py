"""The run directory: config.json, metrics.jsonl, checkpoints/, summary.json, plots/, analysis/.

This module owns the layout: the paths, their readers and writers, the lock, the check that a
folder holds the run a config describes, and the summary of a run's metrics.

Every write of a whole file is atomic (a temp file in the same directory, then `os.replace`), so a
run killed at any moment leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import stat
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from grokking.config import (
    GENERALIZED,
    MEMORIZED,
    RESUMABLE_FIELDS,
    RunConfig,
    architecture,
    config_differences,
    flag_name,
    parse_int_range,
    preset_config,
    resolve,
)
from grokking.errors import GrokkingError, first_line, naming
from grokking.operations import get_operation
from grokking.processes import process_alive


def temp_file_for(path: Path) -> tuple[int, str]:
    """A new temp file beside `path`, to be moved or linked into its place: `.<name>.<8 random>.tmp`
    (TEMP_FILE recognises one that a kill left behind)."""
    return tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_file_for(path)
    try:
        with naming(str(path)):
            os.fchmod(fd, 0o644)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# Bounds on what a reader takes in, far above any real run's file, so that a file that is not one
# fails in one line instead of filling the memory.
JSON_LIMIT = 16 * 2**20  # config.json, summary.json, sweep.json (10,000 points), .lock, wandb_id
METRICS_LIMIT = 512 * 2**20  # metrics.jsonl: over a million evaluations
CHECKPOINT_LIMIT = 8 * 2**30  # the largest model config.py allows, with Adam's state
FILE_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFDIR: "a folder", stat.S_IFCHR: "a device", stat.S_IFBLK: "a device"}


@contextmanager
def open_regular(path: Path, limit: int) -> Iterator[IO[bytes]]:
    """`path` opened for reading, refused (GrokkingError) unless it is a regular file of at most
    `limit` bytes: a FIFO would block the reader and a device such as /dev/zero never ends. A symbolic
    link to a regular file is followed. A missing file raises FileNotFoundError, for the caller to tell;
    one that cannot be opened is a GrokkingError too."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # opening a FIFO does not wait for a writer
    except FileNotFoundError:
        raise
    except OSError as e:  # no permission, a loop of symbolic links, ...
        raise GrokkingError(f"cannot read {path} ({e.strerror or first_line(e)})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = FILE_KINDS.get(stat.S_IFMT(info.st_mode), "not a file")
            raise GrokkingError(
                f"{path} is {kind}, not a regular file; grokking reads only regular files: "
                "put back the file grokking wrote there, or remove it"
            )
        if info.st_size > limit:
            raise too_large(path, limit)
        file = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with file:
        yield file


def read_regular(path: Path, limit: int) -> bytes:
    """The bytes of the regular file `path` (see `open_regular`), at most `limit` of them even if it grows."""
    with open_regular(path, limit) as file:
        data = file.read(limit + 1)
    if len(data) > limit:
        raise too_large(path, limit)
    return data


def too_large(path: Path, limit: int) -> GrokkingError:
    return GrokkingError(
        f"{path} holds more than the {limit:,} bytes grokking reads from a {path.name} (far more than any "
        "run writes); it is not one grokking wrote: restore it from a copy or remove it"
    )


def parse_json(text: bytes | str) -> Any:
    """json.loads, with JSON nested too deeply for Python's parser ([[[[…) a ValueError like any invalid JSON."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def read_json(path: Path) -> Any:
    """A JSON file of a run dir or sweep, bounded as `read_regular`; unreadable JSON is a GrokkingError."""
    try:
        return parse_json(read_regular(path, JSON_LIMIT))
    except (ValueError, UnicodeDecodeError) as e:
        raise GrokkingError(f"{path} is not valid JSON ({e}); restore it or remove it") from None


def finite_json(value: Any) -> Any:
    """`value` with every NaN or infinity replaced by null: JSON has no such numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    return value


def to_json(data: Any, indent: int | None = None) -> str:
    """Strict JSON (non-finite numbers written as null, never as the invalid bare NaN)."""
    return json.dumps(finite_json(data), indent=indent, allow_nan=False)


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, (to_json(data, indent=2) + "\n").encode())


class RunDir:
    """Paths and readers/writers of one run directory."""

    def __init__(self, path: str | os.PathLike):
        if not isinstance(path, (str, os.PathLike)):  # the Python API takes any value
            raise GrokkingError(f"a run dir is a path (str or pathlib.Path), not a {type(path).__name__}")
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

    @property
    def analysis_dir(self) -> Path:
        return self.path / "analysis"

    @property
    def figures_dir(self) -> Path:
        return self.path / "figures"

    def snapshot_path(self, step: int) -> Path:
        return self.checkpoint_dir / f"step_{step:08d}.pt"

    def snapshots(self) -> list[Path]:
        """The kept checkpoints, `step_<8 digits>.pt` (a copy such as `step_00000064 copy.pt` is not one)."""
        return sorted(p for p in self.checkpoint_dir.glob("step_*.pt") if RUN_FOLDERS["checkpoints"].fullmatch(p.name))

    def require_exists(self) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise GrokkingError(f"{self.path} is a file, not a run dir; pass the folder `grokking train` wrote")
        if not self.path.is_dir():
            raise GrokkingError(f"run dir {self.path} does not exist; pass the folder `grokking train` wrote")

    @property
    def lock_path(self) -> Path:
        return self.path / ".lock"

    def training_process(self) -> int | None:
        """The pid of another live process that holds the lock (is training this run), or None."""
        owner = _lock_owner(self.lock_path)
        return owner if owner is not None and owner != os.getpid() and process_alive(owner) else None

    def check_unlocked(self) -> None:
        """Refuse when a live process holds the lock; a lock left by a dead process does not count."""
        owner = self.training_process()
        if owner is not None:
            raise GrokkingError(
                f"{self.path} is being trained by process {owner}; wait for it or stop it first "
                f"(if that process is not a grokking training, its lock is stale: delete {self.lock_path})"
            )

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold `.lock` (holding our pid) while training; a stale lock of a dead process is taken over.

        The pid is written to a temp file first and linked into place, so no other process ever
        sees an empty lock (which it would take for stale)."""
        self.path.mkdir(parents=True, exist_ok=True)
        fd, tmp = temp_file_for(self.lock_path)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            while True:
                try:
                    os.link(tmp, self.lock_path)
                    break
                except FileExistsError:
                    self.check_unlocked()
                    self.lock_path.unlink(missing_ok=True)
        finally:
            Path(tmp).unlink(missing_ok=True)
        try:
            yield
        finally:
            self.lock_path.unlink(missing_ok=True)

    def remove_temp_files(self) -> None:
        """Delete temp files that a process killed in the middle of a write left (call with the lock held)."""
        for folder, names in ((self.path, RUN_FILES), (self.checkpoint_dir, RUN_FOLDERS["checkpoints"])):
            if folder.is_dir():
                for path in folder.iterdir():
                    if is_temp_file(path.name, names) and path.is_file() and not path.is_symlink():
                        path.unlink(missing_ok=True)

    def has_visible_files(self) -> bool:
        return self.path.is_dir() and any(not p.name.startswith(".") for p in self.path.iterdir())

    # config.json -------------------------------------------------------------------------------

    def write_config(self, config: RunConfig, runtime: dict[str, Any]) -> None:
        atomic_write_json(self.config_path, {"config": config.to_dict(), "runtime": runtime})

    def read_config(self) -> RunConfig:
        self.require_exists()
        try:
            data = read_json(self.config_path)
        except FileNotFoundError:
            raise GrokkingError(f"{self.config_path} is missing: {self.path} is not a grokking run dir") from None
        if not isinstance(data, dict) or "config" not in data:
            raise GrokkingError(f"{self.config_path} has no 'config' object; it was not written by grokking")
        return RunConfig.from_dict(data["config"], source=str(self.config_path))

    # metrics.jsonl -----------------------------------------------------------------------------

    def append_metrics(self, record: dict[str, Any]) -> None:
        with naming(str(self.metrics_path)), self.metrics_path.open("a") as f:
            f.write(to_json(record) + "\n")
            f.flush()

    def read_metrics(self) -> list[dict[str, Any]]:
        """All valid records. A line that is not one (torn by a killed run, not UTF-8, not JSON, or
        with a step that is not a count or a value that is not a number) is skipped with a warning
        naming the file and line."""
        try:
            lines = read_regular(self.metrics_path, METRICS_LIMIT).splitlines()
        except FileNotFoundError:
            return []
        except OSError as e:
            raise GrokkingError(f"cannot read {self.metrics_path} ({e.strerror})") from None
        records = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            record = _metrics_record(line)
            if record is None:
                what = "skipped a line that is incomplete or not a metrics record"
                warnings.warn(f"{self.metrics_path}:{number}: {what}", stacklevel=2)
            else:
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
        atomic_write_bytes(self.metrics_path, "".join(to_json(r) + "\n" for r in kept).encode())

    # summary.json ------------------------------------------------------------------------------

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_json(self.summary_path, summary)

    def read_summary(self) -> dict[str, Any] | None:
        """summary.json as written by a finished training, or None (absent, torn, not ours); a summary.json
        that is no regular file is a GrokkingError, as for every reader."""
        try:
            summary = parse_json(read_regular(self.summary_path, JSON_LIMIT))
        except (OSError, ValueError):  # absent, or torn (a UnicodeDecodeError is a ValueError too)
            return None
        return summary if is_summary(summary) else None

    # checkpoints -------------------------------------------------------------------------------

    def save_checkpoint(self, path: Path, state: dict[str, Any]) -> None:
        import torch  # here, not at the top: listing and plotting run dirs need no torch (start-up)

        buffer = io.BytesIO()
        torch.save(state, buffer)
        atomic_write_bytes(path, buffer.getvalue())


def _metrics_record(line: bytes) -> dict[str, Any] | None:
    """One metrics.jsonl line as a record: a JSON object whose step is a count and whose other
    values are numbers (or null); None for anything else."""
    try:
        record = parse_json(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(record, dict) or not is_step_count(record.get("step")):
        return None
    numbers = all(value is None or is_number(value) for value in record.values())
    return record if numbers else None


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint of plain tensors and primitives; anything that would run code is refused."""
    import torch  # as in save_checkpoint

    try:
        with open_regular(path, CHECKPOINT_LIMIT) as file:
            state = torch.load(file, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise GrokkingError(f"checkpoint {path} does not exist") from None
    except GrokkingError:
        raise
    except Exception as e:  # noqa: BLE001 - torch raises many types for bad files
        reason = first_line(e)
        if "weights_only" in str(e) or "Unsupported global" in str(e):
            reason = "it holds Python objects other than tensors (refused: loading it could run code)"
        raise GrokkingError(
            f"cannot load checkpoint {path}: {reason}; it is corrupt or not from grokking: "
            "restore it from a copy, or train the run again with --overwrite"
        ) from None
    if not isinstance(state, dict) or not {"step", "config", "model"} <= set(state):
        raise GrokkingError(f"checkpoint {path} lacks step/config/model; it was not written by grokking")
    step = state["step"]
    if not is_step_count(step):
        raise GrokkingError(f"checkpoint {path} has step {step!r}, not a count of steps; it is corrupt")
    return state


STEP_KEYS = ("memorization_step", "generalization_step")  # of summary.json, besides steps_done


def is_summary(data: Any) -> bool:
    """Whether JSON data is a summary.json as training writes it: its steps counts (steps_done always
    there), how it stopped a word, every other value a number or null. A summary edited into anything
    else would reach tables and figures as if a run had given it."""
    if not isinstance(data, dict) or not is_step_count(data.get("steps_done")):
        return False
    steps = all(data.get(key) is None or is_step_count(data[key]) for key in STEP_KEYS)
    numbers = all(key == "stopped" or value is None or is_number(value) for key, value in data.items())
    return steps and numbers and isinstance(data.get("stopped", ""), str)


def is_number(value: Any) -> bool:
    """Whether a JSON value is a number (a bool is not one)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_step_count(value: Any) -> bool:
    """Whether a value read from a checkpoint or a metrics line is a count of steps: an int ≥ 0 (a bool is not one)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def checkpoint_config(state: dict[str, Any], path: Path) -> RunConfig:
    return RunConfig.from_dict(state["config"], source=f"config in {path}")


def first_step_reaching(records: Iterable[dict[str, Any]], key: str, threshold: float) -> int | None:
    return next((r["step"] for r in records if (r.get(key) or 0.0) >= threshold), None)


def grokking_steps(records: list[dict[str, Any]]) -> dict[str, int | None]:
    """Memorization step (train acc ≥ 0.99), generalization step (val acc ≥ 0.99) and their gap."""
    memorized = first_step_reaching(records, "train_acc", MEMORIZED)
    generalized = first_step_reaching(records, "val_acc", GENERALIZED)
    gap = generalized - memorized if memorized is not None and generalized is not None else None
    return {"memorization_step": memorized, "generalization_step": generalized, "grokking_delay": gap}


def best_validation(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The best validation accuracy of any evaluation and its first step: what Power et al.'s Fig. 2 plots
    for a budget, and what tells a run that reached 95 % from one that stayed at chance."""
    scored = [r for r in records if isinstance(r.get("val_acc"), (int, float)) and math.isfinite(r["val_acc"])]
    best = max(scored, key=lambda r: r["val_acc"], default=None)  # max keeps the first of equals
    return {"best_val_acc": best and best["val_acc"], "best_val_step": best and best["step"]}


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """What a run's metrics say so far: the last step evaluated, the last losses and accuracies, the
    memorization and generalization steps, and the best validation accuracy."""
    final = records[-1] if records else {}
    return {
        "last_step": final.get("step", 0),
        **{f"final_{k}": final.get(k) for k in ("train_loss", "train_acc", "val_loss", "val_acc")},
        **grokking_steps(records),
        **best_validation(records),
    }


# The temp file of an atomic write or of the lock (`temp_file_for`), left behind by a kill:
# ".<the file it replaces>.<8 random characters>.tmp".
TEMP_FILE = re.compile(r"\.(.+)\.[a-z0-9_]{8}\.tmp")
RUN_FILES = re.compile(r"config\.json|metrics\.jsonl|summary\.json|\.lock|wandb_id")
RUN_FOLDERS = {  # the folders of a run dir and the names of the files grokking writes in each
    "checkpoints": re.compile(r"(step_\d{8}|latest)\.pt"),
    "plots": re.compile(r"(accuracy|loss|metric_[A-Za-z0-9_.-]+)\.png"),
    "analysis": re.compile(r"(spectrum|progress|ablation|sharpness)\.json"),
    "figures": re.compile(r"(spectrum|progress|ablation)\.png"),
    "tensorboard": re.compile(r"events\.out\.tfevents\.[\w.-]+"),
}


def is_temp_file(name: str, names: re.Pattern) -> bool:
    """Whether `name` is the temp file of an atomic write of a file that `names` matches."""
    temp = TEMP_FILE.fullmatch(name)
    return bool(temp and names.fullmatch(temp.group(1)))


def written_by_grokking(name: str, names: re.Pattern) -> bool:
    """Whether a file called `name` is one grokking writes where `names` says which, or a temp file of one."""
    return bool(names.fullmatch(name)) or is_temp_file(name, names)


def foreign_entries(path: Path) -> list[str]:
    """What in the run dir `path` grokking did not write (a symbolic link always counts)."""
    foreign = []
    for entry in sorted(os.scandir(path), key=lambda e: e.name):
        if entry.is_symlink() or (entry.is_file() and not written_by_grokking(entry.name, RUN_FILES)):
            foreign.append(entry.name)
        elif entry.is_dir() and entry.name not in RUN_FOLDERS:
            foreign.append(entry.name + "/")
        elif entry.is_dir():
            pattern = RUN_FOLDERS[entry.name]
            for inner in sorted(os.scandir(entry.path), key=lambda e: e.name):
                known = written_by_grokking(inner.name, pattern)
                if inner.is_symlink() or not inner.is_file() or not known:
                    foreign.append(f"{entry.name}/{inner.name}")
    return foreign


def check_removable(run: RunDir) -> None:
    """Refuse, touching nothing, unless `run` is a real run dir with a readable config.json of ours and
    nothing but files grokking writes: what --overwrite may delete."""
    if run.path.is_symlink():
        raise GrokkingError(f"{run.path} is a symbolic link; --overwrite deletes only a real run dir")
    run.read_config()
    foreign = foreign_entries(run.path)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise GrokkingError(
            f"--overwrite would delete what grokking did not write in {run.path} ({shown}); "
            "move it away or choose another --run-dir"
        )


def remove_run(run: RunDir) -> None:
    """Delete the run in `run` (for --overwrite) after `check_removable`; a folder holding no run is left alone."""
    if not run.config_path.is_file():
        return
    check_removable(run)
    for entry in os.scandir(run.path):
        if entry.is_dir(follow_symlinks=False):
            for inner in os.scandir(entry.path):
                os.unlink(inner.path)
            os.rmdir(entry.path)
        else:
            os.unlink(entry.path)


def default_run_dir(config: RunConfig, out_dir: str | os.PathLike = "runs") -> RunDir:
    """`<op>_p<p>_<preset>_s<seed>` (without `_p<p>` for S5, which ignores p)."""
    modulus = "" if get_operation(config.operation).group_size else f"_p{config.p}"
    return RunDir(Path(out_dir) / f"{config.operation}{modulus}_{config.preset}_s{config.seed}")


def require_directory_path(path: Path, option: str) -> None:
    """Refuse a path of which some part is a file, where a folder must go."""
    blocker = file_in_the_way(path)
    if blocker is not None:
        raise GrokkingError(f"{blocker} is a file, not a directory; choose another {option}")


def file_in_the_way(folder: Path) -> Path | None:
    """The part of `folder` (itself or a parent) that exists and is not a folder, if any."""
    return next((part for part in (folder, *folder.parents) if part.exists() and not part.is_dir()), None)


def check_targets(paths: Iterable[Path]) -> None:
    """Refuse, before a command writes any of `paths`, when one of them cannot be written for what stands
    in its way (a file where its folder goes, a folder where it goes), so that such a command writes all
    of its files or none."""
    for path in paths:
        blocker = file_in_the_way(path.parent)
        if blocker is not None:
            raise GrokkingError(f"{blocker} is a file where a folder must go; move it away (nothing was written)")
        if path.exists() and not path.is_file():
            kind = "a folder" if path.is_dir() else "not a regular file"
            raise GrokkingError(f"{path} is {kind} where a file must go; move it away (nothing was written)")


def check_same_config(stored: RunConfig, config: RunConfig, what: str, advice: str) -> None:
    """Refuse when `stored` (what a run dir or checkpoint holds) differs from `config` in more than the
    resumable fields: "<what> (key: old -> new); <advice>". Both are compared resolved: a config.json
    that leaves a default open (older ones wrote `loss_dtype: null`) is the run that default gives."""
    differences = config_differences(resolve(stored), resolve(config), ignore=RESUMABLE_FIELDS)
    if differences:
        raise GrokkingError(f"{what} ({'; '.join(differences)}); {advice}")


def prepare(config: RunConfig, run: RunDir, resume: bool, overwrite: bool) -> bool:
    """Check the run dir against `config`; return True when training continues from latest.pt.

    With `overwrite` the old run may be deleted: it is checked here, and `remove_run` deletes it once
    every run dir of the command has passed. Nothing is modified here.
    """
    if resume and overwrite:
        raise GrokkingError("--resume continues the run and --overwrite deletes it; give one of them")
    require_directory_path(run.path, "--run-dir or --out-dir")
    is_run = run.config_path.is_file()
    if not is_run and run.has_visible_files():
        raise GrokkingError(f"{run.path} exists and is not a grokking run dir; choose another --run-dir")
    run.check_unlocked()
    if overwrite:
        if is_run:
            check_removable(run)
        return False
    if not is_run:
        if resume:
            raise GrokkingError(f"nothing to resume: {run.path} holds no run; drop --resume to start one")
        return False
    if resume:
        resumable = ", ".join(flag_name(name) for name in sorted(RESUMABLE_FIELDS))
        what = f"--resume continues {run.path} with its saved config, and the settings given differ from it"
        advice = f"drop them (a resumed run may change only {resumable}), or give --overwrite to start over"
    else:
        what = f"{run.path} holds a run with a different config"
        advice = "use --resume to continue it as saved, --overwrite to replace it, or another --run-dir"
    check_same_config(run.read_config(), config, what, advice)
    if run.latest_path.exists():  # a latest.pt that is not a regular file is refused by load_checkpoint
        state = load_checkpoint(run.latest_path)
        stored = checkpoint_config(state, run.latest_path)
        check_same_config(stored, config, f"{run.latest_path} is from a different config", "use --overwrite")
        if state["step"] > config.steps:
            raise GrokkingError(
                f"--steps {config.steps:,} is below the {state['step']:,} steps {run.path} has done; "
                f"give --steps {state['step']} or more to continue it"
            )
        return True
    # A summary without latest.pt: a run whose checkpoints were deleted or never copied (as committed
    # examples are); starting again would replace its results. (A run killed before its first checkpoint
    # has no summary: it starts again, as a sweep expects of its points.)
    if run.summary_path.is_file():
        raise GrokkingError(
            f"{run.path} holds a run's results ({len(run.read_metrics())} evaluations, summary.json) but no "
            "checkpoint to continue from; give --overwrite to train it again from step 0, or another --run-dir"
        )
    if resume:
        raise GrokkingError(f"nothing to resume: {run.path} has no checkpoint yet; drop --resume to start over")
    return False


def _lock_owner(lock_path: Path) -> int | None:
    """The pid in a lock file, or None when there is no lock (or it is unreadable, i.e. stale)."""
    try:
        pid = int(read_regular(lock_path, JSON_LIMIT).strip())
    except (OSError, ValueError, GrokkingError):
        return None
    return pid if 0 < pid < 2**31 else None  # 0 and -1 would name process groups to os.kill


MAX_SEEDS = 1024  # seeds one command trains (each is a model, an optimizer and a run dir)


def plan_runs(
    preset: str | None,
    overrides: dict[str, Any],
    seeds: str | None = None,
    run_dir: Path | None = None,
    out_dir: Path = Path("runs"),
    resume: bool = False,
    arch: str | None = None,
) -> list[tuple[RunConfig, RunDir]]:
    """The resolved config and run dir of each run `grokking train` is asked for: the preset (or, with
    --resume and a --run-dir but no --preset, the run's saved config), then the named architecture,
    then the flags given."""
    if resume and preset is None and run_dir is not None:
        config = RunDir(run_dir).read_config()
    else:
        config = preset_config(preset or "quick")
    config = config.replace(**{**(architecture(arch) if arch is not None else {}), **overrides})
    config = resolve(config)
    if config.device != "auto":  # a device asked for by name is checked now; auto is, when training starts
        from grokking.device import resolve_device  # torch: not for a plain --dry-run

        resolve_device(config.device, needs_float64=config.loss_dtype == "float64")
    if seeds is None:
        return [(config, RunDir(run_dir) if run_dir is not None else default_run_dir(config, out_dir))]
    if run_dir is not None:
        raise GrokkingError("--seeds writes one run dir per seed under --out-dir; drop --run-dir")
    chosen = parse_int_range(seeds, "--seeds")
    if len(chosen) > MAX_SEEDS:
        raise GrokkingError(f"--seeds names {len(chosen):,} seeds; train at most {MAX_SEEDS:,} at once")
    configs = [resolve(config.replace(seed=s)) for s in chosen]
    return [(c, default_run_dir(c, out_dir)) for c in configs]
