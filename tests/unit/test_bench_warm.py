"""The warm rows' choices: which plugin they run through, and a row that says why when there is none."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.cases import Bench, Row  # noqa: E402
from bench.warm_rows import NO_PLUGIN, find_plugin, warm_rows  # noqa: E402
from ssmfab.sandbox.local_fleet import PLUGIN_ENV_VAR, SandboxError  # noqa: E402


def program(path: Path) -> Path:
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


def test_the_plugin_is_the_one_named_then_the_environments_then_the_projects_copy(tmp_path: Path) -> None:
    named, from_env, shared = program(tmp_path / "named"), program(tmp_path / "env"), program(tmp_path / "shared")
    environ = {PLUGIN_ENV_VAR: str(from_env)}
    assert find_plugin(str(named), environ, shared) == str(named)
    assert find_plugin(None, environ, shared) == str(from_env)
    assert find_plugin(None, {}, shared) == str(shared)
    assert find_plugin(None, {}, tmp_path / "absent") == ""
    assert find_plugin("", environ, shared) == ""  # --plugin '': none, whatever else there is


def test_a_named_plugin_that_is_no_program_is_a_mistake_not_a_skipped_row(tmp_path: Path) -> None:
    (tmp_path / "text").write_text("not a program")
    with pytest.raises(SandboxError):
        find_plugin(str(tmp_path / "text"), {}, tmp_path / "absent")
    with pytest.raises(SandboxError):
        find_plugin(None, {PLUGIN_ENV_VAR: str(tmp_path / "missing")}, tmp_path / "absent")


def test_without_a_plugin_the_warm_rows_are_one_skipped_row_and_nothing_starts(tmp_path: Path) -> None:
    def prepare(bench: Bench) -> None:
        raise AssertionError("a sandbox was prepared without a plugin to run")

    def guarded(name: str, make: object) -> Row:
        raise AssertionError("a row was measured without a plugin to run")

    [row] = warm_rows(tmp_path / "warm", "", 1, prepare, guarded)
    assert row.skipped == NO_PLUGIN and "--plugin" in row.skipped
    assert not os.path.exists(tmp_path / "warm")
