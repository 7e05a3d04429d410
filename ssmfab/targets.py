"""Selectors to Target records.

A selector is any mix of instance ids (``i-…``, hybrid ``mi-…``), Name-tag globs, tag filters, Auto Scaling
group names and private addresses; all criteria given must hold (ids, names, groups, addresses and each tag key
are ANDed; the values of one kind are ORed). An Auto Scaling group is its ``aws:autoscaling:groupName`` tag,
which EC2 puts on every instance the group launches: no Auto Scaling API (nor its IAM permission) is needed.
A private address is an IP (``10.0.1.5``, ``10.0.1.*``) or a private DNS name (``ip-10-0-1-5.ec2.internal``;
``ip-10-0-1-5`` alone matches it in any region's domain).

EC2 says which instances exist and run; SSM's DescribeInstanceInformation says which of them have an agent
that can open a session. An instance that matches but cannot be reached (stopped, agent offline, not managed
by SSM) is reported in ``Selection.skipped`` with the reason, never silently dropped. Hybrid ``mi-`` nodes
exist only in SSM. AWS clients are passed in, so tests and callers choose region, profile and endpoint.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .exceptions import NoTargetsError, SelectorError

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ssm import SSMClient

INSTANCE_ID = re.compile(r"^(i|mi)-([0-9a-f]{8}|[0-9a-f]{17})$")
TAG_KEY = re.compile(r"^[\w .:/=+\-@*?]{1,128}$")
#: SSM filters take at most 50 values, DescribeInstanceInformation pages at most 50 entries.
SSM_BATCH = 50
#: DescribeInstances page size: small enough to stream, large enough for few calls.
EC2_PAGE = 100
#: States worth reporting when a selector matches them; terminated instances are gone for good.
VISIBLE_STATES = ["pending", "running", "stopping", "stopped", "shutting-down"]
#: The tag EC2 Auto Scaling puts on each instance it launches.
ASG_TAG = "aws:autoscaling:groupName"
#: An IPv4 address, or a glob of one (10.0.1.*).
IP_GLOB = re.compile(r"^[0-9*?]{1,3}(\.[0-9*?]{1,3}){0,3}$")
#: A DNS name or a glob of one: letters, digits, hyphens and dots.
DNS_GLOB = re.compile(r"^[A-Za-z0-9*?]([A-Za-z0-9*?.-]{0,252})$")
#: The host part EC2 gives private DNS names: ip-10-0-1-5 (the domain depends on the region).
IP_HOSTNAME = re.compile(r"^ip-\d{1,3}-\d{1,3}-\d{1,3}-\d{1,3}$")


@dataclass(frozen=True)
class TagFilter:
    key: str
    values: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.key}={','.join(self.values)}"

    def matches(self, tags: Mapping[str, str]) -> bool:
        return self.key in tags and any(fnmatch.fnmatchcase(tags[self.key], v) for v in self.values)


@dataclass(frozen=True)
class Selector:
    ids: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    tags: tuple[TagFilter, ...] = ()
    #: Auto Scaling group names (or globs).
    asgs: tuple[str, ...] = ()
    #: Private IPs (or globs of them).
    ips: tuple[str, ...] = ()
    #: Private DNS names (or globs of them).
    dns_names: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.ids or self.names or self.tags or self.asgs or self.ips or self.dns_names)

    def __str__(self) -> str:
        parts = list(self.ids)
        parts += [f"--name {n}" for n in self.names]
        parts += [f"--tag {t}" for t in self.tags]
        parts += [f"--asg {a}" for a in self.asgs]
        parts += [f"--ip {a}" for a in (*self.ips, *self.dns_names)]
        return " ".join(parts) or "(all instances)"

    def matches(self, instance_id: str, tags: Mapping[str, str], name: str, ip: str = "", dns_name: str = "") -> bool:
        """Client-side check, used for hybrid nodes and as a guard on what AWS returned."""
        if self.ids and instance_id not in self.ids:
            return False
        if self.names and not any(fnmatch.fnmatchcase(name, pattern) for pattern in self.names):
            return False
        if self.asgs and not (ASG_TAG in tags and any(fnmatch.fnmatchcase(tags[ASG_TAG], p) for p in self.asgs)):
            return False
        if not self.matches_address(ip, dns_name):
            return False
        return all(t.matches(tags) for t in self.tags)

    def matches_address(self, ip: str, dns_name: str) -> bool:
        """Whether the private IP or DNS name is one of those asked for (any, when none was)."""
        if not (self.ips or self.dns_names):
            return True
        return any(fnmatch.fnmatchcase(ip, p) for p in self.ips) or any(
            fnmatch.fnmatchcase(dns_name.lower(), p.lower()) for p in self.dns_names
        )


@dataclass(frozen=True)
class Target:
    """One instance ssmfab can open a session to."""

    id: str
    name: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)
    private_ip: str = ""
    platform: str = ""
    state: str = "running"
    private_dns: str = ""
    #: The AWS account the instance belongs to (its reservation's owner), when known.
    account: str = ""
    #: The profile (or assumed role) it was found with, when a run spans several; "" otherwise.
    scope: str = ""
    ping_status: str = ""
    agent_version: str = ""
    region: str = ""

    @property
    def label(self) -> str:
        """How a host is named in output: ``name (id)`` when it has a name."""
        return f"{self.name} ({self.id})" if self.name else self.id


@dataclass(frozen=True)
class Skipped:
    target: Target
    reason: str


@dataclass(frozen=True)
class Selection:
    targets: list[Target]
    skipped: list[Skipped]
    selector: Selector
    region: str


def parse_selector(
    ids: Iterable[str] = (),
    names: Iterable[str] = (),
    tags: Iterable[str] = (),
    *,
    asgs: Iterable[str] = (),
    ips: Iterable[str] = (),
    default_tag_key: str = "Role",
) -> Selector:
    """Validate user input into a Selector; raises SelectorError naming the bad value and the fix."""
    id_list: list[str] = []
    for raw in _split_commas(ids):
        if not INSTANCE_ID.fullmatch(raw):
            raise SelectorError(
                f"bad instance id {raw!r}: expected i-… or mi-… followed by 8 or 17 hex digits "
                "(use --name for Name tags)"
            )
        id_list.append(raw)
    name_list = [n.strip() for n in names if n.strip()]
    for name in names:
        if not name.strip():
            raise SelectorError("empty --name: give a Name tag value or glob, e.g. --name 'web-*'")
    merged: dict[str, list[str]] = {}
    for raw in tags:
        key, value_list = _parse_tag(raw, default_tag_key)
        merged.setdefault(key, [])
        merged[key] += [v for v in value_list if v not in merged[key]]
    asg_list = [_parse_asg(raw) for raw in asgs]
    ip_list: list[str] = []
    dns_list: list[str] = []
    for raw in ips:
        if not raw.strip():
            raise SelectorError("empty --ip: give a private IP (10.0.1.5, 10.0.1.*) or private DNS name")
        for part in (p.strip() for p in raw.split(",") if p.strip()):
            kind, value = _parse_address(part)
            (ip_list if kind == "ip" else dns_list).append(value)
    return Selector(
        ids=tuple(dict.fromkeys(id_list)),
        names=tuple(dict.fromkeys(name_list)),
        tags=tuple(TagFilter(k, tuple(v)) for k, v in merged.items()),
        asgs=tuple(dict.fromkeys(asg_list)),
        ips=tuple(dict.fromkeys(ip_list)),
        dns_names=tuple(dict.fromkeys(dns_list)),
    )


def _parse_asg(raw: str) -> str:
    name = raw.strip()
    if not name:
        raise SelectorError("empty --asg: give an Auto Scaling group name or glob, e.g. --asg 'web-asg-*'")
    if len(name) > 255 or any(ord(ch) < 32 for ch in name):
        raise SelectorError(f"bad --asg {raw!r}: an Auto Scaling group name is 1-255 printable characters")
    return name


def _parse_address(text: str) -> tuple[str, str]:
    """("ip", address or glob) or ("dns", name or glob); SelectorError for anything else."""
    if set(text) <= set("0123456789.*?"):
        wild = any(ch in text for ch in "*?")
        try:
            if wild and not IP_GLOB.fullmatch(text):
                raise ValueError
            if not wild:
                ipaddress.IPv4Address(text)
        except ValueError:
            raise SelectorError(f"bad --ip {text!r}: not an IPv4 address or glob (10.0.1.5, 10.0.1.*)") from None
        return "ip", text
    if ":" in text:
        try:
            return "ip", str(ipaddress.IPv6Address(text))
        except ValueError:
            raise SelectorError(f"bad --ip {text!r}: not an IPv6 address") from None
    if DNS_GLOB.fullmatch(text) and ".." not in text:
        # EC2's host part alone (what `hostname` prints on the instance): in whatever domain the region uses.
        return "dns", f"{text}.*" if IP_HOSTNAME.fullmatch(text) else text
    raise SelectorError(
        f"bad --ip {text!r}: expected a private IP (10.0.1.5, 10.0.1.*) or private DNS name (ip-10-0-1-5.ec2.internal)"
    )


def _split_commas(values: Iterable[str]) -> Iterator[str]:
    for value in values:
        for part in value.split(","):
            if part.strip():
                yield part.strip()


def _parse_tag(raw: str, default_tag_key: str) -> tuple[str, list[str]]:
    text = raw.strip()
    if "=" in text:
        key, _, value_text = text.partition("=")
        key = key.strip()
    else:
        key, value_text = default_tag_key, text
    values = [v.strip() for v in value_text.split(",") if v.strip()]
    if not key or not TAG_KEY.fullmatch(key):
        raise SelectorError(f"bad --tag {raw!r}: expected Key=Value, Key=a,b or a bare value of {default_tag_key}")
    if not values:
        raise SelectorError(f"bad --tag {raw!r}: no value given (use {key}='*' to match any value)")
    return key, values


def _tags_of(items: Sequence[Mapping[str, Any]] | None) -> dict[str, str]:
    return {str(t["Key"]): str(t.get("Value", "")) for t in items or ()}


def _chunks(items: Sequence[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def _ec2_filters(selector: Selector) -> list[dict[str, Any]]:
    filters: list[dict[str, Any]] = [{"Name": "instance-state-name", "Values": VISIBLE_STATES}]
    ec2_ids = [i for i in selector.ids if i.startswith("i-")]
    if ec2_ids:
        filters.append({"Name": "instance-id", "Values": ec2_ids})
    if selector.names:
        filters.append({"Name": "tag:Name", "Values": list(selector.names)})
    for tag in selector.tags:
        filters.append({"Name": f"tag:{tag.key}", "Values": list(tag.values)})
    if selector.asgs:
        filters.append({"Name": f"tag:{ASG_TAG}", "Values": list(selector.asgs)})
    # EC2 ANDs filters of different names, so IPs and DNS names given together are matched in resolve()
    # instead, as are globs (moto, which the tests run on, matches these two filters exactly).
    exact = not any(ch in v for v in (*selector.ips, *selector.dns_names) for ch in "*?")
    if exact and selector.ips and not selector.dns_names:
        filters.append({"Name": "private-ip-address", "Values": list(selector.ips)})
    elif exact and selector.dns_names and not selector.ips:
        filters.append({"Name": "private-dns-name", "Values": list(selector.dns_names)})
    return filters


def _describe_ec2(ec2: EC2Client, selector: Selector) -> list[dict[str, Any]]:
    instances: list[dict[str, Any]] = []
    paginator = ec2.get_paginator("describe_instances")
    pages = paginator.paginate(Filters=_ec2_filters(selector), PaginationConfig={"PageSize": EC2_PAGE})  # type: ignore[arg-type]
    for page in pages:
        for reservation in page.get("Reservations", []):
            owner = reservation.get("OwnerId", "")
            instances.extend({**i, "OwnerId": owner} for i in reservation.get("Instances", []))
    return instances


def _describe_ssm(ssm: SSMClient, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    infos: list[dict[str, Any]] = []
    paginator = ssm.get_paginator("describe_instance_information")
    for page in paginator.paginate(Filters=filters, PaginationConfig={"PageSize": SSM_BATCH}):  # type: ignore[arg-type]
        infos.extend(page.get("InstanceInformationList", []))  # type: ignore[arg-type]
    return infos


def _ssm_info_for(ssm: SSMClient, instance_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for chunk in _chunks(instance_ids, SSM_BATCH):
        for info in _describe_ssm(ssm, [{"Key": "InstanceIds", "Values": chunk}]):
            found[info["InstanceId"]] = info
    return found


def _hybrid_tags(ssm: SSMClient, instance_id: str) -> dict[str, str]:
    response = ssm.list_tags_for_resource(ResourceType="ManagedInstance", ResourceId=instance_id)
    return _tags_of(response.get("TagList"))


def _hybrid_nodes(ssm: SSMClient, selector: Selector, region: str) -> list[Target | Skipped]:
    """Hybrid (``mi-``) nodes matching the selector; they have no EC2 record, only SSM's."""
    hybrid_ids = [i for i in selector.ids if i.startswith("mi-")]
    if selector.ids and not hybrid_ids or selector.asgs or selector.dns_names and not selector.ips:
        return []  # hybrid nodes are in no Auto Scaling group and have no EC2 private DNS name
    filters: list[dict[str, Any]] = [{"Key": "ResourceType", "Values": ["ManagedInstance"]}]
    for tag in selector.tags:
        if not any(ch in v for v in tag.values for ch in "*?"):
            filters.append({"Key": f"tag:{tag.key}", "Values": list(tag.values)})
    infos: list[dict[str, Any]] = []
    if hybrid_ids:
        # The InstanceIds filter takes at most SSM_BATCH values: more ids are asked for in batches.
        for chunk in _chunks(hybrid_ids, SSM_BATCH):
            infos += _describe_ssm(ssm, [*filters, {"Key": "InstanceIds", "Values": chunk}])
    else:
        infos = _describe_ssm(ssm, filters)
    results: list[Target | Skipped] = []
    for info in infos:
        if not info["InstanceId"].startswith("mi-"):
            continue
        tags = _hybrid_tags(ssm, info["InstanceId"])
        name = tags.get("Name") or str(info.get("Name") or info.get("ComputerName") or "")
        if not selector.matches(info["InstanceId"], tags, name, str(info.get("IPAddress", ""))):
            continue
        target = Target(
            id=info["InstanceId"],
            name=name,
            tags=tags,
            private_ip=str(info.get("IPAddress", "")),
            platform=str(info.get("PlatformType", "")),
            state="running",
            ping_status=str(info.get("PingStatus", "")),
            agent_version=str(info.get("AgentVersion", "")),
            region=region,
        )
        results.append(target if target.ping_status == "Online" else _offline(target))
    return results


def _offline(target: Target) -> Skipped:
    return Skipped(target, f"SSM agent is {target.ping_status or 'not reporting'}; sessions cannot start")


def _ec2_target(instance: Mapping[str, Any], info: Mapping[str, Any] | None, region: str) -> Target:
    tags = _tags_of(instance.get("Tags"))
    platform = str((info or {}).get("PlatformType") or instance.get("Platform") or "Linux")
    return Target(
        id=str(instance["InstanceId"]),
        name=tags.get("Name", ""),
        tags=tags,
        private_ip=str(instance.get("PrivateIpAddress", "")),
        platform=platform.capitalize() if platform.islower() else platform,
        state=str(instance.get("State", {}).get("Name", "")),
        private_dns=str(instance.get("PrivateDnsName", "")),
        account=str(instance.get("OwnerId", "")),
        ping_status=str((info or {}).get("PingStatus", "")),
        agent_version=str((info or {}).get("AgentVersion", "")),
        region=region,
    )


def resolve(selector: Selector, ec2: EC2Client, ssm: SSMClient, *, region: str) -> Selection:
    """Every instance the selector matches, split into usable targets and skipped ones with reasons."""
    explicit = [i for i in selector.ids if i.startswith("i-")]
    wants_hybrid = not selector.ids or any(i.startswith("mi-") for i in selector.ids)
    # Lookups that need nothing from each other overlap: each is a round trip to AWS (tens of ms away).
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="ssmfab-lookup")
    try:
        hybrid = pool.submit(_hybrid_nodes, ssm, selector, region) if wants_hybrid else None
        known_infos = pool.submit(_ssm_info_for, ssm, explicit) if explicit else None
        instances = [] if selector.ids and not explicit else _describe_ec2(ec2, selector)
        instances = [
            i for i in instances
            if selector.matches_address(str(i.get("PrivateIpAddress", "")), str(i.get("PrivateDnsName", "")))
        ]  # fmt: skip
        running_ids = [str(i["InstanceId"]) for i in instances if i.get("State", {}).get("Name") == "running"]
        infos = known_infos.result() if known_infos is not None else _ssm_info_for(ssm, running_ids)
        hybrid_items = hybrid.result() if hybrid is not None else []
    finally:
        # Not waiting: after Ctrl-C (or a failed lookup) the other lookup may be stuck on an AWS that does not
        # answer; its thread ends with its call's timeout.
        pool.shutdown(wait=False, cancel_futures=True)

    targets: list[Target] = []
    skipped: list[Skipped] = []
    for instance in instances:
        target = _ec2_target(instance, infos.get(str(instance["InstanceId"])), region)
        if target.state != "running":
            skipped.append(Skipped(target, f"instance is {target.state}; start it first"))
        elif target.id not in infos:
            skipped.append(
                Skipped(
                    target,
                    "not managed by SSM: its agent never registered "
                    "(instance profile needs AmazonSSMManagedInstanceCore)",
                )
            )
        elif target.ping_status != "Online":
            skipped.append(_offline(target))
        else:
            targets.append(target)

    for item in hybrid_items:
        (targets if isinstance(item, Target) else skipped).append(item)  # type: ignore[arg-type]

    seen = {t.id for t in targets} | {s.target.id for s in skipped}
    for missing in (i for i in selector.ids if i not in seen):
        skipped.append(Skipped(Target(id=missing, state="", region=region), f"no such instance in {region}"))

    targets.sort(key=lambda t: (t.name, t.id))
    skipped.sort(key=lambda s: (s.target.name, s.target.id))
    return Selection(targets=targets, skipped=skipped, selector=selector, region=region)


class Targets(list[Target]):
    """The reachable targets of a selection, a plain list of them that also carries what was left out:
    ``skipped`` (with reasons) and ``named`` (the ids the user gave). A fan-out over it reports every left-out
    host: as failed when the user named its id, as skipped (with the reason) when a name or tag matched it."""

    def __init__(self, targets: Iterable[Target] = (), skipped: Iterable[Skipped] = (), named: Iterable[str] = ()) -> None:
        super().__init__(targets)
        self.skipped = list(skipped)
        self.named = tuple(named)


def require_targets(selection: Selection, profile: str | None) -> Targets:
    """The usable targets, or NoTargetsError naming the filter, region, profile and what was skipped."""
    if selection.targets:
        return Targets(selection.targets, selection.skipped, selection.selector.ids)
    where = f"region {selection.region}" + (f", profile {profile}" if profile else "")
    if selection.skipped:
        reasons = "; ".join(f"{s.target.label}: {s.reason}" for s in selection.skipped[:3])
        raise NoTargetsError(f"no reachable instance for {selection.selector} in {where} ({reasons})")
    raise NoTargetsError(
        f"no instance matches {selection.selector} in {where}: check the filter with `ssmfab hosts`, "
        "or give region=/profile= (--region/--profile on the command line)"
    )
