"""The Session Manager data channel of the sandbox, through AWS's own session-manager-plugin and through the
sandbox's stand-in, side by side: the plugin is the judge of the service, and the stand-in must behave as
AWS's does wherever a test can see it. AWS's plugin runs when the test run names one (``--plugin PATH`` or
``SSMFAB_SANDBOX_PLUGIN``); its cases are skipped otherwise, saying so.

Faults are driven by the service's events (the first StartSession, a resume refused, ...), never by a clock:
timeouts below are safety nets against a hang, not schedules."""

from __future__ import annotations

import hashlib
import json
import os
import select
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from ssmfab.client import Client
from ssmfab.exceptions import TransferError
from ssmfab.sandbox import Sandbox
from ssmfab.sandbox import datachannel as dc
from ssmfab.sandbox.plugin import WebSocket
from ssmfab.transfer import get, put

from .conftest import session_status

REAL_PLUGIN_NAME = "session-manager-plugin"
#: A safety net against a hang (never a schedule).
PATIENCE = 120


@pytest.fixture
def ssm(sandbox_env: dict[str, str]) -> object:
    return boto3.client("ssm", endpoint_url=sandbox_env["AWS_ENDPOINT_URL"], region_name="us-east-1")


@pytest.fixture(autouse=True)
def no_faults_left(sandbox: Sandbox) -> Iterator[None]:
    yield
    for host in sandbox.hosts:
        sandbox.clear_faults(host.name)


def start_session(ssm: object, sandbox: Sandbox, name: str) -> tuple[dict[str, str], dict[str, object]]:
    request = {"Target": sandbox.host(name).instance_id, "DocumentName": "AWS-StartSSHSession", "Parameters": {"portNumber": ["22"]}}
    response = ssm.start_session(**request)  # type: ignore[attr-defined]
    return {k: response[k] for k in ("SessionId", "TokenValue", "StreamUrl")}, request


class Plugin:
    """One plugin process, called as the aws CLI calls it (the response in an environment variable)."""

    def __init__(self, program: str, env: dict[str, str], session: dict[str, str], request: dict[str, object], argv: list[str] | None = None) -> None:
        self.session_id = session["SessionId"]
        env = {**env, "AWS_SSM_START_SESSION_RESPONSE": json.dumps(session)}
        args = argv if argv is not None else ["AWS_SSM_START_SESSION_RESPONSE", "us-east-1", "StartSession", "", json.dumps(request), env["AWS_ENDPOINT_URL"]]
        self.process = subprocess.Popen(
            [program, *args], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
        )
        self.out = b""

    def read_until(self, marker: bytes) -> bytes:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        while marker not in self.out:
            ready, _, _ = select.select([fd], [], [], PATIENCE)
            assert ready, f"no {marker!r} on the plugin's stdout; so far: {self.out[-300:]!r}"
            chunk = os.read(fd, 65536)
            assert chunk, f"the plugin's stdout ended before {marker!r}: {self.out[-300:]!r}"
            self.out += chunk
        return self.out

    def close_stdin(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.stdin = None

    def finish(self) -> tuple[int, bytes]:
        rest, _ = self.process.communicate(timeout=PATIENCE)
        self.out += rest
        return self.process.returncode, self.out

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, 9)
            self.process.wait()


@pytest.fixture
def plugins() -> Iterator[list[Plugin]]:
    started: list[Plugin] = []
    yield started
    for plugin in started:
        plugin.kill()


def status_of(ssm: Any, session_id: str) -> str:
    return session_status(ssm.meta.endpoint_url, session_id)


def test_terminate_session_closes_the_channel_and_the_plugin_exits_0(
    program: str, sandbox: Sandbox, sandbox_env: dict[str, str], ssm: object, plugins: list[Plugin]
) -> None:
    session, request = start_session(ssm, sandbox, "web-1")
    plugin = Plugin(program, sandbox_env, session, request)
    plugins.append(plugin)
    out = plugin.read_until(b"SSH-2.0-")
    assert out.startswith(f"\nStarting session with SessionId: {plugin.session_id}\n".encode())
    assert status_of(ssm, plugin.session_id) == "Connected"
    ssm.terminate_session(SessionId=plugin.session_id)  # type: ignore[attr-defined]
    plugin.read_until(b"Exiting session")  # the plugin's own words, before finish() closes its stdin
    code, out = plugin.finish()
    assert code == 0
    assert out.endswith(f"\n\nExiting session with sessionId: {plugin.session_id}.\n\n".encode())
    assert status_of(ssm, plugin.session_id) == "Terminated"


def test_stdin_eof_ends_the_plugin_but_not_the_session(
    program: str, sandbox: Sandbox, sandbox_env: dict[str, str], ssm: object, plugins: list[Plugin]
) -> None:
    """As AWS's plugin: EOF on stdin, exit 0, no TerminateSession: the session stays Connected (the caller's job)."""
    session, request = start_session(ssm, sandbox, "web-2")
    plugin = Plugin(program, sandbox_env, session, request)
    plugins.append(plugin)
    plugin.read_until(b"SSH-2.0-")
    plugin.close_stdin()
    code, _ = plugin.finish()
    assert code == 0
    assert not sandbox.events("TerminateSession", session_id=plugin.session_id)
    assert status_of(ssm, plugin.session_id) == "Connected"
    ssm.terminate_session(SessionId=plugin.session_id)  # type: ignore[attr-defined]
    assert status_of(ssm, plugin.session_id) == "Terminated"


def test_a_closed_port_ends_the_session_with_the_agents_reason(
    program: str, sandbox: Sandbox, sandbox_env: dict[str, str], ssm: object, plugins: list[Plugin]
) -> None:
    sandbox.set_faults("db-1", PortClosed=True)
    session, request = start_session(ssm, sandbox, "db-1")
    plugin = Plugin(program, sandbox_env, session, request)
    plugins.append(plugin)
    plugin.read_until(b"Unable to connect")  # before finish(), whose closing of stdin would end the plugin first
    code, out = plugin.finish()
    assert code == 0
    reason = "Unable to connect to specified port: dial tcp 127.0.0.1:22: connect: connection refused"
    assert out.endswith(f"\n\nSessionId: {plugin.session_id} : {reason}\n\n".encode())
    assert status_of(ssm, plugin.session_id) == "Failed"


def test_a_refused_resume_leaves_the_plugin_alive_until_stdin_ends(
    program: str, sandbox: Sandbox, sandbox_env: dict[str, str], ssm: object, plugins: list[Plugin]
) -> None:
    session, request = start_session(ssm, sandbox, "web-3")
    plugin = Plugin(program, sandbox_env, session, request)
    plugins.append(plugin)
    plugin.read_until(b"SSH-2.0-")
    sandbox.set_faults(session_id=plugin.session_id, RefuseResume=True, DropAfterBytes=0)
    sandbox.wait_for_event("ResumeRefused", session_id=plugin.session_id)
    assert plugin.process.poll() is None
    plugin.close_stdin()
    code, _ = plugin.finish()
    assert code == 0
    ssm.terminate_session(SessionId=plugin.session_id)  # type: ignore[attr-defined]


@pytest.mark.parametrize("form", ["4 args, inline JSON", "5 args", "6 args", "7 args, env var"])
def test_every_argument_form_of_the_real_plugin_opens_the_session(
    form: str, program: str, sandbox: Sandbox, sandbox_env: dict[str, str], ssm: object, plugins: list[Plugin]
) -> None:
    session, request = start_session(ssm, sandbox, "web-1")
    inline = json.dumps(session)
    argv = {
        "4 args, inline JSON": [inline, "us-east-1", "StartSession"],
        "5 args": [inline, "us-east-1", "StartSession", ""],
        "6 args": [inline, "us-east-1", "StartSession", "", json.dumps(request)],
        "7 args, env var": None,
    }[form]
    plugin = Plugin(program, sandbox_env, session, request, argv)
    plugins.append(plugin)
    plugin.read_until(b"SSH-2.0-")
    ssm.terminate_session(SessionId=plugin.session_id)  # type: ignore[attr-defined]
    code, _ = plugin.finish()
    assert code == 0


def test_the_stand_in_answers_short_command_lines_as_the_real_one(sandbox: Sandbox, plugin_path: str) -> None:
    programs = [str(sandbox.stand_in_plugin)] + ([plugin_path] if plugin_path else [])
    for argv, code, text in [
        ([], 0, "The Session Manager plugin was installed successfully"),
        (["--version"], 0, ""),
        (["x"], 0, "Unknown operation x."),
        (["x", "y"], 0, "Unknown operation x."),
        (['{"SessionId": "s", "TokenValue": "t", "StreamUrl": "ws://127.0.0.1:9/"}', "us-east-1", "StartSession", "", "{}"], 2, ""),
    ]:
        for found in programs:
            done = subprocess.run([found, *argv], capture_output=True, text=True, timeout=PATIENCE, check=False)
            assert done.returncode == code, (found, argv, done.stdout, done.stderr[-300:])
            assert text in done.stdout, (found, argv, done.stdout)


# -- the service's side, seen on the wire ---------------------------------------------------------------
def open_raw(session: dict[str, str], token: str) -> WebSocket:
    ws = WebSocket.connect(session["StreamUrl"], timeout=PATIENCE)
    ws.sock.settimeout(PATIENCE)
    ws.send(dc.open_data_channel(token, "1.2.677.0"))
    return ws


def next_message(ws: WebSocket) -> dc.Message:
    while True:
        frame = ws.receive()
        if isinstance(frame, bytes):
            return dc.decode(frame)


def test_the_token_is_checked_and_bound_to_its_session(sandbox: Sandbox, ssm: object) -> None:
    first, _ = start_session(ssm, sandbox, "web-1")
    second, _ = start_session(ssm, sandbox, "web-2")
    for token in ("wrong", "", second["TokenValue"]):
        ws = open_raw(first, token)
        with pytest.raises(EOFError, match="invalid token"):
            next_message(ws)
        ws.close()
    assert len(sandbox.events("TokenRefused", session_id=first["SessionId"])) == 3
    ws = open_raw(first, first["TokenValue"])
    assert next_message(ws).payload_type == dc.HANDSHAKE_REQUEST
    ws.close()
    for session in (first, second):
        ssm.terminate_session(SessionId=session["SessionId"])  # type: ignore[attr-defined]


def test_the_agent_acks_duplicates_and_reorders_input(sandbox: Sandbox, ssm: object) -> None:
    """The client's banner in two messages sent in reverse order, one of them twice: sshd must get it whole and
    in order (it answers with its key exchange), and every copy is acknowledged."""
    session, _ = start_session(ssm, sandbox, "web-3")
    ws = open_raw(session, session["TokenValue"])
    request = next_message(ws)
    assert (request.sequence, request.payload_type) == (0, dc.HANDSHAKE_REQUEST)
    ws.send(dc.acknowledgement(request).encode())
    ws.send(dc.stream_message(dc.INPUT_STREAM_DATA, 0, dc.HANDSHAKE_RESPONSE, dc.handshake_response_payload("1.2.677.0", request.payload)).encode())
    acked: list[int] = []
    output = b""
    sent_banner = False
    while b"curve25519" not in output:
        message = next_message(ws)
        assert message.message_type != dc.CHANNEL_CLOSED, f"sshd closed: banner garbled? {message.payload!r}"
        if message.message_type == dc.ACKNOWLEDGE:
            acked.append(dc.acknowledged_sequence(message))
            continue
        ws.send(dc.acknowledgement(message).encode())
        if message.payload_type == dc.HANDSHAKE_COMPLETE and not sent_banner:
            sent_banner = True
            for sequence, part in ((2, b"ssh-test\r\n"), (1, b"SSH-2.0-"), (2, b"ssh-test\r\n")):
                ws.send(dc.stream_message(dc.INPUT_STREAM_DATA, sequence, dc.OUTPUT, part).encode())
        elif message.payload_type == dc.OUTPUT:
            output += message.payload
    assert sorted(set(acked)) == [0, 1, 2] and acked.count(2) == 2
    ws.close()
    ssm.terminate_session(SessionId=session["SessionId"])  # type: ignore[attr-defined]


# -- ssmfab over each plugin ------------------------------------------------------------------------------
def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def through(program: str, sandbox_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Client:
    monkeypatch.setenv("SSMFAB_PLUGIN", program)
    return Client(tunnel="plugin", notify=lambda message: None)


def put_file(client: Client, sandbox: Sandbox, name: str, local: Path, remote: Path) -> None:
    with client.connect(sandbox.host(name).instance_id) as conn:
        put(conn, str(local), str(remote))


def get_file(client: Client, sandbox: Sandbox, name: str, remote: Path, local: Path) -> None:
    with client.connect(sandbox.host(name).instance_id) as conn:
        get(conn, str(remote), str(local))


def test_8_mib_both_ways_byte_identical(through: Client, sandbox: Sandbox, tmp_path: Path) -> None:
    local = tmp_path / "random.bin"
    local.write_bytes(os.urandom(8 << 20))
    remote = Path(sandbox.host("web-1").folder) / "home" / "random-8m.bin"
    put_file(through, sandbox, "web-1", local, remote)
    assert sha256(remote) == sha256(local)
    back = tmp_path / "back.bin"
    get_file(through, sandbox, "web-1", remote, back)
    assert sha256(back) == sha256(local)
    remote.unlink()


@pytest.mark.parametrize("direction", ["put", "get"])
def test_a_websocket_dropped_mid_transfer_completes_verified_or_fails_whole(
    direction: str, through: Client, sandbox: Sandbox, tmp_path: Path
) -> None:
    """AWS's plugin 1.2.677.0 resumes only after read errors; stdin data it cannot send while the websocket is
    down ends it (exit 0, "Failed to send packet"). SSH always has something to send (requests, window
    adjustments), so a drop mid-transfer either resumes or ends the plugin, by timing: either way the file is
    complete and verified, or the host fails in one line with nothing under the final name."""
    name = "web-2"
    home = Path(sandbox.host(name).folder) / "home"
    local, remote = tmp_path / "local.bin", home / f"dropped-{direction}.bin"
    source, dest = (local, remote) if direction == "put" else (remote, local)
    source.write_bytes(os.urandom(8 << 20))
    sandbox.set_faults(name, DropAfterBytes=2 << 20)
    try:
        (put_file if direction == "put" else get_file)(through, sandbox, name, source if direction == "put" else remote, dest if direction == "put" else local)  # type: ignore[operator]
    except TransferError as exc:
        assert "nothing left half-written" in str(exc) and "\n" not in str(exc)
        assert not dest.exists()
    else:
        assert sha256(dest) == sha256(source)
        assert sandbox.events("ResumeSession", name)
    assert sandbox.events("WebSocketDropped", name)
    for leftover in [remote, *home.glob(f".dropped-{direction}.bin.*")]:
        leftover.unlink(missing_ok=True)


def test_a_dropped_websocket_resumes_and_the_sequence_numbers_carry_on(
    program: str, sandbox: Sandbox, sandbox_env: dict[str, str], ssm: object, plugins: list[Plugin]
) -> None:
    """Dropped while the plugin has nothing to send: it calls ResumeSession and reconnects with the new token;
    its next message must carry the next sequence number (the agent would drop a restarted 0 as a duplicate,
    and sshd would never see the client's banner)."""
    session, request = start_session(ssm, sandbox, "web-1")
    plugin = Plugin(program, sandbox_env, session, request)
    plugins.append(plugin)
    plugin.read_until(b"SSH-2.0-")
    sandbox.set_faults(session_id=plugin.session_id, DropAfterBytes=0)
    sandbox.wait_for_event("ResumeSession", session_id=plugin.session_id)
    sandbox.wait_for_event("DataChannelOpened", session_id=plugin.session_id, count=2)
    assert plugin.process.stdin is not None
    plugin.process.stdin.write(b"SSH-2.0-OpenSSH_9.0 resumed\r\n")
    plugin.process.stdin.flush()
    plugin.read_until(b"curve25519")  # sshd's key exchange: it got the banner, in order
    ssm.terminate_session(SessionId=plugin.session_id)  # type: ignore[attr-defined]
    code, _ = plugin.finish()
    assert code == 0


def test_input_never_acknowledged_still_arrives_once(through: Client, sandbox: Sandbox, tmp_path: Path) -> None:
    """The plugin resends its oldest message every 100 ms once overdue; the agent must drop every copy but one."""
    local = tmp_path / "small.bin"
    local.write_bytes(os.urandom(256 << 10))
    remote = Path(sandbox.host("db-1").folder) / "home" / "unacked.bin"
    sandbox.set_faults("db-1", NeverAcknowledge=True)
    put_file(through, sandbox, "db-1", local, remote)
    assert sha256(remote) == sha256(local)
    remote.unlink()


def test_a_slow_session_setup_is_waited_for_by_ssh_through_ssmfab_proxy(
    program: str, sandbox: Sandbox, sandbox_env: dict[str, str], tmp_path: Path
) -> None:
    """OpenSSH waits for the banner while the plugin prints its 'Starting session' line and the service takes
    3 s before the handshake (real sessions take 1-3 s)."""
    sandbox.set_faults("web-1", SetupDelay=3)
    env = {**sandbox_env, "SSMFAB_PLUGIN": program}
    done = subprocess.run(
        ["ssh", "-i", env["SSMFAB_KEY"], "-o", "StrictHostKeyChecking=no", "-o", f"UserKnownHostsFile={tmp_path / 'kh'}",
         "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-o", "ProxyCommand=ssmfab-proxy %h %p",
         f"{sandbox.user}@{sandbox.host('web-1').instance_id}", "echo through"],
        env=env, capture_output=True, text=True, timeout=PATIENCE, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "through"
