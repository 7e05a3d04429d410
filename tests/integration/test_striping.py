"""Striped uploads: one large file over several SSM sessions at once (each its own tunnel), written in place
into one temporary file, verified as a whole and renamed atomically; sessions that cannot help are let go,
a wrong or refused part is never renamed into place, Ctrl-C leaves nothing, and every session ends."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from ssmfab import transfer
from ssmfab.client import Client
from ssmfab.connection import SSMConnection
from ssmfab.exceptions import ThrottlingError, TransferError
from ssmfab.interrupt import Interrupted
from ssmfab.sandbox import Sandbox
from ssmfab.transfer import stripe

from .conftest import new_active_sessions

SIZE = stripe.STRIPE_MIN_BYTES + 3 * stripe.PIECE_BYTES + 12_345  # pieces, the last one short


def host(sandbox: Sandbox, name: str) -> tuple[str, Path]:
    entry = sandbox.host(name)
    return entry.instance_id, Path(entry.folder) / "home"


def leftovers(folder: Path, name: str) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name == name or ".ssmfab-" in p.name)


def test_a_striped_upload_lands_whole_verified_and_every_session_ends(
    client: Client, sandbox: Sandbox, sandbox_env: dict[str, str], sessions_before: set[str], tmp_path: Path
) -> None:
    instance, home = host(sandbox, "web-1")
    data = os.urandom(SIZE)
    (tmp_path / "big.bin").write_bytes(data)
    (home / "big.bin").write_bytes(b"the old one")
    opened: list[SSMConnection] = []
    with client.connect(instance) as conn:
        make = conn.sibling

        def counted() -> SSMConnection:
            opened.append(make())
            return opened[-1]

        conn.sibling = counted  # type: ignore[method-assign]
        report = transfer.put(conn, str(tmp_path / "big.bin"), "big.bin", streams=4)
    assert len(opened) == 3 and report.streams == 4
    assert (home / "big.bin").read_bytes() == data
    assert report.items[0].sha256 == hashlib.sha256(data).hexdigest() and report.bytes == SIZE
    assert leftovers(home, "") == []
    assert all(not sibling.is_connected for sibling in opened)
    assert not new_active_sessions(sandbox_env, sessions_before)
    (home / "big.bin").unlink()


def test_siblings_that_cannot_open_leave_the_work_to_the_others(
    sandbox: Sandbox, sandbox_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    instance, home = host(sandbox, "web-2")
    data = os.urandom(SIZE)
    (tmp_path / "big.bin").write_bytes(data)
    said: list[str] = []
    client = Client(tunnel="plugin", notify=said.append)

    def refused(self: SSMConnection) -> None:
        raise ThrottlingError(f"{self.label}: StartSession throttled (as after the backoff's last attempt)")

    original_sibling = SSMConnection.sibling

    def throttled_sibling(self: SSMConnection) -> SSMConnection:
        other = original_sibling(self)
        other.open = refused.__get__(other)  # type: ignore[method-assign]
        return other

    monkeypatch.setattr(SSMConnection, "sibling", throttled_sibling)
    with client.connect(instance) as conn:
        report = transfer.put(conn, str(tmp_path / "big.bin"), "alone.bin", streams=3)
    assert (home / "alone.bin").read_bytes() == data and report.items[0].sha256 == hashlib.sha256(data).hexdigest()
    assert sum("striping sessions dropped out" in line and "throttled" in line for line in said) == 2
    (home / "alone.bin").unlink()


def test_a_part_the_host_wrote_wrong_is_never_renamed(
    client: Client, sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    instance, home = host(sandbox, "web-3")
    (tmp_path / "big.bin").write_bytes(os.urandom(SIZE))
    # Every part lands one byte off (as a failing disk or a bad offset would): the whole cannot verify.
    monkeypatch.setattr(stripe, "STREAM_PART", """sh -c 'dd of="$1" bs=1 seek=$(($2 + 1)) conv=notrunc 2>/dev/null' sh""")
    with client.connect(instance) as conn, pytest.raises(TransferError, match="wrong.bin did not verify after upload"):
        transfer.put(conn, str(tmp_path / "big.bin"), "wrong.bin", streams=2)
    assert leftovers(home, "wrong.bin") == []


def test_a_part_the_host_refuses_is_one_line_and_leaves_nothing(
    client: Client, sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    instance, home = host(sandbox, "db-1")
    (tmp_path / "big.bin").write_bytes(os.urandom(SIZE))
    monkeypatch.setattr(stripe, "STREAM_PART", "ulimit -f 4096; " + stripe.STREAM_PART)  # files stop at 4 MiB
    with client.connect(instance) as conn, pytest.raises(TransferError) as caught:
        transfer.put(conn, str(tmp_path / "big.bin"), "full.bin", streams=2)
    assert "the host stopped writing" in str(caught.value) and "\n" not in str(caught.value)
    assert leftovers(home, "full.bin") == []


def test_ctrl_c_during_a_striped_upload_leaves_nothing_and_ends_every_session(
    sandbox: Sandbox, sandbox_env: dict[str, str], sessions_before: set[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    instance, home = host(sandbox, "web-1")
    (tmp_path / "big.bin").write_bytes(os.urandom(SIZE))
    client = Client(tunnel="plugin", notify=lambda message: None)
    cancel = threading.Event()
    sent_once = threading.Event()
    real_send = stripe.send_stream

    def send_then_interrupt(channel: Any, data: Any) -> None:
        real_send(channel, data)
        sent_once.set()
        cancel.set()  # what a fan-out does on Ctrl-C: transfers stop at their next chunk

    monkeypatch.setattr(stripe, "send_stream", send_then_interrupt)
    with client.connect(instance) as conn:
        conn.cancel = cancel
        with pytest.raises(Interrupted):
            transfer.put(conn, str(tmp_path / "big.bin"), "stopped.bin", streams=4)
    assert sent_once.is_set()
    assert leftovers(home, "stopped.bin") == []
    assert not new_active_sessions(sandbox_env, sessions_before)


def test_through_aws_plugin_a_slow_link_stripes_by_default(
    sandbox: Sandbox, sandbox_env: dict[str, str], plugin_path: str, tmp_path: Path
) -> None:
    if not plugin_path:
        pytest.skip("AWS's session-manager-plugin not named (pytest --plugin PATH or SSMFAB_SANDBOX_PLUGIN)")
    instance, home = host(sandbox, "web-2")
    data = os.urandom(SIZE)
    (tmp_path / "big.bin").write_bytes(data)
    client = Client(tunnel="plugin", notify=lambda message: None)
    with client.connect(instance) as conn:
        report = transfer.put(conn, str(tmp_path / "big.bin"), "plugin.bin")
    assert report.streams == stripe.DEFAULT_STREAMS
    assert (home / "plugin.bin").read_bytes() == data
    (home / "plugin.bin").unlink()


def test_progress_is_told_every_byte_striped_or_not(client: Client, sandbox: Sandbox, tmp_path: Path) -> None:
    instance, home = host(sandbox, "db-1")
    (tmp_path / "big.bin").write_bytes(os.urandom(SIZE))
    for streams in (1, 3):
        told: list[int] = []
        lock = threading.Lock()

        def tell(count: int) -> None:
            with lock:
                told.append(count)

        with client.connect(instance) as conn:
            transfer.put(conn, str(tmp_path / "big.bin"), "counted.bin", streams=streams, progress=tell)
        assert sum(told) == SIZE and len(told) > 1
    (home / "counted.bin").unlink()
