"""A Fabric remote runner that keeps only the tail of a command's output in memory, notices at once when a
command ends, quotes the command's environment, and closes the command's stdin unless it was given one.

invoke keeps every chunk a command prints in a list (and re-joins that list for its watchers on every
chunk), so a remote that prints gigabytes would exhaust local memory. Output is still streamed live in
full; only what the Result keeps is capped, with a note saying how much was dropped.
"""

from __future__ import annotations

import codecs
import os
import select
from collections.abc import Callable, Generator, Iterator
from typing import IO, Any

from fabric.runners import Remote

from .remoteshell import with_env

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

    def start(self, command: str, shell: str, env: dict[str, str], timeout: int | None = None) -> None:
        if env and self.inline_env:
            # Fabric would inline these unquoted (`export K=V && …`): a value would run as code.
            command, env = with_env(command, env), {}
        super().start(command, shell, env, timeout=timeout)
        if not self.streams["in"] and not self.using_pty and not self.watchers:
            # Like `ssh -n`: with no local input to forward, the command reads end-of-file at once instead
            # of waiting forever (`cat`, `read`, a prompt). A pty's input is the terminal's, left as it is;
            # watchers (invoke's Responder) answer prompts through the input, which stays open for them.
            self.channel.shutdown_write()

    def handle_stdin(self, input_: IO[str], output: IO[str], echo: bool = False) -> None:
        try:
            fd = input_.fileno()
        except (AttributeError, OSError, ValueError):
            fd = None
        if fd is None or os.isatty(fd):
            super().handle_stdin(input_, output, echo)
            return
        # A pipe or a file: invoke reads such input one byte per 10 ms; forward it in blocks, as bytes.
        while not self.program_finished.is_set():
            ready, _, _ = select.select([fd], [], [], self.input_sleep)
            if not ready:
                continue
            data = os.read(fd, 1 << 16)
            if not data:
                self.close_proc_stdin()
                return
            self._write_proc_stdin(data)

    def read_proc_output(self, reader: Callable[..., Any]) -> Generator[str, None, None]:
        # invoke decodes each 1000-byte read on its own, so a character whose bytes straddle two reads became
        # two replacement characters; one incremental decoder per stream keeps it whole.
        decoder = codecs.getincrementaldecoder(self.encoding)("replace")
        while True:
            data = reader(self.read_chunk_size)
            if not data:
                break
            text = decoder.decode(data)
            if text:
                yield text
        rest = decoder.decode(b"", final=True)
        if rest:
            yield rest

    def respond(self, buffer_: list[str]) -> None:
        # invoke joins all the output kept so far after every read, for its watchers (responses to prompts):
        # with none, that was up to output_cap characters copied per 1000 bytes read (150 MB of output: ~150 GB
        # of copying, most of the run's CPU), and a megabyte string made and freed per read.
        if self.watchers:
            super().respond(buffer_)

    def _handle_output(self, buffer_: list[str], hide: bool, output: IO[str], reader: Callable[..., Any]) -> None:
        tail = TailBuffer(buffer_, self.output_cap)
        self.tails[id(buffer_)] = tail
        super()._handle_output(tail, hide, output, reader)
        end_of_output = getattr(output, "end_of_output", None)
        if not hide and end_of_output is not None:
            end_of_output()  # a line-buffering stream (output.PrefixedStream) prints its last, unended line

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
