"""Warm connections: open SSH-over-SSM connections kept for the next command instead of closed.

A ``Client(persist=…)`` gets its connections here first. A connection its user is done with (``release``) comes
back if it is healthy (connected, not lost, not interrupted); it is closed (SSH, tunnel, TerminateSession) once
it has been idle for its persist time, or on ``close_all``. Entries are keyed by everything that changes who
the connection is: instance id, SSH user, the key's fingerprint, and the AWS and tunnel settings it was opened
with (region, profile, endpoint, tunnel mode, document, port, timeouts).

A warm connection may have died while it waited (the instance rebooted, an admin ended the session): one whose
transport already knows is reopened by its first use; one that does not know yet is found out when its first
channel fails to open, before any command is sent, and is then replaced once (see ``SSMConnection``). A
command is never sent twice.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .connection import SSMConnection
    from .targets import Selector


@dataclass
class Entry:
    conn: SSMConnection
    key: str
    created: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.monotonic)
    #: Seconds idle after which it is closed.
    persist: float = 60.0
    in_use: bool = True
    uses: int = 1

    def expires(self) -> float:
        return self.last_used + self.persist


class ConnectionPool:
    """Connections by key; a thread closes those idle past their persist time. ``on_empty`` runs (on that
    thread) each time the pool is left holding nothing; ``on_change`` each time a connection opens its session,
    comes back or leaves (a keeper writes down the sessions it holds: see ledger)."""

    def __init__(self, on_empty: Callable[[], object] | None = None, on_change: Callable[[], object] | None = None) -> None:
        self._entries: dict[int, Entry] = {}
        self._changed = threading.Condition()
        self._closed = False
        self.on_empty = on_empty
        self.on_change = on_change
        self._reaper: threading.Thread | None = None

    # -- leasing ---------------------------------------------------------------------------------------------
    def take(self, key: str) -> SSMConnection | None:
        """An idle connection for ``key``, now in use; None if there is none. One found dead is closed here."""
        dead: list[SSMConnection] = []
        found: SSMConnection | None = None
        with self._changed:
            for entry in list(self._entries.values()):
                if entry.key != key or entry.in_use:
                    continue
                if not entry.conn.is_connected:
                    dead.append(entry.conn)
                    del self._entries[id(entry.conn)]
                    continue
                entry.in_use, entry.uses = True, entry.uses + 1
                entry.last_used = time.monotonic()
                found = entry.conn
                break
        for conn in dead:
            conn.close()
        return found

    def add(self, conn: SSMConnection, key: str, persist: float) -> None:
        """A new connection, in use, that will come back here when released."""
        with self._changed:
            self._entries[id(conn)] = Entry(conn, key, persist=persist)
            self._start_reaper()

    def give_back(self, conn: SSMConnection, persist: float | None = None) -> bool:
        """Keep ``conn`` warm (True), or False if it is not this pool's (the caller closes it)."""
        with self._changed:
            entry = self._entries.get(id(conn))
            if entry is None or self._closed:
                return False
            entry.in_use = False
            entry.last_used = time.monotonic()
            if persist is not None:
                entry.persist = persist
            self._changed.notify_all()
        if self.on_change is not None:
            self.on_change()
        return True

    def session_opened(self, conn: SSMConnection) -> None:
        """``conn`` (this pool's, in use) has just opened its SSM session: whoever keeps a record of the
        sessions held (``on_change``) learns of it before the command that opened it ends."""
        with self._changed:
            known = id(conn) in self._entries
        if known and self.on_change is not None:
            self.on_change()

    def forget(self, conn: SSMConnection) -> None:
        """``conn`` is being closed by its user: no longer the pool's."""
        with self._changed:
            known = self._entries.pop(id(conn), None) is not None
            self._changed.notify_all()
        if known and self.on_change is not None:
            self.on_change()

    # -- looking and stopping --------------------------------------------------------------------------------
    def entries(self) -> list[Entry]:
        with self._changed:
            return list(self._entries.values())

    def __len__(self) -> int:
        with self._changed:
            return len(self._entries)

    def close_matching(self, selector: Selector | None = None) -> int:
        """Close the idle connections the selector matches (all idle ones without one); how many."""
        with self._changed:
            chosen = [
                e for e in self._entries.values()
                if not e.in_use and (selector is None or selector.empty
                                     or selector.matches(e.conn.target.id, e.conn.target.tags, e.conn.target.name or ""))
            ]  # fmt: skip
            for entry in chosen:
                del self._entries[id(entry.conn)]
        _close_all([e.conn for e in chosen])
        self._after_change()
        return len(chosen)

    def close_all(self) -> None:
        """Close every connection, idle or not, and refuse new ones back."""
        with self._changed:
            self._closed = True
            conns = [e.conn for e in self._entries.values()]
            self._entries.clear()
            self._changed.notify_all()
        _close_all(conns)

    # -- expiry ----------------------------------------------------------------------------------------------
    def _start_reaper(self) -> None:
        if self._reaper is None or not self._reaper.is_alive():
            self._reaper = threading.Thread(target=self._reap, name="ssmfab-pool-reaper", daemon=True)
            self._reaper.start()

    def _reap(self) -> None:
        while True:
            with self._changed:
                if self._closed:
                    return
                now = time.monotonic()
                expired = [e for e in self._entries.values() if not e.in_use and e.expires() <= now]
                for entry in expired:
                    del self._entries[id(entry.conn)]
                if not expired:
                    idle = [e.expires() for e in self._entries.values() if not e.in_use]
                    # Woken by every give_back and forget: a shorter persist time may now come first.
                    self._changed.wait(timeout=max(0.01, min(idle) - now) if idle else None)
                    continue
            _close_all([e.conn for e in expired])
            self._after_change()

    def _after_change(self) -> None:
        if self.on_change is not None:
            self.on_change()
        with self._changed:
            empty = not self._entries
        if empty and self.on_empty is not None:
            self.on_empty()


def _close_all(conns: list[SSMConnection]) -> None:
    """Close connections side by side: each close ends an SSM session, a round trip to AWS."""
    threads = [threading.Thread(target=conn.close, name="ssmfab-pool-close", daemon=True) for conn in conns]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
