"""A real ssmfab connection (SSMConnection) to the loopback sshd of conftest's ``server`` fixture: the tunnel is
a plain TCP connection instead of an SSM session (SSM itself cannot run here), everything above it is ssmfab's
own (host-key pinning, keepalives, siblings for striped uploads, the cancel event, the stall watch's cut)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from ssmfab.connection import SSMConnection
from ssmfab.exceptions import SSMFabError
from ssmfab.hostkeys import KnownHosts
from ssmfab.sandbox.sshd import SSHServer
from ssmfab.tunnelsocket import TunnelSocket


class LoopbackTunnel:
    """A tunnel that is one TCP connection to the sshd (what the SSM session carries, without SSM)."""

    def __init__(self, port: int) -> None:
        self._own = socket.create_connection(("127.0.0.1", port), timeout=30)
        self._own.settimeout(None)
        self.sock = TunnelSocket(self._own)
        self.closed = False

    def close(self) -> None:
        self.closed = True
        try:
            self._own.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._own.close()

    def lose(self, error: SSMFabError) -> None:
        self.close()

    def failure(self, host: str) -> SSMFabError | None:
        return None


class LoopbackTunnels:
    """The TunnelFactory for LoopbackTunnel; remembers every tunnel it opened (siblings included)."""

    mode = "loopback"

    def __init__(self, port: int) -> None:
        self.port = port
        self.opened: list[LoopbackTunnel] = []

    def check(self) -> None:
        return None

    def prepare(self) -> None:
        return None

    def open(self, target_id: str, label: str | None = None) -> LoopbackTunnel:
        tunnel = LoopbackTunnel(self.port)
        self.opened.append(tunnel)
        return tunnel


def loopback_ssm_connection(server: tuple[SSHServer, Path], known_hosts: Path, **kwargs: object) -> SSMConnection:
    sshd, key = server
    return SSMConnection(
        "i-0123456789abcdef0",
        tunnels=LoopbackTunnels(sshd.port),
        known_hosts=KnownHosts(known_hosts),
        user=os.environ.get("USER") or "root",
        key_filename=str(key),
        connect_kwargs={"look_for_keys": False, "allow_agent": False},
        **kwargs,  # type: ignore[arg-type]
    )
