"""The remote runner over a real SSH channel: one OpenSSH sshd on loopback, reached directly (no SSM, which
the runner never sees). Commands get quoted environments, end-of-file on stdin unless given input, piped
input in full, whole characters, a capped Result with a note of what was dropped, and a last line without
a newline printed at the end."""

from __future__ import annotations

import hashlib
import io
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fabric import Connection
from invoke.watchers import Responder

from ssmfab.output import PrefixedStream
from ssmfab.runners import TailBuffer
from ssmfab.sandbox.sshd import SSHServer

from .conftest import fed_pipe, loopback_connection


class CappedConnection(Connection):  # type: ignore[misc]
    output_cap = 1000  # a plain attribute (as on SSMConnection), read by the runner


@pytest.fixture
def conn(server: tuple[SSHServer, Path]) -> Iterator[CappedConnection]:
    with loopback_connection(server, CappedConnection) as connection:
        yield connection


def test_environment_values_reach_the_command_as_themselves(conn: CappedConnection, server: tuple[SSHServer, Path]) -> None:
    hostile = {"A": "two words", "B": "$(touch PWNED); `touch PWNED`", "C": "it's\nnew"}
    result = conn.run('printf "%s|" "$A" "$B" "$C"', env=hostile, hide=True, timeout=60)
    assert result.stdout == "two words|$(touch PWNED); `touch PWNED`|it's\nnew|"
    assert not (server[0].home / "PWNED").exists()


def test_without_input_a_command_reads_end_of_file_at_once(conn: CappedConnection) -> None:
    result = conn.run("cat; echo after-cat $?", hide=True, timeout=60)  # would wait for ever on an open stdin
    assert result.stdout == "after-cat 0\n" and result.exited == 0


def test_piped_input_arrives_whole_then_ends(conn: CappedConnection) -> None:
    data = os.urandom(300_000)
    with fed_pipe(data, "r") as source:
        result = conn.run("sha256sum | cut -c1-64", in_stream=source, hide=True, timeout=60)
    assert result.stdout.strip() == hashlib.sha256(data).hexdigest()


def test_a_file_as_input_is_forwarded_too(conn: CappedConnection, tmp_path: Path) -> None:
    given = tmp_path / "input.txt"
    given.write_text("line one\nline two\n")
    with given.open() as source:
        result = conn.run("wc -l", in_stream=source, hide=True, timeout=60)
    assert result.stdout.strip() == "2"


def test_the_result_keeps_only_the_tail_and_says_how_much_was_dropped(conn: CappedConnection) -> None:
    result = conn.run("head -c 5000 /dev/zero | tr '\\0' x; printf 'END' >&2", hide=True, timeout=60)
    note = "[ssmfab: 4000 earlier characters dropped; output kept up to 1000]\n"
    assert result.stdout == note + "x" * 1000
    assert result.stderr == "END"  # under the cap: untouched, no note
    assert result.dropped == {"stdout": 4000, "stderr": 0}  # for scripts: what each stream lost, by name


def test_characters_stay_whole_across_reads(conn: CappedConnection) -> None:
    # invoke reads 1000 bytes at a time; 2-byte characters from an odd offset straddle every read.
    result = conn.run("printf 'a'; i=0; while [ $i -lt 900 ]; do printf 'é'; i=$((i+1)); done", hide=True, timeout=60)
    assert result.stdout == "a" + "é" * 900  # 901 characters, under the cap


def test_shown_output_is_prefixed_and_the_last_unended_line_printed(conn: CappedConnection) -> None:
    sink = io.StringIO()
    stream = PrefixedStream(sink, "[h] ", threading.Lock())
    result = conn.run("printf 'one\\ntwo'", out_stream=stream, timeout=60)
    assert sink.getvalue() == "[h] one\n[h] two\n"
    assert result.stdout == "one\ntwo"


def test_the_exit_status_comes_back(conn: CappedConnection) -> None:
    result = conn.run("exit 7", warn=True, hide=True, timeout=60)
    assert result.exited == 7 and result.failed


def test_a_connection_that_sets_no_cap_gets_the_default_one(server: tuple[SSHServer, Path]) -> None:
    with loopback_connection(server) as plain:
        result = plain.run("head -c 5000 /dev/zero | tr '\\0' y", hide=True, timeout=60)
    assert result.stdout == "y" * 5000  # far under the default cap: all of it


def test_text_in_memory_as_input_is_forwarded(conn: CappedConnection) -> None:
    # A StringIO has no file descriptor: invoke's own forwarding handles it.
    result = conn.run("cat", in_stream=io.StringIO("from memory\n"), hide=True, timeout=60)
    assert result.stdout == "from memory\n"


def test_input_that_arrives_late_is_still_forwarded(conn: CappedConnection) -> None:
    # The input is written only once the command has said it is waiting for it: the forwarder must keep
    # waiting for input, not give up when none is there yet. (The test passes however late the input
    # comes; the short delay only makes sure the forwarder has looked at an empty pipe before.)
    read_end, write_end = os.pipe()
    writer = os.fdopen(write_end, "w")

    def send() -> None:
        writer.write("late data\n")
        writer.close()

    late = threading.Timer(0.2, send)

    class Watch(io.StringIO):
        def write(self, text: str) -> int:
            if "waiting" in text:
                late.start()
            return super().write(text)

    with os.fdopen(read_end, "r") as source:
        result = conn.run("echo waiting; cat", in_stream=source, out_stream=Watch(), timeout=60)
    late.join()
    assert result.stdout == "waiting\nlate data\n"


def test_a_command_that_ignores_its_input_ends_though_the_input_stays_open(conn: CappedConnection) -> None:
    read_end, write_end = os.pipe()
    try:
        with os.fdopen(read_end, "r") as source:
            result = conn.run("echo done", in_stream=source, hide=True, timeout=60)
        assert result.stdout == "done\n"
    finally:
        os.close(write_end)


def test_hidden_output_is_not_shown(conn: CappedConnection, capsys: pytest.CaptureFixture[str]) -> None:
    result = conn.run("echo secret", hide=True, timeout=60)
    assert result.stdout == "secret\n" and capsys.readouterr().out == ""
    conn.run("echo shown", timeout=60)
    assert capsys.readouterr().out == "shown\n"


def test_without_watchers_the_kept_output_is_not_rejoined_per_read(conn: CappedConnection, monkeypatch: pytest.MonkeyPatch) -> None:
    # invoke hands the kept output to its watchers after every 1000-byte read by joining all of it: with no
    # watcher that was output_cap characters copied per read (most of a long command's CPU, and its memory churn).
    joins = []
    iterate = TailBuffer.__iter__

    def counted(self: TailBuffer) -> Iterator[str]:
        joins.append(1)
        return iterate(self)

    monkeypatch.setattr(TailBuffer, "__iter__", counted)
    result = conn.run("head -c 200000 /dev/zero | tr '\\0' y", hide=True, timeout=60)
    note, kept = result.stdout.split("\n", 1)  # whole reads are dropped from the front: up to the cap is kept
    assert set(kept) == {"y"} and len(kept) <= 1000 and note == f"[ssmfab: {200_000 - len(kept)} earlier characters dropped; output kept up to 1000]"
    assert len(joins) <= 4, f"the kept output was read {len(joins)} times for 200 reads"


def test_watchers_still_answer_prompts(conn: CappedConnection) -> None:
    answer = Responder(pattern=r"name\? ", response="web 1\n")
    result = conn.run('printf "name? "; read -r name; echo "got [$name]"', watchers=[answer], hide=True, timeout=60)
    assert result.stdout.endswith("got [web 1]\n")
