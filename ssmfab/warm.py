"""The command line's warm path: hand a command to the keeper of this identity and stream its output back.

Standard library only (with ``persist`` and ``config``): a command whose hosts are warm imports no paramiko,
Fabric, botocore or boto3, and makes no AWS call the keeper can answer from what it holds.

``run_warm`` returns None when the command is not for the keeper (persistence off, a task that does not ride
warm sessions, input to forward, help); the program then runs it itself, exactly as before. The first
command of an identity starts its keeper (announced once, on stderr) under a lock file, so two commands
starting at once start one keeper.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import FrameType
from typing import Any

from .exceptions import SSMFabError
from .persist import PERSIST_ENV, describe_seconds, identity, keeper_dir, parse_persist, socket_path

#: Tasks the keeper runs: their input is the command line and files, their output stdout, stderr and files.
#: (shell and --stdin need this terminal's input; --via run-command opens no connection, and rides along.)
RIDING = ("run", "put", "get", "fetch-logs", "deploy", "rollback")
#: Words that send a command down the ordinary path.
NOT_WARM = ("--no-persist", "--stdin", "--help", "-h", "--ephemeral-key")
IDENTITY_FLAGS = ("--region", "--profile")
FRAME = struct.Struct("!cI")
#: Seconds a starting keeper may take to answer (it loads paramiko, Fabric and boto3 first).
KEEPER_START_WAIT = 60.0


def warm_plan(argv: list[str], env: Mapping[str, str]) -> tuple[float, dict[str, str]] | None:
    """(idle seconds, identity flags) when ``argv`` is a command for the keeper, else None."""
    if not argv or argv[0] not in RIDING:
        return None
    words = argv[1 : argv.index("--")] if "--" in argv else argv[1:]
    persist: str | None = None
    overrides: dict[str, str] = {}
    for index, word in enumerate(words):
        name, equals, value = word.partition("=")
        if name in NOT_WARM:
            return None
        if name == "--persist" or name in IDENTITY_FLAGS:
            value = value if equals else (words[index + 1] if index + 1 < len(words) else "")
            if name == "--persist":
                persist = value
            else:
                overrides[name] = value
    try:
        if persist is None:
            persist = env.get(PERSIST_ENV)
        if persist is None:
            from .config import load_settings

            persist = load_settings(env=env).ssh.persist
        seconds = parse_persist(persist)
    except SSMFabError:
        return None  # the ordinary path says what is wrong, in its own words
    return (seconds, overrides) if seconds > 0 else None


def run_warm(argv: list[str]) -> int | None:
    """Run the command through its keeper; its exit code, or None to run it the ordinary way."""
    env = os.environ
    plan = warm_plan(argv, env)
    if plan is None:
        return None
    seconds, overrides = plan
    try:
        folder = keeper_dir(env)
    except SSMFabError as exc:
        sys.stderr.write(f"warning: {exc}\n")
        return None
    digest = identity(env, overrides)
    path = socket_path(folder, digest)
    sock = connect(path) or start_keeper(folder, digest, path, seconds)
    if sock is None:
        return None
    with sock:
        request = {
            "op": "run", "argv": argv, "cwd": os.getcwd(), "umask": current_umask(),
            "tty": [sys.stdout.isatty(), sys.stderr.isatty()], "columns": terminal_columns(),
        }  # fmt: skip
        sock.sendall(json.dumps(request).encode() + b"\n")
        return stream(sock)


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def terminal_columns() -> int | None:
    try:
        return os.get_terminal_size(sys.stderr.fileno()).columns
    except (OSError, ValueError):
        return None


def connect(path: Path) -> socket.socket | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except OSError:
        sock.close()
        return None
    return sock


def start_keeper(folder: Path, digest: str, path: Path, seconds: float) -> socket.socket | None:
    """Start this identity's keeper (unless another command just did) and connect to it."""
    lock_path = folder / f"keeper-{digest}.lock"
    with open(os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600), "r+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        sock = connect(path)
        if sock is not None:
            return sock
        path.unlink(missing_ok=True)  # a keeper that was killed leaves its socket file behind
        log = os.open(folder / f"keeper-{digest}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "ssmfab.keeper", str(path), str(seconds)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log, cwd="/",
                start_new_session=True, close_fds=True,
            )  # fmt: skip
        finally:
            os.close(log)
        deadline = time.monotonic() + KEEPER_START_WAIT
        while time.monotonic() < deadline:
            sock = connect(path)
            if sock is not None:
                sys.stderr.write(
                    f"ssmfab: warm sessions on: connections stay open {describe_seconds(seconds)} after each command "
                    f"in a background process (pid {process.pid}) for the next command; `ssmfab persist` lists them, "
                    "`ssmfab persist --stop` ends them, --no-persist or SSMFAB_PERSIST=0 turns this off\n"
                )
                sys.stderr.flush()
                process.returncode = 0  # not ours to wait for: it lives on, on its own
                return sock
            if process.poll() is not None:
                break
            time.sleep(0.02)
        sys.stderr.write(f"warning: the warm-session keeper did not start (see {folder}/keeper-{digest}.log); running without it\n")
        return None


def stream(sock: socket.socket) -> int | None:
    """Copy the keeper's frames to stdout and stderr; Ctrl-C and SIGTERM go to the keeper (a second one ends
    this at once). The command's exit code; None if the keeper was busy (nothing ran)."""
    received: list[str] = []

    def forward(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if received:
            os._exit(143 if received[0] == "SIGTERM" else 130)
        received.append(name)
        try:
            sock.sendall(b"t" if name == "SIGTERM" else b"i")
        except OSError:
            pass

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    reader = sock.makefile("rb")
    try:
        while True:
            head = reader.read(FRAME.size)
            if len(head) < FRAME.size:
                sys.stderr.write(
                    "error: the warm-session keeper ended before the command did; remote commands already started "
                    "may still be running (the next command starts a new keeper)\n"
                )
                return 1
            kind, size = FRAME.unpack(head)
            payload = reader.read(size) if size else b""
            if kind == b"b":
                return None
            if kind == b"x":
                return int(payload or b"0")
            target = sys.stdout if kind == b"o" else sys.stderr
            target.buffer.write(payload)
            target.flush()
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def ask_keepers(request: dict[str, object], env: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """Send ``request`` (list or stop) to every keeper of this user; their answers (a dead keeper's socket is
    removed on the way)."""
    from .persist import keeper_sockets

    answers: list[dict[str, Any]] = []
    for path in keeper_sockets(keeper_dir(os.environ if env is None else env)):
        sock = connect(path)
        if sock is None:
            path.unlink(missing_ok=True)
            continue
        with sock:
            sock.sendall(json.dumps(request).encode() + b"\n")
            line = sock.makefile("rb").readline()
        if line:
            answers.append({"socket": str(path), "answer": json.loads(line)})
    return answers
