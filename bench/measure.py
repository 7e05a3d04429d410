"""Time one whole process as a user runs it, or watch the peak memory of everything it starts.

The two are taken in separate runs. Reading a process's smaps_rollup walks its memory under the same lock its
own page faults and mmaps need, so a sampled run is a slower run, and the more so the more memory the process
maps: a 512 MB ssmfab get took 1.95 s alone and 2.70 s sampled every 20 ms (medians of 4), OpenSSH's sftp
1.92 s and 2.07 s. Timed runs are left alone; a sampled run reports memory only.

Memory is the tree's summed PSS (proportional set size: a page shared by several processes is split between
them), so each byte counts once. Summed RSS counted a parent's whole memory again for every child caught
between vfork and exec (they share it): 20-host runs read anywhere from 270 to 700 MiB.

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
from contextlib import nullcontext
from dataclasses import dataclass

PR_SET_CHILD_SUBREAPER = 36
#: How often the process tree is sampled for its resident memory, at most.
SAMPLE_SECONDS = 0.02
#: ... and at least this many times the last sample's own cost apart: the sampler shares the cores with what it
#: measures (a 50-host run has ~250 processes to look at), so it may take a fifth of one core, no more.
SAMPLE_COST_RATIO = 5
_PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


@dataclass(frozen=True)
class Measured:
    seconds: float
    #: Peak memory of the tree, for a sampled run; None for a timed one (nothing watched it).
    peak_mib: float | None
    returncode: int
    stderr_tail: str


def become_subreaper() -> None:
    """Orphans of measured commands reparent to this process instead of init (Linux only; harmless elsewhere)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _read_proc(path: str) -> bytes:
    # Plain os calls: pathlib and text decoding made a sample of 250 processes cost ~3x as much.
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, 4096)
    finally:
        os.close(fd)


def _parents() -> dict[int, int]:
    """pid -> parent pid for every live, non-zombie process."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = _read_proc(f"/proc/{entry}/stat").rsplit(b")", 1)[-1].split(None, 2)
        except OSError:
            continue
        if fields[0] != b"Z":
            parents[int(entry)] = int(fields[1])
    return parents


def _rss_kib(pid: int) -> int:
    """Resident memory of ``pid`` (statm's second field, in pages); 0 once it is gone."""
    try:
        return int(_read_proc(f"/proc/{pid}/statm").split()[1]) * _PAGE_KIB
    except (OSError, ValueError, IndexError):
        return 0


def _pss_kib(pid: int) -> int:
    """``pid``'s share of the memory it uses (smaps_rollup's Pss); its RSS where the kernel lacks smaps_rollup."""
    try:
        rollup = _read_proc(f"/proc/{pid}/smaps_rollup")
    except FileNotFoundError:
        return _rss_kib(pid)
    except OSError:
        return 0
    start = rollup.find(b"\nPss:")
    if start < 0:
        return 0  # a process on its way out has no mappings left
    try:
        return int(rollup[start + 5 :].split(None, 1)[0])
    except (ValueError, IndexError):
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
    """A thread summing the memory (PSS) of a process tree every few milliseconds; keeps the peak."""

    def __init__(self, root: int, foreign: set[int]) -> None:
        self.root = root
        self.foreign = foreign
        self.peak_kib = 0
        self.members: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="tree-sampler", daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.thread_time()
            members = tree(self.root, os.getpid(), self.foreign)
            self.members |= members
            self.peak_kib = max(self.peak_kib, sum(_pss_kib(pid) for pid in members))
            self._stop.wait(max(SAMPLE_SECONDS, SAMPLE_COST_RATIO * (time.thread_time() - started)))

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


def run_measured(
    argv: list[str], env: dict[str, str], *, cwd: str | None = None, timeout: float = 900, sample_memory: bool = False
) -> Measured:
    """Run ``argv`` to completion: wall time from spawn to exit and, with ``sample_memory``, the peak memory of
    its whole tree (whose sampling slows the run: see the module's notes)."""
    foreign = _children_of_self()
    started = time.perf_counter()
    process = subprocess.Popen(
        argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    with TreeSampler(process.pid, foreign) if sample_memory else nullcontext() as sampler:
        try:
            _, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            _, stderr = process.communicate()
        seconds = time.perf_counter() - started
    leftovers = tree(process.pid, os.getpid(), foreign) - {process.pid}
    _end_leftovers(leftovers)
    tail = stderr.decode(errors="replace").strip().splitlines()[-3:]
    peak = sampler.peak_kib / 1024 if sampler is not None else None
    return Measured(seconds, peak, process.returncode, " | ".join(tail))
