"""The keeper: a background process of the user's that holds warm SSH-over-SSM connections between commands.

The ``ssmfab`` command hands a command that rides warm sessions (``warm.RIDING``) to the keeper of its identity
(see ``persist``), which runs it with the very program and tasks the command would have run itself, against
a pool of connections (``pool``) that outlives each command. The command's own process only streams: it loads
neither paramiko, Fabric nor boto3, so a command whose hosts are warm costs a Python start and one round trip.

Protocol (one request per connection on the unix socket; the keeper reads nothing before it has checked the
caller's uid with SO_PEERCRED):
    request   one JSON line: {"op": "run", "argv": [...], "cwd": ..., "umask": N, "persist": seconds or null,
              "tty": [out, err], "columns": N} (persist null: the caller had neither --persist nor
              SSMFAB_PERSIST, and the keeper reads ssh.persist from the config files the command would read)
              (with "input": true the caller forwards its input; with "term" and "size": [columns, rows] it is a
              terminal, for a shell's pty)
              (a caller forwarding input adds "run_id": its own random id)
              or {"op": "signal", "run_id": ..., "signal": "i" or "t"} (that command's Ctrl-C or SIGTERM)
              or {"op": "list"} or {"op": "stop", "ids": [...], "names": [...], "tags": [...]}
    run       the keeper answers frames: one byte of kind, four of length, the payload:
              ``o`` stdout bytes, ``e`` stderr bytes, ``x`` the exit code (ASCII), ``b`` busy (another command
              is running: the caller runs this one itself), ``n`` not warm (its config turns warm sessions
              off: the caller runs it itself); to a caller with input ``s`` started (send it now) and ``r``
              put the terminal back (a shell ended). While it runs, the caller sends frames of the same shape:
              ``i`` (Ctrl-C), ``t`` (SIGTERM), ``d`` input bytes, ``z`` end of input, ``w`` the terminal's
              new size ("COLUMNS ROWS"); its end of the socket closing counts as Ctrl-C. Input goes to the
              command through a pipe that is its stdin.
    list/stop one JSON line back.

Commands run one at a time (the process's stdout, stderr and working folder are the running command's). The
keeper exits when it holds no connection and runs nothing, ending every SSM session it opened
(TerminateSession); SIGTERM does the same at once. Its plugins are its children on a socketpair: if the
keeper dies, their input ends and they exit too.
"""

from __future__ import annotations

import ctypes
import io
import json
import logging
import os
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .client import Client, settings_from
from .config import load_settings
from .exceptions import SSMFabError
from .interrupt import Interrupted
from .ledger import LEDGER_SUFFIX, SessionLedger, end_orphaned_sessions
from .persist import PERSIST_ENV, describe_seconds, parse_persist
from .pool import ConnectionPool
from .targets import parse_selector
from .warmshell import ForwardedTerminal

FRAME = struct.Struct("!cI")
#: Seconds a new keeper waits for its first command before it gives up (its starter died before asking).
FIRST_REQUEST_WAIT = 30.0
log = logging.getLogger("ssmfab.keeper")


def send_frame(sock: socket.socket, kind: bytes, payload: bytes = b"") -> None:
    sock.sendall(FRAME.pack(kind, len(payload)) + payload)


class FrameStream(io.TextIOBase):
    """What the running command's stdout or stderr is inside the keeper: text becomes frames to the caller."""

    def __init__(self, sock: socket.socket, kind: bytes, tty: bool, lock: threading.Lock) -> None:
        self._sock, self._kind, self._tty, self._lock = sock, kind, tty, lock
        self.broken = False

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return self._tty

    def write(self, text: str) -> int:
        if text and not self.broken:
            data = text.encode("utf-8", "surrogateescape")
            try:
                with self._lock:
                    send_frame(self._sock, self._kind, data)
            except OSError:
                self.broken = True  # the caller left: its watcher interrupts the command
        return len(text)

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    @property
    def buffer(self) -> FrameBytes:
        """Bytes as they are (a shell's pty output), as ``sys.stdout.buffer`` takes them."""
        return FrameBytes(self)


class FrameBytes:
    def __init__(self, stream: FrameStream) -> None:
        self.stream = stream

    def write(self, data: bytes) -> int:
        # surrogateescape gives back exactly these bytes, whether or not they are UTF-8, chunk by chunk.
        self.stream.write(data.decode("utf-8", "surrogateescape"))
        return len(data)

    def flush(self) -> None:
        pass


def peer_uid(sock: socket.socket) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[1])


def raise_in_thread(thread: threading.Thread, exc_type: type[BaseException]) -> None:
    """Raise ``exc_type`` in ``thread`` at its next Python instruction (the command's Ctrl-C)."""
    if thread.ident is not None:
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(exc_type))


def configured_warm(cwd: str) -> bool:
    """Whether the config files a command run in ``cwd`` reads keep its connections warm (ssh.persist), for a
    caller that had neither --persist nor SSMFAB_PERSIST (this keeper's own SSMFAB_PERSIST, its starter's, is
    not that caller's). A config that cannot be read is "no": the ordinary path then says what is wrong."""
    env = {k: v for k, v in os.environ.items() if k != PERSIST_ENV}
    try:
        return parse_persist(load_settings(env=env, cwd=Path(cwd)).ssh.persist) > 0
    except SSMFabError:
        return False


class SIGTERMInterrupted(Interrupted):
    def __init__(self) -> None:
        super().__init__("SIGTERM")


class Keeper:
    def __init__(self, path: Path, persist: float) -> None:
        self.path = path
        self.persist = persist
        self.ledger = SessionLedger(str(path).removesuffix(".sock") + LEDGER_SUFFIX)
        self._ledger_lock = threading.Lock()
        self.pool = ConnectionPool(on_empty=self._maybe_exit, on_change=self.record_sessions)
        self._clients: dict[str, Client] = {}
        self._running = threading.Lock()
        #: The running command's id (its caller's) and how to interrupt it: for a caller whose input fills the
        #: socket, its Ctrl-C comes on a connection of its own ({"op": "signal"}) instead of behind that input.
        self._interrupt: tuple[str, Callable[[bytes], None]] | None = None
        self._state = threading.Lock()
        self._active = 0
        self._served = 0
        self.stopping = threading.Event()
        self.started = time.time()

    # -- the clients the tasks get -------------------------------------------------------------------------------
    def client_source(self, given: dict[str, Any], flags: Any) -> Client:
        from .cli import notice

        settings = settings_from(given)
        persist = parse_persist(flags.persist if flags.persist not in (None, "") else settings.ssh.persist)
        key = repr(settings)
        client = self._clients.get(key)
        if client is None:
            client = Client(settings, notify=notice, persist=persist or self.persist, pool=self.pool)
            self._clients[key] = client
        client.persist = persist or self.persist
        return client

    # -- serving -----------------------------------------------------------------------------------------------------
    def serve(self) -> None:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            listener.bind(str(self.path))  # EADDRINUSE: another keeper of this identity won the start
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)
        listener.listen(16)
        listener.settimeout(0.5)
        deadline = time.monotonic() + FIRST_REQUEST_WAIT
        try:
            while not self.stopping.is_set():
                try:
                    conn, _ = listener.accept()
                except socket.timeout:
                    with self._state:
                        idle = self._served == 0 and self._active == 0
                    if idle and time.monotonic() > deadline:
                        break
                    continue
                with self._state:
                    self._active += 1
                    self._served += 1
                threading.Thread(target=self._handle, args=(conn,), name="ssmfab-keeper-request", daemon=True).start()
        finally:
            with_path = self.path
            listener.close()
            try:
                with_path.unlink()
            except FileNotFoundError:
                pass
            self.pool.close_all()
            with self._ledger_lock:
                self.ledger.remove()  # every session it held is ended

    def record_sessions(self) -> None:
        """Write down the SSM sessions held now, for whoever ends them if this keeper is killed (see ledger)."""
        sessions = []
        for entry in self.pool.entries():
            conn, aws = entry.conn, getattr(entry.conn.tunnels, "aws", None)
            sessions.append({
                "session_id": getattr(conn.tunnel, "session_id", None) or "", "instance_id": conn.target.id,
                "region": getattr(aws, "region", None), "profile": getattr(aws, "profile", None),
                "endpoint_url": getattr(aws, "endpoint_url", None),
            })  # fmt: skip
        with self._ledger_lock:
            try:
                self.ledger.record(sessions)
            except OSError:
                log.warning("could not write the session ledger %s", self.ledger.path, exc_info=True)

    def _maybe_exit(self) -> None:
        with self._state:
            if self._active == 0 and not len(self.pool):
                self.stopping.set()

    def _handle(self, conn: socket.socket) -> None:
        try:
            if peer_uid(conn) != os.getuid():
                log.warning("refused a caller of another user")
                return
            reader = conn.makefile("rb")
            line = reader.readline(1 << 20)
            request = json.loads(line or b"{}")
            op = request.get("op")
            if op == "run":
                self._run(conn, reader, request)
            elif op == "list":
                conn.sendall(json.dumps(self.listing()).encode() + b"\n")
            elif op == "signal":
                with self._state:
                    running = self._interrupt
                if running is not None and running[0] == request.get("run_id"):
                    running[1](b"t" if request.get("signal") == "t" else b"i")
            elif op == "stop":
                selector = parse_selector(request.get("ids", ()), request.get("names", ()), request.get("tags", ()))
                closed = self.pool.close_matching(selector)
                conn.sendall(json.dumps({"closed": closed, "pid": os.getpid()}).encode() + b"\n")
        except Exception:  # noqa: BLE001 - one request's failure must not end the keeper
            log.exception("request failed")
        finally:
            conn.close()
            with self._state:
                self._active -= 1
            self._maybe_exit()

    def listing(self) -> list[dict[str, Any]]:
        now_wall, now = time.time(), time.monotonic()
        rows = []
        for entry in self.pool.entries():
            c = entry.conn
            rows.append({
                "instance_id": c.target.id, "name": c.target.name or "", "user": c.user,
                "age": now_wall - entry.created, "idle": 0.0 if entry.in_use else now - entry.last_used,
                "persist": entry.persist, "in_use": entry.in_use, "uses": entry.uses,
                "session_id": getattr(c.tunnel, "session_id", None) or "", "keeper_pid": os.getpid(),
            })  # fmt: skip
        return rows

    def _run(self, conn: socket.socket, reader: Any, request: dict[str, Any]) -> None:
        if request.get("persist") is None and not configured_warm(request.get("cwd", "/")):
            send_frame(conn, b"n")  # the command's config files turn warm sessions off: it runs on its own
            return
        if not self._running.acquire(blocking=False):
            send_frame(conn, b"b")
            return
        try:
            code = self._run_locked(conn, reader, request)
        finally:
            self._running.release()
        try:
            send_frame(conn, b"x", str(code).encode())
        except OSError:
            pass

    def _run_locked(self, conn: socket.socket, reader: Any, request: dict[str, Any]) -> int:
        from .commandline import ProgramConfig, SSMFabProgram
        from .tasks import ns
        from .version import __version__

        lock = threading.Lock()
        tty = request.get("tty") or [False, False]
        out, err = FrameStream(conn, b"o", bool(tty[0]), lock), FrameStream(conn, b"e", bool(tty[1]), lock)
        worker = threading.current_thread()
        finished = threading.Event()

        def interrupt(kind: bytes) -> None:
            if not finished.is_set():
                raise_in_thread(worker, SIGTERMInterrupted if kind == b"t" else Interrupted)

        if request.get("run_id"):
            with self._state:
                self._interrupt = (str(request["run_id"]), interrupt)
        if request.get("input"):
            try:
                with lock:
                    send_frame(conn, b"s")  # runs here: its input may come (not before: it may run it itself)
            except OSError:
                pass  # the caller left: its watcher interrupts the command at once

        input_read, input_write = os.pipe() if request.get("input") else (-1, -1)
        size = request.get("size")
        terminal = None
        if size:

            def restore_terminal() -> None:
                try:
                    with lock:
                        send_frame(conn, b"r")
                except OSError:
                    pass  # the caller left

            terminal = ForwardedTerminal(str(request.get("term") or "vt100"), int(size[0]), int(size[1]), restore_terminal)

        input_lock = threading.Lock()

        def end_input() -> None:
            nonlocal input_write
            with input_lock:
                if input_write >= 0:
                    os.close(input_write)
                    input_write = -1

        def watch_caller() -> None:
            # The caller's Ctrl-C (or its leaving) is this command's Ctrl-C; its input goes to the command's stdin.
            nonlocal input_write
            kind = b""
            try:
                while True:
                    head = reader.read(FRAME.size)
                    if len(head) < FRAME.size:
                        kind = b""
                        break
                    kind, length = FRAME.unpack(head)
                    payload = reader.read(length) if length else b""
                    if kind == b"d":
                        # Under the lock: the pipe's end is not closed (and its number reused) mid-write. A write
                        # blocked on a full pipe fails once the command's end is closed, when the command ends.
                        with input_lock:
                            try:
                                view = memoryview(payload)
                                while view and input_write >= 0:
                                    view = view[os.write(input_write, view) :]
                            except OSError:  # the command is done with its input
                                os.close(input_write)
                                input_write = -1
                    elif kind == b"z":
                        end_input()
                    elif kind == b"w" and terminal is not None:
                        columns, rows = payload.split()
                        terminal.resize(int(columns), int(rows))
                    elif kind in (b"i", b"t"):
                        break
            except (OSError, ValueError):
                kind = b""
            interrupt(kind)

        watcher = threading.Thread(target=watch_caller, name="ssmfab-keeper-caller", daemon=True)
        config_class = type(
            "KeeperConfig", (ProgramConfig,), {"client_source": staticmethod(self.client_source), "terminal": terminal}
        )
        saved = (sys.stdout, sys.stderr, os.getcwd(), os.environ.get("COLUMNS"), sys.stdin)
        old_umask = os.umask(int(request.get("umask", 0o022)))
        code = 0
        try:
            os.chdir(request["cwd"])
            if request.get("columns"):
                os.environ["COLUMNS"] = str(request["columns"])
            sys.stdout, sys.stderr = out, err
            if input_read >= 0:
                sys.stdin = open(input_read, encoding="utf-8", errors="surrogateescape", closefd=False)  # noqa: SIM115
            watcher.start()
            program = SSMFabProgram(namespace=ns, version=__version__, name="ssmfab", binary="ssmfab", config_class=config_class)
            try:
                program.run(["ssmfab", *request["argv"]], exit=True)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except KeyboardInterrupt as exc:  # arrived between the task's own handling and here
                code = Interrupted.from_exception(exc).exit_code
        finally:
            finished.set()
            with self._state:
                self._interrupt = None
            for stream in (out, err):
                stream.flush()
            sys.stdout, sys.stderr, sys.stdin = saved[0], saved[1], saved[4]
            if input_read >= 0:
                os.close(input_read)  # a watcher still writing input sees the pipe broken and stops
            end_input()
            os.umask(old_umask)
            os.chdir(saved[2])
            if saved[3] is None:
                os.environ.pop("COLUMNS", None)
            else:
                os.environ["COLUMNS"] = saved[3]
        return code


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    path, persist = Path(args[0]), parse_persist(args[1])
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s keeper %(process)d: %(message)s", stream=sys.stderr)
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)
    keeper = Keeper(path, persist)
    # Sessions of keepers that were killed end now (they would stay open until SSM's idle timeout).
    threading.Thread(target=end_orphaned_sessions, args=(str(path.parent),), name="ssmfab-keeper-orphans", daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: keeper.stopping.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the terminal's Ctrl-C is the command's, not the keeper's
    log.warning("started for %s warm after each use", describe_seconds(persist))
    keeper.serve()


if __name__ == "__main__":
    main()
