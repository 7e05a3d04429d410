"""Transfers and keys that fail say the real cause, naming the path, and as early as it can be known; small files
(under the streamed size) are verified both ways like big ones; fetch-logs leaves no remote temp folder when
the local one cannot be made."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ssmfab import transfer
from ssmfab.client import Client
from ssmfab.config import LogSettings
from ssmfab.exceptions import TransferError
from ssmfab.logs import LogFetcher
from ssmfab.sandbox import Sandbox

from ..unit.transfer_helpers import tmpfs
from .conftest import active_sessions

SSMFAB = [sys.executable, "-m", "ssmfab.program"]
SMALL = 2 << 20  # under transfer.STREAM_MIN_BYTES: the SFTP path


def ssmfab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SSMFAB, *args], capture_output=True, text=True, timeout=120, check=False)


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_get_into_an_existing_file_names_it_before_any_session(sandbox_env: dict[str, str], tmp_path: Path) -> None:
    existing = tmp_path / "notes.txt"
    existing.write_text("mine\n")
    before = len(active_sessions(sandbox_env))
    line = one_error_line(done := ssmfab("get", ".profile", "--dest", str(existing), "--name", "web-1"))
    assert done.returncode == 2
    assert str(existing) in line and "not a folder" in line and "SSH" not in line, line
    assert len(active_sessions(sandbox_env)) == before  # no session was opened for it
    assert existing.read_text() == "mine\n"


def test_get_into_a_read_only_folder_says_so(sandbox_env: dict[str, str], tmp_path: Path) -> None:
    with tmpfs(tmp_path / "ro", "ro,size=1m") as folder:
        line = one_error_line(done := ssmfab("get", ".profile", "--dest", str(folder / "sub"), "--name", "web-1"))
    assert done.returncode == 2
    assert str(folder / "sub") in line and "Read-only file system" in line and "SSH" not in line, line


def test_a_missing_key_is_refused_before_any_aws_call(tmp_path: Path) -> None:
    # No sandbox: an AWS call would fail differently (nothing listens at this endpoint).
    env = dict(os.environ, AWS_ENDPOINT_URL="http://127.0.0.1:9")
    done = subprocess.run([*SSMFAB, "run", "--tag", "web", "--key", str(tmp_path / "nope"), "true"],
                          capture_output=True, text=True, timeout=120, env=env, check=False)  # fmt: skip
    line = one_error_line(done)
    assert done.returncode == 2 and str(tmp_path / "nope") in line and "no such file" in line, line


def test_a_passphrase_protected_key_says_it_needs_the_passphrase(sandbox_env: dict[str, str], tmp_path: Path) -> None:
    key = tmp_path / "locked"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "secret phrase", "-f", str(key)], check=True)
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    done = subprocess.run([*SSMFAB, "run", "--name", "web-1", "--key", str(key), "true"],
                          capture_output=True, text=True, timeout=120, env=env, check=False)  # fmt: skip
    line = one_error_line(done)
    assert "needs its passphrase" in line and "ssh-agent" in line and "refused" not in line, line


def test_a_full_disk_under_a_small_upload_says_so(client: Client, sandbox: Sandbox, tmp_path: Path) -> None:
    home = Path(sandbox.host("web-3").folder) / "home"
    (tmp_path / "small.bin").write_bytes(os.urandom(SMALL))
    with tmpfs(home / "full", "size=1m") as folder:
        with client.connect(sandbox.host("web-3").instance_id) as conn, pytest.raises(TransferError) as failed:
            transfer.put(conn, str(tmp_path / "small.bin"), "full/small.bin")
        assert list(folder.iterdir()) == []
    assert "No space left on device" in str(failed.value) and "checksums differ" not in str(failed.value), failed.value


def _sum_command_that_changes() -> str:
    """The host's checksum command, after appending a byte to each file it is asked about: a file changed on the
    host between the copy and the check (as a failing disk, or another writer, would do)."""
    script = 'for f; do printf x >> "$f"; done; exec sha256sum -- "$@"'
    return f"xargs -0 sh -c {shlex.quote(script)} sh"


def test_a_small_upload_the_host_holds_differently_is_never_renamed_into_place(
    client: Client, sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = Path(sandbox.host("web-3").folder) / "home"
    (tmp_path / "small.bin").write_bytes(os.urandom(SMALL))
    monkeypatch.setattr(transfer.session, "SUM_COMMAND", _sum_command_that_changes())
    with client.connect(sandbox.host("web-3").instance_id) as conn, pytest.raises(TransferError, match="checksums differ"):
        transfer.put(conn, str(tmp_path / "small.bin"), "verified.bin")
    assert not [p.name for p in home.iterdir() if p.name == "verified.bin" or p.name.startswith(".verified.bin.")]


def test_a_small_download_that_changed_on_the_host_is_dropped(
    client: Client, sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = Path(sandbox.host("web-3").folder) / "home"
    (home / "changing.bin").write_bytes(os.urandom(SMALL))
    monkeypatch.setattr(transfer.session, "SUM_COMMAND", _sum_command_that_changes())
    dest = tmp_path / "dest"
    try:
        with client.connect(sandbox.host("web-3").instance_id) as conn, pytest.raises(TransferError, match="did not verify after download"):
            transfer.get(conn, "changing.bi[n]", str(dest) + os.sep)  # a pattern: SFTP, then the read-back checksum
    finally:
        (home / "changing.bin").unlink()
    assert list(dest.iterdir()) == []


def test_fetch_logs_leaves_no_remote_folder_when_the_local_one_cannot_be_made(client: Client, sandbox: Sandbox, tmp_path: Path) -> None:
    blocker = tmp_path / "logs"
    blocker.write_text("a file where the folder should be\n")
    fetcher = LogFetcher(LogSettings(paths=[".profile"], dest=str(blocker)), paths=(".profile",))
    (Path(sandbox.host("web-1").folder) / "home" / ".profile").touch()
    made: list[str] = []
    with client.connect(sandbox.host("web-1").instance_id) as conn:
        real_run = conn.run

        def run(command: str, **kwargs: Any) -> Any:  # records the folder mktemp made, if it ran
            result = real_run(command, **kwargs)
            if command.startswith("mktemp"):
                made.append(result.stdout.strip())
            return result

        conn.run = run
        with pytest.raises(TransferError, match="cannot create local folder"):
            fetcher.fetch(conn)
    assert [folder for folder in made if Path(folder).exists()] == []
