"""Compression on the wire: the decision (measured ratio and speed against the link's rate), the gzip stream
helpers both ways, and the host's codecs run here as a host would run them (python3 and POSIX tools)."""

from __future__ import annotations

import gzip
import hashlib
import os
import subprocess
import zlib
from pathlib import Path

import pytest

from ssmfab.hoststreams import DIGEST_LINE, stream_command
from ssmfab.transfer.compress import Gunzipping, Gzipping, Prefixed, judge, worth_it

SOURCE_TEXT = b"".join(path.read_bytes() for path in sorted(Path(__file__).parents[2].joinpath("ssmfab").rglob("*.py")))
TEXT = (SOURCE_TEXT * (3 * 1024 * 1024 // len(SOURCE_TEXT) + 1))[: 3 * 1024 * 1024 + 77]
RANDOM = os.urandom(3 * 1024 * 1024 + 77)


def chunks(data: bytes, size: int = 100_000) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def test_the_decision_weighs_measured_ratio_and_speed_against_the_link() -> None:
    ratio, speed = judge(TEXT[: 1 << 20])
    assert ratio < 0.5 and speed > 1e6
    assert worth_it(ratio, speed, link_rate=650_000)  # AWS's plugin uploading
    assert not worth_it(ratio, speed, link_rate=speed * 2)  # a link faster than the compressor
    random_ratio, random_speed = judge(RANDOM[: 1 << 20])
    assert random_ratio > 0.99
    assert not worth_it(random_ratio, random_speed, link_rate=1)
    assert judge(b"") == (1.0, 0.0)


def test_gzipping_and_gunzipping_round_trip_and_count_the_wire() -> None:
    sent: list[bytes] = []
    packer = Gzipping(sent.append)
    for piece in chunks(TEXT):
        packer.write(piece)
    packer.close()
    wire = b"".join(sent)
    assert gzip.decompress(wire) == TEXT and packer.wire == len(wire) < len(TEXT) // 2
    pieces = iter(chunks(wire, 4096) + [b""])
    unpacker = Gunzipping(lambda size: next(pieces))
    out = b"".join(iter(lambda: unpacker.read(65536), b""))
    assert out == TEXT and unpacker.wire == len(wire)


def test_a_cut_gzip_stream_is_an_error_not_a_short_file() -> None:
    wire = gzip.compress(TEXT)[:-100]
    pieces = iter([wire, b""])
    unpacker = Gunzipping(lambda size: next(pieces))
    with pytest.raises(EOFError, match="^the compressed stream ended early$"):
        while unpacker.read(65536):
            pass


def test_after_its_end_a_gzip_stream_reads_empty_without_asking_the_link_again() -> None:
    pieces = iter([gzip.compress(b"all of it"), b""])
    asked: list[int] = []

    def recv(size: int) -> bytes:
        asked.append(size)
        return next(pieces)

    unpacker = Gunzipping(recv)
    assert unpacker.read(65536) == b"all of it"
    assert unpacker.read(65536) == b"" and unpacker.read(65536) == b""
    assert len(asked) == 2  # the data, then the end: never again (next() would raise)


def test_a_small_stream_that_stands_for_much_is_handed_out_in_bounded_pieces() -> None:
    bomb = gzip.compress(bytes(64 << 20), 9)  # ~64 KiB standing for 64 MiB of zeros
    pieces = iter([bomb, b""])
    unpacker = Gunzipping(lambda size: next(pieces))
    sizes = list(iter(lambda: len(unpacker.read(65536)), 0))
    assert sum(sizes) == 64 << 20 and max(sizes) <= 4 << 20


def test_prefixed_gives_the_sample_back_first() -> None:
    rest = iter([b"tail", b""])
    reader = Prefixed(b"head-", lambda size: next(rest))
    assert reader.read(3) + reader.read(100) + reader.read(100) + reader.read(100) == b"head-tail"


def run(command: str, path: Path, codec: str, data: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(f"{command} '{path}' {codec}", shell=True, input=data, capture_output=True, timeout=60)


@pytest.mark.parametrize("python", [True, False], ids=["python3", "posix-tools"])
def test_the_host_writes_a_gzip_upload_decompressed_and_hashes_the_file_itself(tmp_path: Path, python: bool) -> None:
    target = tmp_path / "up.txt"
    done = run(stream_command("put", python=python), target, "gzip", gzip.compress(TEXT, 1))
    assert done.returncode == 0, done.stderr
    assert target.read_bytes() == TEXT
    found = DIGEST_LINE.search(done.stdout)
    assert found and found.group(1).decode() == hashlib.sha256(TEXT).hexdigest()


def test_a_cut_gzip_upload_gives_no_checksum(tmp_path: Path) -> None:
    done = run(stream_command("put"), tmp_path / "cut.txt", "gzip", gzip.compress(TEXT, 1)[:-50])
    assert done.returncode != 0 and not DIGEST_LINE.search(done.stdout)
    assert "ended early" in done.stderr.decode()
    assert not (tmp_path / "cut.txt").exists()  # the host removes what can never verify (its client may be gone)


@pytest.mark.parametrize("python", [True, False], ids=["python3", "posix-tools"])
@pytest.mark.parametrize("codec", ["raw", "gzip"])
def test_an_upload_cut_short_of_its_size_leaves_no_file_and_no_checksum(tmp_path: Path, python: bool, codec: str) -> None:
    # A cut connection ends the host's input just as a finished upload does: only the size tells them apart.
    target = tmp_path / ".up.txt.part"
    data = gzip.compress(TEXT, 1) if codec == "gzip" else TEXT
    whole = run(stream_command("put", python=python), target, f"{codec} {len(TEXT)}", data)
    assert whole.returncode == 0 and target.read_bytes() == TEXT and DIGEST_LINE.search(whole.stdout)
    cut = TEXT[: len(TEXT) // 2]
    short = run(stream_command("put", python=python), target, f"{codec} {len(TEXT)}", gzip.compress(cut, 1) if codec == "gzip" else cut)
    assert short.returncode != 0 and not DIGEST_LINE.search(short.stdout)
    assert not target.exists(), "the host kept the temporary file of a cut upload"


@pytest.mark.parametrize(
    ("data", "codec", "header"),
    [(TEXT, "gzip", b"Z"), (TEXT, "auto:1000000", b"Z"), (RANDOM, "auto:1000000", b"R"), (TEXT, "auto:1e12", b"R")],
    ids=["forced", "compressible-slow-link", "random", "link-faster-than-compressor"],
)
def test_the_host_compresses_a_download_when_asked_or_when_it_pays(tmp_path: Path, data: bytes, codec: str, header: bytes) -> None:
    source = tmp_path / "down.bin"
    source.write_bytes(data)
    done = run(stream_command("get"), source, codec)
    assert done.returncode == 0, done.stderr
    assert done.stdout[:1] == header
    body = done.stdout[1:]
    assert (zlib.decompress(body, 31) if header == b"Z" else body) == data
    found = DIGEST_LINE.search(done.stderr)
    assert found and found.group(1).decode() == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(("answer", "header"), [(b"Z", b"Z"), (b"R", b"R"), (b"", b"R")], ids=["yes", "no", "no-answer"])
def test_asked_the_host_asks_for_the_links_verdict_only_when_its_data_shrinks(
    tmp_path: Path, answer: bytes, header: bytes
) -> None:
    source = tmp_path / "down.txt"
    source.write_bytes(TEXT)
    done = run(stream_command("get"), source, "ask", answer)
    assert done.returncode == 0, done.stderr
    question, _, rest = done.stdout.partition(b"\n")
    assert question[:1] == b"?" and float(question[1:]) > 0  # its compression speed, bytes/s
    assert rest[:1] == header
    assert (zlib.decompress(rest[1:], 31) if header == b"Z" else rest[1:]) == TEXT
    found = DIGEST_LINE.search(done.stderr)
    assert found and found.group(1).decode() == hashlib.sha256(TEXT).hexdigest()


@pytest.mark.parametrize("python", [True, False], ids=["python3", "posix-tools"])
def test_asked_about_data_that_does_not_shrink_the_host_sends_it_raw_at_once(tmp_path: Path, python: bool) -> None:
    source = tmp_path / "down.bin"
    source.write_bytes(RANDOM)
    done = run(stream_command("get", python=python), source, "ask", b"Z")  # an answer it must not read as one
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"R" + RANDOM


def test_asked_about_a_file_whose_start_does_not_shrink_the_host_sends_it_raw_at_once(tmp_path: Path) -> None:
    # Its first MiB as a whole would shrink (it would ask): the first 64 KiB, judged first, do not.
    from ssmfab.transfer.compress import QUICK_LOOK, WORTH_RATIO

    data = RANDOM[:QUICK_LOOK] + TEXT
    assert len(zlib.compress(data[: 1 << 20], 1)) <= WORTH_RATIO * (1 << 20)
    source = tmp_path / "down.bin"
    source.write_bytes(data)
    done = run(stream_command("get"), source, "ask", b"Z")
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"R" + data
    done = run(stream_command("get"), source, "auto:1000")  # a slow link does not change that
    assert done.stdout == b"R" + data


def test_without_python_a_download_says_raw_and_is_not_compressed(tmp_path: Path) -> None:
    source = tmp_path / "down.txt"
    source.write_bytes(TEXT)
    done = run(stream_command("get", python=False), source, "gzip")
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"R" + TEXT


def test_a_link_far_slower_than_the_compressor_gets_the_tighter_level() -> None:
    from ssmfab.transfer.compress import LEVEL, TIGHT_LEVEL, level_for

    assert level_for(speed=100e6, link_rate=650_000 * 8) == TIGHT_LEVEL  # AWS's plugin, striped 8 ways
    assert level_for(speed=100e6, link_rate=50e6) == LEVEL


def test_the_compressors_speed_is_the_samples_size_over_the_time_it_took(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from ssmfab.transfer import compress

    sample = TEXT[: 1 << 20]
    packed = len(zlib.compress(sample, compress.LEVEL))
    # Two timings: the quick look (text shrinks there), then the whole sample's, which is the one returned.
    monkeypatch.setattr(compress, "time", SimpleNamespace(perf_counter=iter([0.0, 0.5, 1.0, 1.25]).__next__))
    assert judge(sample) == (packed / len(sample), len(sample) / 0.25)
    monkeypatch.setattr(compress, "time", SimpleNamespace(perf_counter=iter([0.0, 0.5, 1.0, 1.0]).__next__))
    assert judge(sample) == (packed / len(sample), len(sample) / 1e-6)  # too fast to time: bounded, not a division by 0


def test_a_sample_whose_start_does_not_shrink_is_judged_on_its_start_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    from ssmfab.transfer import compress

    # Random bytes, then text: the whole MiB would shrink below WORTH_RATIO, its start does not.
    sample = RANDOM[: compress.QUICK_LOOK] + TEXT[: (1 << 20) - compress.QUICK_LOOK]
    assert len(zlib.compress(sample, compress.LEVEL)) <= compress.WORTH_RATIO * len(sample)
    compressed: list[int] = []
    real = zlib.compress
    monkeypatch.setattr(compress.zlib, "compress", lambda data, level: compressed.append(len(data)) or real(data, level))
    ratio, speed = judge(sample)
    assert compressed == [compress.QUICK_LOOK] and ratio > 0.99 and speed > 0
    compressed.clear()
    ratio, _ = judge(TEXT[: 1 << 20])  # a start that shrinks: the whole sample decides
    assert compressed == [compress.QUICK_LOOK, 1 << 20] and ratio == len(real(TEXT[: 1 << 20], compress.LEVEL)) / (1 << 20)
    compressed.clear()
    ratio, _ = judge(TEXT[:1000])
    assert compressed == [1000] and ratio == len(real(TEXT[:1000], compress.LEVEL)) / 1000  # no longer than the look: once


def test_the_thresholds_hold_the_ratio_inclusively_and_the_link_strictly() -> None:
    from ssmfab.transfer.compress import LEVEL, TIGHT_LEVEL, TIGHT_MARGIN, WORTH_RATIO, WORTH_SPEED, level_for

    assert worth_it(WORTH_RATIO, speed=1000.0, link_rate=1.0)  # shrinks to exactly the fraction: pays
    assert not worth_it(0.1, speed=1000.0, link_rate=WORTH_SPEED * 1000.0)  # the link exactly as fast: does not
    assert level_for(speed=TIGHT_MARGIN * 1000.0, link_rate=1000.0) == LEVEL  # exactly the margin: not tighter
    assert level_for(speed=TIGHT_MARGIN * 1000.0 + 1, link_rate=1000.0) == TIGHT_LEVEL


def test_prefixed_asks_the_rest_for_the_size_it_was_asked() -> None:
    asked: list[int] = []
    reader = Prefixed(b"ab", lambda size: asked.append(size) or b"x" * size)
    assert reader.read(5) == b"ab" and reader.read(7) == b"x" * 7 and asked == [7]
