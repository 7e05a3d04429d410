"""The plugin's version check: run once per factory, in the background when prepared, its failure kept.

The plugin here is a shell script standing in for session-manager-plugin: it logs each call, then waits until
the test lets it answer, so "started but not finished" is a state the test holds, not a race it times."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from ssmfab.config import Settings
from ssmfab.exceptions import PluginError
from ssmfab.tunnel import PluginCheck, PluginTunnelFactory


def gated_plugin(tmp_path: Path, version: str) -> tuple[Path, Path, Path]:
    """A plugin printing ``version`` once the gate file exists; each call appends a line to the log."""
    log, gate = tmp_path / "calls.log", tmp_path / "gate"
    plugin = tmp_path / "session-manager-plugin"
    plugin.write_text(f"#!/bin/sh\necho called >> '{log}'\nwhile [ ! -e '{gate}' ]; do sleep 0.01; done\necho {version}\n")
    plugin.chmod(0o755)
    return plugin, log, gate


def wait_for(path: Path) -> None:
    deadline = time.monotonic() + 20
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


def test_start_returns_at_once_and_every_thread_shares_one_call(tmp_path: Path) -> None:
    plugin, log, gate = gated_plugin(tmp_path, "1.2.553.0")
    check = PluginCheck(str(plugin))
    check.start()
    wait_for(log)  # running, and held at the gate: start() did not wait for it
    check.raise_if_failed()  # nothing known yet, and no waiting either
    versions: list[tuple[int, ...]] = []
    threads = [threading.Thread(target=lambda: versions.append(check.version())) for _ in range(8)]
    for thread in threads:
        thread.start()
    check.start()
    gate.touch()
    for thread in threads:
        thread.join(20)
    assert versions == [(1, 2, 553, 0)] * 8
    assert log.read_text().count("called") == 1


def test_a_failed_check_is_raised_to_every_caller_without_running_again(tmp_path: Path) -> None:
    plugin, log, gate = gated_plugin(tmp_path, "1.1.17.0")
    gate.touch()
    check = PluginCheck(str(plugin))
    for _ in range(3):
        with pytest.raises(PluginError, match="1.1.17.0 is too old"):
            check.version()
    with pytest.raises(PluginError, match="too old"):
        check.raise_if_failed()
    assert log.read_text().count("called") == 1


def test_prepare_checks_the_plugin_before_any_tunnel_opens(tmp_path: Path) -> None:
    plugin, log, gate = gated_plugin(tmp_path, "1.2.553.0")
    settings = Settings().merged({"tunnel.plugin": str(plugin), "tunnel.mode": "plugin"})
    factory = PluginTunnelFactory(settings, aws=None)  # type: ignore[arg-type]  # no AWS call is made here
    factory.prepare()
    wait_for(log)
    gate.touch()
    factory.check()
    factory.check()
    assert log.read_text().count("called") == 1
