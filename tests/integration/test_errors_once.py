"""Errors that name the real cause, once: fetch-logs that matched nothing, malformed ids, --batch 0,
known-hosts by name, the changed-key hint, output cut to run.output_cap, the README's ssh-config lines."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from ssmfab.sandbox import Sandbox

README = Path(__file__).resolve().parents[2] / "README.md"


def ssmfab(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ssmfab.program", *args], capture_output=True, text=True,
                          env=env or dict(os.environ), timeout=120, check=False)  # fmt: skip


def one_error(done: subprocess.CompletedProcess[str], code: int) -> str:
    assert done.returncode == code, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    [line] = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    return line


def test_fetch_logs_that_matched_nothing_fails_naming_pattern_and_host(sandbox_env: dict[str, str], tmp_path: Path) -> None:
    error = one_error(ssmfab("fetch-logs", "web-1", "--path", "var/log/none-*.log", "--dest", str(tmp_path)), 1)
    assert "web-1" in error and "no file matched var/log/none-*.log" in error
    assert not (tmp_path / "logs").exists()


def test_fetch_logs_refuses_a_malformed_id(sandbox_env: dict[str, str]) -> None:
    error = one_error(ssmfab("fetch-logs", "i-zzz"), 2)
    assert "bad instance id 'i-zzz'" in error


def test_batch_zero_is_refused(sandbox_env: dict[str, str]) -> None:
    error = one_error(ssmfab("run", "--tag", "web", "--batch", "0", "true"), 2)
    assert "--batch 0" in error and "at least 1 host" in error


def test_known_hosts_forget_by_name_says_keys_are_kept_by_id(sandbox_env: dict[str, str]) -> None:
    error = one_error(ssmfab("known-hosts", "--forget", "web-2"), 2)
    assert "pinned by instance id" in error and "ssmfab hosts --name web-2" in error


def test_the_changed_host_key_hint_is_one_command_that_works(sandbox: Sandbox, sandbox_env: dict[str, str]) -> None:
    host = sandbox.host("web-3").instance_id
    assert ssmfab("run", "--id", host, "true").returncode == 0  # pins the key
    sandbox.rotate_host_key("web-3")
    error = one_error(ssmfab("run", "--id", host, "true"), 1)
    assert "HOST KEY CHANGED" in error
    hint = error.split("clear the pin with: ", 1)[1]
    argv = shlex.split(hint)
    assert argv == ["ssmfab", "known-hosts", "--forget", host]
    done = ssmfab(*argv[1:])  # pasted as it is
    assert done.returncode == 0 and "removed 1 key(s)" in done.stdout, done.stderr
    assert ssmfab("run", "--id", host, "true").returncode == 0


def test_json_says_when_output_was_cut_to_the_cap(sandbox_env: dict[str, str]) -> None:
    env = dict(os.environ, SSMFAB_OUTPUT_CAP="1000")
    done = ssmfab("run", "--name", "web-2", "--json", "seq 1 2000", env=env)
    assert done.returncode == 0, done.stderr
    [host] = json.loads(done.stdout)["hosts"]
    assert host["truncated"] is True and host["dropped_characters"]["stdout"] > 0
    done = ssmfab("run", "--name", "web-2", "--json", "echo short", env=env)
    [host] = json.loads(done.stdout)["hosts"]
    assert host["truncated"] is False and host["dropped_characters"] == {"stdout": 0, "stderr": 0}


@pytest.mark.parametrize("mode", ["plugin", "cli"])
def test_readme_ssh_config_proxy_command_is_what_the_command_prints(sandbox_env: dict[str, str], mode: str) -> None:
    done = ssmfab("ssh-config", "--tunnel", mode)
    assert done.returncode == 0, done.stderr
    [printed] = [line.strip() for line in done.stdout.splitlines() if line.strip().startswith("ProxyCommand ")]
    documented = [line.strip() for line in README.read_text().splitlines() if line.strip().startswith("ProxyCommand ")]
    endpoint = os.environ.get("AWS_ENDPOINT_URL", "")
    expected = [
        line.replace("/path/to/python", sys.executable).replace("--region R", "--region us-east-1")
        .replace(" [--profile P]", "").replace(" [--endpoint-url U]", f" --endpoint-url {endpoint}" if "--endpoint-url" in printed else "")
        for line in documented
    ]  # fmt: skip
    assert printed in expected, (printed, expected)
