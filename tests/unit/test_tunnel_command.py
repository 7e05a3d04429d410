"""How a tunnel is started: the plugin's argv and environment in both calling conventions, the aws CLI's
ProxyCommand, the session's reason, and which factory a mode picks. No AWS call is made here."""

from __future__ import annotations

import json
import os
import shutil
import stat
from dataclasses import replace
from pathlib import Path

import botocore.session
import pytest

from ssmfab.aws import AWSContext
from ssmfab.config import Settings
from ssmfab.exceptions import ConfigError
from ssmfab.tunnel import (
    RESPONSE_ENV_VAR,
    CLITunnelFactory,
    PluginTunnelFactory,
    parse_version,
    plugin_command,
    session_reason,
    tunnel_factory,
)

REQUEST = {"Target": "i-0abc", "DocumentName": "AWS-StartSSHSession", "Parameters": {"portNumber": ["22"]}}
RESPONSE = {"SessionId": "ops-1", "TokenValue": "tok", "StreamUrl": "wss://x", "ResponseMetadata": {"RequestId": "r"}}
SESSION = {"SessionId": "ops-1", "TokenValue": "tok", "StreamUrl": "wss://x"}


def context(profile: str | None = "ops", role_arn: str | None = None, child_env: dict[str, str] | None = None) -> AWSContext:
    return AWSContext(
        session=botocore.session.Session(), region="eu-west-1", profile=profile, endpoint_url=None,
        role_arn=role_arn, child_env=child_env or {},
    )  # fmt: skip


@pytest.fixture
def plugin_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    plugin = tmp_path / "session-manager-plugin"
    plugin.write_text("#!/bin/sh\n")
    plugin.chmod(plugin.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    found = shutil.which("session-manager-plugin")
    assert found is not None
    return found


def test_a_current_plugin_gets_the_response_in_its_environment(plugin_on_path: str) -> None:
    argv, env = plugin_command(Settings(), context(), "https://ssm.eu-west-1.amazonaws.com", (1, 2, 677, 0), REQUEST, RESPONSE)
    assert argv == [
        plugin_on_path, RESPONSE_ENV_VAR, "eu-west-1", "StartSession", "ops", json.dumps(REQUEST),
        "https://ssm.eu-west-1.amazonaws.com",
    ]  # fmt: skip
    assert json.loads(env[RESPONSE_ENV_VAR]) == SESSION
    assert RESPONSE_ENV_VAR == "AWS_SSM_START_SESSION_RESPONSE"


@pytest.mark.parametrize("version", [(1, 2, 497, 0), (1, 1, 23, 0)])
def test_an_older_plugin_gets_the_response_as_its_first_argument(plugin_on_path: str, version: tuple[int, ...]) -> None:
    argv, env = plugin_command(Settings(), context(), "https://e", version, REQUEST, RESPONSE)
    assert json.loads(argv[1]) == SESSION
    assert RESPONSE_ENV_VAR not in env


def test_an_assumed_role_reaches_the_plugin_as_credentials_not_a_profile(plugin_on_path: str) -> None:
    role = context(role_arn="arn:aws:iam::1:role/r", child_env={"AWS_ACCESS_KEY_ID": "AKIA"})
    argv, env = plugin_command(Settings(), role, "https://e", (1, 2, 677, 0), REQUEST, RESPONSE)
    assert argv[4] == "" and env["AWS_ACCESS_KEY_ID"] == "AKIA"
    argv, _ = plugin_command(Settings(), context(profile=None), "https://e", (1, 2, 677, 0), REQUEST, RESPONSE)
    assert argv[4] == ""


def test_the_cli_proxy_command() -> None:
    settings = Settings()
    settings = replace(settings, tunnel=replace(settings.tunnel, document="Custom-SSH", remote_port=2222))
    factory = CLITunnelFactory(settings, context())
    assert factory.argv("i-0abc") == [
        "aws", "ssm", "start-session", "--target", "i-0abc", "--document-name", "Custom-SSH",
        "--parameters", "portNumber=2222", "--region", "eu-west-1", "--profile", "ops",
    ]  # fmt: skip
    assert factory.argv("%h", "%p")[3:9] == ["--target", "%h", "--document-name", "Custom-SSH", "--parameters", "portNumber=%p"]


def test_a_required_reason_must_be_given() -> None:
    settings = Settings()
    assert session_reason(settings) == ""
    wanting = replace(settings, audit=replace(settings.audit, require_reason=True))
    with pytest.raises(ConfigError) as raised:
        session_reason(wanting)
    assert str(raised.value) == (
        "a reason is required (audit.require_reason): give --reason TEXT, e.g. --reason 'INC-123 restart nginx' "
        "(it is shown in the Session Manager console and CloudTrail, and kept in the audit trail)"
    )
    with pytest.raises(ConfigError):
        session_reason(replace(wanting, tunnel=replace(wanting.tunnel, reason="   ")))
    given = replace(wanting, tunnel=replace(wanting.tunnel, reason="INC-1 restart"))
    assert session_reason(given) == "INC-1 restart"


@pytest.mark.parametrize(("mode", "kind"), [("plugin", PluginTunnelFactory), ("cli", CLITunnelFactory)])
def test_the_mode_picks_the_factory(mode: str, kind: type[object]) -> None:
    settings, aws, notices = Settings(), context(), list[str]()
    factory = tunnel_factory(replace(settings, tunnel=replace(settings.tunnel, mode=mode)), aws, notices.append)
    assert isinstance(factory, kind)
    # The run's AWS context and its notice line reach the factory (a session that could not be ended is said there).
    assert factory.aws is aws and factory.ender.notify == notices.append  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("text", "version"),
    [("1.2.677.0\n", (1, 2, 677, 0)), ("session-manager-plugin 1.10.3", (1, 10, 3)), ("7", ()), ("", ())],
)
def test_parse_version(text: str, version: tuple[int, ...]) -> None:
    assert parse_version(text) == version
