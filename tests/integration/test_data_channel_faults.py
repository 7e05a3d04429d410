"""ssmfab itself (the ``ssmfab`` command, and the library where a process group must be looked at) through a
Session Manager data channel that misbehaves, with AWS's own session-manager-plugin and with the sandbox's
stand-in. The faults are the sandbox service's switches (see ``ssmfab.sandbox.ssmmessages``): a slow session
setup, a channel that goes silent or dies and cannot resume, a StreamUrl nothing answers on, a service that
never acknowledges, an agent that cannot reach port 22. AWS's plugin runs when the test run names one
(``--plugin PATH`` or ``SSMFAB_SANDBOX_PLUGIN``); its cases are skipped otherwise, saying so.

Every wait is for something that happens (a file a command writes, a service event, a process exiting); the
timeouts below are safety nets against a hang, never schedules."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ssmfab.client import Client
from ssmfab.exceptions import SSMFabError
from ssmfab.sandbox import Sandbox
from ssmfab.transfer import get, put
from ssmfab.tunnel import Tunnel, _group_alive

from .conftest import new_active_sessions, session_status
from ..waiting import wait_until

#: A safety net against a hang (never a schedule).
PATIENCE = 120
#: Keepalives short enough that a dead session is noticed in about a second and a half.
QUICK_KEEPALIVES = {"SSMFAB_KEEPALIVE_INTERVAL": "0.5", "SSMFAB_KEEPALIVE_COUNT_MAX": "2"}
#: Longer than paramiko's 2 s wait for each line before the SSH banner (real sessions take 1-3 s to set up).
SLOW_SETUP = 3
#: Big enough for the streamed transfer path (transfer.STREAM_MIN_BYTES) and for a drop well inside it.
TRANSFER_BYTES = 6 << 20
DROP_AFTER = 1 << 20


@pytest.fixture
def env(program: str, sandbox_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """This process and the ``ssmfab`` it starts use ``program``: directly (plugin mode) and as the
    ``session-manager-plugin`` the aws CLI finds first on PATH (cli mode)."""
    bin_dir = tmp_path / "plugin-bin"
    bin_dir.mkdir()
    (bin_dir / "session-manager-plugin").symlink_to(program)
    monkeypatch.setenv("SSMFAB_PLUGIN", program)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return dict(os.environ)


@pytest.fixture(autouse=True)
def no_faults_left(sandbox: Sandbox) -> Iterator[None]:
    yield
    for host in sandbox.hosts:
        sandbox.clear_faults(host.name)


@pytest.fixture
def nothing_left(sandbox_env: dict[str, str], sessions_before: set[str]) -> Iterator[None]:
    """No SSM session the test opened is still active when it ends (tunnel processes: conftest checks them)."""
    yield
    assert new_active_sessions(sandbox_env, sessions_before) == set()


def ssmfab(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``ssmfab ARGS`` in a process group of its own; a hang fails the test (and the group is ended)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "ssmfab.program", *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        out, err = process.communicate(timeout=PATIENCE)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        pytest.fail(f"ssmfab {' '.join(args)} hung; it said: {err[-2000:]}")
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def the_error_line(done: subprocess.CompletedProcess[str], *needles: str) -> str:
    """The run failed with exactly one error line, holding every needle, and no traceback."""
    assert done.returncode != 0, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, done.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def within(seconds: float, action: Callable[[], Any]) -> Any:
    """``action()`` on a thread; its result or exception, or a test failure if it is still running after
    ``seconds`` (a safety net: a hang must fail the test, not the test run)."""
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["result"] = action()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller below
            outcome["error"] = exc

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        pytest.fail(f"still running after {seconds:g} s: a hang")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("result")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def home(sandbox: Sandbox, name: str) -> Path:
    return Path(sandbox.host(name).folder) / "home"


# -- 1. slow session setup ------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["plugin", "cli"])
def test_a_session_slower_than_paramikos_line_wait_connects(
    mode: str, sandbox: Sandbox, env: dict[str, str], nothing_left: None
) -> None:
    """The plugin prints its greeting at once and the service holds the handshake back for 3 s: paramiko alone
    would give up 2 s after the greeting's last line; ssmfab waits up to ssh.connect_timeout."""
    sandbox.set_faults("web-1", SetupDelay=SLOW_SETUP)
    done = ssmfab("run", "--tunnel", mode, "--id", sandbox.host("web-1").instance_id, "echo through", env=env)
    assert done.returncode == 0, done.stderr
    assert "[web-1] through" in done.stdout.splitlines()


@pytest.mark.parametrize("mode", ["plugin", "cli"])
def test_a_session_slower_than_the_connect_timeout_fails_in_one_line(
    mode: str, sandbox: Sandbox, env: dict[str, str], nothing_left: None
) -> None:
    sandbox.set_faults("web-1", SetupDelay=600)
    done = ssmfab(
        "run", "--tunnel", mode, "--id", sandbox.host("web-1").instance_id, "echo through",
        env={**env, "SSMFAB_CONNECT_TIMEOUT": "2"},
    )  # fmt: skip
    the_error_line(done, "web-1", "no SSH banner through the SSM tunnel within 2 s", "ssh.connect_timeout")
    [started] = sandbox.events("StartSession", "web-1")[-1:]
    assert not sandbox.events("HandshakeComplete", session_id=started["SessionId"])  # it never came up
    assert session_status(sandbox.endpoint, started["SessionId"]) == "Terminated"


# -- 2. a data channel that dies mid-command ----------------------------------------------------------------
@pytest.mark.parametrize("death", ["goes silent", "drops and cannot resume"])
def test_a_data_channel_that_dies_mid_command_ends_that_host_in_one_line(
    death: str, sandbox: Sandbox, env: dict[str, str], nothing_left: None
) -> None:
    """No --timeout: the keepalives (short here) notice a channel gone silent; a channel that dropped and could
    not resume ends AWS's plugin without a word. Either way web-1 fails with one "SSM session lost" line and
    web-2, beside it, finishes its command."""
    names = ("web-1", "web-2")
    for name in names:
        for marker in ("started", "release"):
            (home(sandbox, name) / marker).unlink(missing_ok=True)
    command = "touch started; while [ ! -e release ]; do sleep 0.05; done; echo finished"

    def kill_web1_channel_once_both_run() -> None:
        wait_until(lambda: all((home(sandbox, n) / "started").exists() for n in names), "both commands started")
        if death == "goes silent":
            sandbox.set_faults("web-1", BlackHole=True)
        else:
            sandbox.set_faults("web-1", RefuseResume=True, DropAfterBytes=0)
            sandbox.wait_for_event("WebSocketDropped", "web-1")
        (home(sandbox, "web-2") / "release").touch()

    flipper = threading.Thread(target=kill_web1_channel_once_both_run, daemon=True)
    flipper.start()
    try:
        ids = [arg for name in names for arg in ("--id", sandbox.host(name).instance_id)]
        done = ssmfab("run", "--tunnel", "plugin", *ids, command, env={**env, **QUICK_KEEPALIVES})
    finally:
        flipper.join(PATIENCE)
        (home(sandbox, "web-1") / "release").touch()  # the instance's side of web-1's command may end now
    line = the_error_line(done, "web-1", "SSM session lost")
    assert "web-2" not in line
    assert "[web-2] finished" in done.stdout.splitlines()
    assert "[web-1] finished" not in done.stdout


# -- 3. a websocket dropped mid-transfer, resume refused ------------------------------------------------------
@pytest.mark.parametrize("direction", ["put", "get"])
def test_a_transfer_whose_channel_drops_without_resume_leaves_nothing(
    direction: str, sandbox: Sandbox, env: dict[str, str], tmp_path: Path, nothing_left: None
) -> None:
    name = "web-3"
    remote_home = home(sandbox, name)
    final = f"dropped-{direction}.bin"
    source = tmp_path / "source.bin" if direction == "put" else remote_home / final
    source.write_bytes(os.urandom(TRANSFER_BYTES))
    dest = tmp_path / "dest"
    sandbox.set_faults(name, RefuseResume=True, DropAfterBytes=DROP_AFTER)
    target = sandbox.host(name).instance_id
    run_env = {**env, **QUICK_KEEPALIVES}
    try:
        if direction == "put":
            done = ssmfab("put", str(source), final, "--id", target, env=run_env)
        else:
            done = ssmfab("get", final, "--dest", str(dest), "--id", target, env=run_env)
        the_error_line(done, name, "nothing left half-written", "SSM session lost")
        assert sandbox.events("WebSocketDropped", name)
        if direction == "put":
            assert not (remote_home / final).exists()
            # The host's copy program removes its file when its answer cannot reach ssmfab any more: it can
            # only do so once the session is ended and sshd closes the stream, after ssmfab returned.
            wait_until(lambda: not list(remote_home.glob(f".{final}.*")), f"the temporary file of {final} removed on the host")
        else:
            assert not dest.exists() or not [p for p in dest.rglob("*") if not p.is_dir()], sorted(dest.rglob("*"))
        assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".") and "ssmfab" in p.name]
    finally:
        (remote_home / final).unlink(missing_ok=True)


# -- 4. an unreachable StreamUrl ------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["plugin", "cli"])
def test_an_unreachable_stream_url_is_bounded_by_the_connect_timeout(
    mode: str, sandbox: Sandbox, env: dict[str, str], monkeypatch: pytest.MonkeyPatch, nothing_left: None
) -> None:
    """The plugin retries the StreamUrl, then waits forever without a word: ssh.connect_timeout must end it,
    with the plugin's whole process group and the SSM session."""
    sandbox.set_faults("web-2", UnreachableStream=True)
    client = Client(tunnel=mode, connect_timeout=2, notify=lambda message: None)
    opened: list[Tunnel] = []
    factory = client.tunnels
    open_tunnel = factory.open

    def recording_open(target_id: str, label: str | None = None) -> Tunnel:
        tunnel = open_tunnel(target_id, label)
        opened.append(tunnel)
        return tunnel

    monkeypatch.setattr(factory, "open", recording_open)
    target = sandbox.host("web-2").instance_id
    try:
        with pytest.raises(SSMFabError) as failed:
            within(PATIENCE, lambda: client.connect(target).run("true", hide=True))
    finally:
        for tunnel in opened:  # after a hang (the test failed already): do not leave the plugin behind
            tunnel.close()
    message = str(failed.value)
    assert "\n" not in message and target in message
    assert "no SSH banner through the SSM tunnel within 2 s" in message
    [tunnel] = opened
    assert not _group_alive(tunnel.process.pid)  # type: ignore[attr-defined]
    [started] = sandbox.events("StartSession", "web-2")[-1:]
    assert not sandbox.events("DataChannelOpened", session_id=started["SessionId"])  # the URL really was unreachable
    assert session_status(sandbox.endpoint, started["SessionId"]) == "Terminated"


# -- 5. a service that never acknowledges -------------------------------------------------------------------
def test_a_service_that_never_acknowledges_still_moves_every_byte(
    sandbox: Sandbox, env: dict[str, str], tmp_path: Path, nothing_left: None
) -> None:
    """The plugin keeps resending its oldest message (AWS's gives up only after ~5 minutes of it): a command,
    an upload and a download all complete, byte for byte, or the test fails on the safety net."""
    sandbox.set_faults("db-1", NeverAcknowledge=True)
    local, back = tmp_path / "up.bin", tmp_path / "back.bin"
    local.write_bytes(os.urandom(1 << 20))
    remote = home(sandbox, "db-1") / "unacked-both-ways.bin"
    client = Client(tunnel="plugin", notify=lambda message: None)

    def round_trip() -> str:
        with client.connect(sandbox.host("db-1").instance_id) as conn:
            put(conn, str(local), remote.name)
            get(conn, remote.name, str(back))
            return str(conn.run(f"sha256sum {remote.name}", hide=True).stdout)

    try:
        remote_sum = within(PATIENCE, round_trip)
        assert remote_sum.split()[0] == sha256(local) == sha256(back) == sha256(remote)
    finally:
        remote.unlink(missing_ok=True)


# -- 6. the agent cannot reach port 22 -----------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["plugin", "cli"])
def test_the_agents_refusal_is_the_hosts_error_line(mode: str, sandbox: Sandbox, env: dict[str, str], nothing_left: None) -> None:
    sandbox.set_faults("db-1", PortClosed=True)
    done = ssmfab("run", "--tunnel", mode, "--id", sandbox.host("db-1").instance_id, "true", env=env)
    line = the_error_line(done, "db-1", "Unable to connect to specified port")
    assert "Starting session" not in line and "Exiting session" not in line
