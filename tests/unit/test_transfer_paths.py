"""The path rules of transfers, without a host: which remote names are refused, how globs split and match,
where relative paths land, what counts as inside a tree, and how checksum output is read back."""

from __future__ import annotations

import hashlib
import io
import os
import threading
from pathlib import Path

import pytest

from ssmfab.exceptions import TransferError
from ssmfab.transfer import (
    CHUNK,
    copy_hashed,
    glob_matches,
    has_glob,
    local_inside,
    parse_sums,
    remote_absolute,
    remote_inside,
    remote_join,
    scan_local,
    show,
    split_glob,
    temp_name,
    unsafe_name,
)


DIGEST = "ab" * 32


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "/", "new\nline", "cr\rname", "nul\0byte"])
def test_names_that_cannot_be_local_file_names_are_refused(name: str) -> None:
    assert unsafe_name(name) is not None


@pytest.mark.parametrize("name", ["plain.txt", "with space", "ünïcödé — 名前", "...", ".hidden", "-rf", "a\\b", "x" * 255])
def test_ordinary_names_pass(name: str) -> None:
    assert unsafe_name(name) is None


def test_the_reason_names_the_problem() -> None:
    assert unsafe_name("a\nb") == "contains a newline"
    assert unsafe_name("a/b") == "contains a slash"
    assert "not a file name" in (unsafe_name("..") or "")


@pytest.mark.parametrize(
    ("pattern", "base", "parts"),
    [
        ("logs/*.log", "logs", ["*.log"]),
        ("a/*/b?.txt", "a", ["*", "b?.txt"]),
        ("/var/log/*/app*.log", "/var/log", ["*", "app*.log"]),
        ("*.txt", ".", ["*.txt"]),
        ("/[ab]*", "/", ["[ab]*"]),
        ("a//b/./c*", "a/b", ["c*"]),
        ("x/[0-9]/y/z", "x", ["[0-9]", "y", "z"]),
    ],
)
def test_split_glob_keeps_the_literal_prefix(pattern: str, base: str, parts: list[str]) -> None:
    assert has_glob(pattern)
    assert split_glob(pattern) == (base, parts)


def test_plain_paths_are_not_globs() -> None:
    assert not has_glob("logs/app.log")
    assert not has_glob("with space/ünï")


def test_glob_components_match_like_a_shell() -> None:
    assert glob_matches("app.log", "*.log")
    assert not glob_matches(".secret.log", "*.log")  # a leading dot must be matched explicitly
    assert glob_matches(".secret.log", ".*.log")
    assert glob_matches("b1.txt", "b?.txt") and not glob_matches("b10.txt", "b?.txt")
    assert not glob_matches("APP.LOG", "*.log")  # case-sensitive, as on the host


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("", "/home/u"),
        (".", "/home/u"),
        ("~", "/home/u"),
        ("~/", "/home/u"),
        ("~/a/b", "/home/u/a/b"),
        ("a/b/", "/home/u/a/b"),
        ("uploads", "/home/u/uploads"),
        ("/etc/x", "/etc/x"),
        ("/", "/"),
        ("~other/x", "/home/u/~other/x"),  # only the login user's ~ is known; ~other is a plain name
    ],
)
def test_relative_remote_paths_start_at_the_login_directory(path: str, expected: str) -> None:
    assert remote_absolute("/home/u", path) == expected


def test_remote_join() -> None:
    assert remote_join(".", "a") == "a"
    assert remote_join("", "a") == "a"
    assert remote_join("/", "a") == "/a"
    assert remote_join("/x/", "a") == "/x/a"
    assert remote_join("/x", ".") == "/x"


@pytest.mark.parametrize(
    ("root", "path", "inside"),
    [
        ("/srv/tree", "/srv/tree", True),
        ("/srv/tree", "/srv/tree/a/b", True),
        ("/srv/tree/", "/srv/tree/a", True),
        ("/srv/tree", "/srv/tree2/a", False),  # a shared prefix is not containment
        ("/srv/tree", "/srv", False),
        ("/srv/tree", "/etc/passwd", False),
        ("/", "/etc/passwd", True),
    ],
)
def test_remote_containment_is_by_path_component(root: str, path: str, inside: bool) -> None:
    assert remote_inside(root, path) is inside


def test_local_containment_follows_symlinks_already_on_disk(tmp_path: Path) -> None:
    dest, outside = tmp_path / "dest", tmp_path / "outside"
    dest.mkdir()
    outside.mkdir()
    (dest / "sneaky").symlink_to(outside)
    assert local_inside(dest, dest / "a" / "b.txt")  # not yet there: still inside
    assert not local_inside(dest, dest / "sneaky" / "b.txt")
    assert not local_inside(dest, dest / ".." / "outside" / "b.txt")
    assert not local_inside(tmp_path / "de", tmp_path / "dest" / "x")


def test_temp_names_are_hidden_unique_and_fit_name_max() -> None:
    name = temp_name("report.csv")
    assert name.startswith(".report.csv.ssmfab-") and name.endswith(".part")
    assert temp_name("a") != temp_name("a")
    for long_name in ["x" * 255, "名" * 85]:  # 255 bytes of ASCII, 255 bytes of 3-byte characters
        assert len(temp_name(long_name).encode()) <= 255


def test_parse_sums_reads_both_tools_and_undoes_escaping() -> None:
    output = (
        f"{DIGEST}  /h/plain.txt\n"
        f"{DIGEST.upper()} */h/binary mode\n"  # shasum -b style
        f"\\{DIGEST}  /h/new\\nline\\\\back\n"  # sha256sum escapes newline and backslash
        f"{DIGEST}  /h/ünï\n"
        "sha256sum: /h/gone: No such file or directory\n"
        "garbage\n"
    ).encode()
    assert parse_sums(output) == {
        "/h/plain.txt": DIGEST,
        "/h/binary mode": DIGEST,
        "/h/new\nline\\back": DIGEST,
        "/h/ünï": DIGEST,
    }


def test_messages_show_odd_paths_on_one_line() -> None:
    assert show("plain path/ünï") == "plain path/ünï"
    assert "\n" not in show("bad\nname") and "\\n" in show("bad\nname")


def test_local_scan_refuses_newlines_before_anything_is_sent(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "bad\nname").write_text("x")
    with pytest.raises(TransferError, match=r"^web-1: refusing local name .*bad\\nname.*contains a newline; rename it") as err:
        scan_local(tree, True, "web-1")
    assert "\n" not in str(err.value)


def test_local_scan_lists_trees_with_empty_dirs_and_modes(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "a" / "empty").mkdir(parents=True)
    (tree / "a" / "run.sh").write_text("#!/bin/sh\n")
    (tree / "a" / "run.sh").chmod(0o750)
    (tree / "top.txt").write_text("top")
    (tree / "link-to-top").symlink_to("top.txt")
    (tree / "loop").symlink_to(".")
    os.mkfifo(tree / "fifo")
    scanned = scan_local(tree, True, "h")
    assert [rel for rel, _ in scanned.dirs] == ["a", "a/empty"]
    assert [f.rel for f in scanned.files] == ["a/run.sh", "link-to-top", "top.txt"]
    assert [f.size for f in scanned.files] == [10, 3, 3] and scanned.files[0].mode == 0o750
    assert any("fifo" in e and "not a regular file" in e for e in scanned.errors)  # a FIFO would block a reader
    assert any("loop" in e and "symlink loop" in e for e in scanned.errors)


@pytest.mark.parametrize(
    ("setup", "recursive", "needle"),
    [
        ("missing", False, "no such local file or directory; check the path"),
        ("dir", False, "is a directory; pass recursive=True"),
    ],
)
def test_local_scan_errors_name_host_path_and_fix(tmp_path: Path, setup: str, recursive: bool, needle: str) -> None:
    path = tmp_path / "thing"
    if setup == "dir":
        path.mkdir()
    with pytest.raises(TransferError, match=needle) as err:
        scan_local(path, recursive, "db-1 (i-0abc)")
    assert str(err.value).startswith("db-1 (i-0abc): ") and str(path) in str(err.value)


@pytest.mark.parametrize("hash_aside", [False, True])
def test_copy_hashed_copies_and_hashes_every_byte_in_order(hash_aside: bool) -> None:
    data = os.urandom(3 * CHUNK + 12_345)
    source, sink = io.BytesIO(data), io.BytesIO()
    digest = hashlib.sha256()
    before = set(threading.enumerate())

    class Watch:
        progressed = 0

        def progress(self, moved: int = 0) -> None:
            self.progressed += 1

    watch = Watch()
    assert copy_hashed(source.read, sink.write, digest, watch, hash_aside=hash_aside) == len(data)  # type: ignore[arg-type]
    assert sink.getvalue() == data and digest.hexdigest() == hashlib.sha256(data).hexdigest()
    assert watch.progressed == 4
    assert [t for t in threading.enumerate() if t not in before] == []  # the helper thread is gone once the copy returns


def test_a_failing_write_stops_the_helper_thread_too() -> None:
    before = set(threading.enumerate())

    def refuse(chunk: bytes) -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        copy_hashed(io.BytesIO(os.urandom(CHUNK * 2)).read, refuse, hashlib.sha256(), None, hash_aside=True)  # type: ignore[arg-type]
    assert [t for t in threading.enumerate() if t not in before] == []  # (a thread of an earlier test may end meanwhile)


def test_temp_names_keep_as_much_of_the_name_as_fits_on_character_boundaries() -> None:
    from ssmfab.transfer import TEMP_STEM_BYTES, is_temp_of

    def stem(name: str) -> str:
        temp = temp_name(name)
        assert is_temp_of(temp, name), temp
        return temp[1 : -len(".ssmfab-01234567.part")]

    assert stem("x" * TEMP_STEM_BYTES) == "x" * TEMP_STEM_BYTES  # exactly at the limit: whole
    assert stem("y" * (TEMP_STEM_BYTES + 3)) == "y" * TEMP_STEM_BYTES
    assert stem("é" * 101) == "é" * 100  # 202 bytes: cut by whole characters to 200


@pytest.mark.parametrize(
    ("entry", "name", "expected"),
    [
        (".app.log.ssmfab-0123abcd.part", "app.log", True),
        (".app.log.ssmfab-0123abc.part", "app.log", False),  # 7 hex digits
        (".app.log.ssmfab-0123abcde.part", "app.log", False),
        (".app.log.ssmfab-0123ABCD.part", "app.log", False),  # temp_name writes lower case
        (".app.log.ssmfab-0123abcg.part", "app.log", False),
        ("app.log.ssmfab-0123abcd.part", "app.log", False),  # not hidden
        (".app.log.ssmfab-0123abcd.partx", "app.log", False),
        (".app.log.ssmfab-0123abcd.part", "app.lo", False),  # another file's
        (".appxlog.ssmfab-0123abcd.part", "app.log", False),  # the dot is a dot, not any character
        ("x.app.log.ssmfab-0123abcd.part", "app.log", False),
    ],
)
def test_only_temporary_names_of_that_very_file_are_recognised(entry: str, name: str, expected: bool) -> None:
    from ssmfab.transfer import is_temp_of

    assert is_temp_of(entry, name) is expected


def test_a_long_names_temporary_name_is_recognised_by_its_cut_stem() -> None:
    from ssmfab.transfer import is_temp_of

    long_name = "z" * 250
    assert is_temp_of(temp_name(long_name), long_name)
    assert not is_temp_of(f".{long_name}.ssmfab-0123abcd.part", long_name)


def test_parse_sums_skips_what_is_not_a_checksum_line_and_reads_on() -> None:
    output = (
        f"{DIGEST}\t/h/tab-separated\n"  # wrong separator, digest fine: skipped
        f"{'g' * 64}  /h/not-hex\n"  # right separator, digest not hex: skipped
        f"{DIGEST}  /h/after\n"
        f"\\{DIGEST}  /h/odd\\tescape\\rcr\n"  # an escape sha256sum does not write is kept as it is
    ).encode() + DIGEST.encode() + b"  /h/not-utf8-\xff\n"
    assert parse_sums(output) == {
        "/h/after": DIGEST,
        "/h/odd\\tescape\rcr": DIGEST,
        "/h/not-utf8-\udcff": DIGEST,  # the name as the host's bytes, as paths are given to it
    }


def test_remote_path_arithmetic_at_its_edges() -> None:
    assert remote_join("/data/X", "f") == "/data/X/f"
    assert remote_join("/data/", "f") == "/data/f"
    assert remote_join("/a", "") == "/a" and remote_join("/a", ".") == "/a"
    assert remote_join("", "f") == "f" and remote_join(".", "f") == "f"
    assert remote_inside("/a/", "/a") and remote_inside("/a/", "/a/") and remote_inside("/a", "/a/b")
    assert not remote_inside("/data/X/", "/data/Y") and not remote_inside("/data/X", "/data/XY")
    assert remote_absolute("/home/u", "~X") == "/home/u/~X"


def test_labels_one_line_text_and_odd_characters() -> None:
    from types import SimpleNamespace

    from ssmfab.transfer import label_of, one_line

    assert label_of(SimpleNamespace(label="web-1 (i-1)", host="i-1")) == "web-1 (i-1)"
    assert label_of(SimpleNamespace(label="", host="i-1")) == "i-1"
    assert label_of(SimpleNamespace(host="i-2")) == "i-2"
    assert one_line(" a\n b\t\tc \r\n") == "a b c"
    assert show("del\x7fchar") == repr("del\x7fchar") and show("tilde~") == "tilde~" and show("é\x80") == "é\x80"


def test_refusal_reasons_name_each_problem() -> None:
    assert unsafe_name("") == "is empty, not a file name"
    assert unsafe_name(".") == "is ., not a file name" and unsafe_name("..") == "is .., not a file name"
    assert unsafe_name("a/b") == "contains a slash"
    assert unsafe_name("a\nb") == "contains a newline" and unsafe_name("a\rb") == "contains a newline"
    assert unsafe_name("a\0b") == "contains a NUL byte"
    assert unsafe_name("a\\b") is None and unsafe_name("...") is None


@pytest.mark.parametrize("mask", [0o027, 0o002, 0o077])
def test_the_umask_is_read_without_changing_it(mask: int) -> None:
    from ssmfab.transfer.paths import umask

    old = os.umask(mask)
    try:
        assert umask() == mask
        assert os.umask(mask) == mask  # still in force after reading it
    finally:
        os.umask(old)


@pytest.mark.parametrize(
    ("errors", "arrived", "expected"),
    [
        (1, 2, "h: problem 0"),
        (2, 0, "h: problem 0 (1 more problem; 0 files arrived)"),
        (3, 1, "h: problem 0 (2 more problems; 1 files arrived)"),
    ],
)
def test_an_incomplete_transfer_is_its_first_problem_and_a_count_of_the_rest(errors: int, arrived: int, expected: str) -> None:
    from ssmfab.transfer import FileTransfer, TransferReport
    from ssmfab.transfer.outcome import incomplete

    report = TransferReport(host="h", errors=[f"h: problem {i}" for i in range(errors)])
    report.items = [FileTransfer(f"s{i}", f"d{i}", 10 + i, "0" * 64, 0o644) for i in range(arrived)]
    error = incomplete(report)
    assert isinstance(error, TransferError) and str(error) == expected and error.host == "h"
    assert error.report is report  # type: ignore[attr-defined]


def test_a_report_sums_what_arrived() -> None:
    from ssmfab.transfer import FileTransfer, TransferReport

    report = TransferReport(items=[FileTransfer("a", "/x/a", 3, "0" * 64, 0o600), FileTransfer("b", "/x/b", 4, "1" * 64, 0o644)])
    assert report.files == 2 and report.bytes == 7 and report.paths == ["/x/a", "/x/b"]
    assert TransferReport().streams == 1 and TransferReport().files == 0 and TransferReport().bytes == 0


def test_local_scan_names_each_unsendable_entry_in_one_line(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "f").write_text("f")
    (tree / "sub" / "back").symlink_to("..")  # a loop through a deeper folder
    (tree / "dangling").symlink_to("nowhere")
    os.mkfifo(tree / "fifo")
    (tree / "sub").chmod(0o705)
    scanned = scan_local(tree, True, "web-1")
    assert scanned.errors == [
        f"web-1: skipping {tree / 'dangling'}: a dangling symlink or unreadable; fix or remove it",
        f"web-1: skipping {tree / 'fifo'}: not a regular file (socket, FIFO or device)",
        f"web-1: skipping {tree / 'sub' / 'back'}: a symlink loop; remove the link",
    ]
    assert scanned.dirs == [("sub", 0o705)]
    assert [(f.local, f.rel, f.size, f.mode, f.fileobj) for f in scanned.files] == [(tree / "sub" / "f", "sub/f", 1, 0o644, None)]
    assert scanned.files[0].source == str(tree / "sub" / "f")


def test_local_scan_of_one_file_and_of_what_is_neither_file_nor_folder(tmp_path: Path) -> None:
    (tmp_path / "one.txt").write_text("12345")
    (tmp_path / "one.txt").chmod(0o604)
    single = scan_local(tmp_path / "one.txt", False, "h")
    assert [(f.local, f.rel, f.size, f.mode) for f in single.files] == [(tmp_path / "one.txt", "", 5, 0o604)]
    assert single.dirs == [] and single.errors == []
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(TransferError) as failed:
        scan_local(tmp_path / "pipe", True, "h")
    assert str(failed.value) == f"h: {tmp_path / 'pipe'} is not a regular file or directory; name a file or folder"
    bad = tmp_path / "bad\nname"
    bad.write_text("x")
    with pytest.raises(TransferError) as refused:
        scan_local(bad, False, "h")
    assert str(refused.value) == f"h: refusing local name {show(str(bad))}: it contains a newline; rename it before uploading"
    assert refused.value.host == "h"


def test_local_scan_refuses_a_carriage_return_too(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "cr\rname").write_text("x")
    with pytest.raises(TransferError, match="contains a newline"):
        scan_local(tmp_path / "d", True, "h")


def test_a_file_object_is_scanned_whole_under_its_base_name(tmp_path: Path) -> None:
    from ssmfab.transfer.plan import scan_fileobj

    (tmp_path / "data.bin").write_bytes(b"0123456789")
    with (tmp_path / "data.bin").open("rb") as named:
        named.seek(4)
        (item,) = scan_fileobj(named, "h").files
        assert (item.local, item.rel, item.size, item.mode, item.exact) == (Path("data.bin"), "", 10, None, True)
        assert item.fileobj is named and named.tell() == 0  # rewound, as Fabric does
        with item.open() as source:
            assert source.read(4) == b"0123"  # the caller's object, read through
        assert not named.closed and named.tell() == 4  # and left open, where the read left it
    with os.fdopen(os.open(tmp_path / "data.bin", os.O_RDONLY), "rb") as by_fd:  # its .name is an int
        assert scan_fileobj(by_fd, "h").files[0].local == Path("")
    bad = tmp_path / "bad\nname"
    bad.write_bytes(b"x")
    with bad.open("rb") as source, pytest.raises(TransferError) as refused:
        scan_fileobj(source, "h")
    assert str(refused.value) == "h: refusing local name 'bad\\nname': it contains a newline; rename it before uploading"


def test_umask_without_proc_is_read_and_left_as_it_was(monkeypatch: pytest.MonkeyPatch) -> None:
    # A system without /proc (a stand-in: the status file is looked for where none exists): the mask is read by
    # setting another one for a moment, and the process's own is put back.
    from ssmfab.transfer import paths

    monkeypatch.setattr(paths, "Path", lambda _: Path("/nonexistent-proc/self/status"))
    old = os.umask(0o027)
    try:
        assert paths.umask() == 0o027
        assert os.umask(0o027) == 0o027  # still the process's mask
    finally:
        os.umask(old)
