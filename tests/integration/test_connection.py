"""Fabric's API through the SSM tunnel, on real sshd, in both tunnel modes."""

from __future__ import annotations

import hashlib
import os
import re
import socket
import subprocess
import time
from pathlib import Path

import pytest

from ssmfab.client import Client
from ssmfab.exceptions import AuthenticationError, HostKeyError, TargetNotConnectedError
from ssmfab.fleet import fan_out, run_command
from ssmfab.sandbox import Sandbox

from .conftest import active_sessions, tunnel_processes


def host_id(sandbox: Sandbox, name: str) -> str:
    return next(h.instance_id for h in sandbox.hosts if h.name == name)


def connect_soon(port: int) -> socket.socket:
    """Fabric's forward_local binds its listener in a thread after the context is entered; wait for it."""
    deadline = time.monotonic() + 30  # a backstop: it normally listens within milliseconds
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=10)
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_run_reads_stdout_and_exit_code(client: Client, sandbox: Sandbox) -> None:
    [target] = client.targets(names=["web-1"])
    with client.connect(target) as conn:
        result = conn.run("echo hello from $(basename $HOME); exit 3", hide=True, warn=True)
        assert result.stdout.strip() == "hello from home"
        assert result.exited == 3
        # cd and prefix come from Fabric unchanged.
        with conn.cd("/"), conn.prefix("export GREETING=hi"):
            assert conn.run("pwd; echo $GREETING", hide=True).stdout.split() == ["/", "hi"]


def test_put_then_get_is_byte_identical(client: Client, sandbox: Sandbox, tmp_path: Path) -> None:
    payload = os.urandom(3 * 1024 * 1024 + 17)
    local = tmp_path / "payload.bin"
    local.write_bytes(payload)
    with client.connect(host_id(sandbox, "web-2")) as conn:
        conn.put(str(local), "payload.bin")
        remote_sum = conn.run("sha256sum payload.bin", hide=True).stdout.split()[0]
        conn.get("payload.bin", str(tmp_path / "back.bin"))
        conn.run("rm payload.bin")
    assert remote_sum == hashlib.sha256(payload).hexdigest()
    assert (tmp_path / "back.bin").read_bytes() == payload


def test_forward_local_reaches_a_port_behind_the_instance(client: Client, sandbox: Sandbox, sandbox_env: dict[str, str]) -> None:
    # The moto server listens on the "instance's" loopback: reach it through an SSH port forward.
    remote_port = int(sandbox_env["AWS_ENDPOINT_URL"].rsplit(":", 1)[1])
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        local_port = probe.getsockname()[1]
    with client.connect(host_id(sandbox, "db-1")) as conn:
        with conn.forward_local(local_port, remote_port=remote_port, remote_host="127.0.0.1"):
            with connect_soon(local_port) as http:
                http.sendall(b"GET /moto-api/ HTTP/1.0\r\nHost: sandbox\r\n\r\n")
                reply = b""
                while chunk := http.recv(65536):
                    reply += chunk
    assert reply.startswith(b"HTTP/1.") and b" 200 " in reply.split(b"\r\n", 1)[0]


def test_close_ends_tunnel_processes_and_ssm_session(client: Client, sandbox: Sandbox, sandbox_env: dict[str, str]) -> None:
    # Sessions other tests left behind by killing a tunnel outright (as kill -9 would) are not this test's.
    before = {s["SessionId"] for s in active_sessions(sandbox_env)}
    conn = client.connect(host_id(sandbox, "web-3"))
    conn.run("true")
    assert tunnel_processes(sandbox), "a tunnel process should be running while connected"
    assert {s["SessionId"] for s in active_sessions(sandbox_env)} - before
    conn.close()
    assert tunnel_processes(sandbox) == []
    assert {s["SessionId"] for s in active_sessions(sandbox_env)} - before == set()
    conn.close()  # idempotent


def test_host_key_is_pinned_then_a_changed_key_is_refused(sandbox: Sandbox, sandbox_env: dict[str, str]) -> None:
    notes: list[str] = []
    client = Client(notify=notes.append)
    target_id = host_id(sandbox, "web-1")
    with client.connect(target_id) as conn:
        conn.run("true")
    assert len(notes) == 1 and notes[0].startswith(f"{target_id}: first connection, pinned host key")
    with client.connect(target_id) as conn:
        conn.run("true")
    assert len(notes) == 1  # second time: known key, no notice

    known_hosts = Path(sandbox_env["SSMFAB_KNOWN_HOSTS"])
    other_key = "AAAAC3NzaC1lZDI1NTE5AAAAIGd8qvZ2e9Hq4kHqfB3Q1o8x8o0cQyqG0P2e0Xw9ZsJt"
    known_hosts.write_text(f"{target_id} ssh-ed25519 {other_key}\n")
    with pytest.raises(HostKeyError) as err:
        client.connect(target_id).run("true")
    message = str(err.value)
    assert "HOST KEY CHANGED" in message and message.count("SHA256:") == 2
    assert f"ssmfab known-hosts --forget {target_id}" in message


def test_strict_mode_refuses_unpinned_hosts(sandbox: Sandbox, sandbox_env: dict[str, str]) -> None:
    client = Client(strict_host_keys=True)
    with pytest.raises(HostKeyError, match="is not pinned and strict host keys are on"):
        client.connect(host_id(sandbox, "web-1")).run("true")


def test_refused_key_is_one_clear_error(sandbox: Sandbox, sandbox_env: dict[str, str], tmp_path: Path) -> None:
    wrong = tmp_path / "wrong_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(wrong)], check=True)
    client = Client(key=str(wrong), notify=lambda message: None)
    with pytest.raises(AuthenticationError, match="SSH key refused for user") as refused:
        client.connect(host_id(sandbox, "web-1")).run("true")
    assert f"(key: {wrong})" in str(refused.value)  # the file is named though it was loaded once, up front


def test_a_fleet_on_an_rsa_key_reads_it_once(sandbox: Sandbox, sandbox_env: dict[str, str], tmp_path: Path) -> None:
    # RSA keys are what many operators carry; paramiko would read and check one (~130 ms) per connection.
    rsa_key = tmp_path / "id_rsa"
    subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "3072", "-N", "", "-f", str(rsa_key)], check=True)
    sandbox.authorize_key((tmp_path / "id_rsa.pub").read_text())
    client = Client(key=str(rsa_key), notify=lambda message: None)
    targets = client.targets(tags=["Role=web"])
    result = fan_out(targets, client.connect, run_command("echo $((6 * 7))", hide=True), parallel=3)
    assert [host.value.stdout.strip() for host in result.results] == ["42"] * len(targets) == ["42"] * 3
    assert len({id(client.connect(target).connect_kwargs["pkey"]) for target in targets}) == 1


@pytest.mark.parametrize("mode", ["cli", "plugin"])
def test_target_not_connected(mode: str, sandbox: Sandbox, sandbox_env: dict[str, str]) -> None:
    sandbox.set_agent_status("db-1", "ConnectionLost")
    try:
        client = Client(tunnel=mode, attempts=1)
        with pytest.raises(TargetNotConnectedError, match="TargetNotConnected"):
            client.connect(host_id(sandbox, "db-1")).run("true")
    finally:
        sandbox.set_agent_status("db-1", "Online")


@pytest.mark.parametrize("mode", ["cli", "plugin"])
def test_a_flapping_agent_is_retried_until_it_connects(mode: str, sandbox: Sandbox, sandbox_env: dict[str, str]) -> None:
    notes: list[str] = []

    def notify(note: str) -> None:
        # The agent comes back when ssmfab says it will retry: the first attempt has surely been refused,
        # the next one surely finds it Online, however slow the machine.
        notes.append(note)
        if "TargetNotConnected, retrying in" in note:
            sandbox.set_agent_status("db-1", "Online")

    sandbox.set_agent_status("db-1", "ConnectionLost")
    try:
        client = Client(tunnel=mode, attempts=5, retry_delay=0.5, notify=notify)
        with client.connect(host_id(sandbox, "db-1")) as conn:
            assert conn.run("echo back", hide=True).stdout == "back\n"
    finally:
        sandbox.set_agent_status("db-1", "Online")
    retries = [n for n in notes if "TargetNotConnected, retrying in" in n]
    assert len(retries) == 1, notes  # exactly one refusal: the agent was back before the second attempt
    assert re.fullmatch(rf"{host_id(sandbox, 'db-1')}: TargetNotConnected, retrying in 0\.\ds \(attempt 2/5\)", retries[0])
