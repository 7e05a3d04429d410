"""Striped uploads over real SSH connections: one large file in pieces over several sessions at once (here
sibling connections to the loopback sshd, each with its own tunnel), reassembled in place on the host, verified
whole, renamed only then; a sibling that cannot open is let go and its pieces go to the others."""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import stat
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ssmfab import transfer
from ssmfab.connection import SSMConnection
from ssmfab.exceptions import TransferError
from ssmfab.interrupt import Interrupted
from ssmfab.sandbox.sshd import SSHServer
from ssmfab.transfer import stripe

from ..waiting import wait_until
from .conftest import fabric_connection
from .sshconn import LoopbackTunnels
from .transfer_helpers import HostFolder, conn, host, temporaries, tmpfs  # noqa: F401 - fixtures

LABEL = "i-0123456789abcdef0"
SIZE = stripe.STRIPE_MIN_BYTES + stripe.PIECE_BYTES // 2 + 7  # 9 pieces, the last one short


def big_file(tmp_path: Path) -> bytes:
    """SIZE random bytes at ``tmp_path/big.bin`` (what the striped uploads send), returned."""
    data = os.urandom(SIZE)
    (tmp_path / "big.bin").write_bytes(data)
    return data


def notices_of(conn: SSMConnection) -> list[str]:
    """The list the connection's notices go to from now on."""
    notices: list[str] = []
    conn.notify = notices.append
    return notices


class ShrinkOnce:
    """A progress hook that cuts ``local`` to one piece at the first bytes moved, as another program rewriting
    the file while it is sent would; ``shrunk`` is set from then on."""

    def __init__(self, local: Path) -> None:
        self.local, self.shrunk = local, threading.Event()

    def __call__(self, moved: int) -> None:
        if not self.shrunk.is_set():
            self.shrunk.set()
            os.truncate(self.local, stripe.PIECE_BYTES)


def full_disk_failure(conn: SSMConnection, host: HostFolder, tmp_path: Path, disk: str, streams: int) -> TransferError:
    """What a striped upload of ``big.bin`` into a tmpfs of ``disk`` bytes fails with: the host's own words
    that it stopped writing for lack of space, and nothing left in the folder."""
    big_file(tmp_path)
    with tmpfs(host.path / "full", f"size={disk}") as folder:
        with pytest.raises(TransferError) as failed:
            transfer.put(conn, str(tmp_path / "big.bin"), f"{host.remote}/full/big.bin", streams=streams, compress=False)
        assert list(folder.iterdir()) == []
    message = str(failed.value)
    assert message.startswith(f"{LABEL}: the host stopped writing {host.path / 'full' / 'big.bin'} in the part from byte "), message
    assert "No space left on device" in message and message.endswith(
        "; nothing left half-written; check its free space and limits, then retry"
    ), message
    return failed.value


def opened(connection: SSMConnection) -> int:
    tunnels = connection.tunnels
    assert isinstance(tunnels, LoopbackTunnels)
    return len(tunnels.opened)


def sends_wait_for_the_host_to_quit(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """As over a slow link, where a 2 MiB part takes seconds to send: after each chunk the sender waits until the
    host has closed the channel, so a host that quits early does so while its part is still going out. The list
    returned gets an entry per wait."""
    real_send = stripe.send_stream
    waited: list[bool] = []

    def slow_link(channel: Any, data: bytes) -> None:
        real_send(channel, data)
        wait_until(lambda: bool(channel.closed), "the host's writer quitting and its sshd closing the channel")
        waited.append(True)

    monkeypatch.setattr(stripe, "send_stream", slow_link)
    return waited


def failing_writer(monkeypatch: pytest.MonkeyPatch, script: str, refuses_at_once: bool) -> None:
    """Every part's host writer replaced by ``script``, run once it has read its whole part, or (``refuses_at_once``)
    before it reads a byte, while the sender is still sending."""
    if refuses_at_once:
        sends_wait_for_the_host_to_quit(monkeypatch)
    body = script if refuses_at_once else f"cat > /dev/null; {script}"
    monkeypatch.setattr(stripe, "STREAM_PART", f"sh -c {shlex.quote(body)} part")


@pytest.mark.parametrize("compress", [False, True])
def test_a_large_file_goes_over_several_sessions_and_arrives_whole(
    conn: SSMConnection, host: HostFolder, tmp_path: Path, compress: bool
) -> None:
    data = os.urandom(SIZE // 2) + b"z" * (SIZE - SIZE // 2)  # half of it shrinks
    (tmp_path / "big.bin").write_bytes(data)
    (tmp_path / "big.bin").chmod(0o640)
    notices = notices_of(conn)
    report = transfer.put(conn, str(tmp_path / "big.bin"), f"{host.remote}/big.bin", streams=3, compress=compress)
    assert not [n for n in notices if "striping" in n]  # no session was cut or dropped out on the way
    # Compressed, the random half crosses whole and the rest almost nothing.
    assert SIZE // 2 < report.wire_bytes < SIZE * 3 // 4 if compress else report.wire_bytes == SIZE
    arrived = host.path / "big.bin"
    assert arrived.read_bytes() == data and stat.S_IMODE(arrived.stat().st_mode) == 0o640
    assert report.streams == 3 and opened(conn) == 3 and temporaries(host.path) == []
    assert report.items[0].sha256 == hashlib.sha256(data).hexdigest() and report.bytes == SIZE
    tunnels = conn.tunnels
    assert isinstance(tunnels, LoopbackTunnels)
    # The siblings' connections end with the upload (each is an SSM session of its own); the own one stays open.
    assert [t.closed for t in tunnels.opened] == [False, True, True]
    assert not [t for t in threading.enumerate() if t.name.startswith("ssmfab-stripe-")]


def test_more_sessions_than_pieces_are_not_opened(conn: SSMConnection, host: HostFolder, tmp_path: Path) -> None:
    data = os.urandom(stripe.STRIPE_MIN_BYTES)  # 8 pieces
    (tmp_path / "big.bin").write_bytes(data)
    report = transfer.put(conn, str(tmp_path / "big.bin"), f"{host.remote}/big.bin", streams=20, compress=False)
    assert (host.path / "big.bin").read_bytes() == data and report.streams == 8 and opened(conn) == 8


def test_a_file_under_the_striping_size_uses_one_session(conn: SSMConnection, host: HostFolder, tmp_path: Path) -> None:
    data = os.urandom(stripe.STRIPE_MIN_BYTES - 1)
    (tmp_path / "big.bin").write_bytes(data)
    report = transfer.put(conn, str(tmp_path / "big.bin"), f"{host.remote}/big.bin", streams=4, compress=False)
    assert (host.path / "big.bin").read_bytes() == data and report.streams == 1 and opened(conn) == 1


@pytest.mark.parametrize("times", [1, 10], ids=["at-the-slow-mark", "ten-times-it"])
def test_a_fast_link_is_not_striped_unasked(conn: SSMConnection, host: HostFolder, tmp_path: Path, times: int) -> None:
    big_file(tmp_path)
    conn.open()
    conn.link_rates["put"] = stripe.SLOW_LINK * times  # slow means below the mark
    report = transfer.put(conn, str(tmp_path / "big.bin"), f"{host.remote}/big.bin", compress=False)
    assert report.streams == 1 and opened(conn) == 1


def test_an_unmeasured_link_is_timed_and_the_rate_kept_on_the_connection(
    conn: SSMConnection, host: HostFolder, tmp_path: Path
) -> None:
    data = big_file(tmp_path)
    conn.open()
    assert "put" not in conn.link_rates
    report = transfer.put(conn, str(tmp_path / "big.bin"), f"{host.remote}/big.bin", compress=False)
    # The measured rate decided, and is kept on the connection for the next transfer.
    rate = conn.link_rates["put"]
    striped = stripe.DEFAULT_STREAMS if rate < stripe.SLOW_LINK else 1
    assert (host.path / "big.bin").read_bytes() == data and report.streams == striped and opened(conn) == striped, rate


def test_a_connection_that_cannot_open_siblings_sends_over_its_one_session(
    server: tuple[SSHServer, Path], host: HostFolder, tmp_path: Path
) -> None:
    data = big_file(tmp_path)
    with fabric_connection(server) as plain:  # plain Fabric: no sibling() to open more sessions with
        report = transfer.put(plain, str(tmp_path / "big.bin"), f"{host.remote}/big.bin", streams=3, compress=False)
    assert (host.path / "big.bin").read_bytes() == data and report.streams == 1 and temporaries(host.path) == []


def test_a_slow_link_is_striped_over_the_default_sessions(conn: SSMConnection, host: HostFolder, tmp_path: Path) -> None:
    data = big_file(tmp_path)
    conn.open()
    conn.link_rates["put"] = stripe.SLOW_LINK / 2
    report = transfer.put(conn, str(tmp_path / "big.bin"), f"{host.remote}/big.bin", compress=False)
    assert (host.path / "big.bin").read_bytes() == data
    assert report.streams == stripe.DEFAULT_STREAMS and opened(conn) == stripe.DEFAULT_STREAMS


def test_siblings_that_cannot_open_leave_their_pieces_to_the_others(
    conn: SSMConnection, host: HostFolder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = big_file(tmp_path)
    notices = notices_of(conn)
    real_sibling = SSMConnection.sibling

    def failing_sibling(self: SSMConnection) -> SSMConnection:
        other = real_sibling(self)

        def refuse() -> None:
            raise TransferError(f"{LABEL}: session quota reached", LABEL)

        other.open = refuse  # type: ignore[method-assign]
        return other

    monkeypatch.setattr(SSMConnection, "sibling", failing_sibling)
    report = transfer.put(conn, str(tmp_path / "big.bin"), f"{host.remote}/big.bin", streams=3, compress=False)
    assert (host.path / "big.bin").read_bytes() == data and temporaries(host.path) == []
    assert report.files == 1
    assert [n for n in notices if "striping" in n] == [f"{LABEL}: one of 3 striping sessions dropped out, the others go on ({LABEL}: session quota reached)"] * 2


def test_an_interrupted_striped_upload_leaves_nothing(conn: SSMConnection, host: HostFolder, tmp_path: Path) -> None:
    big_file(tmp_path)
    (host.path / "big.bin").write_bytes(b"previous")
    conn.cancel = threading.Event()
    fired = threading.Event()

    def hook(moved: int) -> None:
        fired.set()
        conn.cancel.set()  # type: ignore[union-attr]

    notices = notices_of(conn)
    with pytest.raises(Interrupted):
        transfer.put(conn, str(tmp_path / "big.bin"), f"{host.remote}/big.bin", streams=3, compress=False, progress=hook)
    assert not [n for n in notices if "striping" in n]  # Ctrl-C stops every session: none "dropped out"
    assert fired.is_set() and temporaries(host.path) == [] and (host.path / "big.bin").read_bytes() == b"previous"
    assert not [t for t in threading.enumerate() if t.name.startswith("ssmfab-stripe-")]  # none outlives the call


def test_siblings_whose_host_takes_its_time_are_never_cut(
    conn: SSMConnection, host: HostFolder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host that is slow to start each piece's writer (here half a second) keeps every session to the end:
    only a sibling without progress for the stall limit is cut."""
    data = big_file(tmp_path)
    notices = notices_of(conn)
    monkeypatch.setattr(stripe, "STREAM_PART", f"sleep 0.5; {stripe.STREAM_PART}")
    movers: set[str] = set()
    report = transfer.put(
        conn, str(tmp_path / "big.bin"), f"{host.remote}/big.bin", streams=3, compress=False,
        progress=lambda moved: movers.add(threading.current_thread().name),
    )  # fmt: skip
    assert (host.path / "big.bin").read_bytes() == data and report.streams == 3 and temporaries(host.path) == []
    assert not [n for n in notices if "striping" in n]
    # Every piece went over the three sessions' threads: none was left over for the calling thread to resend.
    assert movers == {"ssmfab-stripe-0", "ssmfab-stripe-1", "ssmfab-stripe-2"}


@pytest.mark.parametrize("refuses_at_once", [False, True], ids=["after-reading-the-part", "before-reading-it"])
def test_a_host_writer_that_fails_without_a_word_is_named_by_its_exit_status(
    conn: SSMConnection, host: HostFolder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refuses_at_once: bool
) -> None:
    big_file(tmp_path)
    failing_writer(monkeypatch, "exit 4" if refuses_at_once else "exit 3", refuses_at_once)
    with pytest.raises(TransferError) as failed:
        transfer.put(conn, str(tmp_path / "big.bin"), f"{host.remote}/big.bin", streams=2, compress=False)
    message = str(failed.value)
    status = 4 if refuses_at_once else 3
    found = re.search(
        re.escape(f"{LABEL}: the host stopped writing {host.path / 'big.bin'} in the part from byte ")
        + rf"(\d+) \(exit status {status}\); nothing left half-written",
        message,
    )
    assert found is not None and int(found.group(1)) % stripe.PIECE_BYTES == 0 and int(found.group(1)) < SIZE, message
    assert failed.value.host == LABEL and not (host.path / "big.bin").exists()
    wait_until(lambda: temporaries(host.path) == [], "the host's guard removing the temporary file")


def test_a_full_disk_under_a_striped_upload_says_so_and_leaves_nothing(conn: SSMConnection, host: HostFolder, tmp_path: Path) -> None:
    full_disk_failure(conn, host, tmp_path, "4m", streams=3)


def test_a_local_file_that_shrinks_mid_upload_fails_and_leaves_nothing(conn: SSMConnection, host: HostFolder, tmp_path: Path) -> None:
    big_file(tmp_path)
    hook = ShrinkOnce(tmp_path / "big.bin")
    with pytest.raises(TransferError) as failed:
        transfer.put(conn, str(tmp_path / "big.bin"), f"{host.remote}/big.bin", streams=2, compress=False, progress=hook)
    assert failed.value.host == LABEL and str(failed.value) == f"{LABEL}: local file shrank while uploading {host.path / 'big.bin'}; retry"
    assert temporaries(host.path) == [] and not (host.path / "big.bin").exists()


def test_a_large_file_object_goes_over_one_session(conn: SSMConnection, host: HostFolder) -> None:
    import io

    data = os.urandom(SIZE)
    conn.open()
    conn.link_rates["put"] = stripe.SLOW_LINK / 2  # slow: a file on disk would be striped
    report = transfer.put(conn, io.BytesIO(data), f"{host.remote}/obj.bin", streams=3, compress=False)
    assert (host.path / "obj.bin").read_bytes() == data and report.streams == 1 and opened(conn) == 1


def test_striping_multiplies_the_link_rate_the_compression_choice_weighs(conn: SSMConnection, host: HostFolder, tmp_path: Path) -> None:
    from ssmfab.transfer import compress

    from .test_upload_over_ssh import _text

    data = _text(SIZE)
    (tmp_path / "src.txt").write_bytes(data)
    rate, streams = 100e6, 8
    ratio, speed = compress.judge(data[: compress.SAMPLE_BYTES])
    if not rate / streams < compress.WORTH_SPEED * speed < rate * streams:
        pytest.skip(f"this machine compresses at {speed / 1e6:.0f} MB/s: outside the range this test can tell apart")
    conn.open()
    conn.link_rates["put"] = rate  # one session is slower than the compressor, eight together are not
    report = transfer.put(conn, str(tmp_path / "src.txt"), f"{host.remote}/src.txt", streams=streams)
    assert (host.path / "src.txt").read_bytes() == data and report.streams == streams and report.wire_bytes == SIZE


def test_each_striped_piece_is_gzipped_at_the_level_the_link_calls_for(conn: SSMConnection, host: HostFolder, tmp_path: Path) -> None:
    import zlib

    from ssmfab.transfer import compress

    from .test_upload_over_ssh import _text

    data = _text(SIZE)
    (tmp_path / "src.txt").write_bytes(data)

    def pieces_gzipped(level: int) -> int:
        total = 0
        for offset in range(0, SIZE, stripe.PIECE_BYTES):
            packer = zlib.compressobj(level, zlib.DEFLATED, 31)
            total += len(packer.compress(data[offset : offset + stripe.PIECE_BYTES]) + packer.flush())
        return total

    assert pieces_gzipped(compress.TIGHT_LEVEL) < pieces_gzipped(compress.LEVEL)
    conn.open()
    conn.link_rates["put"] = 1000.0  # far slower than any compressor, even with three sessions
    report = transfer.put(conn, str(tmp_path / "src.txt"), f"{host.remote}/src.txt", streams=3)
    assert (host.path / "src.txt").read_bytes() == data and report.streams == 3
    assert report.wire_bytes == pieces_gzipped(compress.TIGHT_LEVEL)


def test_a_host_that_quits_while_a_part_is_still_being_sent_says_why_and_leaves_nothing(
    conn: SSMConnection, host: HostFolder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through AWS's plugin a 2 MiB part takes seconds to send, so a host that cannot write (a full disk) quits
    and closes the channel while the part is still going out: the send fails, and the host's own words are the
    reason."""
    waited = sends_wait_for_the_host_to_quit(monkeypatch)
    failed = full_disk_failure(conn, host, tmp_path, "64k", streams=2)
    message = str(failed)
    assert waited and failed.host == LABEL
    offset = re.search(r" in the part from byte (\d+) \(", message)
    assert offset is not None and int(offset.group(1)) % stripe.PIECE_BYTES == 0 and int(offset.group(1)) < SIZE, message


@pytest.mark.parametrize("lookup_refused", [False, True], ids=["file-seen", "lookup-refused-too"])
def test_a_temporary_file_the_host_refuses_to_remove_after_a_failure_is_named(
    conn: SSMConnection, host: HostFolder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lookup_refused: bool
) -> None:
    import paramiko

    big_file(tmp_path)
    hook = ShrinkOnce(tmp_path / "big.bin")
    real_remove = paramiko.SFTPClient.remove

    def refusing(self: paramiko.SFTPClient, path: str) -> None:
        if ".ssmfab-" in path:
            raise PermissionError(13, "Permission denied")
        real_remove(self, path)

    real_lstat = paramiko.SFTPClient.lstat

    def unseen(self: paramiko.SFTPClient, path: str) -> object:
        if hook.shrunk.is_set() and ".ssmfab-" in path:
            raise PermissionError(13, "Permission denied")  # whether it is there cannot be told: it may remain
        return real_lstat(self, path)

    # A stand-in for a host that refuses the removal (the loopback sshd runs as root, which may remove anything).
    monkeypatch.setattr(paramiko.SFTPClient, "remove", refusing)
    if lookup_refused:
        monkeypatch.setattr(paramiko.SFTPClient, "lstat", unseen)
    with pytest.raises(TransferError) as failed:
        transfer.put(conn, str(tmp_path / "big.bin"), f"{host.remote}/big.bin", streams=2, compress=False, progress=hook)
    message = str(failed.value)
    final = host.path / "big.bin"
    assert failed.value.host == LABEL and re.fullmatch(
        re.escape(f"{LABEL}: local file shrank while uploading {final}; retry; temporary file {host.path}/.big.bin.ssmfab-")
        + r"[0-9a-f]{8}\.part may remain, delete it on the host",
        message,
    ), message
    # The host's guard removes it after all, once the upload has closed its input.
    wait_until(lambda: temporaries(host.path) == [], "the host's guard removing the temporary file")


def test_a_sibling_that_stalls_is_cut_and_its_piece_goes_to_the_transfers_own_session(
    conn: SSMConnection, host: HostFolder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = big_file(tmp_path)
    notices = notices_of(conn)
    conn.stall_timeout = 2.0
    real_send_piece = stripe._send_piece
    stalled: list[Any] = []
    released = threading.Event()

    def send_piece(session: Any, transport: Any, *args: Any) -> int:
        worker = args[5]
        if worker.own or stalled:
            return real_send_piece(session, transport, *args)
        stalled.append(worker)  # a frozen link: nothing moves until the connection is cut
        wait_until(lambda: not transport.is_active(), "the stalled sibling being cut")
        # Its failure is seen once the own session has sent every other piece: the piece is left over.
        wait_until(lambda: not [t for t in threading.enumerate() if t.name == "ssmfab-stripe-0"], "the own session's pieces sent")
        released.set()
        raise EOFError("the stalled session was cut")

    movers: set[str] = set()

    def slow_link(moved: int) -> None:  # the own session keeps moving, slowly (past the stall limit), meanwhile
        movers.add(threading.current_thread().name)
        threading.Event().wait(0.05)

    monkeypatch.setattr(stripe, "_send_piece", send_piece)
    report = transfer.put(conn, str(tmp_path / "big.bin"), f"{host.remote}/big.bin", streams=2, compress=False, progress=slow_link)
    assert (host.path / "big.bin").read_bytes() == data and temporaries(host.path) == [] and report.files == 1
    assert released.is_set() and len(stalled) == 1
    # The left-over piece went over the own session, from the calling thread, after the stripe's threads ended.
    assert movers == {"ssmfab-stripe-0", threading.current_thread().name}
    assert [n for n in notices if "striping" in n] == [
        f"{LABEL}: one of 2 striping sessions dropped out, the others go on (the stalled session was cut)"
    ]


@pytest.mark.parametrize("refuses_at_once", [False, True], ids=["after-reading-the-part", "before-reading-it"])
def test_a_host_writer_that_says_too_much_is_quoted_to_its_first_4_kib(
    conn: SSMConnection, host: HostFolder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refuses_at_once: bool
) -> None:
    big_file(tmp_path)
    failing_writer(monkeypatch, "yes x | head -c 100000 >&2; exit 1", refuses_at_once)  # 100 kB of "x" lines
    with pytest.raises(TransferError) as failed:
        transfer.put(conn, str(tmp_path / "big.bin"), f"{host.remote}/big.bin", streams=2, compress=False)
    reason = re.search(r" in the part from byte \d+ \((.*)\); nothing left half-written", str(failed.value))
    # The first 4 KiB of what it said ("x\n" 2048 times), made one line; the rest is not read.
    assert reason is not None and reason.group(1) == " ".join(["x"] * 2048), str(failed.value)[:300]


def test_a_left_over_piece_failing_over_the_own_session_fails_the_upload_with_that_reason(
    conn: SSMConnection, host: HostFolder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    big_file(tmp_path)
    real_send_piece = stripe._send_piece

    def send_piece(*args: Any) -> int:
        name = threading.current_thread().name
        if name == "ssmfab-stripe-1":  # the sibling fails once the own session has sent every other piece
            wait_until(lambda: not [t for t in threading.enumerate() if t.name == "ssmfab-stripe-0"], "the own session's pieces sent")
            raise EOFError("the sibling's session was cut")
        if not name.startswith("ssmfab-stripe-"):  # the left-over piece, resent from the calling thread
            raise TransferError(f"{LABEL}: the host stopped writing the left-over piece", LABEL)
        return real_send_piece(*args)

    monkeypatch.setattr(stripe, "_send_piece", send_piece)
    with pytest.raises(TransferError) as failed:
        transfer.put(conn, str(tmp_path / "big.bin"), f"{host.remote}/big.bin", streams=2, compress=False)
    assert str(failed.value).startswith(f"{LABEL}: the host stopped writing the left-over piece"), str(failed.value)
    assert not (host.path / "big.bin").exists()
    wait_until(lambda: temporaries(host.path) == [], "the host's guard removing the temporary file")


def test_the_transfers_own_session_failing_fails_the_upload_without_a_drop_out_notice(
    conn: SSMConnection, host: HostFolder, tmp_path: Path
) -> None:
    big_file(tmp_path)
    notices = notices_of(conn)
    conn.open()
    tunnel = conn.tunnel
    assert tunnel is not None
    cut = threading.Event()

    def hook(moved: int) -> None:
        if not cut.is_set() and threading.current_thread().name == "ssmfab-stripe-0":
            cut.set()
            tunnel.close()

    with pytest.raises(TransferError) as failed:
        transfer.put(conn, str(tmp_path / "big.bin"), f"{host.remote}/big.bin", streams=2, compress=False, progress=hook)
    assert cut.is_set() and failed.value.host == LABEL
    assert str(failed.value).startswith(f"{LABEL}: upload to {host.remote}/big.bin failed, nothing left half-written"), str(failed.value)
    assert not [n for n in notices if "striping" in n]
    assert temporaries(host.path) == [] or all(".ssmfab-" in name for name in temporaries(host.path))


def test_what_a_host_says_that_is_not_utf8_still_makes_one_readable_line() -> None:
    from types import SimpleNamespace

    session: Any = SimpleNamespace(host=LABEL)
    error = stripe._stopped(session, "/srv/caf\xe9", 4194304, b"cannot write caf\xe9: disk full\n", 1)
    assert error.host == LABEL and str(error) == (
        f"{LABEL}: the host stopped writing /srv/caf\xe9 in the part from byte 4194304 (cannot write caf\ufffd: disk full); "
        "nothing left half-written; check its free space and limits, then retry"
    )
    silent = stripe._stopped(session, "/srv/f", 0, b"", 137)
    assert "(exit status 137)" in str(silent)


def test_the_connections_streams_setting_holds_when_the_call_names_none(conn: SSMConnection, host: HostFolder, tmp_path: Path) -> None:
    data = big_file(tmp_path)
    conn.transfer_streams = 3  # transfer.streams, as a Client hands it to its connections
    report = transfer.put(conn, str(tmp_path / "big.bin"), f"{host.remote}/big.bin", compress=False)
    assert (host.path / "big.bin").read_bytes() == data and report.streams == 3 and opened(conn) == 3
    report = transfer.put(conn, str(tmp_path / "big.bin"), f"{host.remote}/again.bin", streams=2, compress=False)
    assert report.streams == 2  # the call's own number wins


def test_one_stream_asked_for_is_one_session(conn: SSMConnection, host: HostFolder, tmp_path: Path) -> None:
    data = big_file(tmp_path)
    report = transfer.put(conn, str(tmp_path / "big.bin"), f"{host.remote}/big.bin", streams=1, compress=False)
    assert (host.path / "big.bin").read_bytes() == data and report.streams == 1 and opened(conn) == 1


def test_a_local_read_failing_mid_stripe_fails_the_upload_as_this_machines_without_a_drop_out_notice(
    conn: SSMConnection, host: HostFolder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A dying disk under the file: every session would meet it, so none is "dropped" and the others do not go on.
    import errno

    big_file(tmp_path)
    conn.open()  # its own notice (a host key pinned) said before
    notices = notices_of(conn)
    real_pread, bad = os.pread, set()

    def dying_pread(fd: int, size: int, offset: int) -> bytes:
        # The first piece a sibling reads lies on a bad block, and stays bad for whoever reads it next; the
        # transfer's own session reads slowly, so that the siblings get pieces at all.
        if threading.current_thread().name == "ssmfab-stripe-0":
            time.sleep(0.05)
        elif not bad:
            bad.add(offset - offset % stripe.PIECE_BYTES)
        if offset - offset % stripe.PIECE_BYTES in bad:
            raise OSError(errno.EIO, "Input/output error")
        return real_pread(fd, size, offset)

    monkeypatch.setattr(os, "pread", dying_pread)
    with pytest.raises(TransferError) as failed:
        transfer.put(conn, str(tmp_path / "big.bin"), f"{host.remote}/big.bin", streams=3, compress=False)
    assert str(failed.value) == (
        f"{LABEL}: upload to {host.remote}/big.bin failed, nothing left half-written (reading {tmp_path / 'big.bin'} on "
        "this machine: Input/output error); check this machine's disk or mount, then retry"
    )
    assert bad and notices == [] and not (host.path / "big.bin").exists()
    wait_until(lambda: temporaries(host.path) == [], "the temporary file removed")
