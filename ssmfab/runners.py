"""A Fabric remote runner that keeps only the tail of a command's output in memory, and notices at once
when a command ends.

invoke keeps every chunk a command prints in a list (and re-joins that list for its watchers on every
chunk), so a remote that prints gigabytes would exhaust local memory. Output is still streamed live in
full; only what the Result keeps is capped, with a note saying how much was dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import IO, Any

from fabric.runners import Remote

DEFAULT_OUTPUT_CAP = 1_000_000


class TailBuffer:
    """Appends to ``inner`` (the list invoke joins into Result.stdout) but keeps its size under ``limit``."""

    def __init__(self, inner: list[str], limit: int) -> None:
        self.inner = inner
        self.limit = limit
        self.size = sum(len(chunk) for chunk in inner)
        self.dropped = 0

    def append(self, data: str) -> None:
        self.inner.append(data)
        self.size += len(data)
        while self.size > self.limit and len(self.inner) > 1:
            removed = self.inner.pop(0)
            self.size -= len(removed)
            self.dropped += len(removed)
        if self.size > self.limit:  # one chunk larger than the cap: keep its tail
            excess = self.size - self.limit
            self.inner[0] = self.inner[0][excess:]
            self.size -= excess
            self.dropped += excess

    def __iter__(self) -> Iterator[str]:
        return iter(self.inner)


class CappedRemote(Remote):  # type: ignore[misc]
    def __init__(self, context: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(context, *args, **kwargs)
        self.output_cap = int(getattr(context, "output_cap", DEFAULT_OUTPUT_CAP))
        self.tails: dict[int, TailBuffer] = {}

    def _handle_output(self, buffer_: list[str], hide: bool, output: IO[str], reader: Callable[..., Any]) -> None:
        tail = TailBuffer(buffer_, self.output_cap)
        self.tails[id(buffer_)] = tail
        super()._handle_output(tail, hide, output, reader)

    def wait(self) -> None:
        # invoke checks every input_sleep (10 ms) whether the command ended; the channel's status event says
        # so at once (a reader thread that died is still noticed within input_sleep).
        while not self.process_is_finished and not self.has_dead_threads:
            self.channel.status_event.wait(self.input_sleep)

    def _collate_result(self, watcher_errors: Any) -> Any:
        dropped = {}
        for name, buffer_ in (("stdout", self.stdout), ("stderr", self.stderr)):
            tail = self.tails.get(id(buffer_))
            dropped[name] = tail.dropped if tail is not None else 0
            if dropped[name]:
                buffer_.insert(0, f"[ssmfab: {dropped[name]} earlier characters dropped; output kept up to {self.output_cap}]\n")
        result = super()._collate_result(watcher_errors)
        #: Characters of each stream cut from the front of the Result to keep it under ``output_cap``.
        result.dropped = dropped
        return result
