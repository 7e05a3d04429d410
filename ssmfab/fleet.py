"""Bounded fan-out of one operation over many targets, one SSH connection per host.

Fabric's ThreadingGroup starts one thread per host with no bound, keys results by Connection (equal
addresses collapse) and raises a GroupException with an empty message. Here: at most ``parallel`` hosts
in flight, one ``HostResult`` per target (keyed by instance id), and a FleetError whose message names
every failed host and why. Ctrl-C asks every host's work to stop, gives transfers a moment to remove their
temporary files, then closes every open connection (and so every tunnel and SSM session) and raises
``Interrupted`` naming the hosts that were in flight (see interrupt).
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
from .interrupt import CLOSE_GRACE, STOP_GRACE, Interrupted
from .targets import Target, Targets

T = TypeVar("T")


@dataclass
class HostResult(Generic[T]):
    target: Target
    value: T | None = None
    error: str | None = None
    exit_code: int | None = None
    started: float = 0.0
    ended: float = 0.0
    #: Never started, because the failure policy stopped the run first or the host could not be reached.
    skipped: bool = False
    #: Never started: the selection found it but it cannot be reached (stopped, agent offline, no such id).
    unreachable: bool = False

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
        """Hosts the failure policy kept from starting."""
        return [r for r in self.results if r.skipped and not r.unreachable]

    @property
    def unreachable(self) -> list[HostResult[T]]:
        """Hosts a name or tag matched that cannot be reached (reported, not failed)."""
        return [r for r in self.results if r.skipped and r.unreachable]

    def __getitem__(self, instance_id: str) -> HostResult[T]:
        for result in self.results:
            if result.target.id == instance_id:
                return result
        raise KeyError(instance_id)

    def raise_for_failures(self, *, detail: bool = True) -> None:
        """FleetError if any host failed; its message names each failed host and why (a cause shared by
        several hosts once), or with ``detail=False`` only which hosts failed (the caller showed why)."""
        if self.failed:
            failures = {r.target.label: (r.error or "failed").removeprefix(f"{r.target.label}: ") for r in self.failed}
            total = len(self.results) - len(self.unreachable)
            raise FleetError(failures, total, not_started=len(self.not_started), skipped=len(self.unreachable), detail=detail)


Operation = Callable[[SSMConnection], T]


def unreachable_results(targets: Sequence[Target]) -> list[HostResult[Any]]:
    """What a selection left out (``targets`` is a ``Targets``): a host whose id the user named fails, one a
    name or tag matched is skipped with the reason. A plain list of targets left nothing out."""
    if not isinstance(targets, Targets):
        return []
    results: list[HostResult[Any]] = []
    for left_out in targets.skipped:
        message = f"{left_out.target.label}: {left_out.reason}"
        if left_out.target.id in targets.named:
            results.append(HostResult(left_out.target, error=message, unreachable=True))
        else:
            results.append(HostResult(left_out.target, error=message, skipped=True, unreachable=True))
    return results


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
        on_interrupt: Callable[[], Any] | None = None,
    ) -> None:
        self.targets = list(targets)
        self.given_targets = targets
        #: Called on Ctrl-C before the connections are closed, so operations can stop in order (a deploy
        #: switches its host back over a connection it reopens).
        self.on_interrupt = on_interrupt
        self.connect = connect
        self.operation = operation
        self.policy = policy
        self.on_result = on_result
        total = len(self.targets)
        if policy.batch not in (None, "") and parse_count(policy.batch, 100, "batch", round_up=False) == 0:
            # 0 is no batch size at all (not "everything at once": leave --batch out for that).
            raise ConfigError(f"--batch {str(policy.batch).strip()}: a batch needs at least 1 host (leave --batch out to run all at once)")
        self.batch_size = parse_count(policy.batch, total, "batch", round_up=True) or max(total, 1)
        self.max_failures = parse_count(policy.max_failures, total, "max-failures", round_up=False)
        self._lock = threading.Lock()
        self._live: dict[str, tuple[SSMConnection, float]] = {}
        self._timed_out: set[str] = set()
        self._events: list[tuple[float, str, str]] = []
        self._failures = 0
        #: Set on Ctrl-C: every connection carries it, and a transfer stops (and cleans up) when it is set.
        self.cancel = threading.Event()
        #: Connections their own host thread is closing now (label -> set once closed): a Ctrl-C waits for them.
        self._closing: dict[str, threading.Event] = {}

    def _event(self, kind: str, target: Target) -> None:
        with self._lock:
            self._events.append((time.monotonic(), kind, target.id))

    def _run_one(self, target: Target) -> HostResult[T]:
        result: HostResult[T] = HostResult(target, started=time.monotonic())
        self._event("start", target)
        conn: SSMConnection | None = None
        #: The connection is fine for another command (a warm pool keeps it): the work ended, well or with a
        #: command's own failure, not with the connection's.
        reusable = False
        try:
            conn = self.connect(target)
            conn.cancel = self.cancel
            with self._lock:
                self._live[target.id] = (conn, result.started)
            if self.cancel.is_set():
                raise Interrupted()
            result.value = self.operation(conn)
            result.exit_code = getattr(result.value, "exited", None)
            reusable = True
        except Interrupted:
            result.error = f"{target.label}: interrupted"
        except CommandError as exc:
            result.error, result.exit_code = str(exc), exc.returncode
            reusable = True
        except SSMFabError as exc:
            result.error = str(exc)
        except Exception as exc:  # noqa: BLE001 - one host's surprise must not sink the others
            explained = conn.explain(exc) if conn is not None else None
            result.error = str(explained) if explained else f"{target.label}: {type(exc).__name__}: {exc}"
        finally:
            if conn is not None:
                closed = threading.Event()
                with self._lock:
                    self._live.pop(target.id, None)
                    self._closing[target.label] = closed
                try:
                    with self._lock:
                        reusable = reusable and target.id not in self._timed_out
                    release = getattr(conn, "release", None)  # a plain Fabric connection from a caller's factory: close
                    release(keep=reusable) if release is not None else conn.close()
                finally:
                    closed.set()
                    with self._lock:
                        self._closing.pop(target.label, None)
            result.ended = time.monotonic()
            with self._lock:
                if target.id in self._timed_out:
                    result.error = f"{target.label}: timed out after {self.policy.timeout:g}s (--timeout)"
                    result.exit_code = None
                if result.error is not None:
                    self._failures += 1
            self._event("end", target)
        return result

    def _close_live(self) -> list[str]:
        """Close every open connection at once (each on a thread: a close may wait on AWS); the labels of those
        that did not finish closing within CLOSE_GRACE."""
        with self._lock:
            live = [conn for conn, _ in self._live.values()]
        closers = []
        for conn in live:
            closer = threading.Thread(target=conn.close, name=f"ssmfab-close-{conn.target.id}", daemon=True)
            closer.start()
            closers.append((conn, closer))
        with self._lock:
            closing = dict(self._closing)  # closes already under way on host threads: wait for those too
        deadline = time.monotonic() + CLOSE_GRACE
        for _, closer in closers:
            closer.join(max(0.0, deadline - time.monotonic()))
        for closed in closing.values():
            closed.wait(max(0.0, deadline - time.monotonic()))
        return [conn.label for conn, closer in closers if closer.is_alive()] + [
            label for label, closed in closing.items() if not closed.is_set()
        ]

    def _interrupted(self, exc: BaseException, running: dict[Future[HostResult[T]], Target]) -> Interrupted:
        """After Ctrl-C: stop every host (see the module docstring) and say which were in flight."""
        in_flight = [target.label for future, target in running.items() if not future.cancel() and not future.done()]
        self.cancel.set()
        unclosed: list[str] = []
        try:
            if self.on_interrupt is not None:
                self.on_interrupt()  # e.g. deploy switches hosts back while their connections still work
            started = [future for future in running if future.running()]
            wait(started, timeout=STOP_GRACE)  # transfers remove their temporary files while they still can
        finally:
            unclosed = self._close_live()
        return Interrupted.from_exception(exc, in_flight, unclosed)

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
        pool = ThreadPoolExecutor(max_workers=self.policy.parallel, thread_name_prefix="ssmfab-host")
        running: dict[Future[HostResult[T]], Target] = {}
        try:
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
            except KeyboardInterrupt as exc:
                # Ctrl-C or SIGTERM: start nothing new, let transfers clean up, break every open tunnel.
                raise self._interrupted(exc, running) from None
        except BaseException:
            # Never wait here for workers: one may be stuck on an AWS call that only its timeout ends.
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        reason = f"not started: more than {self.max_failures} host(s) failed (--max-failures)"
        ordered = [results.get(t.id) or HostResult(t, error=reason, skipped=True) for t in self.targets]
        return FleetResult(ordered + unreachable_results(self.given_targets), list(self._events))


def fan_out(
    targets: Sequence[Target],
    connect: Callable[[Target], SSMConnection],
    operation: Operation[T],
    *,
    parallel: int = DEFAULT_PARALLEL,
    policy: Policy | None = None,
    on_result: Callable[[HostResult[T]], Any] | None = None,
    on_interrupt: Callable[[], Any] | None = None,
) -> FleetResult[T]:
    """Run ``operation(connection)`` on every target under ``policy`` (default: ``parallel`` at once);
    ``on_interrupt`` is called on Ctrl-C before the open connections are closed."""
    return FanOut(targets, connect, operation, policy or Policy(parallel=parallel), on_result, on_interrupt).run()


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
