"""Why a tunnel broke, in the one line a user sees: ProcessTunnel.failure reads its process's exit status and
stderr (what the aws CLI or the plugin said) and the stream; and close() leaves no process of its group.

The tunnel processes are small shell or Python programs standing in for the aws CLI and session-manager-plugin:
they print what those print (their texts are copied from the real tools) and exit as they do. Each test waits
for an event (the process's exit, a line on the stream), never for a clock."""

from __future__ import annotations

import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from paramiko.packet import Packetizer

from ssmfab.exceptions import (
    AccessDeniedError, CredentialsError, PluginError, SessionLostError, TargetNotConnectedError, TunnelError,
)  # fmt: skip
from ssmfab.tunnel import PLUGIN_INSTALL_HINT, ProcessTunnel, _group_alive

HOST = "web-1 (i-0123456789abcdef0)"



def saying(stderr: str, code: int = 255, stdout: str = "") -> list[str]:
    """A tunnel process that prints ``stdout`` on the stream and ``stderr`` on its stderr, then exits ``code``."""
    return [sys.executable, "-c", f"import os, sys; os.write(1, {stdout!r}.encode()); sys.stderr.write({stderr!r}); sys.exit({code})"]


def ended(argv: list[str]) -> ProcessTunnel:
    """A tunnel whose process has already exited (the event every failure test waits for)."""
    tunnel = ProcessTunnel(argv)
    tunnel.process.wait(60)
    return tunnel


def failure_of(argv: list[str]) -> TunnelError | None:
    tunnel = ended(argv)
    try:
        return tunnel.failure(HOST)  # type: ignore[return-value]  # every failure of a tunnel is a TunnelError here
    finally:
        tunnel.close()


# -- what the aws CLI says on stderr -------------------------------------------------------------------------


def test_an_aws_error_from_the_cli_becomes_ssmfabs_own_line_for_it() -> None:
    said = "\nAn error occurred (TargetNotConnected) when calling the StartSession operation: i-0123456789abcdef0 is not connected.\n"
    failure = failure_of(saying(said, 254))
    assert isinstance(failure, TargetNotConnectedError)
    assert str(failure) == (
        f"{HOST}: SSM agent not connected (TargetNotConnected): the instance may be booting, stopped or lack "
        "network to SSM; check `ssmfab hosts` and retry"
    )
    assert failure.host == HOST


def test_access_denied_from_the_cli_names_the_call_and_aws_words() -> None:
    said = (
        "\nAn error occurred (AccessDeniedException) when calling the StartSession operation: User: "
        "arn:aws:sts::123456789012:assumed-role/ops/me is not authorized to perform: ssm:StartSession  \n"
    )
    failure = failure_of(saying(said, 254))
    assert isinstance(failure, AccessDeniedError)
    assert str(failure) == (
        f"{HOST}: access denied while calling StartSession: User: arn:aws:sts::123456789012:assumed-role/ops/me "
        "is not authorized to perform: ssm:StartSession (grant it in IAM: see the README's IAM section)"
    )


def test_a_cli_without_the_plugin_says_to_install_it() -> None:
    said = "\nSessionManagerPlugin is not found. Please refer to SessionManager Documentation here: https://docs.aws.amazon.com/x\n"
    failure = failure_of(saying(said))
    assert isinstance(failure, PluginError)
    assert str(failure) == f"{HOST}: the aws CLI found no session-manager-plugin: {PLUGIN_INSTALL_HINT}"
    assert failure.host == HOST


def test_a_cli_without_credentials_says_how_to_give_them() -> None:
    said = 'Unable to locate credentials. You can configure credentials by running "aws configure".\n'
    failure = failure_of(saying(said))
    assert isinstance(failure, CredentialsError)
    assert str(failure) == (
        f"{HOST}: the aws CLI found no AWS credentials: set AWS_PROFILE, run `aws configure` or `aws sso login`"
    )


def test_the_last_telling_line_is_the_reason_the_tools_noise_is_not() -> None:
    said = (
        "\nStarting session with SessionId: ops-0123\n"
        "websocket: close 1006 (abnormal closure): unexpected EOF\n"
        "\n\nExiting session with sessionId: ops-0123.\n\n"
        "WARNING: An outdated SessionManagerPlugin version detected.\n"
        "For more information, see the docs\n"
        "https://docs.aws.amazon.com/systems-manager/latest/userguide/x.html\n"
        "Command '['session-manager-plugin', '…']' returned non-zero exit status 1.\n"
    )
    failure = failure_of(saying(said, 255))
    assert type(failure) is TunnelError
    assert str(failure) == (
        f"{HOST}: SSM tunnel closed (exit 255): websocket: close 1006 (abnormal closure): unexpected EOF; "
        "check that sshd runs on the instance"
    )
    assert failure.host == HOST


def test_a_tunnel_that_ends_without_a_word_says_so() -> None:
    only_noise = (
        "\nStarting session with SessionId: ops-0123\n\n  \nExiting session with sessionId: ops-0123.\n"
        "WARNING: An outdated SessionManagerPlugin version detected.\nFor more information, see the docs\n"
        "https://docs.aws.amazon.com/x.html\nCommand '['session-manager-plugin', '…']' returned non-zero exit status 1.\n\n"
    )
    failure = failure_of(saying(only_noise, 0))
    assert str(failure) == f"{HOST}: SSM tunnel closed (exit 0); check that sshd runs on the instance"


def test_a_long_stderr_is_read_from_its_last_8_kib_even_mid_character() -> None:
    # Plugin debug output can run long and be non-ASCII: the tail kept may begin inside a character.
    said = "é" * 6000 + "\nthe real reason\n"  # 12000 bytes of two-byte characters, then the last line
    assert (8192 - len("\nthe real reason\n")) % 2 == 1  # the cut falls inside an "é"
    tunnel = ended(saying(said, 1))
    try:
        text = tunnel.stderr_text()
        failure = tunnel.failure(HOST)
    finally:
        tunnel.close()
    kept = (8192 - len("\nthe real reason\n")) // 2
    assert text == "\ufffd" + "é" * kept + "\nthe real reason\n"  # the last 8 KiB; the half character replaced
    assert str(failure) == f"{HOST}: SSM tunnel closed (exit 1): the real reason; check that sshd runs on the instance"


# -- what came on the stream ---------------------------------------------------------------------------------

GREETING = "\nStarting session with SessionId: ops-0123456789abcdef0\n"


@pytest.mark.parametrize("length", [300, 301])
def test_what_the_plugin_said_is_shown_whole_up_to_300_characters(length: int) -> None:
    said = ("refused " * 40)[: length - 1] + "!"  # no trailing space: the plugin's line is shown as it is
    tunnel = ProcessTunnel(saying("", 0, f"{GREETING}{said}\n"))
    try:
        with pytest.raises(EOFError):
            Packetizer(tunnel.sock).readline(30)  # paramiko reads the stream to its end: no banner came
        failure = tunnel.failure(HOST)
    finally:
        tunnel.close()
    shown = said if length <= 300 else said[:299] + "…"
    assert isinstance(failure, TunnelError) and failure.host == HOST
    assert str(failure) == (
        f"{HOST}: the SSM session ended before SSH started: {shown}; "
        "check that sshd runs on the instance and listens on the document's port"
    )


def test_what_a_plugin_said_before_anything_was_read_is_the_reason() -> None:
    """The plugin said why and ended before the connection read a byte (a tunnel opened while the instance was
    looked up is taken later): the connection's first write, its banner, finds the stream closed. Its last
    words are still the reason, not a closed tunnel without one."""
    refused = "SessionId: ops-0 : Unable to connect to specified port: dial tcp 127.0.0.1:22: connect: connection refused"
    tunnel = ended(saying("", 0, f"{GREETING}\n\n{refused}\n\n"))
    try:
        with pytest.raises(BrokenPipeError):
            tunnel.sock.sendall(b"SSH-2.0-paramiko_3.5.1\r\n")  # what paramiko does first
        failure = tunnel.failure(HOST)
    finally:
        tunnel.close()
    assert str(failure) == (
        f"{HOST}: the SSM session ended before SSH started: {refused}; "
        "check that sshd runs on the instance and listens on the document's port"
    )


def test_a_stream_that_is_not_ssh_shows_its_first_120_characters() -> None:
    line = "HTTP/1.1 400 Bad Request"
    tunnel = ProcessTunnel([sys.executable, "-c", f"import os, time; os.write(1, {(line + chr(10)) * 2000!r}.encode()); time.sleep(60)"])
    try:
        with pytest.raises(OSError, match="no SSH banner"):
            Packetizer(tunnel.sock).readline(30)
        failure = tunnel.failure(HOST)
    finally:
        tunnel.close()
    began = " ".join([line] * 10)[:119] + "…"
    assert isinstance(failure, TunnelError) and failure.host == HOST
    assert str(failure) == (
        f"{HOST}: no SSH banner in what came through the SSM tunnel (it began: {began}); "
        "check that the document's port on the instance is sshd's"
    )


def banner_then(after: str) -> list[str]:
    """A tunnel that sends an SSH banner, reads one line, then says ``after`` on stderr and exits 0 (AWS's plugin
    when its data channel died and could not resume)."""
    return ["sh", "-c", f"printf 'SSH-2.0-OpenSSH_9.6\\r\\n'; read line; printf '{after}' >&2; exit 0"]


def test_a_tunnel_that_ends_under_ssh_is_a_lost_session() -> None:
    tunnel = ProcessTunnel(banner_then("websocket: close 1006\\n"))
    try:
        assert Packetizer(tunnel.sock).readline(30) == "SSH-2.0-OpenSSH_9.6"
        tunnel.sock.sendall(b"SSH-2.0-paramiko\r\n")
        tunnel.process.wait(60)
        failure = tunnel.failure(HOST)
    finally:
        tunnel.close()
    assert isinstance(failure, SessionLostError)
    assert str(failure) == (
        f"{HOST}: SSM session lost: the tunnel ended under the SSH session (exit 0): websocket: close 1006: its data "
        "channel died or sshd on the instance closed; check the instance's SSM agent, sshd and network"
    )
    assert failure.host == HOST


def test_a_dying_tunnel_is_given_a_moment_to_say_why() -> None:
    # failure() is asked the moment the stream breaks; the process is still on its way out and writes its reason
    # after that. Only the bounded wait in failure() lets the reason be seen.
    said = "An error occurred (TargetNotConnected) when calling the StartSession operation: gone\\n"
    tunnel = ProcessTunnel(["sh", "-c", f"read line; printf '{said}' >&2; exit 254"])
    try:
        tunnel.sock.sendall(b"go\n")
        failure = tunnel.failure(HOST)
    finally:
        tunnel.close()
    assert isinstance(failure, TargetNotConnectedError)


def test_a_healthy_tunnel_has_no_failure() -> None:
    tunnel = ProcessTunnel(["cat"])
    try:
        assert tunnel.failure(HOST) is None  # still running, nothing said: not the tunnel's fault
        assert tunnel.process.poll() is None
    finally:
        tunnel.close()


@pytest.mark.parametrize("stderr", ["", "\n \n"])
def test_a_tunnel_closed_while_in_use_says_so(stderr: str) -> None:
    tunnel = ProcessTunnel(["sh", "-c", f"printf '{stderr}' >&2; exec cat"])
    deadline = time.monotonic() + 60
    while tunnel.stderr_text() != stderr:  # blank lines only: nothing said
        assert time.monotonic() < deadline
        time.sleep(0.01)
    tunnel.close()
    failure = tunnel.failure(HOST)
    assert str(failure) == f"{HOST}: the connection was closed while in use"
    assert isinstance(failure, TunnelError) and failure.host == HOST


def test_the_tunnels_last_words_survive_its_close() -> None:
    # A transfer cut mid-way: the tunnel is closed first, the reason is asked for afterwards.
    said = "An error occurred (AccessDeniedException) when calling the StartSession operation: no\n"
    tunnel = ProcessTunnel(["sh", "-c", f"printf '{said}' >&2; exec cat"])
    deadline = time.monotonic() + 60
    while said.strip() not in tunnel.stderr_text():
        assert time.monotonic() < deadline, "the tunnel never said it"
        time.sleep(0.01)
    tunnel.close()
    assert isinstance(tunnel.failure(HOST), AccessDeniedError)
    assert tunnel.stderr_text().strip() == said.strip()


def test_a_lost_session_is_the_failure_and_its_stream_is_cut_at_once() -> None:
    tunnel = ProcessTunnel(["cat"])  # running: only the keepalive watch knows the session is dead
    try:
        lost = SessionLostError(f"{HOST}: SSM session lost: keepalives went unanswered", HOST)
        tunnel.lose(lost)
        with pytest.raises(EOFError):
            Packetizer(tunnel.sock).readline(30)  # paramiko stops waiting on the stream
        assert tunnel.failure(HOST) is lost  # whatever the process did on the cut (cat exits on its EOF)
    finally:
        tunnel.close()
    assert tunnel.failure(HOST) is lost


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_a_session_lost_as_the_tunnel_closes_is_still_the_failure() -> None:
    # The keepalive watch gives up on the session at the moment the command closes the tunnel.
    tunnel = ProcessTunnel(["cat"])
    tunnel.close()
    lost = SessionLostError(f"{HOST}: SSM session lost: keepalives went unanswered", HOST)
    tunnel.lose(lost)  # the stream is already gone: nothing to cut, and no error for it
    assert tunnel.failure(HOST) is lost


def test_a_tunnel_program_that_cannot_start_is_one_line_and_leaves_nothing_open() -> None:
    before = open_fds()
    with pytest.raises(TunnelError) as raised:
        ProcessTunnel(["/nonexistent/session-manager-plugin", "x"])
    assert str(raised.value) == "cannot start /nonexistent/session-manager-plugin: No such file or directory"
    # Checked while the exception (and through it the half-made tunnel) is still alive: closed, not collected.
    assert open_fds() - before == set()


def test_the_session_id_is_read_even_after_paramiko_closed_its_socket() -> None:
    # A connect that failed mid-handshake: paramiko closed the socket it was given before the tunnel is closed.
    ended_ids: list[str | None] = []
    tunnel = ProcessTunnel(
        [sys.executable, "-c", f"import os, time; os.write(1, {GREETING!r}.encode()); time.sleep(600)"], on_close=ended_ids.append
    )
    select.select([tunnel.sock], [], [], 60)  # the greeting is there, unread
    tunnel.sock.close()
    tunnel.close()
    assert ended_ids == ["ops-0123456789abcdef0"]


def test_a_closed_tunnel_leaves_no_descriptor_open() -> None:
    before = open_fds()
    tunnel = ProcessTunnel(["sh", "-c", "echo said >&2; exec cat"])
    tunnel.sock.sendall(b"SSH-2.0-x\r\n")
    assert Packetizer(tunnel.sock).readline(60) == "SSH-2.0-x"
    tunnel.close()
    assert open_fds() - before == set()


def test_a_plugin_is_given_time_to_end_cleanly_on_sigterm(tmp_path: Path) -> None:
    # A plugin that ignores its input ending (a stuck data channel) but ends cleanly on SIGTERM, taking a moment.
    cleaned = tmp_path / "cleaned-up"
    plugin = (
        "import os, signal, sys, time\n"
        "def stop(*_):\n"
        "    time.sleep(0.3)  # closing its data channel\n"
        f"    open({str(cleaned)!r}, 'w').close()\n"
        "    os._exit(0)\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        "os.write(1, b'SSH-2.0-x\\r\\n')\n"
        "while True:\n"
        "    time.sleep(1)\n"
    )
    tunnel = ProcessTunnel([sys.executable, "-c", plugin])
    assert Packetizer(tunnel.sock).readline(60) == "SSH-2.0-x"  # running, its handler installed
    tunnel.close()
    assert cleaned.exists()  # SIGTERM first, and time to act on it; SIGKILL only after that
    assert tunnel.process.returncode == 0


def test_a_session_known_from_startsession_is_ended_even_if_the_plugin_never_said_it() -> None:
    ended: list[str | None] = []
    tunnel = ProcessTunnel(["cat"], on_close=ended.append, session_id="ops-0123456789abcdef0")
    tunnel.close()  # the plugin died (or was cut off) before its greeting
    assert ended == ["ops-0123456789abcdef0"]


def test_close_returns_only_once_the_session_end_is_done() -> None:
    # The command exits right after close(): a TerminateSession still in flight then would never be sent.
    entered, release, returned = threading.Event(), threading.Event(), threading.Event()
    ended: list[str | None] = []

    def end_session(session_id: str | None) -> None:
        entered.set()
        release.wait(60)
        ended.append(session_id)

    tunnel = ProcessTunnel(["cat"], on_close=end_session, session_id="ops-1")

    def close() -> None:
        tunnel.close()
        returned.set()

    closing = threading.Thread(target=close)
    closing.start()
    try:
        assert entered.wait(60)
        deadline = time.monotonic() + 60
        while _group_alive(tunnel.process.pid):  # the processes go without waiting for AWS...
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert not returned.wait(1)  # ...but close() waits for the session end
    finally:
        release.set()
        closing.join(60)
    assert returned.is_set() and ended == ["ops-1"]


# -- close(): the whole process group goes -------------------------------------------------------------------


def test_close_ends_a_group_that_ignores_eof_and_sigterm() -> None:
    # A hung plugin: it ignores its input ending and SIGTERM, and has a child that does the same.
    stubborn = "trap '' TERM; sh -c \"trap '' TERM; while :; do sleep 1; done\" & while :; do sleep 1; done"
    tunnel = ProcessTunnel(["sh", "-c", stubborn])
    tunnel.close()
    assert not _group_alive(tunnel.process.pid)
    assert tunnel.process.returncode == -signal.SIGKILL


def test_close_ends_a_group_whose_leader_already_left() -> None:
    # The aws CLI gone, its plugin still there: the plugin must not be orphaned.
    tunnel = ProcessTunnel(["sh", "-c", "sleep 600 & exit 0"])
    tunnel.process.wait(60)
    assert _group_alive(tunnel.process.pid)
    tunnel.close()
    assert not _group_alive(tunnel.process.pid)


def test_a_plugin_left_by_its_aws_process_is_given_its_sigterm_grace_too(tmp_path: Path) -> None:
    # cli mode: the aws CLI (the group's leader) already exited; its plugin ends cleanly on SIGTERM, taking a moment.
    cleaned, ready = tmp_path / "cleaned-up", tmp_path / "ready"
    plugin = (
        "import os, signal, time\n"
        "def stop(*_):\n"
        "    time.sleep(0.3)\n"
        f"    open({str(cleaned)!r}, 'w').close()\n"
        "    os._exit(0)\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        f"open({str(ready)!r}, 'w').close()\n"
        "while True:\n"
        "    time.sleep(1)\n"
    )
    tunnel = ProcessTunnel([sys.executable, "-c", f"import subprocess, sys; subprocess.Popen([sys.executable, '-c', {plugin!r}])"])
    tunnel.process.wait(60)
    deadline = time.monotonic() + 60
    while not ready.exists():  # the plugin runs, its handler installed; the leader is gone
        assert time.monotonic() < deadline
        time.sleep(0.01)
    tunnel.close()
    assert cleaned.exists()
    assert not _group_alive(tunnel.process.pid)


def test_a_failed_session_end_is_logged_with_the_session(caplog: pytest.LogCaptureFixture) -> None:
    def end_session(session_id: str | None) -> None:
        raise RuntimeError("AWS unreachable")

    tunnel = ProcessTunnel(
        [sys.executable, "-c", f"import os, sys; os.write(1, {GREETING!r}.encode()); sys.stdin.read()"], on_close=end_session
    )
    wait_for_greeting(tunnel)
    with caplog.at_level(logging.WARNING, logger="ssmfab"):
        tunnel.close()
    [record] = [r for r in caplog.records if r.name == "ssmfab"]
    assert record.getMessage() == "ending the SSM session ops-0123456789abcdef0 failed"
    assert record.exc_info is not None and str(record.exc_info[1]) == "AWS unreachable"
    assert not _group_alive(tunnel.process.pid)


def wait_for_greeting(tunnel: ProcessTunnel) -> None:
    """Read the stream until the plugin's greeting (with the session id) came."""
    deadline = time.monotonic() + 60
    tunnel.sock.settimeout(0.5)
    while tunnel.sock.session_id is None:
        assert time.monotonic() < deadline, "no greeting"
        try:
            tunnel.sock.recv(128)
        except OSError:
            pass


# -- _group_alive: what close() waits on ---------------------------------------------------------------------


def stat_state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_a_group_is_alive_while_any_member_runs_and_not_once_all_are_gone() -> None:
    leader = subprocess.Popen(["sleep", "600"], start_new_session=True)
    try:
        assert _group_alive(leader.pid)
    finally:
        leader.kill()
        leader.wait(60)
    assert not _group_alive(leader.pid)


def test_a_zombie_alone_is_not_a_live_group() -> None:
    leader = subprocess.Popen(["sh", "-c", "exit 0"], start_new_session=True)
    deadline = time.monotonic() + 60
    while stat_state(leader.pid) != "Z":  # exited, not reaped yet: still in the process table
        assert time.monotonic() < deadline
        time.sleep(0.01)
    try:
        os.killpg(leader.pid, 0)  # the kernel still counts it in its group...
        assert not _group_alive(leader.pid)  # ...but nothing runs there
    finally:
        leader.wait(60)


def test_asking_about_a_group_sends_it_no_signal(monkeypatch: pytest.MonkeyPatch) -> None:
    # The probe must be signal 0: a plugin that is asked about (tests and close() ask often) is not hung up on.
    # The process reports each signal it gets; SIGUSR1, sent last, shows whether anything came before it.
    code = (
        "import os, signal\n"
        "for sig in (signal.SIGHUP, signal.SIGUSR1):\n"
        "    signal.signal(sig, lambda number, frame: os.write(1, b'%d\\n' % number))\n"
        "os.write(1, b'ready\\n')\n"
        "while True:\n"
        "    signal.pause()\n"
    )
    leader = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, start_new_session=True)
    assert leader.stdout is not None
    try:
        assert leader.stdout.readline() == b"ready\n"
        assert _group_alive(leader.pid)
        real_listdir = os.listdir
        monkeypatch.setattr(os, "listdir", lambda path=".": _no_proc(real_listdir, path))
        assert _group_alive(leader.pid)  # the same without /proc
        os.kill(leader.pid, signal.SIGUSR1)
        assert leader.stdout.readline() == b"%d\n" % signal.SIGUSR1
    finally:
        leader.kill()
        leader.wait(60)
        leader.stdout.close()


def _no_proc(listdir: Any, path: str) -> list[str]:
    if str(path) == "/proc":
        raise FileNotFoundError(2, "No such file or directory", "/proc")
    return list(listdir(path))


def test_a_process_with_a_strange_name_is_read_right(tmp_path: Path) -> None:
    # A process name is whatever its program file is called: a ")" and a "Z" in it must not make a running
    # plugin look like a zombie, and bytes that are not UTF-8 must not break the look at /proc.
    strange = tmp_path / os.fsdecode(b"p) Z 1 1 \xff")
    sleep = shutil.which("sleep")
    assert sleep is not None
    strange.symlink_to(sleep)
    leader = subprocess.Popen([str(strange), "600"], start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while b"p) Z 1 1" not in Path(f"/proc/{leader.pid}/stat").read_bytes():  # exec'd under that name
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert _group_alive(leader.pid)
    finally:
        leader.kill()
        leader.wait(60)
    assert not _group_alive(leader.pid)


def test_without_proc_a_live_group_is_still_seen(monkeypatch: pytest.MonkeyPatch) -> None:
    # Systems without /proc (macOS): the group is asked the kernel's way only. Not one this machine is, so
    # /proc is hidden from the code here.
    real_listdir = os.listdir

    def no_proc(path: str = ".") -> list[str]:
        if str(path) == "/proc":
            raise FileNotFoundError(2, "No such file or directory", "/proc")
        return real_listdir(path)

    leader = subprocess.Popen(["sleep", "600"], start_new_session=True)
    monkeypatch.setattr(os, "listdir", no_proc)
    try:
        assert _group_alive(leader.pid)
    finally:
        leader.kill()
        leader.wait(60)
    assert not _group_alive(leader.pid)
