"""Rows for issue 19's targets: uploads through AWS's plugin (compression, striping) against scp through the same
plugin, and the library's conn.put/get against OpenSSH sftp through the stand-in tunnel.

  striped   64 MB of a release-like tarball (source text): ssmfab put vs scp -C; 64 MB random: put vs scp and
            get vs scp. Meant for AWS's plugin (SSMFAB_SANDBOX_PLUGIN): it paces each session's uploads.
  library   512 MB random: a script calling conn.put / conn.get vs sftp, through the tunnel the sandbox runs.
  deploy    the 64 MB tarball deployed to 5 hosts through AWS's plugin: ssmfab vs ssmfab held to one session per
            host and no compression (--streams 1 --no-compress: what deploy did before striping).
"""

from __future__ import annotations

import hashlib
import io
import sys
import sysconfig
import tarfile
from pathlib import Path

from .cases import PLUGIN_PROXY, Bench, Row, Side, remove, verify
from .workloads import MIB, random_file


def source_tarball(path: Path, size: int) -> str:
    """A .tar of Python's own standard library sources (text, as a release of source and assets is), cut at
    ``size`` bytes and padded by repeating: compressible like a real one. Returns its SHA-256."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for source in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
            if buffer.tell() > size:
                break
            tar.add(str(source), arcname=str(source.relative_to(source.anchor)))
    data = buffer.getvalue()
    data = (data * (size // len(data) + 1))[:size]
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def one_shot(bench: Bench) -> dict[str, str]:
    """The environment for ``ssmfab`` in these rows: no warm sessions, so each run opens its own connection as the
    baseline's does. (A keeper left behind would be ended with the run as a leftover of the measured command,
    and the next run would pay for starting another: ``get`` measured 0.60x of scp that way, 1.13x without.)"""
    return {**bench.env, "SSMFAB_PERSIST": "0"}


def striped_rows(bench: Bench, size_mb: int = 64) -> list[Row]:
    from .__main__ import guarded  # the shared row guard (a failed run is reported, not timed)

    host = bench.sandbox.hosts[0]
    home = bench.host_home(host.name)
    user_at = f"{bench.sandbox.user}@{host.instance_id}"
    ssh_opts = bench.ssh_options(PLUGIN_PROXY)
    missing = bench.missing("scp", "ssh")
    names = [f"put {size_mb} MB tarball vs scp -C", f"put {size_mb} MB random vs scp", f"get {size_mb} MB random vs scp"]
    if missing:
        return [Row(name, Side(""), Side(""), skipped=missing) for name in names]
    tarball, noise = bench.scratch / "release.tar", bench.scratch / "random.bin"
    pulled = bench.scratch / "pulled-striped"
    pulled.mkdir(exist_ok=True)
    digests = {tarball: source_tarball(tarball, size_mb * MIB), noise: random_file(noise, size_mb * MIB)}
    extra = {"bytes": size_mb * MIB}

    def put_row(local: Path, name: str, target: str, ratio: float, scp_flags: list[str]) -> Row:
        landed = home / local.name
        ours = ("ssmfab put", lambda: [bench.ssmfab, "put", str(local), local.name, "--id", host.instance_id])
        theirs = (" ".join(["scp", *scp_flags, "(ssmfab-proxy)"]),
                  lambda: ["scp", "-q", *scp_flags, *ssh_opts, str(local), f"{user_at}:{local.name}"])  # fmt: skip
        sides = bench.pair(name, ours, theirs, env=one_shot(bench), before=lambda: remove(landed),
                           check=lambda: verify(landed, digests[local]))  # fmt: skip
        return Row(name, *sides, ratio, target, extra=extra)

    rows = [
        guarded(names[0], lambda: put_row(tarball, names[0], ">= 4x scp -C's speed", 0.25, ["-C"])),
        guarded(names[1], lambda: put_row(noise, names[1], ">= 2.5x scp's speed", 0.4, [])),
    ]
    landed = home / noise.name
    ours_get = ("ssmfab get", lambda: [bench.ssmfab, "get", noise.name, "--dest", str(pulled), "--id", host.instance_id])
    their_get = ("scp (ssmfab-proxy)", lambda: ["scp", "-q", *ssh_opts, f"{user_at}:{noise.name}", str(pulled / noise.name)])
    rows.append(guarded(names[2], lambda: Row(names[2], *bench.pair(
        names[2], ours_get, their_get, env=one_shot(bench), quick=True,  # a run of about a second: see QUICK_ROUNDS
        before=lambda: remove(pulled / noise.name), check=lambda: verify(pulled / noise.name, digests[noise]),
    ), 1.0, ">= 1.0x scp's speed", extra=extra)))  # fmt: skip
    for path in (tarball, noise, home / tarball.name, landed):
        remove(path)
    return rows


LIBRARY_SCRIPT = """\
import sys, ssmfab
direction, instance, local, remote = sys.argv[1:5]
with ssmfab.Client().connect(instance) as conn:
    if direction == "put":
        conn.put(local, remote)
    else:
        conn.get(remote, local)
"""


def library_rows(bench: Bench, size_mb: int = 512) -> list[Row]:
    from .__main__ import guarded

    host = bench.sandbox.hosts[0]
    home = bench.host_home(host.name)
    user_at = f"{bench.sandbox.user}@{host.instance_id}"
    names = [f"library put {size_mb} MB vs sftp", f"library get {size_mb} MB vs sftp"]
    missing = bench.missing("sftp", "ssh")
    if missing:
        return [Row(name, Side(""), Side(""), skipped=missing) for name in names]
    local = bench.scratch / "library.bin"
    digest = random_file(local, size_mb * MIB)
    landed, pulled = home / "library.bin", bench.scratch / "library-back.bin"
    ssh_opts = bench.ssh_options(PLUGIN_PROXY)
    batch_put, batch_get = bench.scratch / "lib-put.sftp", bench.scratch / "lib-get.sftp"
    batch_put.write_text(f"put {local} library.bin\n")
    batch_get.write_text(f"get library.bin {pulled}\n")
    script = [sys.executable, "-c", LIBRARY_SCRIPT]
    extra = {"bytes": size_mb * MIB}
    rows = [guarded(names[0], lambda: Row(names[0], *bench.pair(
        names[0], ("conn.put", lambda: [*script, "put", host.instance_id, str(local), "library.bin"]),
        ("sftp (ssmfab-proxy)", lambda: ["sftp", "-q", *ssh_opts, "-b", str(batch_put), user_at]),
        before=lambda: remove(landed), check=lambda: verify(landed, digest),
    ), 1 / 0.9, ">= 0.9x sftp's speed", extra=extra))]  # fmt: skip
    rows.append(guarded(names[1], lambda: Row(names[1], *bench.pair(
        names[1], ("conn.get", lambda: [*script, "get", host.instance_id, str(pulled), "library.bin"]),
        ("sftp (ssmfab-proxy)", lambda: ["sftp", "-q", *ssh_opts, "-b", str(batch_get), user_at]),
        before=lambda: remove(pulled), check=lambda: verify(pulled, digest),
    ), 1 / 0.9, ">= 0.9x sftp's speed", extra=extra)))  # fmt: skip
    for path in (local, landed, pulled):
        remove(path)
    return rows


def deploy_row(bench: Bench, size_mb: int = 64, hosts: int = 5) -> Row:
    """``ssmfab deploy`` of the release-like tarball to ``hosts`` hosts at once, against the same command held to
    what deploy did before striping and compression (``--streams 1 --no-compress``: one paced session per host,
    every byte sent as it is). Each run starts from an empty base folder on every host."""
    from .__main__ import guarded

    name = f"deploy {size_mb} MB tarball to {hosts} hosts vs one plain session"
    chosen = bench.sandbox.hosts[:hosts]
    base = "bench-deploy"
    artifact = bench.scratch / "deploy-release.tar"
    digest = source_tarball(artifact, size_mb * MIB)
    ids = ",".join(h.instance_id for h in chosen)
    command = [bench.ssmfab, "deploy", "--id", ids, "--artifact", str(artifact), "--base-dir", base]
    folders = [bench.host_home(h.name) / base for h in chosen]

    def check() -> None:
        for folder in folders:
            verify(folder / "current" / artifact.name, digest)

    def reset() -> None:
        for folder in folders:
            remove(folder)

    ours = ("ssmfab deploy", lambda: command)
    theirs = ("ssmfab deploy --streams 1 --no-compress", lambda: [*command, "--streams", "1", "--no-compress"])
    row = guarded(name, lambda: Row(name, *bench.pair(name, ours, theirs, env=one_shot(bench), before=reset, check=check),
                                    0.25, ">= 4x faster", extra={"bytes": size_mb * MIB, "hosts": hosts}))  # fmt: skip
    reset()
    remove(artifact)
    return row
