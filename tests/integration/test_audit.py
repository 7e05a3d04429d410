"""The audit trail: one JSON line per host and command or transfer, secrets redacted, file 0600."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def ssmfab(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ssmfab.program", *args], capture_output=True, text=True, env=env, timeout=120, check=False)


@pytest.fixture
def audit_env(sandbox_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    config = tmp_path / "ssmfab.toml"
    config.write_text('[audit]\nsecrets = ["s3cr3t-token"]\n')
    return dict(os.environ, SSMFAB_AUDIT_PATH=str(tmp_path / "audit.jsonl"), SSMFAB_CONFIG=str(config))


def test_every_host_and_command_is_recorded_with_secrets_redacted(audit_env: dict[str, str], tmp_path: Path) -> None:
    done = ssmfab("run", "--tag", "web", "echo deploying with s3cr3t-token; exit 0", env=audit_env)
    assert done.returncode == 0, done.stderr
    done = ssmfab("run", "--name", "db-1", "exit 3", env=audit_env)
    assert done.returncode == 1
    log = tmp_path / "audit.jsonl"
    assert (log.stat().st_mode & 0o777) == 0o600
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(entries) == 4
    assert "s3cr3t-token" not in log.read_text()
    web = [e for e in entries if e["name"].startswith("web-")]
    assert sorted(e["name"] for e in web) == ["web-1", "web-2", "web-3"]
    for entry in web:
        assert entry["detail"] == "echo deploying with ***; exit 0"
        assert (entry["action"], entry["status"], entry["exit_code"]) == ("run", "ok", 0)
        assert entry["caller"].startswith("arn:aws:") and entry["instance_id"].startswith("i-")
        assert entry["time"].endswith("Z") and entry["ssmfab"] and entry["duration"] > 0
    [db] = [e for e in entries if e["name"] == "db-1"]
    assert (db["status"], db["exit_code"]) == ("failed", 3)

    shown = ssmfab("audit", "--since", "1h", env=audit_env)
    assert shown.returncode == 0 and "4 entries" in shown.stdout and "db-1" in shown.stdout


def test_transfers_are_recorded_with_bytes(audit_env: dict[str, str], tmp_path: Path) -> None:
    payload = tmp_path / "payload.txt"
    payload.write_text("x" * 1234)
    assert ssmfab("put", str(payload), "payload.txt", "--name", "web-1", env=audit_env).returncode == 0
    [entry] = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert (entry["action"], entry["bytes"]) == ("put", 1234)


def test_audit_path_in_a_missing_folder_is_a_clear_error(audit_env: dict[str, str], tmp_path: Path) -> None:
    env = dict(audit_env, SSMFAB_AUDIT_PATH=str(tmp_path / "nowhere" / "audit.jsonl"))
    done = ssmfab("run", "--name", "web-1", "true", env=env)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "audit log folder" in done.stderr and "does not exist" in done.stderr


def test_env_values_are_passed_and_redacted(audit_env: dict[str, str], tmp_path: Path) -> None:
    done = ssmfab("run", "--name", "web-1", "--env", "API_TOKEN=env-secret-42", 'test "$API_TOKEN" = env-secret-42 && echo $API_TOKEN', env=audit_env)
    assert done.returncode == 0, done.stderr
    assert "env-secret-42" in done.stdout
    assert "env-secret-42" not in (tmp_path / "audit.jsonl").read_text()
    done = ssmfab("run", "--name", "web-1", "--env", "not a pair", "true", env=audit_env)
    assert done.returncode == 2 and "--env 'not a pair'" in done.stderr


def test_records_are_shipped_to_cloudwatch_logs(audit_env: dict[str, str]) -> None:
    import boto3

    logs = boto3.client("logs", endpoint_url=audit_env["AWS_ENDPOINT_URL"], region_name="us-east-1")
    logs.create_log_group(logGroupName="/ssmfab/audit")
    done = ssmfab("run", "--name", "db-1", "true", env=dict(audit_env, SSMFAB_AUDIT_LOG_GROUP="/ssmfab/audit"))
    assert done.returncode == 0, done.stderr
    [stream] = logs.describe_log_streams(logGroupName="/ssmfab/audit")["logStreams"]
    events = logs.get_log_events(logGroupName="/ssmfab/audit", logStreamName=stream["logStreamName"])["events"]
    [record] = [json.loads(e["message"]) for e in events]
    assert (record["name"], record["action"], record["exit_code"]) == ("db-1", "run", 0)


def entries_of(tmp_path: Path) -> list[dict[str, object]]:
    log = tmp_path / "audit.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_get_deploy_rollback_and_fetch_logs_are_recorded(audit_env: dict[str, str], tmp_path: Path) -> None:
    build = tmp_path / "build"
    build.mkdir()
    (build / "VERSION").write_text("1\n")
    assert ssmfab("run", "--name", "web-2", "mkdir -p var/log && echo hello > var/log/a.log", env=audit_env).returncode == 0
    steps = [
        ("get", ["get", "var/log/a.log", "--dest", str(tmp_path / "got"), "--name", "web-2"]),
        ("deploy", ["deploy", "--name", "web-2", "--artifact", str(build), "--base-dir", "audited"]),
        ("deploy", ["deploy", "--name", "web-2", "--artifact", str(build), "--base-dir", "audited"]),
        ("rollback", ["rollback", "--name", "web-2", "--base-dir", "audited"]),
        ("fetch-logs", ["fetch-logs", "web-2", "--path", "var/log/a.log", "--dest", str(tmp_path / "logs")]),
    ]
    for action, args in steps:
        done = ssmfab(*args, env=audit_env)
        assert done.returncode == 0, (action, done.stderr)
        last = entries_of(tmp_path)[-1]
        assert (last["action"], last["name"], last["status"]) == (action, "web-2", "ok"), last
    got, fetched = entries_of(tmp_path)[1], entries_of(tmp_path)[-1]
    assert got["bytes"] == 6 and got["detail"] == f"var/log/a.log -> {tmp_path / 'got'}"
    assert fetched["bytes"] == 6 and fetched["detail"] == "var/log/a.log"


def test_shell_cmd_is_recorded_with_its_exit_code(audit_env: dict[str, str], tmp_path: Path) -> None:
    done = ssmfab("shell", "web-3", "--cmd", "echo from-shell", env=audit_env)
    assert done.returncode == 0, done.stderr
    done = ssmfab("shell", "web-3", "--cmd", "exit 3", env=audit_env)
    assert done.returncode == 3, done.stderr
    ok, failed = entries_of(tmp_path)
    assert (ok["action"], ok["name"], ok["detail"], ok["status"], ok["exit_code"]) == ("shell", "web-3", "echo from-shell", "ok", 0)
    assert (failed["detail"], failed["status"], failed["exit_code"]) == ("exit 3", "failed", 3)


def test_an_interrupted_run_leaves_a_record(sandbox: object, audit_env: dict[str, str], tmp_path: Path) -> None:
    import signal
    import time

    home = Path(sandbox.host("db-1").folder) / "home"  # type: ignore[attr-defined]
    marker, gate = home / "audit-started", home / "audit-gate"
    marker.unlink(missing_ok=True)
    gate.unlink(missing_ok=True)
    os.mkfifo(gate)
    # The command says it started (a file appears on the host), then blocks reading a FIFO.
    process = subprocess.Popen([sys.executable, "-m", "ssmfab.program", "run", "--name", "db-1", "touch audit-started; cat audit-gate"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=audit_env)  # fmt: skip
    try:
        deadline = time.monotonic() + 120  # a bound for a broken run, not a timing assumption
        while not marker.exists():
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
        try:
            os.close(os.open(gate, os.O_WRONLY | os.O_NONBLOCK))  # lets the remote `cat` end
        except OSError:
            pass
    assert process.returncode != 0
    [entry] = entries_of(tmp_path)
    assert (entry["action"], entry["name"], entry["status"], entry["detail"]) == ("run", "db-1", "interrupted", "touch audit-started; cat audit-gate")


def test_local_names_that_are_not_utf8_are_transferred_audited_and_shown_as_their_bytes(audit_env: dict[str, str], tmp_path: Path) -> None:
    """A local folder named in bytes that are not UTF-8 (Latin-1 from an old archive) is as good a source or
    destination as any, on a stdout that refuses what is not UTF-8 (PYTHONIOENCODING=utf-8, or a UTF-8 locale
    other than C.UTF-8): the audit log stays UTF-8 JSON, and `ssmfab audit` shows the name by its bytes, as `ls`."""
    os.mkdir(os.fsencode(tmp_path) + b"/caf\xe9")
    (Path(os.fsdecode(os.fsencode(tmp_path) + b"/caf\xe9")) / "menu.txt").write_bytes(b"soup\n")
    env = {**audit_env, "PYTHONIOENCODING": "utf-8"}
    shown = {}
    for args in (
        [b"put", b"caf\xe9/menu.txt", b"menu.txt", b"--name", b"web-1"],
        [b"get", b"menu.txt", b"--dest", b"caf\xe9/back", b"--name", b"web-1"],
        [b"audit", b"--since", b"1h"],
        [b"audit", b"--json"],
    ):
        done = subprocess.run([os.fsencode(sys.executable), b"-m", b"ssmfab.program", *args], capture_output=True, env=env,
                              cwd=tmp_path, timeout=120, check=False)  # fmt: skip
        assert done.returncode == 0 and b"Traceback" not in done.stderr, done.stderr
        shown[b" ".join(args[:2])] = done.stdout
    back = Path(os.fsdecode(os.fsencode(tmp_path) + b"/caf\xe9/back"))
    assert [p.read_bytes() for p in back.rglob("menu.txt")] == [b"soup\n"]
    put, got = entries_of(tmp_path)
    assert (put["action"], got["action"]) == ("put", "get")
    assert os.fsencode(got["detail"]) == b"menu.txt -> caf\xe9/back"
    table = shown[b"audit --since"]
    assert b" menu.txt -> caf\xe9/back\n" in table and b"2 entries" in table, table
    assert [json.loads(line) for line in shown[b"audit --json"].splitlines()] == [put, got]
