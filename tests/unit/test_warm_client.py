"""The warm path's own small parts: the request's JSON written without the json package, durations read
without re, and which commands go to a keeper."""

from __future__ import annotations

import json
import os

import pytest

from ssmfab.exceptions import ConfigError
from ssmfab.persist import identity, parse_persist
from ssmfab import warm
from ssmfab.warm import to_json, warm_plan

HOSTILE = [
    "plain", "", "a b", "quote\"s", "back\\slash", "new\nline\r\t", "$(rm -rf ~)", "`id`", "; echo x",
    "ünïcødé ☃ 𝄞", "\x00\x1f\x7f", "\udcff\udc80 (bytes that were not UTF-8)", "--persist=10m",
]  # fmt: skip


@pytest.mark.parametrize("value", [
    {"op": "run", "argv": HOSTILE, "cwd": "/tmp/a b", "umask": 0o022, "persist": None, "tty": [True, False], "columns": None},
    {"persist": 90.0, "n": -3, "big": 2**70, "f": 0.1, "nested": [[], {}, [None, True]]},
    HOSTILE,
])  # fmt: skip
def test_the_request_is_exactly_what_json_dumps_writes(value: object) -> None:
    assert to_json(value) == json.dumps(value)
    assert json.loads(to_json(value)) == (value if not isinstance(value, tuple) else list(value))


def test_anything_else_is_refused_not_written_wrongly() -> None:
    with pytest.raises(TypeError):
        to_json({"path": object()})


@pytest.mark.parametrize(("text", "seconds"), [
    ("10m", 600), ("90s", 90), (" 1.5 m ", 90), ("0", 0), ("1h", 3600), ("250ms", 0.25), ("5", 5), (90, 90), ("2.5h", 9000),
])  # fmt: skip
def test_durations(text: str, seconds: float) -> None:
    assert parse_persist(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "-5", "1e3", "1.", ".5", "ms", "10 minutes", "5d", "１０m", "1.2.3s"])
def test_what_is_not_a_duration_is_refused_naming_where(text: str) -> None:
    with pytest.raises(ConfigError, match="--persist"):
        parse_persist(text)


def test_which_commands_go_to_a_keeper_and_who_decides_the_idle_time() -> None:
    assert warm_plan(["run", "--id", "i-1", "true"], {"SSMFAB_PERSIST": "2m"}) == (120, {})
    assert warm_plan(["run", "--persist", "30s", "--region", "eu-west-1", "x"], {}) == (30, {"--region": "eu-west-1"})
    # Neither the flag nor the variable: the config files decide (the keeper reads them when there is one).
    assert warm_plan(["get", "a", "--id", "i-1"], {}) == (None, {})
    for off in (["run", "--no-persist", "x"], ["run", "-h"], ["shell", "i-1", "--ephemeral-key"], ["hosts", "--id", "i-1"]):
        assert warm_plan(off, {"SSMFAB_PERSIST": "2m"}) is None
    # Commands that read this process's input ride too: it is forwarded (see forwarded_input).
    assert warm_plan(["run", "--stdin", "x"], {"SSMFAB_PERSIST": "2m"}) == (120, {})
    assert warm_plan(["shell", "i-1", "--cmd", "top"], {"SSMFAB_PERSIST": "2m"}) == (120, {})
    assert warm_plan(["run", "x"], {"SSMFAB_PERSIST": "0"}) is None
    assert warm_plan(["run", "x"], {"SSMFAB_PERSIST": "soon"}) is None  # the ordinary path says what is wrong
    assert warm_plan(["run", "--", "--no-persist"], {"SSMFAB_PERSIST": "2m"}) == (120, {})  # a remote command's word


def test_identity_follows_who_you_are_not_how_long_you_keep_connections() -> None:
    base = {"HOME": "/nowhere", "AWS_PROFILE": "a", "SSMFAB_PERSIST": "1m"}
    assert identity(base) == identity({**base, "SSMFAB_PERSIST": "9m", "SSMFAB_KEEPER_DIR": "/x", "TERM": "dumb"})
    assert identity(base) != identity({**base, "AWS_PROFILE": "b"})
    assert identity(base) != identity(base, {"--region": "eu-west-1"})
    assert identity(base) != identity({**base, "SSMFAB_USER": "root"})


@pytest.mark.parametrize(("argv", "stdin_tty", "expected"), [
    (["run", "--id", "i-1", "x"], False, (False, False)),
    (["run", "--id", "i-1", "x"], True, (False, False)),
    (["run", "--stdin", "--id", "i-1", "x"], False, (True, False)),
    (["run", "--stdin", "--id", "i-1", "x"], True, None),  # the task refuses a terminal, in its own words
    (["run", "--id", "i-1", "--", "--stdin"], False, (False, False)),  # a remote command's word
    (["shell", "i-1"], True, (True, True)),  # raw mode
    (["shell", "i-1", "--cmd", "x"], False, None),  # ssh says it allocates no terminal, in its own words
])  # fmt: skip
def test_which_commands_forward_their_input(
    argv: list[str], stdin_tty: bool, expected: tuple[bool, bool] | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(warm, "isatty", lambda fd: stdin_tty)
    assert warm.forwarded_input(argv) == expected


def test_input_is_not_read_before_the_keeper_says_it_runs_the_command() -> None:
    """A keeper that answers "busy" leaves the command to this process: every byte of its input must still be
    there. The stand-in keeper waits for the input to be taken (as it would be by a client that forwarded it
    at once), and answers "busy" when it is, or when it has waited long enough that it will not be."""
    import fcntl
    import socket
    import struct
    import termios
    import threading
    import time

    ours, keepers = socket.socketpair()
    read_end, write_end = os.pipe()
    os.write(write_end, b"input" * 1000)

    def unread() -> int:
        return int(struct.unpack("i", fcntl.ioctl(read_end, termios.FIONREAD, b"\0" * 4))[0])

    def stand_in_keeper() -> None:
        deadline = time.monotonic() + 2.0  # only the correct client waits it out
        while unread() == 5000 and time.monotonic() < deadline:
            time.sleep(0.01)
        keepers.sendall(warm.FRAME.pack(b"b", 0))

    thread = threading.Thread(target=stand_in_keeper)
    thread.start()
    try:
        assert warm.stream(ours, input_fd=read_end) is None  # busy: run it yourself
    finally:
        thread.join()
        ours.close()
        keepers.close()
    assert unread() == 5000
    os.close(write_end)
    os.close(read_end)


@pytest.mark.parametrize(("chunks", "sent", "closed"), [
    ([b"ls\r"], b"ls\r", False),
    ([b"~."], b"", True),  # at the very start
    ([b"echo a\r~.", b"never"], b"echo a\r", True),
    ([b"echo a\r~", b".never"], b"echo a\r", True),  # split between reads
    ([b"a~.b\r"], b"a~.b\r", False),  # not at the start of a line
    ([b"~~.\r"], b"~.\r", False),  # ~~ is one ~
    ([b"~x\n~."], b"~x\n", True),
])  # fmt: skip
def test_the_escape_of_an_interactive_session(chunks: list[bytes], sent: bytes, closed: bool) -> None:
    reader = warm.EscapeReader()
    out, done = b"", False
    for chunk in chunks:
        data, done = reader.feed(chunk)
        out += data
        if done:
            break
    assert (out, done) == (sent, closed)


def test_ctrl_c_before_a_busy_keeper_answers_runs_nothing_anywhere(capsys: pytest.CaptureFixture[str]) -> None:
    """Ctrl-C, then "busy, run it yourself": the command must not then run here as if nothing was pressed."""
    import signal
    import socket
    import threading
    import time

    ours, keepers = socket.socketpair()
    before = signal.getsignal(signal.SIGINT)

    given_up = threading.Event()

    def stand_in_keeper() -> None:
        while signal.getsignal(signal.SIGINT) is before:  # until the command forwards Ctrl-C
            if given_up.is_set():
                return
            time.sleep(0.001)
        os.kill(os.getpid(), signal.SIGINT)  # the user's Ctrl-C, while the keeper has not answered yet
        assert keepers.recv(warm.FRAME.size) == warm.FRAME.pack(b"i", 0)  # it reached the keeper
        keepers.sendall(warm.FRAME.pack(b"b", 0))

    thread = threading.Thread(target=stand_in_keeper)
    thread.start()
    try:
        assert warm.stream(ours, task="run") == 130
    finally:
        given_up.set()
        thread.join()
        ours.close()
        keepers.close()
    assert capsys.readouterr().err == "interrupted (Ctrl-C): ssmfab run stopped before any host started work\n"
