"""A stand-in ``session-manager-plugin`` for the sandbox, following the real plugin's calling convention.

The aws CLI (and ssmfab's plugin tunnel) run it as::

    session-manager-plugin RESPONSE REGION StartSession PROFILE REQUEST_JSON ENDPOINT

where RESPONSE is the name of an environment variable holding the StartSession response JSON (older
plugins got the JSON itself; both are accepted). It connects to the StreamUrl the sandbox's StartSession
returned (the instance's sshd), bridges stdin/stdout to it, and terminates the session when either side
closes or on SIGTERM/SIGHUP.

It is started once per connection, so the sandbox runs it without site from bytecode it compiles at start
(``python -S stand-in-session-manager-plugin.pyc``), and it imports only the interpreter's built-in C
modules: a start costs ~13 ms of CPU here, against ~27 ms with the json, socket, threading, signal and typing
modules (they pull in re, enum and collections), and a 50-host sandbox run starts 51 of them on the same
cores as everything it measures.

**Link model.** With ``SSMFAB_SANDBOX_LINK`` set (``on`` or e.g. ``setup=1.5,rate=800k,chunk=1024``) it
behaves like a real SSM session rather than a loopback pipe: it waits ``setup`` seconds before the first
byte (the session handshake), forwards at most ``chunk`` bytes per read, and holds each direction to
``rate`` bytes per second, as the real plugin does (reads of up to 1024 bytes with a pause between them,
0.6-1 MB/s in practice).
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # signal without its enum wrappers (no stub)
import _socket
import _thread
import os
import sys
import time

if __package__:
    from . import datachannel
else:  # run as a program: the codec sits beside it
    import datachannel  # type: ignore[import-not-found,no-redef]

loads, dumps = datachannel.loads, datachannel.dumps

TYPE_CHECKING = False
if TYPE_CHECKING:  # for the type checker only: importing typing would cost each start ~10 ms
    from typing import Any

VERSION = "1.2.779.0"
#: Largest output message of the sandbox's service without a link model (the agent itself sends 1024 bytes).
CHUNK = 64 * 1024
LINK_ENV_VAR = "SSMFAB_SANDBOX_LINK"
_SIZE_SUFFIXES = {"k": 1000, "m": 1000_000, "g": 1000_000_000}


class LinkModel:
    """How a real SSM session feels: setup delay (s), download bandwidth cap (bytes/s, 0 = none), bytes per output
    message, and jitter (up to this many extra seconds on the setup and on each output message). The sandbox's
    ssmmessages service applies it to every session, whatever the plugin; uploads are paced by the plugin.
    (A plain class: a NamedTuple or a dataclass would import typing or dataclasses into every plugin start.)"""

    __slots__ = ("setup", "rate", "chunk", "jitter")

    def __init__(self, setup: float = 0.0, rate: float = 0.0, chunk: int = CHUNK, jitter: float = 0.0) -> None:
        self.setup = float(setup)
        self.rate = float(rate)
        self.chunk = int(chunk)
        self.jitter = float(jitter)

    def as_dict(self) -> dict[str, float]:
        return {"setup": self.setup, "rate": self.rate, "chunk": self.chunk, "jitter": self.jitter}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LinkModel) and self.as_dict() == other.as_dict()

    def __hash__(self) -> int:
        return hash((self.setup, self.rate, self.chunk, self.jitter))

    def __repr__(self) -> str:
        return f"LinkModel(setup={self.setup:g}, rate={self.rate:g}, chunk={self.chunk}, jitter={self.jitter:g})"

    @classmethod
    def realistic(cls) -> LinkModel:
        """What ``on`` means: the slow end of what users report for real sessions (the agent sends sshd's output
        in 1024-byte messages)."""
        return cls(setup=1.0, rate=1_000_000, chunk=1024)

    @classmethod
    def parse(cls, text: str) -> LinkModel:
        """``""``/``off`` -> no model; ``on`` -> realistic(); ``setup=1.5,rate=800k,chunk=1024,jitter=0.01`` ->
        those (unnamed keys keep their realistic values). Raises ValueError with the offending part."""
        text = text.strip().lower()
        if text in ("", "off", "0", "no", "false"):
            return cls()
        values: dict[str, float] = {}
        base = cls.realistic()
        for part in filter(None, (p.strip() for p in text.split(","))):
            if part in ("on", "1", "yes", "true"):
                continue
            key, sep, raw = part.partition("=")
            if not sep or key not in ("setup", "rate", "chunk", "jitter"):
                raise ValueError(f"{part!r}: expected setup=SECONDS, rate=BYTES_PER_SECOND, chunk=BYTES or jitter=SECONDS")
            scale = _SIZE_SUFFIXES.get(raw[-1:], 1)
            try:
                value = float(raw[:-1] if scale != 1 else raw) * scale
            except ValueError:
                raise ValueError(f"{part!r}: {raw!r} is not a number") from None
            if value < 0 or (key == "chunk" and value < 1):
                raise ValueError(f"{part!r}: must be positive")
            values[key] = value
        return cls(
            setup=values.get("setup", base.setup),
            rate=values.get("rate", base.rate),
            chunk=int(values.get("chunk", base.chunk)),
            jitter=values.get("jitter", base.jitter),
        )

    @property
    def active(self) -> bool:
        return self != LinkModel()

    def spec(self) -> str:
        """The ``SSMFAB_SANDBOX_LINK`` value that parses back to this model."""
        return f"setup={self.setup:g},rate={self.rate:g},chunk={self.chunk},jitter={self.jitter:g}"

    def describe(self) -> str:
        if not self.active:
            return "off"
        rate = f"{self.rate / 1e6:g} MB/s" if self.rate else "unlimited"
        jitter = f", jitter {self.jitter:g} s" if self.jitter else ""
        return f"setup {self.setup:g} s, {rate}, {self.chunk}-byte output messages{jitter}"


class Pacer:
    """Holds one direction of the bridge to ``rate`` bytes per second (a no-op without a rate)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._due = time.monotonic()

    def sent(self, count: int) -> None:
        if not self.rate:
            return
        now = time.monotonic()
        # Never bank idle time as credit: a pause is not a reason to burst later.
        self._due = max(self._due, now) + count / self.rate
        if self._due > now:
            time.sleep(self._due - now)


def _split_url(url: str) -> tuple[str, int, str]:
    """(host, port, path) of an http/tcp URL; urllib.parse would cost each plugin start a few ms."""
    scheme, _, rest = url.partition("://")
    netloc, slash, path = rest.partition("/")
    host, _, port = netloc.rpartition(":") if ":" in netloc else (netloc, "", "")
    return host or "127.0.0.1", int(port) if port else (443 if scheme in ("https", "wss") else 80), slash + path or "/"


def _signed_headers(region: str, target: str) -> dict[str, str]:
    # moto checks no signature; it reads the region (and account) from the credential scope.
    return {
        "Content-Type": "application/x-amz-json-1.1",
        "X-Amz-Target": f"AmazonSSM.{target}",
        "Authorization": f"AWS4-HMAC-SHA256 Credential=testing/20200101/{region}/ssm/aws4_request, "
        "SignedHeaders=host, Signature=0",
    }


def call_sandbox_ssm(endpoint_url: str, region: str, action: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST one SSM JSON action to a moto server (used for the non-AWS actions and by this plugin).

    Plain HTTP/1.1 over a socket: urllib would cost the plugin more to import than everything else it does."""
    host, port, path = _split_url(endpoint_url)
    payload = dumps(body).encode()
    head = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(payload)}", "Connection: close"]
    head += [f"{name}: {value}" for name, value in _signed_headers(region, action).items()]
    conn = connect(host, port, timeout=10)
    try:
        conn.sendall("\r\n".join(head).encode() + b"\r\n\r\n" + payload)
        reply = bytearray()
        while chunk := conn.recv(65536):
            reply += chunk
    finally:
        conn.close()
    status_line, _, rest = bytes(reply).partition(b"\r\n")
    headers, _, content = rest.partition(b"\r\n\r\n")
    status = int(status_line.split()[1]) if len(status_line.split()) > 1 else 0
    if b"transfer-encoding: chunked" in headers.lower():
        content = _dechunk(content)
    if status != 200:
        raise OSError(f"{action} answered HTTP {status}: {content[:200]!r}")
    return dict(loads(content)) if content.strip() else {}


def connect(host: str, port: int, timeout: float) -> _socket.socket:
    """A TCP connection to a sandbox address (socket.create_connection's job, without the socket module)."""
    conn = _socket.socket(_socket.AF_INET6 if ":" in host else _socket.AF_INET, _socket.SOCK_STREAM)
    conn.settimeout(timeout)
    try:
        conn.connect((host, port))
    except OSError:
        conn.close()
        raise
    return conn


def _dechunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2 :]
    return bytes(out)


def _session(first_arg: str) -> dict[str, Any]:
    try:
        return dict(loads(first_arg))
    except ValueError:
        return dict(loads(os.environ[first_arg]))


def _terminate(endpoint: str, region: str, session_id: str) -> None:
    try:
        call_sandbox_ssm(endpoint, region, "TerminateSession", {"SessionId": session_id})
    except OSError:
        pass  # the sandbox may already be gone; nothing else to clean up


def _pump(source: int, sink: _socket.socket | int, running: _thread.LockType, link: LinkModel) -> None:
    """Copy until EOF or error, or until the other direction ended: large reads on a plain bridge, the link
    model's pace otherwise. Ends by releasing ``running``, which bridge() waits on."""
    pacer = Pacer(link.rate)
    try:
        while running.locked():
            data = os.read(source, link.chunk)
            if not data:
                break
            if isinstance(sink, _socket.socket):
                sink.sendall(data)
            else:
                view = memoryview(data)
                while view:
                    view = view[os.write(sink, view) :]
            pacer.sent(len(data))
    except OSError:
        pass
    finally:
        try:
            running.release()
        except RuntimeError:
            pass  # the other direction ended first and bridge() is already closing


def bridge(conn: _socket.socket, link: LinkModel = LinkModel()) -> None:
    """stdin -> sshd and sshd -> stdout until either side closes."""
    running = _thread.allocate_lock()
    running.acquire()
    _thread.start_new_thread(_pump, (0, conn, running, link))
    _thread.start_new_thread(_pump, (conn.fileno(), 1, running, link))
    running.acquire()  # until one direction ends; signals still interrupt it (their handler exits)
    try:
        conn.shutdown(_socket.SHUT_RDWR)
    except OSError:
        pass


def main(argv: list[str]) -> int:
    if argv[1:2] == ["--version"]:
        print(VERSION)
        return 0
    if len(argv) < 7 or argv[3] != "StartSession":
        print("Usage: session-manager-plugin RESPONSE REGION StartSession PROFILE REQUEST ENDPOINT", file=sys.stderr)
        return 1
    try:
        link = LinkModel.parse(os.environ.get(LINK_ENV_VAR, ""))
    except ValueError as exc:
        print(f"{LINK_ENV_VAR}: {exc}", file=sys.stderr)
        return 1
    session = _session(argv[1])
    region, request, endpoint = argv[2], loads(argv[5]), argv[6]
    session_id = session["SessionId"]
    target = request.get("Target", "?")

    def on_signal(signum: int, frame: Any) -> None:
        _terminate(endpoint, region, session_id)
        os._exit(0)

    for sig in (_signal.SIGTERM, _signal.SIGHUP, _signal.SIGINT):
        _signal.signal(sig, on_signal)

    port = (request.get("Parameters", {}).get("portNumber") or ["22"])[0]
    if str(port) != "22":
        print(f"Unable to connect to port {port} on {target}: connection refused", file=sys.stderr)
        _terminate(endpoint, region, session_id)
        return 1
    if link.setup:
        time.sleep(link.setup)
    stream_host, stream_port, _ = _split_url(session["StreamUrl"])
    try:
        conn = connect(stream_host, stream_port, timeout=10)
    except OSError as exc:
        print(f"Error: could not reach {target}'s sshd: {exc.strerror or exc}", file=sys.stderr)
        _terminate(endpoint, region, session_id)
        return 1
    conn.settimeout(None)
    conn.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
    try:
        bridge(conn, link)
    finally:
        conn.close()
        _terminate(endpoint, region, session_id)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
