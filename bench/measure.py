"""Time one whole process as a user runs it, with the peak memory of everything it starts.

The measured command runs in its own session. Its tree is found through /proc (parent links); processes it
orphans are kept in view by making this process a child subreaper (Linux ``PR_SET_CHILD_SUBREAPER``), so a
ProxyCommand's aws CLI or plugin that outlives its parent is still counted, and then ended with the run.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36
#: How often the process tree is sampled for its resident memory.
SAMPLE_SECONDS = 0.02


@dataclass(frozen=True)
class Measured:
    seconds: float
    peak_mib: float
    returncode: int
    stderr_tail: str


def become_subreaper() -> None:
    """Orphans of measured commands reparent to this process instead of init (Linux only; harmless elsewhere)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _parents() -> dict[int, int]:
    """pid -> parent pid for every live, non-zombie process."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            parents[int(entry)] = int(fields[1])
    return parents


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def tree(root: int, adopted_by: int, foreign: set[int]) -> set[int]:
    """``root`` and its descendants, plus orphans ``adopted_by`` inherited (minus ``foreign`` children)."""
    parents = _parents()
    members = {root} | {pid for pid, parent in parents.items() if parent == adopted_by and pid not in foreign}
    grew = True
    while grew:
        grew = False
        for pid, parent in parents.items():
            if parent in members and pid not in members:
                members.add(pid)
                grew = True
    return {pid for pid in members if pid in parents}


class TreeSampler:
    """A thread summing the resident memory of a process tree every few milliseconds; keeps the peak."""

    def __init__(self, root: int, foreign: set[int]) -> None:
        self.root = root
        self.foreign = foreign
        self.peak_kib = 0
        self.members: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="tree-sampler", daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            members = tree(self.root, os.getpid(), self.foreign)
            self.members |= members
            self.peak_kib = max(self.peak_kib, sum(_rss_kib(pid) for pid in members))
            self._stop.wait(SAMPLE_SECONDS)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _children_of_self() -> set[int]:
    me = os.getpid()
    return {pid for pid, parent in _parents().items() if parent == me}


def _end_leftovers(pids: set[int]) -> None:
    """Kill whatever the measured command left running (plain Fabric leaves its aws processes behind)."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            if os.waitpid(-1, os.WNOHANG) == (0, 0):
                time.sleep(0.01)
        except ChildProcessError:
            break
        if not any(_rss_kib(pid) for pid in pids):
            break


def run_measured(argv: list[str], env: dict[str, str], *, cwd: str | None = None, timeout: float = 900) -> Measured:
    """Run ``argv`` to completion; wall time from spawn to exit, peak RSS of its whole tree."""
    foreign = _children_of_self()
    started = time.perf_counter()
    process = subprocess.Popen(
        argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    with TreeSampler(process.pid, foreign) as sampler:
        try:
            _, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            _, stderr = process.communicate()
        seconds = time.perf_counter() - started
    leftovers = tree(process.pid, os.getpid(), foreign) - {process.pid}
    _end_leftovers(leftovers)
    tail = stderr.decode(errors="replace").strip().splitlines()[-3:]
    return Measured(seconds, sampler.peak_kib / 1024, process.returncode, " | ".join(tail))
