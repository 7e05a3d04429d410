"""ByteQueue keeps paramiko's BufferedPipe contract: bytes come out in order, in the sizes asked for."""

from __future__ import annotations

import os
import threading

import pytest
from paramiko.buffered_pipe import PipeTimeout

from ssmfab.fastssh import ByteQueue


def test_reads_return_fed_bytes_in_order_whatever_the_sizes() -> None:
    queue = ByteQueue()
    data = os.urandom(1 << 20)
    for start in range(0, len(data), 40_000):
        queue.feed(data[start : start + 40_000])
    assert len(queue) == len(data)
    out = bytearray()
    for size in (1, 7, 65_536, 300_000, 1 << 20):
        piece = queue.read(size)
        assert isinstance(piece, bytes) and 0 < len(piece) <= size
        out += piece
    assert bytes(out) == data and len(queue) == 0


def test_a_reader_waits_for_a_writer_and_sees_the_close() -> None:
    queue = ByteQueue()
    writer = threading.Timer(0.05, lambda: (queue.feed(b"late"), queue.close()))
    writer.start()
    try:
        assert queue.read(100, timeout=5) == b"late"
        assert queue.read(100, timeout=5) == b""  # closed and drained: end of stream
    finally:
        writer.join()


def test_timeouts_and_empty_behave_like_paramikos() -> None:
    queue = ByteQueue()
    with pytest.raises(PipeTimeout):
        queue.read(10, timeout=0.01)
    queue.feed(b"abc")
    assert queue.read_ready()
    assert queue.empty() == b"abc" and len(queue) == 0
