"""Selectors to Target records.

A selector is any mix of instance ids (``i-…``, hybrid ``mi-…``), Name-tag globs and tag filters; all
criteria given must hold (ids, names and each tag key are ANDed; the values of one tag key are ORed).

EC2 says which instances exist and run; SSM's DescribeInstanceInformation says which of them have an agent
that can open a session. An instance that matches but cannot be reached (stopped, agent offline, not managed
by SSM) is reported in ``Selection.skipped`` with the reason, never silently dropped. Hybrid ``mi-`` nodes
exist only in SSM. AWS clients are passed in, so tests and callers choose region, profile and endpoint.
"""

from __future__ import annotations

import fnmatch
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

    @property
    def empty(self) -> bool:
        return not (self.ids or self.names or self.tags)

    def __str__(self) -> str:
        parts = list(self.ids)
        parts += [f"--name {n}" for n in self.names]
        parts += [f"--tag {t}" for t in self.tags]
        return " ".join(parts) or "(all instances)"

    def matches(self, instance_id: str, tags: Mapping[str, str], name: str) -> bool:
        """Client-side check, used for hybrid nodes and as a guard on what AWS returned."""
        if self.ids and instance_id not in self.ids:
            return False
        if self.names and not any(fnmatch.fnmatchcase(name, pattern) for pattern in self.names):
            return False
        return all(t.matches(tags) for t in self.tags)


@dataclass(frozen=True)
class Target:
    """One instance ssmfab can open a session to."""

    id: str
    name: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)
    private_ip: str = ""
    platform: str = ""
    state: str = "running"
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
    return Selector(
        ids=tuple(dict.fromkeys(id_list)),
        names=tuple(dict.fromkeys(name_list)),
        tags=tuple(TagFilter(k, tuple(v)) for k, v in merged.items()),
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
    return filters


def _describe_ec2(ec2: EC2Client, selector: Selector) -> list[dict[str, Any]]:
    instances: list[dict[str, Any]] = []
    paginator = ec2.get_paginator("describe_instances")
    pages = paginator.paginate(Filters=_ec2_filters(selector), PaginationConfig={"PageSize": EC2_PAGE})  # type: ignore[arg-type]
    for page in pages:
        for reservation in page.get("Reservations", []):
            instances.extend(reservation.get("Instances", []))  # type: ignore[arg-type]
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
    if selector.ids and not hybrid_ids:
        return []
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
        if not selector.matches(info["InstanceId"], tags, name):
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
