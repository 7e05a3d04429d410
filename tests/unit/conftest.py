"""Unit-test fixtures. One OpenSSH sshd on loopback, reached directly (no SSM, which the code under test never
sees), for the modules that work over a live SSH connection: the runner, transfers, deploy."""

from __future__ import annotations

import ctypes
import faulthandler
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import pytest
from fabric import Connection

from ssmfab.connection import default_config
from ssmfab.sandbox.sshd import SSHServer, find_sshd, free_ports, generate_key


def die_with_parent() -> None:
    """In the child, before exec: SIGTERM it when the process that started it dies (Linux prctl)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SSHServer, Path]]:
    root = tmp_path_factory.mktemp("sshd")
    key = root / "client_key"
    generate_key(key, "unit tests")
    sshd = SSHServer(root / "host", free_ports(1)[0], root / "authorized_keys")
    (root / "authorized_keys").write_text((root / "client_key.pub").read_text())
    sshd.prepare()
    # Started here rather than with sshd.start(): it must go with this process even when that is killed
    # outright (mutation testing stops a hung mutant with SIGKILL, and no fixture teardown runs then).
    sshd.process = subprocess.Popen(
        [find_sshd(), "-D", "-e", "-f", str(sshd.config)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        preexec_fn=die_with_parent, start_new_session=True,  # its own group: sshd.stop() signals the group
    )  # fmt: skip
    sshd.wait_ready(30)
    try:
        yield sshd, key
    finally:
        sshd.stop()


def fabric_connection(server: tuple[SSHServer, Path], kind: type[Connection] = Connection) -> Connection:
    """A Fabric connection of class ``kind`` to the loopback sshd of ``server`` (opened on first use)."""
    sshd, key = server
    return kind(
        "127.0.0.1", port=sshd.port, user=os.environ.get("USER") or "root", config=default_config(),
        connect_kwargs={"key_filename": str(key), "look_for_keys": False, "allow_agent": False},
    )  # fmt: skip


@contextmanager
def loopback_connection(server: tuple[SSHServer, Path], kind: type[Connection] = Connection) -> Iterator[Connection]:
    """``fabric_connection``, closed on the way out."""
    connection = fabric_connection(server, kind)
    try:
        yield connection
    finally:
        connection.close()


@pytest.fixture(autouse=True)
def _a_hang_is_a_failure() -> Iterator[None]:
    """A close() or wait that never returns fails the run instead of stalling it (mutation testing stops a
    mutant only when it burns CPU; a blocked wait burns none). A safety net far above any test's own time."""
    faulthandler.dump_traceback_later(180, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@contextmanager
def fed_pipe(data: bytes, mode: str = "rb") -> Iterator[IO[Any]]:
    """The read end of a pipe (a file that cannot seek) that a thread fills with ``data`` and then closes."""
    read_end, write_end = os.pipe()

    def feed() -> None:
        with os.fdopen(write_end, "wb") as pipe:
            pipe.write(data)

    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        with os.fdopen(read_end, mode) as source:
            yield source
    finally:
        feeder.join()
