"""The audit log's caller lookup runs beside the run: records wait for it, a failed lookup says "unknown", a
finished run leaves no thread behind and an interrupted one does not wait for it."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from ssmfab import cli
from ssmfab.audit import AuditLog, read_entries
from ssmfab.client import Client
from ssmfab.config import AuditSettings, Settings
from ssmfab.exceptions import CredentialsError


def lookup_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "ssmfab-audit-caller"]


def test_records_wait_for_the_callers_arn(tmp_path: Path) -> None:
    log = AuditLog(path=tmp_path / "audit.jsonl", version="1")
    answer = threading.Event()

    def slow_lookup() -> str:
        answer.wait(5)
        return "arn:aws:iam::123456789012:user/ops"

    log.look_up_caller(slow_lookup)
    threading.Timer(0.05, answer.set).start()
    entry = log.record(instance_id="i-0123456789abcdef0", action="run", detail="true")
    assert entry["caller"] == "arn:aws:iam::123456789012:user/ops"
    assert json.loads((tmp_path / "audit.jsonl").read_text())["caller"] == entry["caller"]
    assert lookup_threads() == []


def test_a_failed_lookup_leaves_the_caller_unknown_and_settle_ends_the_thread(tmp_path: Path) -> None:
    log = AuditLog(path=tmp_path / "audit.jsonl", version="1")

    def refused() -> str:
        raise CredentialsError("no credentials")

    log.look_up_caller(refused)
    log.settle()  # a run that recorded nothing still ends the lookup
    assert lookup_threads() == []
    assert log.record(action="run")["caller"] == "unknown"


def test_an_interrupted_run_does_not_wait_for_the_lookup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The STS call stands in for one stuck on an unreachable endpoint (botocore would retry for minutes).
    release = threading.Event()
    monkeypatch.setattr(cli, "caller_arn", lambda client: release.wait(30) and "arn:late")
    client = Client(Settings(audit=AuditSettings(path=str(tmp_path / "audit.jsonl"))))
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt), cli.audit_trail(client) as audit:
            assert audit is not None
            raise KeyboardInterrupt
        assert time.monotonic() - started < 5
        [lookup] = lookup_threads()
        assert lookup.daemon  # ends with the process, whatever the network does
    finally:
        release.set()
        for thread in lookup_threads():
            thread.join(5)


def test_a_local_name_that_is_not_utf8_is_recorded_in_a_utf8_line_and_read_back_as_itself(tmp_path: Path) -> None:
    name = os.fsdecode(b"/srv/caf\xe9/menu.txt")  # what os.fsdecode makes of a Latin-1 name: a lone surrogate
    log = AuditLog(path=tmp_path / "audit.jsonl", version="1")
    log.record(instance_id="i-0123456789abcdef0", action="put", detail=f"{name} -> menu.txt")
    raw = (tmp_path / "audit.jsonl").read_bytes()
    assert raw.decode("utf-8").endswith("\n") and b"\\udce9" in raw  # valid UTF-8: JSON's escape for the byte
    [entry] = read_entries(tmp_path / "audit.jsonl")
    assert entry["detail"] == f"{name} -> menu.txt" and os.fsencode(entry["detail"]).startswith(b"/srv/caf\xe9/")
