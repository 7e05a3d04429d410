"""get over a real SSH connection (ssmfab's own connection to a loopback sshd, in this process): files, trees
and globs arrive byte for byte with their modes, verified, renamed into place only then; names and links a host
should not send are refused one by one while the rest arrives; failures are one line and leave no temporary
file."""

from __future__ import annotations

import hashlib
import io
import os
import shlex
import stat
import threading
import time
from pathlib import Path

import pytest

from ssmfab import transfer
from ssmfab.connection import SSMConnection
from ssmfab.exceptions import TransferError
from ssmfab.interrupt import Interrupted
from ssmfab.transfer import session as transfer_session
from ssmfab.transfer.paths import umask

from .transfer_helpers import HostFolder, conn, host, temporaries, tmpfs  # noqa: F401 - fixtures

SMALL = 300_000
BIG = 5 * 1024 * 1024
LABEL = "i-0123456789abcdef0"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def everything(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("size", [0, SMALL, BIG])
@pytest.mark.parametrize("compress", [None, False])
def test_a_file_arrives_byte_for_byte_with_its_mode(
    conn: SSMConnection, host: HostFolder, tmp_path: Path, size: int, compress: bool | None
) -> None:
    data = os.urandom(size)
    (host.path / "data.bin").write_bytes(data)
    (host.path / "data.bin").chmod(0o604)
    local = tmp_path / "copy.bin"
    report = transfer.get(conn, f"{host.remote}/data.bin", str(local), compress=compress)
    assert local.read_bytes() == data and mode_of(local) == 0o604
    assert temporaries(tmp_path) == []
    (item,) = report.items
    assert item == transfer.FileTransfer(str(host.path / "data.bin"), str(local), size, sha(data), 0o604)
    assert report.host == LABEL and report.source == str(host.path / "data.bin") and report.destination == str(local)
    assert report.wire_bytes == size  # random bytes never shrink: never compressed


def test_compressible_data_is_compressed_when_asked_and_arrives_the_same(conn: SSMConnection, host: HostFolder, tmp_path: Path) -> None:
    data = b"a line of a log file, said again and again\n" * (BIG // 40)
    (host.path / "app.log").write_bytes(data)
    forced = transfer.get(conn, f"{host.remote}/app.log", str(tmp_path / "forced.log"), compress=True)
    plain = transfer.get(conn, f"{host.remote}/app.log", str(tmp_path / "plain.log"), compress=False)
    assert (tmp_path / "forced.log").read_bytes() == data == (tmp_path / "plain.log").read_bytes()
    assert forced.wire_bytes < len(data) // 10 and plain.wire_bytes == len(data)
    assert forced.items[0].sha256 == sha(data) == plain.items[0].sha256


def test_a_slow_link_gets_compressible_data_compressed_a_fast_one_raw(conn: SSMConnection, host: HostFolder, tmp_path: Path) -> None:
    data = b"0123456789abcdef" * (BIG // 16)
    (host.path / "z.txt").write_bytes(data)
    conn.open()
    conn.link_rates["get"] = 1000.0  # measured slow: the host compresses (auto:RATE)
    slow = transfer.get(conn, f"{host.remote}/z.txt", str(tmp_path / "slow.txt"))
    conn.link_rates["get"] = 1e15  # faster than any compressor
    fast = transfer.get(conn, f"{host.remote}/z.txt", str(tmp_path / "fast.txt"))
    assert (tmp_path / "slow.txt").read_bytes() == data == (tmp_path / "fast.txt").read_bytes()
    assert slow.wire_bytes < len(data) // 10 and fast.wire_bytes == len(data)


def test_unmeasured_the_link_is_timed_only_for_data_that_shrinks(conn: SSMConnection, host: HostFolder, tmp_path: Path) -> None:
    (host.path / "random.bin").write_bytes(os.urandom(BIG))
    conn.open()
    transfer.get(conn, f"{host.remote}/random.bin", str(tmp_path / "r.bin"))
    assert "get" not in conn.link_rates  # raw at once: nothing to time the link for
    data = b"x" * BIG
    (host.path / "zeros.txt").write_bytes(data)
    report = transfer.get(conn, f"{host.remote}/zeros.txt", str(tmp_path / "z.txt"))
    assert (tmp_path / "z.txt").read_bytes() == data and conn.link_rates["get"] > 0
    assert report.items[0].sha256 == sha(data)


@pytest.mark.parametrize("local", ["{tmp}/", "{tmp}"])
def test_into_an_existing_or_slash_ended_folder_keeps_the_name(conn: SSMConnection, host: HostFolder, tmp_path: Path, local: str) -> None:
    (host.path / "notes.txt").write_text("hello\n")
    report = transfer.get(conn, f"{host.remote}/notes.txt", local.format(tmp=tmp_path))
    assert (tmp_path / "notes.txt").read_text() == "hello\n" and report.destination == str(tmp_path / "notes.txt")


def test_a_slash_ended_folder_is_created(conn: SSMConnection, host: HostFolder, tmp_path: Path) -> None:
    (host.path / "notes.txt").write_text("hello\n")
    transfer.get(conn, f"{host.remote}/notes.txt", str(tmp_path / "a" / "b") + os.sep)
    assert (tmp_path / "a" / "b" / "notes.txt").read_text() == "hello\n"


def test_without_preserve_mode_the_file_gets_this_machines_default(conn: SSMConnection, host: HostFolder, tmp_path: Path) -> None:
    (host.path / "x.sh").write_text("#!/bin/sh\n")
    (host.path / "x.sh").chmod(0o700)
    report = transfer.get(conn, f"{host.remote}/x.sh", str(tmp_path / "x.sh"), preserve_mode=False)
    assert mode_of(tmp_path / "x.sh") == 0o666 & ~umask() == report.items[0].mode


def test_a_tree_arrives_with_empty_folders_and_modes(conn: SSMConnection, host: HostFolder, tmp_path: Path) -> None:
    top = host.path / "site"
    (top / "a" / "b").mkdir(parents=True)
    (top / "empty").mkdir()
    (top / "a" / "b" / "deep.txt").write_bytes(os.urandom(5000))
    (top / "index.html").write_text("<html>")
    (top / "a" / "run.sh").write_text("#!/bin/sh\n")
    (top / "a" / "run.sh").chmod(0o751)
    (top / "empty").chmod(0o700)
    (top / "a" / "b").chmod(0o555)  # no write for its owner: still receives its file (modes are set last)
    top.chmod(0o750)
    report = transfer.get(conn, f"{host.remote}/site", str(tmp_path), recursive=True)
    landed = tmp_path / "site"
    assert everything(landed) == everything(top)
    for rel in everything(top):
        assert mode_of(landed / rel) == mode_of(top / rel), rel
        if (top / rel).is_file():
            assert (landed / rel).read_bytes() == (top / rel).read_bytes(), rel
    assert mode_of(landed) == 0o750
    assert report.destination == str(landed) and report.source == str(top) and report.files == 3
    assert sorted(report.directories) == sorted([str(landed)] + [str(landed / d) for d in ("a", "a/b", "empty")])
    assert temporaries(tmp_path) == []


def test_a_folder_without_recursive_is_refused(conn: SSMConnection, host: HostFolder, tmp_path: Path) -> None:
    (host.path / "d").mkdir()
    with pytest.raises(TransferError) as failed:
        transfer.get(conn, f"{host.remote}/d", str(tmp_path))
    assert failed.value.host == LABEL and str(failed.value) == f"{LABEL}: {host.remote}/d is a directory; pass recursive=True to fetch the whole tree"


def test_a_missing_remote_file_is_named_with_the_login_folder(conn: SSMConnection, host: HostFolder, tmp_path: Path) -> None:
    with pytest.raises(TransferError) as failed:
        transfer.get(conn, f"{host.remote}/nope", str(tmp_path))
    home = host.path.parent
    assert failed.value.host == LABEL and str(failed.value) == f"{LABEL}: {host.remote}/nope: no such remote file or directory; check the path (relative to {home})"


def test_a_glob_fetches_the_matching_files_into_the_folder(conn: SSMConnection, host: HostFolder, tmp_path: Path) -> None:
    logs = host.path / "logs"
    (logs / "old").mkdir(parents=True)
    for name in ("app.log", "db.log", ".hidden.log", "notes.txt"):
        (logs / name).write_text(name)
    (logs / "old" / "x.log").write_text("old")
    report = transfer.get(conn, f"{host.remote}/logs/*.log", str(tmp_path / "got"))
    assert everything(tmp_path / "got") == ["app.log", "db.log"]
    assert (tmp_path / "got" / "db.log").read_text() == "db.log"
    assert report.source == str(logs / "*.log") and report.destination == str(tmp_path / "got")


def test_a_glob_across_folders_and_a_literal_name_that_looks_like_one(conn: SSMConnection, host: HostFolder, tmp_path: Path) -> None:
    for number, day in enumerate(("mon", "tue"), 1):
        (host.path / day).mkdir()
        (host.path / day / f"b{number}.txt").write_text(day)
        (host.path / day / "b22.txt").write_text("no")
    (host.path / "plain").write_text("a file, not a folder")
    (host.path / "odd[1].txt").write_text("literal")
    transfer.get(conn, f"{host.remote}/*/b?.txt", str(tmp_path / "one"))
    assert everything(tmp_path / "one") == ["b1.txt", "b2.txt"] and (tmp_path / "one" / "b2.txt").read_text() == "tue"
    transfer.get(conn, f"{host.remote}/odd[1].txt", str(tmp_path / "two"))
    assert (tmp_path / "two" / "odd[1].txt").read_text() == "literal"


def test_two_matches_landing_on_one_name_are_reported(conn: SSMConnection, host: HostFolder, tmp_path: Path) -> None:
    for day in ("mon", "tue"):
        (host.path / day).mkdir()
        (host.path / day / "b.txt").write_text(day)
    (host.path / "tue" / "c.txt").write_text("c")  # after the clash: still fetched
    with pytest.raises(TransferError) as failed:
        transfer.get(conn, f"{host.remote}/*/*.txt", str(tmp_path))
    assert failed.value.host == LABEL and str(failed.value) == (
        f"{LABEL}: skipping {host.path / 'tue' / 'b.txt'}: another remote file also lands on {tmp_path / 'b.txt'}; fetch it separately"
    )
    assert (tmp_path / "b.txt").read_text() == "mon" and (tmp_path / "c.txt").read_text() == "c"


def test_a_glob_matching_nothing_says_so(conn: SSMConnection, host: HostFolder, tmp_path: Path) -> None:
    (host.path / "a.txt").write_text("a")
    with pytest.raises(TransferError) as failed:
        transfer.get(conn, f"{host.remote}/*.log", str(tmp_path))
    home = host.path.parent
    assert failed.value.host == LABEL and str(failed.value) == f"{LABEL}: no remote file matches {host.remote}/*.log; check the pattern (relative to {home})"


def test_a_glob_matching_a_folder_needs_recursive(conn: SSMConnection, host: HostFolder, tmp_path: Path) -> None:
    (host.path / "d.log").mkdir()
    (host.path / "d.log" / "inside").write_text("i")
    (host.path / "f.log").write_text("f")
    with pytest.raises(TransferError) as failed:
        transfer.get(conn, f"{host.remote}/*.log", str(tmp_path))
    assert failed.value.host == LABEL and str(failed.value) == f"{LABEL}: skipping directory {host.path / 'd.log'}: pass recursive=True to fetch it"
    assert everything(tmp_path) == ["f.log"]
    transfer.get(conn, f"{host.remote}/*.log", str(tmp_path / "all"), recursive=True)
    assert everything(tmp_path / "all") == ["d.log", "d.log/inside", "f.log"]


def test_unsafe_names_and_links_leading_out_are_refused_and_the_rest_arrives(
    conn: SSMConnection, host: HostFolder, tmp_path: Path
) -> None:
    top = host.path / "tree"
    (top / "sub").mkdir(parents=True)
    (top / "good.txt").write_text("good")
    (top / "bad\nname").write_text("bad")
    (top / "sub" / "inside.txt").write_text("in")
    (top / "link-in").symlink_to("sub/inside.txt")
    (top / "link-dir").symlink_to("sub")
    (top / "link-out").symlink_to("/etc/hostname")
    (top / "dangling").symlink_to("nowhere")
    (top / "loop").symlink_to(".")
    with pytest.raises(TransferError) as failed:
        transfer.get(conn, f"{host.remote}/tree", str(tmp_path), recursive=True)
    landed = tmp_path / "tree"
    assert everything(landed) == ["good.txt", "link-dir", "link-dir/inside.txt", "link-in", "sub", "sub/inside.txt"]
    assert (landed / "link-in").read_text() == "in" and not (landed / "link-in").is_symlink()
    errors = failed.value.report.errors  # type: ignore[attr-defined]
    real_top = os.path.realpath(top)
    assert errors == [
        f"{LABEL}: refusing remote name 'bad\\nname' in {top}: it contains a newline; rename it on the host to fetch it",
        f"{LABEL}: skipping {top / 'dangling'}: a dangling symlink; fix or remove it on the host",
        f"{LABEL}: refusing {top / 'link-out'}: a symlink to /etc/hostname, outside the fetched tree {real_top}; "
        "fetch that path directly if you need it",
        f"{LABEL}: skipping {top / 'loop'}: a symlink loop back to {real_top}; remove the link",
    ]
    assert failed.value.host == LABEL and str(failed.value) == f"{errors[0]} (3 more problems; 4 files arrived)"
    assert failed.value.report.files == 4  # type: ignore[attr-defined]


def test_a_glob_refuses_unsafe_names_and_links_leading_out(conn: SSMConnection, host: HostFolder, tmp_path: Path) -> None:
    (host.path / "ok.txt").write_text("ok")
    (host.path / "new\nline.txt").write_text("x")
    (host.path / "out.txt").symlink_to("/etc/hostname")
    (host.path / "in.txt").symlink_to("ok.txt")
    with pytest.raises(TransferError) as failed:
        transfer.get(conn, f"{host.remote}/*.txt", str(tmp_path))
    assert everything(tmp_path) == ["in.txt", "ok.txt"]
    errors = failed.value.report.errors  # type: ignore[attr-defined]
    assert errors == [
        f"{LABEL}: refusing remote name 'new\\nline.txt' in {host.path}: it contains a newline; rename it on the host to fetch it",
        f"{LABEL}: refusing {host.path / 'out.txt'}: a symlink to /etc/hostname, outside the fetched tree {os.path.realpath(host.path)}; "
        "fetch that path directly if you need it",
    ]
    assert str(failed.value).endswith(" (1 more problem; 2 files arrived)")


def test_a_file_that_changed_on_the_host_is_dropped(
    conn: SSMConnection, host: HostFolder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (host.path / "f.bin").write_bytes(os.urandom(SMALL))
    (tmp_path / "f.bin").write_bytes(b"mine")
    script = 'for f; do printf x >> "$f"; done; exec sha256sum -- "$@"'
    monkeypatch.setattr(transfer_session, "SUM_COMMAND", f"xargs -0 sh -c {shlex.quote(script)} sh")
    with pytest.raises(TransferError) as failed:
        transfer.get(conn, f"{host.remote}/f.bi[n]", str(tmp_path))  # a pattern: SFTP, then the read-back checksum
    assert failed.value.host == LABEL and str(failed.value) == (
        f"{LABEL}: {host.path / 'f.bin'} did not verify after download (it changed while being copied); retry"
    )
    assert everything(tmp_path) == ["f.bin"] and (tmp_path / "f.bin").read_bytes() == b"mine"


def test_a_file_the_host_cannot_hash_is_dropped(
    conn: SSMConnection, host: HostFolder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (host.path / "f.bin").write_bytes(b"data")
    monkeypatch.setattr(transfer_session, "SUM_COMMAND", "cat >/dev/null; echo 'cannot read it' >&2; exit 1")
    with pytest.raises(TransferError) as failed:
        transfer.get(conn, f"{host.remote}/f.bi[n]", str(tmp_path))  # a pattern: SFTP, then the read-back checksum
    assert failed.value.host == LABEL and str(failed.value) == (
        f"{LABEL}: {host.path / 'f.bin'} did not verify after download (the host could not read it (cannot read it)); retry"
    )
    assert everything(tmp_path) == []


def test_a_file_on_the_host_we_cannot_read_is_reported_and_the_rest_arrives(
    conn: SSMConnection, host: HostFolder, tmp_path: Path
) -> None:
    (host.path / "a.txt").write_text("a")
    (host.path / "b.txt").write_text("b")
    real_open = transfer_session.paramiko.SFTPClient.open

    def refusing(self: object, path: str, *args: object, **kwargs: object) -> object:
        if path.endswith("/a.txt"):
            raise PermissionError(13, "Permission denied")
        return real_open(self, path, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(transfer_session.paramiko.SFTPClient, "open", refusing)  # as root nothing is unreadable
        with pytest.raises(TransferError) as failed:
            transfer.get(conn, f"{host.remote}/*.txt", str(tmp_path))
    assert failed.value.host == LABEL and str(failed.value) == (
        f"{LABEL}: cannot read {host.path / 'a.txt'} ([Errno 13] Permission denied); check it on the host"
    )
    assert everything(tmp_path) == ["b.txt"]


def test_a_local_file_in_the_way_of_the_folder_is_refused(conn: SSMConnection, host: HostFolder, tmp_path: Path) -> None:
    (host.path / "a.log").write_text("a")
    (tmp_path / "taken").write_text("mine")
    with pytest.raises(TransferError) as failed:
        transfer.get(conn, f"{host.remote}/*.log", str(tmp_path / "taken"))
    assert failed.value.host == LABEL and str(failed.value) == f"{LABEL}: local {tmp_path / 'taken'} exists and is not a folder; choose a folder to fetch into"
    assert (tmp_path / "taken").read_text() == "mine"


def test_a_local_folder_where_a_file_goes_is_reported(conn: SSMConnection, host: HostFolder, tmp_path: Path) -> None:
    (host.path / "t").mkdir()
    (host.path / "t" / "f").write_text("f")
    (host.path / "t" / "g").write_text("g")
    (tmp_path / "t" / "f").mkdir(parents=True)
    with pytest.raises(TransferError) as failed:
        transfer.get(conn, f"{host.remote}/t", str(tmp_path), recursive=True)
    assert failed.value.host == LABEL and str(failed.value) == f"{LABEL}: skipping {host.path / 't' / 'f'}: local {tmp_path / 't' / 'f'} is a folder; move it away"
    assert (tmp_path / "t" / "g").read_text() == "g"


def test_a_local_file_where_a_folder_goes_is_reported(conn: SSMConnection, host: HostFolder, tmp_path: Path) -> None:
    (host.path / "t" / "d").mkdir(parents=True)
    (host.path / "t" / "d" / "f").write_text("f")
    (host.path / "t" / "g").write_text("g")
    (host.path / "t" / "z").mkdir()  # an empty folder after the one in the way: still made
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "d").write_text("mine")
    with pytest.raises(TransferError) as failed:
        transfer.get(conn, f"{host.remote}/t", str(tmp_path), recursive=True)
    assert failed.value.host == LABEL and str(failed.value) == (
        f"{LABEL}: local {tmp_path / 't' / 'd'} exists and is not a folder; move it away and retry (1 more problem; 1 files arrived)"
    )
    assert failed.value.report.errors[1] == (  # type: ignore[attr-defined]  # the report a script reads
        f"{LABEL}: skipping {host.path / 't' / 'd' / 'f'}: local {tmp_path / 't' / 'd'} is not a folder; move it away"
    )
    assert (tmp_path / "t" / "d").read_text() == "mine" and (tmp_path / "t" / "g").read_text() == "g"
    assert (tmp_path / "t" / "z").is_dir()


def test_into_a_file_like_object_only_once_verified(conn: SSMConnection, host: HostFolder) -> None:
    data = os.urandom(SMALL)
    (host.path / "f.bin").write_bytes(data)
    sink = io.BytesIO(b"head:")
    sink.seek(5)
    report = transfer.get(conn, f"{host.remote}/f.bin", sink)
    assert sink.getvalue() == b"head:" + data
    assert report.destination == "<BytesIO>" and report.items[0].destination == "<BytesIO>"
    assert report.items[0].sha256 == sha(data) and report.items[0].source == str(host.path / "f.bin")


@pytest.mark.parametrize(
    ("remote", "sink", "message"),
    [
        ("{dir}/*.bin", io.BytesIO(), "{dir}/*.bin is a pattern; a file-like object takes one file, give its path"),
        ("{dir}/f.bin", 3, "cannot download into a int: give a path or a binary file-like object"),
        ("{dir}/f.bin", io.StringIO(), "{dir}/f.bin arrived and verified, but writing it into the file-like object failed "
         "(string argument expected, got 'bytes'); open it for binary writing"),
    ],
)  # fmt: skip
def test_an_unusable_sink_is_refused_in_one_line(conn: SSMConnection, host: HostFolder, remote: str, sink: object, message: str) -> None:
    (host.path / "f.bin").write_bytes(b"data")
    with pytest.raises(TransferError) as failed:
        transfer.get(conn, remote.format(dir=host.remote), sink)  # type: ignore[arg-type]
    assert failed.value.host == LABEL and str(failed.value) == f"{LABEL}: " + message.format(dir=host.remote)


class ActAfter:
    def __init__(self, act: object) -> None:
        self.act, self.fired = act, threading.Event()

    def __call__(self, moved: int) -> None:
        if not self.fired.is_set():
            self.fired.set()
            self.act()  # type: ignore[operator]


def _watch_bytes(monkeypatch: pytest.MonkeyPatch, hook: ActAfter) -> None:
    """get takes no progress hook: give every StallWatch this one (it is told each chunk that moved)."""
    real_init = transfer_session.StallWatch.__init__

    def init(self: transfer_session.StallWatch, conn: object) -> None:
        real_init(self, conn)
        self.on_bytes = hook

    monkeypatch.setattr(transfer_session.StallWatch, "__init__", init)


@pytest.mark.parametrize("size", [SMALL * 4, BIG])
def test_an_interrupted_download_leaves_nothing(
    conn: SSMConnection, host: HostFolder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    (host.path / "f.bin").write_bytes(os.urandom(size))
    conn.cancel = threading.Event()
    hook = ActAfter(conn.cancel.set)
    _watch_bytes(monkeypatch, hook)
    with pytest.raises(Interrupted):
        transfer.get(conn, f"{host.remote}/f.bin", str(tmp_path / "dest") + os.sep, compress=False)
    assert hook.fired.is_set() and everything(tmp_path / "dest") == []


@pytest.mark.parametrize("size", [SMALL * 4, BIG])
def test_a_connection_lost_mid_download_is_one_line_and_leaves_nothing(
    conn: SSMConnection, host: HostFolder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    (host.path / "f.bin").write_bytes(os.urandom(size))
    conn.open()
    assert conn.tunnel is not None
    hook = ActAfter(conn.tunnel.close)
    _watch_bytes(monkeypatch, hook)
    with pytest.raises(TransferError) as failed:
        transfer.get(conn, f"{host.remote}/f.bin", str(tmp_path / "dest") + os.sep, compress=False)
    message = str(failed.value)
    assert message.startswith(f"{LABEL}: download of {host.remote}/f.bin failed, nothing left half-written (")
    assert message.endswith("); check the connection, then retry") and "\n" not in message, message
    assert everything(tmp_path / "dest") == []


def test_expand_remote_lists_what_a_glob_matches_through_sftp(conn: SSMConnection, host: HostFolder) -> None:
    logs = host.path / "logs"
    (logs / "app.d").mkdir(parents=True)
    for name in ("b.log", "a.log", ".hidden.log", "c.txt", "app.d/x.log"):
        (logs / name).write_text(name)
    (logs / "dir.log").mkdir()
    (logs / "link.log").symlink_to("a.log")
    (logs / "dangling.log").symlink_to("gone")
    (logs / "bad\nname.log").write_text("x")
    sftp = transfer.open_sftp(conn)
    base = f"{host.remote}/logs"
    assert transfer.expand_remote(sftp, f"{base}/*.log") == [
        f"{base}/a.log", f"{base}/b.log", f"{base}/dangling.log", f"{base}/dir.log", f"{base}/link.log"
    ]  # fmt: skip
    assert transfer.expand_remote(sftp, f"{base}/*.log", files_only=True) == [f"{base}/a.log", f"{base}/b.log", f"{base}/link.log"]
    assert transfer.expand_remote(sftp, f"{base}/*/*.log") == [f"{base}/app.d/x.log"]
    assert transfer.expand_remote(sftp, f"{base}/c.txt", files_only=True) == [f"{base}/c.txt"]
    assert transfer.expand_remote(sftp, f"{base}/app.d") == [f"{base}/app.d"]
    assert transfer.expand_remote(sftp, f"{base}/app.d", files_only=True) == []
    assert transfer.expand_remote(sftp, f"{base}/missing") == []
    assert transfer.expand_remote(sftp, f"{base}/c.txt/*") == []  # not a folder: matches nothing, as in a shell
    assert transfer.expand_remote(sftp, f"{base}/.h*") == [f"{base}/.hidden.log"]


def test_check_local_folder_refuses_what_cannot_be_used(tmp_path: Path) -> None:
    transfer.check_local_folder(tmp_path / "new" / "deeper")  # to be made inside a usable folder: fine
    transfer.check_local_folder(tmp_path)
    assert list(tmp_path.iterdir()) == []  # the probe file is gone
    (tmp_path / "file").write_text("x")
    from ssmfab.exceptions import ConfigError

    with pytest.raises(ConfigError) as at:
        transfer.check_local_folder(tmp_path / "file")
    assert str(at.value) == f"--dest {tmp_path / 'file'}: exists and is not a folder; choose a folder"
    with pytest.raises(ConfigError) as under:
        transfer.check_local_folder(tmp_path / "file" / "sub" / "deeper", "--into")
    assert str(under.value) == (
        f"--into {tmp_path / 'file' / 'sub' / 'deeper'}: exists and is not a folder (its parent {tmp_path / 'file'} is a file); "
        "choose a folder"
    )


def test_check_local_folder_names_a_read_only_file_system(tmp_path: Path) -> None:
    from ssmfab.exceptions import ConfigError

    with tmpfs(tmp_path / "ro", "ro,size=64k") as folder:
        with pytest.raises(ConfigError) as failed:
            transfer.check_local_folder(folder / "sub")
    assert str(failed.value) == f"--dest {folder / 'sub'}: cannot create files in {folder}: Read-only file system"


def test_a_glob_through_a_linked_folder_stays_inside_the_fetched_tree(conn: SSMConnection, host: HostFolder, tmp_path: Path) -> None:
    (host.path / "real").mkdir()
    (host.path / "real" / "a.log").write_text("a")
    (host.path / "via").symlink_to("real")
    outside = host.path.parent / f"{host.remote}-outside"
    outside.mkdir()
    try:
        (outside / "o.log").write_text("o")
        (host.path / "out").symlink_to(outside)
        with pytest.raises(TransferError) as failed:
            transfer.get(conn, f"{host.remote}/*/*.log", str(tmp_path))
    finally:
        (outside / "o.log").unlink()
        outside.rmdir()
    assert everything(tmp_path) == ["a.log"]  # real/a.log and via/a.log land on one name: the second is reported
    errors = failed.value.report.errors  # type: ignore[attr-defined]
    assert errors[0] == (
        f"{LABEL}: refusing {host.path / 'out' / 'o.log'}: a symlink to {outside / 'o.log'}, outside the fetched tree "
        f"{host.path}; fetch that path directly if you need it"
    )
    assert errors[1] == (
        f"{LABEL}: skipping {host.path / 'via' / 'a.log'}: another remote file also lands on {tmp_path / 'a.log'}; fetch it separately"
    )


@pytest.mark.parametrize("size", [SMALL, BIG])
def test_while_partial_the_local_file_is_private_under_a_hidden_name(
    conn: SSMConnection, host: HostFolder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    (host.path / "secret.key").write_bytes(os.urandom(size))
    (host.path / "secret.key").chmod(0o644)
    partial: list[tuple[str, int]] = []
    _watch_bytes(monkeypatch, ActAfter(lambda: partial.extend((p.name, mode_of(p)) for p in tmp_path.iterdir())))
    report = transfer.get(conn, f"{host.remote}/secret.key", str(tmp_path), compress=False)
    ((name, mode),) = partial
    assert transfer.is_temp_of(name, "secret.key") and mode == 0o600
    assert mode_of(tmp_path / "secret.key") == 0o644 and everything(tmp_path) == ["secret.key"]
    assert report.wire_bytes == size


def test_the_download_duration_is_the_time_the_call_took(conn: SSMConnection, host: HostFolder, tmp_path: Path) -> None:
    (host.path / "f").write_text("f")
    before = time.monotonic()
    report = transfer.get(conn, f"{host.remote}/f", str(tmp_path))
    assert 0 < report.duration <= time.monotonic() - before


def test_home_relative_and_absolute_remote_paths(conn: SSMConnection, host: HostFolder, tmp_path: Path) -> None:
    (host.path / "f").write_text("f")
    transfer.get(conn, f"~/{host.remote}/f", str(tmp_path / "one"))
    transfer.get(conn, str(host.path / "f"), str(tmp_path / "two"))
    assert (tmp_path / "one").read_text() == "f" == (tmp_path / "two").read_text()


def test_a_tree_fetched_twice_is_filled_again_in_place(conn: SSMConnection, host: HostFolder, tmp_path: Path) -> None:
    (host.path / "t" / "d").mkdir(parents=True)
    (host.path / "t" / "d" / "f").write_text("one")
    transfer.get(conn, f"{host.remote}/t", str(tmp_path), recursive=True)
    (host.path / "t" / "d" / "f").write_text("two")
    report = transfer.get(conn, f"{host.remote}/t", str(tmp_path), recursive=True)
    assert (tmp_path / "t" / "d" / "f").read_text() == "two" and report.files == 1


def test_without_preserve_mode_a_trees_folders_keep_this_machines_defaults(conn: SSMConnection, host: HostFolder, tmp_path: Path) -> None:
    (host.path / "t" / "d").mkdir(parents=True)
    (host.path / "t" / "d" / "f").write_text("f")
    (host.path / "t" / "d").chmod(0o700)
    transfer.get(conn, f"{host.remote}/t", str(tmp_path), recursive=True, preserve_mode=False)
    assert mode_of(tmp_path / "t" / "d") == 0o777 & ~umask() and mode_of(tmp_path / "t" / "d" / "f") == 0o666 & ~umask()


def test_a_stalled_download_is_cut_after_the_stall_timeout_and_leaves_nothing(
    conn: SSMConnection, host: HostFolder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ssmfab.transfer import download

    from .test_upload_over_ssh import _end, _stuck_command

    (host.path / "big.bin").write_bytes(os.urandom(BIG))
    pid_file = tmp_path / "stuck.pid"
    monkeypatch.setattr(download, "STREAM_GET", _stuck_command(pid_file))
    conn.stall_timeout = 0.5
    try:
        with pytest.raises(TransferError) as failed:
            transfer.get(conn, f"{host.remote}/big.bin", str(tmp_path / "dest") + os.sep, compress=False)
    finally:
        _end(pid_file)
    assert failed.value.host == LABEL and str(failed.value) == (
        f"{LABEL}: download of {host.remote}/big.bin stalled: no progress for 0.5s (ssh.stall_timeout); nothing left "
        "half-written; check the host and its tunnel, then retry"
    )
    assert everything(tmp_path / "dest") == []


@pytest.mark.parametrize(
    ("method", "remote"),
    [
        ("stat", "t/f.bin"),
        ("listdir_attr", "t"),  # walking the tree
        ("normalize", "t"),  # resolving a link in it
        ("open", "t/f.bin"),
    ],
)
def test_a_connection_that_dies_at_any_step_of_a_download_is_reported_as_lost(
    conn: SSMConnection, host: HostFolder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str, remote: str
) -> None:
    from .transfer_helpers import cut_during

    (host.path / "t").mkdir()
    (host.path / "t" / "f.bin").write_bytes(os.urandom(SMALL))
    (host.path / "t" / "link").symlink_to("f.bin")
    conn.open()
    cut = cut_during(monkeypatch, conn, method, lambda path: path.startswith(str(host.path / "t")) or path.startswith(f"{host.remote}/t"))
    with pytest.raises(TransferError) as failed:
        transfer.get(conn, f"{host.remote}/{remote}", str(tmp_path / "dest") + os.sep, recursive=True)
    message = str(failed.value)
    assert cut and failed.value.host == LABEL and "\n" not in message
    assert message.startswith(f"{LABEL}: download of {host.remote}/{remote} failed, nothing left half-written"), message
    assert "(SSH through the SSM tunnel failed: " in message and message.endswith("); check the connection, then retry"), message
    assert not (tmp_path / "dest").exists() or everything(tmp_path / "dest") == []


def test_a_file_object_takes_one_file_only_compressed_when_asked(conn: SSMConnection, host: HostFolder, tmp_path: Path) -> None:
    data = b"a compressible line\n" * (BIG // 20)
    (host.path / "d").mkdir()
    (host.path / "d" / "log.txt").write_bytes(data)
    sink = io.BytesIO()
    report = transfer.get(conn, f"{host.remote}/d/log.txt", sink, compress=True)
    assert sink.getvalue() == data and report.wire_bytes < len(data) // 10
    with pytest.raises(TransferError) as failed:
        transfer.get(conn, f"{host.remote}/d", io.BytesIO())
    assert failed.value.host == LABEL and str(failed.value) == f"{LABEL}: {host.remote}/d is a directory; pass recursive=True to fetch the whole tree"
    (tmp_path / "ro").write_bytes(b"")
    with (tmp_path / "ro").open("rb") as read_only, pytest.raises(TransferError) as refused:
        transfer.get(conn, f"{host.remote}/d/log.txt", read_only)
    assert str(refused.value) == (
        f"{LABEL}: {host.remote}/d/log.txt arrived and verified, but writing it into the file-like object failed (write); "
        "open it for binary writing"
    )


def test_a_lost_connection_in_a_tree_names_the_file_it_was_at(
    conn: SSMConnection, host: HostFolder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from .transfer_helpers import cut_during

    (host.path / "t").mkdir()
    (host.path / "t" / "a.bin").write_bytes(b"a")
    (host.path / "t" / "b.bin").write_bytes(b"b")
    conn.open()
    cut_during(monkeypatch, conn, "open", lambda path: path.endswith("/b.bin"))
    with pytest.raises(TransferError) as failed:
        transfer.get(conn, f"{host.remote}/t", str(tmp_path), recursive=True)
    assert str(failed.value).startswith(
        f"{LABEL}: download of {host.remote}/t (at {host.path / 't' / 'b.bin'}) failed, nothing left half-written ("
    ), str(failed.value)
    assert temporaries(tmp_path) == [] and not (tmp_path / "t" / "a.bin").exists()  # nothing was verified yet


def test_a_local_link_to_a_folder_where_a_file_goes_is_replaced_by_the_file(conn: SSMConnection, host: HostFolder, tmp_path: Path) -> None:
    (host.path / "f").write_text("remote")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "dest").mkdir()
    (tmp_path / "dest" / "f").symlink_to(tmp_path / "elsewhere")
    transfer.get(conn, f"{host.remote}/f", str(tmp_path / "dest") + os.sep)
    assert not (tmp_path / "dest" / "f").is_symlink() and (tmp_path / "dest" / "f").read_text() == "remote"
    assert list((tmp_path / "elsewhere").iterdir()) == []


@pytest.mark.parametrize(
    ("host_program", "cause"),
    [
        ("sh -c 'true' sh", "the host's stream ended before its codec byte); check the connection, then retry"),
        ("""sh -c "printf '?12'" sh""", "the host's stream ended before it said whether it compresses); check the connection, then retry"),
        ("""sh -c 'cat -- "$1"' sh""", "the host's stream began with b'x', not the codec byte it was asked for); fix the cause, then retry"),
    ],
    ids=["nothing", "half-a-question", "no-codec-byte"],
)
def test_a_host_stream_that_does_not_answer_the_codec_question_is_named_and_leaves_nothing(
    conn: SSMConnection, host: HostFolder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, host_program: str, cause: str
) -> None:
    # Stand-ins for a host whose stream program is not ssmfab's (or dies at once): the first bytes are never
    # taken as an answer, and the one line says what the host sent instead.
    (host.path / "plain.txt").write_bytes(b"x" * BIG)
    monkeypatch.setattr(transfer.download, "STREAM_GET", host_program)
    with pytest.raises(TransferError) as failed:
        transfer.get(conn, f"{host.remote}/plain.txt", str(tmp_path / "dest") + os.sep, compress=None if "?" in host_program else True)
    message = str(failed.value)
    assert message.startswith(f"{LABEL}: download of {host.remote}/plain.txt failed, nothing left half-written (")
    assert message.endswith(cause) and "\n" not in message, message
    assert everything(tmp_path / "dest") == []


@pytest.mark.parametrize(("compress", "link_rate"), [(True, 1e15), (False, 1000.0)], ids=["forced-on-a-fast-link", "refused-on-a-slow-link"])
def test_into_a_file_object_the_callers_compress_wins_over_the_links_verdict(
    conn: SSMConnection, host: HostFolder, compress: bool, link_rate: float
) -> None:
    data = b"a compressible line\n" * (BIG // 20)
    (host.path / "log.txt").write_bytes(data)
    conn.open()
    conn.link_rates["get"] = link_rate  # what auto would go by: the opposite of what the caller asks
    sink = io.BytesIO()
    report = transfer.get(conn, f"{host.remote}/log.txt", sink, compress=compress)
    assert sink.getvalue() == data
    assert (report.wire_bytes < len(data) // 10) if compress else (report.wire_bytes == len(data)), report.wire_bytes


def test_a_local_link_leading_out_is_never_written_through_and_the_rest_of_the_tree_arrives(conn: SSMConnection, host: HostFolder, tmp_path: Path) -> None:
    (host.path / "t" / "a").mkdir(parents=True)
    (host.path / "t" / "a" / "f").write_text("f")
    (host.path / "t" / "z").mkdir(mode=0o750)
    (host.path / "t" / "z").chmod(0o750)
    (host.path / "t" / "y").mkdir()
    (host.path / "t" / "y" / "g").write_text("g")
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "in" / "t").mkdir(parents=True)
    (tmp_path / "in" / "t" / "a").symlink_to(outside)
    with pytest.raises(TransferError) as failed:
        transfer.get(conn, f"{host.remote}/t", str(tmp_path / "in"), recursive=True)
    assert str(failed.value).startswith(f"{LABEL}: refusing to write {tmp_path / 'in' / 't' / 'a'}: it resolves outside {tmp_path / 'in'}")
    assert list(outside.iterdir()) == []
    assert (tmp_path / "in" / "t" / "y" / "g").read_text() == "g"
    assert (tmp_path / "in" / "t" / "z").is_dir() and mode_of(tmp_path / "in" / "t" / "z") == 0o750  # empty, kept with its mode


@pytest.mark.parametrize("offset", [-1, 0, 1], ids=["below", "at", "above"])
def test_a_file_at_the_streaming_threshold_arrives_byte_for_byte(conn: SSMConnection, host: HostFolder, tmp_path: Path, offset: int) -> None:
    data = os.urandom(transfer_session.STREAM_MIN_BYTES + offset)
    (host.path / "edge.bin").write_bytes(data)
    report = transfer.get(conn, f"{host.remote}/edge.bin", str(tmp_path / "edge.bin"))
    assert (tmp_path / "edge.bin").read_bytes() == data and report.items[0].sha256 == sha(data) and report.items[0].size == len(data)


def test_a_get_after_a_put_timed_the_link_the_other_way(conn: SSMConnection, host: HostFolder, tmp_path: Path) -> None:
    data = b"compressible " * (BIG // 13)
    (host.path / "back.txt").write_bytes(data)
    conn.open()
    conn.link_rates.clear()
    conn.link_rates["put"] = 1000.0  # an upload timed the link up, not down
    report = transfer.get(conn, f"{host.remote}/back.txt", str(tmp_path / "back.txt"))
    assert (tmp_path / "back.txt").read_bytes() == data and report.items[0].sha256 == sha(data)


def test_a_file_that_changed_is_dropped_and_the_next_one_still_arrives(
    conn: SSMConnection, host: HostFolder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (host.path / "a.bin").write_bytes(b"a" * 1000)
    (host.path / "b.bin").write_bytes(b"b" * 1000)
    # A host where a.bin is appended to between its copy and its checksum (a log being written).
    script = 'for f; do case "$f" in *a.bin) printf x >> "$f";; esac; done; exec sha256sum -- "$@"'
    monkeypatch.setattr(transfer_session, "SUM_COMMAND", f"xargs -0 sh -c {shlex.quote(script)} sh")
    with pytest.raises(TransferError) as failed:
        transfer.get(conn, f"{host.remote}/*.bin", str(tmp_path))
    assert str(failed.value) == f"{LABEL}: {host.path / 'a.bin'} did not verify after download (it changed while being copied); retry"
    assert everything(tmp_path) == ["b.bin"] and (tmp_path / "b.bin").read_bytes() == b"b" * 1000


@pytest.mark.parametrize("setting", [True, False])
def test_the_connections_compress_setting_is_the_default(conn: SSMConnection, host: HostFolder, tmp_path: Path, setting: bool) -> None:
    data = b"a compressible line\n" * (BIG // 20)
    (host.path / "log.txt").write_bytes(data)
    conn.open()
    conn.link_rates["get"] = 1000.0 if not setting else 1e15  # the link alone would decide the other way
    conn.transfer_compress = setting  # transfer.compress in the config
    report = transfer.get(conn, f"{host.remote}/log.txt", str(tmp_path / "log.txt"))
    assert (tmp_path / "log.txt").read_bytes() == data
    assert (report.wire_bytes < len(data) // 10) if setting else (report.wire_bytes == len(data)), report.wire_bytes


def test_a_get_leaves_no_channel_open_on_the_connection(conn: SSMConnection, host: HostFolder, tmp_path: Path) -> None:
    (host.path / "f.txt").write_text("f")
    conn.open()
    transport = conn.client.get_transport()
    assert transport is not None
    before = {channel.chanid for channel in transport._channels.values() if not channel.closed}  # noqa: SLF001
    transfer.get(conn, f"{host.remote}/f.txt", str(tmp_path / "f.txt"))
    with pytest.raises(TransferError):
        transfer.get(conn, f"{host.remote}/missing.txt", str(tmp_path / "m.txt"))
    after = {channel.chanid for channel in transport._channels.values() if not channel.closed}  # noqa: SLF001
    assert after <= before, after - before  # the SFTP channel each get opened is closed again


@pytest.mark.parametrize(("link_rate", "compressed"), [(1000.0, True), (1e15, False)], ids=["slow-link", "fast-link"])
def test_asked_by_the_host_the_links_rate_gives_the_verdict(
    conn: SSMConnection, host: HostFolder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, link_rate: float, compressed: bool
) -> None:
    # The host program's question (?SPEED) is asked when the link's rate is not known when the stream starts;
    # the rate is preset here so that the verdict is known: slow → gzip, faster than any compressor → raw.
    data = b"0123456789abcdef" * (BIG // 16)
    (host.path / "z.txt").write_bytes(data)
    conn.open()
    conn.link_rates["get"] = link_rate
    monkeypatch.setattr(transfer.download, "_codec", lambda conn, compress: "ask")
    report = transfer.get(conn, f"{host.remote}/z.txt", str(tmp_path / "z.txt"))
    assert (tmp_path / "z.txt").read_bytes() == data and report.items[0].sha256 == sha(data)
    assert (report.wire_bytes < len(data) // 10) if compressed else (report.wire_bytes == len(data)), report.wire_bytes


def _channel_requests(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every exec command and subsystem the connection's channels ask for, in order."""
    import paramiko

    asked: list[str] = []
    real_exec, real_subsystem = paramiko.Channel.exec_command, paramiko.Channel.invoke_subsystem

    def exec_command(self: paramiko.Channel, command: str) -> None:
        asked.append(command)
        real_exec(self, command)

    def invoke_subsystem(self: paramiko.Channel, subsystem: str) -> None:
        asked.append(f"subsystem {subsystem}")
        real_subsystem(self, subsystem)

    monkeypatch.setattr(paramiko.Channel, "exec_command", exec_command)
    monkeypatch.setattr(paramiko.Channel, "invoke_subsystem", invoke_subsystem)
    return asked


@pytest.mark.parametrize("size", [SMALL, BIG])
@pytest.mark.parametrize("form", ["relative", "home", "absolute"])
def test_one_named_file_streams_in_one_command_started_before_the_sftp_session(
    conn: SSMConnection, host: HostFolder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int, form: str
) -> None:
    # The host starts its program while the SFTP session opens and plans (each step a round trip on a real
    # link), and a small file comes with its checksum in that command: no SFTP read, no checksum command after.
    data = os.urandom(size)
    (host.path / "one.bin").write_bytes(data)
    remote = {"relative": f"{host.remote}/one.bin", "home": f"~/{host.remote}/one.bin", "absolute": str(host.path / "one.bin")}[form]
    conn.open()
    asked = _channel_requests(monkeypatch)
    report = transfer.get(conn, remote, str(tmp_path / "one.bin"))
    assert (tmp_path / "one.bin").read_bytes() == data and report.items[0].sha256 == sha(data)
    assert len(asked) == 2 and asked[1] == "subsystem sftp", asked
    assert asked[0].startswith(transfer.download._SAY_WHERE + transfer.download.STREAM_GET)  # noqa: SLF001
    assert asked[0].endswith(shlex.quote(remote.removeprefix("~/")) + " ask")


def test_a_relative_path_streamed_early_is_used_only_where_the_sftp_session_starts(
    conn: SSMConnection, host: HostFolder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An SFTP server may start elsewhere than the login folder (sftp-server -d): a relative path then names
    # another file for the early program than the one planned. Stood for here by an early program that starts
    # in another folder holding a file of the same relative name: the planned file arrives, not that one.
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / host.remote).mkdir(parents=True)
    (elsewhere / host.remote / "f.bin").write_bytes(b"the wrong file" * (BIG // 3))  # more than its window holds
    data = os.urandom(BIG)
    (host.path / "f.bin").write_bytes(data)
    monkeypatch.setattr(transfer.download, "_SAY_WHERE", f"sh -c 'cd {shlex.quote(str(elsewhere))} && pwd -P >&2; exec \"$@\"' sh ")
    early_left: list[int] = []

    def check_the_early_program() -> None:  # once the planned file flows: the other, given the relative path, ended
        deadline = time.monotonic() + 10
        while (left := _streaming(f"{host.remote}/f.bin")) and time.monotonic() < deadline:
            time.sleep(0.05)
        early_left.extend(left)

    hook = ActAfter(check_the_early_program)
    _watch_bytes(monkeypatch, hook)
    report = transfer.get(conn, f"{host.remote}/f.bin", str(tmp_path / "f.bin"))
    assert (tmp_path / "f.bin").read_bytes() == data and report.items[0].sha256 == sha(data)
    assert hook.fired.is_set() and early_left == []


@pytest.mark.parametrize("python", [True, False], ids=["python3", "posix-tools"])
def test_a_streamed_file_gone_before_its_turn_is_reported_and_the_rest_arrives(
    conn: SSMConnection, host: HostFolder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, python: bool
) -> None:
    # Listed, then rotated away before its stream opened it: the host's own words, as for a file SFTP cannot open.
    from ssmfab.hoststreams import stream_command

    data = os.urandom(BIG)
    (host.path / "a.log").write_bytes(os.urandom(BIG))
    (host.path / "b.log").write_bytes(data)
    real_plan = transfer.download.plan_download

    def plan_then_rotate(*args: object) -> object:
        plan = real_plan(*args)  # type: ignore[arg-type]
        (host.path / "a.log").unlink()
        return plan

    monkeypatch.setattr(transfer.download, "plan_download", plan_then_rotate)
    monkeypatch.setattr(transfer.download, "STREAM_GET", stream_command("get", python=python))
    with pytest.raises(TransferError) as failed:
        transfer.get(conn, f"{host.remote}/*.log", str(tmp_path))
    message = str(failed.value)
    assert message.startswith(f"{LABEL}: cannot read {host.path / 'a.log'} (") and "\n" not in message, message
    assert "No such file" in message and message.endswith("); check it on the host"), message
    assert everything(tmp_path) == ["b.log"] and (tmp_path / "b.log").read_bytes() == data


def test_a_small_file_streamed_early_goes_raw_without_timing_the_link(conn: SSMConnection, host: HostFolder, tmp_path: Path) -> None:
    # Over SFTP it would have gone raw; timing the link for it would cost more than compressing could save.
    data = b"a compressible line\n" * (SMALL // 20)
    (host.path / "small.log").write_bytes(data)
    conn.open()
    report = transfer.get(conn, f"{host.remote}/small.log", str(tmp_path / "small.log"))
    assert (tmp_path / "small.log").read_bytes() == data and report.wire_bytes == len(data)
    assert "get" not in conn.link_rates


def _streaming(remote: str) -> list[int]:
    """The processes (the host's programs: the loopback sshd's, on this machine) given ``remote`` to stream."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and remote.encode() in (proc / "cmdline").read_bytes().split(b"\0"):
                found.append(int(proc.name))
        except OSError:
            continue  # ended meanwhile
    return found


def test_an_early_stream_left_unused_ends_on_the_host(conn: SSMConnection, host: HostFolder, tmp_path: Path) -> None:
    # The file is skipped (a local folder stands where it would land): its program, which started before the
    # plan and filled the window, must not be left blocked on the host until the connection closes.
    (host.path / "big.bin").write_bytes(os.urandom(4 * BIG))
    (tmp_path / "big.bin").mkdir()
    conn.open()
    with pytest.raises(TransferError, match="is a folder; move it away") as failed:
        transfer.get(conn, f"{host.remote}/big.bin", str(tmp_path) + os.sep)
    deadline = time.monotonic() + 10
    while _streaming(f"{host.remote}/big.bin") and time.monotonic() < deadline:
        time.sleep(0.05)
    # The error is still held (a script keeping each host's failure): collecting the channel is not what ends it.
    assert _streaming(f"{host.remote}/big.bin") == [] and conn.is_connected and failed.value.__traceback__ is not None
