"""Opening a tunnel against SSM: the session started with what the user asked for, the plugin given it, and on
close the session ended on AWS's side and the processes gone; a failure on the way leaves no session open.

SSM is moto served over HTTP (with the Session Manager calls ssmfab's sandbox adds to it). The plugin is a small
script standing in for session-manager-plugin: it answers ``--version``, takes the session the way the real one
does (either calling convention), writes down what it was given, prints the plugin's greeting on the stream and
then echoes the stream back, and, like AWS's plugin, ends no session when its input ends. In cli mode the real
aws CLI (in a process) starts the session and runs that plugin."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import pytest
from moto.ssm.responses import SimpleSystemManagerResponse
from paramiko.packet import Packetizer

from ssmfab.aws import AWSContext
from ssmfab.config import Settings
from ssmfab.exceptions import AWSCLIError, AWSError, ConfigError, PluginError, TargetNotConnectedError, TunnelError
from ssmfab.sandbox.moto_ext import _error, sandbox_put_instance_information
from ssmfab.tunnel import RESPONSE_ENV_VAR, CLITunnelFactory, PluginTunnelFactory, _group_alive, start_ssh_session

REGION = "us-east-1"
INSTANCE = "i-0123456789abcdef0"
LABEL = f"web-1 ({INSTANCE})"


PLUGIN = '''#!{python}
import json, os, sys
if sys.argv[1:2] == ["--version"]:
    print({version!r})
    sys.exit(0)
first = sys.argv[1]
session = json.loads(os.environ[first] if first in os.environ else first)
given = {{
    "argv": sys.argv, "session": session, "in_env": first in os.environ,
    "env": {{k: os.environ.get(k) for k in ("AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE")}},
}}
with open({log!r} + ".tmp", "w") as f:
    json.dump(given, f)
os.rename({log!r} + ".tmp", {log!r})
os.write(1, ("\\nStarting session with SessionId: " + session["SessionId"] + "\\n").encode())
while True:
    data = os.read(0, 65536)
    if not data:
        break  # input ended: exit without ending the session, as AWS's plugin does
    os.write(1, data)
'''


def write_plugin(directory: Path, version: str = "1.2.677.0") -> tuple[Path, Path]:
    """session-manager-plugin in ``directory``, and the file it writes what it was given to."""
    plugin, log = directory / "session-manager-plugin", directory / "plugin-given.json"
    plugin.write_text(PLUGIN.format(python=sys.executable, version=version, log=str(log)))
    plugin.chmod(0o755)
    return plugin, log


def register(aws: AWSContext, *instance_ids: str) -> None:
    entries = [{"InstanceId": i, "PingStatus": "Online", "ResourceType": "EC2Instance"} for i in instance_ids]
    sandbox_put_instance_information(str(aws.endpoint_url), REGION, entries)


def sessions(aws: AWSContext, state: Literal["Active", "History"]) -> list[Any]:
    return list(aws.ssm().describe_sessions(State=state)["Sessions"])


def echoes(tunnel: Any) -> None:
    """The stream reaches the plugin and comes back (what paramiko will do with sshd)."""
    tunnel.sock.sendall(b"SSH-2.0-ssmfab-test\r\n")
    assert Packetizer(tunnel.sock).readline(60) == "SSH-2.0-ssmfab-test"


@pytest.fixture
def plugin(tmp_path: Path) -> tuple[Path, Path]:
    return write_plugin(tmp_path)


def plugin_settings(plugin: Path, **tunnel: Any) -> Settings:
    settings = Settings().merged({"tunnel.mode": "plugin", "tunnel.plugin": str(plugin)})
    return replace(settings, tunnel=replace(settings.tunnel, **tunnel))


# -- plugin mode ---------------------------------------------------------------------------------------------


def test_a_plugin_tunnel_starts_the_session_asked_for_and_ends_it_on_close(aws: AWSContext, plugin: tuple[Path, Path]) -> None:
    path, given_log = plugin
    register(aws, INSTANCE)
    factory = PluginTunnelFactory(plugin_settings(path, reason="INC-1 restart nginx", remote_port=2222), aws)
    tunnel = factory.open(INSTANCE, LABEL)
    try:
        [active] = sessions(aws, "Active")
        assert tunnel.session_id == active["SessionId"]  # type: ignore[attr-defined]  # known from StartSession at once
        echoes(tunnel)
        assert (active["Target"], active["DocumentName"], active["Reason"]) == (INSTANCE, "AWS-StartSSHSession", "INC-1 restart nginx")
        given = json.loads(given_log.read_text())
        assert given["argv"][1:] == [
            RESPONSE_ENV_VAR, REGION, "StartSession", "",
            json.dumps({"Target": INSTANCE, "DocumentName": "AWS-StartSSHSession", "Parameters": {"portNumber": ["2222"]},
                        "Reason": "INC-1 restart nginx"}),
            aws.ssm().meta.endpoint_url,
        ]  # fmt: skip
        assert given["in_env"] and given["session"]["SessionId"] == active["SessionId"]
    finally:
        tunnel.close()
    assert sessions(aws, "Active") == []
    [ended] = sessions(aws, "History")
    assert (ended["SessionId"], ended["Status"]) == (active["SessionId"], "Terminated")
    assert not _group_alive(tunnel.process.pid)  # type: ignore[attr-defined]


def test_without_a_reason_none_is_sent(aws: AWSContext, plugin: tuple[Path, Path]) -> None:
    path, given_log = plugin
    register(aws, INSTANCE)
    tunnel = PluginTunnelFactory(plugin_settings(path), aws).open(INSTANCE)
    try:
        echoes(tunnel)
        assert json.loads(json.loads(given_log.read_text())["argv"][5]) == {
            "Target": INSTANCE, "DocumentName": "AWS-StartSSHSession", "Parameters": {"portNumber": ["22"]},
        }  # fmt: skip
    finally:
        tunnel.close()


def test_a_session_ssm_refuses_is_one_line_naming_the_host(aws: AWSContext, plugin: tuple[Path, Path]) -> None:
    path, given_log = plugin
    factory = PluginTunnelFactory(plugin_settings(path), aws)
    with pytest.raises(TargetNotConnectedError) as raised:
        factory.open(INSTANCE, LABEL)  # not registered with SSM: its agent is not connected
    assert str(raised.value).startswith(f"{LABEL}: SSM agent not connected (TargetNotConnected)")
    with pytest.raises(TargetNotConnectedError, match=f"^{INSTANCE}: SSM agent"):
        factory.open(INSTANCE)  # no label: the id names it
    assert not given_log.exists()


def test_a_document_ssm_does_not_know_is_one_line(aws: AWSContext, plugin: tuple[Path, Path]) -> None:
    register(aws, INSTANCE)
    factory = PluginTunnelFactory(plugin_settings(plugin[0], document="Team-SSH"), aws)
    with pytest.raises(AWSError) as raised:
        factory.open(INSTANCE, LABEL)
    assert str(raised.value) == f"{LABEL}: AWS error while starting the SSM session: InvalidDocument: Document Team-SSH does not exist."
    assert sessions(aws, "History") == []


def test_a_plugin_too_old_ends_the_session_it_was_checked_beside(aws: AWSContext, tmp_path: Path) -> None:
    path, given_log = write_plugin(tmp_path, version="1.1.22.0")
    register(aws, INSTANCE)
    factory = PluginTunnelFactory(plugin_settings(path), aws)
    with pytest.raises(PluginError, match="1.1.22.0 is too old for SSH"):
        factory.open(INSTANCE, LABEL)  # unprepared: StartSession went out while the plugin was checked
    assert sessions(aws, "Active") == []
    assert len(sessions(aws, "History")) == 1
    with pytest.raises(PluginError, match="too old"):
        factory.open(INSTANCE, LABEL)  # known now: no session is started at all
    assert len(sessions(aws, "History")) == 1
    assert not given_log.exists()


def test_a_plugin_that_cannot_start_ends_the_session(aws: AWSContext, plugin: tuple[Path, Path]) -> None:
    path, given_log = plugin
    register(aws, INSTANCE)
    factory = PluginTunnelFactory(plugin_settings(path), aws)
    factory.check()
    path.write_text("#!/nonexistent/interpreter\n")  # broken after the check (a half-finished reinstall, say)
    with pytest.raises(TunnelError, match=f"^cannot start {path}: No such file or directory$"):
        factory.open(INSTANCE, LABEL)
    assert sessions(aws, "Active") == []
    assert [s["Status"] for s in sessions(aws, "History")] == ["Terminated"]


def test_a_session_that_cannot_be_ended_is_said_once_with_the_iam_fix(
    aws: AWSContext, plugin: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = plugin
    register(aws, INSTANCE, "i-0fedcba9876543210")

    def denied(self: SimpleSystemManagerResponse) -> Any:
        raise _error("AccessDeniedException", "User: arn:aws:sts::123456789012:assumed-role/ops/me is not authorized to perform: ssm:TerminateSession")

    monkeypatch.setattr(SimpleSystemManagerResponse, "terminate_session", denied)  # a policy without the action
    notices: list[str] = []
    factory = PluginTunnelFactory(plugin_settings(path), aws, notices.append)
    tunnels = [factory.open(INSTANCE, LABEL), factory.open("i-0fedcba9876543210")]
    first_id = tunnels[0].session_id  # type: ignore[attr-defined]
    for tunnel in tunnels:
        tunnel.close()  # the hosts' work is done: no error
    assert notices == [
        "warning: SSM sessions could not be ended on close and stay open until SSM's idle timeout: "
        f"{INSTANCE}: access denied while ending SSM session {first_id}: User: arn:aws:sts::123456789012:assumed-role/"
        "ops/me is not authorized to perform: ssm:TerminateSession (grant it in IAM: see the README's IAM section); "
        "allow ssm:TerminateSession in IAM"
    ]
    assert len(sessions(aws, "Active")) == 2
    assert not any(_group_alive(t.process.pid) for t in tunnels)  # type: ignore[attr-defined]


def test_a_session_for_another_port_asks_ssm_for_that_port(aws: AWSContext) -> None:
    # ssmfab-proxy's sessions (an ssh ProxyCommand's %p) name their port; the tunnel's own use tunnel.remote_port.
    register(aws, INSTANCE)
    request, response = start_ssh_session(plugin_settings(Path("unused")), aws.ssm(), INSTANCE, LABEL, port="2200")
    assert request == {"Target": INSTANCE, "DocumentName": "AWS-StartSSHSession", "Parameters": {"portNumber": ["2200"]}}
    [active] = sessions(aws, "Active")
    assert response["SessionId"] == active["SessionId"] and response["StreamUrl"] and response["TokenValue"]


# -- cli mode: the real aws CLI, in a process ----------------------------------------------------------------


@pytest.fixture
def cli_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Settings, Path]:
    path, given_log = write_plugin(tmp_path)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")  # where the aws CLI finds its plugin
    aws_cli = Path(sys.executable).parent / "aws"
    if not aws_cli.exists():
        pytest.skip("the aws CLI is not installed beside this Python (pip install awscli)")
    settings = Settings().merged({"tunnel.mode": "cli", "tunnel.plugin": str(path), "tunnel.aws_cli": str(aws_cli)})
    return settings, given_log


def test_a_cli_tunnel_starts_the_session_and_ssmfab_ends_it_on_close(
    aws: AWSContext, cli_settings: tuple[Settings, Path]
) -> None:
    settings, given_log = cli_settings
    settings = replace(settings, tunnel=replace(settings.tunnel, reason="INC-2 disk full"))
    aws = replace(aws, connect_timeout=4.5, read_timeout=17.0, max_attempts=2)
    register(aws, INSTANCE)
    factory = CLITunnelFactory(settings, aws)
    tunnel = factory.open(INSTANCE, LABEL)
    try:
        echoes(tunnel)
        [active] = sessions(aws, "Active")
        assert (active["Target"], active["Reason"]) == (INSTANCE, "INC-2 disk full")
        assert tunnel.session_id == active["SessionId"]  # type: ignore[attr-defined]  # announced on the stream
        given = json.loads(given_log.read_text())
        assert given["env"] == {"AWS_MAX_ATTEMPTS": "2", "AWS_RETRY_MODE": "standard"}  # the CLI's retries bounded
        argv = tunnel.argv  # type: ignore[attr-defined]
        assert argv[: len(factory.argv(INSTANCE))] == factory.argv(INSTANCE)
        assert argv[len(factory.argv(INSTANCE)) :] == [
            "--cli-connect-timeout", "5", "--cli-read-timeout", "17", "--reason", "INC-2 disk full",
        ]  # fmt: skip  # whole seconds, rounded up: the aws CLI refuses "4.5" (and its 0 means no bound at all)
    finally:
        tunnel.close()
    assert sessions(aws, "Active") == []  # neither the aws CLI nor the plugin ends it: ssmfab does
    assert [s["Status"] for s in sessions(aws, "History")] == ["Terminated"]
    assert not _group_alive(tunnel.process.pid)  # type: ignore[attr-defined]  # the aws CLI and its plugin


def test_a_cli_tunnel_checks_the_cli_and_the_plugin_first(aws: AWSContext, cli_settings: tuple[Settings, Path], tmp_path: Path) -> None:
    settings, given_log = cli_settings
    register(aws, INSTANCE)
    missing = replace(settings, tunnel=replace(settings.tunnel, aws_cli="no-such-aws-cli"))
    with pytest.raises(AWSCLIError) as raised:
        CLITunnelFactory(missing, aws).open(INSTANCE, LABEL)
    assert str(raised.value) == (
        'no-such-aws-cli not found on PATH: install the AWS CLI, or use the plugin tunnel (--tunnel plugin / tunnel.mode = "plugin")'
    )
    (tmp_path / "old").mkdir()
    old, _ = write_plugin(tmp_path / "old", version="1.0.37.0")
    too_old = replace(settings, tunnel=replace(settings.tunnel, plugin=str(old)))
    with pytest.raises(PluginError, match="1.0.37.0 is too old"):
        CLITunnelFactory(too_old, aws).open(INSTANCE, LABEL)
    assert sessions(aws, "Active") == [] and sessions(aws, "History") == []
    assert not given_log.exists()


def test_a_cli_tunnel_needs_a_reason_when_one_is_required(aws: AWSContext, cli_settings: tuple[Settings, Path]) -> None:
    settings, _ = cli_settings
    wanting = replace(settings, audit=replace(settings.audit, require_reason=True))
    with pytest.raises(ConfigError, match="a reason is required"):
        CLITunnelFactory(wanting, aws).open(INSTANCE, LABEL)
    assert sessions(aws, "History") == []


def test_a_cli_session_that_cannot_be_ended_is_said_with_the_iam_fix(
    aws: AWSContext, cli_settings: tuple[Settings, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, _ = cli_settings
    register(aws, INSTANCE)

    def denied(self: SimpleSystemManagerResponse) -> Any:
        raise _error("AccessDeniedException", "not authorized to perform: ssm:TerminateSession")

    monkeypatch.setattr(SimpleSystemManagerResponse, "terminate_session", denied)
    notices: list[str] = []
    tunnel = CLITunnelFactory(settings, aws, notices.append).open(INSTANCE, LABEL)
    echoes(tunnel)
    tunnel.close()
    [active] = sessions(aws, "Active")
    assert notices == [
        "warning: SSM sessions could not be ended on close and stay open until SSM's idle timeout: "
        f"{INSTANCE}: access denied while ending SSM session {active['SessionId']}: not authorized to perform: "
        "ssm:TerminateSession (grant it in IAM: see the README's IAM section); allow ssm:TerminateSession in IAM"
    ]
