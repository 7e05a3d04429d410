"""put/get over the sandbox: trees round-trip exactly, unsafe remote names are refused, and an
interrupted transfer never leaves a partial file under the final name."""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from pathlib import Path

import pytest

from ssmfab.client import Client
from ssmfab.exceptions import TransferError
from ssmfab.transfer import get, put


def make_tree(root: Path) -> None:
    (root / "nested" / "deeper").mkdir(parents=True)
    (root / "empty dir").mkdir()
    (root / "nested" / "empty").mkdir()
    (root / "top.txt").write_text("top\n")
    (root / "with space.txt").write_text("spaces\n")
    (root / "ünïcödé — 名前.txt").write_text("unicode\n")
    (root / "nested" / "deeper" / "blob.bin").write_bytes(os.urandom(300_000))
    script = root / "nested" / "run.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o750)


def snapshot(root: Path) -> dict[str, tuple[str, int, str]]:
    """Every path under root: kind, mode and content hash."""
    found = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_dir():
            found[rel] = ("dir", 0, "")
        else:
            found[rel] = ("file", path.stat().st_mode & 0o777, hashlib.sha256(path.read_bytes()).hexdigest())
    return found


def test_recursive_put_then_get_round_trips_exactly(client: Client, tmp_path: Path) -> None:
    source = tmp_path / "tree"
    make_tree(source)
    [target] = client.targets(names=["web-1"])
    with client.connect(target) as conn:
        conn.run("rm -rf uploads && mkdir uploads")
        sent = put(conn, str(source), "uploads/", recursive=True)
        assert sent.files == 5
        back = get(conn, "uploads/tree", str(tmp_path / "back") + os.sep, recursive=True)
        assert back.files == 5
        leftovers = conn.run("find uploads -name '*.ssmfab-*'", hide=True).stdout.strip()
    assert snapshot(tmp_path / "back" / "tree") == snapshot(source)
    assert leftovers == ""


def test_glob_get_and_no_match(client: Client, tmp_path: Path) -> None:
    [target] = client.targets(names=["web-2"])
    tmp_path = tmp_path / "dest"
    tmp_path.mkdir()
    with client.connect(target) as conn:
        conn.run("rm -rf globbed && mkdir -p globbed/a globbed/b && echo 1 > globbed/a/x.log && echo 2 > globbed/b/y.log && echo 3 > globbed/b/z.txt")
        report = get(conn, "globbed/*/*.log", str(tmp_path) + os.sep)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["x.log", "y.log"]
        assert report.files == 2
        with pytest.raises(TransferError, match=r"web-2 \(i-.*\): no remote file matches globbed/\*\.nope"):
            get(conn, "globbed/*.nope", str(tmp_path) + os.sep)


def test_symlink_outside_the_tree_and_odd_names_are_refused(client: Client, tmp_path: Path) -> None:
    [target] = client.targets(names=["web-3"])
    dest = tmp_path / "dest"
    dest.mkdir()
    with client.connect(target) as conn:
        conn.run(
            "rm -rf hostile outside && mkdir -p hostile outside && echo secret > outside/secret && "
            "echo fine > hostile/fine.txt && ln -s ../outside/secret hostile/escape && "
            "ln -s fine.txt hostile/inner-link && printf x > \"hostile/$(printf 'bad\\nname')\""
        )
        with pytest.raises(TransferError) as err:
            get(conn, "hostile", str(dest) + os.sep, recursive=True)
    assert "refusing" in str(err.value) and "\n" not in str(err.value)
    got = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*"))
    assert got == ["hostile", "hostile/fine.txt", "hostile/inner-link"]  # the safe files still arrive
    assert not (tmp_path / "outside").exists()
    assert (dest / "hostile" / "inner-link").read_text() == "fine\n"


def test_download_killed_midway_leaves_nothing(client: Client, tmp_path: Path) -> None:
    [target] = client.targets(names=["db-1"])
    conn = client.connect(target)
    conn.run("head -c 150000000 /dev/zero > big.bin", hide=True)
    dest = tmp_path / "dest"
    dest.mkdir()

    def cut_when_bytes_arrive() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if any(p.stat().st_size > 1_000_000 for p in dest.glob(".big.bin.*")):
                break
            time.sleep(0.01)
        conn.close()  # the tunnel dies mid-transfer

    cutter = threading.Thread(target=cut_when_bytes_arrive)
    cutter.start()
    with pytest.raises(TransferError, match="download of big.bin failed, nothing left half-written"):
        get(conn, "big.bin", str(dest) + os.sep)
    cutter.join()
    assert list(dest.iterdir()) == []
    with client.connect(target) as cleanup:
        cleanup.run("rm -f big.bin")


def test_upload_killed_midway_leaves_no_final_file(client: Client, tmp_path: Path) -> None:
    [target] = client.targets(names=["db-1"])
    big = tmp_path / "big.bin"
    with big.open("wb") as handle:
        handle.truncate(150_000_000)
    conn = client.connect(target)
    conn.run("rm -f up.bin")
    timer = threading.Timer(1.0, conn.close)
    timer.start()
    with pytest.raises(TransferError, match="upload to up.bin failed"):
        put(conn, str(big), "up.bin")
    timer.join()
    with client.connect(target) as check:
        assert check.run("test -e up.bin", warn=True, hide=True).failed


def test_bad_local_input(client: Client, tmp_path: Path) -> None:
    [target] = client.targets(names=["web-1"])
    with client.connect(target) as conn:
        with pytest.raises(TransferError, match="no such local file"):
            put(conn, str(tmp_path / "missing"), "x")
        (tmp_path / "adir").mkdir()
        with pytest.raises(TransferError, match="is a directory"):
            put(conn, str(tmp_path / "adir"), "x")
        with pytest.raises(TransferError, match="no such remote file"):
            get(conn, "does/not/exist", str(tmp_path) + os.sep)


def test_a_frozen_tunnel_fails_the_transfer_after_the_stall_timeout(sandbox_env: dict[str, str], tmp_path: Path) -> None:
    import signal

    client = Client(tunnel="plugin", stall_timeout=2, notify=lambda message: None)
    [target] = client.targets(names=["web-2"])
    conn = client.connect(target)
    conn.run("head -c 50000000 /dev/zero > frozen.bin", hide=True)
    dest = tmp_path / "dest"
    dest.mkdir()
    assert conn.tunnel is not None
    plugin = conn.tunnel.process.pid  # type: ignore[attr-defined]

    def freeze() -> None:
        deadline = time.monotonic() + 30
        while not any(p.stat().st_size > 1_000_000 for p in dest.glob(".frozen.bin.*")) and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(plugin, signal.SIGSTOP)  # the tunnel stops moving bytes but stays open

    freezer = threading.Thread(target=freeze)
    freezer.start()
    began = time.monotonic()
    try:
        with pytest.raises(TransferError, match="download of frozen.bin stalled: no progress for 2s"):
            get(conn, "frozen.bin", str(dest) + os.sep)
    finally:
        freezer.join()
        with contextlib.suppress(ProcessLookupError):  # the stall watch has normally ended it already
            os.kill(plugin, signal.SIGCONT)
        conn.close()
    assert time.monotonic() - began < 20
    assert list(dest.iterdir()) == []
    with client.connect(target) as cleanup:
        cleanup.run("rm -f frozen.bin")
