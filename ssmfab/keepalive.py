"""SSH keepalives in the spirit of OpenSSH's ServerAliveInterval and ServerAliveCountMax.

A Session Manager data channel can die without closing anything: AWS's plugin tries ResumeSession, fails,
and then waits for its input to end, so the SSH stream just goes quiet and a command waits forever.
paramiko's own ``set_keepalive`` sends a request that wants no reply, so it never notices a dead peer.

Here, after every ``interval`` seconds in which nothing arrived from the tunnel, a ``keepalive@openssh.com``
global request that wants a reply goes out (sshd answers it, as it answers OpenSSH's); after ``count_max``
of them in a row went unanswered, the session counts as lost and ``on_lost`` runs. Any bytes arriving
count as an answer. The checks run on paramiko's own transport thread, through the packetizer's keepalive
hook (called while the transport waits for data), so a connection gets no thread of its own for them.
"""

from __future__ import annotations

import select
import threading
from collections.abc import Callable
from contextlib import ExitStack

import paramiko
from paramiko.common import cMSG_GLOBAL_REQUEST

KEEPALIVE_REQUEST = "keepalive@openssh.com"


class KeepaliveWatch:
    """Watches one transport; ``reads()`` counts the tunnel socket's reads (see TunnelSocket.reads)."""

    def __init__(
        self,
        transport: paramiko.Transport,
        reads: Callable[[], int],
        interval: float,
        count_max: int,
        on_lost: Callable[[], object],
    ) -> None:
        self.transport = transport
        self._reads = reads
        self.interval = interval
        self.count_max = count_max
        self._on_lost = on_lost
        self._last_reads = reads()
        #: Keepalives sent since anything last arrived.
        self.unanswered = 0
        #: Times something arrived after keepalives had gone out: the session was quiet, not dead.
        self.answered = 0
        self.lost = False

    def install(self) -> None:
        if self.interval > 0:
            self.transport.packetizer.set_keepalive(self.interval, self.check)

    def check(self) -> None:
        """Called by paramiko after ``interval`` seconds without a packet sent, while it waits for data."""
        if self.lost:
            return
        reads = self._reads()
        if reads != self._last_reads:
            self._last_reads = reads
            if self.unanswered:
                self.answered += 1
            self.unanswered = 0
            return
        if self.unanswered >= self.count_max:
            self.lost = True
            self._on_lost()
            return
        self.unanswered += 1
        self.send_probe()

    def send_probe(self) -> bool:
        """Send one keepalive that wants a reply, unless that could block this thread (paramiko's transport
        thread, which must stay free to read) or be mistaken for another request's reply; a skipped probe
        still counts as unanswered. True if it went out."""
        transport = self.transport
        pending = transport.completion_event
        if pending is not None and not pending.is_set():
            return False  # a global request of the user's awaits its reply: ours would be taken for it
        packetizer = transport.packetizer
        # paramiko's locks around sending: the write lock is held for as long as a send is stuck on a full
        # socket, which is what a dead tunnel that stopped reading looks like.
        write_lock: threading.RLock | None = getattr(packetizer, "_Packetizer__write_lock", None)
        with ExitStack() as held:
            for lock in (transport.clear_to_send_lock, write_lock):
                if lock is not None:
                    if not lock.acquire(blocking=False):
                        return False
                    held.callback(lock.release)
            if not transport.clear_to_send.is_set():
                return False  # a key exchange is under way: its own packets ask for an answer
            try:
                _, writable, _ = select.select([], [transport.sock], [], 0)
            except (OSError, ValueError):
                return False
            if not writable:
                return False
            message = paramiko.Message()
            message.add_byte(cMSG_GLOBAL_REQUEST)
            message.add_string(KEEPALIVE_REQUEST)
            message.add_boolean(True)
            try:
                packetizer.send_message(message)
            except (OSError, EOFError):
                return False
        return True
