"""Unit-test fixtures. One OpenSSH sshd on loopback, reached directly (no SSM, which the code under test never
sees), for the modules that work over a live SSH connection: the runner, transfers, deploy."""

from __future__ import annotations

import ctypes
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

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
