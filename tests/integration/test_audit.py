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
