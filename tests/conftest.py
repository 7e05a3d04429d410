"""Shared fixtures. AWS itself cannot run here: moto stands in for it, served over HTTP."""

from __future__ import annotations

import json
import sys
import threading
import urllib.request
from collections.abc import Iterator

import boto3
import pytest

from ssmfab.aws import AWSContext

REGION = "us-east-1"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--plugin", default=None, metavar="PATH",
        help="run the integration tests through this session-manager-plugin (AWS's own) instead of the sandbox's "
        "stand-in (default: $SSMFAB_SANDBOX_PLUGIN)",
    )  # fmt: skip


def chosen_plugin(config: pytest.Config) -> str:
    """AWS's plugin the run was told to use ("" = the sandbox's stand-in)."""
    import os

    from ssmfab.sandbox.local_fleet import PLUGIN_ENV_VAR, checked_plugin

    named = config.getoption("--plugin") or os.environ.get(PLUGIN_ENV_VAR, "")
    return checked_plugin(named) if named else ""


def pytest_report_header(config: pytest.Config) -> str:
    plugin = chosen_plugin(config)
    if not plugin:
        return "session-manager-plugin: the sandbox's stand-in"
    import subprocess

    version = subprocess.run([plugin, "--version"], capture_output=True, text=True, check=False).stdout.strip()
    return f"session-manager-plugin: {plugin} (AWS's, version {version or 'unknown'})"


@pytest.fixture(autouse=True)
def _no_real_aws(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """No test may reach real AWS or read the developer's own AWS or ssmfab configuration."""
    empty = tmp_path_factory.mktemp("aws-config")
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "SSMFAB_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty / "credentials"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(empty / "xdg"))
    # Warm sessions are on by default for the command line: a test that wants a keeper asks for one (and stops
    # it); no other may leave one running.
    monkeypatch.setenv("SSMFAB_PERSIST", "0")


#: The one thread ssmfab starts that is not a daemon, and why: it waits for `session-manager-plugin --version`,
#: a few milliseconds, so that an interpreter exiting first does not leave that process behind.
NOT_DAEMONS = {"ssmfab-plugin-version"}


@pytest.fixture(autouse=True)
def _threads_are_named_daemons(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every thread ssmfab's own code starts (its sandbox aside) is named ``ssmfab-...`` and is a daemon.

    The name is how an operator reading a stack dump of a hung run, and the leak tests, tell ssmfab's threads
    from paramiko's; a daemon thread cannot keep the interpreter alive after the command is done (a thread
    blocked on a dead tunnel would otherwise hang the exit that Ctrl-C asked for)."""
    wrong: list[str] = []
    start = threading.Thread.start

    def checked_start(thread: threading.Thread) -> None:
        caller = sys._getframe(1).f_globals.get("__name__", "")
        if caller.startswith("ssmfab.") and not caller.startswith("ssmfab.sandbox."):
            if not thread.name.startswith("ssmfab-"):
                wrong.append(f"{caller} started a thread named {thread.name!r}")
            if not thread.daemon and thread.name not in NOT_DAEMONS:
                wrong.append(f"{caller} started {thread.name!r}, not a daemon")
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", checked_start)
    yield
    assert wrong == [], "threads that break ssmfab's naming or daemon rule"


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """A moto server in a thread of the test process, with the SSM calls moto lacks installed."""
    from moto.server import ThreadedMotoServer

    from ssmfab.sandbox.moto_ext import install

    install()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def moto_endpoint(moto_server: str) -> Iterator[str]:
    """The shared moto server, reset to empty for this test."""
    request = urllib.request.Request(f"{moto_server}/moto-api/reset", data=b"", method="POST")
    urllib.request.urlopen(request, timeout=10).close()
    yield moto_server


@pytest.fixture
def aws(moto_endpoint: str) -> AWSContext:
    session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION)
    return AWSContext(session=session, region=REGION, profile=None, endpoint_url=moto_endpoint)


def json_body(data: object) -> bytes:
    return json.dumps(data).encode()
