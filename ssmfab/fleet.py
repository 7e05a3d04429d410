"""Bounded fan-out of one operation over many targets, one SSH connection per host.

Fabric's ThreadingGroup starts one thread per host with no bound, keys results by Connection (equal
addresses collapse) and raises a GroupException with an empty message. Here: at most ``parallel`` hosts
in flight, one ``HostResult`` per target (keyed by instance id), and a FleetError whose message names
every failed host and why. Ctrl-C closes every open connection (and so every tunnel) before returning.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from .connection import SSMConnection
from .exceptions import CommandError, FleetError, SSMFabError
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

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def duration(self) -> float:
        return max(0.0, self.ended - self.started)

    @property
    def status(self) -> str:
        return "ok" if self.ok else "failed"


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
        return [r for r in self.results if not r.ok]

    def __getitem__(self, instance_id: str) -> HostResult[T]:
        for result in self.results:
            if result.target.id == instance_id:
                return result
        raise KeyError(instance_id)

    def raise_for_failures(self) -> None:
        if self.failed:
            raise FleetError({r.target.label: r.error or "failed" for r in self.failed}, len(self.results))


Operation = Callable[[SSMConnection], T]


class FanOut(Generic[T]):
    """One run of ``operation`` over ``targets``; ``connect`` makes each host's (unopened) connection."""

    def __init__(
        self,
        targets: Sequence[Target],
        connect: Callable[[Target], SSMConnection],
        operation: Operation[T],
        *,
        parallel: int,
    ) -> None:
        if parallel < 1:
            raise ValueError("parallel must be at least 1")
        self.targets = list(targets)
        self.connect = connect
        self.operation = operation
        self.parallel = parallel
        self._lock = threading.Lock()
        self._live: dict[str, SSMConnection] = {}
        self._events: list[tuple[float, str, str]] = []

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
                self._live[target.id] = conn
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
            self._event("end", target)
        return result

    def _close_live(self) -> None:
        with self._lock:
            live = list(self._live.values())
        for conn in live:
            conn.close()

    def run(self) -> FleetResult[T]:
        results: dict[str, HostResult[T]] = {}
        with ThreadPoolExecutor(max_workers=self.parallel, thread_name_prefix="ssmfab-host") as pool:
            pending: dict[Future[HostResult[T]], Target] = {
                pool.submit(self._run_one, target): target for target in self.targets
            }
            try:
                while pending:
                    done, _ = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                    for future in done:
                        target = pending.pop(future)
                        results[target.id] = future.result()
            except BaseException:
                # Ctrl-C or similar: start nothing new and break every open tunnel so workers return.
                for future in pending:
                    future.cancel()
                self._close_live()
                raise
        ordered = [results[t.id] for t in self.targets if t.id in results]
        return FleetResult(ordered, list(self._events))


def fan_out(
    targets: Sequence[Target],
    connect: Callable[[Target], SSMConnection],
    operation: Operation[T],
    *,
    parallel: int = 10,
) -> FleetResult[T]:
    """Run ``operation(connection)`` on every target, at most ``parallel`` at once."""
    return FanOut(targets, connect, operation, parallel=parallel).run()


def run_command(command: str, **run_kwargs: Any) -> Operation[Any]:
    """An operation running ``command`` with Fabric; a non-zero exit becomes a CommandError for that host."""

    def operation(conn: SSMConnection) -> Any:
        result = conn.run(command, warn=True, **run_kwargs)
        if result.failed:
            raise CommandError(conn.label, command, result.exited, result.stderr[-2000:])
        return result

    return operation
