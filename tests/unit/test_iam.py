"""`iam-policy` prints valid policy grammar with exactly the statements the features in use need."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from ssmfab.exceptions import SelectorError
from ssmfab.iam import PolicyScope, allow_policy
from ssmfab.targets import TagFilter


def iam_policy(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ssmfab.program", "iam-policy", *args], capture_output=True, text=True, check=False)


def statements(policy: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Check the grammar every policy must follow and index the statements by Sid."""
    assert set(policy) == {"Version", "Statement"} and policy["Version"] == "2012-10-17"
    by_sid = {}
    for statement in policy["Statement"]:
        assert set(statement) <= {"Sid", "Effect", "Action", "Resource", "Condition"}
        assert statement["Effect"] in ("Allow", "Deny")
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        assert all(":" in a for a in actions)
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        assert all(r == "*" or r.startswith("arn:aws:") for r in resources)
        by_sid[statement["Sid"]] = statement
    return by_sid


def test_default_policy_from_the_command_line() -> None:
    done = iam_policy()
    assert done.returncode == 0, done.stderr
    found = statements(json.loads(done.stdout))
    assert set(found) == {"StartSSHSessionOnInstances", "StartSSHSessionDocument", "EndOwnSessions", "FindInstances"}
    assert found["StartSSHSessionDocument"]["Resource"] == "arn:aws:ssm:*:*:document/AWS-StartSSHSession"
    assert found["FindInstances"]["Action"] == ["ec2:DescribeInstances", "ssm:DescribeInstanceInformation"]
    assert set(found["EndOwnSessions"]["Action"]) == {"ssm:TerminateSession", "ssm:ResumeSession"}


def test_tag_scope_uses_the_resource_tag_condition() -> None:
    done = iam_policy("--tag", "web", "--ephemeral-key", "--run-command")
    found = statements(json.loads(done.stdout))
    assert found["StartSSHSessionOnInstances"]["Condition"] == {"StringEquals": {"ssm:resourceTag/Role": "web"}}
    assert found["PushEphemeralKeys"]["Action"] == "ec2-instance-connect:SendSSHPublicKey"
    assert found["PushEphemeralKeys"]["Condition"] == {"StringEquals": {"ec2:ResourceTag/Role": "web"}}
    # Run Command reaches the same instances as the sessions, no more: the tag condition on the instances,
    # the document in a statement of its own (it carries no instance tag).
    assert found["RunCommandOnInstances"]["Action"] == "ssm:SendCommand"
    assert found["RunCommandOnInstances"]["Condition"] == found["StartSSHSessionOnInstances"]["Condition"]
    assert found["RunCommandOnInstances"]["Resource"] == found["StartSSHSessionOnInstances"]["Resource"]
    assert found["RunCommandDocument"] == {
        "Sid": "RunCommandDocument", "Effect": "Allow", "Action": "ssm:SendCommand",
        "Resource": "arn:aws:ssm:*:*:document/AWS-RunShellScript",
    }  # fmt: skip
    send_command = [s for s in found.values() if "ssm:SendCommand" in s["Action"]]
    assert all("Condition" in s for s in send_command if s["Resource"] != "arn:aws:ssm:*:*:document/AWS-RunShellScript")


def test_id_scope_names_each_instance() -> None:
    scope = PolicyScope(instance_ids=("i-0123456789abcdef0", "mi-0123456789abcdef0"), region="eu-west-1", account="123456789012")
    found = statements(allow_policy(scope))
    assert found["StartSSHSessionOnInstances"]["Resource"] == [
        "arn:aws:ec2:eu-west-1:123456789012:instance/i-0123456789abcdef0",
        "arn:aws:ssm:eu-west-1:123456789012:managed-instance/mi-0123456789abcdef0",
    ]
    assert "Condition" not in found["StartSSHSessionOnInstances"]


def test_deny_switches_ssh_off() -> None:
    done = iam_policy("--deny")
    [statement] = statements(json.loads(done.stdout)).values()
    assert (statement["Effect"], statement["Action"], statement["Resource"]) == (
        "Deny",
        "ssm:StartSession",
        "arn:aws:ssm:*:*:document/AWS-StartSSHSession",
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--id", "i-nothex"], "bad instance id 'i-nothex'"),
        (["--account", "12345"], "bad account '12345'"),
        (["--region", "mars"], "bad region 'mars'"),
        (["--tag", "Role=a", "--tag", "Env=b"], "give one --tag"),
        (["--tag", "Role=a,b"], "takes one tag value"),
        (["--id", "i-12345678", "--tag", "Role=web"], "not both"),
    ],
)
def test_malformed_scopes(args: list[str], message: str) -> None:
    done = iam_policy(*args)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr


def test_scope_validation_in_the_library() -> None:
    with pytest.raises(SelectorError):
        PolicyScope(tag=TagFilter("Role", ("a", "b")))
