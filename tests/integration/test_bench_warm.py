"""The warm rows' harness on the sandbox: the ssh ControlPersist master really carries the baseline's commands
(no new SSM session each) and is gone afterwards; the keeper is primed with every host and stopped afterwards."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ssmfab.sandbox import Sandbox

from ..waiting import wait_until
from .conftest import active_session_ids, processes_matching, tunnel_processes

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.cases import Bench  # noqa: E402
from bench.warm_rows import SETUP, keeper, ssh_master, warm_env  # noqa: E402


@pytest.fixture
def bench(sandbox: Sandbox, sandbox_env: dict[str, str]) -> Iterator[Bench]:
    scratch = Path(tempfile.mkdtemp(prefix="wb-", dir="/tmp"))  # unix socket paths must stay short
    made = Bench(sandbox, scratch, 1, SETUP)
    made.env["SSMFAB_KNOWN_HOSTS"] = sandbox_env["SSMFAB_KNOWN_HOSTS"]
    try:
        yield made
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def test_the_ssh_baseline_rides_its_master_and_the_master_is_gone_after(bench: Bench, sandbox: Sandbox) -> None:
    host = sandbox.hosts[0].instance_id
    user_at = f"{sandbox.user}@{host}"
    control = bench.scratch / "cm"
    with ssh_master(bench, control, host) as options:
        assert "ControlMaster=no" in options
        opened = active_session_ids(bench.env)
        done = subprocess.run(["ssh", *options, user_at, "echo through-master"], env=bench.env, capture_output=True,
                              text=True, timeout=60)  # fmt: skip
        assert done.returncode == 0 and done.stdout == "through-master\n", done.stderr
        assert active_session_ids(bench.env) == opened  # no session of its own
        checked = subprocess.run(["ssh", *options, "-O", "check", user_at], env=bench.env, capture_output=True, timeout=60)
        assert checked.returncode == 0
    assert not control.exists()
    assert not processes_matching(str(control))


def test_the_keeper_holds_every_host_then_is_stopped(bench: Bench, sandbox: Sandbox) -> None:
    from ssmfab.warm import ask_keepers

    env = warm_env(bench, bench.scratch / "k")
    ids = [h.instance_id for h in sandbox.hosts[:2]]
    with keeper(bench, env, ids):
        held = [row["instance_id"] for answer in ask_keepers({"op": "list"}, env) for row in answer["answer"]]
        assert sorted(held) == sorted(ids)
        again = subprocess.run([bench.ssmfab, "run", "--id", ids[0], "true"], env=env, capture_output=True, text=True, timeout=60)
        assert again.returncode == 0 and "warm sessions on" not in again.stderr
    wait_until(
        lambda: not processes_matching(f"ssmfab.keeper {bench.scratch}") and not tunnel_processes(sandbox),
        "the keeper and its tunnels ending after persist --stop",
        limit=60,
    )
