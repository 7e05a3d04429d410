"""A stand-in ``session-manager-plugin`` for the sandbox: the Session Manager data channel, as AWS's plugin speaks it.

The aws CLI (and ssmfab's plugin tunnel) run it as the real one::

    session-manager-plugin RESPONSE REGION StartSession [PROFILE [REQUEST_JSON [ENDPOINT]]]

RESPONSE is the StartSession response JSON, or the name of an environment variable holding it when it starts
with ``AWS_SSM_START_SESSION_RESPONSE`` (read, then unset). It accepts what the real plugin 1.2.677.0 accepts
(session.go): 4 to 7 arguments counting the program (tools such as ec2-juggle pass no endpoint); no
arguments prints the "installed successfully" note, ``--version`` the version, 2 or 3 arguments an "Unknown
operation" note; a REQUEST_JSON without a string ``Target`` is a crash (exit 2), as in the real one.

What a caller can see is what the real plugin does: ``\nStarting session with SessionId: <id>\n`` on stdout
first; then it dials the StreamUrl (a websocket: the sandbox's ssmmessages service), sends the OpenDataChannel
frame with the token, answers the agent's handshake, and forwards stdin and stdout as numbered
``input_stream_data``/``output_stream_data`` messages with acknowledgements, resending its oldest unacknowledged
message when overdue, keeping messages that arrive ahead of order and dropping duplicates. It ends:

- on stdin EOF: exits 0 at once, sending nothing and calling no TerminateSession (ending the SSM session is the
  caller's job, as with the real plugin);
- on ``channel_closed``: prints ``\n\nExiting session with sessionId: <id>.\n\n`` (or the service's reason as
  ``\n\nSessionId: <id> : <reason>\n\n``) and exits 0;
- when reading the websocket fails: calls ResumeSession through ENDPOINT and reconnects with the new token,
  the sequence numbers carrying on; when that fails (six tries), it stays alive until stdin EOF;
- when sending stdin data on the websocket fails (the connection dropped mid-upload): exits 0 at once, with
  no resume (the real plugin's stdin loop returns "Failed to send packet" and the program ends);
- on SIGINT or SIGTERM: prints ``Terminate signal received, exiting.`` and exits, no TerminateSession;
- when the StreamUrl cannot be reached at start: it retries, then waits forever (the caller must bound that).

**The one deliberate difference:** without the link model (``SSMFAB_SANDBOX_LINK`` unset or ``off``) it reads
stdin in large chunks, so tests and the bench run at loopback speed. With the link model on it reads 1024 bytes
at a time and sleeps 1 ms between reads, as the real plugin always does (about 0.7-1 MB/s of upload). The rest
of the link model (setup delay, download rate) is applied by the service, to any plugin.

It is started once per connection, so the sandbox runs it without site from bytecode it compiles at start
(``python -S stand-in-session-manager-plugin.pyc``, with the codec ``datachannel.pyc`` beside it), and it imports
only the interpreter's built-in C modules: the json, socket, threading, hashlib and typing modules would
double its start-up cost, and a 50-host sandbox run starts 51 of them on the cores it measures. Its websocket
client is the few lines it needs (RFC 6455 client frames, no extensions).
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # signal without its enum wrappers (no stub)
import binascii
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


def call_sandbox_ssm(endpoint_url: str, region: str, action: str, body: dict[str, Any], timeout: float = 10) -> dict[str, Any]:
    """POST one SSM JSON action to a moto server (used for the non-AWS actions and by this plugin).

    Plain HTTP/1.1 over a socket: urllib would cost the plugin more to import than everything else it does."""
    host, port, path = _split_url(endpoint_url)
    payload = dumps(body).encode()
    head = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(payload)}", "Connection: close"]
    head += [f"{name}: {value}" for name, value in _signed_headers(region, action).items()]
    conn = connect(host, port, timeout=timeout)
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


class WebSocket:
    """The client end of a websocket over a plain socket (RFC 6455: masked frames, no extensions)."""

    def __init__(self, sock: _socket.socket, buffered: bytes = b"") -> None:
        self.sock = sock
        self.buffer = bytearray(buffered)
        self.sending = _thread.allocate_lock()

    @classmethod
    def connect(cls, url: str, timeout: float) -> WebSocket:
        host, port, path = _split_url(url)
        sock = connect(host, port, timeout)
        try:
            key = binascii.b2a_base64(os.urandom(16), newline=False).decode()
            request = (
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            sock.sendall(request.encode())
            reply = bytearray()
            while b"\r\n\r\n" not in reply:
                chunk = sock.recv(4096)
                if not chunk:
                    raise OSError(f"{host}:{port} closed the connection during the websocket upgrade")
                reply += chunk
            head, _, rest = bytes(reply).partition(b"\r\n\r\n")
            status = head.split(b"\r\n", 1)[0].split()
            if len(status) < 2 or status[1] != b"101":
                status_line = head.split(b"\r\n", 1)[0].decode(errors="replace")
                raise OSError(f"websocket upgrade refused: {status_line}")
        except BaseException:
            sock.close()
            raise
        sock.settimeout(None)
        sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
        return cls(sock, rest)

    def send(self, data: bytes | str) -> None:
        opcode = 0x1 if isinstance(data, str) else 0x2
        self._send_frame(opcode, data.encode() if isinstance(data, str) else data)

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        size = len(payload)
        if size < 126:
            head = bytes((0x80 | opcode, 0x80 | size))
        elif size < 1 << 16:
            head = bytes((0x80 | opcode, 0x80 | 126)) + size.to_bytes(2, "big")
        else:
            head = bytes((0x80 | opcode, 0x80 | 127)) + size.to_bytes(8, "big")
        key = os.urandom(4)
        with self.sending:
            self.sock.sendall(head + key + _mask(payload, key))

    def _read(self, count: int) -> bytes:
        while len(self.buffer) < count:
            chunk = self.sock.recv(max(65536, count - len(self.buffer)))
            if not chunk:
                raise EOFError("the websocket's connection closed")
            self.buffer += chunk
        data = bytes(self.buffer[:count])
        del self.buffer[:count]
        return data

    def receive(self) -> bytes | str:
        """The next data message (EOFError when the peer closed, OSError when the connection broke)."""
        parts: list[bytes] = []
        first_opcode = 0
        while True:
            b0, b1 = self._read(2)
            size = b1 & 0x7F
            if size == 126:
                size = int.from_bytes(self._read(2), "big")
            elif size == 127:
                size = int.from_bytes(self._read(8), "big")
            key = self._read(4) if b1 & 0x80 else b""
            payload = self._read(size)
            if key:
                payload = _mask(payload, key)
            opcode = b0 & 0x0F
            if opcode == 0x8:
                raise EOFError(f"the service closed the websocket: {payload[2:].decode(errors='replace')}")
            if opcode == 0x9:
                self._send_frame(0xA, payload)
                continue
            if opcode == 0xA:
                continue
            if opcode:
                first_opcode = opcode
            parts.append(payload)
            if b0 & 0x80:
                data = b"".join(parts)
                return data.decode() if first_opcode == 0x1 else data

    def close(self) -> None:
        try:
            self.sock.shutdown(_socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def _mask(payload: bytes, key: bytes) -> bytes:
    """XOR with the 4-byte key, at C speed (one big-integer XOR instead of a Python loop per byte)."""
    size = len(payload)
    if not size:
        return b""
    keystream = (key * (size // 4 + 1))[:size]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(keystream, "little")).to_bytes(size, "little")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


#: The real plugin's resend timer (config.go): initial, cap, and how often the oldest message is checked.
INITIAL_RTO, MAX_RTO, RESEND_TICK = 0.2, 1.0, 0.1
#: ResumeSession + reconnect attempts before the plugin gives up on the data channel (then waits for stdin EOF).
RECONNECT_TRIES = 6


class DataChannel:
    """One session's data channel as the real plugin runs it: threads for stdin and for resends, the main
    thread reading the websocket."""

    def __init__(self, session: dict[str, Any], region: str, endpoint: str, target: str, paced: bool) -> None:
        self.session_id = str(session["SessionId"])
        self.token = str(session["TokenValue"])
        self.stream_url = str(session["StreamUrl"])
        self.region, self.endpoint, self.target, self.paced = region, endpoint, target, paced
        self.ws: WebSocket | None = None
        self.lock = _thread.allocate_lock()
        self.next_out = 0
        self.unacked: dict[int, list[Any]] = {}  # sequence -> [frame, sent at, resent]
        self.expected_in = 0
        self.ahead: dict[int, datachannel.Message] = {}
        self.srtt = 0.0
        self.rttvar = 0.0
        self.rto = INITIAL_RTO
        self.reading_stdin = False

    # -- sending -----------------------------------------------------------------------------------
    def _send_frame(self, frame: bytes) -> bool:
        ws = self.ws
        if ws is None:
            return False
        try:
            ws.send(frame)
            return True
        except OSError:
            return False  # the receive loop notices the broken connection and resumes

    def send_stream(self, payload_type: int, payload: bytes) -> bool:
        with self.lock:
            message = datachannel.stream_message(datachannel.INPUT_STREAM_DATA, self.next_out, payload_type, payload)
            self.next_out += 1
            frame = message.encode()
            self.unacked[message.sequence] = [frame, time.monotonic(), False]
        return self._send_frame(frame)

    def resend_overdue(self) -> None:
        """Every 100 ms, the oldest unacknowledged message again once its timeout passed (as the real plugin)."""
        while True:
            time.sleep(RESEND_TICK)
            with self.lock:
                if not self.unacked:
                    continue
                oldest = min(self.unacked)
                entry = self.unacked[oldest]
                if time.monotonic() - entry[1] < self.rto:
                    continue
                entry[1], entry[2] = time.monotonic(), True
                frame = entry[0]
            self._send_frame(frame)

    def _acknowledged(self, sequence: int) -> None:
        with self.lock:
            entry = self.unacked.pop(sequence, None)
            if entry is None or entry[2]:
                return
            rtt = time.monotonic() - entry[1]
            if self.srtt == 0.0:
                self.srtt, self.rttvar = rtt, rtt / 2
            else:
                self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
                self.srtt = 0.875 * self.srtt + 0.125 * rtt
            self.rto = min(MAX_RTO, max(RESEND_TICK, self.srtt + 4 * self.rttvar))

    # -- stdin -------------------------------------------------------------------------------------
    def pump_stdin(self) -> None:
        """stdin -> Output messages; EOF ends the program at once, without TerminateSession."""
        size = 1024 if self.paced else CHUNK
        while True:
            try:
                data = os.read(0, size)
            except OSError:
                data = b""
            if not data:
                os._exit(0)
            if data == b"\n":
                data = b"\r"  # the real plugin sends a lone newline as a carriage return (streaming.go)
            if not self.send_stream(datachannel.OUTPUT, data):
                # As the real plugin: stdin data it cannot hand to the websocket ends the session's forwarding
                # and the program (exit 0, "Failed to send packet"); only read errors lead to ResumeSession.
                os._exit(0)
            if self.paced:
                time.sleep(0.001)

    def start_stdin(self) -> None:
        if not self.reading_stdin:
            self.reading_stdin = True
            _thread.start_new_thread(self.pump_stdin, ())

    # -- receiving ---------------------------------------------------------------------------------
    def open(self) -> bool:
        """Dial the StreamUrl and open the data channel with the current token."""
        try:
            ws = WebSocket.connect(self.stream_url, timeout=10)
            ws.send(datachannel.open_data_channel(self.token, VERSION))
        except OSError:
            return False
        self.ws = ws
        return True

    def run(self) -> int:
        for attempt in range(RECONNECT_TRIES):
            if self.open():
                break
            time.sleep(min(2.0, 0.1 * 2**attempt))
        else:
            while True:  # as the real plugin: it waits for a data channel that never opens
                time.sleep(3600)
        _thread.start_new_thread(self.resend_overdue, ())
        while True:
            ws = self.ws
            try:
                if ws is None:
                    raise OSError("no data channel")
                frame = ws.receive()
            except (OSError, EOFError, ValueError):
                if not self.resume():
                    self.start_stdin()  # the channel is gone for good: stay alive until stdin EOF
                    while True:
                        time.sleep(3600)
                continue
            if isinstance(frame, bytes):
                self.handle(frame)

    def resume(self) -> bool:
        """ResumeSession for a new token, then the same StreamUrl again."""
        if self.ws is not None:
            self.ws.close()
            self.ws = None
        for attempt in range(RECONNECT_TRIES):
            if self.endpoint:
                try:
                    answer = call_sandbox_ssm(self.endpoint, self.region, "ResumeSession", {"SessionId": self.session_id})
                    self.token = str(answer["TokenValue"])
                    self.stream_url = str(answer.get("StreamUrl") or self.stream_url)
                    if self.open():
                        with self.lock:
                            pending = [self.unacked[seq][0] for seq in sorted(self.unacked)]
                        for frame in pending:
                            self._send_frame(frame)
                        return True
                except (OSError, ValueError, KeyError):
                    pass
            time.sleep(min(2.0, 0.1 * 2**attempt))
        return False

    def handle(self, frame: bytes) -> None:
        try:
            message = datachannel.decode(frame)
        except ValueError:
            return
        kind = message.message_type
        if kind == datachannel.ACKNOWLEDGE:
            try:
                self._acknowledged(datachannel.acknowledged_sequence(message))
            except (ValueError, KeyError, TypeError):
                pass
        elif kind == datachannel.OUTPUT_STREAM_DATA:
            if message.sequence == self.expected_in:
                self._send_frame(datachannel.acknowledgement(message).encode())
                self.process(message)
                self.expected_in += 1
                while self.expected_in in self.ahead:
                    self.process(self.ahead.pop(self.expected_in))
                    self.expected_in += 1
            elif message.sequence > self.expected_in:
                self.ahead.setdefault(message.sequence, message)
                self._send_frame(datachannel.acknowledgement(message).encode())
            # behind: already processed; dropped without an ack, as the real plugin does
        elif kind == datachannel.CHANNEL_CLOSED:
            try:
                output = str(loads(message.payload).get("Output") or "")
            except ValueError:
                output = ""
            if output:
                _write_all(1, f"\n\nSessionId: {self.session_id} : {output}\n\n".encode())
            else:
                _write_all(1, f"\n\nExiting session with sessionId: {self.session_id}.\n\n".encode())
            os._exit(0)

    def process(self, message: datachannel.Message) -> None:
        if message.payload_type == datachannel.OUTPUT:
            _write_all(1, message.payload)
        elif message.payload_type == datachannel.HANDSHAKE_REQUEST:
            response = datachannel.handshake_response_payload(VERSION, message.payload)
            self.send_stream(datachannel.HANDSHAKE_RESPONSE, response)
        elif message.payload_type == datachannel.HANDSHAKE_COMPLETE:
            try:
                customer = str(loads(message.payload).get("CustomerMessage") or "")
            except ValueError:
                customer = ""
            if customer:
                _write_all(1, f"{customer}\n".encode())
            self.start_stdin()


def _session(first_arg: str) -> dict[str, Any]:
    if first_arg.startswith("AWS_SSM_START_SESSION_RESPONSE"):
        text = os.environ.pop(first_arg, "")
        os.unsetenv(first_arg)
        return dict(loads(text))
    return dict(loads(first_arg))


def main(argv: list[str]) -> int:
    if len(argv) == 1:
        print("\nThe Session Manager plugin was installed successfully. Use the AWS CLI to start a session.\n")
        return 0
    if len(argv) == 2 and argv[1] == "--version":
        print(VERSION)
        return 0
    if len(argv) < 4:
        print(f"\nUnknown operation {argv[1]}. \nUse session-manager-plugin --version to check the version.\n")
        return 0
    try:
        link = LinkModel.parse(os.environ.get(LINK_ENV_VAR, ""))
    except ValueError as exc:
        print(f"{LINK_ENV_VAR}: {exc}", file=sys.stderr)
        return 1
    region, operation = argv[2], argv[3]
    target = ""
    if len(argv) > 5:
        request = loads(argv[5]) if argv[5].strip() else {}
        found = request.get("Target") if isinstance(request, dict) else None
        if not isinstance(found, str):
            print("panic: interface conversion: interface {} is nil, not string", file=sys.stderr)
            return 2  # the real plugin crashes here (session.go:184)
        target = found
    endpoint = argv[6] if len(argv) > 6 else ""
    if operation != "StartSession":
        print("Invalid Operation", end="")
        return 0
    try:
        session = _session(argv[1])
        session_id = str(session["SessionId"])
    except (ValueError, KeyError, TypeError) as exc:
        print(f"Cannot perform start session: {exc}")
        return 0
    # As the real plugin's port session: a control signal prints this line and ends the program, with no
    # TerminateSession (standardstreamforwarding.go handleControlSignals).
    def on_signal(signum: int, frame: Any) -> None:
        _write_all(1, b"Terminate signal received, exiting.\n")
        os._exit(0)

    for sig in (_signal.SIGINT, _signal.SIGTERM):
        _signal.signal(sig, on_signal)
    _write_all(1, f"\nStarting session with SessionId: {session_id}\n".encode())
    return DataChannel(session, region, endpoint, target, paced=link.active).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
