"""The ``warm`` rows: ssmfab's warm sessions (a keeper holds each host's connection between commands) against
OpenSSH's own answer to the same cost, ``ssh`` through a ControlPersist master, both through AWS's
session-manager-plugin on a sandbox whose sessions take a second to set up (as real ones take 1-3 s).

Targets (issue "warm sessions"): a warm ``run true`` at most 5x the time of ``ssh`` through a warm master and
at most 0.1x ssmfab's own cold run; a warm run on 20 hosts at most 3x a warm run on one; a warm 16 MiB ``get``
at most 1.2x the time of ``scp`` through a warm master; a warm command's own peak memory at most 30 MiB.

Every measured command finds its connection already open: the keeper and the ssh master are started (and
primed, every host) before the first timed run, outside the measured process trees, and stopped after the last.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ssmfab.sandbox import HostSpec, LinkModel, Sandbox
from ssmfab.sandbox.sshd import process_alive

from .real_plugin import NO_PLUGIN
from .cases import PLUGIN_PROXY, Bench, Row, RowFailed, Side, remove, verify
from .workloads import MIB, random_file

#: The session setup every warm row's sandbox session pays (a cold run pays it, a warm one must not). Setup
#: only: with the link model's 1 MB/s cap as well, the get row would time the cap on both sides, not ssmfab.
SETUP = LinkModel(setup=1.0)
#: Hosts of the fleet row.
FLEET = 20
#: The file of the transfer row.
FILE_MIB = 16
#: How long the keeper and the ssh master keep an idle connection: longer than any pause between two runs.
PERSIST = "30m"
#: Fault-free targets, as (ratio of ours to theirs, text).
TARGETS = {
    "ssh": (5.0, "<= 5x the time, <= 30 MiB"),
    "cold": (0.1, "<= 0.1x the time"),
    "fleet": (3.0, "<= 3x the time of 1 host"),
    "get": (1.2, "<= 1.2x the time"),
}
#: A warm command's own peak memory, at most (MiB, its process tree: the keeper is not in it).
MAX_WARM_MIB = 30.0


def fleet_hosts(count: int) -> list[HostSpec]:
    return [HostSpec(f"w{i:02d}", {"Role": "bench"}) for i in range(1, count + 1)]


def master_options(bench: Bench, control: Path) -> list[str]:
    """ssh options that use (never start) the ControlPersist master at ``control``: a command that found no master
    would connect on its own, slowly, and leave nothing running (ControlMaster=no)."""
    return [*bench.ssh_options(PLUGIN_PROXY), "-o", "ControlMaster=no", "-o", f"ControlPath={control}"]


@contextmanager
def ssh_master(bench: Bench, control: Path, host: str) -> Iterator[list[str]]:
    """A ControlPersist master to ``host`` (as ``ssh -o ControlMaster=auto -o ControlPersist=…`` leaves one after
    a user's first command), for the block; yields the options that ride it. RowFailed when it does not start."""
    user_at = f"{bench.sandbox.user}@{host}"
    start = [*bench.ssh_options(PLUGIN_PROXY), "-o", "ControlMaster=yes", "-o", f"ControlPath={control}",
             "-o", f"ControlPersist={PERSIST}", "-o", "ServerAliveInterval=60", user_at, "true"]  # fmt: skip
    done = subprocess.run(["ssh", *start], env=bench.env, capture_output=True, text=True, timeout=120)
    if done.returncode != 0 or not control.exists():
        raise RowFailed(f"the ssh ControlPersist master did not start (exit {done.returncode}): {done.stderr.strip()[-300:]}")
    try:
        yield master_options(bench, control)
    finally:
        stop_master(bench, control, user_at)


def stop_master(bench: Bench, control: Path, user_at: str) -> None:
    """Ends the master at ``control`` and waits until its process is gone: ``ssh -O exit`` returns as soon as
    the master has the request, before it removes its socket and closes its session."""
    options = master_options(bench, control)
    checked = subprocess.run(["ssh", *options, "-O", "check", user_at], env=bench.env, capture_output=True,
                             text=True, timeout=60)  # fmt: skip
    found = re.search(r"pid=(\d+)", checked.stderr)
    subprocess.run(["ssh", *options, "-O", "exit", user_at], env=bench.env, capture_output=True, timeout=60)
    if found is None:
        return
    pid = int(found.group(1))
    for _ in range(600):  # 30 s at most: a master that will not end is left to the row's own check
        if not process_alive(pid):
            return
        time.sleep(0.05)


@contextmanager
def keeper(bench: Bench, env: dict[str, str], ids: list[str]) -> Iterator[None]:
    """This run's keeper, holding a warm connection to every host in ``ids``, for the block; then stopped (its
    connections closed, their SSM sessions ended). RowFailed when priming fails."""
    primed = subprocess.run([bench.ssmfab, "run", "--id", ",".join(ids), "--parallel", str(len(ids)), "true"],
                            env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    try:
        if primed.returncode != 0 or "warm sessions on" not in primed.stderr:
            raise RowFailed(f"the keeper did not start with every host warm (exit {primed.returncode}): {primed.stderr.strip()[-300:]}")
        yield
    finally:
        subprocess.run([bench.ssmfab, "persist", "--stop"], env=env, capture_output=True, timeout=120)


def warm_env(bench: Bench, folder: Path) -> dict[str, str]:
    """The environment of the warm commands: their own keeper folder, a persist time no pause reaches."""
    folder.mkdir(mode=0o700, exist_ok=True)
    return {**bench.env, "SSMFAB_PERSIST": PERSIST, "SSMFAB_KEEPER_DIR": str(folder)}


Guard = Callable[[str, Callable[[], Row]], Row]


def warm_rows(scratch: Path, plugin: str, repeat: int, prepare: Callable[[Bench], None], guarded: Guard) -> list[Row]:
    """Every warm row, on a sandbox of their own through AWS's plugin; one skipped row saying why when there is
    no such plugin or no ssh. ``prepare``: what every bench sandbox gets before its first measured run (host
    keys pinned, bytecode written); ``guarded``: a row, or one that says why it failed."""
    if not plugin:
        print(f"  warm rows: skipped: {NO_PLUGIN}", flush=True)
        return [Row("warm sessions", Side(""), Side(""), skipped=NO_PLUGIN)]
    scratch.mkdir()
    print(f"starting a {FLEET}-host sandbox with AWS's plugin ({plugin}) for the warm rows ...", flush=True)
    sandbox = Sandbox(scratch / "sandbox", plugin=plugin).up(fleet_hosts(FLEET))
    try:
        bench = Bench(sandbox, scratch, repeat, SETUP)
        missing = bench.missing("ssh", "scp")
        if missing:
            return [Row("warm sessions", Side(""), Side(""), skipped=missing)]
        prepare(bench)
        with bench.linked() as linked:
            bench.env = linked
            try:
                return measure(bench, scratch, guarded)
            except RowFailed as exc:  # the keeper or the ssh master did not start: no row can be measured
                print(f"  warm rows: FAILED: {exc}", flush=True)
                return [Row("warm sessions", Side(""), Side(""), skipped=f"FAILED: {exc}")]
    finally:
        sandbox.down()


def measure(bench: Bench, scratch: Path, guarded: Guard) -> list[Row]:
    one = bench.sandbox.hosts[0]
    ids = [h.instance_id for h in bench.sandbox.hosts]
    user_at = f"{bench.sandbox.user}@{one.instance_id}"
    env = warm_env(bench, scratch / "k")
    home = bench.host_home(one.name)
    remote_name = f"warm-{FILE_MIB}.bin"
    digest = random_file(home / remote_name, FILE_MIB * MIB)
    pulled = scratch / "pulled"
    pulled.mkdir()
    landed = pulled / remote_name
    warm_one = ("ssmfab run, warm", lambda: [bench.ssmfab, "run", "--id", one.instance_id, "true"])
    rows: list[Row] = []
    with keeper(bench, env, ids), ssh_master(bench, scratch / "cm", one.instance_id) as through_master:
        name = "warm: run true vs ssh (ControlPersist)"
        ratio, text = TARGETS["ssh"]
        theirs = ("ssh, warm master", lambda: ["ssh", *through_master, user_at, "true"])
        rows.append(guarded(name, lambda: Row(name, *bench.pair(name, warm_one, theirs, env=env, quick=True),
                                              ratio, text, MAX_WARM_MIB, {"hosts": 1})))  # fmt: skip
        name = "warm: run true vs cold ssmfab run"
        ratio, text = TARGETS["cold"]
        cold = ("ssmfab run --no-persist", lambda: [bench.ssmfab, "run", "--no-persist", "--id", one.instance_id, "true"])
        rows.append(guarded(name, lambda: Row(name, *bench.pair(name, warm_one, cold, env=env, quick=True), ratio, text)))
        name = f"warm: run true, {FLEET} hosts vs 1"
        ratio, text = TARGETS["fleet"]
        fleet = (f"ssmfab run, warm, {FLEET} hosts",
                 lambda: [bench.ssmfab, "run", "--tag", "Role=bench", "--parallel", str(FLEET), "true"])  # fmt: skip
        rows.append(guarded(name, lambda: Row(name, *bench.pair(name, fleet, warm_one, env=env, quick=True),
                                              ratio, text, extra={"hosts": FLEET})))  # fmt: skip
        name = f"warm: get {FILE_MIB} MiB vs scp (ControlPersist)"
        ratio, text = TARGETS["get"]
        ours = ("ssmfab get, warm", lambda: [bench.ssmfab, "get", remote_name, "--dest", str(pulled), "--id", one.instance_id])
        scp = ("scp, warm master", lambda: ["scp", "-q", *through_master, f"{user_at}:{remote_name}", str(landed)])
        rows.append(guarded(name, lambda: Row(name, *bench.pair(
            name, ours, scp, env=env, before=lambda: remove(landed), check=lambda: verify(landed, digest),
        ), ratio, text, extra={"bytes": FILE_MIB * MIB})))  # fmt: skip
    remove(home / remote_name)
    for row in rows:
        row.extra |= {"plugin": "aws", "link": SETUP.describe()}
    return rows
