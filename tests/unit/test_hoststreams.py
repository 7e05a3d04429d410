"""The host side of streamed transfers, run here as a host would run it: copies and checksums in both
directions, with python3 and with POSIX tools only, and one line of reason when the copy fails."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from ssmfab.hoststreams import DIGEST_LINE, stream_command

PAYLOAD = os.urandom(3 * 1024 * 1024 + 4321)


def run(command: str, path: Path, data: bytes = b"", prefix: str = "") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(f"{prefix}{command} '{path}'", shell=True, input=data, capture_output=True, timeout=60)


@pytest.mark.parametrize("python", [True, False], ids=["python3", "posix-tools"])
def test_put_writes_the_file_and_reports_its_sha256(tmp_path: Path, python: bool) -> None:
    target = tmp_path / "up.bin"
    target.touch(mode=0o600)
    done = run(stream_command("put", python=python), target, PAYLOAD)
    assert done.returncode == 0, done.stderr
    assert target.read_bytes() == PAYLOAD
    found = DIGEST_LINE.search(done.stdout)
    assert found and found.group(1).decode() == hashlib.sha256(PAYLOAD).hexdigest()


@pytest.mark.parametrize("python", [True, False], ids=["python3", "posix-tools"])
def test_get_sends_the_file_and_reports_its_sha256_apart(tmp_path: Path, python: bool) -> None:
    source = tmp_path / "down.bin"
    source.write_bytes(PAYLOAD)
    done = run(stream_command("get", python=python), source)
    assert done.returncode == 0, done.stderr
    assert done.stdout == PAYLOAD
    found = DIGEST_LINE.search(done.stderr)
    assert found and found.group(1).decode() == hashlib.sha256(PAYLOAD).hexdigest()


def test_a_write_the_host_refuses_gives_one_line_and_no_checksum(tmp_path: Path) -> None:
    target = tmp_path / "full.bin"
    target.touch()
    done = run(stream_command("put"), target, PAYLOAD, prefix="ulimit -f 1024; ")  # files stop at 1 MiB
    assert done.returncode != 0
    assert not DIGEST_LINE.search(done.stdout)
    assert done.stderr.decode().strip() == "File too large"


@pytest.mark.parametrize("python", [True, False], ids=["python3", "posix-tools"])
def test_a_file_the_host_cannot_open_fails_with_its_reason_and_no_checksum(tmp_path: Path, python: bool) -> None:
    path = tmp_path / "missing.bin"
    done = run(stream_command("get", python=python), path)
    assert done.returncode != 0
    assert done.stdout == b""
    assert DIGEST_LINE.search(done.stderr) is None
    [reason] = done.stderr.decode().splitlines()
    assert "No such file" in reason and ("missing.bin" in reason or python)


def test_a_read_that_fails_part_way_hashes_a_marker_not_the_stream(tmp_path: Path) -> None:
    # A directory opens but cannot be read: tee fails after the open, as on an I/O error mid-file.
    done = run(stream_command("get", python=False), tmp_path)
    found = DIGEST_LINE.search(done.stderr)
    assert found is not None and found.group(1).decode() == hashlib.sha256(b"read-failed\n").hexdigest()
    assert done.stdout == b""


def test_a_host_whose_python3_cannot_start_falls_back_to_posix_tools(tmp_path: Path) -> None:
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "python3").write_text("#!/bin/sh\necho 'python3: broken' >&2\nexit 2\n")
    (fake / "python3").chmod(0o755)
    target = tmp_path / "up.bin"
    target.touch()
    done = run(stream_command("put"), target, PAYLOAD, prefix=f"PATH={fake}:$PATH; ")
    assert done.returncode == 0, done.stderr
    assert target.read_bytes() == PAYLOAD
    assert DIGEST_LINE.search(done.stdout)


def test_a_part_that_cannot_be_written_says_why_in_one_line_and_leaves_the_shared_file(tmp_path: Path) -> None:
    import sys

    from ssmfab.hoststreams import PART_WRITER

    shared = tmp_path / "whole.part"
    shared.write_bytes(b"x" * 10)
    shared.chmod(0o400)  # the part cannot open it for writing (root can: then a folder that does not exist)
    path = str(shared) if os.geteuid() != 0 else str(tmp_path / "missing" / "whole.part")
    done = subprocess.run([sys.executable, "-c", PART_WRITER, path, "0"], input=b"abc", capture_output=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.count(b"\n") == 1 and b"Traceback" not in done.stderr
    assert shared.exists()  # every part's file: the client decides


@pytest.mark.parametrize("exit_status", [2, 126, 127])
def test_a_python3_that_cannot_run_the_program_leaves_a_download_and_a_part_to_posix_tools(
    tmp_path: Path, exit_status: int
) -> None:
    """2: an interpreter too old for -I; 126, 127: not runnable. Neither read stdin, so the tools get it all."""
    from ssmfab.hoststreams import STREAM_PART

    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "python3").write_text(f"#!/bin/sh\necho 'python3: cannot' >&2\nexit {exit_status}\n")
    (fake / "python3").chmod(0o755)
    prefix = f"PATH={fake}:$PATH; "
    source = tmp_path / "down.bin"
    source.write_bytes(PAYLOAD)
    done = run(stream_command("get"), source, prefix=prefix)
    assert done.returncode == 0, done.stderr
    assert done.stdout == PAYLOAD
    found = DIGEST_LINE.search(done.stderr)
    assert found and found.group(1).decode() == hashlib.sha256(PAYLOAD).hexdigest()

    whole = tmp_path / "whole.part"
    whole.write_bytes(b"\0" * (2 << 20))
    part = subprocess.run(
        f"{prefix}{STREAM_PART} '{whole}' 1048576", shell=True, input=PAYLOAD[: 1 << 20], capture_output=True, timeout=60
    )
    assert part.returncode == 0, part.stderr
    assert whole.read_bytes() == b"\0" * (1 << 20) + PAYLOAD[: 1 << 20]


def test_the_copy_program_failing_is_not_retried_with_the_tools(tmp_path: Path) -> None:
    """A download the program could not finish ends there (exit 1): the tools would send the file again."""
    done = run(stream_command("get"), tmp_path)  # a directory: python opens it, then cannot read it
    assert done.returncode == 1
    assert done.stdout == b"" and DIGEST_LINE.search(done.stderr) is None
    assert done.stderr.decode().count("\n") == 1
