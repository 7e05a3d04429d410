"""The audit trail Session Manager cannot keep for SSH sessions: one JSON line per command or transfer.

Each record holds the UTC time, the caller's ARN, the reason given (``--reason``), the instance id and name, the action and what it ran or
moved, the exit code, bytes, duration and ssmfab's version. Values marked secret are redacted before
anything is written. The file is created 0600 and appended to under a lock, so parallel hosts and parallel
runs never interleave within a line. Records can also go to CloudWatch Logs.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .config import AuditSettings
from .exceptions import ConfigError, SSMFabError

REDACTED = "***"
DEFAULT_PATH = AuditSettings().path


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


@dataclass
class AuditLog:
    path: Path
    secrets: tuple[str, ...] = ()
    caller: str = "unknown"
    version: str = ""
    cloudwatch: Any = None
    log_group: str = ""
    log_stream: str = ""
    #: Why the run's sessions were opened (``--reason``); in every record when given.
    reason: str = ""
    _caller_lookup: threading.Thread | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def from_settings(cls, settings: AuditSettings, *, version: str, cloudwatch: Any = None) -> AuditLog:
        path = Path(settings.path).expanduser()
        if settings.path == DEFAULT_PATH:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        elif not path.parent.is_dir():
            raise ConfigError(f"audit log folder {path.parent} does not exist: create it or fix audit.path")
        log = cls(path=path, secrets=settings.secrets, version=version)
        if settings.cloudwatch_log_group and cloudwatch is not None:
            log.cloudwatch, log.log_group = cloudwatch, settings.cloudwatch_log_group
            log.log_stream = f"ssmfab-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{os.getpid()}"
            cloudwatch.create_log_stream(logGroupName=log.log_group, logStreamName=log.log_stream)
        return log

    def look_up_caller(self, lookup: Callable[[], str]) -> None:
        """Find the caller's ARN with ``lookup`` in a thread of its own, beside the run's first connections instead
        of before them (sts:GetCallerIdentity is a round trip: ~13 ms on the sandbox, more to a real region).
        Records wait for it; the caller stays "unknown" if it fails. settle() waits for the thread, which is a
        daemon: a run that is interrupted need not wait for an AWS call to time out before it can exit."""

        def find() -> None:
            with suppress(SSMFabError):
                self.caller = lookup()

        self._caller_lookup = threading.Thread(target=find, name="ssmfab-audit-caller", daemon=True)
        self._caller_lookup.start()

    def settle(self) -> None:
        """Wait for the caller lookup, if one is under way."""
        if self._caller_lookup is not None:
            self._caller_lookup.join()

    def record(self, *, wait_for_caller: bool = True, **fields: Any) -> dict[str, Any]:
        """Append one record. ``wait_for_caller=False`` (an interrupted run) writes at once, with the caller
        "unknown" if its lookup has not answered yet."""
        if wait_for_caller:
            self.settle()
        entry = {
            "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "caller": self.caller,
            **({"reason": redact(self.reason, self.secrets)} if self.reason else {}),
            **{k: redact(v, self.secrets) if isinstance(v, str) else v for k, v in fields.items()},
            "ssmfab": self.version,
        }
        line = json_line(entry) + "\n"
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            raise ConfigError(f"cannot write the audit log {self.path}: {exc.strerror}; fix audit.path") from exc
        with os.fdopen(fd, "ab") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            handle.write(line.encode("utf-8"))
        if self.cloudwatch is not None:
            self.cloudwatch.put_log_events(
                logGroupName=self.log_group,
                logStreamName=self.log_stream,
                logEvents=[{"timestamp": int(time.time() * 1000), "message": line.rstrip("\n")}],
            )
        return entry


def json_line(entry: dict[str, Any]) -> str:
    """``entry`` as one line of JSON that is valid UTF-8 (as a file, a terminal and CloudWatch take it): a local
    name that is not UTF-8 reaches here as lone surrogates (os.fsdecode), written as JSON's \\udcXX escapes, which
    read back as the same string. Everything else stays as it is written, not escaped."""
    return json.dumps(entry, ensure_ascii=False).encode("utf-8", "backslashreplace").decode("utf-8")


def read_entries(path: Path, since_seconds: float | None = None) -> Iterator[dict[str, Any]]:
    """Entries of the log, oldest first, optionally only the recent ones; unreadable lines are skipped."""
    path = path.expanduser()
    if not path.exists():
        return
    cutoff = time.time() - since_seconds if since_seconds is not None else None
    with path.open(encoding="utf-8", errors="replace") as handle:  # written as UTF-8 whatever the locale
        for line in handle:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if cutoff is not None:
                when = datetime.fromisoformat(str(entry.get("time", "")).replace("Z", "+00:00")).timestamp()
                if when < cutoff:
                    continue
            yield entry
