"""Which device a run uses (auto: cuda, then mps, then cpu), the torch settings training needs on it,
and what a run records about the machine."""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from grokking import __version__
from grokking.errors import GrokkingError
from grokking.processes import available_cores, process_computing


def resolve_device(name: str, needs_float64: bool = False) -> torch.device:
    """The device `name` means; refused when it cannot run the config. Changes no global state."""
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
    return device


def configure_torch(device: torch.device) -> None:
    """The process-wide torch settings training relies on; called once when training starts."""
    if device.type == "cpu":
        # Long after memorization without weight decay, the softmax of wrong answers and its gradients
        # fall below 2^-126, where x86 CPUs compute many times slower (subnormal floats). Flushing them
        # to zero loses nothing a sum with normal-sized terms keeps (`grokking bench --subnormals` measures it).
        torch.set_flush_denormal(True)
        # On several threads the backward of indexing (`keys[x]` in the model) adds into its gradient
        # in parallel with atomic adds, in an order that varies from run to run; deterministic mode
        # makes that sum serial, so the same seed gives the same run, bit for bit.
        torch.use_deterministic_algorithms(True)
        # Deterministic mode also fills every new uninitialized tensor with NaN, to expose reads of it:
        # 200 fills a paper_wd step, 4 % of its time. Nothing here reads memory it did not write.
        torch.utils.deterministic.fill_uninitialized_memory = False
        keep_freed_memory()


# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
MMAP_THRESHOLD_MAX = 32 * 2**20  # glibc's ceiling for M_MMAP_THRESHOLD on 64-bit machines


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep the memory a training step frees, for the next step to reuse.

    A CPU step allocates and frees the same activations and gradients (100 KB to 3 MB each) every time.
    glibc hands blocks over its mmap threshold (128 KB at first) back to the kernel when they are freed,
    and trims the heap's free top, so the next step faults the same memory in again, page by page:
    paper_wd took ~370 page faults a step, ~4 % of its time on a 2-core Xeon. With the threshold at its
    ceiling and no trimming, the blocks stay in the heap (3 faults a step). Only where the memory goes
    changes, never a number. False where the C library is not glibc (macOS, musl): nothing is changed."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    settings = ((M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX), (M_TRIM_THRESHOLD, 2**31 - 1), (M_TOP_PAD, 64 * 2**20))
    return all(mallopt(parameter, value) == 1 for parameter, value in settings)


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The context a forward pass runs in: for "bf16", autocast to bfloat16 (matrix products in bf16,
    what autocast keeps in fp32 stays there; weights and their gradients remain fp32); for "fp32", none."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def compiled(function: Callable, device: torch.device) -> Callable:
    """`function` (the forward and loss of one model, or the vectorized loss of many seeds) through
    torch.compile; on CUDA in the "reduce-overhead" mode, which replays the compiled kernels as CUDA graphs
    (no GPU has measured it). Shapes are static: a run has at most two batch sizes (a shorter last batch of
    a pass), each its own graph, where a dynamic graph for the second would run slower kernels. The optimizer
    step stays eager: its learning rate, a Python float that changes every warmup step, would recompile it.
    On the CPU the backward keeps what eager autograd keeps (`saves_what_eager_saves`)."""
    if device.type == "cuda":
        return torch.compile(function, mode="reduce-overhead", dynamic=False)
    return torch.compile(function, dynamic=False, options=saves_what_eager_saves())


def saves_what_eager_saves() -> dict[str, Any]:
    """Inductor options that split the compiled step into forward and backward as eager autograd does
    (`grokking.partition`); empty where the installed torch has no hook for a partitioner."""
    import torch._inductor.config as inductor_config  # the compiler's modules load only when compiling

    if not hasattr(inductor_config, "custom_partitioner_fn"):
        return {}
    from grokking.partition import EagerPartition

    return {"custom_partitioner_fn": EagerPartition()}


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


class ThreadShare:
    """Fair CPU threads for trainings that run side by side on one machine.

    Each training registers itself in a folder of the temp dir (a file named by its pid, holding its
    fixed thread count, or 0 when it takes a share). A training with a share takes the cores that the
    fixed ones leave, divided among the sharing ones, re-read at every evaluation: alone it uses every
    core; two started together get half each instead of fighting over all of them (two 2-thread
    trainings on 2 cores ran at a fifth of their solo speed, two 1-thread ones at two thirds). With a
    fixed `threads` (or OMP_NUM_THREADS) the count never changes and a run repeats bit for bit; with a
    share, the count (and so the last bits of the sums) follows what else is training."""

    def __init__(self, threads: int = 0, folder: Path | None = None):
        omp = os.environ.get("OMP_NUM_THREADS", "")
        self.fixed = threads or (int(omp) if omp.isdigit() else 0)  # the usual way to pin threads counts too
        self.folder = folder or Path(tempfile.gettempdir()) / f"grokking-{os.getuid()}" / "trainings"
        self.entry: Path | None = None

    def __enter__(self) -> ThreadShare:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.entry = self.folder / str(os.getpid())
            self.entry.write_text(str(self.fixed))
        except OSError:  # no shared temp dir: behave as if alone
            self.entry = None
        self.update()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.entry is not None:
            self.entry.unlink(missing_ok=True)

    def others(self) -> list[int]:
        """The thread counts of the other live trainings registered (0: one that takes a share)."""
        if self.entry is None:
            return []
        counts = []
        try:
            for path in self.folder.iterdir():
                if path.name.isdigit() and int(path.name) != os.getpid() and process_computing(int(path.name)):
                    text = path.read_text().strip()
                    counts.append(int(text) if text.isdigit() else 0)
        except OSError:
            return counts
        return counts

    def threads(self) -> int:
        if self.fixed:
            return self.fixed
        others = self.others()
        free = available_cores() - sum(others)
        return max(1, free // (1 + others.count(0)))

    def update(self) -> None:
        """Set torch's thread count to this training's share now."""
        wanted = self.threads()
        if torch.get_num_threads() != wanted:
            torch.set_num_threads(wanted)
