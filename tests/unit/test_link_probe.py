"""The link probe that compression weighs (transfer.compress._probe), over a real SSH connection to the loopback
sshd: what it runs on the host, what crosses the link, the timeout it sets, and how it counts the exec's round
trip out of the time. The clock is the test's own (three readings), so the arithmetic is checked exactly."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fabric import Connection

from ssmfab.sandbox.sshd import SSHServer
from ssmfab.transfer import compress

from .conftest import loopback_connection


class SpyChannel:
    """A real channel that notes the timeouts set, the command run and the bytes that crossed."""

    def __init__(self, channel: Any, spy: SpyTransport) -> None:
        self._channel, self._spy = channel, spy

    def settimeout(self, timeout: float | None) -> None:
        self._spy.timeouts.append(timeout)
        self._channel.settimeout(timeout)

    def exec_command(self, command: str) -> None:
        self._spy.commands.append(command)
        self._channel.exec_command(command)

    def sendall(self, data: bytes) -> None:
        self._spy.sent += len(data)
        self._channel.sendall(data)

    def recv(self, size: int) -> bytes:
        data: bytes = self._channel.recv(size)
        self._spy.received += len(data)
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._channel, name)


class SpyTransport:
    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self.opened: list[dict[str, Any]] = []
        self.timeouts: list[float | None] = []
        self.commands: list[str] = []
        self.sent = self.received = 0

    def open_session(self, **kwargs: Any) -> SpyChannel:
        self.opened.append(kwargs)
        return SpyChannel(self._transport.open_session(**kwargs), self)


@pytest.fixture
def transport(server: tuple[SSHServer, Path]) -> Iterator[SpyTransport]:
    with loopback_connection(server, Connection) as connection:
        connection.open()
        yield SpyTransport(connection.client.get_transport())


def clock(monkeypatch: pytest.MonkeyPatch, *readings: float) -> None:
    """The probe's clock: asked (before the exec), started (its answer), then the end."""
    monkeypatch.setattr(compress, "time", SimpleNamespace(perf_counter=iter(readings).__next__))


def test_an_upload_probe_sends_its_bytes_into_cat_and_counts_the_round_trip_out(
    transport: SpyTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock(monkeypatch, 10.0, 10.5, 12.5)  # the exec answered in 0.5 s, the end came 2 s after it
    rate = compress._probe(transport, "put", 65536, 7.0)
    assert rate == 65536 / 1.5  # 2 s less the round trip at the end
    assert transport.commands == ["cat > /dev/null"] and transport.sent == 65536 and transport.received == 0
    assert transport.opened == [{"timeout": 7.0}] and transport.timeouts == [7.0]


def test_a_download_probe_reads_what_the_host_makes_of_zeros(transport: SpyTransport, monkeypatch: pytest.MonkeyPatch) -> None:
    clock(monkeypatch, 3.0, 3.25, 5.25)
    rate = compress._probe(transport, "get", 100_000, 4.0)
    assert rate == 100_000 / 1.75
    assert transport.commands == ["head -c 100000 /dev/zero"] and transport.received == 100_000 and transport.sent == 0
    assert transport.opened == [{"timeout": 4.0}] and transport.timeouts == [4.0]


def test_a_probe_faster_than_the_clock_can_tell_is_bounded(transport: SpyTransport, monkeypatch: pytest.MonkeyPatch) -> None:
    clock(monkeypatch, 1.0, 1.5, 2.0)  # the whole time was the round trip
    assert compress._probe(transport, "put", 1000, 5.0) == 1000 / 1e-4


def test_a_probe_as_fast_as_the_slow_mark_is_timed_again_with_the_large_probe_and_remembered(
    transport: SpyTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(compress, "SLOW_LINK", float(compress.PROBE_BYTES))  # the first probe reads exactly this
    clock(monkeypatch, 10.0, 10.25, 11.5, 20.0, 20.25, 22.5)  # 1 s for the small probe, then 2 s for the large
    conn = SimpleNamespace(link_rates={})
    rate = compress.link_rate(conn, transport, "put", 9.0)
    assert rate == compress.LARGE_PROBE_BYTES / 2.0 and conn.link_rates == {"put": rate}
    assert transport.commands == ["cat > /dev/null"] * 2 and transport.sent == compress.PROBE_BYTES + compress.LARGE_PROBE_BYTES
    assert transport.opened == [{"timeout": 9.0}] * 2 and transport.timeouts == [9.0] * 2
    assert compress.link_rate(conn, transport, "put", 9.0) == rate and len(transport.commands) == 2  # remembered


def test_a_slow_link_is_timed_once_and_a_connection_without_a_memory_still_gets_its_rate(
    transport: SpyTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock(monkeypatch, 1.0, 1.5, 3.0)  # 64 KiB in 1 s: far below the slow mark, no second probe
    rate = compress.link_rate(object(), transport, "get", 6.0)  # a plain Fabric connection has no link_rates
    assert rate == compress.PROBE_BYTES / 1.0
    assert transport.commands == [f"head -c {compress.PROBE_BYTES} /dev/zero"] and transport.opened == [{"timeout": 6.0}]
