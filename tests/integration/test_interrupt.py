"""Ctrl-C (and SIGTERM) at every phase of a command: looking hosts up while AWS does not answer, connecting,
mid-transfer both ways, and mid-command in a fan-out. Each ends promptly with one line and exit 130 (143 for
SIGTERM), and leaves no file under any name, no tunnel process, no SSM session and no thread.

Every signal is sent on an event (a connection reaching a silent server, a temporary file appearing and growing,
a remote command writing its pid), never after a fixed sleep. "Promptly" is checked loosely (the product aims for
a second or two; these allow 15 s on a busy machine)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import pytest

from ssmfab.client import Client
from ssmfab.fleet import fan_out
from ssmfab.interrupt import Interrupted
from ssmfab.sandbox import Sandbox
from ssmfab.transfer import put

from .awsproxy import AWSProxy
from .conftest import TUNNEL_PROCESS_MARKERS, active_sessions, processes_matching, tunnel_processes
from ..waiting import wait_until

SSMFAB = [sys.executable, "-m", "ssmfab.program"]
#: How long a command may take to end after the signal (the promise is a second or two; the machine is shared).
PROMPT = 15.0
BIG = 256 * 1024 * 1024

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")


def interrupt_when(process: subprocess.Popen[str], ready: Callable[[], bool], what: str, sig: int = signal.SIGINT) -> tuple[str, str, float]:
    """Send ``sig`` once ``ready()``; (stdout, stderr, seconds from the signal to the exit)."""
    try:
        wait_until(lambda: ready() or process.poll() is not None, what)
        assert process.poll() is None, f"ended before {what}: {process.communicate()}"
        process.send_signal(sig)
        sent = time.monotonic()
        out, err = process.communicate(timeout=PROMPT * 4)
        return out, err, time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def assert_interrupted(code: int, err: str, took: float, expected: int = 130) -> None:
    assert code == expected, err
    assert took < PROMPT, f"took {took:.1f}s to stop"
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("interrupted (")]
    assert len(lines) == 1, err


def temp_grown(folder: Path, name: str, size: int = 1 << 20) -> Callable[[], bool]:
    """True once a temporary file of ``name`` (``.NAME.ssmfab-XXXXXXXX.part``) holds more than ``size`` bytes."""

    def check() -> bool:
        with contextlib.suppress(OSError):
            return any(p.stat().st_size > size for p in folder.glob(f".{name}.ssmfab-*.part"))
        return False

    return check


def leftovers(folder: Path, name: str) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name == name or ".ssmfab-" in p.name)


@pytest.fixture
def sessions_before(sandbox_env: dict[str, str]) -> Iterator[set[str]]:
    """The SSM sessions active before the test (others' tests may leave some); none may be added by it."""
    before = {str(s["SessionId"]) for s in active_sessions(sandbox_env)}
    yield before
    added = {str(s["SessionId"]) for s in active_sessions(sandbox_env)} - before
    assert not added, f"SSM sessions left active: {sorted(added)}"


# --- looking hosts up while AWS does not answer ---------------------------------------------------------------


@pytest.fixture
def silent_endpoint() -> Iterator[tuple[str, threading.Event]]:
    """A TCP server that accepts and never answers (an AWS endpoint that stopped answering), and an event set
    when the first connection arrives."""
    server = socket.create_server(("127.0.0.1", 0))
    arrived = threading.Event()
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)
            arrived.set()

    thread = threading.Thread(target=accept, name="silent-endpoint")
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}", arrived
    finally:
        stop.set()
        thread.join()
        server.close()
        for conn in held:
            conn.close()


def test_ctrl_c_while_aws_does_not_answer_stops_the_lookup(silent_endpoint: tuple[str, threading.Event]) -> None:
    endpoint, arrived = silent_endpoint
    env = dict(os.environ, AWS_ENDPOINT_URL=endpoint)
    process = subprocess.Popen([*SSMFAB, "hosts", "--tag", "web"], env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, err, took = interrupt_when(process, arrived.is_set, "a lookup reaching the endpoint")
    assert_interrupted(process.returncode, err, took)
    assert "before any host started work" in err


def test_aws_calls_time_out_and_stop_retrying(silent_endpoint: tuple[str, threading.Event]) -> None:
    endpoint, _ = silent_endpoint
    env = dict(os.environ, AWS_ENDPOINT_URL=endpoint, SSMFAB_AWS_READ_TIMEOUT="1", SSMFAB_AWS_MAX_ATTEMPTS="2")
    started = time.monotonic()
    done = subprocess.run([*SSMFAB, "hosts", "--tag", "web"], env=env, text=True, capture_output=True, timeout=60, check=False)
    # Two attempts of 1 s each, plus the start of a Python process on a busy machine.
    assert time.monotonic() - started < 30
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "timeout" in done.stderr.lower() and "looking up instances" in done.stderr, done.stderr


# --- connecting ---------------------------------------------------------------------------------------------


def test_ctrl_c_while_the_tunnel_opens(sandbox: Sandbox, sandbox_env: dict[str, str], sessions_before: set[str], tmp_path: Path) -> None:
    # A session-manager-plugin that never connects (AWS's does that when its stream URL is unreachable).
    started = tmp_path / "plugin-started"
    plugin = tmp_path / "stuck-plugin"
    plugin.write_text(f'#!/bin/sh\n[ "$1" = --version ] && {{ echo 1.2.677.0; exit 0; }}\ntouch {started}\nexec sleep 600\n')
    plugin.chmod(0o755)
    env = dict(os.environ, SSMFAB_PLUGIN=str(plugin))
    process = subprocess.Popen([*SSMFAB, "run", "--name", "web-1", "true"], env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, err, took = interrupt_when(process, started.exists, "the plugin starting")
    assert_interrupted(process.returncode, err, took)
    assert "web-1" in err and "may still be running" in err
    assert processes_matching(str(plugin)) == []


# --- mid-transfer ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupted_put_leaves_no_file_on_the_host(
    sig: int, code: int, sandbox: Sandbox, sandbox_env: dict[str, str], sessions_before: set[str], tmp_path: Path
) -> None:
    home = Path(sandbox.host("web-2").folder) / "home"
    source = tmp_path / "big.bin"
    with source.open("wb") as handle:
        handle.truncate(BIG)  # sparse: costs no local disk
    process = subprocess.Popen(
        [*SSMFAB, "put", str(source), "upload.bin", "--name", "web-2"], text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    _, err, took = interrupt_when(process, temp_grown(home, "upload.bin"), "the upload's temporary file growing", sig)
    assert leftovers(home, "upload.bin") == []
    assert_interrupted(process.returncode, err, took, code)
    assert "web-2" in err


def test_interrupted_get_leaves_no_local_file(sandbox: Sandbox, sandbox_env: dict[str, str], sessions_before: set[str], tmp_path: Path) -> None:
    home = Path(sandbox.host("web-2").folder) / "home"
    with (home / "download.bin").open("wb") as handle:
        handle.truncate(BIG)
    dest = tmp_path / "dest"
    dest.mkdir()
    try:
        process = subprocess.Popen(
            [*SSMFAB, "get", "download.bin", "--dest", str(dest), "--name", "web-2"],
            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        _, err, took = interrupt_when(process, temp_grown(dest, "download.bin"), "the download's temporary file growing")
    finally:
        (home / "download.bin").unlink()
    assert list(dest.iterdir()) == []
    assert_interrupted(process.returncode, err, took)


def test_an_upload_removes_stale_temporary_files_of_its_name_only(client: Client, sandbox: Sandbox, tmp_path: Path) -> None:
    home = Path(sandbox.host("web-3").folder) / "home"
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(5 << 20))  # streamed (>= 4 MiB)
    stale = home / ".app.bin.ssmfab-0badc0de.part"  # from a run killed an hour ago
    fresh = home / ".app.bin.ssmfab-00c0ffee.part"  # another upload of the same name, in progress
    other = home / ".other.bin.ssmfab-0badbeef.part"  # another name: not ours to judge
    for path in (stale, fresh, other):
        path.write_bytes(b"partial")
    hour_ago = time.time() - 3600
    os.utime(stale, (hour_ago, hour_ago))
    os.utime(other, (hour_ago, hour_ago))
    try:
        with client.connect(sandbox.host("web-3").instance_id) as conn:
            put(conn, str(source), "app.bin")
        assert (home / "app.bin").read_bytes() == source.read_bytes()
        assert not stale.exists()
        assert fresh.exists() and other.exists()
    finally:
        for path in (stale, fresh, other, home / "app.bin"):
            path.unlink(missing_ok=True)


# --- mid-command in a fan-out (proves the fan-out closes the connections it cannot wait for) ------------------


@pytest.fixture
def ctrl_c_raises() -> Iterator[None]:
    """Python's own SIGINT handler for the test: a process started in the background by a non-interactive shell
    begins with SIGINT ignored, and Python then keeps it ignored (the signal would be lost, the test would wait
    for the remote command's ten minutes)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def test_ctrl_c_in_a_fan_out_closes_every_connection(
    client: Client, sandbox: Sandbox, sandbox_env: dict[str, str], sessions_before: set[str], tmp_path: Path,
    ctrl_c_raises: None,
) -> None:
    names = ["web-1", "web-2", "web-3"]
    targets = client.targets(names=names)
    pids = {name: Path(sandbox.host(name).folder) / "home" / "sleeper.pid" for name in names}
    threads_before = {t.ident for t in threading.enumerate()}
    main = threading.main_thread().ident
    assert main is not None
    sent: list[float] = []

    never_started: list[AssertionError] = []

    def interrupt() -> None:
        try:
            wait_until(lambda: all(p.exists() and p.read_text().strip() for p in pids.values()), "every host's command started")
        except AssertionError as exc:  # interrupt anyway: the test fails with this, rather than wait ten minutes
            never_started.append(exc)
        sent.append(time.monotonic())
        signal.pthread_kill(main, signal.SIGINT)

    trigger = threading.Thread(target=interrupt, name="interrupt-when-started")
    trigger.start()
    try:
        # A command that would run for ten minutes: only closing its connection gets its host thread back.
        with pytest.raises(KeyboardInterrupt) as stopped:
            fan_out(targets, client.connect, lambda conn: conn.run("echo $$ > sleeper.pid; exec sleep 600", hide=True))
        took = time.monotonic() - sent[0]
        trigger.join()
        assert not never_started, never_started[0]
        wait_until(lambda: not [t for t in threading.enumerate() if t.ident not in threads_before and t.is_alive()], "host threads ending", PROMPT)
        assert tunnel_processes(sandbox) == []
        assert took < PROMPT, f"took {took:.1f}s to stop"
        assert isinstance(stopped.value, Interrupted)
        assert sorted(stopped.value.in_flight) == sorted(t.label for t in targets)
    finally:
        trigger.join()
        for path in pids.values():  # the remote commands were left running, as promised: end them
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(path.read_text()), signal.SIGKILL)
            path.unlink(missing_ok=True)


# --- closing, while AWS stops answering -------------------------------------------------------------------------


@pytest.fixture
def endpoint_that_hangs_on_terminate(sandbox: Sandbox) -> Iterator[tuple[str, threading.Event]]:
    """A proxy to the sandbox's AWS endpoint that passes every call but TerminateSession, which it holds
    unanswered (AWS stopping to answer just as the command closes); the event is set when one arrives."""
    with AWSProxy(sandbox.endpoint, hold=b"AmazonSSM.TerminateSession") as proxy:
        yield proxy.url, proxy.held


def test_ctrl_c_while_closing_and_aws_does_not_answer(
    sandbox: Sandbox, sandbox_env: dict[str, str], endpoint_that_hangs_on_terminate: tuple[str, threading.Event]
) -> None:
    endpoint, held = endpoint_that_hangs_on_terminate
    before = {str(s["SessionId"]) for s in active_sessions(sandbox_env)}
    env = dict(os.environ, AWS_ENDPOINT_URL=endpoint)
    process = subprocess.Popen([*SSMFAB, "run", "--name", "web-1", "true"], env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _, err, took = interrupt_when(process, held.is_set, "TerminateSession reaching the endpoint")
        assert_interrupted(process.returncode, err, took)
        # The tunnel's processes end even though AWS never confirmed the session's end.
        assert processes_matching(*TUNNEL_PROCESS_MARKERS, environ=f"AWS_ENDPOINT_URL={endpoint}") == []
    finally:
        # The session AWS never heard the end of: end it, so later tests start clean.
        ssm = boto3.client("ssm", endpoint_url=sandbox.endpoint, region_name="us-east-1")
        for session in active_sessions(sandbox_env):
            if str(session["SessionId"]) not in before:
                ssm.terminate_session(SessionId=str(session["SessionId"]))
