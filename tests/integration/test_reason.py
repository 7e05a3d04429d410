"""--reason: StartSession's Reason in both tunnel modes and through ssh's ProxyCommand, the audit record's
reason, and audit.require_reason refusing to open a session without one. The sandbox's StartSession keeps the
Reason it was given and DescribeSessions shows it, as AWS's does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from ssmfab.sandbox import Sandbox

from .test_cli import assert_one_line_error, ssmfab

#: Everything a shell or ssh's ProxyCommand could misread: quotes, ;, $(), backquotes, % tokens.
HOSTILE_REASON = """INC-42: it's "down"; $(touch /tmp/pwned) `id` 100% %h %p"""


def reasons_by_session(sandbox: Sandbox) -> dict[str, str]:
    ssm = boto3.client("ssm", endpoint_url=sandbox.endpoint, region_name="us-east-1")
    found = {}
    for state in ("Active", "History"):
        for page in ssm.get_paginator("describe_sessions").paginate(State=state):
            found.update({s["SessionId"]: s.get("Reason", "") for s in page["Sessions"]})
    return found


def new_reasons(sandbox: Sandbox, before: dict[str, str]) -> list[str]:
    return [reason for session_id, reason in reasons_by_session(sandbox).items() if session_id not in before]


@pytest.mark.parametrize("tunnel", ["plugin", "cli"])
def test_reason_reaches_start_session_and_the_audit_record(sandbox: Sandbox, sandbox_env: dict[str, str], tunnel: str, tmp_path: Path) -> None:
    before = reasons_by_session(sandbox)
    env = dict(os.environ, SSMFAB_AUDIT_PATH=str(tmp_path / "audit.jsonl"))
    done = ssmfab("run", "--tag", "web", "--tunnel", tunnel, "--reason", HOSTILE_REASON, "true", env=env)
    assert done.returncode == 0, done.stderr
    assert new_reasons(sandbox, before) == [HOSTILE_REASON] * 3
    records = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [r["reason"] for r in records] == [HOSTILE_REASON] * 3
    assert not Path("/tmp/pwned").exists()


@pytest.mark.parametrize("tunnel", ["plugin", "cli"])
def test_shell_passes_the_reason_through_ssh_proxy_command(sandbox: Sandbox, sandbox_env: dict[str, str], tunnel: str) -> None:
    before = reasons_by_session(sandbox)
    done = subprocess.run(
        [sys.executable, "-m", "ssmfab.program", "shell", "web-1", "--tunnel", tunnel, "--reason", HOSTILE_REASON, "--cmd", "echo shell-ok"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "shell-ok" in done.stdout
    assert new_reasons(sandbox, before) == [HOSTILE_REASON]
    assert not Path("/tmp/pwned").exists()


def test_ssmfab_proxy_takes_a_reason(sandbox: Sandbox, sandbox_env: dict[str, str]) -> None:
    before = reasons_by_session(sandbox)
    proxy = f"{sys.executable} -m ssmfab.proxy --reason 'nightly backup check' %h %p"
    done = subprocess.run(
        ["ssh", "-o", f"ProxyCommand={proxy}", "-o", f"UserKnownHostsFile={sandbox_env['SSMFAB_KNOWN_HOSTS']}",
         "-o", "StrictHostKeyChecking=accept-new", "-o", "BatchMode=yes", "-i", sandbox_env["SSMFAB_KEY"],
         "-l", sandbox_env["SSMFAB_USER"], sandbox.host("web-2").instance_id, "echo proxy-ok"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "proxy-ok"
    assert new_reasons(sandbox, before) == ["nightly backup check"]


def test_required_reason_refuses_before_any_session(sandbox: Sandbox, sandbox_env: dict[str, str]) -> None:
    before = reasons_by_session(sandbox)
    env = dict(os.environ, SSMFAB_AUDIT_REQUIRE_REASON="true")
    for args in (["run", "--tag", "web", "true"], ["put", "pyproject.toml", "/tmp/", "--name", "web-1"],
                 ["shell", "web-1", "--cmd", "true"], ["run", "--tag", "web", "--reason", "  ", "true"],
                 ["run", "--tag", "web", "--via", "run-command", "true"]):  # fmt: skip
        assert_one_line_error(ssmfab(*args, env=env), 2, "a reason is required (audit.require_reason): give --reason TEXT")
    proxy = subprocess.run(
        [sys.executable, "-m", "ssmfab.proxy", sandbox.host("web-1").instance_id, "22"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert proxy.returncode == 2 and proxy.stderr.startswith("ssmfab-proxy: a reason is required"), proxy.stderr
    assert len(proxy.stderr.strip().splitlines()) == 1
    assert reasons_by_session(sandbox) == before  # nothing was started
    done = ssmfab("run", "--name", "web-1", "--reason", "INC-7", "true", env=env)
    assert done.returncode == 0, done.stderr
    assert new_reasons(sandbox, before) == ["INC-7"]


@pytest.mark.parametrize("reason", ["two\nlines", "x" * 257])
def test_a_reason_aws_would_refuse_is_refused_first(sandbox_env: dict[str, str], reason: str) -> None:
    env = dict(os.environ, AWS_ENDPOINT_URL="http://127.0.0.1:9")
    assert_one_line_error(ssmfab("run", "--tag", "web", "--reason", reason, "true", env=env), 2, "one line of at most 256 characters")
