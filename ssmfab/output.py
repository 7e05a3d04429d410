"""What people read: host-prefixed live output, tables and run summaries."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import IO, Any

from .fleet import FleetResult
from .targets import Selection, Target


class PrefixedStream:
    """A file-like object that writes whole lines, each prefixed with the host, under a shared lock.

    Fabric hands its out_stream arbitrary chunks; buffering to line ends keeps concurrent hosts' output
    from interleaving mid-line.
    """

    def __init__(self, stream: IO[str], prefix: str, lock: threading.Lock) -> None:
        self.stream = stream
        self.prefix = prefix
        self.lock = lock
        self._partial = ""

    def write(self, text: str) -> int:
        self._partial += text
        if "\n" in self._partial:
            *lines, self._partial = self._partial.split("\n")
            with self.lock:
                self.stream.write("".join(f"{self.prefix}{line}\n" for line in lines))
                self.stream.flush()
        return len(text)

    def flush(self) -> None:
        if self._partial:
            with self.lock:
                self.stream.write(f"{self.prefix}{self._partial}\n")
                self.stream.flush()
            self._partial = ""

    def isatty(self) -> bool:
        return False


class HostStreams:
    """Per-host prefixed stdout/stderr writers, aligned to the longest host name."""

    def __init__(self, targets: Sequence[Target], out: IO[str], err: IO[str]) -> None:
        self.width = max((len(host_name(t)) for t in targets), default=0)
        self.out, self.err = out, err
        self.lock = threading.Lock()

    def for_target(self, target: Target) -> dict[str, Any]:
        prefix = f"[{host_name(target).ljust(self.width)}] "
        return {
            "out_stream": PrefixedStream(self.out, prefix, self.lock),
            "err_stream": PrefixedStream(self.err, prefix, self.lock),
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


def hosts_table(selection: Selection) -> str:
    rows: list[list[object]] = []
    for target in selection.targets:
        rows.append([target.id, target.name, target.state, target.ping_status, target.private_ip, format_tags(target.tags)])
    for skipped in selection.skipped:
        t = skipped.target
        rows.append([t.id, t.name, t.state or "-", t.ping_status or "-", t.private_ip or "-", format_tags(t.tags)])
    return table(["ID", "NAME", "STATE", "SSM", "IP", "TAGS"], rows)


def skipped_lines(selection: Selection) -> list[str]:
    return [f"skipped {s.target.label}: {s.reason}" for s in selection.skipped]


def summary_table(result: FleetResult[Any]) -> str:
    rows = []
    for r in result.results:
        exit_code = "-" if r.exit_code is None else r.exit_code
        rows.append([r.target.id, r.target.name, r.status, exit_code, f"{r.duration:.2f}s"])
    ok, failed = len(result.succeeded), len(result.failed)
    summary = table(["HOST", "NAME", "STATUS", "EXIT", "TIME"], rows)
    return f"{summary}\n{ok} ok, {failed} failed"
