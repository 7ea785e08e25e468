"""The device layer: torch's settings for repeatable CPU runs, and the fair share of cores among
trainings side by side (ThreadShare)."""

import os
import platform
import signal
import subprocess
import sys
import time

import pytest
import torch
import torch.nn.functional as F

from grokking.config import RunConfig
from grokking.device import ThreadShare, configure_torch, resolve_device
from grokking.model import build_model
from grokking.tasks import build_dataset

from .conftest import torch_threads


def test_cpu_gradients_are_the_same_every_time_on_two_threads():
    """Indexing's backward adds with racing atomics on several CPU threads; training turns on
    deterministic mode so that a seed's run is repeatable bit for bit."""
    torch.use_deterministic_algorithms(False)
    configure_torch(resolve_device("cpu"))
    config = RunConfig(p=47, d_model=64)  # big enough that the gradient sum is split across threads
    data = build_dataset("div", config.p)
    model = build_model(data.layout, config)
    batch = torch.randperm(len(data.targets), generator=torch.Generator().manual_seed(0))[:512]
    gradients = []
    with torch_threads(2):
        for _ in range(20):
            model.zero_grad()
            F.cross_entropy(model(data.inputs[batch]), data.targets[batch]).backward()
            gradients.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert all(torch.equal(g, gradients[0]) for g in gradients)
    assert not torch.utils.deterministic.fill_uninitialized_memory  # its NaN fills cost 4 % of a step


def test_a_stopped_training_leaves_its_share_of_the_cores_until_it_continues(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("grokking.device.available_cores", lambda: 2)
    if not os.path.exists(f"/proc/{os.getpid()}/stat"):
        pytest.skip("process states are read from /proc (Linux)")
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / str(other.pid)).write_text("1")  # another training, pinned to 1 thread
        with torch_threads(torch.get_num_threads()), ThreadShare(folder=tmp_path) as share:
            assert share.threads() == 1
            other.send_signal(signal.SIGSTOP)  # Ctrl-Z
            assert wait_for(lambda: share.threads() == 2)
            other.send_signal(signal.SIGCONT)
            assert wait_for(lambda: share.threads() == 1)
    finally:
        other.kill()
        other.wait()


def wait_for(condition, seconds: float = 10.0) -> bool:
    """Poll `condition` until it holds or `seconds` pass (a signal's effect on another process is not instant)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_trainings_side_by_side_share_the_cores_and_one_alone_takes_them_all(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("grokking.device.available_cores", lambda: 4)
    folder = tmp_path / "trainings"
    with torch_threads(torch.get_num_threads()):
        with ThreadShare(folder=folder) as alone:
            assert alone.threads() == 4 and torch.get_num_threads() == 4
            (folder / str(os.getppid())).write_text("0")  # a second training with a share starts
            (folder / "999999999").write_text("0")  # a dead one's leftover does not count
            alone.update()
            assert alone.threads() == 2 and torch.get_num_threads() == 2
            (folder / str(os.getppid())).write_text("3")  # ... or one pinned to 3 threads
            assert alone.threads() == 1
        assert not (folder / str(os.getpid())).exists()
        with ThreadShare(threads=3, folder=folder) as fixed:
            assert fixed.threads() == 3 and torch.get_num_threads() == 3
            assert (folder / str(os.getpid())).read_text() == "3"  # registered, so others leave it room
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        with ThreadShare(folder=folder) as pinned:
            assert pinned.threads() == 1


PAGE_FAULTS_A_STEP = """
import resource
import torch
import torch.nn.functional as F
from grokking.config import RunConfig
from grokking.device import keep_freed_memory
from grokking.model import build_model
from grokking.tasks import build_dataset
torch.set_num_threads(1)
config = RunConfig(p=47, d_model=128)
data = build_dataset("div", config.p)
model = build_model(data.layout, config)
batch = torch.randperm(len(data.targets), generator=torch.Generator().manual_seed(0))[:512]
def step():
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(data.inputs[batch]), data.targets[batch]).backward()
def faults_a_step():
    for _ in range(3):
        step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        step()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10
default = faults_a_step()
kept = keep_freed_memory()
print(kept, default, faults_a_step())
"""


@pytest.mark.slow
@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the allocator settings are glibc's")
def test_memory_a_step_frees_is_kept_for_the_next_step_instead_of_faulted_in_again():
    """glibc hands big freed blocks back to the kernel, so every training step faulted its activations in
    again page by page (~370 faults a paper_wd step); training keeps them, which takes the faults away."""
    command = [sys.executable, "-c", PAGE_FAULTS_A_STEP]  # glibc's default first, then training's settings
    kept, default, after = subprocess.run(command, capture_output=True, text=True, check=True).stdout.split()
    assert kept == "True"
    assert float(default) > 200  # a few hundred pages of 4 KiB a step
    assert float(after) < float(default) / 5
