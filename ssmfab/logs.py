"""fetch-logs: copy log files off instances, compressed on the wire, into <dest>/<instance-id>/<remote path>.

Logs grow while they are read, so each file is first snapshotted remotely into a gzip file in a private
temp folder (the whole file, or its last N lines); the gzip files travel with the verified, atomic
download of ``transfer.get`` and are unpacked locally through a temp file and a rename. Nothing is
written outside <dest>/<instance-id>, and the remote temp folder is removed whatever happens.
"""

from __future__ import annotations

import gzip
import os
import re
import shlex
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from . import transfer
from .config import LogSettings
from .exceptions import ConfigError, TransferError

DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """``90``, ``30m``, ``2h``, ``1d`` to seconds."""
    match = DURATION.match(text)
    if not match:
        raise ConfigError(f"--since {text!r}: expected a duration like 30m, 2h or 1d")
    return float(match.group(1)) * UNIT_SECONDS[match.group(2)]


@dataclass
class LogReport:
    files: int = 0
    bytes: int = 0
    wire_bytes: int = 0
    paths: list[str] = field(default_factory=list)
    #: Patterns that matched nothing on this host (reported, not fatal).
    missing: list[str] = field(default_factory=list)

    def summary(self, label: str) -> str:
        text = f"{label}: {self.files} file(s), {self.bytes} bytes ({self.wire_bytes} on the wire)"
        if self.missing:
            text += f"; nothing matched {', '.join(self.missing)}"
        return text


def local_path_for(root: Path, remote_path: str) -> Path:
    """Where a remote path lands under ``root``; refuses anything that could climb out of it."""
    pure = PurePosixPath(remote_path)
    parts = [p for p in pure.parts if p not in ("/", ".")]
    if not parts or any(p == ".." or "\n" in p or "\0" in p for p in parts):
        raise TransferError(f"refusing remote path {remote_path!r}: it would land outside {root}")
    target = root.joinpath(*parts)
    if not target.resolve().is_relative_to(root.resolve()):
        raise TransferError(f"refusing remote path {remote_path!r}: it would land outside {root}")
    return target


class LogFetcher:
    def __init__(
        self, settings: LogSettings, *, paths: tuple[str, ...] = (), since: float | None = None, lines: int | None = None
    ) -> None:
        if lines is not None and lines < 1:
            raise ConfigError(f"--lines {lines}: expected at least 1")
        self.settings = settings
        self.paths = paths
        self.since = since
        self.lines = lines
        self.dest = Path(settings.dest).expanduser()

    def patterns_for(self, tags: Any) -> list[str]:
        if self.paths:
            return list(self.paths)
        patterns = list(self.settings.paths)
        for selector, extra in self.settings.paths_by_tag.items():
            key, _, value = selector.partition("=")
            if tags.get(key) == value:
                patterns += [p for p in extra if p not in patterns]
        return patterns

    def _select(self, conn: Any, patterns: list[str], report: LogReport) -> list[str]:
        sftp = transfer.open_sftp(conn)
        chosen: list[str] = []
        cutoff = time.time() - self.since if self.since is not None else None
        for pattern in patterns:
            matches = transfer.expand_remote(sftp, pattern, files_only=True)
            if cutoff is not None:
                matches = [m for m in matches if (sftp.stat(m).st_mtime or 0) >= cutoff]
            if not matches:
                report.missing.append(pattern)
            chosen += [m for m in matches if m not in chosen]
        return chosen

    def fetch(self, conn: Any) -> LogReport:
        report = LogReport()
        target = getattr(conn, "target", None)
        instance_id = target.id if target is not None else conn.host
        patterns = self.patterns_for(target.tags if target is not None else {})
        root = self.dest / instance_id
        for pattern in patterns:
            local_path_for(root, pattern)  # refuse `..` and the like before touching the host
        files = self._select(conn, patterns, report)
        if not files:
            label = getattr(conn, "label", None) or instance_id
            raise TransferError(f"{label}: no file matched {', '.join(patterns) or '(no paths configured)'}"
                                + (f" modified within the last {self.since:g}s" if self.since is not None else ""))
        landing = [local_path_for(root, path) for path in files]
        # The local side first: a folder that cannot be made must not leave the remote temp folder behind.
        try:
            root.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".ssmfab-fetch-", dir=root))
        except OSError as exc:
            label = target.label if target is not None else instance_id
            raise TransferError(f"{label}: cannot create local folder {root}: {exc.strerror}; check --dest", label) from None
        try:
            remote_dir = conn.run("mktemp -d", hide=True).stdout.strip()
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        try:
            # gzip reads the file itself (not through a pipe) so a read error fails the command.
            steps = []
            for index, path in enumerate(files):
                snapshot = shlex.quote(f"{remote_dir}/{index}")
                if self.lines:
                    steps.append(f"tail -n {self.lines} -- {shlex.quote(path)} > {snapshot} && gzip -- {snapshot}")
                else:
                    steps.append(f"gzip -c -- {shlex.quote(path)} > {snapshot}.gz")
            script = " && ".join(steps)
            conn.run(script, hide=True)
            for index, (path, local) in enumerate(zip(files, landing)):
                packed = staging / f"{index}.gz"
                got = transfer.get(conn, f"{remote_dir}/{index}.gz", str(packed))
                report.wire_bytes += got.bytes
                report.bytes += self._unpack(packed, local)
                report.files += 1
                report.paths.append(path)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            conn.run(f"rm -rf -- {shlex.quote(remote_dir)}", hide=True, warn=True)
        return report

    @staticmethod
    def _unpack(packed: Path, local: Path) -> int:
        """Decompress to a temp file beside ``local`` and rename it into place; returns the size."""
        local.parent.mkdir(parents=True, exist_ok=True)
        fd, temp_name = tempfile.mkstemp(prefix=f".{local.name}.", suffix=".part", dir=local.parent)
        try:
            with os.fdopen(fd, "wb") as out, gzip.open(packed, "rb") as source:
                shutil.copyfileobj(source, out, 1024 * 1024)
            os.replace(temp_name, local)
        except BaseException:
            Path(temp_name).unlink(missing_ok=True)
            raise
        return local.stat().st_size
