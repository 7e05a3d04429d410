"""--asg and --ip on the command line, through real sshd on the sandbox; bad values refused before any AWS call."""

from __future__ import annotations

import os
from collections.abc import Iterator

import boto3
import pytest

from ssmfab.sandbox import Sandbox
from ssmfab.targets import ASG_TAG

from .test_cli import assert_one_line_error, ssmfab


def private_addresses(sandbox: Sandbox, name: str) -> tuple[str, str]:
    ec2 = boto3.client("ec2", endpoint_url=sandbox.endpoint, region_name="us-east-1")
    [reservation] = ec2.describe_instances(InstanceIds=[sandbox.host(name).instance_id])["Reservations"]
    instance = reservation["Instances"][0]
    return instance["PrivateIpAddress"], instance["PrivateDnsName"]


@pytest.fixture
def in_asg(sandbox: Sandbox, sandbox_env: dict[str, str]) -> Iterator[list[str]]:
    """web-2 and db-1 carry the tag EC2 Auto Scaling puts on the instances it launches (removed afterwards)."""
    ec2 = boto3.client("ec2", endpoint_url=sandbox.endpoint, region_name="us-east-1")
    ids = [sandbox.host(n).instance_id for n in ("web-2", "db-1")]
    ec2.create_tags(Resources=ids, Tags=[{"Key": ASG_TAG, "Value": "app-asg-blue"}])
    try:
        yield ids
    finally:
        ec2.delete_tags(Resources=ids, Tags=[{"Key": ASG_TAG}])


def test_asg_runs_on_the_groups_instances(in_asg: list[str]) -> None:
    done = ssmfab("run", "--asg", "app-asg-*", "echo in $(basename $(dirname $HOME))", env=dict(os.environ))
    assert done.returncode == 0, done.stderr
    assert sorted(line.replace(" ]", "]") for line in done.stdout.splitlines() if " in " in line) == ["[db-1] in db-1", "[web-2] in web-2"]


def test_ip_and_dns_name_select_one_host(sandbox: Sandbox, sandbox_env: dict[str, str]) -> None:
    ip, dns = private_addresses(sandbox, "web-3")
    for value in (ip, dns, dns.split(".")[0]):
        done = ssmfab("run", "--ip", value, "basename $(dirname $HOME)", env=dict(os.environ))
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[0] == "[web-3] web-3", value
    # As the positional target of a one-host task, an address is an address (not a Name glob).
    done = ssmfab("fetch-logs", ip, "--path", "/nonexistent/*.log", env=dict(os.environ))
    assert "web-3" in done.stdout + done.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["run", "--ip", "10.0.0.300", "true"], "bad --ip '10.0.0.300'"),
        (["run", "--ip", "$(touch /tmp/x)", "true"], "bad --ip '$(touch /tmp/x)'"),
        (["hosts", "--ip", "10.0.1"], "bad --ip '10.0.1'"),
        (["put", "--asg", "", "pyproject.toml", "/tmp/"], "empty --asg"),
    ],
)
def test_bad_asg_and_ip_fail_before_any_aws_call(sandbox_env: dict[str, str], args: list[str], needle: str) -> None:
    # AWS is a port nothing listens on, and no plugin exists: the selector must be refused before either matters.
    env = dict(os.environ, AWS_ENDPOINT_URL="http://127.0.0.1:9", SSMFAB_PLUGIN="/nonexistent/plugin")
    assert_one_line_error(ssmfab(*args, env=env), 2, needle)
