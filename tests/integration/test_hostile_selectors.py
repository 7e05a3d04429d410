"""Selectors are data: hostile tag values and names reach AWS's filters exactly as typed and never a shell.

An instance is tagged with each hostile value; selecting it by that value must find exactly that instance
(so the value reached the filter unchanged: not split, not quoted twice, not expanded), the filter AWS
received must hold the value verbatim, and nothing the value asks a shell to do may happen, neither here
nor on any host, in either tunnel mode and through the command line.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from ssmfab.client import Client
from ssmfab.exceptions import NoTargetsError, SelectorError
from ssmfab.sandbox import Sandbox

HOSTILE = [
    "$(touch PWNED)",
    "`touch PWNED`",
    "a; touch PWNED",
    "x' \"; touch PWNED; echo '",
    "$HOME && touch PWNED",
    "a|touch PWNED",
]


def pwned_anywhere(sandbox: Sandbox, cwd: Path) -> list[str]:
    places = [cwd, *(Path(h.folder) / "home" for h in sandbox.hosts)]
    return [str(p) for p in places if (p / "PWNED").exists()]


@pytest.fixture
def hostile_tagged(sandbox: Sandbox, sandbox_env: dict[str, str]) -> Iterator[str]:
    """web-2 carries every hostile value, one tag key each (Hostile0, Hostile1, …); removed afterwards."""
    ec2 = boto3.client("ec2", endpoint_url=sandbox.endpoint, region_name="us-east-1")
    instance = sandbox.host("web-2").instance_id
    tags = [{"Key": f"Hostile{n}", "Value": value} for n, value in enumerate(HOSTILE)]
    ec2.create_tags(Resources=[instance], Tags=tags)  # type: ignore[arg-type]
    try:
        yield instance
    finally:
        ec2.delete_tags(Resources=[instance], Tags=[{"Key": t["Key"]} for t in tags])  # type: ignore[misc]


def test_hostile_tag_values_reach_the_filter_verbatim_and_match_exactly(
    client: Client, sandbox: Sandbox, hostile_tagged: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    sent: list[dict[str, Any]] = []
    client.aws.ec2().meta.events.register(
        "before-parameter-build.ec2.DescribeInstances", lambda params, **_: sent.append(copy.deepcopy(params))
    )
    for n, value in enumerate(HOSTILE):
        sent.clear()
        selection = client.select(tags=[f"Hostile{n}={value}"])
        assert [t.id for t in selection.targets] == [hostile_tagged], value
        assert {"Name": f"tag:Hostile{n}", "Values": [value]} in sent[0]["Filters"]
        # The same value as a Name glob reaches the Name filter as it is, and matches nothing.
        sent.clear()
        with pytest.raises(NoTargetsError):
            client.targets(names=[value])
        assert {"Name": "tag:Name", "Values": [value]} in sent[0]["Filters"]
    assert pwned_anywhere(sandbox, tmp_path) == []


def test_bad_ids_and_keys_are_refused(client: Client) -> None:
    for bad in ("i-1234567$(id)", "i-12345678;id", "i-12345678 i-87654321"):
        with pytest.raises(SelectorError, match="bad instance id"):
            client.targets(ids=[bad])
    for bad in ("Ro\nle=web", "Role$(id)=web", "Ro`le`=web"):
        with pytest.raises(SelectorError, match="bad --tag"):
            client.targets(tags=[bad])


@pytest.mark.parametrize("mode", ["plugin", "cli"])
def test_hostile_selectors_through_the_command_line_run_nothing_but_the_command(
    mode: str, sandbox: Sandbox, hostile_tagged: str, sandbox_env: dict[str, str], tmp_path: Path
) -> None:
    args: list[str] = []
    for n, value in enumerate(HOSTILE):
        args += ["--tag", f"Hostile{n}={value}"]
    done = subprocess.run(
        [sys.executable, "-m", "ssmfab.program", "run", *args, "--tunnel", mode, "echo selected"],
        capture_output=True, text=True, env=dict(os.environ), cwd=tmp_path, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "[web-2] selected" in done.stdout and "1 ok, 0 failed" in done.stdout
    assert pwned_anywhere(sandbox, tmp_path) == []
