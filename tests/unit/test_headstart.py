"""The tunnel opened beside a lookup (ssmfab.headstart): handed to the first connection to its instance and to no
other, closed when nobody takes it (also when its opening ends only after the drop), and never an error of its
own. The factory here is a stand-in whose ``open`` can be held and made to fail; the integration tests
(tests/integration/test_head_start.py) run the same through AWS's plugin and the sandbox."""

from __future__ import annotations

import threading
import time

import pytest

from ssmfab.exceptions import TunnelError
from ssmfab.headstart import HeadStartTunnels

INSTANCE = "i-0123456789abcdef0"
OTHER = "i-0fedcba9876543210"


class Tunnel:
    def __init__(self, target_id: str, serial: int) -> None:
        self.target_id, self.serial = target_id, serial
        self.closed = threading.Event()

    def close(self) -> None:
        self.closed.set()


class Factory:
    """Opens numbered tunnels; ``gate`` (when given) holds every open until set; ``fail`` makes opens fail."""

    mode = "plugin"

    def __init__(self, gate: threading.Event | None = None, fail: int = 0) -> None:
        self.gate = gate
        self.fail = fail
        self.opened: list[Tunnel] = []
        self.labels: list[str | None] = []
        self.checked = self.prepared = 0

    def check(self) -> None:
        self.checked += 1

    def prepare(self) -> None:
        self.prepared += 1

    def open(self, target_id: str, label: str | None = None) -> Tunnel:
        if self.gate is not None:
            self.gate.wait()
        self.labels.append(label)
        if self.fail:
            self.fail -= 1
            raise TunnelError(f"{label}: StartSession failed")
        tunnel = Tunnel(target_id, len(self.opened))
        self.opened.append(tunnel)
        return tunnel


def test_the_first_open_of_the_instance_takes_the_early_tunnel_and_later_ones_open_their_own() -> None:
    factory = Factory()
    tunnels = HeadStartTunnels(factory, INSTANCE)  # type: ignore[arg-type]
    first = tunnels.open(INSTANCE, f"web-1 ({INSTANCE})")
    assert first is factory.opened[0] and factory.labels == [INSTANCE]  # opened before the lookup named it
    second = tunnels.open(INSTANCE, f"web-1 ({INSTANCE})")  # a reconnection, a striping sibling
    assert second is factory.opened[1] and factory.labels[1] == f"web-1 ({INSTANCE})"
    tunnels.drop(1.0)
    assert not first.closed.is_set() and not second.closed.is_set()  # taken ones are their connections'


def test_another_instance_never_gets_the_early_tunnel() -> None:
    factory = Factory()
    tunnels = HeadStartTunnels(factory, INSTANCE)  # type: ignore[arg-type]
    other = tunnels.open(OTHER, "db-1")
    assert other.target_id == OTHER  # type: ignore[attr-defined]
    assert tunnels.open(INSTANCE).target_id == INSTANCE  # type: ignore[attr-defined]
    assert len(factory.opened) == 2


def test_an_early_tunnel_that_failed_is_opened_again_and_that_attempt_reports() -> None:
    factory = Factory(fail=2)
    tunnels = HeadStartTunnels(factory, INSTANCE)  # type: ignore[arg-type]
    with pytest.raises(TunnelError, match=r"^web-1 \(i-"):
        tunnels.open(INSTANCE, f"web-1 ({INSTANCE})")
    assert factory.labels == [INSTANCE, f"web-1 ({INSTANCE})"]


def test_an_untaken_tunnel_is_closed_by_drop_and_none_is_handed_out_after() -> None:
    factory = Factory()
    tunnels = HeadStartTunnels(factory, INSTANCE)  # type: ignore[arg-type]
    deadline = time.monotonic() + 10
    while not factory.opened and time.monotonic() < deadline:
        time.sleep(0.01)
    tunnels.drop(1.0)
    assert factory.opened[0].closed.is_set()
    fresh = tunnels.open(INSTANCE, "web-1")
    assert fresh is factory.opened[1] and not fresh.closed.is_set()
    tunnels.drop(1.0)  # twice: nothing more happens
    assert not fresh.closed.is_set()


def test_a_drop_while_the_tunnel_still_opens_returns_in_time_and_the_tunnel_closes_once_open() -> None:
    gate = threading.Event()
    factory = Factory(gate=gate)
    tunnels = HeadStartTunnels(factory, INSTANCE)  # type: ignore[arg-type]
    started = time.monotonic()
    tunnels.drop(0.2)  # AWS not answering StartSession: the command must not wait for it
    assert time.monotonic() - started < 5
    gate.set()  # StartSession answers after all
    thread = next(t for t in threading.enumerate() if t.name == f"ssmfab-head-start-{INSTANCE}")
    thread.join(10)
    assert factory.opened[0].closed.is_set()


def test_checks_go_to_the_wrapped_factory() -> None:
    factory = Factory()
    tunnels = HeadStartTunnels(factory, INSTANCE)  # type: ignore[arg-type]
    tunnels.check()
    tunnels.prepare()
    assert (factory.checked, factory.prepared, tunnels.mode) == (1, 1, "plugin")
    tunnels.drop(1.0)
