"""The machine's processes and cores, as the trainings that share them see them: which cores this
process may use, and whether another process is alive and computing. Plain OS calls: the lock of a
run dir and the thread share read them without loading torch."""

from __future__ import annotations

import os

from grokking.errors import GrokkingError


def available_cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def process_alive(pid: int) -> bool:
    """Whether a process with this pid exists (one of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_computing(pid: int) -> bool:
    """Whether a process with this pid exists and is not stopped (Ctrl-Z, SIGSTOP): a stopped training
    uses no core until it continues, and its share is given back at the others' next evaluation."""
    if not process_alive(pid):
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]  # the field after the command name in parentheses
    except (OSError, IndexError):  # not Linux, or it just ended
        return True
    return state not in ("T", "t")


def check_thread_count(threads: int) -> None:
    if isinstance(threads, bool) or not isinstance(threads, int) or not 0 <= threads <= 1024:  # the API takes any
        raise GrokkingError(f"--threads must be 0 (a fair share of the cores) or a count up to 1024 (got {threads})")
