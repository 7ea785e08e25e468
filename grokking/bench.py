"""`grokking bench`: the training engine against a plain reference loop, side by side in one process,
and (on the CPU) against the fp32 roofline of its own matrix products."""

from __future__ import annotations

import math
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from rich.progress import Progress

from grokking.config import GENERALIZED, RunConfig, resolve
from grokking.device import configure_torch, resolve_device, runtime_info
from grokking.errors import GrokkingError
from grokking.evaluate import evaluate
from grokking.model import build_model
from grokking.optim import build_optimizer, set_learning_rate
from grokking.roofline import step_roofline
from grokking.rundir import RunDir
from grokking.seeds import SeedStepper
from grokking.tasks import BatchSampler, TaskData
from grokking.train import ModelStepper, SeedRun, is_eval_step, open_run


class ReferenceLoop:
    """The straightforward way to write it: every position through standard `torch.nn` modules,
    logits read where the loss scores (`=`, and c with the end token), a standard optimizer step,
    full-batch evaluation the same way."""

    def __init__(self, config: RunConfig, data: TaskData, device: torch.device):
        self.config, self.data = config, data
        self.model = build_model(data.layout, config).to(device)
        self.optimizer = build_optimizer(config, self.model.parameters())
        self.sampler = BatchSampler.of(config, data.n_train, device)

    def scored_logits(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """[batch, T, n_out] at the last T positions (`=`, and c with the end token), T the tokens scored."""
        scored = 1 if targets.dim() == 1 else targets.shape[1]
        return self.model.forward_all(inputs)[:, -scored:]

    def train_step(self, step: int) -> None:
        set_learning_rate(self.optimizer, self.config, step)
        batch = self.sampler.indices(step)
        targets = self.data.train_targets[batch]
        logits = self.scored_logits(self.data.train_inputs[batch], targets)
        loss = F.cross_entropy(logits.flatten(0, -2), targets.flatten())
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()

    @torch.no_grad()
    def val_acc(self) -> float:
        self.model.eval()
        targets = self.data.val_targets
        logits = self.scored_logits(self.data.val_inputs, targets)
        self.scored_logits(self.data.train_inputs, self.data.train_targets)  # the train split too, as in training
        self.model.train()
        right = logits.argmax(-1) == targets.view(len(targets), -1)
        return right.all(dim=-1).float().mean().item()


@dataclass
class Contender:
    name: str
    train_step: Callable[[int], None]
    val_acc: Callable[[], float]
    offset: int = 0  # the step it starts after (a restored checkpoint's)
    step: int = 0
    seconds: float = 0.0
    warmup_seconds: float = 0.0
    peak_cuda_bytes: int = 0

    def advance(self, config: RunConfig, n_steps: int, device: torch.device) -> float | None:
        """Run n_steps (evaluating where training would); return the last validation accuracy seen."""
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        started, accuracy = time.perf_counter(), None
        for _ in range(n_steps):
            self.step += 1
            self.train_step(self.offset + self.step)
            if is_eval_step(config, self.offset + self.step):
                accuracy = self.val_acc()
        if device.type == "cuda":
            torch.cuda.synchronize()
            self.peak_cuda_bytes = max(self.peak_cuda_bytes, torch.cuda.max_memory_allocated())
        self.seconds += time.perf_counter() - started
        return accuracy


def bench_device(config: RunConfig) -> torch.device:
    """The device to measure on, with the torch settings training uses there."""
    device = resolve_device(config.device)
    configure_torch(device)
    return device


def contenders(config: RunConfig, device: torch.device, scratch: str) -> list[Contender]:
    """The project's engine (the training loop's own step) and the reference loop, from the same init."""
    engine = SeedRun(config, RunDir(scratch), device)
    return [engine_contender("engine", engine), reference_contender(config, engine.data, device)]


def engine_contender(name: str, seed_run: SeedRun) -> Contender:
    return Contender(
        name, ModelStepper(seed_run).train_step, lambda: evaluate(seed_run.model, seed_run.data)["val_acc"]
    )


def reference_contender(config: RunConfig, data: TaskData, device: torch.device) -> Contender:
    reference = ReferenceLoop(config.replace(precision="fp32", compile=False), data, device)
    return Contender("reference", reference.train_step, reference.val_acc)


def peak_rss_mib() -> float:
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / (1024 * 1024) if sys.platform == "darwin" else kib / 1024  # macOS reports bytes


def warmup_steps(config: RunConfig, n_train: int) -> int:
    """Untimed steps before the timing: one pass over the training data and one more step, so that a
    compiled step has met both batch sizes (a shorter last batch is a graph of its own)."""
    return max(3, math.ceil(n_train / config.batch_size) + 1)


def steady_offset(config: RunConfig) -> int:
    """The step a timing starts after: past the dense early evaluations (at powers of two) that only a run's
    first `eval_every` steps have, so that evaluating weighs on the figure as it does on most of a run
    (paper_wd from step 12: six evaluations in 300 steps, 4 ms a step, where a long run has three)."""
    return config.eval_every


def interleave(
    contenders: list[Contender],
    config: RunConfig,
    steps: int,
    rounds: int,
    device: torch.device,
    progress: Progress | None,
    warmup: int = 3,
) -> None:
    """Time the contenders in alternating blocks, so that all see the same machine load; the `warmup`
    steps before (where compiling happens) are timed apart, into `warmup_seconds`."""
    block = max(1, steps // rounds)
    task = progress.add_task("bench", total=len(contenders) * (block * rounds + warmup)) if progress else None
    for contender in contenders:
        contender.advance(config, warmup, device)
        contender.warmup_seconds, contender.seconds, contender.step = contender.seconds, 0.0, 0
        if progress is not None:
            progress.advance(task, warmup)
    for _ in range(rounds):
        for contender in contenders:
            contender.advance(config, block, device)
            if progress is not None:
                progress.advance(task, block)


VARIANTS = (("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True))  # (precision, compile)


def variant_name(precision: str, compile: bool) -> str:
    return precision + (" + compile" if compile else "")


def bench_speed(
    config: RunConfig,
    steps: int,
    rounds: int,
    progress: Progress | None = None,
    variants: Sequence[tuple[str, bool]] = VARIANTS,
) -> dict[str, Any]:
    """Steps/s of the engine in each (precision, compile) variant and of the reference loop (eager fp32),
    interleaved in `rounds` blocks; each engine also against the fp32 roofline of its step's matrix
    products (on the CPU), and its warm-up (compiling, for a compiled one) timed apart."""
    device = bench_device(config)
    with tempfile.TemporaryDirectory() as scratch:
        engines = []
        for precision, compile in variants:
            name = variant_name(precision, compile)
            variant = config.replace(precision=precision, compile=compile)
            engines.append(engine_contender(name, SeedRun(variant, RunDir(f"{scratch}/{len(engines)}"), device)))
        data = SeedRun(config, RunDir(f"{scratch}/data"), device).data
        everyone = [*engines, reference_contender(config, data, device)]
        for contender in everyone:
            contender.offset = steady_offset(config)
        interleave(everyone, config, steps, rounds, device, progress, warmup_steps(config, data.n_train))
        plain = config.replace(precision="fp32", compile=False)
        probe = engine_contender("probe", SeedRun(plain, RunDir(f"{scratch}/probe"), device))
        limit = step_roofline(lambda: probe.train_step(1)) if device.type == "cpu" else {}
    reference = everyone[-1].step / everyone[-1].seconds
    rows = []
    for engine in engines:
        rate = engine.step / engine.seconds
        rows.append({
            "variant": engine.name,
            "steps_per_s": rate,
            "speedup": rate / reference,
            **({"share_of_fp32_roofline": rate / limit["roofline_steps_per_s"]} if limit else {}),
            "warmup_s": engine.warmup_seconds,
            **({"peak_cuda_mib": engine.peak_cuda_bytes / 2**20} if device.type == "cuda" else {}),
        })  # fmt: skip
    return {
        "mode": "speed",
        **runtime_info(device),
        "config": _shown(config),
        "steps_timed": everyone[-1].step,
        "warmup_steps": warmup_steps(config, data.n_train),
        "first_timed_step": steady_offset(config) + warmup_steps(config, data.n_train) + 1,
        "reference_steps_per_s": reference,
        "engines": rows,
        **limit,
        "peak_rss_mib": peak_rss_mib(),
    }


def startup_seconds(preset: str, repeats: int = 3) -> dict[str, float]:
    """Whole-process wall seconds (median of `repeats`) of `grokking --help`, `train --dry-run` and a 1-step
    training with its evaluation (time to the first step and its record), each a fresh interpreter."""
    with tempfile.TemporaryDirectory() as scratch:
        commands = {
            "help_s": ["--help"],
            "dry_run_s": ["train", "--preset", preset, "--dry-run"],
            "first_step_s": ["train", "--preset", preset, "--steps", "1", "--run-dir", f"{scratch}/run", "--overwrite"],
        }
        timings = {}
        for key, arguments in commands.items():
            seconds = []
            for _ in range(repeats):
                started = time.perf_counter()
                subprocess.run([sys.executable, "-m", "grokking", *arguments], check=True, capture_output=True)
                seconds.append(time.perf_counter() - started)
            timings[key] = statistics.median(seconds)
    return timings


def bench_seeds(
    config: RunConfig, n_seeds: int, steps: int, rounds: int, progress: Progress | None = None
) -> dict[str, Any]:
    """Aggregate seed-steps/s of `n_seeds` seeds trained together against one seed at a time
    (n sequential runs do n times the work of one at one seed's rate)."""
    device = bench_device(config)
    with tempfile.TemporaryDirectory() as scratch:
        single = SeedRun(config, RunDir(f"{scratch}/single"), device)
        group = SeedStepper([SeedRun(config.replace(seed=s), RunDir(f"{scratch}/{s}"), device) for s in range(n_seeds)])

        def group_val_acc() -> float:
            group.sync_weights()
            return min(evaluate(s.model, s.data)["val_acc"] for s in group.seeds)

        pair = [
            Contender(
                "one seed", ModelStepper(single).train_step, lambda: evaluate(single.model, single.data)["val_acc"]
            ),
            Contender(f"{n_seeds} seeds together", group.train_step, group_val_acc),
        ]
        for contender in pair:
            contender.offset = steady_offset(config)
        interleave(pair, config, steps, rounds, device, progress)
    sequential = pair[0].step / pair[0].seconds
    together = n_seeds * pair[1].step / pair[1].seconds
    return {
        "mode": "seeds",
        **runtime_info(device),
        "config": _shown(config),
        "seeds": n_seeds,
        "steps_timed": pair[0].step,
        "sequential_seed_steps_per_s": sequential,
        "together_seed_steps_per_s": together,
        "speedup": together / sequential,
        "peak_rss_mib": peak_rss_mib(),
        **({"together_peak_cuda_mib": pair[1].peak_cuda_bytes / 2**20} if device.type == "cuda" else {}),
    }


def bench_subnormals(run: RunDir, steps: int, rounds: int, progress: Progress | None = None) -> dict[str, Any]:
    """CPU steps/s from a run's latest checkpoint with subnormal floats flushed to zero (what training
    does) against computed, interleaved; the run dir is only read."""
    device = resolve_device("cpu")
    configure_torch(device)
    if not torch.set_flush_denormal(True):
        raise GrokkingError("this CPU cannot flush subnormal floats to zero, so there is nothing to compare")
    config = resolve(run.read_config())
    flushed, subnormal = (open_run(config, run, device, continuing=True) for _ in range(2))
    pair = [_from_checkpoint("flushed", True, flushed), _from_checkpoint("subnormal", False, subnormal)]
    try:
        interleave(pair, config, steps, rounds, device, progress)
    finally:
        torch.set_flush_denormal(True)
    rates = {c.name: c.step / c.seconds for c in pair}
    return {
        "mode": "subnormals",
        **runtime_info(device),
        "config": _shown(config),
        "run_dir": str(run.path),
        "from_step": flushed.state.step,
        "steps_timed": pair[0].step,
        "flushed_steps_per_s": rates["flushed"],
        "subnormal_steps_per_s": rates["subnormal"],
        "speedup": rates["flushed"] / rates["subnormal"],
        "peak_rss_mib": peak_rss_mib(),
    }


def _from_checkpoint(name: str, flush: bool, seed_run: SeedRun) -> Contender:
    """A contender that continues `seed_run` from its restored step with subnormal flushing on or off."""
    stepper = ModelStepper(seed_run)

    def train_step(step: int) -> None:
        torch.set_flush_denormal(flush)
        stepper.train_step(step)

    return Contender(
        name, train_step, lambda: evaluate(seed_run.model, seed_run.data)["val_acc"], offset=seed_run.state.step
    )


def _shown(config: RunConfig) -> dict[str, Any]:
    shown = ("operation", "p", "batch_size", "d_model", "n_layers", "eval_every", "precision", "compile")
    return {k: getattr(config, k) for k in shown}


def bench_time_to_grok(
    config: RunConfig, seeds: list[int], max_steps: int, progress: Progress | None = None
) -> dict[str, Any]:
    """Wall seconds until validation accuracy ≥ 0.99, per seed, for engine and reference."""
    device = bench_device(config)
    rows = []
    task = progress.add_task("time to grok", total=2 * len(seeds)) if progress else None
    for seed in seeds:
        seeded = config.replace(seed=seed)
        with tempfile.TemporaryDirectory() as scratch:
            for contender in contenders(seeded, device, scratch):
                reached = None
                while contender.step < max_steps and reached is None:
                    accuracy = contender.advance(seeded, seeded.eval_every, device)
                    if accuracy is not None and accuracy >= GENERALIZED:
                        reached = contender.step
                rows.append({"seed": seed, "contender": contender.name, "steps": reached, "seconds": contender.seconds})
                if progress is not None:
                    progress.advance(task)
    return {
        "mode": "time_to_grok",
        **runtime_info(device),
        "max_steps": max_steps,
        "runs": rows,
        "peak_rss_mib": peak_rss_mib(),
    }
