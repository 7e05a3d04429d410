"""What a command's Result keeps of its output: the tail, capped, with a count of what was dropped; and
characters whose bytes arrive in two reads stay whole. (The live stream of every byte, and the runner over a
real SSH channel, are covered by tests/integration/test_live_output.py.)"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from ssmfab.runners import CappedRemote, TailBuffer


def test_under_the_cap_everything_is_kept() -> None:
    inner: list[str] = ["ab"]
    tail = TailBuffer(inner, 10)
    for chunk in ("cd", "efgh", "ij"):
        tail.append(chunk)
    assert "".join(tail) == "abcdefghij" and tail.dropped == 0 and tail.size == 10
    assert inner == ["ab", "cd", "efgh", "ij"]  # the very list invoke joins into Result.stdout


def test_past_the_cap_the_oldest_output_goes_first_and_is_counted() -> None:
    inner: list[str] = []
    tail = TailBuffer(inner, 5)
    for chunk in ("abc", "de", "fg"):
        tail.append(chunk)
    assert "".join(inner) == "defg" and tail.dropped == 3 and tail.size == 4
    tail.append("hij")
    assert "".join(inner) == "fghij" and tail.dropped == 5 and tail.size == 5


def test_one_chunk_larger_than_the_cap_keeps_its_own_tail() -> None:
    inner: list[str] = []
    tail = TailBuffer(inner, 4)
    tail.append("xy")
    tail.append("0123456789")
    assert inner == ["6789"] and tail.dropped == 8 and tail.size == 4
    assert list(tail) == ["6789"]


def test_existing_output_counts_toward_the_cap() -> None:
    tail = TailBuffer(["abcd", "ef"], 4)
    assert tail.size == 6
    tail.append("g")
    assert "".join(tail) == "efg" and tail.dropped == 4


@pytest.mark.parametrize("split", [1, 2, 3])
def test_a_character_split_between_reads_stays_whole(split: int) -> None:
    data = "日本".encode() + b"\xff" + "é".encode()  # two 3-byte characters, a stray byte, a 2-byte one
    reads = [data[:split], data[split:7], data[7:], b""]
    runner = SimpleNamespace(encoding="utf-8", read_chunk_size=1000)
    asked: list[int] = []

    def reader(size: int) -> bytes:
        asked.append(size)
        return reads.pop(0)

    text = "".join(CappedRemote.read_proc_output(runner, reader))
    assert text == "日本\ufffdé"
    assert asked == [1000] * 4


def test_an_unfinished_character_at_the_end_is_not_lost() -> None:
    reads = [b"ok\xe6\x97", b""]
    runner = SimpleNamespace(encoding="utf-8", read_chunk_size=7)
    assert list(CappedRemote.read_proc_output(runner, lambda size: reads.pop(0))) == ["ok", "\ufffd"]
