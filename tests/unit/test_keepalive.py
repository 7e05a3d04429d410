"""KeepaliveWatch: probes go out while the tunnel is quiet, any byte counts as an answer, the session counts as
lost after ``count_max`` unanswered probes, and a probe is skipped rather than risk blocking or confusing
paramiko's transport thread.

A real paramiko Transport over a socketpair, not started: before a key exchange its packets are plaintext, so
the probe is read back from the other end and parsed as sshd would."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator

import paramiko
import pytest
from paramiko.common import MSG_GLOBAL_REQUEST

from ssmfab.keepalive import KEEPALIVE_REQUEST, KeepaliveWatch


class Reads:
    """Stands in for TunnelSocket.reads: the count of reads that returned something."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> int:
        return self.count


@pytest.fixture
def link() -> Iterator[tuple[paramiko.Transport, socket.socket]]:
    ours, peer = socket.socketpair()
    transport = paramiko.Transport(ours)
    transport.clear_to_send.set()  # as after a finished key exchange
    peer.settimeout(5)
    yield transport, peer
    ours.close()
    peer.close()


def read_probe(peer: socket.socket) -> tuple[int, str, bool]:
    """One plaintext SSH packet from ``peer``: (message type, request name, want-reply)."""
    length = struct.unpack(">I", peer.recv(4, socket.MSG_WAITALL))[0]
    body = peer.recv(length, socket.MSG_WAITALL)
    padding = body[0]
    message = paramiko.Message(body[1 : length - padding])
    return message.get_byte()[0], message.get_text(), message.get_boolean()


def nothing_sent(peer: socket.socket) -> bool:
    """Nothing waiting to be read (the probe, were one sent, is written before send_probe returns)."""
    timeout = peer.gettimeout()
    peer.setblocking(False)
    try:
        peer.recv(1)
    except BlockingIOError:
        return True
    finally:
        peer.settimeout(timeout)
    return False


def watch_of(transport: paramiko.Transport, reads: Reads, lost: list[str], count_max: int = 3) -> KeepaliveWatch:
    return KeepaliveWatch(transport, reads, interval=10.0, count_max=count_max, on_lost=lambda: lost.append("lost"))


def test_a_probe_is_a_global_request_that_wants_a_reply(link: tuple[paramiko.Transport, socket.socket]) -> None:
    transport, peer = link
    watch = watch_of(transport, Reads(), [])
    assert watch.send_probe() is True
    assert read_probe(peer) == (MSG_GLOBAL_REQUEST, KEEPALIVE_REQUEST, True)
    assert KEEPALIVE_REQUEST == "keepalive@openssh.com"  # the name sshd answers (OpenSSH's own)


def test_a_quiet_tunnel_is_lost_after_count_max_unanswered_probes(link: tuple[paramiko.Transport, socket.socket]) -> None:
    transport, peer = link
    lost: list[str] = []
    watch = watch_of(transport, Reads(), lost, count_max=3)
    for sent in range(1, 4):
        watch.check()
        assert read_probe(peer)[1] == KEEPALIVE_REQUEST
        assert (watch.unanswered, watch.lost, lost) == (sent, False, [])
    watch.check()  # the fourth quiet interval: three probes went unanswered
    assert (watch.lost, lost) == (True, ["lost"])
    assert nothing_sent(peer)
    watch.check()  # once lost, nothing more: no second report, no probe
    assert (lost, watch.unanswered) == (["lost"], 3)
    assert nothing_sent(peer)


def test_any_byte_arriving_answers_the_probes(link: tuple[paramiko.Transport, socket.socket]) -> None:
    transport, peer = link
    reads = Reads()
    lost: list[str] = []
    watch = watch_of(transport, reads, lost, count_max=2)
    watch.check()
    watch.check()
    assert watch.unanswered == 2
    reads.count += 1  # sshd answered (or anything else came)
    watch.check()
    assert (watch.unanswered, watch.answered, watch.lost) == (0, 1, False)
    assert (read_probe(peer)[1], read_probe(peer)[1]) == (KEEPALIVE_REQUEST, KEEPALIVE_REQUEST)
    assert nothing_sent(peer)  # the check that saw the answer sends nothing
    reads.count += 1
    watch.check()  # traffic with no probe out: not an answer to anything
    assert (watch.unanswered, watch.answered) == (0, 1)
    watch.check()
    reads.count += 1  # answered again: a second quiet spell that was not a dead session
    watch.check()
    assert (watch.unanswered, watch.answered) == (0, 2)
    watch.check()
    watch.check()
    watch.check()
    assert (watch.lost, lost) == (True, ["lost"])


def test_reads_before_the_watch_began_are_not_an_answer(link: tuple[paramiko.Transport, socket.socket]) -> None:
    transport, peer = link
    reads = Reads()
    reads.count = 7  # the key exchange and login already read from the tunnel
    watch = watch_of(transport, reads, [])
    watch.check()
    assert watch.unanswered == 1
    assert read_probe(peer)[1] == KEEPALIVE_REQUEST


def test_a_skipped_probe_still_counts_as_unanswered(link: tuple[paramiko.Transport, socket.socket]) -> None:
    transport, peer = link
    lost: list[str] = []
    watch = watch_of(transport, Reads(), lost, count_max=1)
    transport.clear_to_send.clear()  # a key exchange under way
    watch.check()
    assert watch.unanswered == 1
    assert nothing_sent(peer)
    watch.check()
    assert lost == ["lost"]


def test_no_probe_while_a_global_request_of_the_users_awaits_its_reply(link: tuple[paramiko.Transport, socket.socket]) -> None:
    transport, peer = link
    watch = watch_of(transport, Reads(), [])
    transport.completion_event = threading.Event()
    assert watch.send_probe() is False
    assert nothing_sent(peer)
    transport.completion_event.set()  # that request got its reply
    assert watch.send_probe() is True
    assert read_probe(peer)[1] == KEEPALIVE_REQUEST


def test_no_probe_during_a_key_exchange(link: tuple[paramiko.Transport, socket.socket]) -> None:
    transport, peer = link
    transport.clear_to_send.clear()
    assert watch_of(transport, Reads(), []).send_probe() is False
    assert nothing_sent(peer)


@pytest.mark.parametrize("which", ["clear_to_send_lock", "write_lock"])
def test_no_probe_while_another_thread_is_sending(link: tuple[paramiko.Transport, socket.socket], which: str) -> None:
    """The lock is held by another thread (a send stuck on a full socket): waiting for it would block paramiko's
    transport thread, which must stay free to read."""
    transport, peer = link
    lock = transport.clear_to_send_lock if which == "clear_to_send_lock" else transport.packetizer._Packetizer__write_lock
    taken, release = threading.Event(), threading.Event()

    def hold() -> None:
        with lock:
            taken.set()
            release.wait()

    holder = threading.Thread(target=hold)
    holder.start()
    taken.wait()
    try:
        watch = watch_of(transport, Reads(), [])
        assert watch.send_probe() is False
        assert nothing_sent(peer)
    finally:
        release.set()
        holder.join()
    assert watch.send_probe() is True  # and the locks it took were released: it can go out now
    assert watch.send_probe() is True
    assert read_probe(peer)[1] == KEEPALIVE_REQUEST


def test_no_probe_into_a_full_socket(link: tuple[paramiko.Transport, socket.socket]) -> None:
    """A dead tunnel stops reading: the socket fills, and a send would block the transport thread."""
    transport, peer = link
    transport.sock.setblocking(False)
    try:
        while True:
            transport.sock.send(b"\0" * 65536)
    except BlockingIOError:
        pass
    transport.sock.setblocking(True)
    assert watch_of(transport, Reads(), []).send_probe() is False


def test_no_probe_into_a_closed_socket(link: tuple[paramiko.Transport, socket.socket]) -> None:
    transport, _ = link
    transport.sock.close()
    assert watch_of(transport, Reads(), []).send_probe() is False


def test_no_probe_when_the_peer_is_gone(link: tuple[paramiko.Transport, socket.socket]) -> None:
    transport, peer = link
    peer.close()
    assert watch_of(transport, Reads(), []).send_probe() is False


def test_install_hooks_the_check_into_paramiko_only_with_an_interval(link: tuple[paramiko.Transport, socket.socket]) -> None:
    transport, _ = link
    packetizer = transport.packetizer
    KeepaliveWatch(transport, Reads(), interval=0, count_max=3, on_lost=lambda: None).install()
    assert packetizer._Packetizer__keepalive_callback is None
    watch = KeepaliveWatch(transport, Reads(), interval=0.5, count_max=3, on_lost=lambda: None)
    watch.install()
    assert packetizer._Packetizer__keepalive_interval == 0.5
    assert packetizer._Packetizer__keepalive_callback == watch.check
