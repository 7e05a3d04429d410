"""Live output as users read it: every line whole, once, in order, with its host's prefix, on stdout and
stderr alike; a last line without a newline still printed; on a terminal the progress line is cleared
before host output."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
from pathlib import Path

SSMFAB = [sys.executable, "-m", "ssmfab.program"]
LINES = 200_000
#: 11 bytes a line, so invoke's 1000-byte reads end inside a character again and again.
WIDE = "é€😀x"


def test_many_lines_on_several_hosts_arrive_whole_once_and_in_order(sandbox_env: dict[str, str]) -> None:
    command = f"seq 1 {LINES}; seq 1 {LINES} >&2; yes '{WIDE}' | head -n 3000; printf 'no newline at the end'"
    done = subprocess.run([*SSMFAB, "run", "--tag", "web", command], capture_output=True, text=True,
                          env=dict(os.environ), timeout=600, check=False, stdin=subprocess.DEVNULL)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    for name in ("web-1", "web-2", "web-3"):
        prefix = f"[{name}] "
        out = [line[len(prefix):] for line in done.stdout.splitlines() if line.startswith(prefix)]
        err = [line[len(prefix):] for line in done.stderr.splitlines() if line.startswith(prefix)]
        expected = [str(n) for n in range(1, LINES + 1)]
        assert out[:LINES] == expected, f"{name}: stdout lines split, lost or repeated"
        assert out[LINES:] == [WIDE] * 3000 + ["no newline at the end"], name
        assert err == expected, f"{name}: stderr lines split, lost or repeated"
    # Nothing else carries a host prefix, and no host line lacks one.
    stray = [line for line in done.stdout.splitlines() if line and not line.startswith("[web-")]
    assert all(line.startswith(("HOST", "----", "i-", "3 ok")) for line in stray), stray[:5]


def read_until(fd: int, seen: bytearray, needle: bytes, start: int = 0) -> int:
    """Read the terminal until ``needle`` appears after ``start``; returns where it ends."""
    while needle not in seen[start:]:
        ready, _, _ = select.select([fd], [], [], 120)
        assert ready, f"no {needle!r} on the terminal; so far: {bytes(seen[-400:])!r}"
        seen += os.read(fd, 65536)
    return seen.index(needle, start) + len(needle)


def test_progress_line_is_cleared_before_host_output_on_a_terminal(sandbox_env: dict[str, str], tmp_path: Path) -> None:
    done_flag = tmp_path / "done"
    # web-1 ends at once (the progress line then says 1/2); web-2 prints until the test has seen that.
    command = (
        'case "$(basename "$(dirname "$HOME")")" in web-1) true;; '
        f"*) while [ ! -e {done_flag} ]; do echo tick; sleep 0.05; done; echo finished;; esac"
    )
    master, slave = pty.openpty()
    process = subprocess.Popen([*SSMFAB, "run", "--name", "web-1", "--name", "web-2", command],
                               stdin=slave, stdout=slave, stderr=slave, env=dict(os.environ), close_fds=True)  # fmt: skip
    os.close(slave)
    seen = bytearray()
    try:
        after_progress = read_until(master, seen, b"1/2 hosts done")
        read_until(master, seen, b"[web-2] tick", after_progress)
        read_until(master, seen, b"[web-2] tick", read_until(master, seen, b"[web-2] tick", after_progress))
        done_flag.touch()
        read_until(master, seen, b"2 ok, 0 failed")
        assert process.wait(timeout=120) == 0
        while True:  # the rest, up to the end of the program's output
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(master)
    text = bytes(seen).decode()
    # What a terminal shows of each line: the text after its last carriage return (or erase-line).
    shown = [line.rstrip("\r").replace("\x1b[K", "").rsplit("\r", 1)[-1] for line in text.split("\n")]
    host_lines = [line for line in shown if "[web-2]" in line]
    assert host_lines.count("[web-2] tick") >= 2
    assert all(line.startswith("[web-2] ") for line in host_lines), [l for l in host_lines if not l.startswith("[web-2]")][:3]
    assert "[web-2] finished" in host_lines
