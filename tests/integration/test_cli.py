"""The command line as users run it: `ssmfab …` in a process, through the real aws CLI to real sshd."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ssmfab.sandbox import Sandbox

SSMFAB = [sys.executable, "-m", "ssmfab.program"]


def ssmfab(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SSMFAB, *args], capture_output=True, text=True, env=env, timeout=timeout, check=False)


def assert_one_line_error(done: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    assert done.returncode == code, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    error_lines = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1, done.stderr
    for needle in needles:
        assert needle in error_lines[0], error_lines[0]


def test_hosts_table(sandbox_env: dict[str, str]) -> None:
    done = ssmfab("hosts", "--tag", "web", env=dict(os.environ))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["ID", "NAME", "STATE", "SSM", "IP", "TAGS"]
    assert [line.split()[1] for line in lines[2:5]] == ["web-1", "web-2", "web-3"]
    assert all("running" in line and "Online" in line and "Role=web" in line for line in lines[2:5])
    assert "3 reachable, 0 skipped" in done.stdout


def test_run_prefixes_output_and_summarises(sandbox_env: dict[str, str]) -> None:
    done = ssmfab("run", "--tag", "web", "--parallel", "2", "echo hi from $(basename $(dirname $HOME))", env=dict(os.environ))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for name in ("web-1", "web-2", "web-3"):
        assert f"[{name}] hi from {name}" in out
    assert "3 ok, 0 failed" in out


def test_run_exit_code_is_non_zero_when_a_host_fails(sandbox_env: dict[str, str]) -> None:
    done = ssmfab("run", "--name", "web-1", "--name", "db-1", "exit 4", env=dict(os.environ))
    assert_one_line_error(done, 1, "2 of 2 hosts failed", "exited 4")
    assert "0 ok, 2 failed" in done.stdout


@pytest.mark.parametrize(
    ("args", "code", "needles"),
    [
        (["run", "--id", "i-nothex", "true"], 2, ["bad instance id 'i-nothex'"]),
        (["run", "--tag", "Role=", "true"], 2, ["no value given"]),
        (["run", "true"], 2, ["no hosts selected"]),
        (["run", "--tag", "Role=cache", "true"], 3, ["--tag Role=cache", "us-east-1"]),
        (["run", "--tag", "web", "--parallel", "zero", "true"], 2, ["--parallel 'zero'"]),
        (["run", "--tag", "web", "--tunnel", "carrier", "true"], 2, ["tunnel.mode 'carrier'"]),
    ],
)
def test_bad_input_is_one_line_and_non_zero(sandbox_env: dict[str, str], args: list[str], code: int, needles: list[str]) -> None:
    assert_one_line_error(ssmfab(*args, env=dict(os.environ)), code, *needles)


def test_missing_plugin(sandbox_env: dict[str, str], tmp_path: Path) -> None:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if not (Path(p) / "session-manager-plugin").exists())
    done = ssmfab("run", "--name", "web-1", "true", env=env)
    assert_one_line_error(done, 1, "session-manager-plugin not found", "install")


def test_too_old_plugin(sandbox_env: dict[str, str], tmp_path: Path) -> None:
    old = tmp_path / "bin" / "session-manager-plugin"
    old.parent.mkdir()
    old.write_text("#!/bin/sh\necho 1.1.17.0\n")
    old.chmod(0o755)
    env = dict(os.environ, PATH=f"{old.parent}{os.pathsep}{os.environ['PATH']}")
    done = ssmfab("run", "--name", "web-1", "true", env=env)
    assert_one_line_error(done, 1, "1.1.17.0 is too old", ">= 1.1.23.0")


def test_missing_credentials(sandbox_env: dict[str, str]) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    done = ssmfab("hosts", "--tag", "web", env=env)
    assert_one_line_error(done, 1, "no AWS credentials", "aws configure")


def test_unreachable_host_fails_alone_with_exit_1(sandbox: Sandbox, sandbox_env: dict[str, str]) -> None:
    sandbox.stop_host("web-2")
    try:
        done = ssmfab("run", "--tag", "web", "echo ok", env=dict(os.environ))
    finally:
        sandbox.start_host("web-2")
    assert_one_line_error(done, 1, "1 of 3 hosts failed", "web-2")
    assert "[web-1] ok" in done.stdout and "[web-3] ok" in done.stdout
    assert "2 ok, 1 failed" in done.stdout
