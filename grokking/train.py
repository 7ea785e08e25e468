"""The training engine: one loop over a stepper (one model, or many seeds stacked with vmap), exact
resume from `latest.pt`, a clean stop on Ctrl-C/SIGTERM, and stop-on-grok. It prints nothing: whoever
watches (the CLI's progress display) passes an `Observer`."""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.func import functional_call

from grokking.accelerators import build_grokfast, transform_gradients
from grokking.config import (
    GENERALIZED,
    GROK_PATIENCE,
    RunConfig,
    resolve,
)
from grokking.device import ThreadShare, autocast, compiled, configure_torch, resolve_device, runtime_info
from grokking.errors import GrokkingError, first_line
from grokking.evaluate import evaluate
from grokking.loggers import RunLogger, check_available, open_loggers
from grokking.losses import answer_loss
from grokking.model import build_model, layer_weight_norms, noisy_weights, weight_norm
from grokking.observer import Observer
from grokking.optim import build_optimizer, learning_rate, set_learning_rate, step_measures
from grokking.processes import check_thread_count
from grokking.rundir import RunDir, is_step_count, load_checkpoint, prepare, remove_run, summarize
from grokking.seeds import SeedStepper, blockers
from grokking.tasks import BatchSampler, TaskData, load_task

# What latest.pt holds beyond a kept snapshot and every resume reads (grokfast's and CUDA's state only when used).
RESUME_STATE = ("optimizer", "elapsed_s", "grok_streak", "grokked_step", "last_metrics", "train_indices", "torch_rng")


class TrainingInterrupted(Exception):
    """Training stopped on SIGINT/SIGTERM after saving a checkpoint."""

    def __init__(self, signal_number: int, step: int | None = None):
        where = f" at step {step}" if step is not None else ""
        super().__init__(f"stopped by {signal.Signals(signal_number).name}{where}")
        self.signal_number = signal_number
        self.step = step


class TrainingDiverged(GrokkingError):
    """A run's training loss stopped being a finite number; its checkpoint of that step is saved."""

    def __init__(self, run: RunDir, step: int):
        super().__init__(
            f"training diverged: the train loss of {run.path} is not a finite number at step {step:,}; "
            "its checkpoint of that step is saved. Lower --lr, or try --loss-dtype float64"
        )


def is_eval_step(config: RunConfig, step: int) -> bool:
    """Every `eval_every` steps and the last, plus powers of two before the first (dense on a log axis)."""
    early = step < config.eval_every and step & (step - 1) == 0
    return early or step % config.eval_every == 0 or step == config.steps


def is_snapshot_step(config: RunConfig, step: int) -> bool:
    """Kept checkpoints: every power of two (dense early) and every `snapshot_every` steps (sparse late)."""
    return step & (step - 1) == 0 or step % config.snapshot_every == 0 or step == config.steps


@dataclass
class LoopState:
    """What the loop carries besides model and optimizer; all of it is saved in latest.pt."""

    step: int = 0
    elapsed_s: float = 0.0
    grok_streak: int = 0
    grokked_step: int | None = None  # first step after GROK_PATIENCE evaluations in a row at val ≥ 0.99
    last: dict[str, float] = field(default_factory=dict)


def optional_step(value: Any) -> int | None:
    """A saved step that may be absent (None); anything but a count of steps is corrupt."""
    if value is None or is_step_count(value):
        return value
    raise ValueError(f"step {value!r} is not a count of steps")


class SeedRun:
    """One seed's run: its data, batches, model, optimizer, accelerators, run dir and loop state."""

    def __init__(self, config: RunConfig, run: RunDir, device: torch.device, log: Sequence[str] = ()):
        self.config, self.run, self.device, self.log = config, run, device, log
        self.loggers: list[RunLogger] = []
        self.data: TaskData = load_task(config, device)
        self.sampler = BatchSampler.of(config, self.data.n_train, device)
        dataset = self.data.dataset
        self.model = build_model(dataset.layout, config).to(device)
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
        missing = [key for key in RESUME_STATE if key not in state]
        if missing:
            raise GrokkingError(
                f"{path} lacks the state a resume needs ({', '.join(missing)}): it is a kept snapshot or not a "
                "resume point; put back the run's own latest.pt, or use --overwrite to start over"
            )
        if not torch.equal(state["train_indices"], self.data.train_indices):
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
                grokked_step=optional_step(state["grokked_step"]),
                last=dict(state["last_metrics"]),
            )
        except (KeyError, RuntimeError, ValueError, TypeError) as e:
            raise GrokkingError(
                f"{path} is corrupt or incomplete ({first_line(e)}); use --overwrite to start over"
            ) from None

    # one step of the loop ----------------------------------------------------------------------

    def start_clock(self) -> None:
        self._clock = (time.perf_counter(), self.state.elapsed_s)

    def elapsed(self) -> float:
        started, before = self._clock
        return before + time.perf_counter() - started

    def record(self, step: int, measured: dict[str, float] | None = None) -> dict[str, Any]:
        """Evaluate, append one record to metrics.jsonl (with what the step `measured`, e.g. the
        gradient norm), and update the stop-on-grok streak."""
        metrics = evaluate(self.model, self.data, self.config)
        record = {
            "step": step,
            **metrics,
            "lr": learning_rate(self.config, step),
            "weight_norm": weight_norm(self.model),
            **(measured or {}),
            **layer_weight_norms(self.model),
            "elapsed_s": round(self.elapsed(), 3),
        }
        self.run.append_metrics(record)
        for logger in self.loggers:
            logger.log(record)
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
        return (
            final or is_eval_step(config, step) or step % config.checkpoint_every == 0 or is_snapshot_step(config, step)
        )

    def evaluate_step(self, step: int, measured: dict[str, float]) -> dict[str, Any] | None:
        """The record of this step, where one is due."""
        self.state.step = step
        return self.record(step, measured) if is_eval_step(self.config, step) else None

    def save_step(self, step: int, final: bool) -> None:
        """Checkpoint and keep snapshots where due; `final`: the last step of the loop (or of a stop)."""
        self.state.elapsed_s = self.elapsed()
        if step % self.config.checkpoint_every == 0 or final:
            self.save_latest()
        if is_snapshot_step(self.config, step) or final:
            self.run.save_checkpoint(self.run.snapshot_path(step), self._snapshot())

    def begin(self, device: torch.device) -> None:
        """Drop metrics past the resume point and (re)write config.json; the run starts here."""
        self.run.remove_temp_files()
        self.run.truncate_metrics(self.state.step)
        self.run.write_config(self.config, runtime_info(device))
        self.loggers = open_loggers(self.log, self.run, self.config, self.state.step)

    def close_loggers(self) -> None:
        for logger in self.loggers:
            logger.close()
        self.loggers = []

    def finish(self, stopped: str | None = None) -> dict[str, Any]:
        """Write and return summary.json; `stopped` says why the loop ended if not by budget or grokking."""
        so_far = summarize(self.run.read_metrics())
        del so_far["last_step"]
        summary = {
            "steps_done": self.state.step,
            "stopped": stopped or ("grokked" if self.grokked() else "budget"),
            "elapsed_s": round(self.state.elapsed_s, 3),
            **so_far,
            "steps_per_s": round(self.state.step / self.state.elapsed_s, 1) if self.state.elapsed_s else None,
        }
        self.run.write_summary(summary)
        return summary


class ModelStepper:
    """Steps one seed's own model: batch, loss, backward, accelerators, optimizer.

    A stepper's `train_step(step, measure)` returns, when asked to measure (at evaluations), one dict of
    named scalars per seed (`optim.step_measures`), which join that seed's record."""

    def __init__(self, seed: SeedRun):
        self.seed = seed
        # compiled as one graph with the loss (its backward too), one static graph per batch size
        self.loss = compiled(self._loss, seed.device) if seed.config.compile else self._loss

    def _loss(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        seed = self.seed
        with autocast(seed.config.precision, seed.device):
            if seed.config.weight_noise:
                weights = noisy_weights(seed.model, seed.config.weight_noise)
                logits = functional_call(seed.model, weights, (inputs,), {"scored": True})
            else:
                logits = seed.model(inputs, scored=True)
        return answer_loss(logits, targets, seed.config)

    def train_step(self, step: int, measure: bool = False) -> list[dict[str, float]]:
        seed = self.seed
        set_learning_rate(seed.optimizer, seed.config, step)
        batch = seed.sampler.indices(step)
        loss = self.loss(seed.data.train_inputs[batch], seed.data.train_targets[batch])
        seed.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = list(seed.model.parameters())
        measured = step_measures(params) if measure else []
        transform_gradients(seed.config, params, seed.grokfast)
        seed.optimizer.step()
        return measured

    def sync_weights(self) -> None:
        """Nothing to do: the model trained is the seed's own."""

    def sync_optimizer(self) -> None:
        """Nothing to do: the optimizer stepped is the seed's own."""


Stepper = ModelStepper | SeedStepper


def run_loop(
    runs: Sequence[SeedRun], stepper: Stepper, stop_requests: list[int], observer: Observer, share: ThreadShare
) -> None:
    """Train `runs` (at the same step) until the budget, all of them grokked (with stop_on_grok) or a
    stop signal; at each evaluation the thread count follows `share`."""
    config = runs[0].config
    observer.started(runs, config.steps)
    for run in runs:
        run.start_clock()
    step = runs[0].state.step
    while step < config.steps and not all(r.grokked() for r in runs):
        step += 1
        measured = stepper.train_step(step, measure=is_eval_step(config, step)) or [{}] * len(runs)
        known_final = step == config.steps or bool(stop_requests)
        if any(r.needs_weights(step, known_final) for r in runs):
            stepper.sync_weights()
        if is_eval_step(config, step):
            share.update()
        diverged = []
        for run, scalars in zip(runs, measured):
            record = run.evaluate_step(step, scalars)
            if record is not None:
                observer.evaluated(run, record)
                if not math.isfinite(record["train_loss"]):
                    diverged.append(run)
        final = known_final or all(r.grokked() for r in runs) or bool(diverged)
        if final or step % config.checkpoint_every == 0:
            stepper.sync_optimizer()
        for run in runs:
            run.save_step(step, final)
        observer.advanced(step, runs)
        if diverged:
            raise TrainingDiverged(diverged[0].run, step)
        if stop_requests and final:  # a request that came during this step stops after the next, with its checkpoint
            raise TrainingInterrupted(stop_requests[0], step)


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


def open_run(
    config: RunConfig, run: RunDir, device: torch.device, continuing: bool, log: Sequence[str] = ()
) -> SeedRun:
    """A seed's run in `run`, restored from latest.pt when continuing; it writes nothing yet."""
    seed_run = SeedRun(config, run, device, log)
    if continuing:
        seed_run.restore_latest()
    return seed_run


def _loop(
    group: list[SeedRun], device: torch.device, stop_requests: list[int], observer: Observer, share: ThreadShare
) -> None:
    """Train `group` together; a divergence ends every run of it with a summary that says so."""
    for seed_run in group:
        seed_run.begin(device)
    stepper = SeedStepper(group) if len(group) > 1 else ModelStepper(group[0])
    try:
        run_loop(group, stepper, stop_requests, observer, share)
    except TrainingDiverged:
        for seed_run in group:
            seed_run.finish(stopped="diverged")
        raise
    finally:
        for seed_run in group:
            seed_run.close_loggers()


def train_seeds(
    configs: list[RunConfig],
    runs: Sequence[RunDir | str | os.PathLike],
    resume: bool = False,
    overwrite: bool = False,
    observer: Observer | None = None,
    threads: int = 0,
    log: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Train seeds of one config, each into its own run dir (continuing those that hold their run), and
    return their summaries. They share one vectorized step where they can; otherwise, or when their
    run dirs stopped at different steps, they train one at a time (and `observer` is told why).
    `threads`: CPU threads, or 0 for a fair share of the cores among the trainings running (ThreadShare);
    `log`: experiment loggers ("tensorboard", "wandb"), one logged run per seed."""
    observer = observer or Observer()
    check_available(log)
    wrong = next((c for c in configs if not isinstance(c, RunConfig)), None)
    if wrong is not None:
        raise GrokkingError(
            f"train() takes a RunConfig, e.g. PRESETS['quick'].replace(p=47), not a {type(wrong).__name__}"
        )
    configs = [resolve(c) for c in configs]
    dirs = [r if isinstance(r, RunDir) else RunDir(r) for r in runs]
    if len({c.replace(seed=0) for c in configs}) != 1:
        raise GrokkingError("seeds trained together must share every setting but the seed")
    device = resolve_device(configs[0].device, needs_float64=configs[0].loss_dtype == "float64")
    continuing = [prepare(c, r, resume, overwrite) for c, r in zip(configs, dirs)]
    check_thread_count(threads)
    if overwrite:  # only now, when every run dir and setting has passed: a refusal deletes nothing
        for run in dirs:
            remove_run(run)
    configure_torch(device)
    with ExitStack() as locks, stop_signals() as stop_requests, ThreadShare(threads) as share:
        for run in dirs:
            locks.enter_context(run.lock())
        apart = blockers(configs[0])
        if len(configs) > 1 and not apart:
            group = [open_run(c, r, device, cont, log) for c, r, cont in zip(configs, dirs, continuing)]
            steps = sorted({s.state.step for s in group})
            if len(steps) == 1:
                _loop(group, device, stop_requests, observer, share)
                return [s.finish() for s in group]
            observer.note(f"one seed at a time: these run dirs stopped at different steps {steps}")
        elif len(configs) > 1:
            observer.note(f"one seed at a time: {', '.join(apart)} cannot step seeds stacked in one tensor")
        summaries = []
        for config, run, cont in zip(configs, dirs, continuing):
            seed_run = open_run(config, run, device, cont, log)  # built just before it trains: dropout's stream
            _loop([seed_run], device, stop_requests, observer, share)
            summaries.append(seed_run.finish())
        return summaries


def train(
    config: RunConfig,
    run: RunDir | str | os.PathLike,
    resume: bool = False,
    overwrite: bool = False,
    observer: Observer | None = None,
    threads: int = 0,
    log: Sequence[str] = (),
) -> dict[str, Any]:
    """Train `config` into `run` (continuing it if it holds this run) and return the summary:
    what `grokking train --run-dir RUN` does."""
    return train_seeds([config], [run], resume, overwrite, observer, threads, log)[0]
