"""The fault drill: 100 sandbox hosts, 10 failing in six different ways while 90 succeed. The run finishes,
each failure is reported with its own cause, nothing hangs, no process is left behind, and the exit code is 1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ssmfab.sandbox import HostSpec, Sandbox

from .conftest import TUNNEL_PROCESS_MARKERS, processes_matching

HOSTS = 100
#: --timeout: far beyond what a healthy host takes (under a second here, a few on a busy machine), so only
#: the hung hosts reach it. They hang from the first wave of hosts on: their wait overlaps the rest of the run.
TIMEOUT = 20
# host index -> (how it fails, what its report must say)
FAULTS = {
    1: ("command hangs past the timeout", f"timed out after {TIMEOUT}s (--timeout)"),
    2: ("command hangs past the timeout", f"timed out after {TIMEOUT}s (--timeout)"),
    3: ("sshd stopped before the run", "Unable to connect to specified port"),
    17: ("sshd stopped before the run", "Unable to connect to specified port"),
    5: ("sshd killed mid-command", "SSH"),
    28: ("tunnel refused", "TargetNotConnected"),
    41: ("tunnel refused", "TargetNotConnected"),
    52: ("SSH key refused", "SSH key refused"),
    88: ("host key changed", "HOST KEY CHANGED"),
    95: ("host key changed", "HOST KEY CHANGED"),
}


def name(index: int) -> str:
    return f"drill-{index:03d}"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    root = tmp_path_factory.mktemp("drill") / "sandbox"
    box = Sandbox(root).up([HostSpec(name(i), {"Role": "drill"}) for i in range(HOSTS)])
    try:
        yield box
    finally:
        box.down()
    assert processes_matching(str(root)) == []
    assert processes_matching("sleep 600", environ=f"HOME={root}/hosts/") == []  # hung commands went with their hosts


@pytest.mark.parametrize("selector", [["--tag", "Role=drill"], ["--name", "drill-*"]])
def test_run_command_over_a_hundred_hosts(fleet: Sandbox, tmp_path: Path, selector: list[str]) -> None:
    """SSM Run Command instead of SSH: by tag (Targets) or by ids (two SendCommand calls of 50)."""
    env = {**os.environ, **fleet.env(), "SSMFAB_AUDIT_PATH": str(tmp_path / "audit.jsonl")}
    command = 'case "$(basename "$(dirname "$HOME")")" in *0) echo bad >&2; exit 3;; esac; echo ok'
    done = subprocess.run(
        [sys.executable, "-m", "ssmfab.program", "run", *selector, "--via", "run-command", "--parallel", "25", "--json", command],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert (report["ok"], report["failed"]) == (90, 10)
    for host in report["hosts"]:
        if host["name"].endswith("0"):
            assert (host["status"], host["exit_code"], host["stderr"]) == ("failed", 3, "bad\n")
            assert "exit 3 (Run Command)" in host["error"]
        else:
            assert (host["status"], host["exit_code"], host["stdout"]) == ("ok", 0, "ok\n")
    assert len((tmp_path / "audit.jsonl").read_text().splitlines()) == HOSTS


def test_run_command_refuses_ssh_only_options(fleet: Sandbox) -> None:
    env = {**os.environ, **fleet.env()}
    done = subprocess.run(
        [sys.executable, "-m", "ssmfab.program", "run", "--name", "drill-001", "--via", "run-command", "--env", "A=1", "true"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and "--env and --batch work over SSH only" in done.stderr


def test_fault_drill(fleet: Sandbox, tmp_path: Path) -> None:
    env = {**os.environ, **fleet.env()}
    env.update(SSMFAB_KNOWN_HOSTS=str(tmp_path / "known_hosts"), SSMFAB_AUDIT_PATH=str(tmp_path / "audit.jsonl"),
               SSMFAB_TUNNEL_ATTEMPTS="2", SSMFAB_TUNNEL_RETRY_DELAY="0.2")  # fmt: skip
    home = {i: Path(fleet.host(name(i)).folder) / "home" for i in range(HOSTS)}
    pinned = []
    for index, (fault, _) in FAULTS.items():
        host = fleet.host(name(index))
        if fault == "sshd stopped before the run":
            fleet.stop_host(host.name)
        elif fault == "tunnel refused":
            fleet.refuse_sessions(host.name)
        elif fault == "SSH key refused":
            fleet.refuse_client_key(host.name)
        elif fault == "command hangs past the timeout":
            (home[index] / "HANG").touch()
        elif fault == "sshd killed mid-command":
            (home[index] / "SLOW").touch()
        elif fault == "host key changed":
            pinned.append(f"{host.instance_id} {fleet.host_public_key(host.name)}\n")
            fleet.rotate_host_key(host.name)
    Path(env["SSMFAB_KNOWN_HOSTS"]).write_text("".join(pinned))

    def kill_mid_command() -> None:
        # The host's sshd dies once its command has surely started (the file appears); the command itself
        # waits for ever, so only the crash can end it before the timeout.
        started = home[5] / "STARTED"
        deadline = time.monotonic() + 120  # a backstop only; the file normally appears within seconds
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        fleet.crash_host(name(5))

    killer = threading.Thread(target=kill_mid_command)
    killer.start()
    command = "test -e HANG && sleep 600; if test -e SLOW; then touch STARTED; sleep 600; fi; echo done"
    # Nothing hangs: the run ends by itself (the hung hosts are cut at TIMEOUT); 600 s is a backstop only.
    done = subprocess.run(
        [sys.executable, "-m", "ssmfab.program", "run", "--tag", "Role=drill", "--tunnel", "plugin",
         "--parallel", "20", "--timeout", str(TIMEOUT), "--json", command],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )  # fmt: skip
    killer.join()

    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    by_name = {h["name"]: h for h in report["hosts"]}
    assert len(by_name) == HOSTS and report["ok"] == 90 and report["failed"] == 10
    for index, (fault, cause) in FAULTS.items():
        host = by_name[name(index)]
        assert host["status"] == "failed", (fault, host)
        assert cause in host["error"] and name(index) in host["error"], (fault, host["error"])
        assert "\n" not in host["error"]
    assert all(h["status"] == "ok" and h["stdout"] == "done\n" for n, h in by_name.items() if int(n[-3:]) not in FAULTS)
    assert "Traceback" not in done.stderr
    assert "TargetNotConnected, retrying in" in done.stderr  # the retry is visible
    leftovers = processes_matching(*TUNNEL_PROCESS_MARKERS, environ=f"AWS_ENDPOINT_URL={fleet.endpoint}")
    assert leftovers == []
