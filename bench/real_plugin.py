"""What the rows through AWS's own session-manager-plugin need besides the other rows: which plugin, and the
baseline of a user who has only OpenSSH (one ``ssh`` per host, started in parallel by ``xargs -P``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from ssmfab.sandbox.local_fleet import PLUGIN_ENV_VAR, checked_plugin

#: Where the project keeps AWS's plugin, relative to the checkout (the folder holding the repository).
SHARED_PLUGIN = Path(__file__).resolve().parents[2] / "shared" / "session-manager-plugin" / "session-manager-plugin"
#: Why the rows through AWS's plugin have no figures when there is no plugin to run.
NO_PLUGIN = f"no AWS session-manager-plugin: give --plugin PATH or set {PLUGIN_ENV_VAR}"


def find_plugin(named: str | None, environ: Mapping[str, str], shared: Path = SHARED_PLUGIN) -> str:
    """AWS's plugin for the real rows: ``named`` (``--plugin``; "" means none), else the one the environment
    names, else the project's copy beside the checkout when it is there; "" when there is none. A plugin that is
    named but is not a program raises SandboxError (a mistake to report, not a row to skip)."""
    if named is not None:
        return checked_plugin(named) if named else ""
    from_env = environ.get(PLUGIN_ENV_VAR, "").strip()
    if from_env:
        return checked_plugin(from_env)
    if shared.is_file() and os.access(shared, os.X_OK):
        return str(shared)
    return ""


def parallel_ssh(ssh_options: list[str], user: str, hosts_file: Path, parallel: int, command: str = "true") -> list[str]:
    """``command`` on every instance listed in ``hosts_file`` (one id a line), one ``ssh`` per host, ``parallel``
    at a time: what an OpenSSH user types for a fleet. xargs exits non-zero when any ssh does."""
    return ["xargs", "-a", str(hosts_file), "-P", str(parallel), "-I", "{}", "ssh", *ssh_options, f"{user}@{{}}", command]
