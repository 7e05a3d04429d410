"""Bounded fan-out of one operation over many targets, one SSH connection per host.

Fabric's ThreadingGroup starts one thread per host with no bound, keys results by Connection (equal
addresses collapse) and raises a GroupException with an empty message. Here: at most ``parallel`` hosts
in flight, one ``HostResult`` per target (keyed by instance id), and a FleetError whose message names
every failed host and why. Ctrl-C closes every open connection (and so every tunnel) before returning.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from .config import DEFAULT_PARALLEL
from .connection import SSMConnection
from .exceptions import CommandError, ConfigError, FleetError, SSHError, SSMFabError
from .targets import Target

T = TypeVar("T")


@dataclass
class HostResult(Generic[T]):
    target: Target
    value: T | None = None
    error: str | None = None
    exit_code: int | None = None
    started: float = 0.0
    ended: float = 0.0
    #: Never started, because the failure policy stopped the run first.
    skipped: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def duration(self) -> float:
        return max(0.0, self.ended - self.started)

    @property
    def status(self) -> str:
        return "ok" if self.ok else "skipped" if self.skipped else "failed"


@dataclass
class FleetResult(Generic[T]):
    results: list[HostResult[T]]
    #: (monotonic time, "start" | "end", instance id), in the order they happened.
    events: list[tuple[float, str, str]] = field(default_factory=list)

    @property
    def succeeded(self) -> list[HostResult[T]]:
        return [r for r in self.results if r.ok]

    @property
    def failed(self) -> list[HostResult[T]]:
        return [r for r in self.results if not r.ok and not r.skipped]

    @property
    def not_started(self) -> list[HostResult[T]]:
        return [r for r in self.results if r.skipped]

    def __getitem__(self, instance_id: str) -> HostResult[T]:
        for result in self.results:
            if result.target.id == instance_id:
                return result
        raise KeyError(instance_id)

    def raise_for_failures(self) -> None:
        if self.failed:
            failures = {r.target.label: (r.error or "failed").removeprefix(f"{r.target.label}: ") for r in self.failed}
            raise FleetError(failures, len(self.results), not_started=len(self.not_started))


Operation = Callable[[SSMConnection], T]


def parse_count(value: str | int | None, total: int, what: str, *, round_up: bool) -> int | None:
    """``"3"`` or ``3`` or ``"25%"`` (of ``total``) to a count; None stays None (no limit)."""
    if value is None or value == "":
        return None
    text = str(value).strip()
    try:
        if text.endswith("%"):
            percent = float(text[:-1])
            if not 0 <= percent <= 100:
                raise ValueError
            exact = total * percent / 100
            return max(1, math.ceil(exact)) if round_up else math.floor(exact)
        count = int(text)
        if count < 0:
            raise ValueError
        return count
    except ValueError:
        raise ConfigError(f"--{what} {value!r}: expected a whole number or a percentage like 25%") from None


def checked_parallel(parallel: int) -> int:
    """``parallel`` if it is a usable number of hosts at once, else ConfigError naming --parallel."""
    if parallel < 1:
        raise ConfigError(f"--parallel must be at least 1, got {parallel}")
    return parallel


@dataclass(frozen=True)
class Policy:
    """How a fan-out proceeds: hosts at once, rolling batches, when to stop, how long one host may take."""

    parallel: int = DEFAULT_PARALLEL
    #: Hosts per rolling batch (a batch finishes before the next starts); None: one batch of everything.
    batch: str | int | None = None
    #: Failures tolerated; once exceeded no new host starts (those in flight finish). None: no limit.
    max_failures: str | int | None = None
    #: Seconds one host may take, connection included; then its tunnel is cut and it fails.
    timeout: float | None = None

    def __post_init__(self) -> None:
        checked_parallel(self.parallel)
        if self.timeout is not None and self.timeout <= 0:
            raise ConfigError(f"--timeout must be positive, got {self.timeout}")


class FanOut(Generic[T]):
    """One run of ``operation`` over ``targets``; ``connect`` makes each host's (unopened) connection."""

    def __init__(
        self,
        targets: Sequence[Target],
        connect: Callable[[Target], SSMConnection],
        operation: Operation[T],
        policy: Policy,
        on_result: Callable[[HostResult[T]], Any] | None = None,
    ) -> None:
        self.targets = list(targets)
        self.connect = connect
        self.operation = operation
        self.policy = policy
        self.on_result = on_result
        total = len(self.targets)
        batch = parse_count(policy.batch, total, "batch", round_up=True)
        if batch == 0:
            # Not "no batching" (that is leaving --batch out): a batch of no hosts is a mistake to name.
            raise ConfigError(f"--batch must be at least 1 host, got {batch}")
        self.batch_size = batch or max(total, 1)
        self.max_failures = parse_count(policy.max_failures, total, "max-failures", round_up=False)
        self._lock = threading.Lock()
        self._live: dict[str, tuple[SSMConnection, float]] = {}
        self._timed_out: set[str] = set()
        self._events: list[tuple[float, str, str]] = []
        self._failures = 0

    def _event(self, kind: str, target: Target) -> None:
        with self._lock:
            self._events.append((time.monotonic(), kind, target.id))

    def _run_one(self, target: Target) -> HostResult[T]:
        result: HostResult[T] = HostResult(target, started=time.monotonic())
        self._event("start", target)
        conn: SSMConnection | None = None
        try:
            conn = self.connect(target)
            with self._lock:
                self._live[target.id] = (conn, result.started)
            result.value = self.operation(conn)
            result.exit_code = getattr(result.value, "exited", None)
        except CommandError as exc:
            result.error, result.exit_code = str(exc), exc.returncode
        except SSMFabError as exc:
            result.error = str(exc)
        except Exception as exc:  # noqa: BLE001 - one host's surprise must not sink the others
            explained = conn.explain(exc) if conn is not None else None
            result.error = str(explained) if explained else f"{target.label}: {type(exc).__name__}: {exc}"
        finally:
            if conn is not None:
                with self._lock:
                    self._live.pop(target.id, None)
                conn.close()
            result.ended = time.monotonic()
            with self._lock:
                if target.id in self._timed_out:
                    result.error = f"{target.label}: timed out after {self.policy.timeout:g}s (--timeout)"
                    result.exit_code = None
                if result.error is not None:
                    self._failures += 1
            self._event("end", target)
        return result

    def _close_live(self) -> None:
        with self._lock:
            live = [conn for conn, _ in self._live.values()]
        for conn in live:
            conn.close()

    def _cut_overdue(self) -> None:
        """Close the connection of every host past its timeout; its operation then fails promptly."""
        if self.policy.timeout is None:
            return
        now = time.monotonic()
        with self._lock:
            overdue = [
                (target_id, conn)
                for target_id, (conn, started) in self._live.items()
                if now - started > self.policy.timeout and target_id not in self._timed_out
            ]
            self._timed_out.update(target_id for target_id, _ in overdue)
        for _, conn in overdue:
            conn.close()

    def stopped(self) -> bool:
        with self._lock:
            return self.max_failures is not None and self._failures > self.max_failures

    def _finish(self, result: HostResult[T], results: dict[str, HostResult[T]]) -> None:
        results[result.target.id] = result
        if self.on_result is not None:
            self.on_result(result)

    def run(self) -> FleetResult[T]:
        results: dict[str, HostResult[T]] = {}
        batches = [self.targets[i : i + self.batch_size] for i in range(0, len(self.targets), self.batch_size)]
        with ThreadPoolExecutor(max_workers=self.policy.parallel, thread_name_prefix="ssmfab-host") as pool:
            running: dict[Future[HostResult[T]], Target] = {}
            try:
                for batch in batches:
                    queue = deque(batch)
                    while queue or running:
                        while queue and len(running) < self.policy.parallel and not self.stopped():
                            target = queue.popleft()
                            running[pool.submit(self._run_one, target)] = target
                        if not running:
                            break
                        done, _ = wait(running, timeout=0.2, return_when=FIRST_COMPLETED)
                        for future in done:
                            running.pop(future)
                            self._finish(future.result(), results)
                        self._cut_overdue()
                    if self.stopped():
                        break
            except BaseException:
                # Ctrl-C or similar: start nothing new and break every open tunnel so workers return.
                for future in running:
                    future.cancel()
                self._close_live()
                raise
        reason = f"not started: more than {self.max_failures} host(s) failed (--max-failures)"
        ordered = [results.get(t.id) or HostResult(t, error=reason, skipped=True) for t in self.targets]
        return FleetResult(ordered, list(self._events))


def fan_out(
    targets: Sequence[Target],
    connect: Callable[[Target], SSMConnection],
    operation: Operation[T],
    *,
    parallel: int = DEFAULT_PARALLEL,
    policy: Policy | None = None,
    on_result: Callable[[HostResult[T]], Any] | None = None,
) -> FleetResult[T]:
    """Run ``operation(connection)`` on every target under ``policy`` (default: ``parallel`` at once)."""
    return FanOut(targets, connect, operation, policy or Policy(parallel=parallel), on_result).run()


def run_command(command: str, **run_kwargs: Any) -> Operation[Any]:
    """An operation running ``command`` with Fabric; a non-zero exit becomes a CommandError for that host."""

    def operation(conn: SSMConnection) -> Any:
        result = conn.run(command, warn=True, **run_kwargs)
        if result.exited == -1:
            # Fabric's sign that the channel closed without an exit status: the connection died under it.
            raise SSHError(f"{conn.label}: SSH connection lost mid-command (no exit status from `{command}`)", conn.label)
        if result.failed:
            raise CommandError(conn.label, command, result.exited, result.stderr[-2000:])
        return result

    return operation
