"""put/get over the sandbox (real sshd through the SSM tunnel, both tunnel modes): trees round-trip exactly,
globs expand client-side, hostile remote names and links are refused file by file, and a transfer whose
tunnel dies mid-way leaves no partial file under its final name."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ssmfab.client import Client
from ssmfab.exceptions import TransferError
from ssmfab.sandbox import Sandbox
from ssmfab import transfer
from ssmfab.transfer import TransferReport, get, put

# paramiko's prefetch thread reports the dead transport on its own; the transfer reports it properly.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")

BIG = 200_000_000


def make_tree(root: Path) -> None:
    (root / "nested" / "deeper").mkdir(parents=True)
    (root / "empty dir").mkdir()
    (root / "nested" / "empty").mkdir()
    (root / "top.txt").write_text("top\n")
    (root / "with space.txt").write_text("spaces\n")
    (root / "ünïcödé — 名前.txt").write_text("unicode\n")
    (root / "nested" / "deeper" / "blob.bin").write_bytes(os.urandom(300_000))
    (root / "nested" / "secret").write_text("key\n")
    (root / "nested" / "secret").chmod(0o600)
    script = root / "nested" / "run.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o750)
    (root / "nested" / "deeper").chmod(0o700)


def snapshot(root: Path) -> dict[str, tuple[str, int, str]]:
    """Every path under root: kind, mode and content hash."""
    found = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        mode = path.stat().st_mode & 0o7777
        if path.is_dir():
            found[rel] = ("dir", mode, "")
        else:
            found[rel] = ("file", mode, hashlib.sha256(path.read_bytes()).hexdigest())
    return found


def everything_under(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def home_of(sandbox: Sandbox, name: str) -> Path:
    return Path(sandbox.host(name).folder) / "home"


def kill_tunnel(conn: Any) -> Callable[[], None]:
    """Kills the connection's tunnel process group: the tunnel dies, as when the SSM session drops."""

    def kill() -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(conn.tunnel.process.pid, signal.SIGKILL)

    return kill


def mid_transfer(monkeypatch: pytest.MonkeyPatch, ready: Callable[[], bool], fault: Callable[[], None]) -> threading.Event:
    """Runs ``fault`` once, from inside the transfer, the first time ``ready()`` holds after a chunk moved.

    The transfer reports progress after every chunk (its stall watch listens); hooking that report puts the
    fault at a known point of the transfer however fast or slow the machine is, where a thread watching
    the files would race the transfer. The returned event says the fault happened."""
    fired = threading.Event()
    real_progress = transfer.StallWatch.progress

    def progress(watch: transfer.StallWatch, moved: int = 0) -> None:
        real_progress(watch, moved)
        if not fired.is_set() and ready():
            fired.set()
            fault()

    monkeypatch.setattr(transfer.StallWatch, "progress", progress)
    return fired


def grown(folder: Path, pattern: str, size: int = 1_000_000) -> Callable[[], bool]:
    def check() -> bool:
        with contextlib.suppress(OSError):
            return any(p.stat().st_size > size for p in folder.glob(pattern))
        return False

    return check


def test_recursive_put_then_get_round_trips_exactly(client: Client, tmp_path: Path) -> None:
    source = tmp_path / "tree"
    make_tree(source)
    [target] = client.targets(names=["web-1"])
    with client.connect(target) as conn:
        conn.run("rm -rf uploads && mkdir uploads")
        walls: list[float] = []
        began = time.monotonic()
        sent = put(conn, str(source), "uploads/", recursive=True)
        walls.append(time.monotonic() - began)
        began = time.monotonic()
        again = put(conn, str(source), "uploads", recursive=True)  # an existing directory: into it, replacing
        walls.append(time.monotonic() - began)
        began = time.monotonic()
        back = get(conn, "uploads/tree", str(tmp_path / "back") + os.sep, recursive=True)
        walls.append(time.monotonic() - began)
        leftovers = conn.run("find uploads -name '*.ssmfab-*'", hide=True).stdout.strip()
        listed = conn.run("cd uploads/tree && find . | sort", hide=True).stdout
    assert snapshot(tmp_path / "back" / "tree") == snapshot(source)
    assert leftovers == ""
    assert "./empty dir" in listed and "./nested/empty" in listed
    for report, wall in zip((sent, again, back), walls):
        assert isinstance(report, TransferReport) and report.errors == []
        assert report.files == 6 and report.bytes == sum(p.stat().st_size for p in source.rglob("*") if p.is_file())
        # The report times the transfer itself: within the call, never longer than the call.
        assert 0 < report.duration <= wall
    assert sorted(Path(i.destination).name for i in back.items) == sorted(p.name for p in source.rglob("*") if p.is_file())
    item = next(i for i in sent.items if i.source.endswith("run.sh"))
    assert item.destination.endswith("/uploads/tree/nested/run.sh") and item.mode == 0o750
    assert item.sha256 == hashlib.sha256((source / "nested" / "run.sh").read_bytes()).hexdigest()


def test_destinations_follow_scp(client: Client, tmp_path: Path) -> None:
    one = tmp_path / "one.txt"
    one.write_text("1\n")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_text("f\n")
    [target] = client.targets(names=["web-2"])
    with client.connect(target) as conn:
        conn.run("rm -rf scp && mkdir -p scp/existing")
        put(conn, str(one), "scp/existing")  # an existing directory: inside it
        put(conn, str(one), "scp/renamed.txt")  # otherwise: that name
        put(conn, str(one), "scp/new dir/")  # a trailing slash: into that directory, made if missing
        put(conn, str(tmp_path / "d"), "scp/copy", recursive=True)  # a new name for a tree
        put(conn, str(one), "~/scp/tilde.txt")
        found = conn.run("cd scp && find . -type f | sort", hide=True).stdout.split("\n")
        get(conn, "scp/renamed.txt", str(tmp_path / "got.txt"))
        get(conn, "scp/copy", str(tmp_path / "copy"), recursive=True)
    assert found[:-1] == ["./copy/f", "./existing/one.txt", "./new dir/one.txt", "./renamed.txt", "./tilde.txt"]
    assert (tmp_path / "got.txt").read_text() == "1\n"
    assert (tmp_path / "copy" / "f").read_text() == "f\n"


def test_glob_get_and_no_match(client: Client, tmp_path: Path) -> None:
    [target] = client.targets(names=["web-2"])
    dest = tmp_path / "dest"
    with client.connect(target) as conn:
        conn.run(
            "rm -rf globbed && mkdir -p globbed/a globbed/b globbed/c/sub && echo 1 > globbed/a/x.log && "
            "echo 2 > globbed/b/y.log && echo 3 > globbed/b/z.txt && echo 4 > globbed/b/.hidden.log && "
            "echo 5 > globbed/c/b1.txt && echo 6 > globbed/c/b22.txt && echo 7 > globbed/c/sub/x.log"
        )
        report = get(conn, "globbed/*/*.log", str(dest))
        assert everything_under(dest) == ["x.log", "y.log"]  # a glob always lands in a folder
        assert report.files == 2 and report.bytes == 4
        get(conn, "globbed/?/b?.txt", str(dest) + os.sep)
        assert (dest / "b1.txt").read_text() == "5\n" and not (dest / "b22.txt").exists()
        with pytest.raises(TransferError, match=r"^web-2 \(i-\w+\): no remote file matches globbed/\*\.nope; check the pattern"):
            get(conn, "globbed/*.nope", str(dest) + os.sep)


def test_links_out_of_the_tree_and_odd_names_are_refused_file_by_file(client: Client, tmp_path: Path) -> None:
    [target] = client.targets(names=["web-3"])
    dest = tmp_path / "dest"
    dest.mkdir()
    with client.connect(target) as conn:
        conn.run(
            "rm -rf hostile outside && mkdir -p hostile/sub outside && echo secret > outside/secret && "
            "echo fine > hostile/fine.txt && ln -s ../outside/secret hostile/escape && ln -s ../outside hostile/outdir && "
            "ln -s fine.txt hostile/inner-link && ln -s .. hostile/sub/up && echo deep > hostile/sub/deep.txt && "
            "printf x > \"hostile/$(printf 'bad\\nname')\""
        )
        with pytest.raises(TransferError) as err:
            get(conn, "hostile", str(dest) + os.sep, recursive=True)
        with pytest.raises(TransferError) as globbed:
            get(conn, "hostile/*", str(tmp_path / "globbed"), recursive=True)
    message = str(err.value)
    assert message.startswith("web-3 (i-") and "refusing" in message and "\n" not in message
    assert message.endswith("(3 more problems; 3 files arrived)")
    report = err.value.report  # type: ignore[attr-defined]
    reasons = " | ".join(report.errors)
    assert "'bad\\nname'" in reasons and "contains a newline" in reasons
    assert "hostile/escape: a symlink to" in reasons and "hostile/outdir: a symlink to" in reasons
    assert "hostile/sub/up: a symlink loop" in reasons
    # The safe files still arrive; links inside the tree arrive as the files they point to.
    assert everything_under(dest) == ["hostile", "hostile/fine.txt", "hostile/inner-link", "hostile/sub", "hostile/sub/deep.txt"]
    assert (dest / "hostile" / "inner-link").read_text() == "fine\n"
    assert not (tmp_path / "outside").exists()
    assert "secret" not in " ".join(everything_under(tmp_path))
    glob_reasons = " | ".join(globbed.value.report.errors)  # type: ignore[attr-defined]
    assert "hostile/escape: a symlink to" in glob_reasons and "hostile/outdir: a symlink to" in glob_reasons
    assert sorted(p.name for p in (tmp_path / "globbed").rglob("*")) == ["deep.txt", "fine.txt", "inner-link", "sub"]


def test_nothing_is_written_outside_the_destination(client: Client, tmp_path: Path) -> None:
    dest, elsewhere = tmp_path / "dest", tmp_path / "elsewhere"
    dest.mkdir()
    elsewhere.mkdir()
    (dest / "tree").symlink_to(elsewhere)  # a local link where the fetched folder would go
    [target] = client.targets(names=["web-1"])
    with client.connect(target) as conn:
        conn.run("rm -rf tree && mkdir tree && echo x > tree/f")
        with pytest.raises(TransferError, match=r"refusing to write .*/dest/tree: it resolves outside"):
            get(conn, "tree", str(dest) + os.sep, recursive=True)
    assert list(elsewhere.iterdir()) == []


def test_download_cut_midway_leaves_nothing(
    client: Client, sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    [target] = client.targets(names=["db-1"])
    dest = tmp_path / "dest"
    dest.mkdir()
    conn = client.connect(target)
    try:
        conn.run(f"head -c {BIG} /dev/zero > big.bin", hide=True)
        cut = mid_transfer(monkeypatch, grown(dest, ".big.bin.ssmfab-*.part"), kill_tunnel(conn))
        with pytest.raises(TransferError, match=r"^db-1 \(i-\w+\): download of big.bin failed, nothing left half-written") as err:
            get(conn, "big.bin", str(dest) + os.sep)
        assert cut.is_set()
    finally:
        conn.close()
    assert "\n" not in str(err.value)
    assert list(dest.iterdir()) == []  # neither big.bin nor its temporary file
    (home_of(sandbox, "db-1") / "big.bin").unlink()


def test_upload_cut_midway_leaves_no_final_file(
    client: Client, sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    [target] = client.targets(names=["db-1"])
    big = tmp_path / "big.bin"
    with big.open("wb") as handle:
        handle.truncate(BIG)
    home = home_of(sandbox, "db-1")
    conn = client.connect(target)
    try:
        conn.run("rm -f up.bin .up.bin.ssmfab-*", hide=True)
        cut = mid_transfer(monkeypatch, grown(home, ".up.bin.ssmfab-*.part"), kill_tunnel(conn))
        with pytest.raises(TransferError, match=r"upload to up.bin failed, nothing left half-written; temporary file .*\.up\.bin\.ssmfab-\w+\.part may remain") as err:
            # One uncompressed stream: zeros gzip to next to nothing, and a slow link would stripe the file, so
            # either would have the whole file on the host before the cut.
            put(conn, str(big), "up.bin", compress=False, streams=1)
        assert cut.is_set()
    finally:
        conn.close()
    assert "\n" not in str(err.value)
    assert not (home / "up.bin").exists()
    # The host was unreachable, so the error names the temporary file; the host's copy program removes it
    # itself once the ended session closes its stream and its checksum can no longer reach us.
    deadline = time.monotonic() + 60
    while list(home.glob(".up.bin.ssmfab-*.part")):
        assert time.monotonic() < deadline, "the host kept the temporary file of a cut upload"
        time.sleep(0.02)


def test_bad_input_is_one_line_naming_host_path_and_fix(client: Client, tmp_path: Path) -> None:
    [target] = client.targets(names=["web-1"])
    (tmp_path / "adir").mkdir()
    (tmp_path / "new\nline").write_text("x")
    cases: list[tuple[Callable[[Any], object], str]] = [
        (lambda c: put(c, str(tmp_path / "missing"), "x"), "missing: no such local file or directory; check the path"),
        (lambda c: put(c, str(tmp_path / "adir"), "x"), "adir is a directory; pass recursive=True"),
        (lambda c: put(c, str(tmp_path / "new\nline"), "x"), r"refusing local name .*new\\nline.*contains a newline; rename it"),
        (lambda c: get(c, "does/not/exist", str(tmp_path) + os.sep), "does/not/exist: no such remote file or directory; check the path"),
        (lambda c: get(c, ".", str(tmp_path) + os.sep), r"\. is a directory; pass recursive=True"),
    ]
    with client.connect(target) as conn:
        for call, needle in cases:
            with pytest.raises(TransferError, match=needle) as err:
                call(conn)
            assert str(err.value).startswith("web-1 (i-") and "\n" not in str(err.value)
        assert conn.run("test -e x", warn=True, hide=True).failed


def test_a_frozen_tunnel_fails_the_transfer_after_the_stall_timeout(
    sandbox_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = Client(tunnel="plugin", stall_timeout=2, notify=lambda message: None)
    [target] = client.targets(names=["web-2"])
    conn = client.connect(target)
    conn.run("head -c 50000000 /dev/zero > frozen.bin", hide=True)
    dest = tmp_path / "dest"
    dest.mkdir()
    assert conn.tunnel is not None
    plugin = conn.tunnel.process.pid  # type: ignore[attr-defined]
    # The tunnel stops moving bytes but stays open, once the download is under way.
    frozen = mid_transfer(monkeypatch, grown(dest, ".frozen.bin.*"), lambda: os.kill(plugin, signal.SIGSTOP))
    began = time.monotonic()
    try:
        with pytest.raises(TransferError, match="download of frozen.bin stalled: no progress for 2s"):
            get(conn, "frozen.bin", str(dest) + os.sep)
    finally:
        with contextlib.suppress(ProcessLookupError):  # the stall watch has normally ended it already
            os.kill(plugin, signal.SIGCONT)
        conn.close()
    assert frozen.is_set()
    # The stall watch ended it, not something else much later (a wide margin: the machine may be busy).
    assert time.monotonic() - began < 60
    assert list(dest.iterdir()) == []
    with client.connect(target) as cleanup:
        cleanup.run("rm -f frozen.bin")
