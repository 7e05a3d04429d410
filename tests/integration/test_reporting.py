"""What the report says about every host asked for: named ids that cannot be reached fail, hosts a tag or
name matched but that cannot be reached are listed as skipped with the reason; each failure is said once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from ssmfab.sandbox import Sandbox

NO_SUCH_ID = "i-0123456789abcdef0"


def ssmfab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ssmfab.program", *args], capture_output=True, text=True,
                          env=dict(os.environ), timeout=120, check=False)  # fmt: skip


def error_lines(done: subprocess.CompletedProcess[str]) -> list[str]:
    assert "Traceback" not in done.stderr, done.stderr
    return [line for line in done.stderr.splitlines() if line.startswith("error: ")]


@pytest.fixture
def web3_lost(sandbox: Sandbox, sandbox_env: dict[str, str]) -> Iterator[str]:
    """web-3's SSM agent reports ConnectionLost for the test; yields its instance id."""
    sandbox.set_agent_status("web-3", "ConnectionLost")
    try:
        yield sandbox.host("web-3").instance_id
    finally:
        sandbox.set_agent_status("web-3", "Online")


def test_a_named_id_that_does_not_exist_fails_the_run(sandbox: Sandbox, sandbox_env: dict[str, str]) -> None:
    good = sandbox.host("web-1").instance_id
    done = ssmfab("run", "--id", f"{good},{NO_SUCH_ID}", "true")
    assert done.returncode == 1, (done.stdout, done.stderr)
    rows = {line.split()[0]: line.split() for line in done.stdout.splitlines() if line.startswith("i-")}
    assert rows[good][2] == "ok" and rows[NO_SUCH_ID][1] == "failed", done.stdout
    assert "1 ok, 1 failed" in done.stdout
    [error] = error_lines(done)
    assert "1 of 2 hosts failed" in error and f"{NO_SUCH_ID}: no such instance in us-east-1" in error

    done = ssmfab("run", "--id", f"{good},{NO_SUCH_ID}", "--json", "true")
    assert done.returncode == 1
    report = json.loads(done.stdout)
    by_id = {h["instance_id"]: h for h in report["hosts"]}
    assert (report["ok"], report["failed"], report["skipped"]) == (1, 1, 0)
    assert by_id[NO_SUCH_ID]["status"] == "failed" and "no such instance" in by_id[NO_SUCH_ID]["error"]


def test_a_tag_match_whose_agent_is_lost_is_listed_as_skipped_with_the_reason(web3_lost: str) -> None:
    done = ssmfab("run", "--tag", "web", "true")
    assert done.returncode == 0, done.stderr
    [row] = [line for line in done.stdout.splitlines() if line.startswith(web3_lost)]
    assert row.split()[1:3] == ["web-3", "skipped"] and "SSM agent is ConnectionLost" in row
    assert "2 ok, 0 failed, 1 skipped" in done.stdout

    done = ssmfab("run", "--tag", "web", "--json", "true")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["ok"], report["failed"], report["skipped"]) == (2, 0, 1)
    [lost] = [h for h in report["hosts"] if h["instance_id"] == web3_lost]
    assert lost["status"] == "skipped" and "ConnectionLost" in lost["reason"] and lost["error"] is None


def test_a_named_id_whose_agent_is_lost_fails_the_run(sandbox: Sandbox, web3_lost: str) -> None:
    done = ssmfab("run", "--id", sandbox.host("web-1").instance_id, "--id", web3_lost, "--json", "true")
    assert done.returncode == 1, done.stderr
    [lost] = [h for h in json.loads(done.stdout)["hosts"] if h["instance_id"] == web3_lost]
    assert lost["status"] == "failed" and "ConnectionLost" in lost["error"]


def test_each_failure_is_said_once(sandbox_env: dict[str, str]) -> None:
    # One host, one cause: only the error line says it.
    done = ssmfab("run", "--name", "web-1", "exit 4")
    assert done.returncode == 1
    [error] = error_lines(done)
    assert "1 of 1 hosts failed" in error and "web-1" in error and "exited 4" in error
    assert done.stderr.count("exited 4") == 1, done.stderr
    # Two causes: one FAILED line each, and the error line names the hosts without repeating the causes.
    command = 'if [ "$(basename $(dirname $HOME))" = web-1 ]; then exit 4; else exit 5; fi'
    done = ssmfab("run", "--name", "web-1", "--name", "web-2", command)
    assert done.returncode == 1
    failed = [line for line in done.stderr.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 2 and done.stderr.count("exited 4") == 1 and done.stderr.count("exited 5") == 1, done.stderr
    [error] = error_lines(done)
    assert "2 of 2 hosts failed" in error and "web-1" in error and "web-2" in error and "exited" not in error
