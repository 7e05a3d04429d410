"""fetch-logs over the sandbox: per-instance folders, byte-identical, limits, missing globs, no escapes."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ssmfab.client import Client
from ssmfab.config import LogSettings
from ssmfab.exceptions import TransferError
from ssmfab.fleet import fan_out
from ssmfab.logs import LogFetcher, local_path_for, parse_duration


def make_logs(conn: object, lines: int = 20000) -> str:
    """A realistic log tree in the host's home; returns app.log's SHA-256 as the host computes it."""
    conn.run(  # type: ignore[attr-defined]
        "mkdir -p var/log/app && "
        f"host=$(basename $(dirname $HOME)) && seq 1 {lines} | "
        "sed \"s|.*|2026-11-28T10:00:00Z INFO req=& path=/api/v1/items status=200 host=$host|\" > var/log/app/app.log && "
        "echo rotated > var/log/app/app.log.1 && echo other > var/log/other.txt",
        hide=True,
    )
    return conn.run("sha256sum var/log/app/app.log", hide=True).stdout.split()[0]  # type: ignore[attr-defined,no-any-return]


def test_fetch_from_two_hosts_lands_per_instance_byte_identical(client: Client, tmp_path: Path) -> None:
    targets = client.targets(names=["web-1", "db-1"])
    expected = {}
    for target in targets:
        with client.connect(target) as conn:
            expected[target.id] = make_logs(conn)
    fetcher = LogFetcher(LogSettings(dest=str(tmp_path)), paths=("var/log/app/*.log*", "var/log/none-*.log"))
    result = fan_out(targets, client.connect, fetcher.fetch, parallel=2)
    assert not result.failed
    for host in result.results:
        folder = tmp_path / host.target.id / "var" / "log" / "app"
        assert hashlib.sha256((folder / "app.log").read_bytes()).hexdigest() == expected[host.target.id]
        assert (folder / "app.log.1").read_text() == "rotated\n"
        report = host.value
        assert report is not None and report.files == 2
        assert report.missing == ["var/log/none-*.log"]  # reported for the host, not a crash
        assert report.wire_bytes * 5 < report.bytes  # compressed on the wire
        assert not list(tmp_path.glob(f"{host.target.id}/.ssmfab-fetch-*"))


def test_lines_and_since_limit_what_is_fetched(client: Client, tmp_path: Path) -> None:
    [target] = client.targets(names=["web-3"])
    with client.connect(target) as conn:
        make_logs(conn, lines=500)
        full = conn.run("cat var/log/app/app.log", hide=True).stdout
        conn.run("touch -d '3 days ago' var/log/other.txt")
        report = LogFetcher(LogSettings(dest=str(tmp_path)), paths=("var/log/app/app.log",), lines=10).fetch(conn)
        assert report.files == 1
        assert (tmp_path / target.id / "var/log/app/app.log").read_text().splitlines() == full.splitlines()[-10:]
        report = LogFetcher(LogSettings(dest=str(tmp_path / "since")), paths=("var/log/*.txt", "var/log/app/app.log"), since=parse_duration("1d")).fetch(conn)
        assert report.paths == ["var/log/app/app.log"]


def test_remote_paths_never_land_outside_dest(tmp_path: Path) -> None:
    assert local_path_for(tmp_path, "/var/log/syslog") == tmp_path / "var" / "log" / "syslog"
    for bad in ("../../etc/passwd", "logs/../../x", "a\nb"):
        with pytest.raises(TransferError, match="would land outside"):
            local_path_for(tmp_path, bad)


def test_fetch_logs_command(sandbox_env: dict[str, str], client: Client, tmp_path: Path) -> None:
    [target] = client.targets(names=["web-2"])
    with client.connect(target) as conn:
        make_logs(conn, lines=100)
    done = subprocess.run(
        [sys.executable, "-m", "ssmfab.program", "fetch-logs", target.id, "--path", "var/log/app/app.log",
         "--dest", str(tmp_path), "--tunnel", "plugin"],
        capture_output=True, text=True, env=dict(os.environ), timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"web-2 ({target.id}): 1 file(s)" in done.stderr
    assert len((tmp_path / target.id / "var/log/app/app.log").read_text().splitlines()) == 100
