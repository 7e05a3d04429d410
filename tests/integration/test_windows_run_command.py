"""`run --via run-command` on a fleet with a Windows instance: it gets AWS-RunPowerShellScript, the others
AWS-RunShellScript, in one run. The sandbox's hosts are Linux: an instance registers with SSM as Windows, and
the sandbox's agent runs PowerShell scripts with pwsh when the machine has it, else with sh (so the commands
here are ones both shells read alike)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import boto3
import pytest

from ssmfab.sandbox import Sandbox
from ssmfab.sandbox.local_fleet import REGION
from ssmfab.sandbox.moto_ext import sandbox_put_instance_information

from .test_cli import ssmfab


@pytest.fixture
def windows_web_2(sandbox: Sandbox, sandbox_env: dict[str, str]) -> Iterator[str]:
    host = sandbox.host("web-2")
    entry = {**sandbox._registration(host, "Online"), "PlatformType": "Windows", "PlatformName": "Microsoft Windows Server 2022 Datacenter"}
    sandbox_put_instance_information(sandbox.endpoint, REGION, [entry])
    try:
        yield host.instance_id
    finally:
        sandbox_put_instance_information(sandbox.endpoint, REGION, [sandbox._registration(host, "Online")])


def test_windows_hosts_get_powershell(windows_web_2: str) -> None:
    done = ssmfab("run", "--tag", "web", "--via", "run-command", "--json", "echo hello", env=dict(os.environ))
    assert done.returncode == 0, done.stderr
    hosts = {h["name"]: h for h in json.loads(done.stdout)["hosts"]}
    assert {name: h["document"] for name, h in hosts.items()} == {
        "web-1": "AWS-RunShellScript", "web-2": "AWS-RunPowerShellScript", "web-3": "AWS-RunShellScript",
    }  # fmt: skip
    assert all(h["stdout"] == "hello\n" and h["status"] == "ok" for h in hosts.values())


def test_a_windows_tag_selection_goes_out_by_tag_with_powershell(sandbox: Sandbox, windows_web_2: str, sandbox_env: dict[str, str]) -> None:
    """One platform, tags only: a single SendCommand by tag, with the PowerShell document; full output read
    back from the PowerShell plugin's CloudWatch stream."""
    ssm = boto3.client("ssm", endpoint_url=sandbox.endpoint, region_name=REGION)
    before = {c["CommandId"] for c in ssm.list_commands()["Commands"]}
    done = ssmfab("run", "--tag", "Name=web-2", "--via", "run-command", "--cloudwatch-output", "--json", "echo " + "x" * 30000, env=dict(os.environ))
    assert done.returncode == 0, done.stderr
    [host] = json.loads(done.stdout)["hosts"]
    assert host["document"] == "AWS-RunPowerShellScript" and host["stdout"] == "x" * 30000 + "\n"
    [command] = [c for c in ssm.list_commands()["Commands"] if c["CommandId"] not in before]
    assert command["DocumentName"] == "AWS-RunPowerShellScript"
    assert command["Targets"] == [{"Key": "tag:Name", "Values": ["web-2"]}]
