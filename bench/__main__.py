"""ssmfab benchmark: ssmfab against OpenSSH and plain Fabric through the same SSM tunnels, side by side.

    make bench                                              # everything: 3 alternating timed runs per pair
                                                            # (12 for connect and link-model 50-vs-1), medians
    .venv/bin/python -m bench --repeat 1 --rows connect,fleet   # a quick look at two rows

It starts a sandbox fleet (moto + one real sshd per instance + the stand-in session-manager-plugin), runs
each pair of commands as whole processes a user would type, and prints one table of medians and ratios.
Each command first runs once with its process tree's memory sampled (that run also warms the host and page
cache; sampling slows what it watches, so its time is not used), then the pair alternates, timed, unwatched.
Results go to ``bench/results/`` as JSON (every run) and a PNG chart. Rows whose tools are missing (ssh,
sftp, scp, the aws CLI) are skipped with what to install; without sshd there is no sandbox and no row.

Rows:
  transfer   put and get of a random file: ssmfab vs OpenSSH sftp and scp, all through the fastest tunnel
             (StartSession + the plugin alone: ssmfab's plugin mode, ``ssmfab-proxy`` for OpenSSH)
  logs       ~100 MB of text logs over the SSM link model (setup delay, 1 MB/s, 1024-byte reads):
             ssmfab fetch-logs vs scp -r through the same link
  fleet      ``run true`` on 1, 20 and 50 hosts: ssmfab (defaults) vs Fabric ThreadingGroup with the aws CLI
             ProxyCommand; wall time and peak memory of the whole process tree; then 50 hosts against 1,
             on loopback and over the SSM link model (sessions that take as long to open as real ones)
             and 20 hosts again with a 3072-bit RSA key (what many operators carry; paramiko checks one
             per load) on both sides
  striped    issue 19's upload targets through AWS's plugin (see bench/striped.py)
  library    the library's conn.put/get of 512 MB vs sftp (see bench/striped.py)
  deploy     deploy of a 64 MB tarball to 5 hosts through AWS's plugin: ssmfab vs ssmfab held to one plain
             session per host (--streams 1 --no-compress, what deploy did before striping)
  connect    connect + ``true`` on one host: ssmfab run vs ssh with the aws CLI ProxyCommand, and two floors
             against that ssh: ssmfab's libraries imported and nothing run, and the same plus SSH straight
             to sshd (no SSM, no AWS)
  real       the same questions through AWS's own session-manager-plugin (``--plugin``, default
             $SSMFAB_SANDBOX_PLUGIN, else ../shared/session-manager-plugin/ beside the checkout), on a sandbox of
             its own: connect + ``true`` on one host; ``run true`` on 20 and 50 hosts vs Fabric ThreadingGroup
             with the aws CLI ProxyCommand and vs one ``ssh`` per host through ``ssmfab-proxy`` (xargs -P),
             with memory per host; a 16 MiB put and get vs scp through ``ssmfab-proxy`` (uploads go at the
             plugin's own pace: it reads 1024 bytes, then sleeps 1 ms); fetch-logs vs scp -r over the link
             model. Skipped, with the reason, when there is no such plugin.
  warm       warm sessions through AWS's plugin (``--plugin``, default $SSMFAB_SANDBOX_PLUGIN, else
             ../shared/session-manager-plugin/ beside the checkout), sessions that take 1 s to set up, on a
             sandbox of its own: a warm ``run true`` vs ssh through a ControlPersist master and vs a cold run,
             20 hosts vs 1, a 16 MiB get vs scp through the master, the warm command's memory (bench/warm_rows.py)
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import ssmfab
from ssmfab.exceptions import SSMFabError
from ssmfab.sandbox import HostSpec, LinkModel, Sandbox
from ssmfab.sandbox.local_fleet import real_plugin_from_env
from ssmfab.sandbox.sshd import find_sshd

from .cases import AWS_PROXY, PLUGIN_PROXY, Bench, Row, RowFailed, Side, remove, verify
from .measure import become_subreaper
from .real_plugin import NO_PLUGIN, find_plugin, parallel_ssh
from .report import machine, print_table, write_plot
from .striped import deploy_row, library_rows, striped_rows
from .warm_rows import warm_rows
from .workloads import MIB, log_tree, random_file

ROWS = ("transfer", "logs", "fleet", "connect", "library", "real", "striped", "deploy", "warm")
#: Rows that run through AWS's plugin, on a sandbox of their own.
REAL_ROWS = ("real", "striped", "deploy")
FLEET_SIZES = (1, 20, 50)
#: The fleet sizes of the rows through AWS's plugin.
REAL_FLEET_SIZES = (20, 50)
#: Ends the name of every row through AWS's plugin.
REAL = ", AWS plugin"
HERE = Path(__file__).resolve().parent


def fleet_hosts(count: int) -> list[HostSpec]:
    """n01..nNN; ``Fleet<k>=yes`` on the first k hosts for each fleet size k."""
    return [
        HostSpec(f"n{i:02d}", {"Role": "bench", **{f"Fleet{k}": "yes" for k in FLEET_SIZES if i <= k}})
        for i in range(1, count + 1)
    ]


def guarded(name: str, make: Callable[[], Row]) -> Row:
    """The row, or a row saying why it has no figures (a failed or wrong run is reported, not timed)."""
    try:
        return make()
    except RowFailed as exc:
        print(f"  {name}: FAILED: {exc}", flush=True)
        return Row(name, Side(""), Side(""), skipped=f"FAILED: {exc}")


def transfer_rows(bench: Bench, sizes: list[int], tools: tuple[str, ...] = ("sftp", "scp"), suffix: str = "") -> list[Row]:
    host = bench.sandbox.hosts[0]
    home = bench.host_home(host.name)
    user_at = f"{bench.sandbox.user}@{host.instance_id}"
    rows: list[Row] = []
    for size_mb in sizes:
        local = bench.scratch / f"random-{size_mb}.bin"
        digest = random_file(local, size_mb * MIB)
        remote_name = f"bench-{size_mb}.bin"
        landed = home / remote_name
        pulled = bench.scratch / "pulled"
        pulled.mkdir(exist_ok=True)
        batch_put = bench.scratch / "put.sftp"
        batch_put.write_text(f"put {local} {remote_name}\n")
        batch_get = bench.scratch / "get.sftp"
        batch_get.write_text(f"get {remote_name} {pulled / remote_name}\n")
        ssh_opts = bench.ssh_options(PLUGIN_PROXY)
        ours_put = ("ssmfab put", lambda: [bench.ssmfab, "put", str(local), remote_name, "--id", host.instance_id])
        ours_get = ("ssmfab get", lambda: [bench.ssmfab, "get", remote_name, "--dest", str(pulled), "--id", host.instance_id])
        baselines = {
            "sftp": (
                ("sftp (ssmfab-proxy)", lambda: ["sftp", "-q", *ssh_opts, "-b", str(batch_put), user_at]),
                ("sftp (ssmfab-proxy)", lambda: ["sftp", "-q", *ssh_opts, "-b", str(batch_get), user_at]),
            ),
            "scp": (
                ("scp (ssmfab-proxy)", lambda: ["scp", "-q", *ssh_opts, str(local), f"{user_at}:{remote_name}"]),
                ("scp (ssmfab-proxy)", lambda: ["scp", "-q", *ssh_opts, f"{user_at}:{remote_name}", str(pulled / remote_name)]),
            ),
        }  # fmt: skip
        for tool in tools:
            their_put, their_get = baselines[tool]
            target = f">= 0.9x {tool}'s speed" if size_mb >= 512 else ""
            ratio = 1 / 0.9 if size_mb >= 512 else None
            name = f"put {size_mb} MB vs {tool}{suffix}"
            missing = bench.missing(tool, "ssh")
            if missing:
                rows.append(Row(name, Side(""), Side(""), skipped=missing))
                rows.append(Row(f"get {size_mb} MB vs {tool}{suffix}", Side(""), Side(""), skipped=missing))
                continue
            extra = {"bytes": size_mb * MIB}
            rows.append(guarded(name, lambda: Row(name, *bench.pair(
                name, ours_put, their_put, before=lambda: remove(landed), check=lambda: verify(landed, digest),
            ), ratio, target, extra=extra)))  # fmt: skip
            shutil.copyfile(local, landed)
            name = f"get {size_mb} MB vs {tool}{suffix}"
            rows.append(guarded(name, lambda: Row(name, *bench.pair(
                name, ours_get, their_get,
                before=lambda: remove(pulled / remote_name), check=lambda: verify(pulled / remote_name, digest),
            ), ratio, target, extra=extra)))  # fmt: skip
        remove(landed)
        remove(local)
    return rows


def logs_row(bench: Bench, size_mb: int, suffix: str = "") -> Row:
    host = bench.sandbox.hosts[0]
    home = bench.host_home(host.name)
    name = f"fetch {size_mb} MB of logs, SSM link model{suffix}"
    missing = bench.missing("scp", "ssh")
    if missing:
        return Row(name, Side(""), Side(""), skipped=missing)
    logs = home / "logs"
    written = log_tree(logs, size_mb * 1000_000)
    dest = bench.scratch / "fetched"
    ours = ("ssmfab fetch-logs", lambda: [bench.ssmfab, "fetch-logs", host.instance_id, "--path", f"{logs}/*/*", "--dest", str(dest)])
    theirs = ("scp -r (same link)", lambda: ["scp", "-q", "-r", *bench.ssh_options(PLUGIN_PROXY), f"{bench.sandbox.user}@{host.instance_id}:{logs}", str(dest)])

    def check() -> None:
        got = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
        if got != written:
            raise RowFailed(f"{got} bytes arrived, {written} expected")

    with bench.linked() as env:
        row = guarded(name, lambda: Row(
            name, *bench.pair(name, ours, theirs, env=env, before=lambda: remove(dest), check=check),
            0.25, ">= 4x faster", extra={"bytes": written, "link": bench.link.describe()},
        ))  # fmt: skip
    remove(dest)
    remove(logs)
    return row


def fabric_group(bench: Bench, key: str, ids: list[str]) -> list[str]:
    """The baseline command: Fabric's ThreadingGroup over ``ids`` with the aws CLI ProxyCommand."""
    return [sys.executable, str(HERE / "fabric_group.py"), bench.sandbox.user, key, AWS_PROXY, *ids]


def fleet_rows(bench: Bench) -> list[Row]:
    rows: list[Row] = []
    missing = bench.missing("aws")
    for size in FLEET_SIZES:
        name = f"run true on {size} host{'s' if size > 1 else ''}"
        if missing:
            rows.append(Row(name, Side(""), Side(""), skipped=missing))
            continue
        ids = [h.instance_id for h in bench.sandbox.hosts if h.tags.get(f"Fleet{size}") == "yes"]
        ours = ("ssmfab run", lambda size=size: [bench.ssmfab, "run", "--tag", f"Fleet{size}=yes", "true"])
        theirs = ("Fabric ThreadingGroup (aws CLI proxy)", lambda ids=ids: fabric_group(bench, bench.env["SSMFAB_KEY"], ids))
        if size == 20:
            rows.append(guarded(name, lambda: Row(name, *bench.pair(name, ours, theirs), 0.25, ">= 4x faster, <= 400 MiB", 400, {"hosts": 20})))
        else:
            rows.append(guarded(name, lambda: Row(name, *bench.pair(name, ours, theirs), extra={"hosts": size})))
    ran = {r.extra.get("hosts"): r for r in rows if not r.skipped}
    if 1 in ran and 50 in ran:
        one, fifty = Side("ssmfab run, 1 host", ran[1].ours.runs, ran[1].ours.watched), ran[50].ours
        rows.append(Row("ssmfab: 50 hosts vs 1 host", fifty, one, 2.0, "<= 2x the time of 1 host", extra={"hosts": 50}))
    rows.append(rsa_key_row(bench))
    rows.append(linked_scaling_row(bench))
    return rows


def rsa_key_row(bench: Bench) -> Row:
    """20 hosts as above, both sides with a 3072-bit RSA key: paramiko reads and checks (~130 ms of CPU) the
    key file for every connection it opens with one; ssmfab reads it once per run."""
    name = "run true on 20 hosts, RSA key"
    missing = bench.missing("aws", "ssh-keygen")
    if missing:
        return Row(name, Side(""), Side(""), skipped=missing)
    key = bench.scratch / "id_rsa"
    subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "3072", "-N", "", "-f", str(key)], check=True)
    bench.sandbox.authorize_key(Path(f"{key}.pub").read_text())
    ids = [h.instance_id for h in bench.sandbox.hosts if h.tags.get("Fleet20") == "yes"]
    ours = ("ssmfab run --key (RSA)", lambda: [bench.ssmfab, "run", "--tag", "Fleet20=yes", "--key", str(key), "true"])
    theirs = ("Fabric ThreadingGroup (aws CLI proxy)", lambda: fabric_group(bench, str(key), ids))
    return guarded(name, lambda: Row(name, *bench.pair(name, ours, theirs), extra={"hosts": 20, "key": "rsa-3072"}))


def linked_scaling_row(bench: Bench) -> Row:
    """50 hosts against 1 where sessions take what real ones take to open (the link model): on loopback
    the row above measures the sandbox's own CPU (sshd, moto and the stand-in plugin share the cores)."""
    name = "ssmfab: 50 vs 1 host, SSM link model"
    one = bench.sandbox.hosts[0].instance_id
    fifty = ("ssmfab run --parallel 50, 50 hosts", lambda: [bench.ssmfab, "run", "--tag", "Fleet50=yes", "--parallel", "50", "true"])
    single = ("ssmfab run, 1 host", lambda: [bench.ssmfab, "run", "--id", one, "true"])
    with bench.linked() as env:
        return guarded(name, lambda: Row(
            name, *bench.pair(name, fifty, single, env=env, quick=True), 2.0, "<= 2x the time of 1 host",
            extra={"hosts": 50, "link": bench.link.describe()},
        ))  # fmt: skip


def connect_rows(bench: Bench) -> list[Row]:
    """ssmfab run against ssh with the aws CLI ProxyCommand, then two floors against that same ssh, each in its
    own alternation (``connect_floor.py``): ssmfab's libraries loaded as the program loads them, with nothing
    run; the same plus ssmfab's SSH connection straight to sshd, with no SSM or AWS at all. A Python client
    built on these libraries cannot connect here in less than the second."""
    host = bench.sandbox.hosts[0]
    user, key = bench.sandbox.user, bench.env["SSMFAB_KEY"]
    floor = [sys.executable, str(HERE / "connect_floor.py")]
    rows: tuple[tuple[str, tuple[str, Callable[[], list[str]]], float | None, str], ...] = (
        ("connect + true, one host", ("ssmfab run", lambda: [bench.ssmfab, "run", "--id", host.instance_id, "true"]),
         0.5, "<= 0.5x the time"),
        ("floor: libraries imported only", ("python: import ssmfab's libraries", lambda: floor), None, ""),
        ("floor: libraries + SSH, no SSM/AWS",
         ("python: libraries + SSH to sshd", lambda: [*floor, "127.0.0.1", str(host.port), user, key]), None, ""),
    )  # fmt: skip
    missing = bench.missing("ssh", "aws")
    if missing:
        return [Row(name, Side(""), Side(""), skipped=missing) for name, *_ in rows]
    baseline = ("ssh (aws CLI proxy)", lambda: ["ssh", *bench.ssh_options(AWS_PROXY), f"{user}@{host.instance_id}", "true"])
    return [
        guarded(name, lambda: Row(name, *bench.pair(name, ours, baseline, quick=True), ratio, text))
        for name, ours, ratio, text in rows
    ]


def real_connect_row(bench: Bench) -> Row:
    """connect + ``true`` on one host through AWS's plugin: ssmfab run vs ssh with the aws CLI ProxyCommand."""
    host = bench.sandbox.hosts[0]
    name = f"connect + true, one host{REAL}"
    missing = bench.missing("ssh", "aws")
    if missing:
        return Row(name, Side(""), Side(""), skipped=missing)
    ours = ("ssmfab run", lambda: [bench.ssmfab, "run", "--id", host.instance_id, "true"])
    theirs = ("ssh (aws CLI proxy)", lambda: ["ssh", *bench.ssh_options(AWS_PROXY), f"{bench.sandbox.user}@{host.instance_id}", "true"])
    return guarded(name, lambda: Row(name, *bench.pair(name, ours, theirs, quick=True)))


def real_fleet_rows(bench: Bench) -> list[Row]:
    """``run true`` on 20 and 50 hosts through AWS's plugin, against the two things a user would otherwise run:
    Fabric's ThreadingGroup with the aws CLI ProxyCommand, and one ``ssh`` per host through ``ssmfab-proxy``,
    all hosts at once (``xargs -P``). Each row also gives the memory per host (the tree's peak PSS / hosts)."""
    rows: list[Row] = []
    user = bench.sandbox.user
    for size in REAL_FLEET_SIZES:
        ids = [h.instance_id for h in bench.sandbox.hosts if h.tags.get(f"Fleet{size}") == "yes"]
        hosts_file = bench.scratch / f"hosts-{size}.txt"
        hosts_file.write_text("".join(f"{i}\n" for i in ids))
        ours = ("ssmfab run", lambda size=size: [bench.ssmfab, "run", "--tag", f"Fleet{size}=yes", "true"])
        fabric = ("Fabric ThreadingGroup (aws CLI proxy)", lambda ids=ids: fabric_group(bench, bench.env["SSMFAB_KEY"], ids))
        ssh = (f"ssh x{size} (ssmfab-proxy, xargs -P)",
               lambda size=size, hosts_file=hosts_file: parallel_ssh(bench.ssh_options(PLUGIN_PROXY), user, hosts_file, size))
        for versus, theirs, tools in (("Fabric", fabric, ("aws",)), ("ssh", ssh, ("ssh", "xargs"))):
            name = f"run true on {size} hosts vs {versus}{REAL}"
            missing = bench.missing(*tools)
            if missing:
                rows.append(Row(name, Side(""), Side(""), skipped=missing))
                continue
            row = guarded(name, lambda: Row(name, *bench.pair(name, ours, theirs), extra={"hosts": size}))
            if not row.skipped:
                row.extra["mib_per_host"] = {"ours": row.ours.peak_mib / size, "theirs": row.theirs.peak_mib / size}
            rows.append(row)
    return rows


def real_rows(
    scratch: Path, plugin: str, repeat: int, link: LinkModel, file_mb: int, log_mb: int, wanted: Sequence[str] = ("real",)
) -> list[Row]:
    """The rows through AWS's plugin (``wanted``: "real", "striped", "deploy"), on a sandbox of their own whose plugin
    it is."""
    scratch.mkdir()
    print(f"starting a {max(REAL_FLEET_SIZES)}-host sandbox with AWS's plugin ({plugin}) ...", flush=True)
    sandbox = Sandbox(scratch / "sandbox", plugin=plugin).up(fleet_hosts(max(REAL_FLEET_SIZES)))
    try:
        bench = Bench(sandbox, scratch, repeat, link)
        warm_up(bench)
        rows: list[Row] = []
        if "real" in wanted:
            rows += [real_connect_row(bench), *real_fleet_rows(bench)]
            rows += transfer_rows(bench, [file_mb], tools=("scp",), suffix=REAL)
            rows.append(logs_row(bench, log_mb, suffix=REAL))
        if "striped" in wanted:
            rows += striped_rows(bench)
        if "deploy" in wanted:
            rows.append(deploy_row(bench))
    finally:
        sandbox.down()
    for row in rows:
        row.extra["plugin"] = "aws"
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="alternating runs per pair (default 3; medians)")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {','.join(ROWS)}")
    parser.add_argument("--file-mb", default="256,512", help="random file sizes for the transfer rows (default 256,512)")
    parser.add_argument("--log-mb", type=int, default=100, help="text logs for the logs row (default 100)")
    parser.add_argument("--link", default="on", help="SSM link model of the logs row (default 'on': 1 s setup, 1 MB/s, 1024-byte reads)")
    parser.add_argument("--out", default=str(HERE / "results"), help="results folder (default bench/results)")
    parser.add_argument("--plugin", default=None,
                        help="AWS's session-manager-plugin for the real, striped and warm rows (default: $SSMFAB_SANDBOX_PLUGIN, else "
                             "../shared/session-manager-plugin/session-manager-plugin beside the checkout when there; "
                             "'' for none: those rows are skipped)")
    parser.add_argument("--real-file-mb", type=int, default=16, help="file put and got through AWS's plugin (default 16)")
    parser.add_argument("--real-log-mb", type=int, default=20, help="text logs fetched through AWS's plugin (default 20)")
    args = parser.parse_args(argv)
    rows_wanted = [r for r in args.rows.split(",") if r]
    unknown = sorted(set(rows_wanted) - set(ROWS))
    if unknown or args.repeat < 1:
        parser.error(f"unknown rows {unknown}" if unknown else "--repeat must be at least 1")
    try:
        link = LinkModel.parse(args.link)
        plugin = find_plugin(args.plugin, os.environ)
        others = [r for r in rows_wanted if r not in REAL_ROWS and r != "warm"]
        sandbox_plugin = real_plugin_from_env() if others else ""
        if others or (plugin and any(r in REAL_ROWS or r == "warm" for r in rows_wanted)):
            find_sshd()
    except (ValueError, SSMFabError) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    become_subreaper()
    started = time.time()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="ssmfab-bench-") as temp:
        scratch = Path(temp)
        if "warm" in rows_wanted:
            rows += warm_rows(scratch / "warm", plugin, args.repeat, warm_up, guarded)
        if others:
            rows += sandbox_rows(scratch / "main", sandbox_plugin, args, link, others)
        real_wanted = [r for r in rows_wanted if r in REAL_ROWS]
        if real_wanted and plugin:
            rows += real_rows(scratch / "real", plugin, args.repeat, link, args.real_file_mb, args.real_log_mb, real_wanted)
        elif real_wanted:
            print(f"  rows through AWS's plugin: skipped: {NO_PLUGIN}", flush=True)
            rows.append(Row("rows through AWS's plugin", Side(""), Side(""), skipped=NO_PLUGIN))
    info = machine()
    print()
    print_table(rows, info)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(started))
    report = {"started": stamp, "repeat": args.repeat, "machine": info, "rows": [r.as_dict() for r in rows]}
    for name in (f"bench-{stamp}.json", "latest.json"):
        (out / name).write_text(json.dumps(report, indent=2) + "\n")
    plot = write_plot(rows, out / "latest.png", info)
    print(f"\nresults: {out / 'latest.json'}" + (f", {plot}" if plot else " (no plot: pip install matplotlib)"))
    return 0


def sandbox_rows(scratch: Path, plugin: str, args: argparse.Namespace, link: LinkModel, wanted: list[str]) -> list[Row]:
    """The rows on the sandbox's usual plugin (the stand-in, or the one $SSMFAB_SANDBOX_PLUGIN names)."""
    scratch.mkdir()
    hosts = max(FLEET_SIZES) if "fleet" in wanted else 1
    print(f"starting a {hosts}-host sandbox ...", flush=True)
    sandbox = Sandbox(scratch / "sandbox", plugin=plugin).up(fleet_hosts(hosts))
    try:
        bench = Bench(sandbox, scratch, args.repeat, link)
        warm_up(bench)
        rows: list[Row] = []
        if "connect" in wanted:
            rows += connect_rows(bench)
        if "fleet" in wanted:
            rows += fleet_rows(bench)
        if "transfer" in wanted:
            rows += transfer_rows(bench, [int(s) for s in args.file_mb.split(",") if s])
        if "logs" in wanted:
            rows.append(logs_row(bench, args.log_mb))
        if "library" in wanted:
            rows += library_rows(bench)
    finally:
        sandbox.down()
    return rows


def warm_up(bench: Bench) -> None:
    """Pin every host key, fill the page cache and write ssmfab's bytecode once, so no measured run pays a
    first-time cost."""
    # pip compiles a package's bytecode when it installs it; an editable install leaves that to the first
    # run, which never comes under PYTHONDONTWRITEBYTECODE (or a read-only checkout): every measured start
    # would compile each module it loads from source (~3 ms apiece).
    compileall.compile_dir(str(Path(ssmfab.__file__).parent), quiet=1)
    done = subprocess.run(
        [bench.ssmfab, "run", "--tag", "Role=bench", "--parallel", "64", "true"], env=bench.env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"bench: warm-up failed: {done.stderr.strip()[-500:]}")
    os.sync()


if __name__ == "__main__":
    sys.exit(main())
