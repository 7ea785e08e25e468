"""The training loop: exact resume from `latest.pt`, clean stop on Ctrl-C/SIGTERM, stop-on-grok."""

from __future__ import annotations

import platform
import shutil
import signal
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from grokking import __version__
from grokking.accelerators import GradientFilter, build_grokfast, orthogonalize_gradients
from grokking.config import RESUMABLE_FIELDS, GrokkingError, RunConfig, config_differences
from grokking.evaluate import TaskData, evaluate, load_task
from grokking.losses import answer_loss
from grokking.model import build_model, weight_norm
from grokking.rundir import GENERALIZED, RunDir, checkpoint_config, grokking_steps, load_checkpoint
from grokking.tasks import get_operation, n_examples, n_train_examples

GROK_PATIENCE = 3  # --stop-on-grok stops after this many evaluations in a row at val acc ≥ 0.99


class TrainingInterrupted(Exception):
    """Training stopped on SIGINT/SIGTERM after saving a checkpoint."""

    def __init__(self, signal_number: int, step: int):
        super().__init__(f"stopped by {signal.Signals(signal_number).name} at step {step}")
        self.signal_number = signal_number
        self.step = step


def resolve_device(name: str, needs_float64: bool = False) -> torch.device:
    """The device `name` means (auto: cuda, then mps, then cpu); refused when it cannot run the config."""
    if name == "auto":
        if torch.cuda.is_available():
            device = torch.device("cuda")
        elif torch.backends.mps.is_available():
            device = torch.device("mps")
        else:
            device = torch.device("cpu")
    elif name == "cuda" and not torch.cuda.is_available():
        raise GrokkingError("--device cuda was asked for but no CUDA GPU is visible; use --device auto or cpu")
    elif name == "mps" and not torch.backends.mps.is_available():
        raise GrokkingError("--device mps was asked for but MPS is not available; use --device auto or cpu")
    else:
        device = torch.device(name)
    if needs_float64 and device.type == "mps":
        raise GrokkingError("MPS has no float64; use --loss-dtype float32 or --device cpu")
    if device.type == "cpu":
        # Long after memorization without weight decay, the softmax of wrong answers and its gradients
        # fall below 2^-126, where x86 CPUs compute many times slower (subnormal floats). Flushing them
        # to zero loses nothing a sum with normal-sized terms keeps; paper_late ran 1.4-1.8x faster with it.
        torch.set_flush_denormal(True)
        # On several threads the backward of indexing (`keys[x]` in the model) adds into its gradient
        # in parallel with atomic adds, in an order that varies from run to run; deterministic mode
        # makes that sum serial, so the same seed gives the same run, bit for bit.
        torch.use_deterministic_algorithms(True)
    return device


def resolve_batch_size(config: RunConfig) -> RunConfig:
    """Validate `config` and fill in the batch size: the paper's min(512, n_train // 2) unless one is
    given, and the whole training split for 0."""
    config.validate()
    n_train = n_train_examples(n_examples(config.operation, config.p), config.train_frac)
    size = max(1, min(512, n_train // 2)) if config.batch_size is None else config.batch_size or n_train
    if not 1 <= size <= n_train:
        raise GrokkingError(f"--batch-size must be between 1 and the {n_train} training examples (got {size})")
    return config.replace(batch_size=size)


def learning_rate(config: RunConfig, step: int) -> float:
    """Linear warmup over `warmup_steps` optimizer steps, then constant."""
    return config.lr * min(1.0, step / config.warmup_steps) if config.warmup_steps else config.lr


def set_learning_rate(optimizer: torch.optim.Optimizer, config: RunConfig, step: int) -> None:
    for group in optimizer.param_groups:
        group["lr"] = learning_rate(config, step)


class BatchSampler:
    """Shuffled epochs without replacement; the batch of a step depends only on (seed, step),
    so the sampler's whole state is the step and resume needs nothing else."""

    def __init__(self, seed: int, n_train: int, batch_size: int, device: torch.device):
        self.seed, self.n_train, self.batch_size, self.device = seed, n_train, batch_size, device
        self.per_epoch = n_train // batch_size
        self._epoch, self._order = -1, torch.empty(0)

    def indices(self, step: int) -> torch.Tensor:
        epoch, index = divmod(step - 1, self.per_epoch)
        if epoch != self._epoch:
            order = np.random.default_rng([self.seed, 1, epoch]).permutation(self.n_train)
            self._epoch, self._order = epoch, torch.from_numpy(order).to(self.device)
        return self._order[index * self.batch_size : (index + 1) * self.batch_size]


def is_eval_step(config: RunConfig, step: int) -> bool:
    """Every `eval_every` steps and the last, plus powers of two before the first (dense on a log axis)."""
    early = step < config.eval_every and step & (step - 1) == 0
    return early or step % config.eval_every == 0 or step == config.steps


def is_snapshot_step(config: RunConfig, step: int) -> bool:
    """Kept checkpoints: every power of two (dense early) and every `snapshot_every` steps (sparse late)."""
    return step & (step - 1) == 0 or step % config.snapshot_every == 0 or step == config.steps


def transform_gradients(
    config: RunConfig, params: list[torch.Tensor], grokfast: GradientFilter | None, batch_dims: int = 0
) -> None:
    """The accelerators between backward and the optimizer step: Grokfast's filter, then ⊥Grad."""
    if grokfast is not None:
        grokfast.apply(params)
    if config.orthograd:
        orthogonalize_gradients(params, batch_dims)


def build_optimizer(config: RunConfig, params: Iterable[torch.Tensor]) -> torch.optim.Optimizer:
    kind = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return kind(
        params,
        lr=learning_rate(config, 1),
        betas=(config.beta1, config.beta2),
        eps=config.eps,
        weight_decay=config.weight_decay,
    )


def runtime_info(device: torch.device) -> dict[str, Any]:
    return {
        "grokking_version": __version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "threads": torch.get_num_threads(),
    }


def cpu_name() -> str:
    """The processor's model name where the OS tells it (Linux), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def default_run_dir(config: RunConfig, out_dir: str = "runs") -> RunDir:
    """`<op>_p<p>_<preset>_s<seed>` (without `_p<p>` for S5, which ignores p)."""
    modulus = "" if get_operation(config.operation).group_size else f"_p{config.p}"
    return RunDir(f"{out_dir}/{config.operation}{modulus}_{config.preset}_s{config.seed}")


@dataclass
class LoopState:
    """What the loop carries besides model and optimizer; all of it is saved in latest.pt."""

    step: int = 0
    elapsed_s: float = 0.0
    grok_streak: int = 0
    grokked_step: int | None = None  # first step after GROK_PATIENCE evaluations in a row at val ≥ 0.99
    last: dict[str, float] = field(default_factory=dict)


def prepare_run_dir(config: RunConfig, run: RunDir, resume: bool, overwrite: bool) -> bool:
    """Check the run dir against `config`; return True when training continues from latest.pt.

    Nothing is modified when an error is raised.
    """
    for path in (run.path, *run.path.parents):
        if path.exists() and not path.is_dir():
            raise GrokkingError(f"{path} is a file, not a directory; choose another --run-dir or --out-dir")
    is_run = run.config_path.is_file()
    if not is_run and run.has_visible_files():
        raise GrokkingError(f"{run.path} exists and is not a grokking run dir; choose another --run-dir")
    run.check_unlocked()
    if overwrite:
        if is_run:
            shutil.rmtree(run.path)
        return False
    if not is_run:
        if resume:
            raise GrokkingError(f"nothing to resume: {run.path} holds no run; drop --resume to start one")
        return False
    differences = config_differences(run.read_config(), config, ignore=RESUMABLE_FIELDS)
    if differences:
        raise GrokkingError(
            f"{run.path} holds a run with a different config ({'; '.join(differences)}); "
            "use --resume to continue it as saved, --overwrite to replace it, or another --run-dir"
        )
    if run.latest_path.is_file():
        stored = checkpoint_config(load_checkpoint(run.latest_path), run.latest_path)
        differences = config_differences(stored, config, ignore=RESUMABLE_FIELDS)
        if differences:
            raise GrokkingError(f"{run.latest_path} is from a different config ({'; '.join(differences)}); use --overwrite")
        return True
    if resume:
        raise GrokkingError(f"nothing to resume: {run.path} has no checkpoint yet; drop --resume to start over")
    return False


@contextmanager
def stop_signals() -> Iterator[list[int]]:
    """Turn SIGINT/SIGTERM into a request the loop honours at the end of the current step."""
    received: list[int] = []
    handled = (signal.SIGINT, signal.SIGTERM)
    try:
        previous = {s: signal.signal(s, lambda number, frame: received.append(number)) for s in handled}
    except ValueError:  # not in the main thread: leave signals alone
        yield received
        return
    try:
        yield received
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


class Trainer:
    def __init__(self, config: RunConfig, run: RunDir, device: torch.device):
        self.config, self.run, self.device = config, run, device
        self.data: TaskData = load_task(config, device)
        self.sampler = BatchSampler(config.seed, self.data.n_train, config.batch_size, device)
        dataset = self.data.dataset
        self.model = build_model(dataset.vocab_size, dataset.n_classes, config).to(device)
        self.optimizer = build_optimizer(config, self.model.parameters())
        self.grokfast = build_grokfast(config)
        self.state = LoopState()
        torch.manual_seed(config.seed)  # dropout's stream; saved and restored with every checkpoint

    # checkpoints -----------------------------------------------------------------------------

    def _snapshot(self) -> dict[str, Any]:
        return {"step": self.state.step, "config": self.config.to_dict(), "model": self.model.state_dict()}

    def save_latest(self) -> None:
        state = {
            **self._snapshot(),
            "optimizer": self.optimizer.state_dict(),
            "elapsed_s": self.state.elapsed_s,
            "grok_streak": self.state.grok_streak,
            "grokked_step": self.state.grokked_step,
            "last_metrics": self.state.last,
            "train_indices": self.data.train_indices,
            "grokfast": self.grokfast.state_dict() if self.grokfast is not None else {},
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else [],
        }
        self.run.save_checkpoint(self.run.latest_path, state)

    def restore_latest(self) -> None:
        path = self.run.latest_path
        state = load_checkpoint(path)
        if not torch.equal(state.get("train_indices", torch.empty(0)), self.data.train_indices):
            raise GrokkingError(f"{path} was trained on a different data split than this config gives; use --overwrite")
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            if self.grokfast is not None:
                self.grokfast.load_state_dict(state["grokfast"], self.device)
            torch.set_rng_state(state["torch_rng"])
            if self.device.type == "cuda" and state["cuda_rng"]:
                torch.cuda.set_rng_state_all(state["cuda_rng"])
            self.state = LoopState(
                step=int(state["step"]),
                elapsed_s=float(state["elapsed_s"]),
                grok_streak=int(state["grok_streak"]),
                grokked_step=state["grokked_step"],
                last=dict(state["last_metrics"]),
            )
        except (KeyError, RuntimeError, ValueError, TypeError) as e:
            first = str(e).splitlines()[0]
            raise GrokkingError(f"{path} is corrupt or incomplete ({first}); use --overwrite to start over") from None

    # the loop --------------------------------------------------------------------------------

    def train_step(self, step: int) -> None:
        set_learning_rate(self.optimizer, self.config, step)
        batch = self.sampler.indices(step)
        logits = self.model(self.data.train_inputs[batch])
        loss = answer_loss(logits, self.data.train_targets[batch], self.config)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        transform_gradients(self.config, list(self.model.parameters()), self.grokfast)
        self.optimizer.step()

    def start_clock(self) -> None:
        self._clock = (time.perf_counter(), self.state.elapsed_s)

    def elapsed(self) -> float:
        started, before = self._clock
        return before + time.perf_counter() - started

    def record(self, step: int) -> dict[str, Any]:
        metrics = evaluate(self.model, self.data, self.config)
        record = {
            "step": step,
            **metrics,
            "lr": learning_rate(self.config, step),
            "weight_norm": weight_norm(self.model),
            "elapsed_s": round(self.elapsed(), 3),
        }
        self.run.append_metrics(record)
        self.state.last = metrics
        self.state.grok_streak = self.state.grok_streak + 1 if metrics["val_acc"] >= GENERALIZED else 0
        if self.state.grok_streak >= GROK_PATIENCE and self.state.grokked_step is None:
            self.state.grokked_step = step  # kept even if accuracy dips later (seeds that train on)
        return record

    def grokked(self) -> bool:
        return self.config.stop_on_grok and self.state.grokked_step is not None

    def needs_weights(self, step: int, final: bool) -> bool:
        """Whether this step evaluates or saves the model (`final`: the loop is known to end here)."""
        config = self.config
        return final or is_eval_step(config, step) or step % config.checkpoint_every == 0 or is_snapshot_step(config, step)

    def evaluate_step(self, step: int, progress: Progress | None) -> None:
        self.state.step = step
        if is_eval_step(self.config, step):
            self.record(step)
            if progress is not None and not progress.console.is_terminal and step % self.config.eval_every == 0:
                name, last = self.run.path.name, _fields(self.state.last)["metrics"]
                progress.console.print(f"{name} step {step:,}/{self.config.steps:,}  {last}")

    def save_step(self, step: int, final: bool) -> None:
        """Checkpoint and keep snapshots where due; `final`: the last step of the loop (or of a stop)."""
        self.state.elapsed_s = self.elapsed()
        if step % self.config.checkpoint_every == 0 or final:
            self.save_latest()
        if is_snapshot_step(self.config, step) or final:
            self.run.save_checkpoint(self.run.snapshot_path(step), self._snapshot())

    def run_loop(self, stop_requests: list[int], progress: Progress | None) -> None:
        """Train until the budget, grokking (with stop_on_grok) or a stop signal."""
        config, state = self.config, self.state
        task = progress.add_task("train", total=config.steps, completed=state.step, **_fields(state.last)) if progress else None
        self.start_clock()
        step = state.step
        while step < config.steps and not self.grokked():
            step += 1
            self.train_step(step)
            self.evaluate_step(step, progress)
            self.save_step(step, final=step == config.steps or self.grokked() or bool(stop_requests))
            if progress is not None:
                progress.update(task, completed=step, **_fields(state.last))
            if stop_requests:
                raise TrainingInterrupted(stop_requests[0], step)

    def begin(self, device: torch.device) -> None:
        """Drop metrics past the resume point and (re)write config.json; the run starts here."""
        self.run.truncate_metrics(self.state.step)
        self.run.write_config(self.config, runtime_info(device))

    def finish(self) -> dict[str, Any]:
        """Write and return summary.json."""
        records = self.run.read_metrics()
        final = records[-1] if records else {}
        summary = {
            "steps_done": self.state.step,
            "stopped": "grokked" if self.grokked() else "budget",
            "elapsed_s": round(self.state.elapsed_s, 3),
            **{f"final_{k}": final.get(k) for k in ("train_loss", "train_acc", "val_loss", "val_acc")},
            **grokking_steps(records),
            "steps_per_s": round(self.state.step / self.state.elapsed_s, 1) if self.state.elapsed_s else None,
        }
        self.run.write_summary(summary)
        return summary


def _fields(last: dict[str, float]) -> dict[str, str]:
    if not last:
        return {"metrics": "waiting for the first evaluation"}
    return {
        "metrics": f"train loss {last['train_loss']:.3g} acc {last['train_acc']:.1%} │ "
        f"val loss {last['val_loss']:.3g} acc {last['val_acc']:.1%}"
    }


class RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(f"{task.speed:,.0f} steps/s" if task.speed else "… steps/s", style="magenta")


def progress_bar(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]step"),
        MofNCompleteColumn(),
        BarColumn(),
        RateColumn(),
        TimeRemainingColumn(),
        TextColumn("[cyan]{task.fields[metrics]}"),
        console=console,
    )


def open_trainer(config: RunConfig, run: RunDir, device: torch.device, continuing: bool) -> Trainer:
    """A trainer for `run`, restored from latest.pt when continuing; it writes nothing yet."""
    trainer = Trainer(config, run, device)
    if continuing:
        trainer.restore_latest()
    return trainer


def live_display(console: Console | None) -> Progress | nullcontext:
    return progress_bar(console) if console is not None else nullcontext()


def train(
    config: RunConfig,
    run: RunDir,
    resume: bool = False,
    overwrite: bool = False,
    console: Console | None = None,
) -> dict[str, Any]:
    """Train `config` into `run` (continuing it if it holds this run) and return the summary."""
    config = resolve_batch_size(config)
    device = resolve_device(config.device, needs_float64=config.loss_dtype == "float64")
    continuing = prepare_run_dir(config, run, resume, overwrite)
    with run.lock():
        trainer = open_trainer(config, run, device, continuing)
        trainer.begin(device)
        with stop_signals() as stop_requests, live_display(console) as progress:
            trainer.run_loop(stop_requests, progress)
        return trainer.finish()
