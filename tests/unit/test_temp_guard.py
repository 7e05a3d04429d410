"""The upload's temporary-file guard over a real SSH connection (one OpenSSH sshd on loopback, so the "host's"
files are this machine's): announced files still there when the connection is cut are removed by the host,
names reach its shell as themselves, a finished upload's guard removes nothing else, and a guard that cannot
open leaves the upload alone."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fabric import Connection

from ssmfab.sandbox.sshd import SSHServer
from ssmfab.transfer.guard import TempGuard

from .conftest import loopback_connection
from ..waiting import wait_until

#: Names a careless remote shell would act on, or split, or take for options.
HOSTILE = ["plain.part", "with space.part", "quote'\".part", "$(touch pwned).part", "`touch pwned`.part",
           "semi;colon.part", "new\nline.part", "-rf.part", "ünï.part"]  # fmt: skip


@pytest.fixture
def conn(server: tuple[SSHServer, Path]) -> Iterator[Connection]:
    with loopback_connection(server) as connection:
        yield connection


def test_a_cut_connection_leaves_the_host_to_remove_what_was_announced(conn: Connection, tmp_path: Path) -> None:
    conn.open()
    folder = tmp_path / "dest"
    folder.mkdir()
    guard = TempGuard(conn.client.get_transport(), 30)
    for name in HOSTILE:
        guard.announce(str(folder / name))
        (folder / name).write_bytes(b"partial")
    (folder / "not announced.part").write_bytes(b"someone else's")
    conn.client.get_transport().sock.close()  # the tunnel dies: no close() from this side reaches the host
    wait_until(lambda: sorted(p.name for p in folder.iterdir()) == ["not announced.part"], "the announced files removed")
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()
    guard.close()  # after the cut: no error


def test_closing_the_guard_removes_only_announced_files_still_there(conn: Connection, tmp_path: Path) -> None:
    """A renamed temporary file is gone from its announced name, so its final name is never touched; one the
    upload could not remove goes when the guard's input ends."""
    conn.open()
    renamed, final = tmp_path / ".app.conf.ssmfab-0123abcd.part", tmp_path / "app.conf"
    left = tmp_path / ".db.conf.ssmfab-4567cdef.part"
    guard = TempGuard(conn.client.get_transport(), 30)
    guard.announce(str(renamed))
    renamed.write_bytes(b"verified")
    renamed.rename(final)
    guard.announce(str(left))
    left.write_bytes(b"partial")
    guard.close()
    wait_until(lambda: not left.exists(), "the file left behind removed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.conf"] and final.read_bytes() == b"verified"


def test_a_guard_that_cannot_open_does_not_fail_the_upload(conn: Connection, tmp_path: Path) -> None:
    conn.open()
    transport = conn.client.get_transport()
    transport.close()  # no channel can open now
    guard = TempGuard(transport, 5)
    guard.announce(str(tmp_path / "x.part"))  # nothing to tell: no error
    guard.close()
