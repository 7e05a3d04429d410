"""Warm sessions for commands that read this terminal's input: a warm ``shell`` (interactive, and ``--cmd``) over
a real pseudo-terminal, and ``run --stdin`` fed from a pipe. The keeper runs them on the connection it holds;
the command's own process forwards its input, its terminal's size and changes, and gets the exit code."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pty
import signal
import struct
import subprocess
import sys
import termios
from pathlib import Path

from ssmfab.sandbox import Sandbox

from ..waiting import wait_until
from .test_warm import ANNOUNCEMENT, SSMFAB, Warm, steady, warm  # noqa: F401 - warm is a fixture

__all__ = ["warm"]


class Terminal:
    """``ssmfab`` on a pseudo-terminal, driven by what it prints (no sleeps): wait for text, type keys."""

    def __init__(
        self, args: list[str], env: dict[str, str], size: tuple[int, int] = (24, 80), program: list[str] = SSMFAB
    ) -> None:
        self.leader, self.follower = pty.openpty()
        set_size(self.follower, *size)
        self.modes = termios.tcgetattr(self.follower)
        self.process = subprocess.Popen(
            [*program, *args], stdin=self.follower, stdout=self.follower, stderr=self.follower, env=env
        )  # fmt: skip
        self.seen = bytearray()

    def expect(self, *texts: bytes, limit: float = 60.0) -> None:
        """Read until one of ``texts`` has appeared (``limit`` only stops a broken run from hanging)."""
        import select

        while not any(text in self.seen for text in texts):
            ready, _, _ = select.select([self.leader], [], [], limit)
            assert ready, f"waited {limit:g} s for {texts!r}; seen: {bytes(self.seen)!r}"
            self.seen += os.read(self.leader, 65536)

    def type(self, keys: bytes) -> None:
        os.write(self.leader, keys)

    def finish(self) -> int:
        """Its exit code, once it has ended; what it printed last is read too."""
        import select

        code = self.process.wait(timeout=120)
        while select.select([self.leader], [], [], 0)[0]:
            chunk = os.read(self.leader, 65536)
            if not chunk:
                break
            self.seen += chunk
        return code

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        os.close(self.leader)
        os.close(self.follower)


def uses(warm: Warm) -> list[int]:
    """How many commands each warm connection has served (the keeper's own count)."""
    return [int(str(row["uses"])) for row in warm.listing()]


def loaded_libraries(importtime: str) -> set[str]:
    """Which of the SSH and AWS libraries (and invoke) a ``-X importtime`` trace shows loaded."""
    modules = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in importtime.splitlines() if "import time:" in line}
    return modules & {"paramiko", "fabric", "botocore", "boto3", "invoke"}


def set_size(fd: int, rows: int, columns: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))


def test_a_warm_shell_gets_a_prompt_runs_commands_and_exits_with_its_code(warm: Warm) -> None:
    assert warm("run", "--name", "web-1", "true").returncode == 0
    [kept] = warm.listing()
    term = Terminal(["shell", "web-1"], warm.env)
    try:
        term.expect(b"$ ", b"# ")  # the prompt (root's ends in #, others' in $)
        term.type(b"echo warm-$((6*7)); tty\r")
        term.expect(b"warm-42")
        term.expect(b"/dev/pts/")  # the remote shell has a terminal of its own
        term.type(b"exit 5\r")
        assert term.finish() == 5, bytes(term.seen)
        # The terminal is back in the mode it was in (the shell had it in raw mode).
        assert termios.tcgetattr(term.follower) == term.modes
    finally:
        term.close()
    assert ANNOUNCEMENT.encode() not in term.seen and b"Traceback" not in term.seen
    [still] = warm.listing()
    assert still["session_id"] == kept["session_id"] and still["uses"] == 2


def test_a_warm_shell_prints_and_exits_as_a_cold_one(warm: Warm) -> None:
    command = "echo from-shell; tty >/dev/null && echo has-tty; echo err >&2; exit 3"

    def shell(persist: str) -> tuple[int, str]:
        term = Terminal(["shell", "web-2", "--cmd", command], {**warm.env, "SSMFAB_PERSIST": persist})
        try:
            return term.finish(), bytes(term.seen).decode(errors="replace")
        finally:
            term.close()

    shell("0")  # pins the host key (ssh says so, ssmfab in its own words): later runs say nothing of it
    audit = Path(warm.env["SSMFAB_AUDIT_PATH"])
    before = len(audit.read_text().splitlines())
    cold, first, warmed = shell("0"), shell("5m"), shell("5m")
    assert cold[0] == first[0] == warmed[0] == 3, (cold, first, warmed)
    assert "from-shell\r\nhas-tty\r\nerr\r\n" in cold[1], cold
    assert ANNOUNCEMENT in first[1]
    assert first[1].split("\n", 1)[1] == warmed[1] == cold[1], (cold, first, warmed)
    # The same audit records, but for when and how long.
    records = [json.loads(line) for line in audit.read_text().splitlines()[before:]]
    assert len(records) == 3 and records[0]["action"] == "shell" and records[0]["exit_code"] == 3, records
    steady_records = [{k: v for k, v in r.items() if k not in ("time", "duration")} for r in records]
    assert steady_records[0] == steady_records[1] == steady_records[2], steady_records
    [kept] = warm.listing()
    assert kept["uses"] == 2


def test_a_warm_shell_follows_the_terminal_size(warm: Warm) -> None:
    assert warm("run", "--name", "web-3", "true").returncode == 0
    # The remote terminal's size, read again for each line typed: a resize reaches it before the keys after it.
    command = 'stty size; while read -r line; do echo "got $line"; stty size; done'
    term = Terminal(["shell", "web-3", "--cmd", command], warm.env, size=(30, 100))
    try:
        term.expect(b"30 100")
        set_size(term.follower, 40, 132)
        term.process.send_signal(signal.SIGWINCH)  # what the kernel sends a terminal's foreground process
        term.type(b"one\r")
        term.expect(b"got one")
        term.expect(b"40 132")
        term.type(b"\x04")  # Ctrl-D goes to the remote terminal as a key: its `read` sees the end
        assert term.finish() == 0, bytes(term.seen)
        assert termios.tcgetattr(term.follower) == term.modes
    finally:
        term.close()
    assert uses(warm) == [2]  # on the keeper's connection


def test_sigterm_ends_a_warm_shell_and_restores_the_terminal(warm: Warm) -> None:
    assert warm("run", "--name", "web-3", "true").returncode == 0
    term = Terminal(["shell", "web-3", "--cmd", "echo started; sleep 300"], warm.env)
    try:
        term.expect(b"started")
        assert termios.tcgetattr(term.follower) != term.modes  # raw while the shell runs
        assert uses(warm) == [2]  # on the keeper's connection
        term.process.send_signal(signal.SIGTERM)
        assert term.finish() == 143, bytes(term.seen)
        assert termios.tcgetattr(term.follower) == term.modes
    finally:
        term.close()
    assert b"Traceback" not in term.seen


def test_run_stdin_warm_moves_a_megabyte_byte_for_byte_and_prints_what_a_cold_run_prints(
    warm: Warm, sandbox: Sandbox, tmp_path: Path
) -> None:
    payload = os.urandom(1024 * 1024) + b"\x00\r\n\xff last line without an end"
    source = tmp_path / "in.bin"
    source.write_bytes(payload)
    name = f"stdin-{os.getpid()}.bin"
    home = Path(sandbox.host("web-1").folder) / "home"
    command = f"cat > {name}; wc -c < {name}; sha256sum < {name} | cut -c1-64"
    assert warm("run", "--name", "web-1", "true", SSMFAB_PERSIST="0").returncode == 0  # pins the host key
    runs = []
    for mode in ("0", "5m", "5m"):
        with source.open("rb") as feed:
            done = subprocess.run([*SSMFAB, "run", "--name", "web-1", "--stdin", command], stdin=feed, capture_output=True,
                                  env={**warm.env, "SSMFAB_PERSIST": mode}, timeout=120, check=False)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert (home / name).read_bytes() == payload
        (home / name).unlink()
        runs.append(done)
    expected = f"[web-1] {len(payload)}\n[web-1] {hashlib.sha256(payload).hexdigest()}\n"
    assert all(expected in r.stdout.decode() for r in runs), [r.stdout for r in runs]
    cold, _, warmed = runs
    assert steady(warmed.stdout.decode()) == steady(cold.stdout.decode())
    assert steady(warmed.stderr.decode()) == steady(cold.stderr.decode())
    [kept] = warm.listing()
    assert kept["uses"] == 2


def test_run_stdin_warm_from_an_empty_input_and_from_a_terminal(warm: Warm) -> None:
    done = subprocess.run([*SSMFAB, "run", "--name", "web-2", "--stdin", "wc -c"], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, env=warm.env, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0 and "[web-2] 0" in done.stdout, done.stderr
    assert ANNOUNCEMENT in done.stderr
    # From a terminal the task refuses, in its own words: the same with warm sessions on.
    term = Terminal(["run", "--name", "web-2", "--stdin", "wc -c"], warm.env)
    try:
        assert term.finish() == 2
    finally:
        term.close()
    assert b"--stdin forwards a pipe or a file" in term.seen


def test_warm_commands_that_read_input_load_no_ssh_or_aws_library(warm: Warm) -> None:
    assert warm("run", "--name", "db-1", "true").returncode == 0
    traced = subprocess.run([sys.executable, "-X", "importtime", "-m", "ssmfab.program", "run", "--name", "db-1", "--stdin", "cat"],
                            input="in\n", capture_output=True, text=True, env=warm.env, timeout=120, check=False)  # fmt: skip
    assert traced.returncode == 0 and "[db-1] in" in traced.stdout, traced.stderr
    assert not loaded_libraries(traced.stderr)
    term = Terminal(["shell", "db-1", "--cmd", "echo in-shell"], warm.env, program=[sys.executable, "-X", "importtime", "-m", "ssmfab.program"])
    try:
        assert term.finish() == 0
    finally:
        term.close()
    seen = bytes(term.seen).decode(errors="replace")
    assert "in-shell" in seen and "import time:" in seen, seen
    assert not loaded_libraries(seen)
    assert uses(warm) == [3]


class HeldCommand:
    """A warm ``run`` whose remote command prints "started", then waits on a FIFO in the host's home (that
    the test releases: the remote command must not outlive the test), fed ``feed`` as its input."""

    def __init__(self, warm: Warm, sandbox: Sandbox, host: str, feed: Path | None, tag: str) -> None:
        self.fifo = Path(sandbox.host(host).folder) / "home" / f"warm-{tag}-{os.getpid()}"
        os.mkfifo(self.fifo)
        args = ["run", "--name", host, *(["--stdin"] if feed else []), f"echo started; cat {self.fifo.name}"]
        self.input = feed.open("rb") if feed else None
        self.process = subprocess.Popen([*SSMFAB, *args], env=warm.env, stdin=self.input or subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        assert self.process.stdout is not None
        assert b"started" in self.process.stdout.readline(), self.process.stderr

    def release(self) -> None:
        try:  # the end of its FIFO's input ends the remote `cat`
            os.close(os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass

    def close(self) -> None:
        self.release()
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate()
        if self.input:
            self.input.close()
        self.fifo.unlink()


def writing_to_a_full_pipe(pid: int) -> bool:
    """Whether a thread of ``pid`` waits to write to a full pipe (the kernel's wait channel says so)."""
    for wchan in Path(f"/proc/{pid}/task").glob("*/wchan"):
        try:
            if wchan.read_text().endswith("pipe_write"):
                return True
        except OSError:
            pass
    return False


def test_ctrl_c_reaches_a_warm_command_that_reads_none_of_the_input_it_was_given(
    warm: Warm, sandbox: Sandbox, tmp_path: Path
) -> None:
    """Input the remote command never reads fills every buffer on the way; Ctrl-C must not wait behind it."""
    assert warm("run", "--name", "web-1", "true").returncode == 0
    feed = tmp_path / "big.bin"
    feed.write_bytes(os.urandom(16 * 1024 * 1024))
    held = HeldCommand(warm, sandbox, "web-1", feed, "ctrl-c")
    try:
        [keeper] = warm.keepers()
        wait_until(lambda: writing_to_a_full_pipe(int(keeper.split(":")[0])), "the keeper's input pipe to the command to fill")
        held.process.send_signal(signal.SIGINT)
        _, err = held.process.communicate(timeout=60)
        assert held.process.returncode == 130, err
        assert b"interrupted (Ctrl-C): ssmfab run stopped on 1 host(s)" in err, err
        assert b"Traceback" not in err
    finally:
        held.close()


def test_input_waits_until_the_keeper_runs_the_command_and_a_busy_keeper_leaves_it_whole(
    warm: Warm, sandbox: Sandbox, tmp_path: Path
) -> None:
    """A keeper busy with another command answers "run it yourself": the input is this process's to send, all
    of it (had the command started sending it to the keeper, some would be gone)."""
    assert warm("run", "--name", "web-1", "true").returncode == 0
    payload = os.urandom(300 * 1024)
    feed = tmp_path / "in.bin"
    feed.write_bytes(payload)
    held = HeldCommand(warm, sandbox, "web-1", None, "busy")
    try:
        with feed.open("rb") as source:
            done = subprocess.run([*SSMFAB, "run", "--name", "web-2", "--stdin", "wc -c"], stdin=source, capture_output=True,
                                  text=True, env=warm.env, timeout=120, check=False)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert f"[web-2] {len(payload)}" in done.stdout, done.stdout
        assert [row["name"] for row in warm.listing()] == ["web-1"]  # it ran on its own, not on the keeper
    finally:
        held.close()


def test_a_warm_shell_on_a_session_gone_silent_is_replaced_once_before_anything_is_sent(warm: Warm, sandbox: Sandbox) -> None:
    """As for run, put and get (test_warm): the pty channel is the connection's first, and the proof it lives."""
    warm.env["SSMFAB_CONNECT_TIMEOUT"] = "5"
    home = Path(sandbox.host("db-1").folder) / "home"
    counter = f"warm-shell-silent-{os.getpid()}"
    assert warm("run", "--name", "db-1", f"echo x >> {counter}").returncode == 0
    [kept] = warm.listing()
    sandbox.set_faults(session_id=str(kept["session_id"]), BlackHole=True)
    term = Terminal(["shell", "db-1", "--cmd", f"echo x >> {counter}; echo lines=$(wc -l < {counter})"], warm.env)
    try:
        assert term.finish() == 0, bytes(term.seen)
    finally:
        term.close()
    assert b"lines=2" in term.seen  # once: the first try never reached the host
    [replaced] = warm.listing()
    assert replaced["session_id"] != kept["session_id"]
    (home / counter).unlink()


def test_tilde_dot_leaves_a_warm_shell_that_no_longer_answers(warm: Warm, sandbox: Sandbox) -> None:
    """ssh's escape: a session that hangs is left at once, the terminal back in its mode."""
    assert warm("run", "--name", "web-2", "true").returncode == 0
    term = Terminal(["shell", "web-2", "--cmd", "echo started; sleep 300"], warm.env)
    try:
        term.expect(b"started")
        term.type(b"\r~.")
        assert term.finish() == 255, bytes(term.seen)
        assert termios.tcgetattr(term.follower) == term.modes
    finally:
        term.close()
    assert b"Connection closed (~.)." in term.seen
    wait_until(lambda: not warm.listing(), "the keeper to end the shell's connection")  # interrupted: not kept warm


def test_shell_takes_the_warm_session_flags(warm: Warm) -> None:
    def shell(*flags: str) -> str:
        term = Terminal(["shell", "web-1", *flags, "--cmd", "echo hi"], warm.env)
        try:
            assert term.finish() == 0, bytes(term.seen)
        finally:
            term.close()
        return bytes(term.seen).decode(errors="replace")

    assert "hi" in shell("--no-persist") and not warm.keepers()
    assert ANNOUNCEMENT + " connections stay open 10m" in shell("--persist", "10m")
    assert "hi" in shell("--refresh")
    [kept] = warm.listing()
    assert kept["uses"] == 2 and kept["persist"] == 300  # SSMFAB_PERSIST (5m) when the flag is not given
