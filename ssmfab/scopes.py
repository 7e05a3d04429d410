"""One run over several AWS accounts and regions: ``--region a,b``, ``--profile x,y``, ``--role-arn r1,r2``.

Every combination of profile, role and region is a *scope*, with a Client of its own (its AWS clients, tunnels
and sessions bound to that region and those credentials). ``MultiClient`` looks the selectors up in every
scope at once, merges what they found into one selection (each Target carrying its account, region and
scope), and connects each host through the Client of the scope it was found in, so one fan-out, one table,
one JSON report and one audit trail cover them all.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .aws import AWSContext
from .client import Client
from .connection import SSMConnection
from .exceptions import ConfigError, SelectorError
from .hostnames import REGION
from .targets import Selection, Target


def split_values(text: str | None, flag: str) -> list[str | None]:
    """``a,b`` -> ["a", "b"]; None or "" -> [None] (the default chain decides); duplicates dropped."""
    if not text:
        return [None]
    values = [v.strip() for v in text.split(",")]
    if any(not v for v in values):
        raise ConfigError(f"--{flag} {text!r}: an empty value between commas")
    return list(dict.fromkeys(values))


def single_scope(regions: str | None, profiles: str | None, roles: str | None) -> bool:
    """Whether the flags name one region and one profile (or none) and no role to assume."""
    return not roles and len(split_values(regions, "region")) == 1 and len(split_values(profiles, "profile")) == 1


def scoped_clients(
    regions: str | None, profiles: str | None, roles: str | None, *, notify: Callable[[str], Any] | None = None, **overrides: Any
) -> Client:
    """One Client for one scope (the usual case), else a MultiClient over every profile x role x region."""
    region_list, profile_list, role_list = split_values(regions, "region"), split_values(profiles, "profile"), split_values(roles, "role-arn")
    if len(region_list) == len(profile_list) == len(role_list) == 1:
        return Client(notify=notify, **_given(region_list[0], profile_list[0], role_list[0]), **overrides)
    for region in region_list:
        if region is not None and not REGION.fullmatch(region):
            raise ConfigError(f"--region {region!r}: not an AWS region name (e.g. eu-west-1)")
    clients = [
        Client(notify=notify, **_given(region, profile, role), **overrides)
        for profile in profile_list
        for role in role_list
        for region in region_list
    ]
    return MultiClient(clients)


def _given(region: str | None, profile: str | None, role: str | None) -> dict[str, Any]:
    return {k: v for k, v in (("region", region), ("profile", profile), ("role_arn", role)) if v}


def scope_label(aws: AWSContext) -> str:
    """How a scope is named in output: ``profile/region``, the role's account standing in for a profile."""
    who = aws.profile or (f"account {aws.account}" if aws.account else "default")
    return f"{who}/{aws.region}"


class MultiClient(Client):
    """A Client over several scopes: selection in all of them at once, each host connected through its own."""

    def __init__(self, clients: Sequence[Client]) -> None:
        first = clients[0]
        super().__init__(first.settings, notify=first.notify)
        self.clients = list(clients)
        self._owner: dict[str, Client] = {}

    @property
    def aws(self) -> AWSContext:
        """The first scope's: the run's own AWS calls (the audit's caller, CloudWatch) go there."""
        return self.clients[0].aws

    @property
    def tunnels(self) -> Any:
        return _AllTunnels(self.clients)

    def check_ssh_key(self) -> None:
        self.clients[0].check_ssh_key()

    def start_tunnel(self, target_id: str) -> None:
        return None  # which scope holds the instance is known only once it is looked up

    def select(
        self, ids: Iterable[str] = (), names: Iterable[str] = (), tags: Iterable[str] = (), *,
        asgs: Iterable[str] = (), ips: Iterable[str] = (), refresh: bool = False,
    ) -> Selection:  # fmt: skip
        ids, names, tags, asgs, ips = list(ids), list(names), list(tags), list(asgs), list(ips)
        with ThreadPoolExecutor(max_workers=min(8, len(self.clients)), thread_name_prefix="ssmfab-scope") as pool:
            found = list(pool.map(lambda c: c.select(ids, names, tags, asgs=asgs, ips=ips, refresh=refresh), self.clients))
        targets, skipped = [], []
        for client, selection in zip(self.clients, found):
            label = scope_label(client.aws)
            for target in selection.targets:
                targets.append(dataclasses.replace(target, scope=label, account=target.account or client.aws.account))
                self._owner[target.id] = client
            skipped += [dataclasses.replace(s, target=dataclasses.replace(s.target, scope=label)) for s in selection.skipped]
        regions = ", ".join(dict.fromkeys(s.region for s in found))
        return Selection(targets=targets, skipped=skipped, selector=found[0].selector, region=regions)

    def owner(self, target: Target | str) -> Client:
        instance_id = target if isinstance(target, str) else target.id
        client = self._owner.get(instance_id)
        if client is None:
            raise SelectorError(f"{instance_id} was not found in any of this run's scopes: select it first")
        return client

    def user_for(self, target: Target) -> str:
        return self.owner(target).user_for(target)

    def push_key(self, target: Target) -> None:
        self.owner(target).push_key(target)

    def connect(self, target: Target | str, **connection_kwargs: Any) -> SSMConnection:
        return self.owner(target).connect(target, **connection_kwargs)


def client_for(client: Client, target: Target) -> Client:
    """The Client of the scope ``target`` was found in (``client`` itself when the run has one scope)."""
    return client.owner(target) if isinstance(client, MultiClient) else client


class _AllTunnels:
    """The tunnel factories of every scope, prepared and checked together."""

    def __init__(self, clients: Sequence[Client]) -> None:
        self.clients = clients
        self.mode = clients[0].settings.tunnel.mode

    def prepare(self) -> None:
        for client in self.clients:
            client.tunnels.prepare()

    def check(self) -> None:
        for client in self.clients:
            client.tunnels.check()
