"""The shared-flag plumbing between invoke and the task bodies."""

from __future__ import annotations

from dataclasses import fields

from ssmfab.cli import FLAG_GROUPS, FLAG_HELP, Flags, loose_selector
from ssmfab.tasks import ns


def test_every_shared_flag_is_a_field_with_help() -> None:
    names = {n for group in FLAG_GROUPS.values() for n in group}
    assert {f.name for f in fields(Flags)} == names
    assert names <= set(FLAG_HELP)


def test_tasks_expose_the_shared_flags() -> None:
    run = ns["run"]
    params = [a.name for a in run.get_arguments()]
    for flag in ("id", "name", "tag", "region", "profile", "user", "key", "tunnel", "parallel", "batch", "json"):
        assert flag in params
    assert [a.name for a in run.get_arguments() if a.positional] == ["command"]
    assert not any(a.name in ("batch", "parallel") for a in ns["hosts"].get_arguments())


def test_positional_target_forms() -> None:
    assert loose_selector("i-0123456789abcdef0") == {"id": ("i-0123456789abcdef0",)}
    assert loose_selector("Role=web") == {"tag": ("Role=web",)}
    assert loose_selector("web-*") == {"name": ("web-*",)}
    assert loose_selector(None) == {}
