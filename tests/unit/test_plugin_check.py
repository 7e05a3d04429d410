"""The plugin's version check: run once per factory, in the background when prepared, its failure kept.

The plugin here is a shell script standing in for session-manager-plugin: it logs each call, then waits until
the test lets it answer, so "started but not finished" is a state the test holds, not a race it times."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any

import botocore.session
import pytest

from ssmfab.aws import AWSContext
from ssmfab.config import Settings
from ssmfab.exceptions import PluginError
from ssmfab.tunnel import PLUGIN_INSTALL_HINT, CLITunnelFactory, PluginCheck, PluginTunnelFactory, plugin_version


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


@pytest.mark.parametrize("factory_class", [PluginTunnelFactory, CLITunnelFactory])
def test_prepare_checks_the_plugin_before_any_tunnel_opens(tmp_path: Path, factory_class: type[Any]) -> None:
    plugin, log, gate = gated_plugin(tmp_path, "1.2.553.0")
    settings = Settings().merged({"tunnel.plugin": str(plugin), "tunnel.aws_cli": sys.executable})  # any program will do
    factory = factory_class(settings, aws=AWSContext(session=botocore.session.Session(), region="us-east-1", profile=None, endpoint_url=None))
    factory.prepare()
    wait_for(log)
    gate.touch()
    factory.check()
    factory.check()
    assert log.read_text().count("called") == 1


# plugin_version: what a user with a missing, broken, silent or old plugin is told.


def plugin_script(tmp_path: Path, body: str) -> Path:
    plugin = tmp_path / "session-manager-plugin"
    plugin.write_text(f"#!/bin/sh\n{body}\n")
    plugin.chmod(0o755)
    return plugin


def test_a_plugin_not_on_path_is_named_with_the_install_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(PluginError) as raised:
        plugin_version("session-manager-plugin")
    assert str(raised.value) == f"session-manager-plugin not found on PATH: {PLUGIN_INSTALL_HINT}"


def test_a_plugin_that_cannot_run_says_to_reinstall_it(tmp_path: Path) -> None:
    plugin = tmp_path / "session-manager-plugin"
    plugin.write_text("#!/nonexistent/interpreter\n")  # a broken install: executable, but exec fails
    plugin.chmod(0o755)
    with pytest.raises(PluginError) as raised:
        plugin_version(str(plugin))
    assert str(raised.value) == (
        f"{plugin} --version failed ([Errno 2] No such file or directory: '{plugin}'): reinstall it; {PLUGIN_INSTALL_HINT}"
    )


def test_a_plugin_that_prints_no_version_is_quoted(tmp_path: Path) -> None:
    plugin = plugin_script(tmp_path, "echo '  Segmentation fault  '; exit 139")  # it crashed: one line, no traceback
    with pytest.raises(PluginError) as raised:
        plugin_version(str(plugin))
    assert str(raised.value) == f"{plugin} --version printed no version ('Segmentation fault'): {PLUGIN_INSTALL_HINT}"


def test_the_version_is_asked_for_with_version(tmp_path: Path) -> None:
    # As AWS's plugin: only `--version` prints the version; anything else is a session's arguments.
    plugin = plugin_script(tmp_path, 'if [ "$*" = "--version" ]; then echo 1.2.677.0; else echo "usage: 1.0"; fi')
    assert plugin_version(str(plugin)) == (1, 2, 677, 0)


@pytest.mark.parametrize(("version", "accepted"), [("1.1.23.0", True), ("1.1.22.99", False), ("1.0.37.0", False), ("1.2.0.0", True)])
def test_the_oldest_plugin_for_ssh_is_1_1_23_0(tmp_path: Path, version: str, accepted: bool) -> None:
    plugin = plugin_script(tmp_path, f"echo {version}")
    if accepted:
        assert plugin_version(str(plugin)) == tuple(int(p) for p in version.split("."))
        return
    with pytest.raises(PluginError) as raised:
        plugin_version(str(plugin))
    assert str(raised.value) == f"session-manager-plugin {version} is too old for SSH (needs >= 1.1.23.0): {PLUGIN_INSTALL_HINT}"
