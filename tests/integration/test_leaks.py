"""Hundreds of connect/run/close cycles leave file descriptors, threads and child processes where they
started, and every SSM session started is terminated (the sandbox records both ends)."""

from __future__ import annotations

import os
import threading

import boto3
import pytest

from ssmfab.client import Client
from ssmfab.sandbox import Sandbox

from .conftest import tunnel_processes


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def children() -> list[int]:
    """Live (non-zombie) direct children of this process."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[-1].split()
            except OSError:
                continue
            if fields[1] == str(os.getpid()) and fields[0] != "Z":
                found.append(int(entry))
    return found


def sessions(sandbox: Sandbox, state: str) -> list[dict[str, object]]:
    ssm = boto3.client("ssm", endpoint_url=sandbox.endpoint, region_name="us-east-1")
    found: list[dict[str, object]] = []
    for page in ssm.get_paginator("describe_sessions").paginate(State=state):
        found += page["Sessions"]
    return found


@pytest.mark.parametrize(("mode", "cycles"), [("plugin", 300), ("cli", 20)])
def test_connect_run_close_cycles_leak_nothing(mode: str, cycles: int, sandbox: Sandbox, sandbox_env: dict[str, str]) -> None:
    client = Client(tunnel=mode, notify=lambda message: None)
    target = sandbox.host("web-3").instance_id
    with client.connect(target) as warm:  # first use pins the key and builds clients; not a leak
        warm.run("true", hide=True)
        transport = warm.client.get_transport()
    transport.join(30)  # its thread ends just after close() returns; wait for that, not for a while
    assert not transport.is_alive()
    fds, threads, kids = open_fds(), set(threading.enumerate()), children()
    history = len(sessions(sandbox, "History"))
    active_before = {s["SessionId"] for s in sessions(sandbox, "Active")}
    for _ in range(cycles):
        conn = client.connect(target)
        assert conn.run("echo ok", hide=True).stdout == "ok\n"
        conn.close()
    # paramiko's transport threads end just after close() returns: every thread the cycles started must
    # end (joined: no guess at how long that takes); one that is still alive after 30 s has leaked.
    for thread in set(threading.enumerate()) - threads:
        thread.join(30)
    assert [t.name for t in set(threading.enumerate()) - threads] == []
    assert open_fds() <= fds, "file descriptors leaked"
    assert children() == kids and tunnel_processes(sandbox) == []
    # Sessions an earlier test left on purpose (a SIGKILLed tunnel) are not this test's to count.
    assert {s["SessionId"] for s in sessions(sandbox, "Active")} <= active_before
    assert len(sessions(sandbox, "History")) - history == cycles  # every session started was terminated
