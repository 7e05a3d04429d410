"""Fabric's own config files must not reach ssmfab's connections (a fleet tool's failures stay failures)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_a_users_fabric_yaml_does_not_change_how_commands_run(tmp_path: Path) -> None:
    # run.warn would turn every failed command into a success; run.dry would run nothing at all.
    (tmp_path / ".fabric.yaml").write_text("run:\n  warn: true\n  dry: true\n")
    probe = (
        "from ssmfab.connection import default_config; c = default_config(); "
        "print(c.run.warn, c.run.dry, c.runners.remote.__name__)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert done.stdout.split() == ["False", "False", "CappedRemote"]
