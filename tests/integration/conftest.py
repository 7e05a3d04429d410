"""The sandbox fleet for integration tests: a moto server with the ssmmessages data channel service, real
OpenSSH sshd per instance, the real aws CLI, and a session-manager-plugin: AWS's own when the run names one
(``--plugin PATH`` or ``SSMFAB_SANDBOX_PLUGIN``), else the sandbox's stand-in."""

from __future__ import annotations

import os
import shutil
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from ssmfab.client import Client
from ssmfab.sandbox import Sandbox, default_hosts

pytestmark = pytest.mark.integration

from ssmfab.sandbox.local_fleet import PLUGIN_PROGRAM

#: What a tunnel's processes carry on their command lines: the aws CLI's subcommand, the stand-in plugin's file,
#: AWS's plugin's name.
TUNNEL_PROCESS_MARKERS = ("start-session", PLUGIN_PROGRAM, "session-manager-plugin")


def processes_matching(*needles: str, environ: str | None = None) -> list[str]:
    """Command lines of live (non-zombie) processes containing any needle (and, if given, whose environment
    contains ``environ``: it tells this run's processes from another run's on a shared machine)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        if state != "Z" and any(n in cmdline for n in needles):
            if environ is not None:
                try:
                    if environ.encode() not in Path(f"/proc/{entry}/environ").read_bytes():
                        continue
                except OSError:
                    continue
            found.append(f"{entry}: {cmdline.strip()}")
    return found


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def plugin_path(pytestconfig: pytest.Config) -> str:
    """AWS's plugin this run uses ("" = the sandbox's stand-in)."""
    from tests.conftest import chosen_plugin

    return chosen_plugin(pytestconfig)


@pytest.fixture(params=["stand-in", "aws"])
def program(request: pytest.FixtureRequest, sandbox: Sandbox, plugin_path: str) -> str:
    """Each plugin in turn: the sandbox's stand-in, then AWS's own (skipped, saying why, when none is named)."""
    if request.param == "stand-in":
        return str(sandbox.stand_in_plugin)
    if not plugin_path:
        pytest.skip("AWS's session-manager-plugin not named (pytest --plugin PATH or SSMFAB_SANDBOX_PLUGIN)")
    return plugin_path


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory, plugin_path: str) -> Iterator[Sandbox]:
    if shutil.which("sshd") is None and not Path("/usr/sbin/sshd").exists():
        pytest.skip("OpenSSH sshd is not installed (apt-get install -y openssh-server)")
    root = tmp_path_factory.mktemp("fleet") / "sandbox"
    box = Sandbox(root, plugin=plugin_path)
    box.up(default_hosts(web=3, db=1))
    try:
        yield box
    finally:
        box.down()
    leftovers = processes_matching(str(root))
    assert not leftovers, f"sandbox processes outlived down(): {leftovers}"
    assert not root.exists(), "sandbox folder outlived down()"


@pytest.fixture
def sandbox_env(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """Point this process (and the aws CLI it starts) at the sandbox; a fresh known_hosts per test."""
    env = dict(sandbox.env())
    env["SSMFAB_KNOWN_HOSTS"] = str(tmp_path / "known_hosts")
    env["SSMFAB_PERSIST"] = "0"  # no keeper unless a test asks for one (tests/integration/test_warm.py)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def active_sessions(env: dict[str, str]) -> list[dict[str, object]]:
    """SSM sessions the sandbox's moto still counts as active (every page: a whole run opens hundreds)."""
    ssm = boto3.client("ssm", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1")
    return [s for page in ssm.get_paginator("describe_sessions").paginate(State="Active") for s in page["Sessions"]]


def session_status(endpoint: str, session_id: str) -> str:
    """One session's status as DescribeSessions reports it (Connected, Terminated, Failed…), or "absent"."""
    ssm = boto3.client("ssm", endpoint_url=endpoint, region_name="us-east-1")
    for state in ("Active", "History"):
        pages = ssm.get_paginator("describe_sessions").paginate(
            State=state, Filters=[{"key": "SessionId", "value": session_id}]
        )
        for session in (s for page in pages for s in page["Sessions"]):
            return str(session["Status"])
    return "absent"


def active_session_ids(env: dict[str, str]) -> set[str]:
    return {str(s["SessionId"]) for s in active_sessions(env)}


@pytest.fixture
def sessions_before(sandbox_env: dict[str, str]) -> set[str]:
    """The sessions already active when the test began: an earlier test may have SIGKILLed a tunnel on
    purpose (AWS then keeps its session until the idle timeout), and that must not fail a later test."""
    return active_session_ids(sandbox_env)


def new_active_sessions(env: dict[str, str], before: set[str]) -> set[str]:
    """Sessions active now that were not when the test began: the ones this test left behind."""
    return active_session_ids(env) - before


def tunnel_processes(sandbox: Sandbox) -> list[str]:
    """This run's tunnel processes (aws CLI and plugin), recognised by the sandbox endpoint in their env."""
    return processes_matching(*TUNNEL_PROCESS_MARKERS, environ=f"AWS_ENDPOINT_URL={sandbox.endpoint}")


@pytest.fixture(autouse=True)
def no_tunnel_outlives_its_test(request: pytest.FixtureRequest) -> Iterator[None]:
    if "sandbox" not in request.fixturenames:
        yield
        return
    sandbox = request.getfixturevalue("sandbox")
    before = set(tunnel_processes(sandbox))
    yield
    after = set(tunnel_processes(sandbox)) - before
    assert not after, f"tunnel processes outlived the test: {sorted(after)}"


@pytest.fixture(params=["cli", "plugin"])
def client(request: pytest.FixtureRequest, sandbox_env: dict[str, str]) -> Client:
    """A library Client on the sandbox, once per tunnel mode."""
    return Client(tunnel=request.param, notify=lambda message: None)


class Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


@pytest.fixture
def echo_servers() -> Iterator[tuple[int, int]]:
    """An echo server on 127.0.0.1 (a port on the instance) and one on 127.0.0.2 (a host only it reaches)."""
    servers = [socketserver.ThreadingTCPServer((address, 0), Echo) for address in ("127.0.0.1", "127.0.0.2")]
    for server in servers:
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield servers[0].server_address[1], servers[1].server_address[1]
    for server in servers:
        server.shutdown()
        server.server_close()
