"""The SSM sessions a keeper holds, written down beside its socket, so that they end even if the keeper cannot.

A keeper that is killed (SIGKILL, the OOM killer, a crash) leaves no plugin behind (their input ends and they
exit) but cannot call TerminateSession: AWS keeps each of its sessions open until SSM's idle timeout (20
minutes by default), visible to admins and counted against the account. So a keeper keeps a ledger of its
sessions (``keeper-<identity>.sessions`` in its private folder, 0600), and whoever comes next ends the
sessions of a ledger whose keeper is gone: the next keeper of any identity when it starts, and
``ssmfab persist --stop``. Each session is ended with the region, profile and endpoint it was opened with.

A ledger's keeper is gone when no live process has the pid and start time it recorded (a reused pid is not
taken for the keeper). A session is written down as soon as it is open, so one opened by the command the keeper
was killed in is there too. (The extra sessions a striped transfer opens for one file are not: they end with
the transfer, or at SSM's idle timeout if the keeper is killed during it.)
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable
from typing import Any

from .exceptions import SSMFabError

LEDGER_SUFFIX = ".sessions"
log = logging.getLogger("ssmfab.keeper")


def process_start(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), None when there is no such live process.
    Where /proc is missing: "" for a live pid (pid reuse cannot be told apart there)."""
    try:
        fields = open(f"/proc/{pid}/stat", "rb").read().rsplit(b")", 1)[-1].split()
    except FileNotFoundError:
        return None
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return ""
        return ""
    if fields[0] == b"Z":
        return None
    return fields[19].decode()


class SessionLedger:
    """One keeper's ledger: ``record`` rewrites it (atomically) with the sessions the keeper holds now."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.pid = os.getpid()
        self.started = process_start(self.pid)

    def record(self, sessions: Iterable[dict[str, Any]]) -> None:
        kept = [s for s in sessions if s.get("session_id")]
        temp = f"{self.path}.{self.pid}.tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump({"pid": self.pid, "started": self.started, "sessions": kept}, out)
        os.replace(temp, self.path)

    def remove(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def orphaned_ledgers(folder: str) -> list[tuple[str, list[dict[str, Any]]]]:
    """(path, sessions) of every ledger in ``folder`` whose keeper is gone."""
    found = []
    for name in sorted(os.listdir(folder)):
        if not (name.startswith("keeper-") and name.endswith(LEDGER_SUFFIX)):
            continue
        path = os.path.join(folder, name)
        try:
            with open(path) as handle:
                ledger = json.load(handle)
            pid, started, sessions = int(ledger["pid"]), ledger.get("started"), list(ledger["sessions"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # being written, or not ours to judge: left as it is
        now = process_start(pid)
        if now is not None and (started is None or now == "" or now == started):
            continue  # its keeper lives
        found.append((path, sessions))
    return found


Terminator = Callable[[dict[str, Any]], None]


def terminate_with_aws(session: dict[str, Any]) -> None:
    """TerminateSession for one recorded session, with the region, profile and endpoint it was opened with."""
    from .aws import aws_context, aws_errors
    from .config import load_settings

    settings = load_settings({
        "aws.region": session.get("region") or None, "aws.profile": session.get("profile") or None,
        "aws.endpoint_url": session.get("endpoint_url") or None,
    })  # fmt: skip
    with aws_errors(f"ending SSM session {session['session_id']}", str(session.get("instance_id") or "")):
        aws_context(settings).ssm().terminate_session(SessionId=session["session_id"])


def end_orphaned_sessions(folder: str, terminate: Terminator = terminate_with_aws) -> list[str]:
    """End the sessions of every ledger whose keeper is gone, then remove the ledger; the session ids ended.
    A session AWS will not end (already over, access denied) is logged and let go: there is no one else to
    retry it, and it ends at SSM's idle timeout anyway."""
    ended = []
    for path, sessions in orphaned_ledgers(folder):
        for session in sessions:
            try:
                terminate(session)
                ended.append(str(session["session_id"]))
            except SSMFabError as exc:
                log.warning("a gone keeper's SSM session %s could not be ended: %s", session.get("session_id"), exc)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    return ended
