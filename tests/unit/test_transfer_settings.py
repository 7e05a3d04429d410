"""transfer.compress and transfer.streams: read from files and the environment, checked, handed by a Client to
its connections (warm ones too), and followed by put/get when a call gives no compress/streams of its own; a
call's argument (the command line's flag) wins. Transfers run over one OpenSSH sshd on loopback."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fabric import Connection

from ssmfab.client import Client
from ssmfab.config import Settings, load_settings
from ssmfab.connection import SSMConnection
from ssmfab.exceptions import ConfigError
from ssmfab.pool import ConnectionPool
from ssmfab.sandbox.sshd import SSHServer
from ssmfab.transfer import STREAM_MIN_BYTES, get, put
from ssmfab.transfer import upload
from ssmfab.transfer.session import configured
from ssmfab.transfer.stripe import STRIPE_MIN_BYTES

from .conftest import loopback_connection

INSTANCE = "i-0123456789abcdef0"
#: Streamed (4 MiB and more) and very compressible.
TEXT = b"GET /index.html 200 1043 Mozilla/5.0\n" * ((STREAM_MIN_BYTES + (1 << 20)) // 37)


class ConfiguredConnection(Connection):  # type: ignore[misc]
    """A plain Fabric connection carrying the two attributes an ssmfab Client sets on its connections."""

    transfer_compress: bool | None = None
    transfer_streams: int | None = None


@pytest.fixture
def conn(server: tuple[SSHServer, Path]) -> Iterator[ConfiguredConnection]:
    with loopback_connection(server, ConfiguredConnection) as connection:
        yield connection


def test_the_defaults_leave_both_to_measurement() -> None:
    assert Settings().transfer.compress == "auto" and Settings().transfer.streams == 0
    assert Settings().transfer.compress_flag is None and Settings().transfer.streams_flag is None


def test_files_and_the_environment_set_them(tmp_path: Path) -> None:
    file = tmp_path / "ssmfab.toml"
    file.write_text('[transfer]\ncompress = "never"\nstreams = 4\n')
    from_file = load_settings(env={}, files=[file]).transfer
    assert (from_file.compress_flag, from_file.streams_flag) == (False, 4)
    from_env = load_settings(env={"SSMFAB_TRANSFER_COMPRESS": "always", "SSMFAB_TRANSFER_STREAMS": "0"}, files=[file]).transfer
    assert (from_env.compress_flag, from_env.streams_flag) == (True, None)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('compress = "yes"', "transfer.compress 'yes' is not one of auto, always, never"),
        ("compress = true", "transfer.compress: expected str, got True"),
        ("streams = -1", "transfer.streams must be 0 (measured) or a number of SSM sessions, got -1"),
        ('streams = "many"', "transfer.streams: expected int, got 'many'"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_setting(tmp_path: Path, content: str, message: str) -> None:
    file = tmp_path / "ssmfab.toml"
    file.write_text(f"[transfer]\n{content}\n")
    with pytest.raises(ConfigError) as err:
        load_settings(env={}, files=[file])
    assert str(err.value) == f"{file}: {message}"


def test_a_client_hands_them_to_every_connection_warm_ones_included(monkeypatch: pytest.MonkeyPatch) -> None:
    client = Client(region="us-east-1", compress="never", streams=3)
    made = client.connect(INSTANCE)
    assert (made.transfer_compress, made.transfer_streams) == (False, 3)
    assert (Client(region="us-east-1").connect(INSTANCE).transfer_compress, made.transfer_streams) == (None, 3)

    # A warm connection made under one client's settings serves the next client with that client's (the pool
    # hands out only live connections: this one, never opened, is taken for one).
    monkeypatch.setattr(SSMConnection, "is_connected", property(lambda self: True))
    pool = ConnectionPool()
    first = Client(region="us-east-1", compress="always", persist="1m", pool=pool).connect(INSTANCE)
    assert (first.transfer_compress, first.transfer_streams) == (True, None)
    assert pool.give_back(first)
    second_client = Client(region="us-east-1", compress="never", streams=2, persist="1m", pool=pool)
    second = second_client.connect(INSTANCE)
    assert second is first
    assert (second.transfer_compress, second.transfer_streams) == (False, 2)
    pool.close_all()


def test_a_call_wins_over_the_connections_defaults() -> None:
    class Defaults:
        transfer_compress = False
        transfer_streams = 5

    assert configured(Defaults(), None, None) == (False, 5)
    assert configured(Defaults(), True, 1) == (True, 1)
    assert configured(object(), None, None) == (None, None)  # a plain Fabric connection: measured


def test_put_and_get_follow_the_connection_and_a_call_overrides_it(conn: ConfiguredConnection, tmp_path: Path) -> None:
    source = tmp_path / "access.log"
    source.write_bytes(TEXT)
    conn.transfer_compress = True
    squeezed = put(conn, str(source), "settings-up.log")
    assert squeezed.wire_bytes < squeezed.bytes // 4
    assert put(conn, str(source), "settings-up.log", compress=False).wire_bytes == len(TEXT)
    fetched = get(conn, "settings-up.log", str(tmp_path / "back.log"))
    assert fetched.wire_bytes < fetched.bytes // 4 and (tmp_path / "back.log").read_bytes() == TEXT

    conn.transfer_compress = False
    assert put(conn, str(source), "settings-up.log").wire_bytes == len(TEXT)
    assert get(conn, "settings-up.log", str(tmp_path / "raw.log")).wire_bytes == len(TEXT)
    assert get(conn, "settings-up.log", str(tmp_path / "packed.log"), compress=True).wire_bytes < len(TEXT) // 4
    conn.run("rm -f settings-up.log", hide=True)


def test_always_compresses_even_what_does_not_shrink(conn: ConfiguredConnection, tmp_path: Path) -> None:
    """Random bytes: left to decide ("auto") a transfer sends them raw, so only the setting can gzip them."""
    source = tmp_path / "noise.bin"
    source.write_bytes(os.urandom(STREAM_MIN_BYTES))
    assert put(conn, str(source), "settings-noise.bin").wire_bytes == STREAM_MIN_BYTES
    conn.transfer_compress = True
    assert put(conn, str(source), "settings-noise.bin").wire_bytes > STREAM_MIN_BYTES
    assert get(conn, "settings-noise.bin", str(tmp_path / "back.bin")).wire_bytes > STREAM_MIN_BYTES
    assert (tmp_path / "back.bin").read_bytes() == source.read_bytes()
    conn.run("rm -f settings-noise.bin", hide=True)


def test_put_asks_for_the_connections_streams(
    conn: ConfiguredConnection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loopback has no sibling sessions to stripe over, so what put asks the striping planner is checked."""
    asked: list[int | None] = []
    real = upload.streams_for

    def streams_for(session: Any, size: int, requested: int | None) -> int:
        asked.append(requested)
        return real(session, size, requested)

    monkeypatch.setattr(upload, "streams_for", streams_for)
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(STRIPE_MIN_BYTES))
    conn.transfer_streams = 6
    put(conn, str(source), "settings-big.bin", compress=False)
    put(conn, str(source), "settings-big.bin", compress=False, streams=2)
    assert asked == [6, 2]
    conn.run("rm -f settings-big.bin", hide=True)
