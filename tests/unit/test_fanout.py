"""The fan-out engine on its own: bounds, rolling batches, the failure budget, per-host results.

Hosts here are stand-in connections (the engine only opens, runs and closes them); what a real connection
does through SSM is covered by tests/integration/test_fleet.py. Every test is driven by events (who started,
who finished), never by the clock.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from ssmfab.exceptions import CommandError, FleetError, SSHError
from ssmfab.fleet import FanOut, HostResult, Policy, fan_out, run_command
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

    pressed: list[bool] = []

    def interrupted_wait(*args: Any, **kwargs: Any) -> Any:
        if pressed:  # the engine's own waits after Ctrl-C (for hosts to stop) are real ones
            return real_wait(*args, **kwargs)
        both_running.wait(30)  # both hosts are inside their operation: now the user presses Ctrl-C
        pressed.append(True)
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
    assert str(caught.value) == "--batch 0: a batch needs at least 1 host (leave --batch out to run all at once)"
    assert "\n" not in str(caught.value)


def test_a_host_that_cannot_be_reached_fails_alone_with_its_cause() -> None:
    # connect() itself fails (tunnel refused, sshd down): there is no connection to close or to explain.
    harness = Harness()
    hosts = targets(3)

    def connect(target: Target) -> Any:
        if target.id == hosts[0].id:
            raise SSHError(f"{target.label}: could not reach sshd", target.label)
        if target.id == hosts[1].id:
            raise RuntimeError("no route")
        return harness.connect(target)

    result = fan_out(hosts, connect, lambda conn: "ok", parallel=1)
    assert result[hosts[0].id].error == f"{hosts[0].label}: could not reach sshd"
    assert result[hosts[1].id].error == f"{hosts[1].label}: RuntimeError: no route"
    assert [r.status for r in result.results] == ["failed", "failed", "ok"]
    assert harness.log == [f"start {hosts[2].id}", f"close {hosts[2].id}"]


def test_each_result_carries_its_host_exit_status_and_timing() -> None:
    harness = Harness()
    hosts = targets(3)
    seen: list[str] = []

    def operation(conn: Any) -> Any:
        if conn.target.id == hosts[0].id:
            return SimpleNamespace(exited=0, stdout="fine")  # what a command's Result carries
        if conn.target.id == hosts[1].id:
            raise SSHError(f"{conn.label}: connection lost", conn.label)
        return "no exit status"

    before = time.monotonic()
    result = fan_out(hosts, harness.connect, operation, parallel=2, on_result=lambda host: seen.append(host.target.id))
    after = time.monotonic()
    assert sorted(seen) == sorted(h.id for h in hosts)  # on_result heard of every host
    assert [r.target.id for r in result.results] == [h.id for h in hosts]
    assert [r.exit_code for r in result.results] == [0, None, None]
    assert result[hosts[1].id].error == f"{hosts[1].label}: connection lost"
    for host in result.results:
        assert before <= host.started <= host.ended <= after
        assert host.duration == host.ended - host.started
    # Each connection is closed exactly once, by its own host, when it finishes.
    assert sorted(entry for entry in harness.log if entry.startswith("close")) == sorted(f"close {h.id}" for h in hosts)


def test_hosts_not_started_are_still_reported_as_themselves() -> None:
    hosts = targets(3)
    result = FanOut(hosts, Harness().connect, failing, Policy(parallel=1, max_failures=0)).run()
    assert [(r.target.id, r.status) for r in result.results] == [
        (hosts[0].id, "failed"), (hosts[1].id, "skipped"), (hosts[2].id, "skipped")
    ]  # fmt: skip
    with pytest.raises(KeyError, match="i-ffffffff"):
        result["i-ffffffff"]


def test_a_host_within_its_timeout_is_left_alone_while_others_finish() -> None:
    # host-1 is still running when host-2 finishes (and the engine checks for overdue hosts); it ends only
    # once host-3 has started, i.e. after that check. A generous timeout must not cut it.
    harness = Harness()
    hosts = targets(3)
    third_started = threading.Event()

    def connect(target: Target) -> Any:
        if target.id == hosts[2].id:
            third_started.set()
        return harness.connect(target)

    def operation(conn: Any) -> str:
        if conn.target.id == hosts[0].id:
            assert third_started.wait(30), "host-3 never started"
        return "ok"

    # As long as this machine has been up, plus a minute: no host comes near it (it is also shorter than
    # the sum of two clock readings, so adding instead of subtracting them would show).
    result = FanOut(hosts, connect, operation, Policy(parallel=2, timeout=time.monotonic() + 60)).run()
    assert [r.status for r in result.results] == ["ok", "ok", "ok"], [r.error for r in result.results]
    assert harness.log.count(f"close {hosts[0].id}") == 1


@pytest.mark.parametrize(("given", "total", "batch", "budget"), [("100%", 7, 7, 7), ("50%", 4, 2, 2), ("1%", 5, 1, 0)])
def test_percentages_at_the_edges(given: str, total: int, batch: int, budget: int) -> None:
    engine = FanOut(targets(total), Harness().connect, failing, Policy(batch=given, max_failures=given))
    assert (engine.batch_size, engine.max_failures) == (batch, budget)


def test_a_zero_percent_batch_is_refused_but_a_zero_percent_budget_is_none() -> None:
    from ssmfab.exceptions import ConfigError

    assert FanOut(targets(5), Harness().connect, failing, Policy(max_failures="0%")).max_failures == 0
    with pytest.raises(ConfigError, match=r"^--batch 0%: a batch needs at least 1 host"):
        FanOut(targets(5), Harness().connect, failing, Policy(batch="0%"))


@pytest.mark.parametrize("given", ["100.5%", "101%", "-1%", "-1", "%", "1.5"])
def test_counts_out_of_range_are_refused(given: str) -> None:
    from ssmfab.exceptions import ConfigError

    with pytest.raises(ConfigError, match=f"^--max-failures '{re.escape(given)}': expected a whole number or a percentage"):
        FanOut(targets(2), Harness().connect, failing, Policy(max_failures=given))


class FakeResult(SimpleNamespace):
    """What run_command reads of Fabric's Result."""

    @property
    def failed(self) -> bool:
        return bool(self.exited)


class CommandConnection:
    def __init__(self, result: FakeResult) -> None:
        self.label = "web-1 (i-00000001)"
        self.result = result
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def run(self, command: str, **kwargs: Any) -> FakeResult:
        self.calls.append((command, kwargs))
        return self.result


def test_run_command_returns_the_result_of_a_command_that_succeeded() -> None:
    conn = CommandConnection(FakeResult(exited=0, stderr=""))
    assert run_command("uptime", hide=True)(conn) is conn.result  # type: ignore[arg-type]
    assert conn.calls == [("uptime", {"warn": True, "hide": True})]  # warn: a failure is judged here, per host


def test_run_command_turns_a_non_zero_exit_into_a_command_error_with_the_last_stderr_line() -> None:
    conn = CommandConnection(FakeResult(exited=3, stderr="x" * 5000 + "\nfirst\nlast words\n"))
    with pytest.raises(CommandError) as caught:
        run_command("make")(conn)  # type: ignore[arg-type]
    assert str(caught.value) == "web-1 (i-00000001): `make` exited 3: last words"
    assert caught.value.returncode == 3 and caught.value.host == "web-1 (i-00000001)"
    assert len(caught.value.stderr_tail) == 2000 and caught.value.stderr_tail.endswith("last words\n")


def test_run_command_says_the_connection_was_lost_when_there_is_no_exit_status() -> None:
    conn = CommandConnection(FakeResult(exited=-1, stderr=""))
    with pytest.raises(SSHError) as caught:
        run_command("sleep 60")(conn)  # type: ignore[arg-type]
    assert str(caught.value) == "web-1 (i-00000001): SSH connection lost mid-command (no exit status from `sleep 60`)"
    assert caught.value.host == "web-1 (i-00000001)"


def test_ctrl_c_after_a_host_finished_closes_only_what_is_still_open(monkeypatch: pytest.MonkeyPatch) -> None:
    # One at a time: host-1 finishes, host-2 is running when the user presses Ctrl-C. host-2 is closed by
    # the interrupt; host-1 was closed once, when it finished, and is not touched again (a finished host
    # must leave the engine's list of open connections).
    import ssmfab.fleet as fleet_module

    harness = Harness()
    hosts = targets(2)
    second_running = threading.Event()
    real_wait: Callable[..., Any] = fleet_module.wait
    calls = 0

    def operation(conn: Any) -> str:
        if conn.target.id == hosts[1].id:
            second_running.set()
            assert conn.closed.wait(60)
            raise SSHError(f"{conn.label}: connection lost", conn.label)
        return "ok"

    def wait_then_interrupt(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            return real_wait(*args, **kwargs)
        assert second_running.wait(30)
        raise KeyboardInterrupt

    monkeypatch.setattr(fleet_module, "wait", wait_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        FanOut(hosts, harness.connect, operation, Policy(parallel=1)).run()
    monkeypatch.setattr(fleet_module, "wait", real_wait)
    assert harness.log.count(f"close {hosts[0].id}") == 1
    assert harness.connections[hosts[1].id].closed.is_set()  # then closed again by its own worker: harmless
