"""`ssmfab forward`: local ports to a TCP echo server on the instance (loopback, as every sandbox instance is) and
through it to a "remote host" (another loopback address), over the SSH tunnel and over SSM's own port forwarding
documents with AWS's session-manager-plugin; Ctrl-C ends it with no process or session left."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading

import pytest

from ssmfab.forward import parse_forward_specs
from ssmfab.sandbox import Sandbox
from ssmfab.exceptions import ConfigError

from .conftest import new_active_sessions
from .test_cli import assert_one_line_error, ssmfab

#: Bytes a relay could mangle: NULs, newlines, a shell's specials, and more than one read's worth.
PAYLOAD = b"\x00hello\r\n$(id) `x` 'q' \"d\"\n" + bytes(range(256)) * 300


def echoed(address: str, payload: bytes = PAYLOAD) -> bytes:
    """What comes back for ``payload``: read until as many bytes came back, or the far end closed. (No half-close:
    the plugin's smux streams close both ways when the local side stops sending, on AWS as here.)"""
    host, _, port = address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=60) as conn:
        conn.sendall(payload)
        received = bytearray()
        while len(received) < len(payload) and (chunk := conn.recv(65536)):
            received += chunk
    return bytes(received)


def start_forward(*args: str) -> tuple[subprocess.Popen[str], list[str]]:
    """`ssmfab forward …` in a process; the local addresses it printed, in order (read as it prints them)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "ssmfab.program", "forward", *args],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ),
    )  # fmt: skip
    assert process.stdout is not None and process.stderr is not None
    count = len(parse_forward_specs(args[1]))
    lines = [process.stdout.readline() for _ in range(count)]
    assert all(" -> " in line for line in lines), (lines, process.stderr.read() if process.poll() is not None else "")
    return process, [line.split(" -> ")[0] for line in lines]


def stop(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
    return stderr


@pytest.mark.parametrize("via", ["ssh", "ssm"])
def test_forward_to_the_instance_and_through_it(
    sandbox_env: dict[str, str], sessions_before: set[str], echo_servers: tuple[int, int], plugin_path: str, via: str
) -> None:
    if via == "ssm" and not plugin_path:
        pytest.skip("the SSM form runs AWS's session-manager-plugin (its LocalPortForwarding listener): pass --plugin PATH")
    on_instance, remote = echo_servers
    process, addresses = start_forward("web-1", f"localhost:{on_instance},127.0.0.2:{remote}", "--via", via)
    try:
        assert all(a.split(":")[0] in ("127.0.0.1", "localhost") for a in addresses)
        assert echoed(addresses[0]) == PAYLOAD
        assert echoed(addresses[1]) == PAYLOAD
        # Several connections at once through one forward (smux streams in the SSM form, channels in the SSH one).
        results: list[bytes] = []
        threads = [threading.Thread(target=lambda n=n: results.append(echoed(addresses[0], b"%d" % n * 5000))) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert sorted(results) == sorted(b"%d" % n * 5000 for n in range(4))
    finally:
        stderr = stop(process)
    assert "forwarding stopped" in stderr
    assert new_active_sessions(sandbox_env, sessions_before) == set()
    with pytest.raises(OSError):
        echoed(addresses[0], b"x")  # nothing listens any more


@pytest.mark.parametrize("via", ["ssh", "ssm"])
def test_a_destination_that_refuses_closes_that_connection_only(
    sandbox: Sandbox, sandbox_env: dict[str, str], echo_servers: tuple[int, int], plugin_path: str, via: str
) -> None:
    if via == "ssm" and not plugin_path:
        pytest.skip("the SSM form runs AWS's session-manager-plugin (its LocalPortForwarding listener): pass --plugin PATH")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]  # bound, never listening: connections to it are refused
        process, addresses = start_forward("web-2", f"localhost:{closed_port},localhost:{echo_servers[0]}", "--via", via)
        try:
            try:
                answer = echoed(addresses[0], b"anyone?")
            except ConnectionResetError:  # closed with our bytes unread: a reset, as ssh -L does it
                answer = b""
            assert answer == b""
            assert echoed(addresses[1], b"still here") == b"still here"
        finally:
            stderr = stop(process)
    if via == "ssh":
        assert f"web-2 (i-" in stderr and f"localhost:{closed_port} could not be reached from the instance" in stderr
    else:  # the agent's side refused the stream: the sandbox saw it
        assert any(str(closed_port) in e.get("output", "") for e in sandbox.events("PortRefused", "web-2"))


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("8080", "bad forward '8080': expected [LOCAL_PORT:]HOST:PORT"),
        ("localhost:0", "bad forward 'localhost:0': ports are 1-65535"),
        ("70000:localhost:80", "ports are 1-65535"),
        ("8080:localhost:80,8080:db:5432", "uses a local port twice"),
        ("8080:$(id):80", "bad forward '8080:$(id):80'"),
    ],
)
def test_bad_specs_are_one_line_before_any_aws_call(sandbox_env: dict[str, str], spec: str, needle: str) -> None:
    env = dict(os.environ, AWS_ENDPOINT_URL="http://127.0.0.1:9")
    assert_one_line_error(ssmfab("forward", "web-1", spec, env=env), 2, needle)


def test_a_local_port_in_use_is_one_line_and_opens_no_session(sandbox_env: dict[str, str], sessions_before: set[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = ssmfab("forward", "web-1", f"{port}:localhost:22", env=dict(os.environ))
    assert_one_line_error(done, 2, f"cannot listen on 127.0.0.1:{port}", "choose another LOCAL_PORT")
    assert new_active_sessions(sandbox_env, sessions_before) == set()


def test_spec_parsing() -> None:
    assert [str(s) for s in parse_forward_specs("8080:localhost:80, 5432:db.internal:5432 [fd00::1]:443")] == [
        "8080:localhost:80", "5432:db.internal:5432", "[fd00::1]:443",
    ]  # fmt: skip
    with pytest.raises(ConfigError):
        parse_forward_specs("")
