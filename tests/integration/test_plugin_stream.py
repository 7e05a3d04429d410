"""What AWS's session-manager-plugin does on the SSH stream, and that ssmfab survives it (both tunnel modes).

AWS's plugin speaks the Session Manager data channel, which this sandbox does not serve yet; ``fake_plugin``
reproduces what ssmfab sees of it: its greeting before the SSH banner, a slow data channel, one that dies
without closing, the agent's refusal printed on the stream, and no TerminateSession when its input ends.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ssmfab.client import Client
from ssmfab.exceptions import SSMFabError
from ssmfab.sandbox import Sandbox

from . import fake_plugin
from .conftest import active_sessions, processes_matching, session_status

#: paramiko allows this long for each line after the first before the SSH banner (Transport._check_banner).
PARAMIKO_LINE_WAIT = 2.0


@dataclass
class FakePlugin:
    control: Path
    path: Path

    def file(self, name: str) -> Path:
        return self.control / name

    def wait_for(self, name: str, bound: float = 60.0) -> None:
        deadline = time.monotonic() + bound
        while not self.file(name).exists():
            assert time.monotonic() < deadline, f"the fake plugin never wrote {name}"
            time.sleep(0.02)


@pytest.fixture
def fake(sandbox: Sandbox, sandbox_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakePlugin]:
    """The fake plugin as ``tunnel.plugin`` and first on PATH (the aws CLI runs ``session-manager-plugin``)."""
    control = tmp_path / "plugin-control"
    control.mkdir()
    (control / "ports.json").write_text(json.dumps({h.instance_id: h.port for h in sandbox.hosts}))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    program = bin_dir / "session-manager-plugin"
    program.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{fake_plugin.__file__}" "$@"\n')
    program.chmod(0o755)
    monkeypatch.setenv("FAKE_PLUGIN_DIR", str(control))
    monkeypatch.setenv("SSMFAB_PLUGIN", str(program))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    yield FakePlugin(control, program)
    leftovers = processes_matching(fake_plugin.__file__, environ=f"FAKE_PLUGIN_DIR={control}")
    assert not leftovers, f"plugin processes outlived the test: {leftovers}"


def host_id(sandbox: Sandbox, name: str) -> str:
    return sandbox.host(name).instance_id


@pytest.mark.parametrize("mode", ["cli", "plugin"])
def test_a_session_slower_than_paramikos_banner_wait_still_connects(
    mode: str, fake: FakePlugin, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_PLUGIN_MODE", "slow")
    client = Client(tunnel=mode, notify=lambda message: None)
    outcome: dict[str, Any] = {}

    def connect_and_run() -> None:
        try:
            with client.connect(host_id(sandbox, "web-1")) as conn:
                outcome["stdout"] = conn.run("echo through", hide=True).stdout
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            outcome["error"] = exc

    worker = threading.Thread(target=connect_and_run)
    worker.start()
    fake.wait_for("greeted")
    # The greeting is on the stream; the data channel comes up later than paramiko would wait for a line.
    time.sleep(PARAMIKO_LINE_WAIT + 0.5)
    fake.file("release").touch()
    worker.join(timeout=120)
    assert not worker.is_alive()
    assert outcome == {"stdout": "through\n"}


@pytest.mark.parametrize("mode", ["cli", "plugin"])
def test_a_session_slower_than_the_connect_timeout_says_so(
    mode: str, fake: FakePlugin, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_PLUGIN_MODE", "slow")  # and never released
    client = Client(tunnel=mode, connect_timeout=1, attempts=1, notify=lambda message: None)
    target = host_id(sandbox, "web-1")
    with pytest.raises(SSMFabError) as failed:
        client.connect(target).run("true", hide=True)
    assert str(failed.value).startswith(f"{target}: no SSH banner through the SSM tunnel within 1 s")
    assert "ssh.connect_timeout" in str(failed.value)


@pytest.mark.parametrize("mode", ["cli", "plugin"])
def test_the_agents_refusal_is_the_hosts_error_line(mode: str, fake: FakePlugin, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_PLUGIN_MODE", "refuse")
    client = Client(tunnel=mode, notify=lambda message: None)
    target = host_id(sandbox, "web-2")
    with pytest.raises(SSMFabError) as failed:
        client.connect(target).run("true", hide=True)
    message = str(failed.value)
    assert "\n" not in message and target in message
    assert fake_plugin.REFUSAL in message
    assert "Starting session" not in message and "Exiting session" not in message


def test_the_cli_tunnel_ends_its_ssm_session(fake: FakePlugin, sandbox: Sandbox, sandbox_env: dict[str, str]) -> None:
    # This plugin, like AWS's, does not end the session when its input ends, and neither does the aws CLI.
    before = {s["SessionId"] for s in active_sessions(sandbox_env)}
    client = Client(tunnel="cli", notify=lambda message: None)
    with client.connect(host_id(sandbox, "web-3")) as conn:
        conn.run("true")
        opened = {s["SessionId"] for s in active_sessions(sandbox_env)} - before
        assert len(opened) == 1
    assert {s["SessionId"] for s in active_sessions(sandbox_env)} - before == set()
    assert session_status(sandbox_env["AWS_ENDPOINT_URL"], opened.pop()) == "Terminated"


def test_a_data_channel_that_dies_mid_command_ends_that_host_only(
    fake: FakePlugin, sandbox: Sandbox, sandbox_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    dying, healthy = sandbox.host("web-1"), sandbox.host("web-2")
    homes = {h.name: Path(h.folder) / "home" for h in (dying, healthy)}
    for home in homes.values():
        for name in ("started", "release"):
            (home / name).unlink(missing_ok=True)
    env = {**os.environ, "FAKE_PLUGIN_MODE": "stall", "SSMFAB_KEEPALIVE_INTERVAL": "0.3", "SSMFAB_KEEPALIVE_COUNT_MAX": "2"}
    command = 'touch started; while [ ! -e release ]; do sleep 0.05; done; echo finished'
    run = subprocess.Popen(
        [sys.executable, "-m", "ssmfab.program", "run", "--id", dying.instance_id, "--id", healthy.instance_id,
         "--tunnel", "plugin", command],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not all((home / "started").exists() for home in homes.values()):
            assert run.poll() is None and time.monotonic() < deadline, "the commands never started"
            time.sleep(0.02)
        fake.file(f"stall-{dying.instance_id}").touch()  # web-1's data channel dies mid-command
        (homes["web-2"] / "release").touch()
        try:
            out, err = run.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(run.pid, signal.SIGKILL)
            run.communicate()
            pytest.fail("ssmfab run hung on a data channel that died")
    finally:
        (homes["web-1"] / "release").touch()  # let the stalled host's command end on the instance
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    assert run.returncode != 0
    assert "Traceback" not in err
    assert "[web-2] finished" in out
    lost = [line for line in (out + err).splitlines() if "SSM session lost" in line]
    assert lost and all("web-1" in line for line in lost)
    assert len(lost) == 1 and lost[0].startswith("error: ")  # one host, one cause: said once, in the error line
    assert not any("web-2" in line for line in lost)


def test_a_quiet_session_that_answers_its_keepalives_is_not_lost(sandbox: Sandbox, sandbox_env: dict[str, str]) -> None:
    # A command silent for many keepalive intervals: sshd answers every keepalive, so the session lives on.
    client = Client(tunnel="plugin", keepalive_interval=0.2, keepalive_count_max=10, notify=lambda message: None)
    release = Path(sandbox.host("db-1").folder) / "home" / "quiet-release"
    release.unlink(missing_ok=True)
    outcome: dict[str, Any] = {}
    with client.connect(host_id(sandbox, "db-1")) as conn:

        def quiet_command() -> None:
            try:
                outcome["stdout"] = conn.run("while [ ! -e quiet-release ]; do sleep 0.05; done; echo still here", hide=True).stdout
            except Exception as exc:  # noqa: BLE001 - reported by the assertion below
                outcome["error"] = exc

        worker = threading.Thread(target=quiet_command)
        worker.start()
        try:
            deadline = time.monotonic() + 60
            while conn.keepalive is None or conn.keepalive.answered < 3:
                assert worker.is_alive() and time.monotonic() < deadline, f"no keepalive answered: {outcome}"
                time.sleep(0.02)
        finally:
            release.touch()
            worker.join(timeout=60)
        assert conn.lost is None
    release.unlink()
    assert outcome == {"stdout": "still here\n"}
