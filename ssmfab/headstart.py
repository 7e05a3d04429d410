"""A tunnel opened while its instance is still being looked up, for the connection that follows to take.

A command naming one instance id (``ssmfab get i-0abc… log``, ``inv fetch-logs i-0abc…``, ``ssmfab forward i-0abc…
5432:db:5432``) looks the instance up first (DescribeInstances and DescribeInstanceInformation: is it running, is
its agent Online, what are its tags) and only then opens its SSM session (StartSession, then the plugin's own setup
with the service). Neither needs the other's answer: the id is all StartSession takes. So the tunnel is opened on a
thread of its own while the lookup runs, and the connection that follows takes it instead of opening one. Against
AWS that hides the lookup's two round trips behind the session's start; on the sandbox the plugin's and sshd's
start-up run on the other core while this process looks the instance up.

The lookup still decides: an instance it leaves out is never connected to, and its tunnel (when StartSession
even accepted it) is closed, the SSM session ended. A tunnel that failed to open is not an error of its own: the
connection opens its own as it always did, and reports that attempt's failure with the host's name.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from .tunnel import Tunnel, TunnelFactory


class HeadStart:
    """One tunnel being opened on a thread. ``take`` hands it over once; ``drop`` closes it if nobody took it
    (now, or when its opening ends if that is later)."""

    def __init__(self, open_tunnel: Callable[[], Tunnel], target_id: str) -> None:
        self.target_id = target_id
        self._lock = threading.Lock()
        self._tunnel: Tunnel | None = None
        self._dropped = False
        self._taken = False
        self._opened = threading.Event()
        self._thread = threading.Thread(target=self._open, args=(open_tunnel,), name=f"ssmfab-head-start-{target_id}", daemon=True)
        self._thread.start()

    def _open(self, open_tunnel: Callable[[], Tunnel]) -> None:
        try:
            tunnel: Tunnel | None = open_tunnel()
        except Exception:  # noqa: BLE001 - the connection's own attempt reports the cause, with the host's name
            tunnel = None
        with self._lock:
            self._tunnel = tunnel
            late = self._dropped  # dropped while it opened: nobody will take it
        self._opened.set()
        if late and tunnel is not None:
            tunnel.close()

    def take(self) -> Tunnel | None:
        """The tunnel, once it has opened (None if it failed or was taken or dropped before)."""
        self._opened.wait()
        with self._lock:
            if self._taken or self._dropped:
                return None
            self._taken = True
            return self._tunnel

    def drop(self, wait: float) -> None:
        """Close the tunnel unless it was taken: waits at most ``wait`` seconds for it to open and close (an AWS
        that stopped answering must not hold the command); a later opening closes it itself."""
        with self._lock:
            if self._taken or self._dropped:
                return
            self._dropped = True
            tunnel = self._tunnel if self._opened.is_set() else None
        if tunnel is not None:
            closing = threading.Thread(target=tunnel.close, name=f"ssmfab-head-start-close-{self.target_id}", daemon=True)
            closing.start()
            closing.join(wait)
        else:
            self._thread.join(wait)


class HeadStartTunnels:
    """A TunnelFactory whose first ``open`` of ``target_id`` takes the tunnel a HeadStart opened beforehand;
    everything else is the wrapped factory's."""

    def __init__(self, factory: TunnelFactory, target_id: str) -> None:
        self.factory = factory
        self.mode = factory.mode
        self.head_start = HeadStart(lambda: factory.open(target_id, target_id), target_id)

    def check(self) -> None:
        self.factory.check()

    def prepare(self) -> None:
        self.factory.prepare()

    def open(self, target_id: str, label: str | None = None) -> Tunnel:
        if target_id == self.head_start.target_id:
            tunnel = self.head_start.take()
            if tunnel is not None:
                return tunnel
        return self.factory.open(target_id, label)

    def drop(self, wait: float) -> None:
        self.head_start.drop(wait)
