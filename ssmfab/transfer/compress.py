"""Compression of streamed files, when it pays: compressible data on a link slower than the compressor.

Both are measured, not assumed. The data: the first MiB of an upload is compressed (zlib level 1) before
anything is sent, giving its ratio and this machine's compression speed (when its first 64 KiB do not shrink,
they alone decide); a download's first MiB is judged the same way by the host (see hoststreams.HOST_COPY). The
link: a probe through the connection's own tunnel (64 KiB), once per connection and direction (through AWS's
plugin an upload moves ~0.65 MB/s; the sandbox's stand-in hundreds). Compression is gzip's format, which every
host can undo (python3's zlib, or gzip), and the SHA-256 both ends compare is always of the file's own bytes,
never of the compressed stream.
"""

from __future__ import annotations

import os
import time
import zlib
from collections.abc import Callable
from typing import Any

#: Bytes of a file judged for compressibility (and by the host, for downloads: its first block).
SAMPLE_BYTES = 1 << 20
#: The start of a sample looked at first: data that does not shrink there (archives, media, encrypted or random
#: bytes) is judged on it alone. Compressing a whole MiB of random bytes at level 1 took ~18 ms here, all of it
#: before a download's first byte; 64 KiB takes ~1.
QUICK_LOOK = 64 * 1024
#: Compress only data that shrinks to at most this fraction (the host applies the same rule).
WORTH_RATIO = 0.85
#: ... and only when the link moves bytes slower than this fraction of the compressor's speed.
WORTH_SPEED = 0.8
#: Bytes sent or received to time the link (through AWS's plugin an upload probe costs ~0.1 s; 256 KiB cost 0.4).
PROBE_BYTES = 64 * 1024
#: The second probe, on a link the first found faster than SLOW_LINK.
LARGE_PROBE_BYTES = 1024 * 1024
#: Below this a link is slow: AWS's plugin paces each session's uploads at ~0.65-0.8 MB/s (measured), where the
#: sandbox's stand-in moves hundreds of MB/s (a 64 KiB probe through it reads 5-9 MB/s: latency).
SLOW_LINK = 2_000_000
#: zlib's level: 1 compresses source trees and logs 3-5x at tens of MB/s, far faster than an SSM session.
LEVEL = 1
#: zlib's level 3: ~8% fewer bytes than level 1 on source text at nearly its speed; used when the link is so
#: slow that level 1 outruns it many times (AWS's plugin uploading, striped or not). Not the default level 6
#: (~19% fewer bytes than level 1 at under half its speed): through AWS's plugin on the sandbox, a 64 MB source
#: tarball over 8 sessions took 3.6 s at level 3, 3.7 s at level 1 and 4.5 s at level 6 (medians of 3): the
#: compressor shares the CPU with every session's plugin (as it does on a real client).
TIGHT_LEVEL = 3
#: How many times the link's rate level 1's measured speed must be for TIGHT_LEVEL to be chosen.
TIGHT_MARGIN = 8
#: Largest piece a decompressor may hand back at once (a MiB of gzip can stand for a GiB of zeros).
MAX_OUTPUT = 4 << 20


def judge(sample: bytes) -> tuple[float, float]:
    """(compressed size / size, compression speed in bytes/s) of ``sample``, or of its first QUICK_LOOK bytes
    when those do not shrink."""
    if not sample:
        return 1.0, 0.0
    head = sample[:QUICK_LOOK]
    ratio, speed = _measure(head)
    if ratio > WORTH_RATIO or len(head) == len(sample):
        return ratio, speed
    return _measure(sample)


def _measure(data: bytes) -> tuple[float, float]:
    started = time.perf_counter()
    packed = len(zlib.compress(data, LEVEL))
    return packed / len(data), len(data) / max(time.perf_counter() - started, 1e-6)


def worth_it(ratio: float, speed: float, link_rate: float) -> bool:
    """Whether compressing pays: the data shrinks, and the compressor outruns the link (then the stream's time
    is the compressed bytes over the link, instead of all bytes)."""
    return ratio <= WORTH_RATIO and link_rate < WORTH_SPEED * speed


def level_for(speed: float, link_rate: float) -> int:
    """zlib level for a stream: TIGHT_LEVEL when level 1 (measured at ``speed``) outruns the link TIGHT_MARGIN
    times over, else LEVEL."""
    return TIGHT_LEVEL if link_rate * TIGHT_MARGIN < speed else LEVEL


def link_rate(conn: Any, transport: Any, direction: str, timeout: float) -> float:
    """Bytes/s the connection's link moves ``direction`` ("put" or "get"): a PROBE_BYTES probe over an exec
    channel, and when that was faster than SLOW_LINK a LARGE_PROBE_BYTES one (on a fast link a small probe
    measures mostly latency; on a slow one a large probe costs seconds). Measured once per connection and
    direction, remembered on the connection when it has a ``link_rates`` dict."""
    rates: dict[str, float] | None = getattr(conn, "link_rates", None)
    if rates is not None and direction in rates:
        return rates[direction]
    rate = _probe(transport, direction, PROBE_BYTES, timeout)
    if rate >= SLOW_LINK:
        rate = _probe(transport, direction, LARGE_PROBE_BYTES, timeout)
    if rates is not None:
        rates[direction] = rate
    return rate


def _probe(transport: Any, direction: str, size: int, timeout: float) -> float:
    command = "cat > /dev/null" if direction == "put" else f"head -c {size} /dev/zero"
    channel = transport.open_session(timeout=timeout)
    try:
        channel.settimeout(timeout)
        asked = time.perf_counter()
        channel.exec_command(command)  # waits for the server's answer: one round trip
        started = time.perf_counter()
        round_trip = started - asked
        if direction == "put":
            channel.sendall(os.urandom(size))
            channel.shutdown_write()
            channel.recv_exit_status()
        else:
            while channel.recv(65536):
                pass
    finally:
        channel.close()
    # The end is known one round trip after the last byte arrived: counted out.
    return size / max(time.perf_counter() - started - round_trip, 1e-4)


class Prefixed:
    """A reader giving ``head`` first, then the rest of ``read`` (the sample judged before sending)."""

    def __init__(self, head: bytes, read: Callable[[int], bytes]) -> None:
        self.head = head
        self._read = read

    def read(self, size: int) -> bytes:
        if self.head:
            piece, self.head = self.head[:size], self.head[size:]
            return piece
        return self._read(size)


class Gzipping:
    """``send`` wrapped to send gzip: ``write`` takes plain bytes, ``close`` sends the trailer. ``wire`` counts
    what crossed the link."""

    def __init__(self, send: Callable[[bytes], Any], level: int = LEVEL) -> None:
        self._send = send
        self._pack = zlib.compressobj(level, zlib.DEFLATED, 31)
        self.wire = 0

    def write(self, data: bytes) -> None:
        packed = self._pack.compress(data)
        if packed:
            self.wire += len(packed)
            self._send(packed)

    def close(self) -> None:
        packed = self._pack.flush()
        self.wire += len(packed)
        self._send(packed)


class Gunzipping:
    """A reader of plain bytes over ``recv``, a gzip stream; ends with EOFError when the stream is cut short.
    ``wire`` counts what crossed the link."""

    def __init__(self, recv: Callable[[int], bytes]) -> None:
        self._recv = recv
        self._unpack = zlib.decompressobj(31)
        self._pending = b""
        self._done = False
        self.wire = 0

    def read(self, size: int) -> bytes:
        while not self._done:
            if not self._pending:
                self._pending = self._recv(size)
                self.wire += len(self._pending)
                if not self._pending:
                    self._done = True
                    tail = self._unpack.flush()
                    if not self._unpack.eof:
                        raise EOFError("the compressed stream ended early")
                    return tail
            data = self._unpack.decompress(self._pending, MAX_OUTPUT)
            self._pending = self._unpack.unconsumed_tail
            if data:
                return data
        return b""
