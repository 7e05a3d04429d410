"""How get plans what to fetch, over a real SSH connection (ssmfab's own connection to a loopback sshd, in this
process): the edges of a remote tree a host may hold deep inside it (links leading out or nowhere, loops, FIFOs,
names that are not UTF-8, folders that cannot be listed), globs over odd entries, and the local temporary file
that never opens an existing name. Each problem is reported in its own words, naming the path; the rest arrives."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ssmfab import transfer
from ssmfab.connection import SSMConnection
from ssmfab.exceptions import TransferError
from ssmfab.transfer import plan as transfer_plan
from ssmfab.transfer import session as transfer_session
from ssmfab.transfer.session import STREAM_MIN_BYTES

from .transfer_helpers import HostFolder, conn, cut_during, host  # noqa: F401 - fixtures

LABEL = "i-0123456789abcdef0"


def everything(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def errors_of(failed: pytest.ExceptionInfo[TransferError]) -> list[str]:
    return list(failed.value.report.errors)  # type: ignore[attr-defined]


def test_problems_deep_in_a_tree_are_each_named_and_the_rest_arrives(conn: SSMConnection, host: HostFolder, tmp_path: Path) -> None:
    top = host.path / "tree"
    deep = top / "a" / "b"
    deep.mkdir(parents=True)
    (deep / "keep.txt").write_text("kept")
    (deep / "bad\nname").write_text("x")
    (deep / "out").symlink_to("/etc/hostname")
    (deep / "gone").symlink_to("nowhere/at/all")  # through a missing folder: resolving it fails on the host
    (deep / "back").symlink_to(".")  # a loop two folders down: its folder is already on the walk
    os.mkfifo(deep / "pipe")
    with pytest.raises(TransferError) as failed:
        transfer.get(conn, f"{host.remote}/tree", str(tmp_path), recursive=True)
    real_deep, real_top = os.path.realpath(deep), os.path.realpath(top)
    assert errors_of(failed) == [
        f"{LABEL}: skipping {deep / 'back'}: a symlink loop back to {real_deep}; remove the link",
        f"{LABEL}: refusing remote name 'bad\\nname' in {deep}: it contains a newline; rename it on the host to fetch it",
        f"{LABEL}: skipping {deep / 'gone'}: a dangling symlink; fix or remove it on the host",
        f"{LABEL}: refusing {deep / 'out'}: a symlink to /etc/hostname, outside the fetched tree {real_top}; "
        "fetch that path directly if you need it",
        f"{LABEL}: skipping {deep / 'pipe'}: not a regular file (socket, FIFO or device)",
    ]
    assert everything(tmp_path / "tree") == ["a", "a/b", "a/b/keep.txt"]
    assert (tmp_path / "tree" / "a" / "b" / "keep.txt").read_text() == "kept"


def test_a_folder_holding_a_name_that_is_not_utf8_is_named_and_the_rest_arrives(
    conn: SSMConnection, host: HostFolder, tmp_path: Path
) -> None:
    top = host.path / "tree"
    (top / "odd").mkdir(parents=True)
    (top / "fine").mkdir()
    (top / "fine" / "f.txt").write_text("f")
    with open(os.path.join(os.fsencode(top / "odd"), b"caf\xe9.txt"), "wb") as latin1:
        latin1.write(b"latin-1 name")
    with pytest.raises(TransferError) as failed:
        transfer.get(conn, f"{host.remote}/tree", str(tmp_path), recursive=True)
    assert errors_of(failed) == [
        f"{LABEL}: cannot list {top / 'odd'}: it holds names that are not UTF-8; rename them on the host"
    ]
    assert everything(tmp_path / "tree") == ["fine", "fine/f.txt", "odd"]


def test_a_folder_the_host_will_not_list_is_named_with_the_reason_and_the_rest_arrives(
    conn: SSMConnection, host: HostFolder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    top = host.path / "tree"
    (top / "locked").mkdir(parents=True)
    (top / "locked" / "secret").write_text("s")
    (top / "open.txt").write_text("o")
    real_listdir = transfer_session.paramiko.SFTPClient.listdir_attr

    def refusing(self: object, path: str = ".") -> object:
        if path.endswith("/locked"):
            raise PermissionError(13, "Permission denied")
        return real_listdir(self, path)

    # A stand-in for the host's refusal: the loopback sshd runs as root, which may list every folder.
    monkeypatch.setattr(transfer_session.paramiko.SFTPClient, "listdir_attr", refusing)
    with pytest.raises(TransferError) as failed:
        transfer.get(conn, f"{host.remote}/tree", str(tmp_path), recursive=True)
    assert errors_of(failed) == [
        f"{LABEL}: cannot list {top / 'locked'} (Permission denied); check its permissions on the host"
    ]
    assert everything(tmp_path / "tree") == ["locked", "open.txt"]


def test_a_connection_lost_while_resolving_a_link_deep_in_a_tree_is_the_failure(
    conn: SSMConnection, host: HostFolder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (host.path / "t" / "sub").mkdir(parents=True)
    (host.path / "t" / "sub" / "f.bin").write_bytes(b"f")
    (host.path / "t" / "sub" / "link").symlink_to("f.bin")
    conn.open()
    cut = cut_during(monkeypatch, conn, "normalize", lambda path: path.endswith("/sub/link"))
    with pytest.raises(TransferError) as failed:
        transfer.get(conn, f"{host.remote}/t", str(tmp_path / "dest") + os.sep, recursive=True)
    message = str(failed.value)
    assert cut and "dangling" not in message, message  # the lost connection, never a "dangling link"
    assert message.startswith(f"{LABEL}: download of {host.remote}/t failed, nothing left half-written"), message
    assert "(SSH through the SSM tunnel failed: " in message and "exceptions must derive" not in message, message
    assert not (tmp_path / "dest").exists() or everything(tmp_path / "dest") == []


def test_a_large_file_inside_a_tree_is_streamed_and_compressed_when_asked(conn: SSMConnection, host: HostFolder, tmp_path: Path) -> None:
    data = b"a line of a log file, said again and again\n" * (STREAM_MIN_BYTES // 40)
    (host.path / "tree" / "logs").mkdir(parents=True)
    (host.path / "tree" / "logs" / "big.log").write_bytes(data)
    report = transfer.get(conn, f"{host.remote}/tree", str(tmp_path), recursive=True, compress=True)
    assert (tmp_path / "tree" / "logs" / "big.log").read_bytes() == data
    assert report.wire_bytes < len(data) // 10  # its size was known: it went as a compressed stream


def test_a_glob_passes_over_a_link_to_a_file_where_a_folder_was_wanted(conn: SSMConnection, host: HostFolder, tmp_path: Path) -> None:
    (host.path / "a-file").write_text("a file")
    (host.path / "a-link").symlink_to("a-file")  # sorted first: listing it fails, and the glob goes on
    (host.path / "b").mkdir()
    (host.path / "b" / "x.txt").write_text("x")
    transfer.get(conn, f"{host.remote}/*/x.txt", str(tmp_path))
    assert everything(tmp_path) == ["x.txt"] and (tmp_path / "x.txt").read_text() == "x"


def test_a_globs_files_arrive_and_are_reported_in_name_order(conn: SSMConnection, host: HostFolder, tmp_path: Path) -> None:
    names = ["m.log", "c.log", "x.log", "a.log", "q.log"]
    for name in names:  # created out of order: the host lists them in its own order
        (host.path / name).write_text(name)
    report = transfer.get(conn, f"{host.remote}/*.log", str(tmp_path))
    assert [Path(item.destination).name for item in report.items] == sorted(names)


def test_a_literal_name_that_looks_like_a_glob_is_fetched_even_as_a_link_leading_out(
    conn: SSMConnection, host: HostFolder, tmp_path: Path
) -> None:
    """Named outright, a path is fetched wherever its link leads, as any path named without a glob is; only
    links met while expanding a glob or walking a tree must stay inside it."""
    (host.path / "odd[1].txt").symlink_to("/etc/hostname")
    transfer.get(conn, f"{host.remote}/odd[1].txt", str(tmp_path) + os.sep)
    assert (tmp_path / "odd[1].txt").read_text() == Path("/etc/hostname").read_text()


def test_the_local_temporary_file_never_opens_a_name_already_there(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    planted = tmp_path / ".taken.part"
    planted.write_text("someone else's")
    names = iter([planted.name, planted.name, ".free.part"])
    monkeypatch.setattr(transfer_plan, "temp_name", lambda name: next(names))
    fd, temp = transfer_plan.local_temp(tmp_path, "file.bin")
    os.close(fd)
    assert temp == tmp_path / ".free.part" and planted.read_text() == "someone else's"


def test_a_path_ending_in_dotdot_lands_under_the_folder_it_names(conn: SSMConnection, host: HostFolder, tmp_path: Path) -> None:
    (host.path / "sub").mkdir()
    (host.path / "top.txt").write_text("top")
    transfer.get(conn, f"{host.remote}/sub/..", str(tmp_path) + os.sep, recursive=True)
    assert everything(tmp_path) == [host.remote, f"{host.remote}/sub", f"{host.remote}/top.txt"]


def test_a_named_remote_file_whose_name_cannot_be_a_local_one_is_refused(conn: SSMConnection, host: HostFolder, tmp_path: Path) -> None:
    (host.path / "two\nlines").write_text("x")
    with pytest.raises(TransferError) as failed:
        transfer.get(conn, f"{host.remote}/two\nlines", str(tmp_path) + os.sep)
    assert failed.value.host == LABEL and str(failed.value) == (
        f"{LABEL}: refusing remote name 'two\\nlines' ('{host.path}/two\\nlines'): it contains a newline; "
        "rename it on the host to fetch it"
    )
    assert everything(tmp_path) == []


def test_a_named_fifo_is_no_file_to_fetch(conn: SSMConnection, host: HostFolder, tmp_path: Path) -> None:
    os.mkfifo(host.path / "pipe")
    with pytest.raises(TransferError) as failed:
        transfer.get(conn, f"{host.remote}/pipe", str(tmp_path) + os.sep)
    assert failed.value.host == LABEL and str(failed.value) == f"{LABEL}: skipping {host.path / 'pipe'}: not a regular file or directory"
    assert everything(tmp_path) == []
