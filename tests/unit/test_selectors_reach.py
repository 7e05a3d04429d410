"""--asg and --ip: parsed and refused before any AWS call, resolved against moto (served over HTTP) with a real
Auto Scaling group (moto's autoscaling launches instances with the aws:autoscaling:groupName tag, as AWS does)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from ssmfab.aws import AWSContext
from ssmfab.cli import loose_selector
from ssmfab.exceptions import SelectorError
from ssmfab.targets import ASG_TAG, parse_selector, resolve
from tests.conftest import REGION
from tests.unit.test_targets import Fleet, fleet  # noqa: F401 (the fixture)


def test_addresses_are_sorted_into_ips_and_dns_names() -> None:
    selector = parse_selector(ips=["10.0.1.5,10.0.2.*", "ip-10-0-1-7.ec2.internal", "ip-10-0-1-8", "fd00::1"])
    assert selector.ips == ("10.0.1.5", "10.0.2.*", "fd00::1")
    # EC2's host part alone matches in any region's domain.
    assert selector.dns_names == ("ip-10-0-1-7.ec2.internal", "ip-10-0-1-8.*")
    assert str(selector) == "--ip 10.0.1.5 --ip 10.0.2.* --ip fd00::1 --ip ip-10-0-1-7.ec2.internal --ip ip-10-0-1-8.*"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ips": ["10.0.1.300"]}, "bad --ip '10.0.1.300': not an IPv4 address"),
        ({"ips": ["10.0.1"]}, "bad --ip '10.0.1'"),
        ({"ips": ["10.0.1.5; rm -rf /"]}, "bad --ip '10.0.1.5; rm -rf /'"),
        ({"ips": ["$(id)"]}, "bad --ip '$(id)'"),
        ({"ips": ["fd00::zz"]}, "not an IPv6 address"),
        ({"ips": [" "]}, "empty --ip"),
        ({"ips": ["web..internal"]}, "bad --ip 'web..internal'"),
        ({"asgs": [""]}, "empty --asg"),
        ({"asgs": ["web\nprod"]}, "bad --asg"),
        ({"asgs": ["x" * 256]}, "bad --asg"),
    ],
)
def test_malformed_asg_and_ip(kwargs: dict[str, list[str]], message: str) -> None:
    with pytest.raises(SelectorError, match=re.escape(message)):
        parse_selector(**kwargs)


def test_client_side_matching() -> None:
    selector = parse_selector(asgs=["web-asg-*"], ips=["10.0.1.*"])
    assert selector.matches("i-12345678", {ASG_TAG: "web-asg-blue"}, "web-1", "10.0.1.9")
    assert not selector.matches("i-12345678", {ASG_TAG: "web-asg-blue"}, "web-1", "10.0.2.9")
    assert not selector.matches("i-12345678", {}, "web-1", "10.0.1.9")  # in no group at all
    assert parse_selector(asgs=["*"]).matches("i-12345678", {ASG_TAG: "any"}, "")
    assert not parse_selector(asgs=["*"]).matches("i-12345678", {}, "")


def test_a_positional_target_that_is_an_address_selects_by_address() -> None:
    assert loose_selector("10.0.1.5") == {"ip": ("10.0.1.5",)}
    assert loose_selector("ip-10-0-1-5.ec2.internal") == {"ip": ("ip-10-0-1-5.ec2.internal",)}
    assert loose_selector("web-1") == {"name": ("web-1",)}


def asg_fleet(aws: AWSContext, fleet: Fleet) -> list[str]:
    """An Auto Scaling group of 2 launched by moto's autoscaling (it tags them as AWS does), registered with SSM."""
    ec2 = aws.ec2()
    autoscaling = aws.session.client("autoscaling", region_name=REGION, endpoint_url=aws.endpoint_url)  # type: ignore[union-attr]
    ec2.create_launch_template(LaunchTemplateName="web", LaunchTemplateData={"ImageId": fleet.image, "InstanceType": "t3.micro"})
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName="web-asg-blue", LaunchTemplate={"LaunchTemplateName": "web"}, MinSize=2, MaxSize=2,
        DesiredCapacity=2, AvailabilityZones=[f"{REGION}a"],
    )  # fmt: skip
    ids = [i["InstanceId"] for i in autoscaling.describe_auto_scaling_groups()["AutoScalingGroups"][0]["Instances"]]
    fleet.register([{"InstanceId": i, "PingStatus": "Online", "ResourceType": "EC2Instance"} for i in ids])
    return ids


def select(fleet: Fleet, **kwargs: Any) -> list[str]:
    return sorted(t.id for t in resolve(parse_selector(**kwargs), fleet.ec2, fleet.ssm, region=REGION).targets)


def test_asg_selects_the_groups_instances(aws: AWSContext, fleet: Fleet) -> None:
    members = asg_fleet(aws, fleet)
    fleet.launch(Name="other", Role="web")
    assert select(fleet, asgs=["web-asg-blue"]) == sorted(members)
    assert select(fleet, asgs=["web-asg-*"]) == sorted(members)
    assert select(fleet, asgs=["web-asg-green"]) == []
    assert select(fleet, asgs=["web-asg-blue"], tags=["Role=web"]) == []  # criteria AND


def test_ip_selects_by_private_address_and_dns_name(fleet: Fleet) -> None:
    first, second, _ = fleet.launch(3, Role="web")
    described = {i["InstanceId"]: i for r in fleet.ec2.describe_instances()["Reservations"] for i in r["Instances"]}
    ip, dns = described[first]["PrivateIpAddress"], described[second]["PrivateDnsName"]
    assert select(fleet, ips=[ip]) == [first]
    assert select(fleet, ips=[dns]) == [second]
    assert select(fleet, ips=[dns.split(".")[0]]) == [second]  # ip-10-…: the host part alone
    # An IP and a DNS name together: either matches (EC2 would AND the two filters; matched here instead).
    assert select(fleet, ips=[ip, dns]) == sorted([first, second])
    assert select(fleet, ips=["192.0.2.1"]) == []


def hybrid(n: int, ip: str) -> dict[str, Any]:
    return {"InstanceId": f"mi-{n:017x}", "PingStatus": "Online", "ResourceType": "ManagedInstance", "IPAddress": ip,
            "Tags": [{"Key": "Name", "Value": f"onprem-{n}"}]}  # fmt: skip


def test_ip_selects_hybrid_nodes_by_the_address_ssm_reports(fleet: Fleet) -> None:
    fleet.register([hybrid(1, "192.168.7.10"), hybrid(2, "192.168.7.20")])
    selection = resolve(parse_selector(ips=["192.168.7.1*"]), fleet.ec2, fleet.ssm, region=REGION)
    [node] = selection.targets
    assert (node.id, node.name, node.private_ip) == (f"mi-{1:017x}", "onprem-1", "192.168.7.10")
    assert select(fleet, ips=["192.168.7.20"]) == [f"mi-{2:017x}"]
    assert select(fleet, ips=["10.9.9.9"]) == []


def test_asg_and_dns_names_never_ask_ssm_for_hybrid_nodes(fleet: Fleet) -> None:
    # Hybrid nodes belong to no Auto Scaling group and have no EC2 DNS name: listing them would only cost calls.
    from tests.unit.test_targets import CallLog

    fleet.register([hybrid(1, "192.168.7.10")])
    log = CallLog(fleet)
    assert select(fleet, asgs=["web-asg-*"]) == []
    assert select(fleet, ips=["ip-192-168-7-10.ec2.internal"]) == []
    assert select(fleet, asgs=["web-asg-*"], ips=["192.168.7.10"]) == []  # AND: the group rules it out
    assert log.count("DescribeInstanceInformation") == 0
    assert select(fleet, ips=["192.168.7.10", "ip-10-0-0-1.ec2.internal"]) == [f"mi-{1:017x}"]  # an IP too: asked


def test_asg_names_are_any_printable_characters_up_to_255() -> None:
    assert parse_selector(asgs=["web asg (blue)", "x" * 255]).asgs == ("web asg (blue)", "x" * 255)
    with pytest.raises(SelectorError, match=r"^empty --asg: give an Auto Scaling group name or glob, e\.g\. --asg 'web-asg-\*'$"):
        parse_selector(asgs=[" "])


def test_the_targets_handed_on_carry_what_was_left_out(fleet: Fleet) -> None:
    from ssmfab.targets import require_targets

    [up] = fleet.launch(Name="up", Role="web")
    [down] = fleet.launch(Name="down", Role="web", agent="ConnectionLost")
    targets = require_targets(resolve(parse_selector(ids=[up, down]), fleet.ec2, fleet.ssm, region=REGION), None)
    assert [t.id for t in targets] == [up]
    assert [s.target.id for s in targets.skipped] == [down]  # reported by the fan-out as failed: it was named
    assert targets.named == (up, down)


def test_exact_addresses_are_asked_of_ec2_and_globs_matched_here(fleet: Fleet) -> None:
    from tests.unit.test_targets import CallLog

    [first] = fleet.launch(Role="web")
    described = fleet.ec2.describe_instances(InstanceIds=[first])["Reservations"][0]["Instances"][0]
    ip, dns = described["PrivateIpAddress"], described["PrivateDnsName"]
    log = CallLog(fleet)
    assert select(fleet, ips=[ip]) == [first]
    assert select(fleet, ips=[dns]) == [first]
    assert select(fleet, ips=[ip.rsplit(".", 1)[0] + ".*"]) == [first]
    sent = [
        {f["Name"]: f["Values"] for f in params.get("Filters", [])}
        for called, params in log.calls
        if called == "DescribeInstances"
    ]
    assert [f.get("private-ip-address") for f in sent] == [[ip], None, None]  # a glob: matched here
    assert [f.get("private-dns-name") for f in sent] == [None, [dns], None]
