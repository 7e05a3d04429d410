"""The warm rows without a plugin: one row that says why (which plugin: tests/unit/test_bench_real_plugin.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.cases import Bench, Row  # noqa: E402
from bench.warm_rows import NO_PLUGIN, warm_rows  # noqa: E402
from ssmfab.sandbox.local_fleet import PLUGIN_ENV_VAR, SandboxError  # noqa: E402


def program(path: Path) -> Path:
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


def test_without_a_plugin_the_warm_rows_are_one_skipped_row_and_nothing_starts(tmp_path: Path) -> None:
    def prepare(bench: Bench) -> None:
        raise AssertionError("a sandbox was prepared without a plugin to run")

    def guarded(name: str, make: object) -> Row:
        raise AssertionError("a row was measured without a plugin to run")

    [row] = warm_rows(tmp_path / "warm", "", 1, prepare, guarded)
    assert row.skipped == NO_PLUGIN and "--plugin" in row.skipped
    assert not os.path.exists(tmp_path / "warm")
