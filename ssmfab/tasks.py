"""The invoke task collection: parse flags, call the library, report. No logic of its own lives here.

Every task that touches instances accepts the selectors (``--id``, ``--name``, ``--tag``, all repeatable)
and ``--region``, ``--profile``, ``--user``, ``--key``, ``--tunnel``.
"""

from __future__ import annotations

import functools
import inspect
import json as jsonlib
import logging
import os
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from invoke.collection import Collection
from invoke.exceptions import Exit
from invoke.tasks import task

from . import transfer
from .client import Client
from .deploy import Deployer, check_artifact
from .exceptions import ConfigError, SelectorError, SSMFabError
from .fleet import FleetResult, Policy, fan_out, run_command
from .logs import LogFetcher, parse_duration
from .output import HostStreams, Progress, hosts_table, report_dict, skipped_lines, summary_table, table
from .shell import ssh_command
from .targets import INSTANCE_ID, Target, require_targets

F = TypeVar("F", bound=Callable[..., Any])

SELECTOR_HELP = {
    "id": "instance id (i-… or mi-…); repeatable, or comma-separated",
    "name": "Name tag value or glob ('web-*'); repeatable",
    "tag": "Key=Value, Key=a,b (either value) or a bare value of the default tag key (Role); repeatable, keys AND",
    "region": "AWS region (default: AWS_REGION / profile)",
    "profile": "AWS profile (default: AWS_PROFILE)",
    "user": "SSH user (default: ec2-user, or the instance's ssmfab:user tag)",
    "key": "SSH private key file",
    "tunnel": "tunnel mode: cli (aws ssm start-session) or plugin (session-manager-plugin directly)",
}
SELECTORS = ["id", "name", "tag"]


def user_errors(body: F) -> F:
    """Turn ssmfab's errors into one stderr line and the error's exit code, never a traceback."""

    @functools.wraps(body)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        # paramiko logs each failed handshake with a traceback, and its SFTP prefetch thread dies loudly
        # when a tunnel is cut mid-download; the one-line error below says it all.
        logging.getLogger("paramiko").setLevel(logging.CRITICAL)
        threading.excepthook = quiet_prefetch_errors
        try:
            return body(*args, **kwargs)
        except SSMFabError as exc:
            raise Exit(f"error: {exc}", code=exc.exit_code) from None

    return wrapper  # type: ignore[return-value]


def ssmfab_task(**task_kwargs: Any) -> Callable[[F], Any]:
    """``@task`` with user_errors, the shared help texts for the flags the body has, and repeatable
    selector flags."""

    def decorate(body: F) -> Any:
        params = inspect.signature(body).parameters
        shared = {**SELECTOR_HELP, **FLEET_HELP}
        helps = {k: v for k, v in {**shared, **task_kwargs.pop("help", {})}.items() if k in params}
        iterable = [name for name in ("id", "name", "tag", "path") if name in params]
        return task(help=helps, iterable=iterable, **task_kwargs)(user_errors(body))

    return decorate


def quiet_prefetch_errors(args: threading.ExceptHookArgs) -> None:
    if args.thread is not None and "_prefetch_thread" in args.thread.name:
        return  # the transfer that owns the thread reports the failure
    threading.__excepthook__(args)


def notice(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


FLEET_HELP = {
    "parallel": "hosts at once (default 10, config run.parallel)",
    "batch": "rolling batches: hosts per batch or a percentage (25%); a batch finishes before the next starts",
    "max_failures": "failed hosts tolerated (count or %); past it no new host starts",
    "timeout": "seconds one host may take, connection included",
    "json": "print a JSON report instead of the summary table",
}


def session(**flags: Any) -> Client:
    """A Client from config plus the flags actually given."""
    return Client(notify=notice, **{k: v for k, v in flags.items() if v not in (None, "")})


def loose_selector(text: str | None) -> dict[str, list[str]]:
    """A positional target: an instance id, ``Key=Value`` (a tag) or a Name glob."""
    if not text:
        return {}
    if INSTANCE_ID.match(text.split(",")[0]):
        return {"ids": [text]}
    if "=" in text:
        return {"tags": [text]}
    return {"names": [text]}


def select(
    client: Client,
    id: list[str] | None,  # noqa: A002
    name: list[str] | None,
    tag: list[str] | None,
    positional: str | None = None,
    *,
    required: bool = True,
) -> list[Target]:
    """Resolve the selectors, print what was skipped and why, and insist on at least one target."""
    extra = loose_selector(positional)
    ids, names, tags = [*(id or ()), *extra.get("ids", ())], [*(name or ()), *extra.get("names", ())], [*(tag or ()), *extra.get("tags", ())]
    if required and not (ids or names or tags):
        raise SelectorError("no hosts selected: give an instance id, --id, --name or --tag (all hosts: --name '*')")
    selection = client.select(ids, names, tags)
    for line in skipped_lines(selection):
        notice(line)
    return require_targets(selection, client.aws.profile)


def fleet(
    client: Client,
    targets: list[Target],
    operation: Callable[[Any], Any],
    *,
    parallel: str | None = None,
    batch: str | None = None,
    max_failures: str | None = None,
    timeout: str | None = None,
    json_report: bool = False,
    describe: Callable[[Any], dict[str, Any]] | None = None,
) -> FleetResult[Any]:
    """Fan out with the policy from flags/config, show progress and the summary (or JSON), then fail loudly."""
    policy = Policy(
        parallel=client.settings.run.parallel if parallel is None else parse_int(parallel, "parallel"),
        batch=batch or None,
        max_failures=max_failures or None,
        timeout=None if timeout in (None, "") else parse_float(str(timeout), "timeout"),
    )
    progress = Progress(len(targets), sys.stderr, enabled=None if not json_report else False)
    result = fan_out(targets, client.connect, operation, policy=policy, on_result=progress.update)
    progress.close()
    if json_report:
        print(jsonlib.dumps(report_dict(result, describe), indent=2))
    else:
        print(summary_table(result), flush=True)
        for failure in result.failed:
            notice(f"FAILED {failure.error}")
    result.raise_for_failures()
    return result


def parse_int(value: str, flag: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"--{flag.replace('_', '-')} {value!r}: expected a whole number") from None


def parse_float(value: str, flag: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise ConfigError(f"--{flag.replace('_', '-')} {value!r}: expected a number of seconds") from None


@ssmfab_task()
def hosts(
    c: Any,
    id: list[str] | None = None,  # noqa: A002 - the flag users type is --id
    name: list[str] | None = None,
    tag: list[str] | None = None,
    region: str | None = None,
    profile: str | None = None,
) -> None:
    """List the instances the selectors match (all of them when none is given), with SSM status."""
    client = session(region=region, profile=profile)
    selection = client.select(id or (), name or (), tag or ())
    if not selection.targets and not selection.skipped:
        require_targets(selection, client.aws.profile)
    print(hosts_table(selection))
    print(f"{len(selection.targets)} reachable, {len(selection.skipped)} skipped ({client.aws.region})")


@ssmfab_task(help={"command": "shell command to run on every host"})
def run(
    c: Any,
    command: str,
    id: list[str] | None = None,  # noqa: A002
    name: list[str] | None = None,
    tag: list[str] | None = None,
    parallel: str | None = None,
    batch: str | None = None,
    max_failures: str | None = None,
    timeout: str | None = None,
    json: bool = False,
    region: str | None = None,
    profile: str | None = None,
    user: str | None = None,
    key: str | None = None,
    tunnel: str | None = None,
) -> None:
    """Run a command on every selected host: live output prefixed per host, then a per-host summary."""
    client = session(region=region, profile=profile, user=user, key=key, tunnel=tunnel)
    targets = select(client, id, name, tag)
    streams = HostStreams(targets, sys.stdout, sys.stderr)

    def operation(conn: Any) -> Any:
        hide = {"hide": True} if json else streams.for_target(conn.target)
        return run_command(command, **hide)(conn)

    fleet(client, targets, operation, parallel=parallel, batch=batch, max_failures=max_failures, timeout=timeout,
          json_report=json, describe=lambda r: {"stdout": r.stdout, "stderr": r.stderr})  # fmt: skip


@ssmfab_task(help={"local": "local file or directory", "remote": "remote path (a directory: put inside it)"})
def put(
    c: Any,
    local: str,
    remote: str,
    id: list[str] | None = None,  # noqa: A002
    name: list[str] | None = None,
    tag: list[str] | None = None,
    parallel: str | None = None,
    json: bool = False,
    region: str | None = None,
    profile: str | None = None,
    user: str | None = None,
    key: str | None = None,
    tunnel: str | None = None,
) -> None:
    """Upload a file or a whole directory to every selected host: verified, atomic, modes kept."""
    source = Path(local).expanduser()
    if not source.exists():
        raise ConfigError(f"{local}: no such local file or directory")
    client = session(region=region, profile=profile, user=user, key=key, tunnel=tunnel)
    targets = select(client, id, name, tag)
    fleet(client, targets, lambda conn: transfer.put(conn, str(source), remote, recursive=source.is_dir()),
          parallel=parallel, json_report=json, describe=transfer_summary)  # fmt: skip


@ssmfab_task(help={"remote": "remote file, directory or glob", "dest": "local folder (default .)"})
def get(
    c: Any,
    remote: str,
    dest: str = ".",
    id: list[str] | None = None,  # noqa: A002
    name: list[str] | None = None,
    tag: list[str] | None = None,
    parallel: str | None = None,
    json: bool = False,
    region: str | None = None,
    profile: str | None = None,
    user: str | None = None,
    key: str | None = None,
    tunnel: str | None = None,
) -> None:
    """Download files, directories or globs: into DEST for one host, DEST/<instance-id>/ for several."""
    client = session(region=region, profile=profile, user=user, key=key, tunnel=tunnel)
    targets = select(client, id, name, tag)
    root = Path(dest).expanduser()

    def operation(conn: Any) -> Any:
        folder = root / conn.target.id if len(targets) > 1 else root
        folder.mkdir(parents=True, exist_ok=True)
        return transfer.get(conn, remote, str(folder) + os.sep, recursive=True)

    fleet(client, targets, operation, parallel=parallel, json_report=json, describe=transfer_summary)


def transfer_summary(report: Any) -> dict[str, Any]:
    return {"files": report.files, "bytes": report.bytes}


@ssmfab_task(help={
        "artifact": "file, directory or .tar.gz to ship (config deploy.artifact)",
        "base_dir": "remote base directory (config deploy.base_dir)",
        "dry_run": "print the plan per host and touch nothing",
    })
def deploy(
    c: Any,
    id: list[str] | None = None,  # noqa: A002
    name: list[str] | None = None,
    tag: list[str] | None = None,
    artifact: str | None = None,
    base_dir: str | None = None,
    batch: str | None = None,
    max_failures: str | None = None,
    parallel: str | None = None,
    timeout: str | None = None,
    dry_run: bool = False,
    json: bool = False,
    region: str | None = None,
    profile: str | None = None,
    user: str | None = None,
    key: str | None = None,
    tunnel: str | None = None,
) -> None:
    """Rolling release deploy: upload, hooks, atomic switch of current, health check, rollback on failure."""
    client = session(region=region, profile=profile, user=user, key=key, tunnel=tunnel)
    settings = client.settings.merged({"deploy.artifact": artifact, "deploy.base_dir": base_dir}).deploy
    deployer = Deployer(settings, check_artifact(settings), notify=notice)
    targets = select(client, id, name, tag)
    if dry_run:
        for target in targets:
            print("\n".join(deployer.plan(target.label)))
        return
    fleet(client, targets, deployer.deploy, parallel=parallel, batch=batch or settings.batch,
          max_failures=max_failures or settings.max_failures, timeout=timeout, json_report=json,
          describe=lambda r: {"release": r.release, "previous": r.previous, "files": r.files, "bytes": r.bytes})  # fmt: skip
    if not json:
        print(f"release {deployer.release} is live on {len(targets)} host(s)")


@ssmfab_task(help={"base_dir": "remote base directory (config deploy.base_dir)"})
def rollback(
    c: Any,
    id: list[str] | None = None,  # noqa: A002
    name: list[str] | None = None,
    tag: list[str] | None = None,
    base_dir: str | None = None,
    parallel: str | None = None,
    json: bool = False,
    region: str | None = None,
    profile: str | None = None,
    user: str | None = None,
    key: str | None = None,
    tunnel: str | None = None,
) -> None:
    """Switch current back one release on every selected host."""
    client = session(region=region, profile=profile, user=user, key=key, tunnel=tunnel)
    settings = client.settings.merged({"deploy.base_dir": base_dir}).deploy
    deployer = Deployer(settings, Path("."), notify=notice)
    targets = select(client, id, name, tag)
    fleet(client, targets, deployer.rollback, parallel=parallel, json_report=json,
          describe=lambda r: {"release": r.release, "previous": r.previous})  # fmt: skip


@ssmfab_task(positional=["target"],
    help={
        "target": "an instance id, a tag (Key=Value) or a Name glob",
        "path": "remote file or glob (repeatable; default: config logs.paths and logs.paths_by_tag)",
        "since": "only files modified within this long: 30m, 2h, 1d",
        "lines": "only the last N lines of each file",
        "dest": "local folder (default ./logs): files land in DEST/<instance-id>/<remote path>",
    })
def fetch_logs(
    c: Any,
    target: str,
    path: list[str] | None = None,
    since: str | None = None,
    lines: str | None = None,
    dest: str | None = None,
    id: list[str] | None = None,  # noqa: A002
    name: list[str] | None = None,
    tag: list[str] | None = None,
    parallel: str | None = None,
    json: bool = False,
    region: str | None = None,
    profile: str | None = None,
    user: str | None = None,
    key: str | None = None,
    tunnel: str | None = None,
) -> None:
    """Fetch log files (compressed on the wire) into DEST/<instance-id>/<remote path as it was>."""
    client = session(region=region, profile=profile, user=user, key=key, tunnel=tunnel)
    log_settings = client.settings.merged({"logs.dest": dest}).logs
    fetcher = LogFetcher(
        log_settings,
        paths=tuple(path or ()),
        since=parse_duration(since) if since else None,
        lines=parse_int(lines, "lines") if lines else None,
    )
    targets = select(client, id, name, tag, target)
    result = fleet(client, targets, fetcher.fetch, parallel=parallel, json_report=json,
                   describe=lambda r: {"files": r.files, "bytes": r.bytes, "wire_bytes": r.wire_bytes, "missing": r.missing})  # fmt: skip
    if not json:
        for host in result.succeeded:
            if host.value is not None:
                notice(host.value.summary(host.target.label))


@ssmfab_task(positional=["target"],
    help={
        "target": "an instance id, a tag (Key=Value) or a Name glob matching one host",
        "cmd": "run one command with a tty instead of a shell",
    })
def shell(
    c: Any,
    target: str,
    cmd: str | None = None,
    region: str | None = None,
    profile: str | None = None,
    user: str | None = None,
    key: str | None = None,
) -> None:
    """An interactive shell (or --cmd with a tty) through the tunnel, handing the terminal to ssh."""
    client = session(region=region, profile=profile, user=user, key=key)
    targets = select(client, None, None, None, target)
    if len(targets) > 1:
        raise SelectorError(f"{target} matches {len(targets)} hosts; shell needs exactly one (use an instance id)")
    argv = ssh_command(client, targets[0], cmd)
    if argv is None:
        with client.connect(targets[0]) as conn:
            conn.run(cmd, pty=True) if cmd else conn.shell()
        return
    os.execvp(argv[0], argv)


@ssmfab_task(help={"forget": "instance id whose pinned host key(s) to remove"})
def known_hosts(c: Any, forget: str | None = None) -> None:
    """List the host keys ssmfab has pinned, or forget one instance's keys."""
    client = session()
    store = client.known_hosts
    if forget:
        removed = store.forget(forget)
        print(f"removed {removed} key(s) for {forget} from {store.path}")
        return
    print(table(["INSTANCE", "TYPE", "FINGERPRINT"], store.entries()))


def default_sandbox_dir() -> Path:
    return Path(os.environ.get("SSMFAB_SANDBOX_DIR") or Path(tempfile.gettempdir()) / f"ssmfab-sandbox-{os.getuid()}")


@ssmfab_task(help={"dir": "sandbox folder (default $SSMFAB_SANDBOX_DIR or a per-user temp folder)", "web": "web hosts", "db": "db hosts"})
def sandbox_up(c: Any, dir: str | None = None, web: int = 3, db: int = 1) -> None:  # noqa: A002
    """Start the local sandbox fleet: moto server, real sshd per instance, stand-in session-manager-plugin."""
    from .sandbox import Sandbox, default_hosts

    root = Path(dir) if dir else default_sandbox_dir()
    sandbox = Sandbox(root)
    sandbox.up(default_hosts(web=web, db=db))
    print(table(["ID", "NAME", "TAGS", "SSHD"], [[h.instance_id, h.name, ",".join(f"{k}={v}" for k, v in sorted(h.tags.items()) if k != "Name"), f"127.0.0.1:{h.port}"] for h in sandbox.hosts]))
    print(f"\nsandbox up in {root}; point this shell at it with:\n    . {root / 'env.sh'}\nstop it with: inv sandbox.down")


@ssmfab_task(help={"dir": "sandbox folder"})
def sandbox_down(c: Any, dir: str | None = None) -> None:  # noqa: A002
    """Stop the sandbox fleet and remove its folder: no process or file is left."""
    from .sandbox import Sandbox

    root = Path(dir) if dir else default_sandbox_dir()
    if not root.exists():
        print(f"no sandbox at {root}")
        return
    Sandbox.load(root).down()
    print(f"sandbox at {root} stopped and removed")


@ssmfab_task(help={"dir": "sandbox folder"})
def sandbox_env(c: Any, dir: str | None = None) -> None:  # noqa: A002
    """Print the shell lines that point AWS and ssmfab at the sandbox (use: eval "$(ssmfab sandbox.env)")."""
    root = Path(dir) if dir else default_sandbox_dir()
    env_file = root / "env.sh"
    if not env_file.is_file():
        raise SSMFabError(f"no sandbox at {root}: start one with `inv sandbox.up`")
    print(env_file.read_text(), end="")


def build_collection() -> Collection:
    sandbox = Collection("sandbox")
    sandbox.add_task(sandbox_up, "up")
    sandbox.add_task(sandbox_down, "down")
    sandbox.add_task(sandbox_env, "env")
    ns = Collection(hosts, run, put, get, deploy, rollback, fetch_logs, shell, known_hosts)
    ns.add_collection(sandbox)
    return ns


ns = build_collection()
