"""ssh-config: AWS's ProxyCommand block, installed idempotently between markers with a backup."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from ssmfab.client import Client
from ssmfab.exceptions import ConfigError
from ssmfab.sshconfig import BEGIN, END, config_block, install


def test_block_forms() -> None:
    client = Client(region="eu-west-1", profile=None, user="ubuntu", key="~/.ssh/ops.pem", tunnel="cli")
    linux = config_block(client)
    assert linux.startswith(BEGIN) and linux.rstrip().endswith(END)
    assert "Host i-* mi-*\n    User ubuntu\n    IdentityFile ~/.ssh/ops.pem\n" in linux
    assert (
        '    ProxyCommand sh -c "aws ssm start-session --target %h --document-name AWS-StartSSHSession '
        '--parameters portNumber=%p --region eu-west-1"'
    ) in linux
    assert f"UserKnownHostsFile {client.known_hosts.path}" in linux
    windows = config_block(client, windows=True)
    assert r'ProxyCommand C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe "aws ssm start-session' in windows


def test_plugin_mode_blocks_use_ssmfab_proxy() -> None:
    client = Client(region="eu-west-1", profile=None, user="ubuntu", tunnel="plugin")
    block = config_block(client)
    assert f"    ProxyCommand {sys.executable} -m ssmfab.proxy --region eu-west-1 %h %p\n" in block
    assert "aws ssm start-session" not in block
    assert "aws ssm start-session" in config_block(client, windows=True)  # Windows keeps AWS's documented form


def test_install_is_idempotent_and_keeps_a_backup(tmp_path: Path) -> None:
    path = tmp_path / "ssh" / "config"
    assert install(path, "# >>> ssmfab: x >>>\n".replace("# >>> ssmfab: x >>>", BEGIN) + "Host a\n" + END + "\n") is None
    first = path.read_text()
    path.write_text("Host other\n    User me\n\n" + first + "Host after\n")
    block = BEGIN + "\nHost i-*\n" + END + "\n"
    backup = install(path, block)
    assert backup is not None and "Host a" in backup.read_text()
    text = path.read_text()
    assert text == "Host other\n    User me\n\n" + block + "Host after\n"
    assert install(path, block) is None  # same block: nothing written, no new backup
    assert path.read_text() == text
    assert (path.stat().st_mode & 0o777) == 0o600


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_config_is_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text("Host x\n")
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(ConfigError, match="is unchanged"):
            install(path, BEGIN + "\n" + END + "\n")
    finally:
        tmp_path.chmod(0o700)
    assert path.read_text() == "Host x\n"


def test_config_path_that_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        install(tmp_path, BEGIN + "\n" + END + "\n")
    assert not list(tmp_path.iterdir())


def test_config_under_a_file_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="cannot write .*is unchanged"):
        install(blocker / "config", BEGIN + "\n" + END + "\n")


def test_the_block_shares_sessions_like_controlpersist_when_warm_sessions_are_on() -> None:
    from ssmfab.client import Client
    from ssmfab.sshconfig import config_block

    on = config_block(Client(Client().settings.merged({"ssh.persist": "10m"}), tunnel="cli"))
    assert "ControlMaster auto" in on and "ControlPersist 600s" in on and "ControlPath ~/.ssh/ssmfab-%C" in on
    off = config_block(Client(Client().settings.merged({"ssh.persist": "0"}), tunnel="cli"))
    assert "ControlMaster" not in off and "ServerAliveInterval 15" in off
