"""The fan-out engine on its own: bounds, rolling batches, the failure budget, per-host results.

Hosts here are stand-in connections (the engine only opens, runs and closes them); what a real connection
does through SSM is covered by tests/integration/test_fleet.py. Every test is driven by events (who started,
who finished), never by the clock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from ssmfab.exceptions import CommandError, FleetError, SSHError
from ssmfab.fleet import FanOut, HostResult, Policy, fan_out
from ssmfab.targets import Target


class FakeConnection:
    """Just what FanOut uses of an SSMConnection: a label, close(), explain()."""

    def __init__(self, target: Target, log: list[str]) -> None:
        self.target = target
        self.label = target.label
        self.log = log
        self.closed = threading.Event()

    def close(self) -> None:
        self.log.append(f"close {self.target.id}")
        self.closed.set()

    def explain(self, exc: BaseException) -> Exception | None:
        return SSHError(f"{self.label}: explained {exc}", self.label) if "explain me" in str(exc) else None


def targets(count: int) -> list[Target]:
    return [Target(id=f"i-{n:08x}", name=f"host-{n}") for n in range(1, count + 1)]


class Harness:
    def __init__(self) -> None:
        self.log: list[str] = []
        self.connections: dict[str, FakeConnection] = {}
        self.lock = threading.Lock()

    def connect(self, target: Target) -> Any:
        conn = FakeConnection(target, self.log)
        with self.lock:
            self.connections[target.id] = conn
            self.log.append(f"start {target.id}")
        return conn

    @property
    def started(self) -> list[str]:
        return [entry.split()[1] for entry in self.log if entry.startswith("start ")]


def failing(conn: Any) -> str:
    raise CommandError(conn.label, "false", 1, "")


def test_past_the_failure_budget_no_new_host_starts_within_a_batch() -> None:
    # One batch of 6 hosts, one at a time, every one failing at once: the budget (0 failures) is spent by
    # the first, so nothing else may start. Checking the budget only between batches would start all 6.
    harness = Harness()
    hosts = targets(6)
    result = FanOut(hosts, harness.connect, failing, Policy(parallel=1, max_failures=0)).run()
    assert harness.started == [hosts[0].id]
    assert [r.status for r in result.results] == ["failed"] + ["skipped"] * 5
    assert [r.target.id for r in result.failed] == [hosts[0].id]
    assert len(result.not_started) == 5
    assert all(r.error == "not started: more than 0 host(s) failed (--max-failures)" for r in result.not_started)
    with pytest.raises(FleetError) as caught:
        result.raise_for_failures()
    assert str(caught.value) == f"1 of 6 hosts failed (5 not started): {hosts[0].label}: `false` exited 1"
    assert caught.value.failures == {hosts[0].label: "`false` exited 1"}


def test_hosts_in_flight_finish_but_none_starts_after_the_budget_is_spent() -> None:
    # Two at a time: host-1 fails once host-2 runs; host-2 is let go only once host-1's failure was
    # reported, so the engine knows the budget is spent before any slot frees up.
    harness = Harness()
    hosts = targets(5)
    second_running, first_reported = threading.Event(), threading.Event()

    def operation(conn: Any) -> str:
        if conn.target.id == hosts[0].id:
            assert second_running.wait(30), "host-2 never started"
            raise CommandError(conn.label, "false", 3, "boom")
        second_running.set()
        assert first_reported.wait(30), "host-1's failure was never reported"
        return "ok"

    def on_result(result: HostResult[str]) -> None:
        if result.target.id == hosts[0].id:
            first_reported.set()

    result = FanOut(hosts, harness.connect, operation, Policy(parallel=2, max_failures="0"), on_result).run()
    assert sorted(harness.started) == [hosts[0].id, hosts[1].id]
    assert [r.status for r in result.results] == ["failed", "ok", "skipped", "skipped", "skipped"]
    assert result[hosts[0].id].exit_code == 3
    assert result[hosts[1].id].value == "ok"


def test_the_budget_tolerates_exactly_max_failures() -> None:
    harness = Harness()
    hosts = targets(6)
    result = FanOut(hosts, harness.connect, failing, Policy(parallel=1, max_failures=2)).run()
    assert harness.started == [h.id for h in hosts[:3]]  # the 3rd failure exceeds a budget of 2
    assert [r.status for r in result.results] == ["failed"] * 3 + ["skipped"] * 3


def test_no_budget_runs_every_host_and_keeps_each_result() -> None:
    harness = Harness()
    hosts = targets(4)

    def operation(conn: Any) -> str:
        if conn.target.id == hosts[2].id:
            raise RuntimeError("explain me")
        if conn.target.id == hosts[3].id:
            raise ValueError("surprise")
        return conn.target.id.upper()

    result = fan_out(hosts, harness.connect, operation, parallel=3)
    assert sorted(harness.started) == sorted(h.id for h in hosts)
    assert [r.value for r in result.succeeded] == [hosts[0].id.upper(), hosts[1].id.upper()]
    assert result[hosts[2].id].error == f"{hosts[2].label}: explained explain me"
    assert result[hosts[3].id].error == f"{hosts[3].label}: ValueError: surprise"
    assert all(conn.closed.is_set() for conn in harness.connections.values())
    assert [r.status for r in result.results] == ["ok", "ok", "failed", "failed"]
    assert not result.not_started
    with pytest.raises(KeyError):
        result["i-ffffffff"]


def test_a_batch_finishes_before_the_next_starts() -> None:
    harness = Harness()
    hosts = targets(5)
    result = FanOut(hosts, harness.connect, lambda conn: "ok", Policy(parallel=5, batch=2)).run()
    kinds = [(kind, target_id) for _, kind, target_id in result.events]
    # Every host of a batch has ended before any host of the next starts.
    for batch_start in (2, 4):
        first_of_next = kinds.index(("start", hosts[batch_start].id))
        ended_before = {t for kind, t in kinds[:first_of_next] if kind == "end"}
        assert {h.id for h in hosts[:batch_start]} <= ended_before
    assert len(result.succeeded) == 5


def test_a_failure_in_an_earlier_batch_stops_later_batches() -> None:
    harness = Harness()
    hosts = targets(4)

    def operation(conn: Any) -> str:
        if conn.target.id == hosts[1].id:
            raise CommandError(conn.label, "false", 1, "")
        return "ok"

    result = FanOut(hosts, harness.connect, operation, Policy(parallel=2, batch=2, max_failures=0)).run()
    assert sorted(harness.started) == [hosts[0].id, hosts[1].id]
    assert [r.status for r in result.results] == ["ok", "failed", "skipped", "skipped"]


def test_parallel_bound_holds() -> None:
    harness = Harness()
    hosts = targets(6)
    release = threading.Semaphore(0)
    in_flight = 0
    peak = 0
    lock = threading.Lock()

    def operation(conn: Any) -> str:
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
            if in_flight == 2:
                release.release(6)  # both slots are busy: let everyone through
        release.acquire(timeout=30)
        with lock:
            in_flight -= 1
        return "ok"

    result = fan_out(hosts, harness.connect, operation, parallel=2)
    assert peak == 2
    assert len(result.succeeded) == 6


def test_a_host_past_its_timeout_has_its_connection_cut_and_fails() -> None:
    # The operation blocks until its connection is closed, as a command does when its tunnel is cut.
    harness = Harness()
    hosts = targets(1)

    def operation(conn: Any) -> str:
        assert conn.closed.wait(60), "the overdue host's connection was never closed"
        raise SSHError(f"{conn.label}: connection lost", conn.label)

    result = FanOut(hosts, harness.connect, operation, Policy(parallel=1, timeout=0.01)).run()
    [only] = result.results
    assert only.error == f"{hosts[0].label}: timed out after 0.01s (--timeout)"
    assert only.exit_code is None and only.status == "failed"


def test_ctrl_c_closes_every_open_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    harness = Harness()
    hosts = targets(3)
    both_running = threading.Barrier(3)

    def operation(conn: Any) -> str:
        both_running.wait(30)
        assert conn.closed.wait(60)
        raise SSHError(f"{conn.label}: connection lost", conn.label)

    import ssmfab.fleet as fleet_module

    real_wait: Callable[..., Any] = fleet_module.wait

    def interrupted_wait(*args: Any, **kwargs: Any) -> Any:
        both_running.wait(30)  # both hosts are inside their operation: now the user presses Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(fleet_module, "wait", interrupted_wait)
    with pytest.raises(KeyboardInterrupt):
        FanOut(hosts, harness.connect, operation, Policy(parallel=2)).run()
    monkeypatch.setattr(fleet_module, "wait", real_wait)
    assert sorted(harness.started) == [hosts[0].id, hosts[1].id]
    assert all(harness.connections[h.id].closed.is_set() for h in hosts[:2])


def test_percentages_count_hosts_batches_up_and_budgets_down() -> None:
    engine = FanOut(targets(8), Harness().connect, failing, Policy(batch="30%", max_failures="30%"))
    assert (engine.batch_size, engine.max_failures) == (3, 2)  # 2.4 hosts: a batch of 3, a budget of 2
    assert FanOut(targets(8), Harness().connect, failing, Policy()).batch_size == 8


@pytest.mark.parametrize(("field", "flag"), [("batch", "--batch"), ("max_failures", "--max-failures")])
def test_bad_counts_name_their_flag(field: str, flag: str) -> None:
    from ssmfab.exceptions import ConfigError

    with pytest.raises(ConfigError, match=f"^{flag} 'x': expected a whole number"):
        FanOut(targets(2), Harness().connect, failing, Policy(**{field: "x"}))  # type: ignore[arg-type]


@pytest.mark.parametrize("given", ["0", 0, " 0 "])
def test_a_batch_of_zero_hosts_is_refused_naming_the_flag(given: str | int) -> None:
    # 0 is not "no batching" (leave --batch out for that): a batch of no hosts would never finish a host.
    from ssmfab.exceptions import ConfigError

    with pytest.raises(ConfigError) as caught:
        FanOut(targets(3), Harness().connect, failing, Policy(batch=given)).run()
    assert str(caught.value) == "--batch must be at least 1 host, got 0"
    assert "\n" not in str(caught.value)
