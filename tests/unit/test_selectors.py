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
