"""Compression on the wire through the sandbox: forced on, both directions and both tunnel modes, verified on
the file's own bytes; when left to decide, it compresses text on a slow link and never random bytes, and the
SHA-256 is the uncompressed file's."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ssmfab import transfer
from ssmfab.client import Client
from ssmfab.exceptions import TransferError
from ssmfab.sandbox import LinkModel, Sandbox

SOURCE_TEXT = b"".join(path.read_bytes() for path in sorted(Path(__file__).parents[2].joinpath("ssmfab").rglob("*.py")))
SIZE = 6 * 1024 * 1024 + 999
TEXT = (SOURCE_TEXT * (SIZE // len(SOURCE_TEXT) + 1))[:SIZE]


def host(sandbox: Sandbox, name: str) -> tuple[str, Path]:
    entry = sandbox.host(name)
    return entry.instance_id, Path(entry.folder) / "home"


def test_forced_compression_round_trips_verified_with_fewer_bytes_on_the_wire(
    client: Client, sandbox: Sandbox, tmp_path: Path
) -> None:
    instance, home = host(sandbox, "web-1")
    (tmp_path / "src.tar").write_bytes(TEXT)
    with client.connect(instance) as conn:
        sent = conn.put(str(tmp_path / "src.tar"), "packed.tar", compress=True).report
        got = conn.get("packed.tar", str(tmp_path / "back.tar"), compress=True).report
        plain = conn.get("packed.tar", str(tmp_path / "plain.tar"), compress=False).report
    assert (home / "packed.tar").read_bytes() == TEXT == (tmp_path / "back.tar").read_bytes()
    digest = hashlib.sha256(TEXT).hexdigest()
    assert sent.items[0].sha256 == got.items[0].sha256 == digest
    assert sent.bytes == got.bytes == SIZE
    assert sent.wire_bytes < SIZE // 2 and got.wire_bytes < SIZE // 2
    assert plain.wire_bytes == SIZE
    (home / "packed.tar").unlink()


def test_a_compressed_upload_the_host_got_wrong_is_never_renamed(
    client: Client, sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    instance, home = host(sandbox, "web-2")
    (tmp_path / "src.tar").write_bytes(TEXT)
    # The host decompresses, then writes one byte more than it was sent (as a failing disk would).
    monkeypatch.setattr(
        transfer.upload, "STREAM_PUT", """sh -c 'gzip -dc > "$1"; echo x >> "$1"; sha256sum < "$1"' sh"""
    )
    with client.connect(instance) as conn, pytest.raises(TransferError, match="did not verify after upload"):
        conn.put(str(tmp_path / "src.tar"), "wrong.tar", compress=True)
    assert not [p for p in home.iterdir() if p.name == "wrong.tar" or ".ssmfab-" in p.name]


def test_left_to_decide_a_slow_download_of_text_is_compressed_and_random_bytes_are_not(
    sandbox: Sandbox, sandbox_env: dict[str, str], tmp_path: Path
) -> None:
    instance, home = host(sandbox, "db-1")
    (home / "text.log").write_bytes(TEXT)
    (home / "random.bin").write_bytes(os.urandom(SIZE))
    client = Client(tunnel="plugin", notify=lambda message: None)
    with sandbox.linked(LinkModel.parse("rate=4m")), client.connect(instance) as conn:
        text = transfer.get(conn, "text.log", str(tmp_path / "text.log"))
        noise = transfer.get(conn, "random.bin", str(tmp_path / "random.bin"))
        assert 0 < conn.link_rates["get"] < 8_000_000
    assert (tmp_path / "text.log").read_bytes() == TEXT
    assert text.wire_bytes < SIZE // 2
    assert noise.wire_bytes == SIZE and (tmp_path / "random.bin").read_bytes() == (home / "random.bin").read_bytes()
    (home / "text.log").unlink()
    (home / "random.bin").unlink()


def test_left_to_decide_an_upload_through_aws_plugin_is_compressed(
    sandbox: Sandbox, sandbox_env: dict[str, str], plugin_path: str, tmp_path: Path
) -> None:
    if not plugin_path:
        pytest.skip("AWS's session-manager-plugin not named (pytest --plugin PATH or SSMFAB_SANDBOX_PLUGIN)")
    instance, home = host(sandbox, "db-1")
    (tmp_path / "src.tar").write_bytes(TEXT)
    client = Client(tunnel="plugin", notify=lambda message: None)
    with client.connect(instance) as conn:
        report = transfer.put(conn, str(tmp_path / "src.tar"), "auto.tar")
        assert conn.link_rates["put"] < 2_000_000  # the plugin's pacing, measured
    assert report.wire_bytes < SIZE // 2 and (home / "auto.tar").read_bytes() == TEXT
    (home / "auto.tar").unlink()


def test_the_command_line_compresses_on_request_and_refuses_both_flags(sandbox_env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "src.tar").write_bytes(TEXT)
    ssmfab = [sys.executable, "-m", "ssmfab.program"]
    done = subprocess.run(
        [*ssmfab, "put", str(tmp_path / "src.tar"), "cli-packed.tar", "--name", "web-3", "--compress", "--json"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    [only] = json.loads(done.stdout)["hosts"]
    assert only["bytes"] == SIZE and only["wire_bytes"] < SIZE // 2
    both = subprocess.run(
        [*ssmfab, "get", "cli-packed.tar", "--name", "web-3", "--compress", "--no-compress"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert both.returncode != 0 and both.stderr.strip() == "error: --compress and --no-compress contradict each other; give one"


def test_a_download_that_does_not_shrink_never_times_the_link_and_text_still_asks_for_it(
    sandbox: Sandbox, sandbox_env: dict[str, str], tmp_path: Path
) -> None:
    instance, home = host(sandbox, "web-3")
    noise = os.urandom(SIZE)
    (home / "first.bin").write_bytes(noise)
    (home / "then.log").write_bytes(TEXT)
    client = Client(tunnel="plugin", notify=lambda message: None)
    with sandbox.linked(LinkModel.parse("rate=4m")), client.connect(instance) as conn:
        first = transfer.get(conn, "first.bin", str(tmp_path / "first.bin"))
        assert "get" not in conn.link_rates  # random bytes: the host sent them raw without asking
        then = transfer.get(conn, "then.log", str(tmp_path / "then.log"))
        assert 0 < conn.link_rates["get"] < 8_000_000  # text: the host asked, the link was timed, gzip paid
    assert first.wire_bytes == SIZE and (tmp_path / "first.bin").read_bytes() == noise
    assert then.wire_bytes < SIZE // 2 and (tmp_path / "then.log").read_bytes() == TEXT
    (home / "first.bin").unlink()
    (home / "then.log").unlink()
