"""A command naming one instance id opens its tunnel while the instance is looked up (ssmfab.headstart), and the
lookup still decides: through a proxy that holds DescribeInstances (AWS slow to answer the lookup alone), the SSM
session starts and the plugin runs before the lookup's answer comes; the run then uses that session and no other.
An instance the lookup leaves out, a Ctrl-C while it is still looked up: the session that was started early is
ended and its plugin gone. `forward` (over SSH) takes its early tunnel too."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import pytest

from ssmfab.sandbox import Sandbox

from .awsproxy import AWSProxy
from .conftest import TUNNEL_PROCESS_MARKERS, new_active_sessions, processes_matching
from .test_forward import PAYLOAD, echoed
from ..waiting import wait_until

SSMFAB = [sys.executable, "-m", "ssmfab.program"]
START_SESSION = b"AmazonSSM.StartSession"
#: Long enough for a busy machine to start a Python process and its plugin; the lookup is held meanwhile.
LIMIT = 60.0


@pytest.fixture
def slow_lookup(sandbox: Sandbox, sandbox_env: dict[str, str]) -> Iterator[AWSProxy]:
    """The sandbox's AWS endpoint behind a proxy that holds DescribeInstances until released."""
    with AWSProxy(sandbox.endpoint, hold=b"Action=DescribeInstances") as proxy:
        yield proxy


def start(proxy: AWSProxy, *args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, AWS_ENDPOINT_URL=proxy.url)
    return subprocess.Popen([*SSMFAB, *args], env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def plugins_of(proxy: AWSProxy) -> list[str]:
    return processes_matching(*TUNNEL_PROCESS_MARKERS, environ=f"AWS_ENDPOINT_URL={proxy.url}")


def wait_for_the_early_tunnel(proxy: AWSProxy, process: subprocess.Popen[str]) -> None:
    """Until the run started its session and its plugin while DescribeInstances is still held."""
    wait_until(
        lambda: process.poll() is not None or (proxy.count(START_SESSION) == 1 and bool(plugins_of(proxy))),
        "StartSession and the plugin while the lookup is held", LIMIT,
    )  # fmt: skip
    assert process.poll() is None, process.communicate()
    # Held until released: whether or not DescribeInstances reached the proxy yet, the lookup has no answer.
    assert not proxy.released.is_set()


def once_the_early_tunnel_is_up(proxy: AWSProxy, process: subprocess.Popen[str], then: Callable[[], object]) -> tuple[str, str]:
    """Wait for the early tunnel, do ``then`` (release the lookup, send a signal), and return what the run printed
    once it ended (a run that does not end is killed)."""
    try:
        wait_for_the_early_tunnel(proxy, process)
        then()
        return process.communicate(timeout=LIMIT)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_the_tunnel_opens_while_the_instance_is_looked_up(
    sandbox: Sandbox, slow_lookup: AWSProxy, sessions_before: set[str], sandbox_env: dict[str, str]
) -> None:
    process = start(slow_lookup, "run", "--id", sandbox.host("web-1").instance_id, "echo 'it ran'; hostname >/dev/null")
    out, err = once_the_early_tunnel_is_up(slow_lookup, process, slow_lookup.release)
    assert process.returncode == 0, err
    assert "it ran" in out
    assert slow_lookup.count(START_SESSION) == 1  # the run used the early session: it started no other
    assert plugins_of(slow_lookup) == []
    assert not new_active_sessions(sandbox_env, sessions_before)


@pytest.mark.parametrize("command", ["get", "forward"])
def test_ctrl_c_while_the_lookup_hangs_ends_the_early_session(
    sandbox: Sandbox, slow_lookup: AWSProxy, sessions_before: set[str], sandbox_env: dict[str, str], tmp_path: Path,
    command: str,
) -> None:
    instance_id = sandbox.host("web-2").instance_id
    get = ("get", "/etc/hostname", "--id", instance_id, "--dest", str(tmp_path))
    args = get if command == "get" else ("forward", instance_id, "localhost:9")
    process = start(slow_lookup, *args)
    _, err = once_the_early_tunnel_is_up(slow_lookup, process, lambda: process.send_signal(signal.SIGINT))
    assert process.returncode == 130, err
    assert "Traceback" not in err
    assert len([line for line in err.splitlines() if line.startswith("interrupted (")]) == 1, err
    assert plugins_of(slow_lookup) == []
    assert not new_active_sessions(sandbox_env, sessions_before)
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def stopped_instance(sandbox: Sandbox) -> Iterator[str]:
    """web-3 stopped in EC2 while its agent still reports Online (as it does for minutes after a real stop):
    StartSession accepts it, the lookup does not."""
    ec2 = boto3.client("ec2", endpoint_url=sandbox.endpoint, region_name="us-east-1")
    instance_id = sandbox.host("web-3").instance_id
    ec2.stop_instances(InstanceIds=[instance_id])
    try:
        yield instance_id
    finally:
        ec2.start_instances(InstanceIds=[instance_id])


def test_an_instance_the_lookup_leaves_out_gets_no_connection_and_its_early_session_ends(
    sandbox: Sandbox, stopped_instance: str, sessions_before: set[str], sandbox_env: dict[str, str]
) -> None:
    with AWSProxy(sandbox.endpoint) as proxy:
        env = dict(os.environ, AWS_ENDPOINT_URL=proxy.url)
        done = subprocess.run([*SSMFAB, "run", "--id", stopped_instance, "true"], env=env, text=True, capture_output=True, timeout=LIMIT)
        assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
        assert f"({stopped_instance}): instance is stopped" in done.stderr, done.stderr
        assert proxy.count(START_SESSION) == 1  # the early session did start: its end is what is checked
        assert proxy.count(b"AmazonSSM.TerminateSession") == 1
        assert plugins_of(proxy) == []
    assert not new_active_sessions(sandbox_env, sessions_before)


def test_forward_takes_the_tunnel_opened_during_the_lookup(
    sandbox: Sandbox, slow_lookup: AWSProxy, sessions_before: set[str], sandbox_env: dict[str, str],
    echo_servers: tuple[int, int],
) -> None:
    process = start(slow_lookup, "forward", sandbox.host("web-1").instance_id, f"localhost:{echo_servers[0]}")
    stdout = process.stdout
    assert stdout is not None
    forwarded: list[bytes] = []

    def release_then_use_the_forward_and_stop() -> None:
        slow_lookup.release()
        line = stdout.readline()
        assert " -> " in line, line
        forwarded.append(echoed(line.split(" -> ")[0]))
        process.send_signal(signal.SIGINT)

    _, err = once_the_early_tunnel_is_up(slow_lookup, process, release_then_use_the_forward_and_stop)
    assert process.returncode == 0, err
    assert forwarded == [PAYLOAD]
    assert slow_lookup.count(START_SESSION) == 1  # the forward used the early session: it started no other
    assert plugins_of(slow_lookup) == []
    assert not new_active_sessions(sandbox_env, sessions_before)
