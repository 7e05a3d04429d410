"""No SSM session outlives the command: closing a connection ends its session on AWS's side.

AWS's session-manager-plugin does not call TerminateSession when its input ends (it only closes its data
channel), so the session would stay "Connected" until AWS's idle timeout unless ssmfab terminates it. The
test checks both what ssmfab asked AWS (its own TerminateSession calls, seen on its own boto3 client) and
what AWS then says (DescribeSessions): the first fails whenever ssmfab forgets the call, even with a plugin
that tidies up after itself.
"""

from __future__ import annotations

from typing import Any


from ssmfab.client import Client
from ssmfab.sandbox import Sandbox

from .conftest import new_active_sessions, session_status


def test_closing_a_plugin_tunnel_terminates_its_session(
    sandbox: Sandbox, sandbox_env: dict[str, str], sessions_before: set[str]
) -> None:
    client = Client(tunnel="plugin", notify=lambda message: None)
    started: list[str] = []
    terminated: list[str] = []

    def record(into: list[str]) -> Any:
        return lambda parsed, **_: into.append(str(parsed.get("SessionId")))

    ssm = client.aws.ssm()
    ssm.meta.events.register("after-call.ssm.StartSession", record(started))
    ssm.meta.events.register("after-call.ssm.TerminateSession", record(terminated))

    conn = client.connect(sandbox.host("web-1").instance_id)
    assert conn.run("echo up", hide=True).stdout == "up\n"
    [session_id] = started
    assert session_status(sandbox.endpoint, session_id) == "Connected"
    assert terminated == []
    conn.close()
    assert terminated == [session_id]
    assert session_status(sandbox.endpoint, session_id) == "Terminated"
    assert new_active_sessions(sandbox_env, sessions_before) == set()
