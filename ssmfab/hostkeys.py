"""Host keys pinned per instance id in ssmfab's own known_hosts file (OpenSSH format).

Through SSM every host is reached as ``i-…`` on port 22, so the instance id is the natural key: the same
file works for ``ssh -o UserKnownHostsFile=…`` with the documented ProxyCommand. First use is trusted
with a notice (or refused in strict mode); a changed key is always refused with both fingerprints.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import os
import stat
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paramiko

from .exceptions import HostKeyError


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH-style ``SHA256:…`` fingerprint."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


class KnownHosts:
    """The pinned-keys file. Appends are locked so parallel first connections do not clobber each other."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser()
        # Parsed once per version of the file: every connection of a fan-out looks its host up, and
        # re-reading a file that grows by a host per connection made a 50-host run parse ~1,300 keys.
        self._parsed: tuple[tuple[int, int, int], paramiko.HostKeys] | None = None
        self._lock = threading.Lock()

    def load(self) -> paramiko.HostKeys:
        """The file's keys as of now; shared between callers, so read it, never add to it."""
        try:
            info = self.path.stat()
        except FileNotFoundError:
            return paramiko.HostKeys()
        version = (info.st_ino, info.st_size, info.st_mtime_ns)
        with self._lock:
            if self._parsed is None or self._parsed[0] != version:
                keys = paramiko.HostKeys()
                if stat.S_ISREG(info.st_mode):
                    keys.load(str(self.path))
                self._parsed = (version, keys)
            return self._parsed[1]

    def lookup(self, host: str) -> dict[str, paramiko.PKey]:
        return dict(self.load().lookup(host) or {})

    def add(self, host: str, key: paramiko.PKey) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        line = f"{host} {key.get_name()} {key.get_base64()}\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            handle.write(line)

    def forget(self, host: str) -> int:
        """Remove every key pinned for ``host``; returns how many lines went."""
        if not self.path.is_file():
            return 0
        with self.path.open("r+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            lines = handle.readlines()
            kept = [line for line in lines if host not in line.split(" ", 1)[0].split(",")]
            handle.seek(0)
            handle.writelines(kept)
            handle.truncate()
        return len(lines) - len(kept)

    def entries(self) -> list[tuple[str, str, str]]:
        """(host, key type, fingerprint) for every pinned key."""
        result = []
        keys = self.load()
        for host in keys.keys():
            for key_type, key in keys[host].items():
                result.append((host, key_type, fingerprint(key)))
        return sorted(result)

    def forget_hint(self, host: str) -> str:
        """One command a user can paste as it is."""
        return f"ssmfab known-hosts --forget {host}"


class PinningPolicy(paramiko.MissingHostKeyPolicy):  # type: ignore[misc]
    """Called by paramiko only for hosts with no pinned key: trust on first use, or refuse when strict."""

    def __init__(
        self, known_hosts: KnownHosts, *, strict: bool, notify: Callable[[str], Any] | None = None
    ) -> None:
        self.known_hosts = known_hosts
        self.strict = strict
        self.notify = notify or (lambda message: sys.stderr.write(message + "\n"))

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        if self.strict:
            raise HostKeyError(
                f"{hostname}: host key {fingerprint(key)} is not pinned and strict host keys are on: "
                f"connect once without --strict-host-keys after checking the fingerprint, or add it to {self.known_hosts.path}",
                host=hostname,
            )
        self.known_hosts.add(hostname, key)
        client.get_host_keys().add(hostname, key.get_name(), key)
        self.notify(f"{hostname}: first connection, pinned host key {key.get_name()} {fingerprint(key)}")


def changed_key_error(
    host: str, got: paramiko.PKey, expected: paramiko.PKey, known_hosts: KnownHosts, label: str | None = None
) -> HostKeyError:
    return HostKeyError(
        f"{label or host}: HOST KEY CHANGED, refusing to connect: pinned {expected.get_name()} {fingerprint(expected)}, "
        f"offered {got.get_name()} {fingerprint(got)}. If the instance was legitimately rebuilt, clear the pin "
        f"with: {known_hosts.forget_hint(host)}",
        host=host,
    )
