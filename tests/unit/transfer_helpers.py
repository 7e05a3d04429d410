"""Fixtures shared by the in-process transfer tests: an ssmfab connection to the loopback sshd, and a fresh
folder in its home for each test (seen both as a local path and as the path relative to the login folder)."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from ssmfab.connection import SSMConnection
from ssmfab.sandbox.sshd import SSHServer

from .sshconn import loopback_ssm_connection


@dataclass
class HostFolder:
    """A folder on the host: ``path`` on this machine's disk, ``remote`` as given to put/get (relative to home)."""

    path: Path
    remote: str


@pytest.fixture
def conn(server: tuple[SSHServer, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSMConnection]:
    connection = loopback_ssm_connection(server, tmp_path_factory.mktemp("keys") / "known_hosts")
    try:
        yield connection
    finally:
        connection.close()


@pytest.fixture
def host(server: tuple[SSHServer, Path]) -> Iterator[HostFolder]:
    name = f"t-{uuid.uuid4().hex[:10]}"
    folder = server[0].home / name
    folder.mkdir()
    try:
        yield HostFolder(folder, name)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def temporaries(folder: Path) -> list[str]:
    """Every ssmfab temporary file left below ``folder``."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if ".ssmfab-" in p.name)


@contextmanager
def tmpfs(folder: Path, options: str) -> Iterator[Path]:
    """A small file system of its own at ``folder`` (a full or read-only disk; root only: mount)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a small tmpfs (a full or read-only file system cannot be made otherwise)")
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)
        folder.rmdir()


def cut_during(monkeypatch: pytest.MonkeyPatch, conn: SSMConnection, method: str, when: Callable[[str], bool]) -> list[str]:
    """Make the connection die while the SFTP client runs ``method`` on a path ``when`` accepts: the tunnel is cut,
    paramiko's transport ends, then the real call runs (and fails as paramiko fails on a dead connection).
    Returns the paths it was cut at (the first call only)."""
    import paramiko

    real = getattr(paramiko.SFTPClient, method)
    cut: list[str] = []

    def dying(self: paramiko.SFTPClient, path: str, *args: object, **kwargs: object) -> object:
        if not cut and when(str(path)):
            cut.append(str(path))
            tunnel, transport = conn.tunnel, conn.client.get_transport()
            assert tunnel is not None and transport is not None
            tunnel.close()
            transport.join(30)  # the transport's thread ends when it sees the stream gone
        return real(self, path, *args, **kwargs)

    monkeypatch.setattr(paramiko.SFTPClient, method, dying)
    return cut
