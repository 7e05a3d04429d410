"""Plain OpenSSH by name: `ssh web-1`, `ssh web-1.us-east-1`, `scp f web-3:` through the block `ssmfab ssh-config
--name` writes, with ssmfab-proxy looking the Name up (exactly one running instance with an Online agent)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from ssmfab.hostnames import parse_host_alias
from ssmfab.sandbox import Sandbox

from .test_cli import ssmfab


@pytest.fixture
def ssh_config(sandbox_env: dict[str, str], tmp_path: Path) -> Path:
    done = ssmfab("ssh-config", "--name", "web-*", "--name", "db-1", env=dict(os.environ))
    assert done.returncode == 0, done.stderr
    assert "Host i-* mi-* web-* db-1 *.us-east-1\n" in done.stdout
    config = tmp_path / "ssh_config"
    config.write_text(done.stdout)
    return config


def ssh(config: Path, *args: str, program: str = "ssh") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [program, "-F", str(config), "-o", "BatchMode=yes", *args],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("host", ["web-1", "web-1.us-east-1", "db-1"])
def test_ssh_by_name_and_alias(ssh_config: Path, host: str) -> None:
    done = ssh(ssh_config, host, "basename $(dirname $HOME)")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == host.split(".")[0]


def test_scp_by_name(sandbox: Sandbox, ssh_config: Path, tmp_path: Path) -> None:
    source = tmp_path / "payload with space.txt"
    source.write_text("by name\n")
    done = ssh(ssh_config, str(source), "web-3:", program="scp")
    assert done.returncode == 0, done.stderr
    assert (Path(sandbox.host("web-3").folder) / "home" / source.name).read_text() == "by name\n"


def one_proxy_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 255, (done.stdout, done.stderr)
    lines = [line for line in done.stderr.splitlines() if line.startswith("ssmfab-proxy: ")]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    return lines[0]


def test_a_name_nothing_has(ssh_config: Path) -> None:
    assert one_proxy_line(ssh(ssh_config, "web-9", "true")) == (
        "ssmfab-proxy: web-9: no instance named web-9 in region us-east-1 (`ssmfab hosts --name '*'` lists them)"
    )


@pytest.fixture
def two_named_web_1(sandbox: Sandbox, sandbox_env: dict[str, str]) -> Iterator[None]:
    ec2 = boto3.client("ec2", endpoint_url=sandbox.endpoint, region_name="us-east-1")
    db = sandbox.host("db-1").instance_id
    ec2.create_tags(Resources=[db], Tags=[{"Key": "Name", "Value": "web-1"}])
    try:
        yield
    finally:
        ec2.create_tags(Resources=[db], Tags=[{"Key": "Name", "Value": "db-1"}])


def test_a_name_two_instances_have(sandbox: Sandbox, ssh_config: Path, two_named_web_1: None) -> None:
    line = one_proxy_line(ssh(ssh_config, "web-1", "true"))
    assert line.startswith("ssmfab-proxy: web-1: 2 running instances named web-1 in region us-east-1 (")
    assert sandbox.host("web-1").instance_id in line and sandbox.host("db-1").instance_id in line
    assert line.endswith("give the instance id instead")


def test_a_name_whose_agent_is_offline(sandbox: Sandbox, ssh_config: Path) -> None:
    sandbox.set_agent_status("web-2", "ConnectionLost")
    try:
        line = one_proxy_line(ssh(ssh_config, "web-2", "true"))
    finally:
        sandbox.set_agent_status("web-2", "Online")
    assert line.startswith("ssmfab-proxy: web-2: no instance named web-2 can take a session in region us-east-1 (")
    assert "SSM agent is ConnectionLost" in line


def test_an_alias_naming_a_profile_that_does_not_exist(ssh_config: Path, sandbox_env: dict[str, str]) -> None:
    line = one_proxy_line(ssh(ssh_config, "-o", "Hostname=web-1.us-east-1.nosuch", "web-1", "true"))
    assert "AWS profile 'nosuch' not found" in line


def test_ssh_config_refuses_a_name_ssh_would_split(sandbox_env: dict[str, str]) -> None:
    done = ssmfab("ssh-config", "--name", "web 1", env=dict(os.environ))
    assert done.returncode == 2 and done.stderr.startswith("error: --name 'web 1': a Host pattern is"), done.stderr
    done = ssmfab("ssh-config", "--name", "web-*", "--tunnel", "cli", env=dict(os.environ))
    assert done.returncode == 2 and "Host names need ssmfab-proxy" in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("web-1", ("web-1", None, None)),
        ("web-1.eu-west-1", ("web-1", "eu-west-1", None)),
        ("api.internal.us-gov-west-1.prod", ("api.internal", "us-gov-west-1", "prod")),
        ("i-0123456789abcdef0.ap-southeast-2.ops", ("i-0123456789abcdef0", "ap-southeast-2", "ops")),
        ("ip-10-0-1-5.ec2.internal", ("ip-10-0-1-5.ec2.internal", None, None)),
        ("db.example.com", ("db.example.com", None, None)),
    ],
)
def test_host_aliases(text: str, parts: tuple[str, str | None, str | None]) -> None:
    alias = parse_host_alias(text)
    assert (alias.host, alias.region, alias.profile) == parts
