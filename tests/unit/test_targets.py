"""Target resolution against moto (served over HTTP): tags, names, ids, AND/OR, pagination, skipped reasons."""

from __future__ import annotations

import copy
import socket
import threading
from typing import Any

import pytest

from ssmfab.aws import AWSContext
from ssmfab.exceptions import NoTargetsError
from ssmfab.sandbox.moto_ext import sandbox_put_instance_information
from ssmfab.sandbox.sshd import free_ports
from ssmfab.targets import parse_selector, require_targets, resolve
from tests.conftest import REGION

from ..waiting import wait_until


_IMAGES: dict[str, str] = {}


def amazon_image(ec2: Any, endpoint: str) -> str:
    """An AMI to launch from. moto reloads its stock AMIs (always the same ids) on every reset, which makes
    the first DescribeImages after it slow (~1 s); asked once per moto server, these tests run much faster."""
    if endpoint not in _IMAGES:
        _IMAGES[endpoint] = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    return _IMAGES[endpoint]


def linux_image(ec2: Any, endpoint: str) -> str:
    """An AMI whose instances EC2 does not call Windows (moto's first stock AMI is a Windows one)."""
    key = f"linux {endpoint}"
    if key not in _IMAGES:
        _IMAGES[key] = next(i["ImageId"] for i in ec2.describe_images(Owners=["amazon"])["Images"] if not i.get("Platform"))
    return _IMAGES[key]


class Fleet:
    """Builds EC2 instances and SSM registrations in moto, the way a real account would have them."""

    def __init__(self, aws: AWSContext) -> None:
        self.aws = aws
        self.ec2 = aws.ec2()
        self.ssm = aws.ssm()
        self.image = amazon_image(self.ec2, str(aws.endpoint_url))

    def launch(self, count: int = 1, *, agent: str | None = "Online", **tags: str) -> list[str]:
        ids = []
        for _ in range(count):  # one reservation each, as separate launches would be
            reservation = self.ec2.run_instances(
                ImageId=self.image,
                MinCount=1,
                MaxCount=1,
                TagSpecifications=[
                    {"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
                ],
            )
            ids += [i["InstanceId"] for i in reservation["Instances"]]
        if agent is not None:
            self.register([{"InstanceId": i, "PingStatus": agent, "ResourceType": "EC2Instance"} for i in ids])
        return ids

    def register(self, entries: list[dict[str, Any]]) -> None:
        for entry in entries:
            entry.setdefault("AgentVersion", "3.3.1142.0")
            entry.setdefault("PlatformType", "Linux")
        sandbox_put_instance_information(str(self.aws.endpoint_url), REGION, entries)

    def resolve(self, ids: list[str] | None = None, names: list[str] | None = None, tags: list[str] | None = None) -> Any:
        selector = parse_selector(ids or (), names or (), tags or ())
        return resolve(selector, self.ec2, self.ssm, region=REGION)


@pytest.fixture
def fleet(aws: AWSContext) -> Fleet:
    return Fleet(aws)


def names_of(selection: Any) -> list[str]:
    return [t.name for t in selection.targets]


def test_tags_and_or_names_ids(fleet: Fleet) -> None:
    web = [fleet.launch(Name=f"web-{n}", Role="web", Env="prod")[0] for n in (1, 2)]
    fleet.launch(Name="web-3", Role="web", Env="staging")
    fleet.launch(Name="db-1", Role="db", Env="prod")

    assert names_of(fleet.resolve(tags=["Role=web"])) == ["web-1", "web-2", "web-3"]
    assert names_of(fleet.resolve(tags=["web"])) == ["web-1", "web-2", "web-3"]  # bare value: default key Role
    assert names_of(fleet.resolve(tags=["Role=web", "Env=prod"])) == ["web-1", "web-2"]  # keys AND
    assert names_of(fleet.resolve(tags=["Role=web,db", "Env=prod"])) == ["db-1", "web-1", "web-2"]  # values OR
    assert names_of(fleet.resolve(names=["web-*"])) == ["web-1", "web-2", "web-3"]
    assert names_of(fleet.resolve(names=["db-1", "web-2"])) == ["db-1", "web-2"]
    assert names_of(fleet.resolve(ids=[web[1]])) == ["web-2"]
    assert names_of(fleet.resolve(ids=[web[0]], tags=["Role=db"])) == []  # criteria AND


def test_target_records_carry_what_users_need(fleet: Fleet) -> None:
    [instance_id] = fleet.launch(Name="web-1", Role="web")
    [target] = fleet.resolve(tags=["web"]).targets
    assert target.id == instance_id
    assert target.tags["Role"] == "web"
    [reservation] = fleet.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    [described] = reservation["Instances"]
    # The address, DNS name and account EC2 reports (the table's IP column, --ip, and ACCOUNT across accounts).
    assert (target.private_ip, target.private_dns, target.account) == (
        described["PrivateIpAddress"], described["PrivateDnsName"], reservation["OwnerId"]
    )
    assert target.private_ip and target.private_dns and target.account
    assert (target.platform, target.ping_status, target.agent_version, target.region) == (
        "Linux",
        "Online",
        "3.3.1142.0",
        REGION,
    )
    assert target.label == f"web-1 ({instance_id})"


def test_unreachable_instances_are_skipped_with_a_reason(fleet: Fleet) -> None:
    fleet.launch(Name="web-ok", Role="web")
    fleet.launch(Name="web-lost", Role="web", agent="ConnectionLost")
    fleet.launch(Name="web-unmanaged", Role="web", agent=None)
    [stopped] = fleet.launch(Name="web-stopped", Role="web")
    fleet.ec2.stop_instances(InstanceIds=[stopped])
    [gone] = fleet.launch(Name="web-gone", Role="web")
    fleet.ec2.terminate_instances(InstanceIds=[gone])

    selection = fleet.resolve(tags=["web"])
    assert names_of(selection) == ["web-ok"]
    reasons = {s.target.name: s.reason for s in selection.skipped}
    assert set(reasons) == {"web-lost", "web-unmanaged", "web-stopped"}  # terminated is gone for good
    assert "ConnectionLost" in reasons["web-lost"]
    assert reasons["web-unmanaged"] == (
        "not managed by SSM: its agent never registered (instance profile needs AmazonSSMManagedInstanceCore)"
    )
    assert reasons["web-stopped"] == "instance is stopped; start it first"


def test_unknown_id_is_reported(fleet: Fleet) -> None:
    selection = fleet.resolve(ids=["i-0123456789abcdef0"])
    assert selection.targets == []
    assert [s.reason for s in selection.skipped] == [f"no such instance in {REGION}"]
    [unknown] = [s.target for s in selection.skipped]
    # Shown in `hosts` and --json: no state it never had (a Target's default is "running"), and the region asked.
    assert (unknown.id, unknown.state, unknown.region) == ("i-0123456789abcdef0", "", REGION)
    with pytest.raises(NoTargetsError, match="i-0123456789abcdef0: no such instance"):
        require_targets(selection, None)


def test_no_match_names_the_filter_and_region(fleet: Fleet) -> None:
    fleet.launch(Name="web-1", Role="web")
    with pytest.raises(NoTargetsError) as err:
        require_targets(fleet.resolve(tags=["Role=cache"]), "ops")
    message = str(err.value)
    assert "--tag Role=cache" in message and REGION in message and "profile ops" in message


def test_hybrid_nodes_come_from_ssm(fleet: Fleet) -> None:
    fleet.launch(Name="web-1", Role="web")
    fleet.register(
        [
            {
                "InstanceId": "mi-0123456789abcdef0",
                "PingStatus": "Online",
                "ResourceType": "ManagedInstance",
                "Name": "onprem-1",
                "IPAddress": "10.9.8.7",
                "Tags": [{"Key": "Role", "Value": "web"}, {"Key": "Name", "Value": "onprem-1"}],
            },
            {
                "InstanceId": "mi-0123456789abcdef1",
                "PingStatus": "ConnectionLost",
                "ResourceType": "ManagedInstance",
                "Name": "onprem-2",
                "Tags": [{"Key": "Role", "Value": "web"}],
            },
        ]
    )
    selection = fleet.resolve(tags=["web"])
    assert names_of(selection) == ["onprem-1", "web-1"]
    assert [s.target.id for s in selection.skipped] == ["mi-0123456789abcdef1"]
    [hybrid] = fleet.resolve(ids=["mi-0123456789abcdef0"]).targets
    assert (hybrid.name, hybrid.private_ip, hybrid.tags["Role"]) == ("onprem-1", "10.9.8.7", "web")
    assert names_of(fleet.resolve(names=["onprem-*"])) == ["onprem-1"]
    # A pattern is matched here; only exact values go to SSM as a tag filter (it compares them literally).
    log = CallLog(fleet)
    assert names_of(fleet.resolve(tags=["Role=w?b", "Name=onprem-1"])) == ["onprem-1"]
    sent = [f for called, params in log.calls if called == "DescribeInstanceInformation" for f in params.get("Filters", [])]
    assert {"Key": "tag:Name", "Values": ["onprem-1"]} in sent
    assert not any(f["Key"] == "tag:Role" for f in sent)


class CallLog:
    """Every AWS call the two clients make, with the parameters sent (recorded before they go out)."""

    def __init__(self, fleet: Fleet) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        for client in (fleet.ec2, fleet.ssm):
            client.meta.events.register("before-parameter-build", self._record)

    def _record(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        self.calls.append((model.name, copy.deepcopy(params)))

    def count(self, name: str) -> int:
        return sum(1 for called, _ in self.calls if called == name)

    def id_filters(self) -> list[list[str]]:
        """The InstanceIds filter of every DescribeInstanceInformation call that had one."""
        return [
            list(f["Values"])
            for called, params in self.calls
            if called == "DescribeInstanceInformation"
            for f in params.get("Filters", [])
            if f["Key"] == "InstanceIds"
        ]


def test_pagination_over_more_than_a_hundred(fleet: Fleet) -> None:
    fleet.launch(130, Role="batch")
    fleet.register(
        [
            {"InstanceId": f"mi-{n:017x}", "PingStatus": "Online", "ResourceType": "ManagedInstance",
             "Tags": [{"Key": "Role", "Value": "batch"}]}
            for n in range(1, 121)
        ]
    )  # fmt: skip
    log = CallLog(fleet)
    selection = fleet.resolve(tags=["Role=batch"])
    assert len(selection.targets) == 250
    assert len({t.id for t in selection.targets}) == 250
    assert selection.skipped == []
    assert log.count("DescribeInstances") == 2  # 130 instances in pages of 100
    # Asked for in pages AWS accepts (MaxResults 5 to 1000; out of range it refuses the call), not in whatever
    # page a server chooses when none is given.
    sizes = [params.get("MaxResults") for called, params in log.calls if called == "DescribeInstances"]
    assert all(isinstance(size, int) and 5 <= size <= 1000 for size in sizes), sizes
    # 130 running ids asked for in batches of 50, 50 and 30 (one page each), then the 120 hybrid nodes in
    # pages of 50, 50 and 20: six calls, and no InstanceIds filter ever carries more than 50 values.
    assert log.count("DescribeInstanceInformation") == 6
    assert [len(values) for values in log.id_filters()] == [50, 50, 30]
    assert log.count("ListTagsForResource") == 120


def test_more_than_fifty_explicit_ids_are_asked_for_in_batches(fleet: Fleet) -> None:
    ids = fleet.launch(120, Role="batch")
    log = CallLog(fleet)
    selection = fleet.resolve(ids=ids)
    assert sorted(t.id for t in selection.targets) == sorted(ids)
    assert selection.skipped == []
    assert [len(values) for values in log.id_filters()] == [50, 50, 20]
    assert sorted(i for values in log.id_filters() for i in values) == sorted(ids)
    assert log.count("DescribeInstanceInformation") == 3


def test_more_than_fifty_explicit_hybrid_ids_are_all_found(fleet: Fleet) -> None:
    # Hybrid (mi-) ids live only in SSM: past the filter's 50 values they used to be cut off and the rest
    # reported as "no such instance".
    hybrid = [f"mi-{n:017x}" for n in range(1, 121)]
    fleet.register(
        [{"InstanceId": i, "PingStatus": "Online", "ResourceType": "ManagedInstance", "Name": f"onprem-{i[-3:]}"}
         for i in hybrid]
    )  # fmt: skip
    log = CallLog(fleet)
    selection = fleet.resolve(ids=hybrid)
    assert sorted(t.id for t in selection.targets) == hybrid
    assert selection.skipped == []
    assert [len(values) for values in log.id_filters()] == [50, 50, 20]
    assert sorted(i for values in log.id_filters() for i in values) == hybrid
    assert log.count("DescribeInstanceInformation") == 3
    assert log.count("DescribeInstances") == 0  # no i- id asked for: EC2 has nothing to say


def test_a_hybrid_node_is_named_by_its_name_tag_then_its_ssm_name_then_its_computer_name(fleet: Fleet) -> None:
    # Listed out of name order, the first one matching nothing: every node after it must still be looked at.
    def node(n: int, **fields: Any) -> dict[str, Any]:
        return {"InstanceId": f"mi-{n:017x}", "PingStatus": "Online", "ResourceType": "ManagedInstance",
                "AgentVersion": f"3.3.{n}", "PlatformType": "Windows", **fields}  # fmt: skip

    fleet.launch(Name="ec2-web", Role="site")  # an EC2 instance SSM also knows: not a hybrid node
    fleet.register([
        node(1, Name="other", Tags=[{"Key": "Role", "Value": "db"}]),
        node(2, Name="ssm-name", ComputerName="box-2.corp", Tags=[{"Key": "Name", "Value": "tagged"}, {"Key": "Role", "Value": "site"}]),
        node(3, Name="ssm-name-3", ComputerName="box-3.corp", Tags=[{"Key": "Role", "Value": "site"}]),
        node(4, ComputerName="box-4.corp", Tags=[{"Key": "Role", "Value": "site"}]),
        node(5, Tags=[{"Key": "Role", "Value": "site"}]),
    ])  # fmt: skip
    selection = fleet.resolve(tags=["Role=si*"])
    by_id = {t.id: t for t in selection.targets}
    assert [by_id[f"mi-{n:017x}"].name for n in (2, 3, 4, 5)] == ["tagged", "ssm-name-3", "box-4.corp", ""]
    assert sorted(t.name for t in selection.targets) == ["", "box-4.corp", "ec2-web", "ssm-name-3", "tagged"]
    tagged = by_id[f"mi-{2:017x}"]
    assert (tagged.platform, tagged.state, tagged.ping_status, tagged.agent_version, tagged.region) == (
        "Windows", "running", "Online", "3.3.2", REGION
    )
    assert by_id[f"mi-{5:017x}"].label == f"mi-{5:017x}"
    assert names_of(fleet.resolve(names=["box-*"])) == ["box-4.corp"]


def test_what_an_instance_record_lacks_is_filled_in_plainly(fleet: Fleet) -> None:
    # No Name tag: no name (the id labels it). SSM not saying the platform: EC2's own word (moto's stock AMI
    # is a Windows one), else Linux. A hybrid node with no address: an empty one, not "None".
    [unnamed] = fleet.launch(Role="bare")
    fleet.register([{"InstanceId": unnamed, "PingStatus": "Online", "ResourceType": "EC2Instance", "PlatformType": ""}])
    linux = fleet.ec2.run_instances(ImageId=linux_image(fleet.ec2, str(fleet.aws.endpoint_url)), MinCount=1, MaxCount=1,
                                    TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Role", "Value": "bare"}]}])
    linux_id = linux["Instances"][0]["InstanceId"]
    fleet.register([{"InstanceId": linux_id, "PingStatus": "Online", "ResourceType": "EC2Instance", "PlatformType": ""}])
    sandbox_put_instance_information(str(fleet.aws.endpoint_url), REGION, [
        {"InstanceId": "mi-0000000000000abcd", "PingStatus": "Online", "ResourceType": "ManagedInstance"},
    ])  # fmt: skip
    by_id = {t.id: t for t in fleet.resolve(tags=["Role=bare"]).targets}
    described = fleet.ec2.describe_instances(InstanceIds=[unnamed])["Reservations"][0]["Instances"][0]
    assert (by_id[unnamed].name, by_id[unnamed].label) == ("", unnamed)
    assert by_id[unnamed].private_ip == described["PrivateIpAddress"]
    assert (by_id[unnamed].platform, by_id[linux_id].platform) == ("Windows", "Linux")
    [hybrid] = fleet.resolve(ids=["mi-0000000000000abcd"]).targets
    assert (hybrid.private_ip, hybrid.ping_status) == ("", "Online")  # SSM always reports platform and agent


def test_an_unmanaged_instance_shows_no_agent_and_platform_names_keep_their_case(fleet: Fleet) -> None:
    [unmanaged] = fleet.launch(Name="no-agent", Role="odd", agent=None)
    [mac] = fleet.launch(Name="mac-1", Role="odd", agent=None)
    fleet.register([{"InstanceId": mac, "PingStatus": "Online", "ResourceType": "EC2Instance", "PlatformType": "MacOS"}])
    selection = fleet.resolve(tags=["Role=odd"])
    [skipped] = selection.skipped
    assert skipped.target.id == unmanaged
    assert (skipped.target.ping_status, skipped.target.agent_version, skipped.target.state) == ("", "", "running")
    [target] = selection.targets
    assert (target.id, target.platform) == (mac, "MacOS")  # AWS's own spelling, not "Macos"


def ec2_filters_sent(log: CallLog) -> list[dict[str, list[str]]]:
    """The filters of every DescribeInstances call, as {name: values}."""
    return [
        {f["Name"]: list(f["Values"]) for f in params.get("Filters", [])}
        for called, params in log.calls
        if called == "DescribeInstances"
    ]


def test_named_instances_are_the_only_ones_ec2_is_asked_for(fleet: Fleet) -> None:
    # The result alone cannot show this (the ids are checked again on what EC2 returns): without the filter
    # ssmfab would page through every instance of the account to find the two the user named.
    first, _, third = fleet.launch(3, Role="web")
    hybrid = "mi-0000000000000abcd"
    fleet.register([{"InstanceId": hybrid, "PingStatus": "Online", "ResourceType": "ManagedInstance"}])
    log = CallLog(fleet)
    selection = fleet.resolve(ids=[first, third, hybrid])
    assert sorted(t.id for t in selection.targets) == sorted([first, third, hybrid])
    [filters] = ec2_filters_sent(log)
    assert filters["instance-id"] == [first, third]  # the hybrid id is SSM's, never EC2's


def test_ec2_ids_alone_cost_one_lookup_of_each_kind_and_no_hybrid_listing(fleet: Fleet) -> None:
    first, second = fleet.launch(2, Role="web")
    log = CallLog(fleet)
    selection = fleet.resolve(ids=[first, second])
    assert sorted(t.id for t in selection.targets) == sorted([first, second])
    assert log.count("DescribeInstances") == 1
    # Only the agents of the two named instances: no listing of the account's hybrid nodes beside them.
    assert log.count("DescribeInstanceInformation") == 1
    [asked] = log.id_filters()
    assert sorted(asked) == sorted([first, second])


def test_a_failed_lookup_does_not_wait_for_the_other_one_that_aws_never_answers(aws: AWSContext) -> None:
    """EC2 refuses at once while SSM (a listener standing in for an endpoint that stopped answering) holds its
    call open: the selection fails at once, as Ctrl-C must end it at once, without waiting out SSM's timeout."""
    silent = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    threading.Thread(target=lambda: held.append(silent.accept()[0]), daemon=True).start()
    [closed_port] = free_ports(1)  # nothing listens there: EC2's call is refused at once

    def context(endpoint: str) -> AWSContext:
        return AWSContext(session=aws.session, region=REGION, profile=None, endpoint_url=endpoint, read_timeout=120, max_attempts=1)
    ssm = context(f"http://127.0.0.1:{silent.getsockname()[1]}").client("ssm")
    ec2 = context(f"http://127.0.0.1:{closed_port}").client("ec2")
    outcome: list[BaseException] = []
    done = threading.Event()

    def select() -> None:
        try:
            resolve(parse_selector((), (), ["Role=web"]), ec2, ssm, region=REGION)
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            outcome.append(exc)
        done.set()

    threading.Thread(target=select, daemon=True).start()
    try:
        wait_until(lambda: bool(held), "SSM's lookup reaching the endpoint that does not answer")
        wait_until(done.is_set, "the selection failing while SSM's lookup still hangs", limit=60)
        assert outcome and "127.0.0.1" in str(outcome[0]), outcome
    finally:
        for connection in held:
            connection.close()
        silent.close()
