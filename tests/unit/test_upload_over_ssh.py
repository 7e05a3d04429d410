"""put over a real SSH connection (ssmfab's own connection to a loopback sshd, in this process): files arrive
byte for byte with their mode, verified, renamed into place only then; failures are one line naming the host
and the path, and leave no temporary file."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import re
import shlex
import signal
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
from ssmfab.transfer import session as transfer_session

from .conftest import fed_pipe
from .sshconn import LoopbackTunnels
from .transfer_helpers import HostFolder, conn, host, temporaries, tmpfs  # noqa: F401 - fixtures

SMALL = 300_000  # under STREAM_MIN_BYTES: pipelined SFTP writes, then one checksum command
BIG = 5 * 1024 * 1024  # at least STREAM_MIN_BYTES: one exec channel, hashed by the host as it writes
LABEL = "i-0123456789abcdef0"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("size", [0, SMALL, BIG])
def test_a_file_arrives_byte_for_byte_with_its_mode(conn: SSMConnection, host: HostFolder, tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    local = tmp_path / "data.bin"
    local.write_bytes(data)
    local.chmod(0o640)
    report = transfer.put(conn, str(local), f"{host.remote}/copy.bin")
    arrived = host.path / "copy.bin"
    assert arrived.read_bytes() == data and mode_of(arrived) == 0o640
    assert temporaries(host.path) == []
    assert report.host == LABEL and report.files == 1 and report.bytes == size and report.errors == []
    (item,) = report.items
    assert item == transfer.FileTransfer(str(local), str(arrived), size, sha(data), 0o640)
    assert report.source == str(local) and report.destination == str(arrived) and report.paths == [str(arrived)]
    assert report.wire_bytes == size and report.streams == 1


@pytest.mark.parametrize("remote", ["{dir}/", "{dir}"])
def test_into_an_existing_folder_or_one_named_with_a_slash_keeps_the_name(
    conn: SSMConnection, host: HostFolder, tmp_path: Path, remote: str
) -> None:
    (tmp_path / "notes.txt").write_text("hello\n")
    report = transfer.put(conn, str(tmp_path / "notes.txt"), remote.format(dir=host.remote))
    assert (host.path / "notes.txt").read_text() == "hello\n"
    assert report.destination == str(host.path / "notes.txt")


def test_a_trailing_slash_creates_the_missing_folders(conn: SSMConnection, host: HostFolder, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello\n")
    transfer.put(conn, str(tmp_path / "notes.txt"), f"{host.remote}/a/b/")
    assert (host.path / "a" / "b" / "notes.txt").read_text() == "hello\n"


def test_a_missing_parent_is_created_for_a_file_name(conn: SSMConnection, host: HostFolder, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello\n")
    transfer.put(conn, str(tmp_path / "notes.txt"), f"{host.remote}/a/b/renamed.txt")
    assert (host.path / "a" / "b" / "renamed.txt").read_text() == "hello\n"
    assert not (host.path / "a" / "b" / "renamed.txt").is_dir()


def test_an_absolute_and_a_home_relative_destination(conn: SSMConnection, host: HostFolder, tmp_path: Path) -> None:
    (tmp_path / "one.txt").write_text("1")
    transfer.put(conn, str(tmp_path / "one.txt"), str(host.path / "abs.txt"))
    transfer.put(conn, str(tmp_path / "one.txt"), f"~/{host.remote}/tilde.txt")
    assert (host.path / "abs.txt").read_text() == "1" and (host.path / "tilde.txt").read_text() == "1"


def test_an_existing_file_is_replaced_whole(conn: SSMConnection, host: HostFolder, tmp_path: Path) -> None:
    (host.path / "f.txt").write_text("old content that is longer\n")
    (tmp_path / "f.txt").write_text("new\n")
    transfer.put(conn, str(tmp_path / "f.txt"), f"{host.remote}/f.txt")
    assert (host.path / "f.txt").read_text() == "new\n"


def test_without_preserve_mode_the_file_gets_the_hosts_default_mode(conn: SSMConnection, host: HostFolder, tmp_path: Path) -> None:
    local = tmp_path / "script.sh"
    local.write_text("#!/bin/sh\n")
    local.chmod(0o700)
    report = transfer.put(conn, str(local), f"{host.remote}/script.sh", preserve_mode=False)
    with conn.sftp().open(f"{host.remote}/probe", "w"):  # what the host gives a new file (sftp-server's umask)
        pass
    expected = mode_of(host.path / "probe")
    assert expected != 0o700
    assert mode_of(host.path / "script.sh") == expected and report.items[0].mode == expected


def test_a_tree_arrives_with_empty_folders_and_every_mode(conn: SSMConnection, host: HostFolder, tmp_path: Path) -> None:
    top = tmp_path / "site"
    (top / "static" / "css").mkdir(parents=True)
    (top / "empty").mkdir()
    (top / "locked").mkdir()
    (top / "index.html").write_bytes(b"<html>")
    (top / "static" / "css" / "a.css").write_bytes(os.urandom(1000))
    (top / "locked" / "secret").write_bytes(b"s")
    (top / "static" / "run.sh").write_bytes(b"#!/bin/sh\n")
    (top / "static" / "run.sh").chmod(0o750)
    (top / "locked" / "secret").chmod(0o400)
    (top / "empty").chmod(0o700)
    (top / "static").chmod(0o751)
    (top / "locked").chmod(0o555)  # no write for its owner: it still receives its file (modes are set last)
    top.chmod(0o711)
    report = transfer.put(conn, str(top), host.remote + "/", recursive=True)
    landed = host.path / "site"
    files = {p.relative_to(top): p for p in top.rglob("*")}
    for rel, path in files.items():
        there = landed / rel
        assert mode_of(there) == mode_of(path), rel
        assert path.is_dir() == there.is_dir(), rel
        if path.is_file():
            assert there.read_bytes() == path.read_bytes(), rel
    assert mode_of(landed) == 0o711
    assert sorted(p.relative_to(landed) for p in landed.rglob("*")) == sorted(files)
    assert report.destination == str(landed) and report.source == str(top)
    assert report.directories == [str(landed)] + [str(landed / rel) for rel in ("empty", "locked", "static", "static/css")]
    assert sorted(report.paths) == sorted(str(landed / rel) for rel, p in files.items() if p.is_file())
    assert report.files == 4 and report.bytes == 6 + 1000 + 1 + 10


def test_a_tree_into_an_existing_tree_fills_it(conn: SSMConnection, host: HostFolder, tmp_path: Path) -> None:
    top = tmp_path / "site"
    (top / "sub" / "deeper").mkdir(parents=True)
    (top / "sub" / "deeper" / "f").write_text("f")
    (host.path / "site" / "sub").mkdir(parents=True)
    (host.path / "site" / "sub" / "kept").write_text("kept")
    report = transfer.put(conn, str(top), host.remote, recursive=True)
    assert (host.path / "site" / "sub" / "deeper" / "f").read_text() == "f"
    assert (host.path / "site" / "sub" / "kept").read_text() == "kept"
    assert report.files == 1


def test_a_folder_without_recursive_is_refused_before_anything_moves(conn: SSMConnection, host: HostFolder, tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    with pytest.raises(TransferError) as failed:
        transfer.put(conn, str(tmp_path / "d"), host.remote)
    assert failed.value.host == LABEL and str(failed.value) == f"{LABEL}: {tmp_path / 'd'} is a directory; pass recursive=True to upload the whole tree"
    assert list(host.path.iterdir()) == []


def test_a_missing_local_file_is_named(conn: SSMConnection, host: HostFolder, tmp_path: Path) -> None:
    with pytest.raises(TransferError) as failed:
        transfer.put(conn, str(tmp_path / "nope"), host.remote)
    assert failed.value.host == LABEL and str(failed.value) == f"{LABEL}: {tmp_path / 'nope'}: no such local file or directory; check the path"


def test_a_local_source_that_cannot_be_read_is_named_with_the_reason(
    conn: SSMConnection, host: HostFolder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "loop").symlink_to("loop")
    (tmp_path / "plain").write_text("p")
    secret = tmp_path / "secret"
    secret.write_text("s")
    expected = {
        tmp_path / "loop": f"{LABEL}: cannot read {tmp_path / 'loop'}: Too many levels of symbolic links; check the path",
        tmp_path / "plain" / "x": f"{LABEL}: cannot read {tmp_path / 'plain' / 'x'}: Not a directory; check the path",
        secret: f"{LABEL}: cannot read {secret}: permission denied; check its permissions",
        tmp_path / "closed" / "f": f"{LABEL}: cannot read {tmp_path / 'closed' / 'f'}: Permission denied; check its permissions",
    }
    real_access, real_stat = os.access, Path.stat

    def searched_stat(path: Path, **kwargs: Any) -> os.stat_result:
        if path == tmp_path / "closed" / "f":
            raise PermissionError(13, "Permission denied")  # a folder this user may not search
        return real_stat(path, **kwargs)

    # Stand-ins for a file this user may not read and a folder it may not search: these tests run as root.
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False if Path(path) == secret else real_access(path, mode, **kw))
    monkeypatch.setattr(Path, "stat", searched_stat)
    for source, message in expected.items():
        with pytest.raises(TransferError) as failed:
            transfer.put(conn, str(source), f"{host.remote}/copy")
        assert failed.value.host == LABEL and str(failed.value) == message
    assert list(host.path.iterdir()) == []


def test_a_fifo_is_no_source(conn: SSMConnection, host: HostFolder, tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(TransferError) as failed:
        transfer.put(conn, str(tmp_path / "pipe"), f"{host.remote}/copy")
    assert failed.value.host == LABEL and str(failed.value) == (
        f"{LABEL}: {tmp_path / 'pipe'} is not a regular file or directory; name a file or folder"
    )


def test_a_folder_or_file_in_a_tree_that_cannot_be_read_is_named_and_the_rest_arrives(
    conn: SSMConnection, host: HostFolder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    top = tmp_path / "tree"
    (top / "closed").mkdir(parents=True)
    (top / "closed" / "inside").write_text("i")
    (top / "secret").write_text("s")
    (top / "open").write_text("o")
    real_scandir, real_access = os.scandir, os.access

    def scandir(*args: Any) -> Any:
        if args and isinstance(args[0], (str, os.PathLike)) and Path(args[0]) == top / "closed":
            raise PermissionError(13, "Permission denied")
        return real_scandir(*args)

    # Stand-ins for a folder and a file this user may not read: these tests run as root, which reads anything.
    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False if Path(path) == top / "secret" else real_access(path, mode, **kw))
    with pytest.raises(TransferError) as failed:
        transfer.put(conn, str(top), host.remote + "/", recursive=True)
    assert failed.value.report.errors == [  # type: ignore[attr-defined]
        f"{LABEL}: skipping folder {top / 'closed'}: Permission denied; check its permissions",
        f"{LABEL}: skipping {top / 'secret'}: permission denied; check its permissions",
    ]
    assert sorted(str(p.relative_to(host.path)) for p in host.path.rglob("*")) == ["tree", "tree/closed", "tree/open"]


def test_a_file_in_the_way_of_a_folder_is_named(conn: SSMConnection, host: HostFolder, tmp_path: Path) -> None:
    (host.path / "plain").write_text("x")
    (tmp_path / "f").write_text("f")
    with pytest.raises(TransferError) as failed:
        transfer.put(conn, str(tmp_path / "f"), f"{host.remote}/plain/sub/f")
    assert failed.value.host == LABEL and str(failed.value) == (
        f"{LABEL}: {host.path / 'plain'} exists on the host and is not a directory; remove it or choose another destination"
    )
    assert (host.path / "plain").read_text() == "x" and temporaries(host.path) == []


def test_a_folder_where_a_file_of_the_tree_goes_is_reported_and_the_rest_arrives(
    conn: SSMConnection, host: HostFolder, tmp_path: Path
) -> None:
    top = tmp_path / "t"
    top.mkdir()
    (top / "a").write_text("a")
    (top / "b").write_text("b")
    (host.path / "t" / "a").mkdir(parents=True)
    (host.path / "t" / "a" / "inside").write_text("kept")
    with pytest.raises(TransferError) as failed:
        transfer.put(conn, str(top), host.remote, recursive=True)
    target = host.path / "t" / "a"
    assert failed.value.host == LABEL and str(failed.value) == f"{LABEL}: {target} is a directory on the host; remove it or choose another destination"
    assert (target / "inside").read_text() == "kept" and (host.path / "t" / "b").read_text() == "b"
    assert failed.value.report.paths == [str(host.path / "t" / "b")]  # type: ignore[attr-defined]
    assert temporaries(host.path) == []


def test_a_file_like_object_arrives_whole_and_keeps_its_position(conn: SSMConnection, host: HostFolder) -> None:
    data = os.urandom(SMALL)
    source = io.BytesIO(data)
    source.seek(1234)
    report = transfer.put(conn, source, f"{host.remote}/obj.bin")
    assert (host.path / "obj.bin").read_bytes() == data and source.tell() == 1234
    assert mode_of(host.path / "obj.bin") == 0o644  # no mode to keep: the host's default
    assert report.items[0].source == report.source == "<BytesIO .>" and report.items[0].sha256 == sha(data)


def test_a_named_file_object_goes_into_a_folder_under_its_name(conn: SSMConnection, host: HostFolder, tmp_path: Path) -> None:
    (tmp_path / "named.txt").write_bytes(b"named")
    with (tmp_path / "named.txt").open("rb") as source:
        report = transfer.put(conn, source, host.remote + "/")
    assert (host.path / "named.txt").read_bytes() == b"named"
    assert report.items[0].source == f"<BufferedReader {tmp_path / 'named.txt'}>".replace(str(tmp_path) + "/", "")


def test_a_nameless_file_object_into_a_folder_is_refused(conn: SSMConnection, host: HostFolder) -> None:
    with pytest.raises(TransferError) as failed:
        transfer.put(conn, io.BytesIO(b"x"), host.remote)
    assert failed.value.host == LABEL and str(failed.value) == (
        f"{LABEL}: {host.remote} is a directory and the file-like object has no name; give the remote file's path"
    )
    assert list(host.path.iterdir()) == []


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (io.StringIO("text"), "the file-like object to upload is in text mode; open it in binary mode ('rb')"),
        (12345, "cannot upload a int: give a path or a binary file-like object"),
    ],
)
def test_an_unusable_source_is_refused_in_one_line(conn: SSMConnection, host: HostFolder, given: object, message: str) -> None:
    with pytest.raises(TransferError) as failed:
        transfer.put(conn, given, f"{host.remote}/x")  # type: ignore[arg-type]
    assert failed.value.host == LABEL and str(failed.value) == f"{LABEL}: {message}"


def _sum_command_that_changes() -> str:
    """The host's checksum command, after appending a byte to each file it is asked about: a file that changed
    on the host between the copy and the check (a failing disk, another writer)."""
    script = 'for f; do printf x >> "$f"; done; exec sha256sum -- "$@"'
    return f"xargs -0 sh -c {shlex.quote(script)} sh"


def test_a_file_the_host_holds_differently_is_never_renamed_into_place(
    conn: SSMConnection, host: HostFolder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "f.bin").write_bytes(os.urandom(SMALL))
    (host.path / "f.bin").write_bytes(b"previous")
    monkeypatch.setattr(transfer_session, "SUM_COMMAND", _sum_command_that_changes())
    with pytest.raises(TransferError) as failed:
        transfer.put(conn, str(tmp_path / "f.bin"), f"{host.remote}/f.bin")
    assert failed.value.host == LABEL and str(failed.value) == f"{LABEL}: {host.path / 'f.bin'} did not verify after upload (checksums differ); left unchanged, retry"
    assert (host.path / "f.bin").read_bytes() == b"previous" and temporaries(host.path) == []
    assert failed.value.report.files == 0  # type: ignore[attr-defined]


def test_a_file_the_host_cannot_read_back_is_never_renamed_into_place(
    conn: SSMConnection, host: HostFolder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("a", "b"):
        (tmp_path / name).write_bytes(b"data " + name.encode())
    monkeypatch.setattr(transfer_session, "SUM_COMMAND", "xargs -0 rm -f; echo gone missing >&2")
    with pytest.raises(TransferError) as failed:
        transfer.put(conn, str(tmp_path), host.remote, recursive=True)
    top = host.path / tmp_path.name
    assert failed.value.host == LABEL and str(failed.value) == (
        f"{LABEL}: {top / 'a'} did not verify after upload (the host could not read it back (gone missing)); "
        "left unchanged, retry (1 more problem; 0 files arrived)"
    )
    assert failed.value.report.errors[1].startswith(f"{LABEL}: {top / 'b'} did not verify")  # type: ignore[attr-defined]
    assert sorted(p.name for p in top.iterdir()) == []


@pytest.mark.parametrize(
    ("says", "shown"),
    [
        ("printf 'start %0400d end' 0 >&2; exit 1", "0" * 296 + " end"),  # long: its last 300 characters
        ("echo 'sh: 1: helper: not found' >&2; exit 127", "sh: 1: helper: not found"),  # 127, another cause
        ("printf 'caf\\351: Input/output error' >&2; exit 1", "caf\ufffd: Input/output error"),  # a Latin-1 locale
    ],
    ids=["long", "status-127-other-words", "not-utf8"],
)
def test_what_the_checksum_command_says_when_it_fails_is_the_reason(
    conn: SSMConnection, host: HostFolder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, says: str, shown: str
) -> None:
    (tmp_path / "f").write_bytes(b"f")
    monkeypatch.setattr(transfer_session, "SUM_COMMAND", f"cat > /dev/null; {says}")
    with pytest.raises(TransferError) as failed:
        transfer.put(conn, str(tmp_path / "f"), f"{host.remote}/f")
    assert failed.value.host == LABEL and str(failed.value) == (
        f"{LABEL}: {host.path / 'f'} did not verify after upload (the host could not read it back ({shown})); left unchanged, retry"
    )
    assert list(host.path.iterdir()) == []


@pytest.mark.parametrize(
    ("writer", "said"),
    [
        ("cat > /dev/null; exit 3", "exit status 3"),
        ("cat > /dev/null; printf 'caf\\351: full' >&2; exit 1", "caf\ufffd: full"),
        ("cat > /dev/null; yes x | head -c 100000 >&2; exit 1", " ".join(["x"] * 2048)),  # its first 4 KiB
        ("cat > /dev/null; exit 0", None),  # took everything, said nothing, wrote nothing
    ],
    ids=["silent", "not-utf8", "says-too-much", "no-answer"],
)
def test_a_streamed_upload_whose_host_writer_fails_says_what_it_said(
    conn: SSMConnection, host: HostFolder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, writer: str, said: str | None
) -> None:
    from ssmfab.transfer import upload

    (tmp_path / "f").write_bytes(os.urandom(BIG))
    monkeypatch.setattr(upload, "STREAM_PUT", f"sh -c {shlex.quote(writer)} put")
    with pytest.raises(TransferError) as failed:
        transfer.put(conn, str(tmp_path / "f"), f"{host.remote}/f", compress=False)
    final = host.path / "f"
    expected = (
        f"{LABEL}: {final} did not verify after upload (the host could not read it back); left unchanged, retry"
        if said is None
        else f"{LABEL}: the host stopped writing {final} after {BIG} bytes sent ({said}); "
        "nothing left half-written; check its free space and limits, then retry"
    )
    assert failed.value.host == LABEL and str(failed.value) == expected, str(failed.value)[:300]
    assert list(host.path.iterdir()) == []


def test_a_host_without_a_checksum_tool_is_told_to_install_one(
    conn: SSMConnection, host: HostFolder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "f").write_bytes(b"f")
    monkeypatch.setattr(transfer_session, "SUM_COMMAND", "echo 'neither sha256sum nor shasum found' >&2; exit 127")
    with pytest.raises(TransferError) as failed:
        transfer.put(conn, str(tmp_path / "f"), f"{host.remote}/f")
    assert failed.value.host == LABEL and str(failed.value) == (
        f"{LABEL}: cannot verify the transfer: neither sha256sum nor shasum is installed on the host; "
        "install coreutils (or perl's shasum)"
    )
    assert list(host.path.iterdir()) == []


@pytest.mark.parametrize("size", [SMALL, BIG])
def test_a_full_disk_says_so_and_leaves_nothing(conn: SSMConnection, host: HostFolder, tmp_path: Path, size: int) -> None:
    (tmp_path / "f.bin").write_bytes(os.urandom(size))
    with tmpfs(host.path / "full", "size=64k") as folder:
        with pytest.raises(TransferError) as failed:
            transfer.put(conn, str(tmp_path / "f.bin"), f"{host.remote}/full/f.bin", compress=False)
        assert list(folder.iterdir()) == []
    message = str(failed.value)
    assert message.startswith(f"{LABEL}: ") and "No space left on device" in message and "\n" not in message, message
    assert "checksums differ" not in message


def test_a_read_only_folder_says_files_cannot_be_created_there(conn: SSMConnection, host: HostFolder, tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"f")
    with tmpfs(host.path / "ro", "ro,size=64k") as folder:
        with pytest.raises(TransferError) as failed:
            transfer.put(conn, str(tmp_path / "f"), f"{host.remote}/ro/f")
        with pytest.raises(TransferError) as no_dir:
            transfer.put(conn, str(tmp_path / "f"), f"{host.remote}/ro/sub/f")
    assert failed.value.host == LABEL and str(failed.value) == (
        f"{LABEL}: cannot create files in {folder} on the host (Failure); check its permissions and free space"
    )
    assert failed.value.host == LABEL and no_dir.value.host == LABEL and str(no_dir.value) == (
        f"{LABEL}: cannot create directory {folder / 'sub'} on the host (Failure); check the permissions of its parent"
    )


def test_stale_temporary_files_of_earlier_runs_are_removed_and_live_ones_kept(
    conn: SSMConnection, host: HostFolder, tmp_path: Path
) -> None:
    (tmp_path / "big.bin").write_bytes(os.urandom(BIG))
    old = time.time() - transfer.STALE_TEMP_SECONDS - 60
    stale, live, other, folder_like = (
        host.path / ".big.bin.ssmfab-0123abcd.part", host.path / ".big.bin.ssmfab-89abcdef.part",
        host.path / ".other.bin.ssmfab-0123abcd.part", host.path / ".big.bin.ssmfab-00000000.part",
    )  # fmt: skip
    for path in (stale, live, other):
        path.write_bytes(b"left by a killed run")
    folder_like.mkdir()
    for path in (stale, other, folder_like):
        os.utime(path, (old, old))
    transfer.put(conn, str(tmp_path / "big.bin"), f"{host.remote}/big.bin")
    assert sorted(p.name for p in host.path.iterdir()) == sorted(["big.bin", live.name, other.name, folder_like.name])


class CutAfter:
    """A progress hook that acts once ``limit`` bytes have moved (from the transfer's own thread)."""

    def __init__(self, limit: int, act: object) -> None:
        self.limit, self.act, self.moved, self.fired = limit, act, 0, threading.Event()

    def __call__(self, moved: int) -> None:
        self.moved += moved
        if self.moved >= self.limit and not self.fired.is_set():
            self.fired.set()
            self.act()  # type: ignore[operator]


@pytest.mark.parametrize("size", [SMALL * 4, BIG])
def test_an_interrupted_upload_removes_its_temporary_file(conn: SSMConnection, host: HostFolder, tmp_path: Path, size: int) -> None:
    (tmp_path / "f.bin").write_bytes(os.urandom(size))
    (host.path / "f.bin").write_bytes(b"previous")
    conn.cancel = threading.Event()
    hook = CutAfter(1, conn.cancel.set)
    with pytest.raises(Interrupted):
        transfer.put(conn, str(tmp_path / "f.bin"), f"{host.remote}/f.bin", progress=hook, compress=False)
    assert hook.fired.is_set() and temporaries(host.path) == [] and (host.path / "f.bin").read_bytes() == b"previous"


@pytest.mark.parametrize("size", [SMALL * 4, BIG])
def test_a_connection_lost_mid_upload_is_one_line_naming_what_may_remain(
    conn: SSMConnection, host: HostFolder, tmp_path: Path, size: int
) -> None:
    (tmp_path / "f.bin").write_bytes(os.urandom(size))
    conn.open()
    tunnel = conn.tunnel
    assert tunnel is not None
    hook = CutAfter(1, tunnel.close)
    with pytest.raises(TransferError) as failed:
        transfer.put(conn, str(tmp_path / "f.bin"), f"{host.remote}/f.bin", progress=hook, compress=False)
    message = str(failed.value)
    assert message.startswith(f"{LABEL}: upload to {host.remote}/f.bin failed, nothing left half-written; temporary file "), message
    assert "(SSH through the SSM tunnel failed: " in message and message.endswith("; check the connection, then retry")
    assert "\n" not in message
    left = message.split("temporary file ", 1)[1].split(" may remain", 1)[0]
    assert left.startswith(str(host.path / ".f.bin.ssmfab-")) and left.endswith(".part")
    assert not (host.path / "f.bin").exists()
    if size >= transfer.STREAM_MIN_BYTES:
        # Streamed with its size: the host's end sees its input end short of it and drops the file itself (the
        # client, its connection gone, cannot).
        deadline = time.monotonic() + 60
        while (host.path / left.rsplit("/", 1)[1]).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert temporaries(host.path) == []


def test_compressible_data_is_compressed_on_a_slow_link_or_when_forced(conn: SSMConnection, host: HostFolder, tmp_path: Path) -> None:
    data = b"a line of source code, much like the one before it\n" * (BIG // 50)
    (tmp_path / "src.txt").write_bytes(data)
    conn.open()
    conn.link_rates["put"] = 1000.0  # measured slow
    slow = transfer.put(conn, str(tmp_path / "src.txt"), f"{host.remote}/slow.txt")
    conn.link_rates["put"] = 1e15  # faster than any compressor
    fast = transfer.put(conn, str(tmp_path / "src.txt"), f"{host.remote}/fast.txt")
    forced = transfer.put(conn, str(tmp_path / "src.txt"), f"{host.remote}/forced.txt", compress=True)
    off = transfer.put(conn, str(tmp_path / "src.txt"), f"{host.remote}/off.txt", compress=False)
    for name in ("slow", "fast", "forced", "off"):
        assert (host.path / f"{name}.txt").read_bytes() == data, name
    assert slow.wire_bytes < len(data) // 10 and forced.wire_bytes < len(data) // 10
    assert fast.wire_bytes == len(data) == off.wire_bytes
    assert slow.items[0].sha256 == hashlib.sha256(data).hexdigest() == forced.items[0].sha256


def test_data_that_does_not_shrink_is_sent_raw_without_timing_the_link(conn: SSMConnection, host: HostFolder, tmp_path: Path) -> None:
    data = os.urandom(BIG)
    (tmp_path / "r.bin").write_bytes(data)
    conn.open()
    report = transfer.put(conn, str(tmp_path / "r.bin"), f"{host.remote}/r.bin")
    assert (host.path / "r.bin").read_bytes() == data and report.wire_bytes == BIG
    assert "put" not in conn.link_rates
    text = b"shrinks " * (BIG // 8)
    (tmp_path / "t.txt").write_bytes(text)
    transfer.put(conn, str(tmp_path / "t.txt"), f"{host.remote}/t.txt")
    assert (host.path / "t.txt").read_bytes() == text and conn.link_rates["put"] > 0  # timed once, remembered


def test_a_file_object_that_cannot_seek_is_streamed_whole(conn: SSMConnection, host: HostFolder) -> None:
    data = os.urandom(SMALL)
    with fed_pipe(data) as source:
        report = transfer.put(conn, source, f"{host.remote}/piped.bin")
    assert (host.path / "piped.bin").read_bytes() == data and report.bytes == SMALL


def test_a_failure_that_is_not_an_error_passes_through_as_it_is(conn: SSMConnection) -> None:
    from ssmfab.transfer.outcome import failure

    stop = KeyboardInterrupt()
    assert failure(conn, None, stop, "upload to x", transfer.StallWatch(conn), ["t"]) is stop


def test_a_stalled_transfer_says_where_it_stood_and_what_may_remain(conn: SSMConnection) -> None:
    from ssmfab.transfer.outcome import failure

    watch = transfer.StallWatch(conn)
    watch.stalled, watch.current = True, "/srv/a\nb"
    error = failure(conn, None, OSError("Socket is closed"), "upload to /srv", watch, ["/srv/.a.part", "/srv/.b.part"])
    assert str(error) == (
        f"{LABEL}: upload to /srv (at '/srv/a\\nb') stalled: no progress for 60s (ssh.stall_timeout); nothing left "
        "half-written; temporary files /srv/.a.part and others may remain, delete them once the host is reachable; "
        "check the host and its tunnel, then retry"
    )
    conn.stall_timeout = 2.5
    watch = transfer.StallWatch(conn)
    watch.stalled = True
    error = failure(conn, None, EOFError(), "download of x", watch, [])
    assert str(error) == (
        f"{LABEL}: download of x stalled: no progress for 2.5s (ssh.stall_timeout); nothing left half-written; "
        "check the host and its tunnel, then retry"
    )
    assert isinstance(error, TransferError) and error.host == LABEL


def test_ssmfab_errors_keep_their_words_and_gain_the_note_on_what_may_remain(conn: SSMConnection) -> None:
    from ssmfab.exceptions import SSHError
    from ssmfab.transfer.outcome import failure

    watch = transfer.StallWatch(conn)
    own = TransferError(f"{LABEL}: cannot create files in /srv", LABEL)
    assert failure(conn, None, own, "upload", watch, []) is own
    other = SSHError(f"{LABEL}: SSH through the SSM tunnel failed: boom", LABEL)
    assert failure(conn, None, other, "upload", watch, ["/srv/.t.part"]) is other
    noted = failure(conn, None, own, "upload", watch, ["/srv/.t.part"])
    assert str(noted) == (
        f"{LABEL}: cannot create files in /srv; temporary file /srv/.t.part may remain, delete it once the host is reachable"
    )
    assert isinstance(noted, TransferError) and noted.host == LABEL


def test_a_failure_on_a_live_connection_names_its_cause_and_asks_for_a_fix(conn: SSMConnection, host: HostFolder) -> None:
    from ssmfab.transfer.outcome import failure
    from ssmfab.transfer.session import Session

    session = Session(conn)
    try:
        watch = transfer.StallWatch(conn)
        watch.current = "a/b"
        error = failure(conn, session, PermissionError(13, "Permission denied"), "upload to a", watch, [])
        assert str(error) == (
            f"{LABEL}: upload to a (at a/b) failed, nothing left half-written "
            "(PermissionError: [Errno 13] Permission denied); fix the cause, then retry"
        )
        conn.close()  # the connection is gone now: the connection's own explanation, without the host twice
        error = failure(conn, session, OSError("Socket is closed"), "upload to a", transfer.StallWatch(conn), [])
        assert str(error) == (
            f"{LABEL}: upload to a failed, nothing left half-written (SSH through the SSM tunnel failed: Socket is closed); "
            "check the connection, then retry"
        )
    finally:
        session.close()


def test_a_failure_without_an_explanation_names_the_exception(conn: SSMConnection) -> None:
    from ssmfab.transfer.outcome import failure

    error = failure(conn, None, ValueError("bad\nvalue"), "upload to a", transfer.StallWatch(conn), [])
    assert str(error) == f"{LABEL}: upload to a failed, nothing left half-written (ValueError: bad value); check the connection, then retry"


def test_the_sessions_cleanup_reports_only_what_may_really_remain(conn: SSMConnection, host: HostFolder) -> None:
    from ssmfab.transfer.session import Session

    (host.path / "there").write_text("x")
    (host.path / "full").mkdir()
    (host.path / "full" / "f").write_text("f")
    (host.path / "empty").mkdir()
    session = Session(conn)
    try:
        base = str(host.path)
        assert session.remove([f"{base}/there", f"{base}/missing", f"{base}/full"]) == [f"{base}/full"]
        assert not (host.path / "there").exists()
        session.rmdirs([f"{base}/empty", f"{base}/full"])  # the non-empty one stays, the empty one goes
        assert sorted(p.name for p in host.path.iterdir()) == ["full"]
        assert session.is_dir(f"{base}/full") and not session.is_dir(f"{base}/full/f") and not session.is_dir(f"{base}/nope")
        assert session.attrs(f"{base}/nope") is None and session.home == str(host.path.parent)
        assert session.absolute("x") == f"{host.path.parent}/x" and session.absolute("/x/") == "/x"
        conn.close()
        assert not session.alive()
        assert session.remove([f"{base}/full/f", f"{base}/y"]) == [f"{base}/full/f", f"{base}/y"]
        session.rmdirs([f"{base}/full"])
        with pytest.raises(OSError):
            session.check(FileNotFoundError(2, "gone"))  # a dead connection is never just "not found"
    finally:
        session.close()
    assert (host.path / "full" / "f").exists()


def test_a_timeout_is_never_taken_for_a_missing_file(conn: SSMConnection) -> None:
    from ssmfab.transfer.session import Session

    session = Session(conn)
    try:
        session.check(FileNotFoundError(2, "gone"))  # live connection: the host refused one path, go on
        with pytest.raises(TimeoutError):
            session.check(TimeoutError("slow"))
    finally:
        session.close()


def test_no_sftp_subsystem_is_one_line(conn: SSMConnection, monkeypatch: pytest.MonkeyPatch) -> None:
    import paramiko

    def refuse(self: object, name: str) -> None:
        raise paramiko.SSHException("subsystem request failed")

    monkeypatch.setattr(paramiko.Channel, "invoke_subsystem", refuse)  # what a server without sftp answers
    with pytest.raises(TransferError) as failed:
        transfer.put(conn, io.BytesIO(b"x"), "x")
    assert failed.value.host == LABEL and str(failed.value) == f"{LABEL}: the SSH server refused an SFTP channel; check its sftp Subsystem"


@pytest.mark.parametrize(
    ("script", "reason"),
    [
        ('echo "disk on fire" >&2; exit 3', "disk on fire"),
        ("exit 3", "exit status 3"),  # it said nothing: its exit status is all there is
        ('printf "%05000d \\377 end" 0 >&2; exit 3', "0" * 5000 + " \ufffd end"),  # long, and not UTF-8
    ],
)
def test_a_host_that_quits_mid_stream_is_reported_in_its_own_words(
    conn: SSMConnection, host: HostFolder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str, reason: str
) -> None:
    from ssmfab.transfer import upload

    (tmp_path / "big.bin").write_bytes(os.urandom(BIG))
    # The host's copy program quits at once (a disk that fills, a size limit), while the client is still sending.
    monkeypatch.setattr(upload, "STREAM_PUT", f"sh -c {shlex.quote(script)}")
    seen: list[int] = []

    def hook(moved: int) -> None:
        seen.append(moved)
        if len(seen) == 1:  # wait, after the first chunk, until the host's end has closed: the next send fails
            channels = list(conn.client.get_transport()._channels.values())  # noqa: SLF001
            stream = max(channels, key=lambda channel: channel.chanid)  # the newest: the stream's exec channel
            assert stream.status_event.wait(60)
            while not stream.closed:
                time.sleep(0.01)

    with pytest.raises(TransferError) as failed:
        transfer.put(conn, str(tmp_path / "big.bin"), f"{host.remote}/big.bin", compress=False, progress=hook)
    assert failed.value.host == LABEL and str(failed.value) == (
        f"{LABEL}: the host stopped writing {host.path / 'big.bin'} after {sum(seen)} bytes sent ({reason}); "
        "nothing left half-written; check its free space and limits, then retry"
    )
    assert temporaries(host.path) == [] and not (host.path / "big.bin").exists()


@pytest.mark.parametrize(
    ("refusal", "reason"),
    [
        (OSError("Operation unsupported"), "the host's SFTP server cannot rename atomically (no posix-rename) for {final}; use OpenSSH's sftp-server"),
        (PermissionError(13, "Permission denied"), "could not move the upload into place at {final} ([Errno 13] Permission denied); check the folder's permissions"),
    ],
)  # fmt: skip
def test_a_rename_the_host_refuses_is_explained_and_leaves_nothing(
    conn: SSMConnection, host: HostFolder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refusal: OSError, reason: str
) -> None:
    import paramiko

    (tmp_path / "f").write_bytes(b"f")

    def refuse(self: object, old: str, new: str) -> None:
        raise refusal  # what an SFTP server without posix-rename, or one that refuses it, answers (not OpenSSH's)

    monkeypatch.setattr(paramiko.SFTPClient, "posix_rename", refuse)
    with pytest.raises(TransferError) as failed:
        transfer.put(conn, str(tmp_path / "f"), f"{host.remote}/f")
    assert failed.value.host == LABEL and str(failed.value) == f"{LABEL}: " + reason.format(final=host.path / "f")
    assert list(host.path.iterdir()) == []


@pytest.mark.parametrize("size", [SMALL, BIG])
def test_while_partial_the_file_is_private_under_a_hidden_name(conn: SSMConnection, host: HostFolder, tmp_path: Path, size: int) -> None:
    (tmp_path / "secret.key").write_bytes(os.urandom(size))
    (tmp_path / "secret.key").chmod(0o644)
    partial: list[tuple[str, int]] = []

    def hook(moved: int) -> None:
        if not partial:
            partial.extend((p.name, mode_of(p)) for p in host.path.iterdir())

    transfer.put(conn, str(tmp_path / "secret.key"), f"{host.remote}/secret.key", progress=hook, compress=False)
    ((name, mode),) = partial
    assert transfer.is_temp_of(name, "secret.key") and mode == 0o600
    assert mode_of(host.path / "secret.key") == 0o644


def test_an_empty_destination_means_the_login_folder(conn: SSMConnection, tmp_path: Path) -> None:
    home = host_home(conn)
    name = f"from-{tmp_path.name}.txt"
    (tmp_path / name).write_text("home")
    try:
        for remote in ("", ".", "~"):
            report = transfer.put(conn, str(tmp_path / name), remote)
            assert (home / name).read_text() == "home" and report.destination == str(home / name), remote
    finally:
        (home / name).unlink(missing_ok=True)


def host_home(conn: SSMConnection) -> Path:
    return Path(str(conn.sftp().normalize(".")))


def test_a_tilde_local_path_and_the_current_folder(
    conn: SSMConnection, host: HostFolder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "a.txt").write_text("a")
    report = transfer.put(conn, "~/proj/a.txt", f"{host.remote}/")
    assert (host.path / "a.txt").read_text() == "a" and report.source == str(tmp_path / "proj" / "a.txt")
    monkeypatch.chdir(tmp_path / "proj")
    report = transfer.put(conn, ".", f"{host.remote}/", recursive=True)
    assert (host.path / "proj" / "a.txt").read_text() == "a" and report.destination == str(host.path / "proj")


def test_a_tree_without_preserve_mode_gets_the_hosts_defaults(conn: SSMConnection, host: HostFolder, tmp_path: Path) -> None:
    top = tmp_path / "t"
    (top / "d").mkdir(parents=True)
    (top / "d" / "f").write_text("f")
    (top / "d" / "f").chmod(0o600)
    (top / "d").chmod(0o700)
    top.chmod(0o700)
    transfer.put(conn, str(top), host.remote, recursive=True, preserve_mode=False)
    with conn.sftp().open(f"{host.remote}/probe", "w"):
        pass
    conn.sftp().mkdir(f"{host.remote}/probe.d")
    assert mode_of(host.path / "t" / "d" / "f") == mode_of(host.path / "probe") != 0o600
    assert mode_of(host.path / "t" / "d") == mode_of(host.path / "probe.d") == mode_of(host.path / "t") != 0o700


def test_the_duration_is_the_time_the_call_took(conn: SSMConnection, host: HostFolder, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("f")
    before = time.monotonic()
    report = transfer.put(conn, str(tmp_path / "f"), f"{host.remote}/f")
    assert 0 < report.duration <= time.monotonic() - before


def test_a_name_that_is_not_utf8_is_skipped_by_name_and_the_rest_arrives(conn: SSMConnection, host: HostFolder, tmp_path: Path) -> None:
    top = tmp_path / "t"
    (top / "ok").mkdir(parents=True)
    (top / "ok" / "a.txt").write_text("a")
    odd = b"caf\xe9 \xff"  # Latin-1 and a byte no encoding gives: SFTP names are UTF-8
    os.mkdir(os.path.join(os.fsencode(top), odd + b".d"))
    with open(os.path.join(os.fsencode(top), odd + b".txt"), "wb") as local:
        local.write(b"odd")
    with pytest.raises(TransferError) as failed:
        transfer.put(conn, str(top), host.remote, recursive=True)
    # Named as its bytes, which any terminal can print; the folder is skipped whole; the rest arrives.
    assert str(failed.value) == (
        f"{LABEL}: skipping '{top}/caf\\xe9 \\xff.d': its name is not UTF-8, as SFTP needs; rename it (1 more problem; 1 files arrived)"
    )
    assert [problem.split(": ", 1)[1] for problem in getattr(failed.value, "report").errors] == [
        f"skipping '{top}/caf\\xe9 \\xff.d': its name is not UTF-8, as SFTP needs; rename it",
        f"skipping '{top}/caf\\xe9 \\xff.txt': its name is not UTF-8, as SFTP needs; rename it",
    ]
    assert (host.path / "t" / "ok" / "a.txt").read_text() == "a"
    assert sorted(os.listdir(host.path / "t")) == ["ok"] and temporaries(host.path) == []


def test_a_single_file_whose_name_is_not_utf8_goes_under_the_name_given_for_the_host(
    conn: SSMConnection, host: HostFolder, tmp_path: Path
) -> None:
    local = os.fsdecode(os.path.join(os.fsencode(tmp_path), b"caf\xe9.txt"))
    Path(local).write_bytes(b"data")
    with pytest.raises(TransferError) as failed:  # into a folder: the host's name would be the local one
        transfer.put(conn, local, f"{host.remote}/")
    assert failed.value.host == LABEL and str(failed.value) == (
        f"{LABEL}: cannot upload to '{host.path}/caf\\xe9.txt': the name is not UTF-8, as SFTP needs; rename it or name the remote file"
    )
    assert os.listdir(host.path) == []
    report = transfer.put(conn, local, f"{host.remote}/cafe.txt")
    assert (host.path / "cafe.txt").read_bytes() == b"data" and report.files == 1


def test_a_lost_connection_in_a_tree_names_the_file_it_was_at(conn: SSMConnection, host: HostFolder, tmp_path: Path) -> None:
    top = tmp_path / "t"
    top.mkdir()
    (top / "a.bin").write_bytes(os.urandom(SMALL))
    (top / "b.bin").write_bytes(os.urandom(SMALL))
    conn.open()
    assert conn.tunnel is not None
    hook = CutAfter(SMALL + 1, conn.tunnel.close)  # during the second file
    with pytest.raises(TransferError) as failed:
        transfer.put(conn, str(top), host.remote, recursive=True, progress=hook)
    message = str(failed.value)
    assert message.startswith(f"{LABEL}: upload to {host.remote} (at {host.path / 't' / 'b.bin'}) failed, nothing left half-written; "
                              "temporary files "), message  # fmt: skip
    assert " and others may remain, delete them once the host is reachable (" in message
    assert not (host.path / "t" / "a.bin").exists() and not (host.path / "t" / "b.bin").exists()


def _stuck_command(pid_file: Path) -> str:
    """A host program that takes the stream and never reads it (a host frozen mid-transfer); its pid lands in
    ``pid_file`` so the test can end it (the arguments the transfer appends go to ``:``)."""
    return f"sh -c 'echo $$ > {shlex.quote(str(pid_file))}; exec sleep 600'; :"


def _end(pid_file: Path) -> None:
    if pid_file.exists():
        try:
            os.kill(int(pid_file.read_text()), 9)
        except (ProcessLookupError, ValueError):
            pass


def test_a_stalled_upload_is_cut_after_the_stall_timeout(
    conn: SSMConnection, host: HostFolder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ssmfab.transfer import upload

    (tmp_path / "big.bin").write_bytes(os.urandom(BIG))
    pid_file = tmp_path / "stuck.pid"
    monkeypatch.setattr(upload, "STREAM_PUT", _stuck_command(pid_file))
    conn.stall_timeout = 0.5
    try:
        with pytest.raises(TransferError) as failed:
            transfer.put(conn, str(tmp_path / "big.bin"), f"{host.remote}/big.bin", compress=False)
    finally:
        _end(pid_file)
    message = str(failed.value)
    assert message.startswith(
        f"{LABEL}: upload to {host.remote}/big.bin stalled: no progress for 0.5s (ssh.stall_timeout); nothing left half-written; "
        f"temporary file {host.path}/.big.bin.ssmfab-"
    ), message
    assert message.endswith(" may remain, delete it once the host is reachable; check the host and its tunnel, then retry")
    tunnels = conn.tunnels
    assert isinstance(tunnels, LoopbackTunnels) and tunnels.opened[0].closed  # the tunnel was cut to unblock paramiko


def test_a_plain_fabric_connection_transfers_too_and_is_cut_when_stalled(
    server: tuple[object, Path], host: HostFolder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fabric import Connection

    from ssmfab.connection import default_config
    from ssmfab.transfer import upload

    sshd, key = server
    plain = Connection(
        "127.0.0.1", port=sshd.port, user=os.environ.get("USER") or "root", config=default_config(),  # type: ignore[attr-defined]
        connect_kwargs={"key_filename": str(key), "look_for_keys": False, "allow_agent": False},
    )  # fmt: skip
    try:
        (tmp_path / "f").write_bytes(b"plain")
        report = transfer.put(plain, str(tmp_path / "f"), f"{host.remote}/f")
        assert (host.path / "f").read_bytes() == b"plain" and report.host == "127.0.0.1"
        (tmp_path / "big.bin").write_bytes(os.urandom(BIG))
        pid_file = tmp_path / "stuck.pid"
        monkeypatch.setattr(upload, "STREAM_PUT", _stuck_command(pid_file))
        plain.stall_timeout = 0.5
        try:
            with pytest.raises(TransferError) as failed:
                transfer.put(plain, str(tmp_path / "big.bin"), f"{host.remote}/big.bin", compress=False)
        finally:
            _end(pid_file)
        assert str(failed.value).startswith(f"127.0.0.1: upload to {host.remote}/big.bin stalled: no progress for 0.5s")
        assert not plain.is_connected  # its socket was closed under paramiko
    finally:
        plain.close()


def test_a_host_that_takes_every_byte_then_fails_says_why(
    conn: SSMConnection, host: HostFolder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ssmfab.transfer import upload

    (tmp_path / "big.bin").write_bytes(os.urandom(BIG))
    monkeypatch.setattr(upload, "STREAM_PUT", "sh -c 'cat >/dev/null; echo \"quota exceeded\" >&2; exit 1'")
    with pytest.raises(TransferError) as failed:
        transfer.put(conn, str(tmp_path / "big.bin"), f"{host.remote}/big.bin", compress=False)
    assert failed.value.host == LABEL and str(failed.value) == (
        f"{LABEL}: the host stopped writing {host.path / 'big.bin'} after {BIG} bytes sent (quota exceeded); "
        "nothing left half-written; check its free space and limits, then retry"
    )
    assert temporaries(host.path) == []


def test_a_checksum_that_never_comes_is_a_timeout_in_one_line(
    conn: SSMConnection, host: HostFolder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "f").write_bytes(b"f")
    pid_file = tmp_path / "stuck.pid"
    monkeypatch.setattr(transfer_session, "SUM_COMMAND", f"sh -c 'echo $$ > {shlex.quote(str(pid_file))}; cat >/dev/null; exec sleep 600'")
    conn.stall_timeout = 0.5
    try:
        with pytest.raises(TransferError) as failed:
            transfer.put(conn, str(tmp_path / "f"), f"{host.remote}/f")
    finally:
        _end(pid_file)
    assert failed.value.host == LABEL and str(failed.value) == (
        f"{LABEL}: the remote SHA-256 check of 1 files gave no answer within 1s; check the host's load and the tunnel, then retry"
    )
    assert list(host.path.iterdir()) == []


@pytest.mark.parametrize(
    ("method", "size", "remote"),
    [
        ("stat", SMALL, "new/f.bin"),  # looking up the destination folder
        ("mkdir", SMALL, "new/f.bin"),
        ("open", SMALL, "f.bin"),  # creating the temporary file
        ("listdir_attr", BIG, "f.bin"),  # looking for stale temporary files of a big file
        ("posix_rename", SMALL, "f.bin"),
    ],
)
def test_a_connection_that_dies_at_any_step_of_an_upload_is_reported_as_lost(
    conn: SSMConnection, host: HostFolder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str, size: int, remote: str
) -> None:
    from .transfer_helpers import cut_during

    (tmp_path / "f.bin").write_bytes(os.urandom(size))
    conn.open()
    cut = cut_during(monkeypatch, conn, method, lambda path: host.remote in path)
    with pytest.raises(TransferError) as failed:
        transfer.put(conn, str(tmp_path / "f.bin"), f"{host.remote}/{remote}", compress=False)
    message = str(failed.value)
    assert cut and failed.value.host == LABEL and "\n" not in message
    assert message.startswith(f"{LABEL}: upload to {host.remote}/{remote} failed, nothing left half-written"), message
    assert "(SSH through the SSM tunnel failed: " in message and message.endswith("); check the connection, then retry"), message
    assert not (host.path / remote).exists()


def test_a_file_object_takes_the_compression_and_progress_asked_for(conn: SSMConnection, host: HostFolder) -> None:
    data = b"compressible line\n" * (BIG // 18)
    moved: list[int] = []
    conn.open()
    conn.link_rates["put"] = 1e15  # a link faster than any compressor: only compress=True compresses
    report = transfer.put(conn, io.BytesIO(data), f"{host.remote}/obj.txt", compress=True, progress=moved.append)
    assert (host.path / "obj.txt").read_bytes() == data
    assert report.wire_bytes < len(data) // 10 and sum(moved) == len(data)


def test_the_host_is_told_a_streams_exact_size_and_codec_so_it_can_drop_a_cut_one(
    conn: SSMConnection, host: HostFolder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ssmfab.hoststreams import STREAM_PUT
    from ssmfab.transfer import upload

    commands: list[str] = []
    real = upload.stream_channel

    def recording(session: object, command: str) -> object:
        commands.append(command)
        return real(session, command)  # type: ignore[arg-type]

    monkeypatch.setattr(upload, "stream_channel", recording)
    (tmp_path / "big.bin").write_bytes(os.urandom(BIG))
    transfer.put(conn, str(tmp_path / "big.bin"), f"{host.remote}/big.bin", compress=False)
    transfer.put(conn, io.BytesIO(b"z" * BIG), f"{host.remote}/z.bin", compress=True)
    read_end, write_end = os.pipe()
    os.close(write_end)
    with os.fdopen(read_end, "rb") as empty_pipe:  # a pipe: its size is unknown until it ends
        transfer.put(conn, empty_pipe, f"{host.remote}/pipe.bin", compress=False)
    temp = r"\S+\.ssmfab-[0-9a-f]{8}\.part"
    assert re.fullmatch(re.escape(STREAM_PUT) + rf" {temp} raw {BIG}", commands[0]), commands[0]
    assert re.fullmatch(re.escape(STREAM_PUT) + rf" {temp} gzip {BIG}", commands[1]), commands[1]
    assert re.fullmatch(re.escape(STREAM_PUT) + rf" {temp} raw", commands[2]), commands[2]
    assert (host.path / "pipe.bin").read_bytes() == b"" and (host.path / "z.bin").read_bytes() == b"z" * BIG


def _text(size: int) -> bytes:
    import random

    words = [b"def", b"return", b"self", b"value", b"import", b"class", b"(x)", b"\n    ", b"if", b"else:", b"for", b"in"]
    pick = random.Random(21).choice
    out = bytearray()
    while len(out) < size:
        out += pick(words) + b" "
    return bytes(out[:size])


def test_a_link_far_slower_than_the_compressor_gets_the_tighter_level(conn: SSMConnection, host: HostFolder, tmp_path: Path) -> None:
    import zlib

    from ssmfab.transfer import compress

    data = _text(BIG)
    (tmp_path / "src.txt").write_bytes(data)

    def gzip_size(level: int) -> int:
        packer = zlib.compressobj(level, zlib.DEFLATED, 31)
        return len(packer.compress(data) + packer.flush())

    assert gzip_size(compress.TIGHT_LEVEL) < gzip_size(compress.LEVEL)
    conn.open()
    conn.link_rates["put"] = 1000.0  # far slower than any compressor
    report = transfer.put(conn, str(tmp_path / "src.txt"), f"{host.remote}/src.txt")
    assert (host.path / "src.txt").read_bytes() == data and report.wire_bytes == gzip_size(compress.TIGHT_LEVEL)


def test_an_interrupted_tree_upload_removes_the_folders_it_made_and_keeps_the_others(
    conn: SSMConnection, host: HostFolder, tmp_path: Path
) -> None:
    top = tmp_path / "site"
    (top / "a" / "b").mkdir(parents=True)
    (top / "empty").mkdir()
    (top / "a" / "b" / "f.bin").write_bytes(os.urandom(SMALL))
    (host.path / "kept").mkdir()
    conn.cancel = threading.Event()
    hook = CutAfter(1, conn.cancel.set)
    with pytest.raises(Interrupted):
        transfer.put(conn, str(top), f"{host.remote}/kept/new/deeper/", recursive=True, progress=hook)
    assert hook.fired.is_set() and sorted(p.name for p in host.path.rglob("*")) == ["kept"]


def test_the_parent_folder_is_sent_under_its_own_name(
    conn: SSMConnection, host: HostFolder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "proj" / "sub").mkdir(parents=True)
    (tmp_path / "proj" / "a.txt").write_text("a")
    monkeypatch.chdir(tmp_path / "proj" / "sub")
    report = transfer.put(conn, "..", f"{host.remote}/", recursive=True)
    assert (host.path / "proj" / "a.txt").read_text() == "a" and report.destination == str(host.path / "proj")


def test_a_write_the_host_refuses_once_is_sent_again_as_a_stream_and_verified(
    conn: SSMConnection, host: HostFolder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import paramiko

    data = os.urandom(SMALL)
    (tmp_path / "f.bin").write_bytes(data)
    real_write = paramiko.SFTPFile.write
    refused: list[int] = []

    def refuse_once(self: paramiko.SFTPFile, chunk: bytes) -> None:
        if not refused:
            refused.append(len(chunk))
            raise OSError("Failure")  # what SFTP says for a quota reached (freed again before the retry)
        real_write(self, chunk)

    monkeypatch.setattr(paramiko.SFTPFile, "write", refuse_once)
    report = transfer.put(conn, str(tmp_path / "f.bin"), f"{host.remote}/f.bin")
    assert refused and (host.path / "f.bin").read_bytes() == data
    assert report.items[0].sha256 == hashlib.sha256(data).hexdigest() and report.bytes == SMALL
    assert temporaries(host.path) == []


def test_a_warm_connection_that_went_silent_is_replaced_before_the_upload_sends_anything(
    server: tuple[Any, Path], host: HostFolder, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A connection taken warm whose session went silent while it waited (the instance froze, the SSM session
    stalled) is proven by the transfer's first channel, and replaced: the upload arrives over a new tunnel, and
    nothing waits out paramiko's hour-long channel timeout. The silence is the host's sshd for that connection
    stopped with SIGSTOP: the TCP connection stays up, nothing answers."""
    from ssmfab.sandbox.sshd import descendants

    from .sshconn import loopback_ssm_connection

    sshd, _key = server
    warm = loopback_ssm_connection(server, tmp_path_factory.mktemp("keys") / "known_hosts", connect_timeout=2.0)
    before = set(descendants(sshd.process.pid))
    frozen: set[int] = set()
    try:
        warm.open()
        frozen = set(descendants(sshd.process.pid)) - before
        assert frozen, "the connection's sshd processes were not found"
        for pid in frozen:
            # A short-lived helper sshd started during the login may be gone already: it is not the connection.
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        warm.warm_unproven = True
        data = os.urandom(BIG)
        (tmp_path / "big.bin").write_bytes(data)
        transfer.put(warm, str(tmp_path / "big.bin"), f"{host.remote}/big.bin", compress=False)
        assert (host.path / "big.bin").read_bytes() == data and temporaries(host.path) == []
        tunnels = warm.tunnels
        assert isinstance(tunnels, LoopbackTunnels)
        assert len(tunnels.opened) == 2 and tunnels.opened[0].closed and not tunnels.opened[1].closed
    finally:
        warm.close()
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_a_symlink_goes_under_its_own_name_not_its_targets(conn: SSMConnection, host: HostFolder, tmp_path: Path) -> None:
    """As cp and scp do: ``put current.tar dir/`` with current.tar -> release-42.tar lands dir/current.tar, with
    the target's bytes."""
    (tmp_path / "release-42.tar").write_bytes(b"release 42")
    (tmp_path / "current.tar").symlink_to("release-42.tar")
    report = transfer.put(conn, str(tmp_path / "current.tar"), f"{host.remote}/")
    assert os.listdir(host.path) == ["current.tar"] and (host.path / "current.tar").read_bytes() == b"release 42"
    assert report.source == str(tmp_path / "current.tar") and report.destination == str(host.path / "current.tar")


@pytest.mark.parametrize("top_exists", [False, True], ids=["into-a-new-folder", "into-an-existing-one"])
def test_folders_inside_a_folder_just_made_are_made_without_looking_them_up_first(
    conn: SSMConnection, host: HostFolder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, top_exists: bool
) -> None:
    """Each lookup is a round trip through the SSM tunnel (tens of milliseconds on a real link): a tree of many
    folders makes each new one with one mkdir, and looks nothing up below a folder it has just made."""
    import paramiko

    site = tmp_path / "site"
    for folder in ("a/b/c", "a/d", "e"):
        (site / folder).mkdir(parents=True)
        (site / folder / "f.txt").write_text(folder)
    if top_exists:
        (host.path / "new" / "site" / "e").mkdir(parents=True)
    looked_up: list[str] = []
    stat = paramiko.SFTPClient.stat

    def counted_stat(sftp: paramiko.SFTPClient, path: str) -> paramiko.SFTPAttributes:
        looked_up.append(path)
        return stat(sftp, path)

    monkeypatch.setattr(paramiko.SFTPClient, "stat", counted_stat)
    transfer.put(conn, str(site), f"{host.remote}/new/", recursive=True)
    assert sorted(str(p.relative_to(host.path)) for p in host.path.rglob("f.txt")) == [
        f"new/site/{folder}/f.txt" for folder in ("a/b/c", "a/d", "e")
    ]
    made = f"{host.path}/new/site/a/" if top_exists else f"{host.path}/new/site/"
    assert [path for path in looked_up if path.startswith(made)] == []


class _FailingDisk(io.RawIOBase):
    """A local source that reads ``good`` bytes, then fails as a dying disk or a dropped NFS mount does."""

    def __init__(self, good: int) -> None:
        self.left = good

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.left <= 0:
            raise OSError(errno.EIO, "Input/output error")
        n = min(len(buffer), self.left)
        buffer[:n] = b"\0" * n
        self.left -= n
        return n


@pytest.mark.parametrize("good", [1000, BIG + 12345], ids=["over-sftp", "streamed"])
def test_a_local_read_that_fails_mid_stream_ends_the_upload_at_once_in_one_line(conn: SSMConnection, host: HostFolder, good: int) -> None:
    """The host's program is still waiting for the rest of the stream: nothing waits for it to finish, and the
    cause is said to be this machine's, not the connection's nor the host's (over SFTP a failed write is
    otherwise retried as a stream, to learn the host's reason)."""
    with pytest.raises(TransferError) as failed:
        transfer.put(conn, io.BufferedReader(_FailingDisk(good)), f"{host.remote}/f.bin", compress=False)
    assert failed.value.host == LABEL and str(failed.value) == (
        f"{LABEL}: upload to {host.remote}/f.bin failed, nothing left half-written (reading <BufferedReader .> on this "
        "machine: Input/output error); check this machine's disk or mount, then retry"
    )
    assert list(host.path.iterdir()) == [] and conn.is_connected


def test_a_local_file_gone_since_it_was_listed_is_named_as_this_machines(
    conn: SSMConnection, host: HostFolder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "a.txt").write_text("a")
    (site / "b.txt").write_text("b")
    real_scan = transfer.upload.scan_local

    def scan_then_remove(*args: Any) -> Any:
        tree = real_scan(*args)
        (site / "b.txt").unlink()  # rotated away, or the deploy's build cleaned it up
        return tree

    monkeypatch.setattr(transfer.upload, "scan_local", scan_then_remove)
    with pytest.raises(TransferError) as failed:
        transfer.put(conn, str(site), host.remote, recursive=True)
    assert failed.value.host == LABEL
    assert str(failed.value) == (
        f"{LABEL}: upload to {host.remote} (at {host.path / 'site' / 'b.txt'}) failed, nothing left half-written "
        f"(reading {site / 'b.txt'} on this machine: "
        "No such file or directory); check this machine's disk or mount, then retry"
    )
    assert temporaries(host.path) == []


def test_a_trees_report_counts_the_bytes_of_every_file_that_crossed_the_link(
    conn: SSMConnection, host: HostFolder, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    (site / "sub").mkdir(parents=True)
    sizes = {"a.bin": 1000, "sub/b.bin": SMALL, "sub/c.bin": BIG}
    for name, size in sizes.items():
        (site / name).write_bytes(os.urandom(size))
    report = transfer.put(conn, str(site), host.remote, recursive=True, compress=False)
    assert report.files == 3 and report.bytes == report.wire_bytes == sum(sizes.values())


def test_a_local_file_gone_since_it_was_listed_is_named_on_one_line_whatever_its_name(
    conn: SSMConnection, host: HostFolder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = "b\x1b[2Jx.txt"  # a terminal escape in a file name (newlines are refused before anything moves)
    (tmp_path / name).write_text("b")
    real_scan = transfer.upload.scan_local

    def scan_then_remove(*args: Any) -> Any:
        tree = real_scan(*args)
        (tmp_path / name).unlink()
        return tree

    monkeypatch.setattr(transfer.upload, "scan_local", scan_then_remove)
    with pytest.raises(TransferError) as failed:
        transfer.put(conn, str(tmp_path / name), f"{host.remote}/b.txt")
    message = str(failed.value)
    assert message.startswith(f"{LABEL}: upload to {host.remote}/b.txt failed") and "\x1b" not in message, message
    assert f"(reading {str(tmp_path / name)!r} on this machine: No such file or directory)" in message, message
