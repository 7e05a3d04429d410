"""Selector parsing: every malformed input is a SelectorError that names the value and the fix."""

from __future__ import annotations

import pytest

from ssmfab.exceptions import SelectorError
from ssmfab.targets import Selector, TagFilter, parse_selector


def test_ids_names_and_tags() -> None:
    selector = parse_selector(
        ["i-0123456789abcdef0,mi-0123456789abcdef0", "i-12345678"],
        ["web-*"],
        ["Role=web,api", "Env=prod", "Role=worker"],
    )
    assert selector.ids == ("i-0123456789abcdef0", "mi-0123456789abcdef0", "i-12345678")
    assert selector.names == ("web-*",)
    # Repeating a key widens its values (OR); different keys AND.
    assert selector.tags == (TagFilter("Role", ("web", "api", "worker")), TagFilter("Env", ("prod",)))


def test_bare_tag_uses_the_default_key() -> None:
    assert parse_selector(tags=["web"]).tags == (TagFilter("Role", ("web",)),)
    assert parse_selector(tags=["web"], default_tag_key="Tier").tags == (TagFilter("Tier", ("web",)),)


def test_duplicates_collapse() -> None:
    selector = parse_selector(["i-12345678", "i-12345678"], tags=["Role=web", "Role=web"])
    assert selector.ids == ("i-12345678",)
    assert selector.tags == (TagFilter("Role", ("web",)),)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ids": ["i-xyz"]}, "bad instance id 'i-xyz'"),
        ({"ids": ["web-1"]}, "use --name for Name tags"),
        ({"ids": ["i-0123456789abcdef"]}, "bad instance id"),  # 16 digits: neither old nor new form
        ({"tags": ["Role="]}, "no value given"),
        ({"tags": ["=web"]}, "bad --tag '=web'"),
        ({"names": ["  "]}, "empty --name"),
    ],
)
def test_malformed_selectors(kwargs: dict[str, list[str]], message: str) -> None:
    with pytest.raises(SelectorError, match=message.replace("(", r"\(")):
        parse_selector(**kwargs)


def test_selector_client_side_matching() -> None:
    selector = Selector(names=("web-*",), tags=(TagFilter("Env", ("prod", "stag*")),))
    assert selector.matches("mi-0123456789abcdef0", {"Env": "staging"}, "web-1")
    assert not selector.matches("mi-0123456789abcdef0", {"Env": "dev"}, "web-1")
    assert not selector.matches("mi-0123456789abcdef0", {"Env": "prod"}, "db-1")
    assert str(selector) == "--name web-* --tag Env=prod,stag*"


def test_a_selector_reads_back_as_the_flags_that_made_it() -> None:
    selector = parse_selector(["i-0123456789abcdef0"], ["web-*"], ["Env=prod", "db"])
    assert str(selector) == "i-0123456789abcdef0 --name web-* --tag Env=prod --tag Role=db"
    assert str(Selector()) == "(all instances)"
    assert not Selector(ids=("i-0123456789abcdef0",)).matches("i-0123456789abcdef1", {}, "")
    assert Selector(ids=("i-0123456789abcdef0",)).matches("i-0123456789abcdef0", {}, "")


def test_a_tag_value_may_hold_an_equals_sign() -> None:
    [tag] = parse_selector(tags=["Query=a=b"]).tags
    assert (tag.key, tag.values) == ("Query", ("a=b",))


@pytest.mark.parametrize("raw", ["=web", " =web", "Bad!Key=x", "K" * 129 + "=x"])
def test_a_tag_key_aws_would_refuse_is_refused_here(raw: str) -> None:
    with pytest.raises(SelectorError, match=r"^bad --tag .*: expected Key=Value, Key=a,b or a bare value of Role$"):
        parse_selector(tags=[raw])


def test_no_targets_names_the_filter_region_and_profile() -> None:
    from ssmfab.exceptions import NoTargetsError
    from ssmfab.targets import Selection, Skipped, Target, require_targets

    empty = Selection([], [], parse_selector(names=["web-*"]), "eu-west-1")
    with pytest.raises(NoTargetsError) as caught:
        require_targets(empty, "staging")
    assert str(caught.value) == (
        "no instance matches --name web-* in region eu-west-1, profile staging: check the filter with "
        "`ssmfab hosts`, or give region=/profile= (--region/--profile on the command line)"
    )
    with pytest.raises(NoTargetsError, match=r"^no instance matches --name web-\* in region eu-west-1: check"):
        require_targets(empty, None)
    skipped = [Skipped(Target(id=f"i-{n:017x}", name=f"web-{n}"), f"reason {n}") for n in range(1, 6)]
    with pytest.raises(NoTargetsError) as caught:
        require_targets(Selection([], skipped, parse_selector(names=["web-*"]), "eu-west-1"), None)
    assert str(caught.value) == (
        "no reachable instance for --name web-* in region eu-west-1 (web-1 (i-00000000000000001): reason 1; "
        "web-2 (i-00000000000000002): reason 2; web-3 (i-00000000000000003): reason 3)"
    )
    usable = [Target(id="i-00000000000000009")]
    assert require_targets(Selection(usable, skipped, Selector(), "eu-west-1"), None) == usable


def test_an_agent_that_reports_no_status_is_called_so() -> None:
    from ssmfab.targets import Target, _offline

    assert _offline(Target(id="mi-00000000000000001")).reason == "SSM agent is not reporting; sessions cannot start"
    assert _offline(Target(id="mi-00000000000000001", ping_status="Inactive")).reason == (
        "SSM agent is Inactive; sessions cannot start"
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ids": ["web-1"]}, "bad instance id 'web-1': expected i-… or mi-… followed by 8 or 17 hex digits (use --name for Name tags)"),
        ({"names": ["  "]}, "empty --name: give a Name tag value or glob, e.g. --name 'web-*'"),
        ({"ips": [" "]}, "empty --ip: give a private IP (10.0.1.5, 10.0.1.*) or private DNS name"),
    ],
)
def test_a_bad_selector_says_what_to_give_word_for_word(kwargs: dict[str, list[str]], message: str) -> None:
    with pytest.raises(SelectorError) as failed:
        parse_selector(**kwargs)
    assert str(failed.value) == message
