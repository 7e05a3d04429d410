"""The invoke task collection: parse flags, call the library, report. No logic of its own lives here.

Every task that touches instances accepts the selectors (``--id``, ``--name``, ``--tag``, all repeatable)
and ``--region``, ``--profile``, ``--user``, ``--key``, ``--tunnel``.
"""

from __future__ import annotations

import functools
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from invoke.collection import Collection
from invoke.exceptions import Exit
from invoke.tasks import task

from .client import Client
from .exceptions import SelectorError, SSMFabError
from .fleet import fan_out, run_command
from .output import HostStreams, hosts_table, skipped_lines, summary_table, table
from .targets import require_targets

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
        try:
            return body(*args, **kwargs)
        except SSMFabError as exc:
            raise Exit(f"error: {exc}", code=exc.exit_code) from None

    return wrapper  # type: ignore[return-value]


def notice(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def make_client(**flags: Any) -> Client:
    return Client(notify=notice, **{k: v for k, v in flags.items() if v not in (None, "")})


@task(iterable=SELECTORS, help=SELECTOR_HELP)
@user_errors
def hosts(
    c: Any,
    id: list[str] | None = None,  # noqa: A002 - the flag users type is --id
    name: list[str] | None = None,
    tag: list[str] | None = None,
    region: str | None = None,
    profile: str | None = None,
    user: str | None = None,
    key: str | None = None,
    tunnel: str | None = None,
) -> None:
    """List the instances the selectors match (all of them when none is given), with SSM status."""
    client = make_client(region=region, profile=profile, user=user, key=key, tunnel=tunnel)
    selection = client.select(id or (), name or (), tag or ())
    if not selection.targets and not selection.skipped:
        require_targets(selection, client.aws.profile)
    print(hosts_table(selection))
    print(f"{len(selection.targets)} reachable, {len(selection.skipped)} skipped ({client.aws.region})")


@task(
    iterable=SELECTORS,
    help={**SELECTOR_HELP, "command": "shell command to run on every host", "parallel": "hosts at once (default 10)"},
)
@user_errors
def run(
    c: Any,
    command: str,
    id: list[str] | None = None,  # noqa: A002
    name: list[str] | None = None,
    tag: list[str] | None = None,
    parallel: str | None = None,
    region: str | None = None,
    profile: str | None = None,
    user: str | None = None,
    key: str | None = None,
    tunnel: str | None = None,
) -> None:
    """Run a command on every selected host, output prefixed per host, then a per-host summary."""
    if not (id or name or tag):
        raise SelectorError("run needs a selector: --id, --name or --tag (all hosts: --name '*')")
    client = make_client(region=region, profile=profile, user=user, key=key, tunnel=tunnel, parallel=parallel)
    selection = client.select(id or (), name or (), tag or ())
    for line in skipped_lines(selection):
        notice(line)
    targets = require_targets(selection, client.aws.profile)
    streams = HostStreams(targets, sys.stdout, sys.stderr)

    def operation(conn: Any) -> Any:
        return run_command(command, **streams.for_target(conn.target))(conn)

    result = fan_out(targets, client.connect, operation, parallel=client.settings.run.parallel)
    print(summary_table(result), flush=True)
    for failure in result.failed:
        notice(f"FAILED {failure.error}")
    result.raise_for_failures()


@task(help={"forget": "instance id whose pinned host key(s) to remove"})
@user_errors
def known_hosts(c: Any, forget: str | None = None) -> None:
    """List the host keys ssmfab has pinned, or forget one instance's keys."""
    client = make_client()
    store = client.known_hosts
    if forget:
        removed = store.forget(forget)
        print(f"removed {removed} key(s) for {forget} from {store.path}")
        return
    print(table(["INSTANCE", "TYPE", "FINGERPRINT"], store.entries()))


def default_sandbox_dir() -> Path:
    return Path(os.environ.get("SSMFAB_SANDBOX_DIR") or Path(tempfile.gettempdir()) / f"ssmfab-sandbox-{os.getuid()}")


@task(help={"dir": "sandbox folder (default $SSMFAB_SANDBOX_DIR or a per-user temp folder)", "web": "web hosts", "db": "db hosts"})
@user_errors
def sandbox_up(c: Any, dir: str | None = None, web: int = 3, db: int = 1) -> None:  # noqa: A002
    """Start the local sandbox fleet: moto server, real sshd per instance, stand-in session-manager-plugin."""
    from .sandbox import Sandbox, default_hosts

    root = Path(dir) if dir else default_sandbox_dir()
    sandbox = Sandbox(root)
    sandbox.up(default_hosts(web=web, db=db))
    print(table(["ID", "NAME", "TAGS", "SSHD"], [[h.instance_id, h.name, ",".join(f"{k}={v}" for k, v in sorted(h.tags.items()) if k != "Name"), f"127.0.0.1:{h.port}"] for h in sandbox.hosts]))
    print(f"\nsandbox up in {root}; point this shell at it with:\n    . {root / 'env.sh'}\nstop it with: inv sandbox.down")


@task(help={"dir": "sandbox folder"})
@user_errors
def sandbox_down(c: Any, dir: str | None = None) -> None:  # noqa: A002
    """Stop the sandbox fleet and remove its folder: no process or file is left."""
    from .sandbox import Sandbox

    root = Path(dir) if dir else default_sandbox_dir()
    if not root.exists():
        print(f"no sandbox at {root}")
        return
    Sandbox.load(root).down()
    print(f"sandbox at {root} stopped and removed")


@task(help={"dir": "sandbox folder"})
@user_errors
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
    ns = Collection(hosts, run, known_hosts)
    ns.add_collection(sandbox)
    return ns


ns = build_collection()
