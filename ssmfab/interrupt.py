"""Ctrl-C and SIGTERM: a run stops within moments, says what it interrupted, and leaves nothing behind.

The command line turns SIGINT and SIGTERM into ``Interrupted`` in the main thread. It is a KeyboardInterrupt, so
a script's ``except Exception`` (or ``except SSMFabError``) never swallows it. A fan-out that catches it asks
every host's work to stop (the ``cancel`` event each connection carries: a transfer checks it between chunks and
removes its temporary files while its connection still works), waits a moment for that, closes every connection
left (tunnel processes and SSM sessions), and raises it again naming the hosts that were in flight. The command
line then prints one line and exits at once (130, or 143 for SIGTERM) without waiting for threads stuck on an
AWS call that will never answer.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import FrameType

#: Seconds a fan-out waits, after a Ctrl-C, for hosts to stop on their own (a transfer removing its temporary
#: files) before it closes their connections under them.
STOP_GRACE = 2.0
#: Seconds it waits for connections to close (tunnel processes to end, TerminateSession to answer) before it
#: gives up on them: an AWS that stopped answering must not hold the command.
CLOSE_GRACE = 5.0

EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143}


class Interrupted(KeyboardInterrupt):
    """The run was stopped by SIGINT (Ctrl-C) or SIGTERM. ``in_flight``: hosts whose work had started and had
    not ended (commands there may still be running); ``unclosed``: hosts whose connection did not close in time."""

    def __init__(self, signal_name: str = "SIGINT", in_flight: Sequence[str] = (), unclosed: Sequence[str] = ()) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name
        self.in_flight = list(in_flight)
        self.unclosed = list(unclosed)

    @classmethod
    def from_exception(cls, exc: BaseException, in_flight: Sequence[str] = (), unclosed: Sequence[str] = ()) -> Interrupted:
        return cls(getattr(exc, "signal_name", "SIGINT"), in_flight, unclosed)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.signal_name, 130)

    def message(self, task: str) -> str:
        """One line for the user: what was interrupted and what may still be going on."""
        how = "Ctrl-C" if self.signal_name == "SIGINT" else self.signal_name
        if not self.in_flight:
            return f"interrupted ({how}): {task} stopped before any host started work"
        shown = ", ".join(self.in_flight[:5]) + (f" and {len(self.in_flight) - 5} more" if len(self.in_flight) > 5 else "")
        line = (
            f"interrupted ({how}): {task} stopped on {len(self.in_flight)} host(s) ({shown}); remote commands "
            "already started may still be running there; unfinished transfers left no file"
        )
        if self.unclosed:
            line += f"; {len(self.unclosed)} connection(s) did not close in time, their SSM sessions may stay open"
        return line


@contextmanager
def signals_interrupt() -> Iterator[None]:
    """Within the block (main thread only), SIGINT and SIGTERM raise Interrupted; a second one while the first
    is being handled exits at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[str] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if received:
            exit_now(EXIT_CODES.get(received[0], 130))
        received.append(name)
        raise Interrupted(name)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def exit_now(code: int) -> None:
    """Flush what was printed and end the process without waiting for threads (one may be stuck on an AWS call
    that will not answer: botocore cannot be told to stop)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a closed pipe must not keep us from exiting
            pass
    os._exit(code)
