"""SessionEnder: a TerminateSession that fails never fails a host, and is said once per run."""

from __future__ import annotations

import socket

import boto3
from botocore.config import Config

from ssmfab.tunnel import SessionEnder


def test_failed_session_ends_are_said_once_per_run() -> None:
    with socket.socket() as probe:  # a port nothing listens on: AWS that does not answer
        probe.bind(("127.0.0.1", 0))
        dead_endpoint = f"http://127.0.0.1:{probe.getsockname()[1]}"
    ssm = boto3.client(
        "ssm", endpoint_url=dead_endpoint, region_name="us-east-1", aws_access_key_id="testing",
        aws_secret_access_key="testing", config=Config(retries={"max_attempts": 1}, connect_timeout=2),
    )  # fmt: skip
    notices: list[str] = []
    ender = SessionEnder(lambda: ssm, notices.append)
    for number in range(3):
        ender.end(f"session-{number}", f"i-0000000000000000{number}")  # no exception: the hosts' work is done
    ender.end(None, "i-00000000000000009")  # no session id (a plugin that never announced one): nothing to end
    assert len(notices) == 1
    assert notices[0].startswith("warning: SSM sessions could not be ended on close")
    assert "cannot reach AWS while ending SSM session session-0" in notices[0]
    assert "\n" not in notices[0]
