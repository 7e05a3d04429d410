"""ProcessTunnel's close: the session is ended while the tunnel process winds down, and the process group
goes whatever happens on the way."""

from __future__ import annotations

import select
import sys

import pytest
from paramiko.packet import Packetizer

from ssmfab.tunnel import ProcessTunnel, _group_alive
from ssmfab.tunnelsocket import PreambleTooLong

# A stand-in tunnel: copies stdin to stdout, leaves a grandchild in its group as a plugin might, and after EOF
# takes a moment to wind down (as a plugin ending its session does), so "still there" is not a race with cat.
CAT_WITH_CHILD = [
    sys.executable, "-c", "import os, subprocess; subprocess.Popen(['sleep', '60']); os.execvp('sh', ['sh', '-c', 'cat; sleep 1'])"
]  # fmt: skip



# _group_alive: what close() itself waits on (zombies of reparented children do not count).


def test_close_ends_the_session_while_the_process_is_still_there_then_the_whole_group() -> None:
    seen: list[bool] = []
    tunnel: ProcessTunnel

    def end_session(session_id: str | None) -> None:
        seen.append(tunnel.process.poll() is None)

    tunnel = ProcessTunnel(CAT_WITH_CHILD, on_close=end_session)
    tunnel.sock.settimeout(10)
    tunnel.sock.sendall(b"SSH-2.0-ping\r\n")  # the tunnel's socket hands on bytes from the SSH banner on
    assert tunnel.sock.recv(64) == b"SSH-2.0-ping\r\n"
    tunnel.close()
    assert seen == [True]  # not after the process was gone: both ends wind down at once
    assert not _group_alive(tunnel.process.pid)
    tunnel.close()  # twice is fine
    assert seen == [True]


def test_a_failing_session_end_still_ends_the_process_group() -> None:
    def end_session(session_id: str | None) -> None:
        raise RuntimeError("AWS unreachable")

    tunnel = ProcessTunnel(CAT_WITH_CHILD, on_close=end_session)
    tunnel.close()  # the session is ended on a thread of its own: its failure cannot keep the processes alive
    assert not _group_alive(tunnel.process.pid)


# What a plugin prints on the stream before (or instead of) sshd's banner.

GREETING = "\nStarting session with SessionId: ops-0123456789abcdef0\n"


def plugin_printing(text: str, then: str = "") -> list[str]:
    return [sys.executable, "-c", f"import os, time; os.write(1, {text!r}.encode()); {then}"]


def test_a_session_id_printed_but_not_read_yet_still_reaches_the_session_end() -> None:
    ended: list[str | None] = []
    tunnel = ProcessTunnel(plugin_printing(GREETING, "time.sleep(60)"), on_close=ended.append)
    select.select([tunnel.sock], [], [], 30)  # the greeting is there; nobody read it (a connect cut short)
    tunnel.close()
    assert ended == ["ops-0123456789abcdef0"]


def test_the_agents_refusal_on_the_stream_is_the_failure() -> None:
    refusal = "Connection to destination port failed, check SSM Agent logs."
    tunnel = ProcessTunnel(plugin_printing(f"{GREETING}\n{refusal}\n\n\nExiting session with sessionId: ops-0.\n\n"))
    try:
        with pytest.raises(EOFError):
            Packetizer(tunnel.sock).readline(30)
        failure = tunnel.failure("web-1 (i-0123)")
    finally:
        tunnel.close()
    assert str(failure) == (
        f"web-1 (i-0123): the SSM session ended before SSH started: {refusal}; "
        "check that sshd runs on the instance and listens on the document's port"
    )


def test_a_stream_that_is_not_ssh_fails_without_waiting_for_the_timeout() -> None:
    tunnel = ProcessTunnel(plugin_printing("HTTP/1.1 400 Bad Request\n" * 2000, "time.sleep(60)"))
    try:
        with pytest.raises(PreambleTooLong):
            Packetizer(tunnel.sock).readline(30)
        failure = tunnel.failure("web-1 (i-0123)")
    finally:
        tunnel.close()
    assert "no SSH banner in what came through the SSM tunnel (it began: HTTP/1.1 400 Bad Request" in str(failure)
