"""ProcessTunnel's close: the session is ended while the tunnel process winds down, and the process group
goes whatever happens on the way."""

from __future__ import annotations

import sys

import pytest

from ssmfab.tunnel import ProcessTunnel, _group_alive

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
    with pytest.raises(RuntimeError):
        tunnel.close()
    assert not _group_alive(tunnel.process.pid)
