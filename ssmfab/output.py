"""What people read: host-prefixed live output, tables and run summaries."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import IO, Any

from .fleet import FleetResult
from .targets import Selection, Target


class PrefixedStream:
    """A file-like object that writes whole lines, each prefixed with the host, under a shared lock.

    Fabric hands its out_stream arbitrary chunks and flushes after each one; buffering to line ends keeps
    concurrent hosts' output from interleaving mid-line, so ``flush`` keeps a partial line back too. The
    last line, if the command ended without a newline, is printed by ``end_of_output``.
    """

    def __init__(self, stream: IO[str], prefix: str, lock: threading.Lock, progress: Progress | None = None) -> None:
        self.stream = stream
        self.prefix = prefix
        self.lock = lock
        self.progress = progress
        self._partial = ""

    def _emit(self, lines: list[str]) -> None:
        with self.lock:
            if self.progress is not None:
                self.progress.clear_unlocked()
            self.stream.write("".join(f"{self.prefix}{line}\n" for line in lines))
            self.stream.flush()
            if self.progress is not None:
                self.progress.draw_unlocked()

    def write(self, text: str) -> int:
        self._partial += text
        if "\n" in self._partial:
            *lines, self._partial = self._partial.split("\n")
            self._emit(lines)
        return len(text)

    def flush(self) -> None:
        """Nothing to do: whole lines are written (and flushed) as they complete; a partial line waits for
        its end (printing it now split `1022` into `10` and `22` whenever a read ended mid-line)."""

    def end_of_output(self) -> None:
        """The stream ended: print a last line that had no newline."""
        if self._partial:
            self._emit([self._partial])
            self._partial = ""

    def isatty(self) -> bool:
        return False


class HostStreams:
    """Per-host prefixed stdout/stderr writers, aligned to the longest host name."""

    def __init__(self, targets: Sequence[Target], out: IO[str], err: IO[str], progress: Progress | None = None) -> None:
        self.width = max((len(host_name(t)) for t in targets), default=0)
        self.out, self.err = out, err
        self.progress = progress
        self.lock = progress.lock if progress is not None else threading.Lock()

    def for_target(self, target: Target) -> dict[str, Any]:
        prefix = f"[{host_name(target).ljust(self.width)}] "
        return {
            "out_stream": PrefixedStream(self.out, prefix, self.lock, self.progress),
            "err_stream": PrefixedStream(self.err, prefix, self.lock, self.progress),
        }


def host_name(target: Target) -> str:
    return target.name or target.id


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_tags(tags: dict[str, str] | Any) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(tags.items()) if k != "Name")


def spread_over_scopes(targets: list[Any]) -> bool:
    """Whether the hosts are in more than one account or region (a host known only by its id counts in neither)."""
    return len({t.account for t in targets if t.account}) > 1 or len({t.region for t in targets if t.region}) > 1


def hosts_table(selection: Selection) -> str:
    everyone = [*selection.targets, *(s.target for s in selection.skipped)]
    spread = spread_over_scopes(everyone)
    rows: list[list[object]] = []
    for t in everyone:
        row: list[object] = [t.id, t.name, *([t.account or "-", t.region or "-"] if spread else [])]
        rows.append(row + [t.state or "-", t.ping_status or "-", t.private_ip or "-", format_tags(t.tags)])
    return table(["ID", "NAME"] + (["ACCOUNT", "REGION"] if spread else []) + ["STATE", "SSM", "IP", "TAGS"], rows)


def summary_table(result: FleetResult[Any]) -> str:
    """One row per host: those that ran, those the failure policy kept back, and those the selection matched
    but could not reach (a NOTE column says why they were skipped)."""
    rows = []
    noted = any(r.skipped for r in result.results)
    # A run over several accounts or regions says where each host is.
    spread = spread_over_scopes([r.target for r in result.results])
    for r in result.results:
        exit_code = "-" if r.exit_code is None else r.exit_code
        row: list[object] = [r.target.id, r.target.name]
        if spread:
            row += [r.target.account or "-", r.target.region or "-"]
        row += [r.status, exit_code, "-" if r.skipped or r.unreachable else f"{r.duration:.2f}s"]
        if noted:
            row.append((r.error or "").removeprefix(f"{r.target.label}: ") if r.skipped else "")
        rows.append(row)
    headers = ["HOST", "NAME"] + (["ACCOUNT", "REGION"] if spread else []) + ["STATUS", "EXIT", "TIME"] + (["NOTE"] if noted else [])
    counts = f"{len(result.succeeded)} ok, {len(result.failed)} failed"
    if result.unreachable:
        counts += f", {len(result.unreachable)} skipped"
    if result.not_started:
        counts += f", {len(result.not_started)} not started"
    return f"{table(headers, rows)}\n{counts}"


def command_output(result: Any) -> dict[str, Any]:
    """A command's output for the JSON report, saying whether (and by how much) it was cut to run.output_cap."""
    dropped = dict(getattr(result, "dropped", None) or {})
    return {
        "stdout": result.stdout,
        "stderr": result.stderr,
        "truncated": any(dropped.values()),
        "dropped_characters": {"stdout": dropped.get("stdout", 0), "stderr": dropped.get("stderr", 0)},
    }


def failure_lines(result: FleetResult[Any]) -> list[str]:
    """A FAILED line per cause: hosts that failed the same way share one line."""
    by_cause: dict[str, list[str]] = {}
    for r in result.failed:
        why = (r.error or "failed").removeprefix(f"{r.target.label}: ")
        by_cause.setdefault(why, []).append(r.target.label)
    return [f"FAILED {', '.join(hosts)}: {why}" for why, hosts in by_cause.items()]


def report_dict(result: FleetResult[Any], describe: Any = None) -> dict[str, Any]:
    """A JSON-ready report: one entry per target, never merged, with status, exit code, timing and error (or,
    for a host that did not start, the reason)."""
    hosts = []
    for r in result.results:
        entry: dict[str, Any] = {
            "instance_id": r.target.id,
            "name": r.target.name,
            "account": r.target.account or None,
            "region": r.target.region or None,
            "status": r.status,
            "exit_code": r.exit_code,
            "duration": round(r.duration, 3),
            "error": None if r.skipped else r.error,
        }
        if r.skipped:
            entry["reason"] = (r.error or "").removeprefix(f"{r.target.label}: ")
        if describe is not None and r.value is not None:
            entry.update(describe(r.value))
        hosts.append(entry)
    return {
        "ok": len(result.succeeded),
        "failed": len(result.failed),
        "skipped": len(result.unreachable),
        "not_started": len(result.not_started),
        "hosts": hosts,
    }


class Progress:
    """On a terminal, one self-rewriting status line on stderr; when piped, nothing (lines already say it)."""

    def __init__(self, total: int, stream: IO[str], *, enabled: bool | None = None) -> None:
        self.total = total
        self.stream = stream
        self.enabled = stream.isatty() if enabled is None else enabled
        self.done = 0
        self.failed = 0
        #: Bytes moved by finished hosts (transfers report them; commands do not).
        self.bytes = 0
        #: Bytes uploads are expected to move in all (0: unknown), the bytes moved so far as they move, and
        #: when the first moved: the line then shows them with a rate and an ETA.
        self.expected = 0
        self.moved = 0
        self.since = 0.0
        self._drawn = 0.0
        self.lock = threading.Lock()

    def clear_unlocked(self) -> None:
        if self.enabled:
            self.stream.write("\r\x1b[K")
            self.stream.flush()

    def draw_unlocked(self) -> None:
        if self.enabled:
            moved = f", {self.bytes / 1e6:.1f} MB moved" if self.bytes else ""
            if self.moved:
                moved = ", " + transfer_meter(self.moved, self.expected, time.monotonic() - self.since)
            self.stream.write(f"\r\x1b[K{self.done}/{self.total} hosts done, {self.failed} failed{moved}")
            self.stream.flush()

    def moving(self, count: int) -> None:
        """Bytes moved just now by some host's transfer (from its threads); redrawn at most 4 times a second."""
        with self.lock:
            now = time.monotonic()
            if not self.moved:
                self.since = now
            self.moved += count
            if now - self._drawn >= 0.25:
                self._drawn = now
                self.draw_unlocked()

    def update(self, result: Any) -> None:
        with self.lock:
            self.done += 1
            self.failed += 0 if result.ok else 1
            moved = getattr(getattr(result, "value", None), "bytes", None)
            self.bytes += moved if isinstance(moved, int) else 0
            self.draw_unlocked()

    def close(self) -> None:
        with self.lock:
            self.clear_unlocked()


def transfer_meter(moved: int, expected: int, seconds: float) -> str:
    """``12.5/64.0 MB, 4.1 MB/s, ETA 13 s``: bytes so far (of the expected, when known), rate, time left."""
    rate = moved / seconds if seconds > 0 else 0.0
    text = f"{moved / 1e6:.1f}/{expected / 1e6:.1f} MB" if expected else f"{moved / 1e6:.1f} MB"
    text += f", {rate / 1e6:.1f} MB/s"
    if expected and rate > 0:
        text += f", ETA {max(0.0, expected - moved) / rate:.0f} s"
    return text
