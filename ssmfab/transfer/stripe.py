"""Striping: one large upload over several SSM sessions at once.

AWS's session-manager-plugin paces what it sends: 1024-byte messages with a 1 ms sleep between reads, about
0.65 MB/s per plugin process, i.e. per SSM session, whatever the network. A large file therefore goes as
pieces, each written in place into the one temporary file (hoststreams.STREAM_PART) by whichever session is
free: the transfer's own and ``streams - 1`` siblings, each with its own tunnel, plugin and SSM session
(opened with the connection's backoff, so StartSession throttling is retried). The whole file is then hashed
once on the host and compared with the local SHA-256 of the whole, and renamed only when they agree, as for
any other file. A sibling that cannot open (a session quota, throttling past the retries) or fails mid-piece
is let go, and its piece goes to another session; only the transfer's own connection failing fails it.
"""

from __future__ import annotations

import hashlib
import os
import queue
import shlex
import threading
import time
from contextlib import suppress
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ..exceptions import TransferError
from ..fastssh import WINDOW_SIZE, send_stream
from ..hoststreams import STREAM_PART
from ..interrupt import Interrupted
from .compress import SLOW_LINK, Gzipping, link_rate
from .outcome import LocalReadError
from .paths import one_line, show
from .plan import Upload
from .session import CHUNK, STREAM_PACKET, Session, StallWatch, answer_timeout

_T = TypeVar("_T")

#: Files smaller than this go over one session (more would spend longer opening than sending).
STRIPE_MIN_BYTES = 16 * 1024 * 1024
#: A piece: the unit a session takes at a time (MiB-aligned, for the host's dd fallback).
PIECE_BYTES = 2 * 1024 * 1024
#: Sessions a striped upload uses when none is asked for and the link is slow. Measured through AWS's plugin
#: on the sandbox, 16 MiB of random bytes: 1 session 21.8 s, 4 5.9 s, 8 3.7 s, 16 3.5 s (each plugin costs
#: CPU, and every session counts against AWS's quotas: see README).
DEFAULT_STREAMS = 8


def streams_for(session: Session, size: int, requested: int | None) -> int:
    """How many sessions upload a file of ``size``: ``requested`` (capped by the pieces), else DEFAULT_STREAMS
    when the measured link is slow, else 1; always 1 for small files and connections that cannot make siblings."""
    pieces = -(-size // PIECE_BYTES)
    if size < STRIPE_MIN_BYTES or not callable(getattr(session.conn, "sibling", None)):
        return 1
    if requested is not None:
        return max(1, min(requested, pieces))
    slow = link_rate(session.conn, session.transport, "put", session.stall) < SLOW_LINK
    return min(DEFAULT_STREAMS, pieces) if slow else 1


class _Worker:
    def __init__(self, conn: Any, own: bool) -> None:
        self.conn = conn
        self.own = own  # the transfer's own connection: its failure fails the transfer
        self.last = time.monotonic()
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None


def striped_up(
    session: Session, path: str, size: int, temp: str, final: str, watch: StallWatch, streams: int, level: int
) -> tuple[int, str, str, int]:
    """Upload the local file ``path`` into the existing remote ``temp`` over ``streams`` sessions, each piece
    gzipped at zlib ``level`` (0: not): (bytes, local SHA-256 of the whole, the host's SHA-256 of the whole,
    bytes on the wire)."""
    pieces: queue.SimpleQueue[tuple[int, int]] = queue.SimpleQueue()
    for offset in range(0, size, PIECE_BYTES):
        pieces.put((offset, min(PIECE_BYTES, size - offset)))
    stop = threading.Event()
    wire = [0]
    lock = threading.Lock()
    workers = [_Worker(session.conn, True)] + [_Worker(None, False) for _ in range(streams - 1)]

    def run(worker: _Worker) -> None:
        try:
            if worker.conn is None:
                sibling = session.conn.sibling()
                worker.conn = sibling
                sibling.open()
            transport = worker.conn.client.get_transport()
            fd = _local(lambda: os.open(path, os.O_RDONLY | os.O_CLOEXEC), path)

            def read_at(size: int, offset: int) -> bytes:
                return _local(lambda: os.pread(fd, size, offset), path)

            try:
                while not stop.is_set():
                    try:
                        piece = pieces.get_nowait()
                    except queue.Empty:
                        return
                    try:
                        moved = _send_piece(session, transport, read_at, temp, final, piece, level, worker, watch, stop)
                    except BaseException:
                        pieces.put(piece)  # written in place: whoever takes it writes the same bytes again
                        raise
                    with lock:
                        wire[0] += moved
            finally:
                os.close(fd)
        except BaseException as exc:  # noqa: BLE001 - handed to the supervising thread
            worker.error = exc
            local = isinstance(exc, LocalReadError)  # every session would meet it: the upload has failed
            if worker.own or local:
                stop.set()  # the upload has failed: the siblings stop at their next chunk, without a word
            notify = getattr(session.conn, "notify", None)
            # A sibling failing after the transfer's own session went (its temporary file removed with it) is
            # that failure's echo, not news.
            dropped = not worker.own and not local and not stop.is_set() and session.alive() and not isinstance(exc, Interrupted)
            if dropped and notify is not None:
                notify(f"{session.host}: one of {streams} striping sessions dropped out, the others go on ({one_line(str(exc))})")

    digest = hashlib.sha256()
    try:
        for index, worker in enumerate(workers):
            worker.thread = threading.Thread(target=run, args=(worker,), name=f"ssmfab-stripe-{index}", daemon=True)
            worker.thread.start()
        with Upload(Path(path), "", size, None).open() as whole:  # the local SHA-256 of the whole, while the pieces travel
            while block := whole.read(CHUNK * 4):
                digest.update(block)
        _supervise(workers, watch)
        # A local read failing stopped every session (the own one at its next chunk, as if interrupted): it is the cause.
        failed = next((w.error for w in workers if isinstance(w.error, LocalReadError)), None) or workers[0].error
        if failed is not None:
            raise failed
        if not pieces.empty():  # siblings that failed left pieces: the transfer's own session takes them
            workers[0].error = None
            run(workers[0])
            if workers[0].error is not None:
                raise workers[0].error
    finally:
        stop.set()
        for worker in workers[1:]:
            if worker.conn is not None:
                with suppress(Exception):
                    worker.conn.close()
        for worker in workers:
            if worker.thread is not None:
                worker.thread.join(10)
    with watch.hold():
        sums, tail = session.sha256([temp], size)
    return size, digest.hexdigest(), sums.get(temp, ""), wire[0]


def _local(call: Callable[[], _T], path: str) -> _T:
    """``call()`` (an open or a read of the local file at ``path``), its OSError as a LocalReadError."""
    try:
        return call()
    except OSError as exc:
        raise LocalReadError(show(path), exc) from exc


def _supervise(workers: list[_Worker], watch: StallWatch) -> None:
    """Wait for the workers; a sibling without progress for the stall limit is cut (its piece goes back)."""
    while any(w.thread is not None and w.thread.is_alive() for w in workers):
        for worker in workers:
            if worker.thread is not None:
                worker.thread.join(0.2)
            if (
                not worker.own and worker.conn is not None and worker.thread is not None and worker.thread.is_alive()
                and time.monotonic() - worker.last > watch.limit
            ):  # fmt: skip
                with suppress(Exception):
                    worker.conn.close()
        if watch.cancel is not None and watch.cancel.is_set():
            raise Interrupted()


def _send_piece(
    session: Session,
    transport: Any,
    read_at: Callable[[int, int], bytes],
    temp: str,
    final: str,
    piece: tuple[int, int],
    level: int,
    worker: _Worker,
    watch: StallWatch,
    stop: threading.Event,
) -> int:
    """One piece over one exec channel on ``transport``; the bytes it took on the wire."""
    offset, length = piece
    command = f"{STREAM_PART} {shlex.quote(temp)} {offset}" + (" gzip" if level else "")
    channel = transport.open_session(window_size=WINDOW_SIZE, max_packet_size=STREAM_PACKET, timeout=session.stall)
    try:
        channel.exec_command(command)
        plain = [0]

        def raw(data: bytes) -> None:
            send_stream(channel, data)
            plain[0] += len(data)

        packer = Gzipping(lambda data: send_stream(channel, data), level) if level else None
        position, end = offset, offset + length
        try:
            while position < end:
                if stop.is_set():
                    raise Interrupted()
                data = read_at(min(CHUNK, end - position), position)
                if not data:
                    raise TransferError(f"{session.host}: local file shrank while uploading {show(final)}; retry", session.host)
                (packer.write if packer is not None else raw)(data)
                position += len(data)
                worker.last = time.monotonic()
                watch.progress(len(data))
            if packer is not None:
                packer.close()
            channel.shutdown_write()
        except OSError:
            # The host's end may have quit (a full disk, a size limit) and closed the channel: say why.
            if transport.is_active() and channel.status_event.wait(5) and channel.recv_exit_status() != 0:
                raise _refused(session, channel, final, offset) from None
            raise
        channel.settimeout(answer_timeout(session, length))
        said = bytearray()
        while data := channel.recv(4096):
            said.extend(data)
        errors = bytearray()
        while len(errors) < 4096 and (data := channel.recv_stderr(4096)):
            errors.extend(data)
        status = channel.recv_exit_status()
    finally:
        channel.close()
    if status == -1:  # no exit status: the channel or the connection went, not the host's refusal
        raise EOFError(f"the connection closed while the part from byte {offset} was sent")
    if status != 0:
        raise _stopped(session, final, offset, bytes(errors), status)
    return packer.wire if packer is not None else plain[0]


def _refused(session: Session, channel: Any, final: str, offset: int) -> TransferError:
    said = bytearray()
    with suppress(OSError, TimeoutError):
        channel.settimeout(1.0)
        while len(said) < 4096 and (data := channel.recv_stderr(4096)):
            said.extend(data)
    return _stopped(session, final, offset, bytes(said), channel.recv_exit_status())


def _stopped(session: Session, final: str, offset: int, said: bytes, status: int) -> TransferError:
    reason = one_line(said.decode(errors="replace")) or f"exit status {status}"
    return TransferError(
        f"{session.host}: the host stopped writing {show(final)} in the part from byte {offset} ({reason}); "
        "nothing left half-written; check its free space and limits, then retry",
        session.host,
    )
