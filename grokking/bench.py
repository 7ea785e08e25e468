"""`grokking bench`: the training engine against a plain reference loop, side by side in one process,
and (on the CPU) against the fp32 roofline of its own matrix products."""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from collections.abc import Callable
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
    reference = ReferenceLoop(config, engine.data, device)
    return [
        Contender("engine", ModelStepper(engine).train_step, lambda: evaluate(engine.model, engine.data)["val_acc"]),
        Contender("reference", reference.train_step, reference.val_acc),
    ]


def peak_rss_mib() -> float:
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / (1024 * 1024) if sys.platform == "darwin" else kib / 1024  # macOS reports bytes


def interleave(
    pair: list[Contender], config: RunConfig, steps: int, rounds: int, device: torch.device, progress: Progress | None
) -> None:
    """Time both contenders in alternating blocks, so both see the same machine load."""
    block = max(1, steps // rounds)
    task = progress.add_task("bench", total=2 * block * rounds) if progress else None
    for contender in pair:  # warm-up, not timed
        contender.advance(config, 3, device)
        contender.seconds, contender.step = 0.0, 0
    for _ in range(rounds):
        for contender in pair:
            contender.advance(config, block, device)
            if progress is not None:
                progress.advance(task, block)


def bench_speed(config: RunConfig, steps: int, rounds: int, progress: Progress | None = None) -> dict[str, Any]:
    """Steps/s of engine and reference, interleaved in `rounds` blocks."""
    device = bench_device(config)
    with tempfile.TemporaryDirectory() as scratch:
        pair = contenders(config, device, scratch)
        interleave(pair, config, steps, rounds, device, progress)
        engine = pair[0]
        limit = step_roofline(lambda: engine.train_step(engine.step + 1)) if device.type == "cpu" else {}
    rates = {c.name: c.step / c.seconds for c in pair}
    return {
        "mode": "speed",
        **runtime_info(device),
        "config": _shown(config),
        "steps_timed": pair[0].step,
        "engine_steps_per_s": rates["engine"],
        "reference_steps_per_s": rates["reference"],
        "speedup": rates["engine"] / rates["reference"],
        **limit,
        **({"engine_share_of_roofline": rates["engine"] / limit["roofline_steps_per_s"]} if limit else {}),
        "peak_rss_mib": peak_rss_mib(),
        **({f"{c.name}_peak_cuda_mib": c.peak_cuda_bytes / 2**20 for c in pair} if device.type == "cuda" else {}),
    }


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
