"""The command line's warm path: hand a command to the keeper of this identity and stream its output back.

Standard library only (with ``persist`` and ``config``): a command whose hosts are warm imports no paramiko,
Fabric, botocore or boto3, and makes no AWS call the keeper can answer from what it holds.

``run_warm`` returns None when the command is not for the keeper (persistence off, a task that does not ride
warm sessions, help); the program then runs it itself, exactly as before. A command that reads this
process's input (``shell``, ``run --stdin``) has it forwarded to the keeper as it comes, with the terminal's
size and its changes; an interactive shell puts the terminal in raw mode (as ssh does) and restores it on
every way out. The first
command of an identity starts its keeper (announced once, on stderr) under a lock file, so two commands
starting at once start one keeper.
"""

from __future__ import annotations

import os
import struct
import sys

from .exceptions import SSMFabError
from .persist import PERSIST_ENV, describe_seconds, identity, keeper_dir, parse_persist, socket_path

# A warm command's own time is mostly its start, so this module loads only what streaming needs, and the C
# halves of the modules it uses: ``socket`` and ``signal`` build enum classes when imported, ``json`` loads re
# (~10 ms together on a warm command of ~50 ms). Type checkers see the full modules.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal as _signal
    import socket as _socket
    from collections.abc import Callable, Mapping
    from types import FrameType
    from typing import Any
else:
    import _signal
    import _socket

#: Tasks the keeper runs (--via run-command opens no connection, and rides along).
RIDING = ("run", "put", "get", "fetch-logs", "deploy", "rollback", "shell")
#: Tasks whose command reads this process's input: it is forwarded to the keeper.
READS_INPUT = ("shell",)
#: Words that send a command down the ordinary path.
NOT_WARM = ("--no-persist", "--help", "-h", "--ephemeral-key")
#: Bytes of input read ahead of what the keeper has taken (the keeper's own pipe holds more).
INPUT_AHEAD = 1 << 18
IDENTITY_FLAGS = ("--region", "--profile")
FRAME = struct.Struct("!cI")
#: Seconds a starting keeper may take to answer (it loads paramiko, Fabric and boto3 first).
KEEPER_START_WAIT = 60.0
#: The keeper's answers that mean "run it yourself": ``b`` busy with another command, ``n`` warm sessions are
#: off for this command (its config files say so). Nothing ran.
NOT_RUN = (b"b", b"n")
SIGNAL_NAMES: dict[int, str] = {_signal.SIGINT: "SIGINT", _signal.SIGTERM: "SIGTERM"}
#: Frames this process sends while the command runs: Ctrl-C, SIGTERM, input bytes, the end of input, and the
#: terminal's new size ("COLUMNS ROWS").
INTERRUPT, TERMINATE, INPUT, INPUT_END, RESIZE = b"i", b"t", b"d", b"z", b"w"


def warm_plan(argv: list[str], env: Mapping[str, str]) -> tuple[float | None, dict[str, str]] | None:
    """(idle seconds, identity flags) when ``argv`` is a command for the keeper, else None. The seconds are None
    when neither --persist nor SSMFAB_PERSIST says: the config files decide (read by the keeper when there is
    one, which has loaded the config reader already; here otherwise)."""
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
    if persist is None:
        persist = env.get(PERSIST_ENV)
    if persist is None:
        return None, overrides
    try:
        seconds = parse_persist(persist)
    except SSMFabError:
        return None  # the ordinary path says what is wrong, in its own words
    return (seconds, overrides) if seconds > 0 else None


def configured_persist(env: Mapping[str, str]) -> float:
    """ssh.persist from the config files (0 when they cannot be read: the ordinary path then says why)."""
    from .config import load_settings

    try:
        return parse_persist(load_settings(env=env).ssh.persist)
    except SSMFabError:
        return 0.0


def forwarded_input(argv: list[str]) -> tuple[bool, bool] | None:
    """(forward this process's input, as a terminal in raw mode) for a command the keeper runs; None when the
    ordinary path must run it: a shell whose input is not a terminal (ssh then says it allocates none, in its
    own words), ``--stdin`` from a terminal (the task refuses it, in its own words)."""
    words = argv[1 : argv.index("--")] if "--" in argv else argv[1:]
    stdin_tty = isatty(0)
    if argv[0] in READS_INPUT:
        return (True, True) if stdin_tty else None
    if "--stdin" in words:
        return None if stdin_tty else (True, False)
    return (False, False)


def isatty(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False


def run_warm(argv: list[str]) -> int | None:
    """Run the command through its keeper; its exit code, or None to run it the ordinary way."""
    env = os.environ
    plan = warm_plan(argv, env)
    if plan is None:
        return None
    forward = forwarded_input(argv)
    if forward is None:
        return None
    seconds, overrides = plan
    try:
        folder = keeper_dir(env)
    except SSMFabError as exc:
        sys.stderr.write(f"warning: {exc}\n")
        return None
    digest = identity(env, overrides)
    path = socket_path(folder, digest)
    sock = connect(path)
    if sock is None:
        if seconds is None:
            seconds = configured_persist(env)
            if not seconds:
                return None
        sock = start_keeper(folder, digest, path, seconds)
        if sock is None:
            return None
    reads_input, raw = forward
    try:
        request: dict[str, object] = {
            "op": "run", "argv": argv, "cwd": os.getcwd(), "umask": current_umask(), "persist": seconds,
            "tty": [sys.stdout.isatty(), sys.stderr.isatty()], "columns": terminal_columns(),
        }  # fmt: skip
        if reads_input:
            request["input"] = True
            request["run_id"] = os.urandom(8).hex()
        if raw:
            request["term"] = env.get("TERM", "vt100")
            request["size"] = terminal_size(0)
        sock.sendall(to_json(request).encode() + b"\n")
        if not reads_input:
            return stream(sock, task=argv[0])
        run_id = str(request["run_id"])
        with raw_terminal(0 if raw else None) as restore:
            return stream(
                sock, input_fd=0, resize_fd=0 if raw else None, restore=restore,
                signal_aside=lambda kind: signal_keeper(path, run_id, kind), task=argv[0],
            )  # fmt: skip
    finally:
        sock.close()


def to_json(value: object) -> str:
    """JSON text of a request (strings, numbers, booleans, None, lists, string-keyed dicts), as json.dumps
    writes it, without loading the json package (its decoder loads re: ~4 ms of every start)."""
    try:
        from _json import encode_basestring_ascii as quote
    except ImportError:  # an interpreter without the C accelerator
        import json

        return json.dumps(value)
    if isinstance(value, str):
        return str(quote(value))
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(to_json(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{quote(str(key))}: {to_json(item)}" for key, item in value.items()) + "}"
    raise TypeError(f"not JSON: {type(value).__name__}")


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def terminal_columns() -> int | None:
    try:
        return os.get_terminal_size(sys.stderr.fileno()).columns
    except (OSError, ValueError):
        return None


def terminal_size(fd: int) -> list[int]:
    """[columns, rows] of the terminal on ``fd`` (80x24 when it says nothing, as ssh assumes)."""
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return [80, 24]
    return [size.columns or 80, size.lines or 24]


class raw_terminal:
    """The terminal on ``fd`` in raw mode (keys go to the remote shell as typed, Ctrl-C included, as with ssh -t)
    for the ``with`` block; its mode is put back on the way out, whatever the way. ``restore`` (the value of
    the ``with``) puts it back at once, for a way out that skips ``finally`` (os._exit)."""

    def __init__(self, fd: int | None) -> None:
        self.fd = fd
        self.saved: list[Any] | None = None

    def __enter__(self) -> Callable[[], None]:
        if self.fd is not None:
            import termios
            import tty

            try:
                self.saved = termios.tcgetattr(self.fd)
                tty.setraw(self.fd, termios.TCSADRAIN)
            except termios.error:
                self.saved = None
        return self.restore

    def restore(self) -> None:
        if self.saved is not None and self.fd is not None:
            import termios

            try:
                termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)
            except termios.error:
                pass
            self.saved = None

    def __exit__(self, *exc: object) -> None:
        self.restore()


def connect(path: str) -> _socket.socket | None:
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        return None
    return sock


def start_keeper(folder: str, digest: str, path: str, seconds: float) -> _socket.socket | None:
    """Start this identity's keeper (unless another command just did) and connect to it."""
    import fcntl
    import subprocess
    import time

    lock_path = os.path.join(folder, f"keeper-{digest}.lock")
    with open(os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600), "r+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        sock = connect(path)
        if sock is not None:
            return sock
        try:
            os.unlink(path)  # a keeper that was killed leaves its socket file behind
        except FileNotFoundError:
            pass
        log_path = os.path.join(folder, f"keeper-{digest}.log")
        log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "ssmfab.keeper", path, str(seconds)],
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
        sys.stderr.write(f"warning: the warm-session keeper did not start (see {log_path}); running without it\n")
        return None


class EscapeReader:
    """ssh's escape for an interactive session: ``~.`` at the start of a line ends it from this end (a session that
    hangs would otherwise hold the terminal until keepalives give up); ``~~`` sends one ``~``; a ``~`` before
    anything else is sent as typed."""

    def __init__(self) -> None:
        self.line_start = True
        self.tilde = False

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        """The bytes to send, and whether ``~.`` was typed (nothing after it is sent)."""
        out = bytearray()
        for byte in data:
            char = bytes((byte,))
            if self.tilde:
                self.tilde = False
                if char == b".":
                    return bytes(out), True
                out += b"~" if char == b"~" else b"~" + char
                self.line_start = char in (b"\r", b"\n")
            elif self.line_start and char == b"~":
                self.tilde = True
            else:
                out += char
                self.line_start = char in (b"\r", b"\n")
        return bytes(out), False


def signal_keeper(path: str, run_id: str, kind: bytes) -> None:
    """Send the command ``run_id``'s Ctrl-C or SIGTERM on a connection of its own: on the command's, it would
    wait behind the input already sent, which a command that reads none never takes."""
    sock = connect(path)
    if sock is None:
        return
    try:
        sock.sendall(to_json({"op": "signal", "run_id": run_id, "signal": kind.decode()}).encode() + b"\n")
    except OSError:
        pass
    finally:
        sock.close()


def frame(kind: bytes, payload: bytes = b"") -> bytes:
    return FRAME.pack(kind, len(payload)) + payload


def stream(
    sock: _socket.socket, input_fd: int | None = None, resize_fd: int | None = None,
    restore: Callable[[], None] | None = None, signal_aside: Callable[[bytes], None] | None = None, task: str = "",
) -> int | None:  # fmt: skip
    """Copy the keeper's frames to stdout and stderr, and (``input_fd``) this process's input to the keeper until
    it ends, with the size of the terminal on ``resize_fd`` each time it changes (SIGWINCH). Ctrl-C and SIGTERM
    go to the keeper, on this socket or through ``signal_aside`` (a second one ends this at once, after
    ``restore``). The command's exit code; None if the keeper did not run it (busy, or not warm)."""
    import select

    received: list[str] = []
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_read, False)
    os.set_blocking(wake_write, False)
    resized = [False]

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if signum in SIGNAL_NAMES:
            if received:
                if restore is not None:
                    restore()
                os._exit(143 if received[0] == "SIGTERM" else 130)
            received.append(SIGNAL_NAMES[signum])
        else:
            resized[0] = True
        try:
            os.write(wake_write, b"s")  # the loop below sends the frame: a handler's send could split another
        except OSError:
            pass

    watched = [*SIGNAL_NAMES, *((_signal.SIGWINCH,) if resize_fd is not None else ())]
    previous = {sig: _signal.signal(sig, on_signal) for sig in watched}
    sock.setblocking(False)
    outgoing = bytearray()
    incoming = bytearray()
    sent_signals = 0
    started = False  # input is read only once the keeper runs the command: if it does not, this process does
    escapes = EscapeReader() if resize_fd is not None else None  # a terminal's keys: ssh's ~. works
    poller = select.poll()
    try:
        while True:
            poller.register(wake_read, select.POLLIN)
            poller.register(sock.fileno(), select.POLLIN | (select.POLLOUT if outgoing else 0))
            if input_fd is not None and started and len(outgoing) < INPUT_AHEAD:
                poller.register(input_fd, select.POLLIN)
            elif input_fd is not None:
                try:
                    poller.unregister(input_fd)
                except KeyError:
                    pass
            for fd, events in poller.poll():
                if fd == wake_read:
                    try:
                        os.read(wake_read, 512)
                    except BlockingIOError:
                        pass
                    for name in received[sent_signals:]:
                        kind = TERMINATE if name == "SIGTERM" else INTERRUPT
                        if signal_aside is not None and started:  # before that, no input is in its way
                            signal_aside(kind)
                        else:
                            outgoing += frame(kind)
                    sent_signals = len(received)
                    if resized[0] and resize_fd is not None:
                        resized[0] = False
                        outgoing += frame(RESIZE, "{} {}".format(*terminal_size(resize_fd)).encode())
                elif fd == input_fd:
                    try:
                        data = os.read(fd, 65536)
                    except OSError:  # a terminal gone (EIO): the same as its end
                        data = b""
                    if data and escapes is not None:
                        data, closing = escapes.feed(data)
                        if closing:  # leaving ends the keeper's command as Ctrl-C would
                            if restore is not None:
                                restore()
                            sys.stderr.write("Connection closed (~.).\n")
                            return 255
                        if not data:
                            continue
                    outgoing += frame(INPUT, data) if data else frame(INPUT_END)
                    if not data:
                        poller.unregister(fd)
                        input_fd = None
                elif events & select.POLLOUT and outgoing:
                    try:
                        del outgoing[: sock.send(outgoing)]
                    except (BlockingIOError, InterruptedError):
                        pass
                    except OSError:
                        outgoing.clear()  # the keeper hung up: what it says last is read below
                if fd == sock.fileno() and events & ~select.POLLOUT:
                    try:
                        chunk = sock.recv(65536)
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError:
                        chunk = b""
                    if not chunk:
                        if restore is not None:
                            restore()
                        sys.stderr.write(
                            "error: the warm-session keeper ended before the command did; remote commands already "
                            "started may still be running (the next command starts a new keeper)\n"
                        )
                        return 1
                    incoming += chunk
                    while len(incoming) >= FRAME.size:
                        kind, size = FRAME.unpack_from(incoming)
                        if len(incoming) < FRAME.size + size:
                            break
                        payload = bytes(incoming[FRAME.size : FRAME.size + size])
                        del incoming[: FRAME.size + size]
                        if kind in NOT_RUN:
                            if received:  # Ctrl-C came first: nothing is run, here or there
                                how = "Ctrl-C" if received[0] == "SIGINT" else received[0]
                                sys.stderr.write(f"interrupted ({how}): ssmfab {task} stopped before any host started work\n")
                                return 143 if received[0] == "SIGTERM" else 130
                            return None
                        if kind == b"x":
                            return int(payload or b"0")
                        if kind == b"s":
                            started = True
                            continue
                        if kind == b"r":
                            if restore is not None:
                                restore()
                            continue
                        target = sys.stdout if kind == b"o" else sys.stderr
                        try:
                            target.buffer.write(payload)
                            target.flush()
                        except BrokenPipeError:
                            # `ssmfab run … | head`: the reader left; end quietly, as a cold run does (leaving
                            # ends the keeper's command as Ctrl-C would).
                            os.dup2(os.open(os.devnull, os.O_WRONLY), target.fileno())
                            if restore is not None:
                                restore()
                            return 141
    finally:
        for sig, old in previous.items():
            _signal.signal(sig, old)
        os.close(wake_read)
        os.close(wake_write)


def ask_keepers(request: dict[str, object], env: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """Send ``request`` (list or stop) to every keeper of this user; their answers (a dead keeper's socket is
    removed on the way)."""
    import json

    from .persist import keeper_sockets

    answers: list[dict[str, Any]] = []
    for path in keeper_sockets(keeper_dir(os.environ if env is None else env)):
        sock = connect(path)
        if sock is None:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            continue
        try:
            sock.sendall(json.dumps(request).encode() + b"\n")
            reply = b""
            while not reply.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                reply += chunk
        finally:
            sock.close()
        if reply.strip():
            answers.append({"socket": path, "answer": json.loads(reply)})
    return answers
