"""Hostile input: shell metacharacters, quotes, leading dashes and long values in paths and tags never reach
a remote shell unquoted, and a remote that prints without end cannot exhaust local memory."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ssmfab.client import Client
from ssmfab.config import DeploySettings, LogSettings
from ssmfab.deploy import Deployer
from ssmfab.exceptions import TransferError
from ssmfab.logs import LogFetcher
from ssmfab.transfer import get, put

NASTY = ["-rf $(touch PWNED)", "it's \"quoted\" `touch PWNED`", "semi;colon&amp|pipe>redir", "*glob?[x]", "x" * 200]


@pytest.mark.parametrize("name", NASTY)
def test_nasty_file_names_round_trip_and_run_nothing(client: Client, tmp_path: Path, name: str) -> None:
    [target] = client.targets(names=["web-1"])
    local = tmp_path / "up" / name
    local.parent.mkdir()
    local.write_text("payload\n")
    with client.connect(target) as conn:
        conn.run("rm -rf hostile-files PWNED && mkdir hostile-files")
        put(conn, str(local), "hostile-files/")
        back = tmp_path / "down"
        back.mkdir()
        get(conn, "hostile-files", str(back) + os.sep, recursive=True)
        assert conn.run("test -e PWNED", warn=True, hide=True).failed
    assert (back / "hostile-files" / name).read_text() == "payload\n"
    assert not (tmp_path / "PWNED").exists() and not Path("PWNED").exists()


def test_deploy_and_fetch_logs_quote_their_paths(client: Client, tmp_path: Path) -> None:
    [target] = client.targets(names=["web-2"])
    artifact = tmp_path / "art"
    artifact.mkdir()
    (artifact / "VERSION").write_text("1\n")
    base = "deploy $(touch PWNED); x"
    with client.connect(target) as conn:
        conn.run("rm -f PWNED")
        Deployer(DeploySettings(artifact=str(artifact), base_dir=base), artifact).deploy(conn)
        assert conn.run(f"cat '{base}/current/VERSION'", hide=True).stdout == "1\n"
        conn.run(f"mkdir -p logs && echo line > 'logs/a $(touch PWNED).log'")
        report = LogFetcher(LogSettings(dest=str(tmp_path / "logs")), paths=("logs/*.log",)).fetch(conn)
        assert report.files == 1
        assert conn.run("test -e PWNED", warn=True, hide=True).failed


def test_remote_names_with_newlines_are_refused_file_by_file(client: Client, tmp_path: Path) -> None:
    [target] = client.targets(names=["web-3"])
    with client.connect(target) as conn:
        conn.run("rm -rf nl && mkdir nl && echo ok > nl/good && printf x > \"nl/$(printf 'a\\nb')\"")
        with pytest.raises(TransferError, match="newline"):
            get(conn, "nl", str(tmp_path) + os.sep, recursive=True)
    assert (tmp_path / "nl" / "good").read_text() == "ok\n"
    assert sorted(p.name for p in (tmp_path / "nl").iterdir()) == ["good"]


def test_endless_output_is_streamed_and_capped(sandbox_env: dict[str, str]) -> None:
    """150 MB of output through a real run: the result keeps the tail, and the memory it takes stays far below it."""
    script = textwrap.dedent(
        """
        import sys, tracemalloc
        from ssmfab.client import Client
        client = Client(tunnel="plugin")
        [target] = client.targets(names=["db-1"])
        tracemalloc.start()
        with client.connect(target) as conn:
            result = conn.run("head -c 150000000 /dev/zero | tr '\\\\0' a; echo; echo END", hide=True)
        print(len(result.stdout), result.stdout.splitlines()[0][:40], result.stdout.rstrip().endswith("END"))
        print(tracemalloc.get_traced_memory()[1] // 2**20)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=dict(os.environ), timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.splitlines()
    length, marker, ended = first.split(" ", 2)[0], first.split(" ", 2)[1], first.endswith("True")
    assert int(length) < 1_100_000 and marker == "[ssmfab:" and ended
    # Memory the run's objects held at their peak (tracemalloc: what Python allocated, kept or in flight); a
    # process's peak RSS also counts how the C allocator lays out freed blocks, which varies with the machine.
    assert int(second) < 80, f"peak memory {second} MiB for 150 MB of output"
