"""What a host name given to ssh means, for ``ssmfab-proxy``: an instance id, a private address, or a Name tag,
optionally qualified ``NAME.REGION`` or ``NAME.REGION.PROFILE`` (aws-gate's alias form), resolved to exactly
one instance that can take a session.

A Name tag is not unique in EC2: a name that matches no running instance with an Online agent, or more than
one, is an error that says so in one line (with the candidates), never a silent pick.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .exceptions import NoTargetsError, SelectorError
from .targets import INSTANCE_ID, Selection, Target, parse_selector, resolve

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ssm import SSMClient

#: An AWS region name: us-east-1, eu-central-2, us-gov-west-1, ap-southeast-4.
REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$")
#: What only a private address looks like: an IPv4 address or EC2's private host name.
ADDRESS = re.compile(r"^(\d{1,3}(\.\d{1,3}){3}|ip-\d{1,3}-\d{1,3}-\d{1,3}-\d{1,3}(\..+)?)$")


@dataclass(frozen=True)
class HostAlias:
    """A host name as ssh passes it (``%h``), taken apart."""

    host: str
    region: str | None = None
    profile: str | None = None

    @property
    def is_instance_id(self) -> bool:
        return bool(INSTANCE_ID.fullmatch(self.host))

    def qualified(self) -> str:
        return ".".join(p for p in (self.host, self.region, self.profile) if p)


def parse_host_alias(text: str) -> HostAlias:
    """``web-1``, ``web-1.eu-west-1``, ``web-1.eu-west-1.prod``, ``i-0abc…[.REGION[.PROFILE]]``, ``10.0.1.5``."""
    if not text or text.startswith("-") or any(ch.isspace() for ch in text):
        raise SelectorError(f"bad host {text!r}: expected an instance id, a Name tag or NAME.REGION[.PROFILE]")
    if ADDRESS.fullmatch(text):
        return HostAlias(text)
    parts = text.split(".")
    if len(parts) >= 3 and REGION.fullmatch(parts[-2]) and parts[-1]:
        return HostAlias(".".join(parts[:-2]), parts[-2], parts[-1])
    if len(parts) >= 2 and REGION.fullmatch(parts[-1]):
        return HostAlias(".".join(parts[:-1]), parts[-1])
    return HostAlias(text)


def resolve_host(alias: HostAlias, ec2: EC2Client, ssm: SSMClient, *, region: str, profile: str | None) -> Target:
    """The one running instance with an Online agent that ``alias`` names; NoTargetsError (one line) otherwise."""
    if alias.is_instance_id:
        return Target(id=alias.host, region=region)
    by_address = ADDRESS.fullmatch(alias.host)
    selector = parse_selector(ips=[alias.host]) if by_address else parse_selector(names=[alias.host])
    # A Name is taken literally: ssh host names are not globs.
    if not by_address and any(ch in alias.host for ch in "*?["):
        raise SelectorError(f"bad host {alias.host!r}: a Name given to ssh cannot be a glob")
    selection = resolve(selector, ec2, ssm, region=region)
    return only_target(alias, selection, profile, "at" if by_address else "named")


def only_target(alias: HostAlias, selection: Selection, profile: str | None, how: str) -> Target:
    where = f"region {selection.region}" + (f", profile {profile}" if profile else "")
    if len(selection.targets) == 1:
        return selection.targets[0]
    if len(selection.targets) > 1:
        found = ", ".join(t.label for t in selection.targets[:5])
        raise SelectorError(
            f"{alias.host}: {len(selection.targets)} running instances {how} {alias.host} in {where} ({found}); "
            "give the instance id instead"
        )
    if selection.skipped:
        reasons = "; ".join(f"{s.target.label}: {s.reason}" for s in selection.skipped[:3])
        raise NoTargetsError(f"{alias.host}: no instance {how} {alias.host} can take a session in {where} ({reasons})")
    raise NoTargetsError(f"{alias.host}: no instance {how} {alias.host} in {where} (`ssmfab hosts --name '*'` lists them)")
