"""Ephemeral keys: generated per run, pushed with EC2 Instance Connect before each connection, never on disk.

The sandbox's sshd accepts a pushed key through a second AuthorizedKeysFile with OpenSSH's own
expiry-time, the way EC2 Instance Connect's 60-second window behaves on a real instance."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from ssmfab.client import Client
from ssmfab.exceptions import AuthenticationError
from ssmfab.fleet import fan_out, run_command
from ssmfab.sandbox import Sandbox


def key_files() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("ssmfab-key-*")}


@pytest.fixture
def no_static_key(sandbox_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SSMFAB_KEY")
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ssh keys to fall back on either


def test_fan_out_with_one_key_and_one_push_per_host(sandbox: Sandbox, no_static_key: None) -> None:
    before = len(sandbox.pushed_keys())
    client = Client(ephemeral_key=True, tunnel="plugin")
    web = client.targets(tags=["web"])
    result = fan_out(web, client.connect, run_command("echo pushed", hide=True), parallel=3)
    assert [r.status for r in result.results] == ["ok", "ok", "ok"], [r.error for r in result.results]
    pushes = sandbox.pushed_keys()[before:]
    assert sorted(p["InstanceId"] for p in pushes) == sorted(t.id for t in web)
    assert len({p["SSHPublicKey"] for p in pushes}) == 1  # one key for the whole run
    assert pushes[0]["SSHPublicKey"].startswith("ssh-ed25519 ")
    assert all(p["InstanceOSUser"] == os.environ["SSMFAB_USER"] for p in pushes)
    assert "PRIVATE" not in repr(client.ephemeral_key)


def test_without_the_push_the_key_is_refused(sandbox: Sandbox, no_static_key: None) -> None:
    client = Client(tunnel="plugin")
    with pytest.raises(AuthenticationError):
        client.connect(sandbox.host("db-1").instance_id).run("true")


def test_reconnect_pushes_again(sandbox: Sandbox, no_static_key: None) -> None:
    client = Client(ephemeral_key=True, tunnel="plugin")
    conn = client.connect(sandbox.host("web-1").instance_id)
    before = len(sandbox.pushed_keys())
    conn.run("true", hide=True)
    conn.close()
    conn.run("true", hide=True)  # Fabric reopens: a fresh push precedes it
    conn.close()
    assert len(sandbox.pushed_keys()) - before == 2


def test_shell_with_an_ephemeral_key_leaves_no_key_file(sandbox: Sandbox, no_static_key: None) -> None:
    before = key_files()
    done = subprocess.run(
        [sys.executable, "-m", "ssmfab.program", "shell", "web-2", "--ephemeral-key", "--cmd", "echo via-ephemeral"],
        capture_output=True, text=True, env=dict(os.environ), timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "via-ephemeral" in done.stdout
    assert key_files() == before
