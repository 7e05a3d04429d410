"""The IAM policy a caller needs for the ssmfab features in use, and the Deny that turns SSH over SSM off.

Built from AWS's page on SSH through Session Manager: ``ssm:StartSession`` on the instances and on the
``AWS-StartSSHSession`` document, ``ssm:TerminateSession``/``ResumeSession`` on the caller's own sessions,
plus what target resolution, EC2 Instance Connect and Run Command call.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .exceptions import SelectorError
from .targets import INSTANCE_ID, TagFilter

ACCOUNT = re.compile(r"^(\*|\d{12})$")
REGION = re.compile(r"^(\*|[a-z]{2}(-[a-z]+)+-\d)$")


@dataclass(frozen=True)
class PolicyScope:
    """Which instances the policy covers: ids, or every instance carrying one tag value, or all."""

    instance_ids: tuple[str, ...] = ()
    tag: TagFilter | None = None
    region: str = "*"
    account: str = "*"

    def __post_init__(self) -> None:
        for instance_id in self.instance_ids:
            if not INSTANCE_ID.fullmatch(instance_id):
                raise SelectorError(f"bad instance id {instance_id!r} for the policy scope: expected i-… or mi-…")
        if self.instance_ids and self.tag is not None:
            raise SelectorError("scope the policy by instance ids or by one tag, not both")
        if self.tag is not None and len(self.tag.values) != 1:
            raise SelectorError(f"the policy scope takes one tag value, got {self.tag}")
        if not ACCOUNT.fullmatch(self.account):
            raise SelectorError(f"bad account {self.account!r}: expected 12 digits or *")
        if not REGION.fullmatch(self.region):
            raise SelectorError(f"bad region {self.region!r}: expected e.g. eu-west-1 or *")

    def instance_arns(self) -> list[str]:
        if not self.instance_ids:
            return [f"arn:aws:ec2:{self.region}:{self.account}:instance/*", f"arn:aws:ssm:{self.region}:{self.account}:managed-instance/*"]
        return [
            f"arn:aws:ssm:{self.region}:{self.account}:managed-instance/{i}"
            if i.startswith("mi-")
            else f"arn:aws:ec2:{self.region}:{self.account}:instance/{i}"
            for i in self.instance_ids
        ]

    def condition(self, prefix: str) -> dict[str, Any]:
        if self.tag is None:
            return {}
        return {"Condition": {"StringEquals": {f"{prefix}/{self.tag.key}": self.tag.values[0]}}}


def _statement(sid: str, actions: Sequence[str], resources: Sequence[str], **extra: Any) -> dict[str, Any]:
    return {
        "Sid": sid,
        "Effect": "Allow",
        "Action": list(actions) if len(actions) > 1 else actions[0],
        "Resource": list(resources) if len(resources) > 1 else resources[0],
        **extra,
    }


def allow_policy(
    scope: PolicyScope, *, document: str = "AWS-StartSSHSession", ephemeral_keys: bool = False, run_command: bool = False
) -> dict[str, Any]:
    """Least privilege for ssmfab's SSH path, plus Instance Connect and Run Command when asked for."""
    arns = scope.instance_arns()
    statements = [
        _statement("StartSSHSessionOnInstances", ["ssm:StartSession"], arns, **scope.condition("ssm:resourceTag")),
        _statement("StartSSHSessionDocument", ["ssm:StartSession"], [f"arn:aws:ssm:*:*:document/{document}"]),
        _statement(
            "EndOwnSessions",
            ["ssm:TerminateSession", "ssm:ResumeSession"],
            ["arn:aws:ssm:*:*:session/${aws:username}-*", "arn:aws:ssm:*:*:session/${aws:userid}-*"],
        ),
        _statement("FindInstances", ["ec2:DescribeInstances", "ssm:DescribeInstanceInformation"], ["*"]),
    ]
    if ephemeral_keys:
        ec2_arns = [a for a in arns if ":ec2:" in a]
        statements.append(
            _statement(
                "PushEphemeralKeys", ["ec2-instance-connect:SendSSHPublicKey"], ec2_arns or arns, **scope.condition("ec2:ResourceTag")
            )
        )
    if run_command:
        # As AWS documents for Run Command by tag: the instances carry the tag condition (ssm:resourceTag on
        # the instance resource); the document has no such tag, so it gets a statement of its own (in one
        # statement the condition would either deny the document or, left off, allow every instance).
        statements.append(
            _statement("RunCommandOnInstances", ["ssm:SendCommand"], arns, **scope.condition("ssm:resourceTag"))
        )
        statements.append(
            _statement("RunCommandDocument", ["ssm:SendCommand"], ["arn:aws:ssm:*:*:document/AWS-RunShellScript"])
        )
        statements.append(_statement("ReadCommandResults", ["ssm:GetCommandInvocation", "ssm:ListCommandInvocations"], ["*"]))
    return {"Version": "2012-10-17", "Statement": statements}


def deny_policy(document: str = "AWS-StartSSHSession") -> dict[str, Any]:
    """AWS's switch for SSH over Session Manager: deny starting sessions with the SSH document."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "DenySSHOverSessionManager",
                "Effect": "Deny",
                "Action": "ssm:StartSession",
                "Resource": f"arn:aws:ssm:*:*:document/{document}",
            }
        ],
    }
