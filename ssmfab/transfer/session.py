"""The connection side shared by uploads and downloads: a transfer's own SFTP channel, the stall watch that
cuts a frozen tunnel, hashed copying, and the exec channels that stream one file each."""

from __future__ import annotations

import queue
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext, suppress
from typing import Any

import paramiko

from ..exceptions import TransferError
from ..fastssh import WINDOW_SIZE
from ..hoststreams import DIGEST_LINE, SUM_COMMAND
from ..interrupt import Interrupted
from .paths import label_of, one_line, parse_sums, remote_absolute, show


#: Local read/write size; paramiko cuts it into 32 KiB SFTP requests, pipelined both ways.
CHUNK = 256 * 1024
#: Read requests a download keeps in flight (x 32 KiB): enough to fill a slow, long pipe, bounded in memory.
PREFETCH_REQUESTS = 256


#: Seconds without progress after which a transfer fails, when the connection does not say otherwise.
DEFAULT_STALL_TIMEOUT = 60.0
#: Slowest hashing speed assumed for the host: the checksum may take this long per byte before it counts as stuck.
HASH_BYTES_PER_SECOND = 20_000_000


#: Largest data packet a stream channel accepts (paramiko offers 32 KiB; OpenSSH takes up to 256 KiB): paramiko's
#: work is per packet, so a download through the sandbox tunnel went from ~100-360 MB/s to ~730.
STREAM_PACKET = 128 * 1024
#: Files at least this big travel over an exec channel as one plain byte stream (paramiko's SFTP costs a
#: request per 32 KiB in Python) and are hashed by the host in the same command (STREAM_PUT, STREAM_GET)
#: instead of by a separate checksum command after.
STREAM_MIN_BYTES = 4 * 1024 * 1024


def configured(conn: Any, compress: bool | None, streams: int | None = None) -> tuple[bool | None, int | None]:
    """A call's ``compress`` and ``streams``, or where it gives none the connection's defaults (an ssmfab
    connection's transfer.compress and transfer.streams settings; None: measured)."""
    if compress is None:
        compress = getattr(conn, "transfer_compress", None)
    if streams is None:
        streams = getattr(conn, "transfer_streams", None)
    return compress, streams


def open_sftp(conn: Any) -> Any:
    """The connection's shared SFTP client (for callers that list or stat remote files themselves)."""
    return conn.sftp()


class StallWatch:
    """Cuts the connection's tunnel when a transfer makes no progress for ``stall_timeout`` seconds.

    paramiko blocks for ever writing to a peer that stopped reading (a frozen tunnel), holding locks a
    channel timeout cannot break; closing the tunnel's socket and processes is what unblocks it. The
    watching thread ends with the ``with`` block."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.limit = stall_limit(conn)
        self.last = time.monotonic()
        self.stalled = False
        self.held = False
        #: The file moving now, for failure messages of multi-file transfers ("" for a single file).
        self.current = ""
        #: Set when the run is interrupted (see interrupt): the transfer stops at its next chunk and cleans up.
        self.cancel: threading.Event | None = getattr(conn, "cancel", None)
        #: Told the bytes of every chunk moved (a progress line's rate and ETA).
        self.on_bytes: Callable[[int], Any] | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="ssmfab-stall-watch", daemon=True)

    def progress(self, moved: int = 0) -> None:
        """Called for every chunk moved (``moved`` bytes of file content); raises Interrupted once the run is
        interrupted."""
        if self.cancel is not None and self.cancel.is_set():
            raise Interrupted()
        self.last = time.monotonic()
        if moved and self.on_bytes is not None:
            self.on_bytes(moved)

    @contextmanager
    def hold(self) -> Iterator[None]:
        """No stall checks inside (a step with its own timeout, such as hashing a huge file remotely)."""
        self.held = True
        try:
            yield
        finally:
            self.held = False
            self.progress()

    def _watch(self) -> None:
        while not self._done.wait(min(0.5, self.limit / 4)):
            if not self.held and time.monotonic() - self.last > self.limit:
                self.stalled = True
                tunnel = getattr(self.conn, "tunnel", None)
                if tunnel is not None:
                    tunnel.close()
                else:
                    self.conn.client.get_transport().sock.close()
                return

    def __enter__(self) -> StallWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()


def stall_limit(conn: Any) -> float:
    """Seconds without progress after which a transfer on ``conn`` fails (its ssh.stall_timeout)."""
    return float(getattr(conn, "stall_timeout", DEFAULT_STALL_TIMEOUT))


def open_channel(conn: Any, **kwargs: Any) -> Any:
    """A new session channel on ``conn`` (``transport.open_session(**kwargs)``), connecting first if need be. An
    ssmfab connection opens it itself: one taken warm is replaced there if it died while it waited (before
    anything is sent); paramiko's from_transport would wait up to an hour on it."""
    if not conn.is_connected:
        conn.open()
    opener = getattr(conn, "open_channel", None)
    if opener is not None:
        return opener(**kwargs)
    return conn.client.get_transport().open_session(**kwargs)


class Session:
    """One transfer's own SFTP channel (a fresh one: it starts in the login directory whatever the
    connection's shared client did, and a large window keeps a slow tunnel full)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.host = label_of(conn)
        self.stall = stall_limit(conn)
        channel = open_channel(conn, window_size=WINDOW_SIZE)
        self.transport: Any = conn.client.get_transport()
        try:
            channel.invoke_subsystem("sftp")
        except paramiko.SSHException as exc:
            channel.close()
            raise TransferError(f"{self.host}: the SSH server refused an SFTP channel; check its sftp Subsystem", self.host) from exc
        self.sftp: Any = paramiko.SFTPClient(channel)
        self.home = str(self.sftp.normalize("."))
        #: Remote path -> SHA-256 the host computed while the file streamed ("" when it did not match).
        self.streamed: dict[str, str] = {}
        #: Compress streamed files: True always, False never, None when it pays (see compress).
        self.compress: bool | None = None
        #: Remote path -> bytes that crossed the link for a file streamed compressed.
        self.wire: dict[str, int] = {}
        #: SSM sessions a large upload may use at once (None: measured, see stripe).
        self.streams: int | None = None
        #: The most SSM sessions one file of this transfer went over.
        self.most_streams = 1

    def close(self) -> None:
        with suppress(Exception):
            self.sftp.close()

    def alive(self) -> bool:
        return bool(self.transport is not None and self.transport.is_active())

    def absolute(self, path: str) -> str:
        return remote_absolute(self.home, path)

    def check(self, exc: OSError) -> None:
        """Re-raise ``exc`` if it is the connection failing rather than the host refusing one path."""
        if not self.alive() or isinstance(exc, (socket.timeout, TimeoutError)):
            raise exc

    def attrs(self, path: str) -> Any | None:
        """stat of a remote path (following links), or None when it does not exist or cannot be seen."""
        try:
            return self.sftp.stat(path)
        except OSError as exc:
            self.check(exc)
            return None

    def is_dir(self, path: str) -> bool:
        attrs = self.attrs(path)
        return attrs is not None and stat.S_ISDIR(attrs.st_mode or 0)

    def sha256(self, paths: list[str], total_bytes: int) -> tuple[dict[str, str], str]:
        """({path: digest}, stderr tail) for remote paths, in one command reading NUL-separated paths on
        stdin. A path missing from the answer could not be hashed (the tail says why)."""
        if not paths:
            return {}, ""
        limit = answer_timeout(self, total_bytes)
        payload = b"".join(path.encode("utf-8", "surrogateescape") + b"\0" for path in paths)
        channel = self.transport.open_session(timeout=self.stall)
        errors = bytearray()

        def feed_and_drain_stderr() -> None:
            # A thread, so a big answer filling our window cannot block the remote end from reading stdin.
            with suppress(Exception):
                channel.sendall(payload)
                channel.shutdown_write()
            # Apart: a command that quits without reading its input (no checksum tool) closes the channel, and
            # what it said on the way out is the reason to report.
            with suppress(Exception):
                while len(errors) < 64 * 1024 and (data := channel.recv_stderr(65536)):
                    errors.extend(data)

        try:
            channel.settimeout(limit)
            channel.exec_command(SUM_COMMAND)
            feeder = threading.Thread(target=feed_and_drain_stderr, name="ssmfab-sha256-stdin", daemon=True)
            feeder.start()
            output = bytearray()
            while data := channel.recv(65536):
                output.extend(data)
            feeder.join(limit)
            if not channel.status_event.wait(limit):
                raise TimeoutError
            status = channel.recv_exit_status()
        except (socket.timeout, TimeoutError):
            raise TransferError(
                f"{self.host}: the remote SHA-256 check of {len(paths)} files gave no answer within {limit:.0f}s; "
                "check the host's load and the tunnel, then retry",
                self.host,
            ) from None
        finally:
            channel.close()
        if not self.alive():
            raise EOFError("the connection closed during the remote SHA-256 check")
        tail = one_line(errors.decode(errors="replace"))[-300:]
        if status == 127 and "neither sha256sum nor shasum" in tail:
            raise TransferError(
                f"{self.host}: cannot verify the transfer: neither sha256sum nor shasum is installed on the host; "
                "install coreutils (or perl's shasum)",
                self.host,
            )
        return parse_sums(bytes(output)), tail

    def remove(self, paths: list[str]) -> list[str]:
        """Delete remote temporary files; returns those that may remain (the connection is gone)."""
        left = []
        for path in paths:
            if not self.alive():
                left.append(path)
                continue
            try:
                self.sftp.remove(path)
            except Exception as exc:  # noqa: BLE001 - cleanup after a failure must not hide that failure
                if not (self.alive() and (isinstance(exc, FileNotFoundError) or self._absent(path))):
                    left.append(path)
        return left

    def _absent(self, path: str) -> bool:
        """Whether ``path`` is surely not there (a temporary file whose creation was refused: a read-only
        file system refuses its removal too, with an error that does not say it is missing)."""
        try:
            self.sftp.lstat(path)
        except FileNotFoundError:
            return True
        except Exception:  # noqa: BLE001 - unknown: it may remain
            return False
        return False

    def rmdirs(self, paths: list[str]) -> None:
        """Remove directories this transfer created, deepest first, if they are still empty."""
        for path in reversed(paths):
            if not self.alive():
                return
            with suppress(Exception):  # not empty, or the connection went: either way, leave it
                self.sftp.rmdir(path)


def copy_hashed(
    read: Callable[[int], bytes], write: Callable[[bytes], Any], digest: Any, watch: StallWatch, *, hash_aside: bool = False
) -> int:
    """Copy ``read`` -> ``write`` in CHUNK pieces until EOF, hashing and reporting progress; the bytes copied.
    ``hash_aside`` hashes in a helper thread (see BackgroundHash)."""
    copied = 0
    with BackgroundHash(digest) if hash_aside else nullcontext(digest) as hasher:
        while chunk := read(CHUNK):
            hasher.update(chunk)
            write(chunk)
            copied += len(chunk)
            watch.progress(len(chunk))
    return copied


class BackgroundHash:
    """Feeds a hash from its own thread, so hashing (which releases the GIL) overlaps sending the next chunk
    instead of following it: 512 MB uploads ~10% sooner through the sandbox tunnel. Downloads hash inline: a
    third busy thread beside paramiko's receiver made them ~7% slower. Chunks are hashed in the order given;
    leaving the block waits for the last one."""

    #: Chunks waiting to be hashed at most (x CHUNK bytes of memory).
    DEPTH = 8

    def __init__(self, digest: Any) -> None:
        self.digest = digest
        self._chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=self.DEPTH)
        self._thread = threading.Thread(target=self._run, name="ssmfab-hash", daemon=True)

    def _run(self) -> None:
        while (chunk := self._chunks.get()) is not None:
            self.digest.update(chunk)

    def update(self, chunk: bytes) -> None:
        self._chunks.put(chunk)

    def __enter__(self) -> BackgroundHash:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._chunks.put(None)
        self._thread.join()


def stream_channel(session: Session, command: str) -> Any:
    """An exec channel for one streamed file. No timeout while bytes flow: the StallWatch judges progress
    (and cuts a frozen tunnel); only the wait for the host's checksum gets one (see answer_timeout)."""
    return exec_stream(session.transport.open_session, command, session.stall)


def exec_stream(open_session: Callable[..., Any], command: str, stall: float) -> Any:
    """``command`` on a new channel from ``open_session`` (a transport's, or open_channel for a connection's
    first), with a stream's window and packets."""
    channel = open_session(window_size=WINDOW_SIZE, max_packet_size=STREAM_PACKET, timeout=stall)
    channel.exec_command(command)
    return channel


def answer_timeout(session: Session, size: int) -> float:
    """How long the host may take to answer with the checksum of ``size`` bytes: the stall limit, plus the
    time to hash them at the slowest speed assumed."""
    return session.stall + size / HASH_BYTES_PER_SECOND


def host_answer(
    session: Session, channel: Any, moved: int, watch: StallWatch, read: Callable[[int], bytes], doing: str
) -> tuple[bytes, int, bytes]:
    """(what ``read`` gave until its end, the exit status, the first 4 KiB of stderr when ``read`` is not the
    stderr) of a stream's host program, within answer_timeout; closes the channel. Raises EOFError when the
    connection closed meanwhile."""
    answer = bytearray()
    said = bytearray()
    try:
        channel.settimeout(answer_timeout(session, moved))
        with watch.hold():
            while data := read(4096):
                answer.extend(data)
            status = channel.recv_exit_status()
            if read != channel.recv_stderr:
                while len(said) < 4096 and (data := channel.recv_stderr(4096)):
                    said.extend(data)
    finally:
        channel.close()
    if not session.alive():
        raise EOFError(f"the connection closed during the {doing}")
    return bytes(answer), status, bytes(said)


def host_digest(
    session: Session, channel: Any, moved: int, watch: StallWatch, read: Callable[[int], bytes], what: str = ""
) -> str:
    """Once an upload's bytes moved: the SHA-256 the host computed of them, read with ``read`` (the channel's
    stdout) within a time that grows with the size; "" when the answer holds none. Closes the channel. (A
    download reads its answer with host_answer: a failed stream means something else there.)"""
    answer, status, said = host_answer(session, channel, moved, watch, read, "upload")
    found = DIGEST_LINE.search(answer)
    if found is None and status != 0:
        # The host's copy program failed (a full disk, a quota): its own words say why.
        reason = one_line(said.decode(errors="replace")) or f"exit status {status}"
        raise TransferError(
            f"{session.host}: the host stopped writing {show(watch.current or what)} after {moved} bytes sent ({reason}); "
            "nothing left half-written; check its free space and limits, then retry",
            session.host,
        )
    return found.group(1).decode() if found else ""

