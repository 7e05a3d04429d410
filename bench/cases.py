"""The benchmark's rows: each pairs an ssmfab command with the baseline a user would otherwise run, both as
whole processes against the same sandbox, alternated run by run so machine noise hits both alike."""

from __future__ import annotations

import shutil
import statistics
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ssmfab.sandbox import LinkModel, Sandbox

from .measure import Measured, run_measured
from .workloads import sha256_of

#: The seed's ProxyCommand, as AWS documents it.
AWS_PROXY = "aws ssm start-session --target %h --document-name AWS-StartSSHSession --parameters portNumber=%p"
#: The fastest tunnel for OpenSSH: StartSession, then exec the plugin (no aws process alive).
PLUGIN_PROXY = "ssmfab-proxy %h %p"


@dataclass
class Side:
    label: str
    #: Timed runs (nothing watches them): the time is their median.
    runs: list[Measured] = field(default_factory=list)
    #: Runs whose memory was sampled (which slows them): the peak is their median.
    watched: list[Measured] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return statistics.median(r.seconds for r in self.runs)

    @property
    def peak_mib(self) -> float:
        return statistics.median(r.peak_mib for r in self.watched if r.peak_mib is not None)


@dataclass
class Row:
    name: str
    ours: Side
    theirs: Side
    #: What "met" means: ours/theirs time ratio must be <= this (e.g. 0.25 for "4x faster").
    target_ratio: float | None = None
    target_text: str = ""
    #: A memory ceiling for ours (MiB, whole process tree), when the target has one.
    max_peak_mib: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    skipped: str = ""

    @property
    def ratio(self) -> float:
        """Speed of ours relative to theirs: >1 means ssmfab is faster."""
        return self.theirs.seconds / self.ours.seconds

    @property
    def met(self) -> bool | None:
        if self.target_ratio is None or self.skipped:
            return None
        fits = self.max_peak_mib is None or self.ours.peak_mib <= self.max_peak_mib
        return fits and self.ours.seconds / self.theirs.seconds <= self.target_ratio

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "target": self.target_text, "skipped": self.skipped, **self.extra}
        if not self.skipped:
            data |= {
                "ours": _side_dict(self.ours),
                "theirs": _side_dict(self.theirs),
                "speedup": self.ratio,
                "met": self.met,
            }
        return data


def _side_dict(side: Side) -> dict[str, Any]:
    return {
        "label": side.label, "seconds": side.seconds, "peak_mib": side.peak_mib,
        "runs": [asdict(r) for r in side.runs], "memory_runs": [asdict(r) for r in side.watched],
    }  # fmt: skip


#: How many times as many rounds a quick pair gets: on a shared VM a run of one to three seconds varies by a
#: tenth of a second from one run to the next, which three samples cannot median away (under a minute more
#: per row).
QUICK_ROUNDS = 4


class Bench:
    """Everything the rows share: the sandbox, its environment, the tools, scratch space, repeat count."""

    def __init__(self, sandbox: Sandbox, scratch: Path, repeat: int, link: LinkModel) -> None:
        self.sandbox = sandbox
        self.scratch = scratch
        self.repeat = repeat
        self.link = link
        # Cold runs unless a row asks for warm sessions (bench/warm_rows.py): a keeper started inside a measured
        # run would be counted, then ended with it.
        self.env = {**sandbox.env(), "SSMFAB_KNOWN_HOSTS": str(scratch / "known_hosts"), "SSMFAB_PERSIST": "0"}
        self.bin = Path(sys.executable).parent
        self.ssmfab = str(self.bin / "ssmfab")

    def host_home(self, name: str) -> Path:
        return Path(self.sandbox.host(name).folder) / "home"

    def missing(self, *tools: str) -> str:
        """Why a row cannot run here ("" when it can): each absent tool with how to get it."""
        hints = {"ssh": "apt-get install openssh-client", "sftp": "apt-get install openssh-client",
                 "scp": "apt-get install openssh-client", "ssh-keygen": "apt-get install openssh-client",
                 "aws": "pip install awscli"}  # fmt: skip
        path = self.env["PATH"]
        absent = [t for t in tools if shutil.which(t, path=path) is None]
        return "; ".join(f"{t} not found ({hints.get(t, 'install it')})" for t in absent)

    def ssh_options(self, proxy: str) -> list[str]:
        return [
            "-i", self.env["SSMFAB_KEY"],
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
            "-o", "BatchMode=yes", "-o", f"ProxyCommand={proxy}",
        ]  # fmt: skip

    @contextmanager
    def linked(self) -> Iterator[dict[str, str]]:
        """``with bench.linked() as env:`` the sandbox's data channel applies the link model to every session in
        the block (to any plugin); env also tells the stand-in plugin to pace its uploads as AWS's does."""
        with self.sandbox.linked(self.link) as linked_env:
            yield {**self.env, "SSMFAB_SANDBOX_LINK": linked_env.get("SSMFAB_SANDBOX_LINK", self.link.spec())}

    def pair(
        self,
        name: str,
        ours: tuple[str, Callable[[], list[str]]],
        theirs: tuple[str, Callable[[], list[str]]],
        *,
        env: dict[str, str] | None = None,
        before: Callable[[], None] = lambda: None,
        check: Callable[[], None] = lambda: None,
        quick: bool = False,
    ) -> tuple[Side, Side]:
        """One memory-sampled run of each command, then the two alternated ``repeat`` times (theirs first on even
        rounds) for time, unwatched; ``before`` resets the destination, ``check`` verifies the result of every run
        (a fast wrong answer does not count). The sampled runs also warm the host and the page cache. ``quick``:
        a pair of runs that take one to three seconds, alternated QUICK_ROUNDS times as often."""
        sides = Side(ours[0]), Side(theirs[0])
        commands = ours[1], theirs[1]
        rounds = self.repeat * (QUICK_ROUNDS if quick else 1)
        timed = [which for round_ in range(rounds) for which in ((1, 0) if round_ % 2 == 0 else (0, 1))]
        for which, watch in [(1, True), (0, True)] + [(which, False) for which in timed]:
            before()
            measured = run_measured(commands[which](), env or self.env, sample_memory=watch)
            if measured.returncode != 0:
                raise RowFailed(f"{sides[which].label} failed (exit {measured.returncode}): {measured.stderr_tail[-300:]}")
            check()
            (sides[which].watched if watch else sides[which].runs).append(measured)
            what = f"memory {measured.peak_mib:5.0f} MiB" if measured.peak_mib is not None else "timed"
            print(f"  {name:<34} {sides[which].label:<34} {measured.seconds:7.2f} s  {what}", flush=True)
        return sides


class RowFailed(Exception):
    """A command of a row failed or produced a wrong result: the row reports it instead of a time."""


def verify(path: Path, digest: str) -> None:
    if not path.is_file() or sha256_of(path) != digest:
        raise RowFailed(f"{path.name}: missing or corrupt after the transfer")


def remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
