"""TunnelSocket: what a plugin prints before sshd's banner is kept aside, paramiko reads from the banner on."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from paramiko.packet import Packetizer

from ssmfab.tunnelsocket import PreambleTooLong, TunnelSocket

GREETING = b"\nStarting session with SessionId: ops-0a1b2c3d4e5f\n"
BANNER = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"
#: What follows a banner: binary packets, which may hold newlines and "SSH-" of their own.
PACKET = b"\x00\x00\x01\x0c\x0a\x14SSH-\nnot a line\x00\xff"


@pytest.fixture
def pair() -> Iterator[tuple[TunnelSocket, socket.socket]]:
    ours, plugin = socket.socketpair()
    wrapped = TunnelSocket(ours, cap=1024)
    wrapped.settimeout(0.01)  # as paramiko does (0.1 s): a read with nothing to give times out
    yield wrapped, plugin
    wrapped.close()
    plugin.close()


def read_until_data(sock: TunnelSocket, size: int = 4096) -> bytes:
    """recv as paramiko calls it: again after each timeout, until bytes (or EOF) come."""
    for _ in range(1000):
        try:
            return sock.recv(size)
        except socket.timeout:
            continue
    raise AssertionError("no data")


def test_the_greeting_is_kept_and_paramiko_reads_from_the_banner_on(pair: tuple[TunnelSocket, socket.socket]) -> None:
    sock, plugin = pair
    plugin.sendall(GREETING + BANNER + PACKET)
    assert read_until_data(sock) == BANNER + PACKET
    assert sock.preamble == ["", "Starting session with SessionId: ops-0a1b2c3d4e5f"]
    assert sock.session_id == "ops-0a1b2c3d4e5f"
    assert sock.reason == ""  # the plugin's own greeting says nothing about a failure
    assert sock.banner_seen


def test_lines_split_across_reads_and_a_banner_in_pieces(pair: tuple[TunnelSocket, socket.socket]) -> None:
    sock, plugin = pair
    for piece in (b"\nStarting sess", b"ion with SessionId: s-1\r\nS", b"SH"):
        plugin.sendall(piece)
        with pytest.raises(socket.timeout):  # nothing for paramiko yet: it waits on (for its first line)
            sock.recv(128)
    plugin.sendall(b"-2.0-Open")
    assert read_until_data(sock) == b"SSH-2.0-Open"  # the banner's start: paramiko reads the rest of its line
    plugin.sendall(b"SSH_9.2\r\n" + PACKET)
    assert read_until_data(sock) == b"SSH_9.2\r\n" + PACKET
    assert sock.preamble == ["", "Starting session with SessionId: s-1"]


def test_a_small_read_gets_the_rest_next_time_then_reads_go_straight_to_the_socket(pair: tuple[TunnelSocket, socket.socket]) -> None:
    sock, plugin = pair
    plugin.sendall(GREETING + BANNER + PACKET)
    wanted = BANNER + PACKET
    got = read_until_data(sock, 7)
    while len(got) < len(wanted):
        got += sock.recv(7)
    assert got == wanted
    reads = sock.reads
    plugin.sendall(b"more")
    assert sock.recv(64) == b"more"
    assert sock.reads == reads + 1  # counted for the keepalive watch


def test_paramiko_reads_the_banner_as_its_first_line_however_long_the_greeting(pair: tuple[TunnelSocket, socket.socket]) -> None:
    sock, plugin = pair
    plugin.sendall(GREETING + b"a line\n" * 50 + BANNER)
    assert Packetizer(sock).readline(30) == BANNER.decode().rstrip("\r\n")
    assert len(sock.preamble) == 52


def test_a_preamble_longer_than_the_cap_fails_the_read(pair: tuple[TunnelSocket, socket.socket]) -> None:
    sock, plugin = pair
    plugin.sendall(b"not ssh at all\n" * 100)  # 1500 bytes, cap 1024
    with pytest.raises(PreambleTooLong, match="no SSH banner in the first 1024 bytes"):
        for _ in range(1000):
            try:
                sock.recv(128)
            except socket.timeout:
                continue
    assert sock.overflowed and not sock.banner_seen
    assert sum(len(line) + 1 for line in sock.preamble) <= 1024


def test_an_unterminated_line_with_no_newline_never_grows_past_the_cap(pair: tuple[TunnelSocket, socket.socket]) -> None:
    sock, plugin = pair
    plugin.sendall(b"x" * 2000)
    with pytest.raises(PreambleTooLong):
        for _ in range(1000):
            try:
                sock.recv(128)
            except socket.timeout:
                continue


def test_eof_before_the_banner_keeps_the_last_words(pair: tuple[TunnelSocket, socket.socket]) -> None:
    sock, plugin = pair
    plugin.sendall(GREETING + b"\nConnection to destination port failed, check SSM Agent logs.\n\n\nExiting session with sessionId: s.")
    plugin.close()
    assert read_until_data(sock) == b""
    assert sock.reason == "Connection to destination port failed, check SSM Agent logs."
    assert sock.session_id == "ops-0a1b2c3d4e5f"
    assert not sock.banner_seen


def test_nothing_at_all_is_a_timeout_for_paramiko(pair: tuple[TunnelSocket, socket.socket]) -> None:
    sock, plugin = pair
    plugin.sendall(GREETING)
    with pytest.raises(socket.timeout):
        Packetizer(sock).readline(0.2)
    assert sock.session_id == "ops-0a1b2c3d4e5f"


def test_what_paramiko_has_not_read_yet_is_read_on_close_without_waiting(pair: tuple[TunnelSocket, socket.socket]) -> None:
    sock, plugin = pair
    plugin.sendall(GREETING + b"half a li")
    blocking = socket.fromfd(sock.fileno(), socket.AF_UNIX, socket.SOCK_STREAM)  # the tunnel's own copy: no timeout
    try:
        sock.read_available_preamble(via=blocking)
    finally:
        blocking.close()
    assert sock.session_id == "ops-0a1b2c3d4e5f"
    assert sock.preamble[-1] == "half a li"


def test_every_read_before_the_banner_is_counted_once(pair: tuple[TunnelSocket, socket.socket]) -> None:
    sock, plugin = pair
    assert sock.reads == 0
    plugin.sendall(GREETING)
    read_until_data_or_timeout_once(sock)
    assert sock.reads == 1
    plugin.sendall(b"a line\n")
    read_until_data_or_timeout_once(sock)
    assert sock.reads == 2


def read_until_data_or_timeout_once(sock: TunnelSocket) -> None:
    """One recv that finds bytes but no banner: paramiko is told "nothing yet"."""
    with pytest.raises(socket.timeout):
        sock.recv(128)


def test_a_preamble_of_exactly_the_cap_is_kept_whole(pair: tuple[TunnelSocket, socket.socket]) -> None:
    sock, plugin = pair
    lines = [b"x" * 99] * 10 + [b"y" * 23]  # 10 * 100 + 24 = 1024 bytes with their newlines: the cap
    plugin.sendall(b"\n".join(lines) + b"\n" + BANNER)
    assert read_until_data(sock) == BANNER
    assert sock.preamble == [line.decode() for line in lines]
    assert not sock.overflowed


def test_a_line_past_the_cap_is_not_kept(pair: tuple[TunnelSocket, socket.socket]) -> None:
    sock, plugin = pair
    lines = [b"x" * 99] * 10 + [b"y" * 24]  # one byte past the cap
    plugin.sendall(b"\n".join(lines) + b"\n" + BANNER)
    assert read_until_data(sock) == BANNER
    assert sock.preamble == [line.decode() for line in lines[:10]]


def test_preamble_lines_keep_their_text_and_lose_only_a_carriage_return(pair: tuple[TunnelSocket, socket.socket]) -> None:
    sock, plugin = pair
    plugin.sendall(b"agent says X\r\n  padded  \r\nbad byte \xff\xfe X\n" + BANNER)
    assert read_until_data(sock) == BANNER
    assert sock.preamble == ["agent says X", "  padded  ", "bad byte \ufffd\ufffd X"]


def test_reads_after_the_end_keep_the_last_words_once(pair: tuple[TunnelSocket, socket.socket]) -> None:
    sock, plugin = pair
    plugin.sendall(b"last words")
    plugin.close()
    assert read_until_data(sock) == b""
    assert sock.recv(128) == b""  # paramiko may ask again after the end
    assert sock.preamble == ["last words"]
    sock.read_available_preamble()  # and the tunnel's close reads what is left
    assert sock.preamble == ["last words"]


def test_a_tunnel_that_ended_before_paramiko_read_has_its_words_read_on_close(pair: tuple[TunnelSocket, socket.socket]) -> None:
    sock, plugin = pair
    plugin.sendall(GREETING + b"An error occurred (TargetNotConnected)\n")
    plugin.close()
    sock.read_available_preamble()
    assert sock.session_id == "ops-0a1b2c3d4e5f"
    assert sock.reason == "An error occurred (TargetNotConnected)"


def test_a_line_begun_before_close_is_joined_to_its_end(pair: tuple[TunnelSocket, socket.socket]) -> None:
    sock, plugin = pair
    plugin.sendall(GREETING + b"Connection to destina")
    with pytest.raises(socket.timeout):
        sock.recv(128)
    plugin.sendall(b"tion port failed\n")
    plugin.close()
    sock.read_available_preamble()
    assert sock.reason == "Connection to destination port failed"


def test_the_socket_methods_paramiko_uses_are_the_real_sockets(pair: tuple[TunnelSocket, socket.socket]) -> None:
    sock, plugin = pair
    assert sock.gettimeout() == 0.01
    assert sock.family == socket.AF_UNIX  # anything else goes to the real socket too
    assert sock.getsockname() == plugin.getpeername()
    assert sock.send(b"ping") == 4
    sock.sendall(b"pong")
    assert plugin.recv(8, socket.MSG_WAITALL) == b"pingpong"
    sock.shutdown(socket.SHUT_WR)
    assert plugin.recv(8) == b""
