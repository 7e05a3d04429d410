"""Fan-out over the sandbox: per-host results, failures kept apart, one host down fails alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ssmfab.client import Client
from ssmfab.fleet import fan_out, run_command
from ssmfab.remoteshell import quote
from ssmfab.sandbox import Sandbox


def test_a_failing_command_is_reported_with_its_host(client: Client, sandbox: Sandbox) -> None:
    targets = client.targets(tags=["web"])
    assert [t.name for t in targets] == ["web-1", "web-2", "web-3"]
    with client.connect(next(t for t in targets if t.name == "web-2")) as conn:
        conn.run("touch marker")
    try:
        result = fan_out(targets, client.connect, run_command("test ! -e marker || exit 7", hide=True), parallel=3)
    finally:
        with client.connect(next(t for t in targets if t.name == "web-2")) as conn:
            conn.run("rm -f marker")
    assert [r.target.name for r in result.succeeded] == ["web-1", "web-3"]
    [failed] = result.failed
    assert failed.target.name == "web-2" and failed.exit_code == 7
    assert failed.error is not None and failed.error.startswith("web-2 (i-")


def test_a_host_whose_sshd_is_down_fails_alone(client: Client, sandbox: Sandbox) -> None:
    targets = client.targets(tags=["web"])
    sandbox.stop_host("web-3")
    try:
        result: Any = fan_out(targets, client.connect, run_command("echo ok", hide=True), parallel=2)
    finally:
        sandbox.start_host("web-3")
    assert [r.target.name for r in result.succeeded] == ["web-1", "web-2"]
    assert [r.value.stdout.strip() for r in result.succeeded] == ["ok", "ok"]
    [failed] = result.failed
    assert failed.target.name == "web-3"
    assert "web-3" in str(failed.error) and "\n" not in str(failed.error)


def test_parallel_bound_is_respected(client: Client, sandbox: Sandbox, tmp_path: Path) -> None:
    # A rendezvous in pairs (the sandbox hosts share this machine's files): each host signs in, then waits
    # until its pair is complete, so two hosts are surely in flight at once however the machine schedules
    # them; the events then show that no third one ever was. A bound of 1 would leave the first host
    # waiting, and it gives up (exit 9) after a minute.
    arrivals = tmp_path / "arrivals"
    arrivals.mkdir()
    here = quote(str(arrivals))
    rendezvous = (
        f'mktemp {here}/arrived.XXXXXXXX >/dev/null; n=$(ls {here} | wc -l); pair=$(( (n + 1) / 2 * 2 )); i=0; '
        f'while [ "$(ls {here} | wc -l)" -lt "$pair" ]; do i=$((i + 1)); [ $i -gt 1200 ] && exit 9; sleep 0.05; done'
    )
    targets = client.targets(names=["*"])
    result = fan_out(targets, client.connect, run_command(rendezvous, hide=True), parallel=2)
    in_flight, peak = 0, 0
    for _, kind, _ in result.events:
        in_flight += 1 if kind == "start" else -1
        peak = max(peak, in_flight)
    assert peak == 2
    assert len(result.succeeded) == 4
