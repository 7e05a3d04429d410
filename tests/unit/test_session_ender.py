"""SessionEnder: a TerminateSession that fails never fails a host, and is said once per run."""

from __future__ import annotations

import logging
import socket
from typing import Any

import boto3
import pytest
from botocore.config import Config

from ssmfab.tunnel import SessionEnder


def unreachable_ssm() -> Any:
    with socket.socket() as probe:  # a port nothing listens on: AWS that does not answer
        probe.bind(("127.0.0.1", 0))
        dead_endpoint = f"http://127.0.0.1:{probe.getsockname()[1]}"
    return boto3.client(
        "ssm", endpoint_url=dead_endpoint, region_name="us-east-1", aws_access_key_id="testing",
        aws_secret_access_key="testing", config=Config(retries={"max_attempts": 1}, connect_timeout=2),
    )  # fmt: skip


def test_failed_session_ends_are_said_once_per_run() -> None:
    ssm = unreachable_ssm()
    notices: list[str] = []
    ender = SessionEnder(lambda: ssm, notices.append)
    for number in range(3):
        ender.end(f"session-{number}", f"i-0000000000000000{number}")  # no exception: the hosts' work is done
    ender.end(None, "i-00000000000000009")  # no session id (a plugin that never announced one): nothing to end
    assert len(notices) == 1
    assert notices[0].startswith("warning: SSM sessions could not be ended on close")
    assert "cannot reach AWS while ending SSM session session-0" in notices[0]
    assert "\n" not in notices[0]
    # Not a permission problem: no IAM fix suggested (see test_tunnel_open for one); the line ends with the cause's fix.
    assert "IAM" not in notices[0] and notices[0].endswith("; check the network, region and endpoint")


def test_without_a_notice_channel_the_warning_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    ender = SessionEnder(unreachable_ssm)  # a library caller that gave no notify
    with caplog.at_level(logging.WARNING, logger="ssmfab"):
        ender.end("session-0", "i-00000000000000000")
        ender.end("session-1", "i-00000000000000001")
    [record] = [r for r in caplog.records if r.name == "ssmfab"]
    assert record.levelno == logging.WARNING
    assert record.getMessage().startswith(
        "warning: SSM sessions could not be ended on close and stay open until SSM's idle timeout: "
        "cannot reach AWS while ending SSM session session-0: "
    )


def test_a_session_never_known_is_not_asked_about() -> None:
    # A plugin that never announced its session: nothing to end, so no call (it would fail) and no warning.
    notices: list[str] = []
    ender = SessionEnder(unreachable_ssm, notices.append)
    ender.end(None, "i-00000000000000000")
    ender.end("", "i-00000000000000000")
    assert notices == []
