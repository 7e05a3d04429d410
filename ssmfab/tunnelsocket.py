"""The socket paramiko reads a tunnel through: what the plugin prints before sshd's banner is kept aside.

AWS's session-manager-plugin writes on its stdout, which is the SSH stream, before its data channel is up
(``\\nStarting session with SessionId: …\\n``) and, when the agent cannot reach port 22, the service's reason
instead of a banner. paramiko allows only 2 s for each line after the first before ``SSH-`` (real sessions
take 1-3 s to set up) and throws those lines away. Here they never reach paramiko: until the banner arrives,
``recv`` keeps whole lines in ``preamble`` and answers "nothing yet" (a socket timeout), so paramiko waits
for its first line, i.e. its ``banner_timeout`` (``ssh.connect_timeout``), however slow the session is.

paramiko still sends its own banner at once (sshd answers it with its key exchange while ours is on its
way), and from the banner on ``recv`` is one counted call into the real socket: the count tells the
keepalive watch whether anything arrived, without reading paramiko's internals.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from typing import Any

BANNER = b"SSH-"
#: Bytes before the banner kept at most: a plugin says a few short lines; more is not a plugin talking.
PREAMBLE_CAP = 16 * 1024
#: Read size while looking for the banner (paramiko asks for 128 bytes at a time while it reads lines).
PREAMBLE_READ = 4096
#: Lines the plugin prints around every session, which say nothing about why one failed.
PLUGIN_NOISE = ("Starting session with SessionId", "Exiting session with sessionId")
SESSION_ID_LINE = re.compile(r"Starting session with SessionId: (\S+)")


class PreambleTooLong(OSError):
    """More than PREAMBLE_CAP bytes came before an SSH banner (paramiko reports it as a banner error)."""


class TunnelSocket:
    """Wraps one end of the tunnel's socketpair for paramiko; anything paramiko asks of a socket (send,
    settimeout, close, fileno, …) goes to the real one, most of them without a frame of ours."""

    recv: Callable[[int], bytes]

    def __init__(self, sock: socket.socket, cap: int = PREAMBLE_CAP) -> None:
        self._sock = sock
        self._cap = cap
        #: Bytes read while looking for the banner and not handed to paramiko yet.
        self._pending = b""
        #: The lines that came before the banner, as text, without their line ends.
        self.preamble: list[str] = []
        self._preamble_bytes = 0
        self.banner_seen = False
        #: Reads that returned something (or EOF): the keepalive watch compares it between its checks.
        self.reads = 0
        # paramiko's hot path calls these: the socket's own bound methods, no wrapper in between.
        self.send = sock.send
        self.sendall = sock.sendall
        self.settimeout = sock.settimeout
        self.gettimeout = sock.gettimeout
        self.fileno = sock.fileno
        self.shutdown = sock.shutdown
        self.close = sock.close
        self.recv = self._recv_preamble

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    @property
    def session_id(self) -> str | None:
        """The SSM session id the plugin announced, if it did."""
        for line in self.preamble:
            match = SESSION_ID_LINE.search(line)
            if match:
                return match.group(1)
        return None

    @property
    def reason(self) -> str:
        """What the plugin said before the banner besides its own greeting (e.g. the agent's refusal)."""
        lines = (line.strip() for line in list(self.preamble))
        return " ".join(line for line in lines if line and not line.startswith(PLUGIN_NOISE))

    @property
    def overflowed(self) -> bool:
        return self._preamble_bytes + len(self._pending) > self._cap

    # -- recv, in its three states: looking for the banner, handing on what was read with it, direct --------
    def _recv_counted(self, size: int) -> bytes:
        data = self._sock.recv(size)
        self.reads += 1
        return data

    def _recv_pending(self, size: int) -> bytes:
        data, self._pending = self._pending[:size], self._pending[size:]
        if not self._pending:
            self.recv = self._recv_counted
        return data

    def _recv_preamble(self, size: int) -> bytes:
        data = self._sock.recv(PREAMBLE_READ)  # a timeout propagates: paramiko checks its deadline and asks again
        self.reads += 1
        if not data:
            self._end_of_stream()
            return b""
        if self._scan(self._pending + data):
            self.recv = self._recv_pending
            return self._recv_pending(size)
        if self.overflowed:
            raise PreambleTooLong(f"no SSH banner in the first {self._cap} bytes from the tunnel")
        raise socket.timeout("no SSH banner yet")  # lines kept aside; paramiko waits on

    def _scan(self, buffer: bytes) -> bool:
        """Move the whole lines before the banner from ``buffer`` to ``preamble``; True once the banner is at
        the front of what is left (kept in ``_pending``)."""
        start = 0
        while True:
            rest = buffer[start : start + len(BANNER)]
            if rest == BANNER:
                self._pending = buffer[start:]
                self.banner_seen = True
                return True
            end = buffer.find(b"\n", start)
            if end < 0:
                self._pending = buffer[start:]  # a line still arriving (perhaps the banner itself)
                return False
            self._keep(buffer[start:end])
            start = end + 1

    def _keep(self, line: bytes) -> None:
        self._preamble_bytes += len(line) + 1
        if self._preamble_bytes <= self._cap:
            self.preamble.append(line.rstrip(b"\r").decode(errors="replace"))

    def _end_of_stream(self) -> None:
        if self._pending:
            self._keep(self._pending)  # the last words, unterminated
            self._pending = b""

    def read_available_preamble(self, via: socket.socket | None = None) -> None:
        """Take in whatever the tunnel wrote that paramiko has not read yet, without waiting: a tunnel closed
        before its banner (Ctrl-C, a failed connect) still has its session id read from the stream. ``via``:
        another socket object on the same socket, without paramiko's timeout (with one, Python waits for
        data before it tries the read)."""
        if self.banner_seen:
            return
        source = via or self._sock
        buffer = self._pending
        while len(buffer) <= self._cap:
            try:
                data = source.recv(PREAMBLE_READ, socket.MSG_DONTWAIT)
            except OSError:  # nothing more for now (or the socket is gone)
                break
            if not data:
                break
            buffer += data
        if not self._scan(buffer):
            self._end_of_stream()
