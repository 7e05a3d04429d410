"""The library's conn.put/conn.get are ssmfab's transfers behind Fabric's signatures: a script gets Fabric's
Result, file-like objects, the same verification (a corrupt copy is an error and leaves nothing), atomic
replacement, kept modes; ssmfab.put/get and the fan-out operations are exported."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest
from fabric.transfer import Result

import ssmfab
from ssmfab import transfer
from ssmfab.client import Client
from ssmfab.exceptions import TransferError
from ssmfab.sandbox import Sandbox

BIG = transfer.STREAM_MIN_BYTES + 54_321
#: An upload command whose host writes something else than it received (as a failing disk would): the
#: checksum it reports is of what landed, so the transfer must refuse it.
CORRUPT_PUT = """sh -c 'cat > "$1"; echo extra >> "$1"; sha256sum < "$1"' sh"""
#: A download command whose host reports a checksum that cannot match what it sent (it answers a codec question,
#: when asked one, with R: raw bytes follow).
CORRUPT_GET = """sh -c '[ -z "$2" ] || printf R; cat -- "$1"; echo 0000000000000000000000000000000000000000000000000000000000000000 - >&2' sh"""


def host(sandbox: Sandbox, name: str) -> tuple[str, Path]:
    entry = sandbox.host(name)
    return entry.instance_id, Path(entry.folder) / "home"


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".ssmfab-" in p.name)


def test_put_and_get_keep_fabrics_signature_result_and_the_files_mode(
    client: Client, sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    instance, home = host(sandbox, "web-1")
    local = tmp_path / "tool.sh"
    local.write_bytes(b"#!/bin/sh\necho hi\n" + os.urandom(BIG))
    local.chmod(0o751)
    with client.connect(instance) as conn:
        sent = conn.put(str(local), "lib-put/")
        assert isinstance(sent, Result)
        assert (sent.local, sent.orig_local, sent.orig_remote) == (str(local), str(local), "lib-put/")
        assert sent.remote.startswith("/") and sent.remote.endswith("/lib-put/tool.sh")
        assert sent.connection is conn
        assert sent.report.items[0].sha256 == hashlib.sha256(local.read_bytes()).hexdigest()
        assert (home / "lib-put" / "tool.sh").stat().st_mode & 0o7777 == 0o751

        back = tmp_path / "back"
        back.mkdir()
        got = conn.get("lib-put/tool.sh", str(back) + os.sep)
        assert isinstance(got, Result)
        assert got.local == str(back / "tool.sh") and got.remote.endswith("/lib-put/tool.sh")
        assert (back / "tool.sh").read_bytes() == local.read_bytes()
        assert (back / "tool.sh").stat().st_mode & 0o7777 == 0o751

        # Fabric's tokens in a local path, and its default: the current folder under the remote name.
        got = conn.get("lib-put/tool.sh", str(tmp_path / "{host}" / "{basename}"))
        assert Path(got.local) == tmp_path / instance / "tool.sh" and Path(got.local).exists()
        monkeypatch.chdir(tmp_path)
        assert conn.get("lib-put/tool.sh").local == str(tmp_path / "tool.sh")
        assert not leftovers(tmp_path) and not leftovers(home / "lib-put")


def test_file_like_objects_both_ways(client: Client, sandbox: Sandbox, tmp_path: Path) -> None:
    instance, home = host(sandbox, "web-2")
    for size in (10_000, BIG):  # the SFTP path and the streamed one
        data = os.urandom(size)
        source = io.BytesIO(data)
        source.seek(123)
        with client.connect(instance) as conn:
            sent = conn.put(source, "from-bytes.bin")
            assert source.tell() == 123, "the caller's position is restored, as Fabric does"
            assert sent.local is source and sent.remote.endswith("/from-bytes.bin")
            assert (home / "from-bytes.bin").read_bytes() == data

            sink = io.BytesIO(b"head:")
            sink.seek(0, io.SEEK_END)
            got = conn.get("from-bytes.bin", local=sink)
            assert got.local is sink and got.report.items[0].size == size
            assert sink.getvalue() == b"head:" + data
    # A named file object goes into a folder under its own name; a nameless one cannot.
    with (tmp_path / "named.bin").open("wb+") as named:
        named.write(b"named")
        with client.connect(instance) as conn:
            conn.put(named, "lib-dir/")
            with pytest.raises(TransferError, match="file-like object has no name"):
                conn.put(io.BytesIO(b"x"), "lib-dir/")
    assert (home / "lib-dir" / "named.bin").read_bytes() == b"named"
    assert not leftovers(home) and not leftovers(home / "lib-dir")


def test_a_corrupt_upload_is_an_error_and_the_old_file_stays(
    client: Client, sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    instance, home = host(sandbox, "web-3")
    (home / "app.bin").write_bytes(b"the old release")
    (tmp_path / "app.bin").write_bytes(os.urandom(BIG))
    monkeypatch.setattr(transfer.upload, "STREAM_PUT", CORRUPT_PUT)
    with client.connect(instance) as conn:
        with pytest.raises(TransferError, match="app.bin did not verify after upload"):
            conn.put(str(tmp_path / "app.bin"), "app.bin")
        with pytest.raises(TransferError, match="app.bin did not verify after upload"):
            conn.put(io.BytesIO(os.urandom(BIG)), "app.bin")
    assert (home / "app.bin").read_bytes() == b"the old release"
    assert not leftovers(home)
    (home / "app.bin").unlink()


def test_a_corrupt_download_is_an_error_and_writes_nothing(
    client: Client, sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    instance, home = host(sandbox, "db-1")
    (home / "dump.bin").write_bytes(os.urandom(BIG))
    (tmp_path / "dump.bin").write_bytes(b"yesterday's dump")
    monkeypatch.setattr(transfer.download, "STREAM_GET", CORRUPT_GET)
    sink = io.BytesIO()
    with client.connect(instance) as conn:
        with pytest.raises(TransferError, match="dump.bin did not verify after download"):
            conn.get("dump.bin", str(tmp_path / "dump.bin"))
        with pytest.raises(TransferError, match="dump.bin did not verify after download"):
            conn.get("dump.bin", sink)
    assert (tmp_path / "dump.bin").read_bytes() == b"yesterday's dump"
    assert sink.getvalue() == b"", "an unverified download never reaches the caller's file object"
    assert not leftovers(tmp_path)
    (home / "dump.bin").unlink()


def test_module_level_put_get_and_the_fan_out_operations(client: Client, sandbox: Sandbox, tmp_path: Path) -> None:
    assert {"put", "get", "upload", "download", "TransferReport", "TransferResult"} <= set(ssmfab.__all__)
    web = client.targets(tags=["Role=web"])[:2]
    (tmp_path / "conf.txt").write_text("setting=1\n")
    (tmp_path / "conf.txt").chmod(0o640)
    sent = ssmfab.fan_out(web, client.connect, ssmfab.upload(tmp_path / "conf.txt", "lib-fan/"), parallel=2)
    sent.raise_for_failures()
    assert all(isinstance(r.value, ssmfab.TransferReport) and r.value.files == 1 for r in sent.results)
    got = ssmfab.fan_out(web, client.connect, ssmfab.download("lib-fan/conf.txt", tmp_path / "pulled"), parallel=2)
    got.raise_for_failures()
    for target in web:
        pulled = tmp_path / "pulled" / target.id / "conf.txt"
        assert pulled.read_text() == "setting=1\n" and pulled.stat().st_mode & 0o777 == 0o640
    with client.connect(web[0]) as conn:
        report = ssmfab.get(conn, "lib-fan/conf.txt", str(tmp_path / "one.txt"))
        assert report.files == 1 and (tmp_path / "one.txt").read_text() == "setting=1\n"
        assert ssmfab.put(conn, str(tmp_path / "one.txt"), "lib-fan/one.txt").items[0].mode == 0o640
