"""One run over several regions, accounts (assumed roles) and profiles: one fan-out, the account and region in
the table, the JSON report and the audit record. moto is one server; each region (and each account, reached
through an assumed role's credentials, as on AWS) is a separate backend in it. The extra instances are EC2
records in those backends whose SSM registration routes sessions to an existing sandbox sshd."""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from ssmfab.sandbox import Sandbox

from .test_cli import assert_one_line_error, ssmfab

OTHER_ACCOUNT = "111111111111"
HOME_ACCOUNT = "123456789012"
ROLES = f"arn:aws:iam::{OTHER_ACCOUNT}:role/ops,arn:aws:iam::{HOME_ACCOUNT}:role/ops"


def register(sandbox: Sandbox, account: str, region: str, instance_id: str, like: str) -> None:
    """SSM's registration for ``instance_id`` in that account and region, its sessions reaching ``like``'s sshd."""
    entry = {**sandbox._registration(sandbox.host(like), "Online"), "InstanceId": instance_id}
    request = urllib.request.Request(
        sandbox.endpoint, method="POST", data=json.dumps({"InstanceInformationList": [entry]}).encode(),
        headers={
            "Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "AmazonSSM.SandboxPutInstanceInformation",
            "Authorization": f"AWS4-HMAC-SHA256 Credential=testing/20200101/{region}/ssm/aws4_request, SignedHeaders=host, Signature=0",
            "x-moto-account-id": account,
        },
    )  # fmt: skip
    urllib.request.urlopen(request, timeout=30).close()


def launch(sandbox: Sandbox, account: str, region: str, name: str, like: str) -> tuple[object, str]:
    options: dict[str, str] = {}
    if account != HOME_ACCOUNT:
        sts = boto3.client("sts", endpoint_url=sandbox.endpoint, region_name=region)
        creds = sts.assume_role(RoleArn=f"arn:aws:iam::{account}:role/ops", RoleSessionName="setup")["Credentials"]
        options = {"aws_access_key_id": creds["AccessKeyId"], "aws_secret_access_key": creds["SecretAccessKey"],
                   "aws_session_token": creds["SessionToken"]}  # fmt: skip
    ec2 = boto3.client("ec2", endpoint_url=sandbox.endpoint, region_name=region, **options)  # type: ignore[call-overload]
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    instance_id = ec2.run_instances(
        ImageId=image, MinCount=1, MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": name}, {"Key": "Role", "Value": "web"}]}],
    )["Instances"][0]["InstanceId"]  # fmt: skip
    register(sandbox, account, region, instance_id, like)
    return ec2, instance_id


@pytest.fixture
def spread(sandbox: Sandbox, sandbox_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """west-1 (us-west-2, home account) and far-1 (us-east-1, account 111111111111), both Role=web."""
    made = [launch(sandbox, HOME_ACCOUNT, "us-west-2", "west-1", "web-3"), launch(sandbox, OTHER_ACCOUNT, "us-east-1", "far-1", "db-1")]
    try:
        yield {"west-1": made[0][1], "far-1": made[1][1]}
    finally:
        for ec2, instance_id in made:
            ec2.terminate_instances(InstanceIds=[instance_id])  # type: ignore[attr-defined]


def test_one_run_over_two_regions(spread: dict[str, str], tmp_path: Path) -> None:
    env = dict(os.environ, SSMFAB_AUDIT_PATH=str(tmp_path / "audit.jsonl"))
    done = ssmfab("run", "--tag", "web", "--region", "us-east-1,us-west-2", "echo via $(basename $(dirname $HOME))", env=env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert sorted(line.replace(" ]", "]").replace("  ", " ") for line in lines if " via " in line) == [
        "[web-1] via web-1", "[web-2] via web-2", "[web-3] via web-3", "[west-1] via web-3",
    ]  # fmt: skip
    header = next(line for line in lines if line.startswith("HOST"))
    assert header.split() == ["HOST", "NAME", "ACCOUNT", "REGION", "STATUS", "EXIT", "TIME"]
    west = next(line for line in lines if line.startswith(spread["west-1"]))
    assert west.split()[1:5] == ["west-1", HOME_ACCOUNT, "us-west-2", "ok"]
    records = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert sorted((r["name"], r["region"], r["account"]) for r in records) == [
        ("web-1", "us-east-1", HOME_ACCOUNT), ("web-2", "us-east-1", HOME_ACCOUNT), ("web-3", "us-east-1", HOME_ACCOUNT),
        ("west-1", "us-west-2", HOME_ACCOUNT),
    ]  # fmt: skip


@pytest.mark.parametrize("tunnel", ["plugin", "cli"])
def test_one_run_over_two_accounts_through_assumed_roles(spread: dict[str, str], tunnel: str) -> None:
    done = ssmfab("run", "--tag", "web", "--role-arn", ROLES, "--tunnel", tunnel, "--json", "basename $(dirname $HOME)", env=dict(os.environ))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert sorted((h["name"], h["account"], h["region"], h["stdout"].strip()) for h in report["hosts"]) == [
        ("far-1", OTHER_ACCOUNT, "us-east-1", "db-1"),
        ("web-1", HOME_ACCOUNT, "us-east-1", "web-1"), ("web-2", HOME_ACCOUNT, "us-east-1", "web-2"),
        ("web-3", HOME_ACCOUNT, "us-east-1", "web-3"),
    ]  # fmt: skip


def test_profiles(spread: dict[str, str], tmp_path: Path) -> None:
    config = tmp_path / "aws-config"
    config.write_text(
        "[profile blue]\nregion = us-west-2\naws_access_key_id = testing\naws_secret_access_key = testing\n\n"
        f"[profile green]\nregion = us-east-1\nrole_arn = arn:aws:iam::{OTHER_ACCOUNT}:role/ops\ncredential_source = Environment\n"
    )
    env = dict(os.environ, AWS_CONFIG_FILE=str(config))
    env.pop("AWS_REGION", None)
    env.pop("AWS_DEFAULT_REGION", None)  # each profile's own region
    done = ssmfab("hosts", "--tag", "web", "--profile", "blue,green", env=env)
    assert done.returncode == 0, done.stderr
    rows = {line.split()[1]: line.split()[2:4] for line in done.stdout.splitlines()[2:] if line.startswith(("i-", "mi-"))}
    assert rows == {"west-1": [HOME_ACCOUNT, "us-west-2"], "far-1": [OTHER_ACCOUNT, "us-east-1"]}
    done = ssmfab("run", "--tag", "web", "--profile", "blue,green", "basename $(dirname $HOME)", env=env)
    assert done.returncode == 0, done.stderr
    assert "2 ok, 0 failed" in done.stdout


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["run", "--tag", "web", "--region", "us-east-1,", "true"], 2, "--region 'us-east-1,': an empty value between commas"),
        (["run", "--tag", "web", "--region", "us-east-1,mars", "true"], 2, "--region 'mars': not an AWS region name"),
        (["run", "--tag", "web", "--role-arn", "ops", "true"], 2, "--role-arn 'ops': expected arn:aws:iam::ACCOUNT:role/NAME"),
        (["run", "--tag", "web", "--profile", "nosuch,other", "true"], 2, "AWS profile 'nosuch' not found"),
        (["run", "--tag", "web", "--region", "us-east-1,us-west-2", "--via", "run-command", "true"], 2, "one region and account at a time"),
    ],
)
def test_scope_mistakes_are_one_line(sandbox_env: dict[str, str], args: list[str], code: int, needle: str) -> None:
    assert_one_line_error(ssmfab(*args, env=dict(os.environ)), code, needle)


def test_ssh_config_writes_a_block_per_scope_and_ssh_reaches_each(sandbox: Sandbox, spread: dict[str, str], tmp_path: Path) -> None:
    import subprocess

    done = ssmfab("ssh-config", "--region", "us-east-1,us-west-2", "--name", "web-*", env=dict(os.environ))
    assert done.returncode == 0, done.stderr
    hosts = [line for line in done.stdout.splitlines() if line.startswith("Host ")]
    assert hosts == ["Host i-* mi-* web-* *.us-east-1", "Host *.us-west-2"]
    assert done.stdout.count("--region us-west-2") == 1
    config = tmp_path / "ssh_config"
    config.write_text(done.stdout)
    for host, served_by in (("west-1.us-west-2", "web-3"), ("web-2", "web-2")):
        ssh = subprocess.run(
            ["ssh", "-F", str(config), "-o", "BatchMode=yes", host, "basename $(dirname $HOME)"],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert ssh.returncode == 0, ssh.stderr
        assert ssh.stdout.strip() == served_by
