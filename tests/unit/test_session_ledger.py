"""The session ledger: a ledger whose keeper is gone (or whose pid now belongs to another process) is ended
and removed; a live keeper's ledger and one that cannot be read are left alone."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from ssmfab.exceptions import AccessDeniedError
from ssmfab.ledger import SessionLedger, end_orphaned_sessions, process_start


def write(folder: Path, name: str, pid: int, started: str | None, ids: list[str]) -> Path:
    path = folder / f"keeper-{name}.sessions"
    sessions = [{"session_id": i, "instance_id": "i-1", "region": "us-east-1"} for i in ids]
    path.write_text(json.dumps({"pid": pid, "started": started, "sessions": sessions}))
    return path


def gone_pid() -> int:
    done = subprocess.Popen(["true"])
    done.wait()
    return done.pid


def test_only_the_sessions_of_keepers_that_are_gone_are_ended(tmp_path: Path) -> None:
    me = os.getpid()
    live = write(tmp_path, "live", me, process_start(me), ["s-live"])
    dead = write(tmp_path, "dead", gone_pid(), "12345", ["s-1", "s-2"])
    reused = write(tmp_path, "reused", me, "1", ["s-reused"])  # this pid, but not the process that wrote it
    (tmp_path / "keeper-torn.sessions").write_text("{half")
    ended: list[dict[str, Any]] = []
    assert sorted(end_orphaned_sessions(str(tmp_path), ended.append)) == ["s-1", "s-2", "s-reused"]
    assert live.exists() and not dead.exists() and not reused.exists() and (tmp_path / "keeper-torn.sessions").exists()
    assert all(s["region"] == "us-east-1" for s in ended)


def test_a_session_aws_will_not_end_is_let_go_and_the_rest_still_end(tmp_path: Path) -> None:
    path = write(tmp_path, "dead", gone_pid(), "1", ["s-denied", "s-ok"])

    def terminate(session: dict[str, Any]) -> None:
        if session["session_id"] == "s-denied":
            raise AccessDeniedError("not allowed")

    assert end_orphaned_sessions(str(tmp_path), terminate) == ["s-ok"]
    assert not path.exists()


def test_a_ledger_is_rewritten_whole_and_private(tmp_path: Path) -> None:
    ledger = SessionLedger(str(tmp_path / "keeper-x.sessions"))
    ledger.record([{"session_id": "a"}, {"session_id": ""}])
    ledger.record([{"session_id": "b"}])
    data = json.loads(Path(ledger.path).read_text())
    assert data["pid"] == os.getpid() and [s["session_id"] for s in data["sessions"]] == ["b"]
    assert os.stat(ledger.path).st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["keeper-x.sessions"]
    ledger.remove()
    assert not list(tmp_path.iterdir())
