"""The invoke task collection: parse flags, call the library, report. No logic of its own lives here.

Shared flags (selectors, AWS, SSH, fan-out policy) come from ``cli.ssmfab_task``; see ``inv --help TASK``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from invoke.collection import Collection
from invoke.exceptions import Exit

from . import transfer
from .ansible import inventory as ansible_inventory_of
from .audit import json_line, read_entries
from .cli import Flags, audit_trail, loose_selector, notice, parse_number, record_result, run_audited, ssmfab_task
from .deploy import Deployer, artifact_bytes, check_artifact
from .doctor import run_checks
from .exceptions import ConfigError, SandboxError, SelectorError, TunnelError
from .forward import PluginForwarder, SSHForwarder, parse_forward_specs
from .fleet import run_command
from .runcommand import print_outputs, run_via_ssm
from .scopes import MultiClient, client_for
from .iam import PolicyScope, allow_policy, deny_policy
from .logs import LogFetcher, parse_duration
from .output import HostStreams, command_output, hosts_table, table
from .remoteshell import check_env
from .shell import ssh_command
from .sshconfig import config_block
from .sshconfig import install as install_block
from .targets import INSTANCE_ID, parse_selector, require_targets
from .warmshell import pty_session


def stream_count(streams: str) -> int | None:
    """--streams N as the transfer's ``streams`` (None: decide by measuring)."""
    sessions = int(streams) if streams.isdigit() and int(streams) > 0 else None
    if streams and sessions is None:
        raise ConfigError(f"--streams {streams}: give a number of SSM sessions, 1 or more")
    return sessions


def compression(compress: bool, no_compress: bool) -> bool | None:
    """--compress / --no-compress as the transfer's ``compress`` (None: decide by measuring)."""
    if compress and no_compress:
        raise ConfigError("--compress and --no-compress contradict each other; give one")
    return True if compress else False if no_compress else None


def transfer_summary(report: Any) -> dict[str, Any]:
    return {"files": report.files, "bytes": report.bytes, "wire_bytes": report.wire_bytes}


@ssmfab_task("select", "aws")
def hosts(c: Any, flags: Flags) -> None:
    """List the instances the selectors match (all of them when none is given), with SSM status."""
    client = flags.client()
    selection = client.select(flags.id, flags.name, flags.tag, asgs=flags.asg, ips=flags.ip)
    if not selection.targets and not selection.skipped:
        require_targets(selection, client.aws.profile)
    print(hosts_table(selection))
    print(f"{len(selection.targets)} reachable, {len(selection.skipped)} skipped ({selection.region})")


@ssmfab_task(
    "select", "fleet", "aws", "ssh", "session",
    help={
        "command": "shell command to run on every host",
        "env": "KEY=VALUE for the command's environment (repeatable; redacted in the audit trail)",
        "via": "ssh (default: SSH through the SSM tunnel) or run-command (SSM Run Command: no tunnels, AWS fans out)",
        "output_s3_bucket": "with --via run-command: also write full output to this S3 bucket, and read it back",
        "cloudwatch_output": "with --via run-command: also send full output to CloudWatch Logs, and read it back",
        "stdin": "forward this program's standard input (a pipe or file) to the command; one host only "
                 "(without it the command's input is closed, like ssh -n)",
    },
)  # fmt: skip
def run(
    c: Any,
    command: str,
    flags: Flags,
    env: list[str] | None = None,
    via: str = "ssh",
    output_s3_bucket: str | None = None,
    cloudwatch_output: bool = False,
    stdin: bool = False,
) -> None:
    """Run a command on every selected host: live output prefixed per host, then a per-host summary."""
    variables = parse_env(env or ())
    if via not in ("ssh", "run-command"):
        raise ConfigError(f"--via {via!r}: expected ssh or run-command")
    if via == "ssh" and (output_s3_bucket or cloudwatch_output):
        raise ConfigError("--output-s3-bucket and --cloudwatch-output go with --via run-command")
    if stdin and via != "ssh":
        raise ConfigError("--stdin works over SSH only")
    if stdin and sys.stdin.isatty():
        raise ConfigError("--stdin forwards a pipe or a file (`< file`); for a terminal use `ssmfab shell TARGET`")
    client = flags.client()
    if via == "run-command" and isinstance(client, MultiClient):
        raise ConfigError("--via run-command works in one region and account at a time; over SSH a run spans several")
    selection = flags.selection(client, tunnels=via == "ssh", head_start=via == "ssh")
    targets = require_targets(selection, client.aws.profile)
    if stdin and len(targets) > 1:
        raise SelectorError(f"--stdin goes to one host; the selectors match {len(targets)}")
    if via == "run-command":
        if variables or flags.batch:
            raise ConfigError("--env and --batch work over SSH only; Run Command paces itself with --parallel")
        result = run_via_ssm(
            client, selection.selector, targets, command, parallel=flags.policy(client).parallel,
            max_failures=flags.max_failures, timeout=flags.policy(client).timeout, output_bucket=output_s3_bucket,
            cloudwatch_output=cloudwatch_output,
        )  # fmt: skip
        if not flags.json:
            print_outputs(result, full_output=bool(output_s3_bucket or cloudwatch_output))
        with audit_trail(client) as audit:
            for host in result.results:
                record_result(audit, host, "run-command", command)
        flags.report(result, describe=lambda r: {"stdout": r.stdout, "stderr": r.stderr, "run_command_status": r.status,
                                                 "truncated": r.truncated, "document": r.document})  # fmt: skip
        return
    progress = flags.progress(len(targets))
    streams = HostStreams(targets, sys.stdout, sys.stderr, progress)

    def operation(conn: Any) -> Any:
        output: dict[str, Any] = {"hide": True} if flags.json else streams.for_target(conn.target)
        if stdin:
            output["in_stream"] = sys.stdin
        return run_command(command, env=variables, **output)(conn)

    flags.fan_out(client, targets, operation, action="run", detail=command, secrets=tuple(variables.values()),
                  describe=command_output, progress=progress)  # fmt: skip


def parse_env(pairs: Any) -> dict[str, str]:
    variables = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(f"--env {pair!r}: expected NAME=VALUE")
        variables[name] = value
    check_env(variables)
    return variables


@ssmfab_task(
    "select", "fleet", "aws", "ssh", "session",
    help={
        "local": "local file or directory",
        "remote": "remote path (an existing directory or a trailing /: put inside it)",
        "compress": "gzip streamed files on the wire (default: when the data shrinks and the link is slower than gzip)",
        "no_compress": "never compress on the wire",
        "streams": "SSM sessions a file of 16 MiB or more may use at once (default: 8 on a slow link, else 1)",
    },
)  # fmt: skip
def put(
    c: Any, local: str, remote: str, flags: Flags, compress: bool = False, no_compress: bool = False, streams: str = ""
) -> None:
    """Upload a file or a whole directory to every selected host: verified, atomic, modes kept."""
    source = Path(local).expanduser()
    if not source.exists():
        raise ConfigError(f"{local}: no such local file or directory")
    squeeze = compression(compress, no_compress)
    sessions = stream_count(streams)
    client = flags.client()
    targets = flags.targets(client, head_start=True)
    progress = flags.progress(len(targets))
    progress.expected = artifact_bytes(source) * len(targets)
    operation = lambda conn: transfer.put(  # noqa: E731
        conn, str(source), remote, recursive=source.is_dir(), compress=squeeze, streams=sessions, progress=progress.moving
    )
    flags.fan_out(
        client, targets, operation, action="put", detail=f"{source} -> {remote}", describe=transfer_summary, progress=progress
    )


@ssmfab_task(
    "select", "fleet", "aws", "ssh", "session",
    help={
        "remote": "remote file, directory or glob",
        "dest": "local folder (default .)",
        "compress": "gzip streamed files on the wire (default: when the data shrinks and the link is slower than gzip)",
        "no_compress": "never compress on the wire",
    },
)  # fmt: skip
def get(c: Any, remote: str, flags: Flags, dest: str = ".", compress: bool = False, no_compress: bool = False) -> None:
    """Download files, directories or globs: into DEST for one host, DEST/<instance-id>/ for several."""
    squeeze = compression(compress, no_compress)
    root = Path(dest).expanduser()
    transfer.check_local_folder(root)  # before any session opens
    client = flags.client()
    targets = flags.targets(client, head_start=True)

    def operation(conn: Any) -> Any:
        folder = root / conn.target.id if len(targets) > 1 else root
        folder.mkdir(parents=True, exist_ok=True)
        return transfer.get(conn, remote, str(folder) + os.sep, recursive=True, compress=squeeze)

    flags.fan_out(client, targets, operation, action="get", detail=f"{remote} -> {root}", describe=transfer_summary)


@ssmfab_task(
    "select", "fleet", "aws", "ssh", "session",
    help={
        "artifact": "file, directory or .tar.gz to ship (config deploy.artifact)",
        "base_dir": "remote base directory (config deploy.base_dir)",
        "dry_run": "print the plan per host and touch nothing",
        "compress": "gzip the artifact on the wire (default: when it shrinks and the link is slower than gzip)",
        "no_compress": "never compress on the wire",
        "streams": "SSM sessions an artifact file of 16 MiB or more may use at once (default: 8 on a slow link, else 1)",
    },
)  # fmt: skip
def deploy(
    c: Any, flags: Flags, artifact: str | None = None, base_dir: str | None = None, dry_run: bool = False,
    compress: bool = False, no_compress: bool = False, streams: str = "",
) -> None:  # fmt: skip
    """Rolling release deploy: upload, hooks, atomic switch of current, health check, rollback on failure."""
    squeeze, sessions = compression(compress, no_compress), stream_count(streams)
    client = flags.client()
    settings = client.settings.merged({"deploy.artifact": artifact, "deploy.base_dir": base_dir}).deploy
    artifact_path = check_artifact(settings)
    targets = flags.targets(client, head_start=not dry_run)
    progress = flags.progress(len(targets))
    progress.expected = artifact_bytes(artifact_path) * len(targets)
    deployer = Deployer(settings, artifact_path, notify=notice, on_bytes=progress.moving, compress=squeeze, streams=sessions)
    if dry_run:
        for target in targets:
            print("\n".join(deployer.plan(target.label)))
        return
    flags.fan_out(
        client, targets, deployer.deploy, batch=settings.batch, max_failures=settings.max_failures, progress=progress,
        on_interrupt=deployer.interrupt, action="deploy", detail=f"{deployer.artifact} -> {deployer.base}/releases/{deployer.release}",
        describe=lambda r: {"release": r.release, "previous": r.previous, "files": r.files, "bytes": r.bytes,
                            "wire_bytes": r.wire_bytes, "streams": r.streams},
    )  # fmt: skip
    if not flags.json:
        print(f"release {deployer.release} is live on {len(targets)} host(s)")


@ssmfab_task("select", "fleet", "aws", "ssh", "session", help={"base_dir": "remote base directory (config deploy.base_dir)"})
def rollback(c: Any, flags: Flags, base_dir: str | None = None) -> None:
    """Switch current back to the newest older release that passed its health check, with hooks and check."""
    client = flags.client()
    settings = client.settings.merged({"deploy.base_dir": base_dir}).deploy
    deployer = Deployer(settings, Path("."), notify=notice)
    targets = flags.targets(client, head_start=True)
    flags.fan_out(client, targets, deployer.rollback, action="rollback", detail=deployer.base, on_interrupt=deployer.interrupt,
                  describe=lambda r: {"release": r.release, "previous": r.previous})  # fmt: skip


@ssmfab_task(
    "select", "fleet", "aws", "ssh", "session",
    positional=["target"],
    help={
        "target": "an instance id, a tag (Key=Value) or a Name glob",
        "path": "remote file or glob (repeatable; default: config logs.paths and logs.paths_by_tag)",
        "since": "only files modified within this long: 30m, 2h, 1d",
        "lines": "only the last N lines of each file",
        "dest": "local folder (default ./logs): files land in DEST/<instance-id>/<remote path>",
    },
)  # fmt: skip
def fetch_logs(
    c: Any,
    target: str,
    flags: Flags,
    path: list[str] | None = None,
    since: str | None = None,
    lines: str | None = None,
    dest: str | None = None,
) -> None:
    """Fetch log files (compressed on the wire) into DEST/<instance-id>/<remote path as it was>."""
    client = flags.client()
    fetcher = LogFetcher(
        client.settings.merged({"logs.dest": dest}).logs,
        paths=tuple(path or ()),
        since=parse_duration(since) if since else None,
        lines=parse_number(lines, "lines", int) if lines else None,
    )
    targets = flags.targets(client, target, head_start=True)
    result = flags.fan_out(
        client, targets, fetcher.fetch, action="fetch-logs", detail=" ".join(path or ()) or "(configured paths)",
        describe=lambda r: {"files": r.files, "bytes": r.bytes, "wire_bytes": r.wire_bytes, "missing": r.missing},
    )  # fmt: skip
    if not flags.json:
        for host in result.succeeded:
            if host.value is not None:
                notice(host.value.summary(host.target.label))


@ssmfab_task(
    "aws", "ssh", "session", "warm",
    positional=["target"],
    help={
        "target": "an instance id, a tag (Key=Value) or a Name glob matching one host",
        "cmd": "run one command with a tty instead of a shell",
    },
)  # fmt: skip
def shell(c: Any, target: str, flags: Flags, cmd: str | None = None) -> None:
    """An interactive shell (or --cmd with a tty) through the tunnel, handing the terminal to ssh."""
    client = flags.client()
    targets = Flags(**loose_selector(target), refresh=flags.refresh).targets(client)  # type: ignore[arg-type]
    if len(targets) > 1:
        raise SelectorError(f"{target} matches {len(targets)} hosts; shell needs exactly one (use an instance id)")
    client = client_for(client, targets[0])
    key = client.ephemeral_key
    # A keeper runs this command (warm sessions): the caller's terminal is forwarded to a pty channel of the
    # warm connection instead of handed to ssh.
    terminal = getattr(type(getattr(c, "config", None)), "terminal", None)
    argv = None if terminal is not None else ssh_command(client, targets[0], cmd)

    def session() -> int:
        if terminal is not None:
            with client.connect(targets[0]) as conn:
                return pty_session(conn, cmd, terminal, sys.stdin.fileno(), sys.stdout.buffer, sys.stderr)
        if argv is None:
            with client.connect(targets[0]) as conn:
                result = conn.run(cmd, pty=True, warn=True) if cmd else conn.shell()
            return int(getattr(result, "exited", 0) or 0)
        if key is None:
            # ssh runs as a child (not exec'd) so the session is recorded with its exit code once it ends; its
            # environment carries an assumed role's credentials for the ProxyCommand.
            return subprocess.call(argv, env=client.aws.process_env())
        # An ephemeral key must reach ssh as a file; ssh runs as a child so the file goes when it exits.
        client.push_key(targets[0])
        with key.private_file() as key_file:
            return subprocess.call([argv[0], "-i", str(key_file), "-o", "IdentitiesOnly=yes", *argv[1:]], env=client.aws.process_env())

    code = run_audited(client, targets[0], "shell", cmd or "(interactive)", session)
    if code:
        raise Exit(code=code)


@ssmfab_task(
    "aws", "ssh", "session",
    positional=["target", "spec"],
    help={
        "target": "an instance id, a tag (Key=Value), a private address or a Name matching one host",
        "spec": "[LOCAL_PORT:]HOST:PORT, several separated by commas or spaces; HOST as the instance sees it "
                "(localhost: the instance itself); no LOCAL_PORT: any free port",
        "via": "ssh (default: direct-tcpip channels of the SSH connection) or ssm (no SSH key: "
               "AWS-StartPortForwardingSession[ToRemoteHost] and session-manager-plugin, a session per spec)",
    },
)  # fmt: skip
def forward(c: Any, target: str, spec: str, flags: Flags, via: str = "ssh") -> None:
    """Forward local ports to a port on one instance, or through it to a host it can reach, until Ctrl-C."""
    specs = parse_forward_specs(spec)
    if via not in ("ssh", "ssm"):
        raise ConfigError(f"--via {via!r}: expected ssh or ssm")
    client = flags.client()
    # The task's own list of head starts: the task wrapper closes a tunnel no connection took.
    one_host = Flags(**loose_selector(target), head_starts=flags.head_starts)  # type: ignore[arg-type]
    selection = one_host.selection(client, tunnels=via == "ssh", head_start=via == "ssh")
    targets = require_targets(selection, client.aws.profile)
    if len(targets) > 1:
        raise SelectorError(f"{target} matches {len(targets)} hosts; forward needs exactly one (use an instance id)")
    host = targets[0]
    client = client_for(client, host)
    forwarder = (
        SSHForwarder(client.connect(host), specs, notice) if via == "ssh"
        else PluginForwarder(client, host, specs, wait=client.settings.ssh.connect_timeout)
    )  # fmt: skip

    def session() -> int:
        with forwarder:
            for forwarding in forwarder.forwardings:
                print(forwarding.line(host.label), flush=True)
            notice("forwarding; Ctrl-C to stop")
            try:
                while forwarder.alive:
                    threading.Event().wait(1.0)  # Ctrl-C interrupts the wait
            except KeyboardInterrupt:
                notice("forwarding stopped")
                return 0
        raise TunnelError(f"{host.label}: the SSM session ended; forwarding stopped")

    run_audited(client, host, "forward", f"{spec} (via {via})", session)


@ssmfab_task(help={"since": "only entries this recent: 30m, 2h, 1d", "json": "print the entries as JSON lines"})
def audit(c: Any, since: str | None = None, json: bool = False) -> None:  # noqa: A002
    """Show the audit trail of commands and transfers ssmfab ran, as a table."""
    settings = Flags().client().settings.audit
    entries = list(read_entries(Path(settings.path), parse_duration(since) if since else None))
    if json:
        for entry in entries:
            print(json_line(entry))
        return
    rows = [
        [e.get("time", ""), e.get("instance_id", ""), e.get("name", ""), e.get("action", ""), e.get("status", ""),
         "-" if e.get("exit_code") is None else e["exit_code"], e.get("detail", "")[:60]]
        for e in entries
    ]  # fmt: skip
    print(table(["TIME (UTC)", "INSTANCE", "NAME", "ACTION", "STATUS", "EXIT", "DETAIL"], rows))
    print(f"{len(entries)} entries in {Path(settings.path).expanduser()}")


@ssmfab_task(help={"forget": "instance id whose pinned host key(s) to remove"})
def known_hosts(c: Any, forget: str | None = None) -> None:
    """List the host keys ssmfab has pinned, or forget one instance's keys."""
    store = Flags().client().known_hosts
    if forget:
        if not INSTANCE_ID.fullmatch(forget):
            raise SelectorError(
                f"known-hosts --forget {forget!r}: host keys are pinned by instance id, not by name; give the id "
                f"(`ssmfab hosts --name {forget}` shows it)"
            )
        print(f"removed {store.forget(forget)} key(s) for {forget} from {store.path}")
        return
    print(table(["INSTANCE", "TYPE", "FINGERPRINT"], store.entries()))


@ssmfab_task(
    help={
        "id": "scope to these instance ids (repeatable)",
        "tag": "scope to instances carrying this tag (Key=Value, or a bare value of the default key)",
        "account": "account id for the ARNs (default *)",
        "region": "region for the instance ARNs (default *)",
        "ephemeral_key": "include ec2-instance-connect:SendSSHPublicKey",
        "run_command": "include ssm:SendCommand and reading its results",
        "deny": "print the Deny statement that switches SSH over Session Manager off",
    }
)  # fmt: skip
def iam_policy(
    c: Any,
    id: list[str] | None = None,  # noqa: A002
    tag: list[str] | None = None,
    account: str = "*",
    region: str = "*",
    ephemeral_key: bool = False,
    run_command: bool = False,
    deny: bool = False,
) -> None:
    """Print the IAM policy JSON a user or role needs for ssmfab (or, with --deny, the switch-off)."""
    settings = Flags().client().settings
    if deny:
        print(json.dumps(deny_policy(settings.tunnel.document), indent=2))
        return
    if tag and len(tag) > 1:
        raise SelectorError("give one --tag for the policy scope (Key=Value)")
    selector = parse_selector(tags=tag or (), default_tag_key=settings.targets.default_tag_key)
    scope = PolicyScope(
        instance_ids=tuple(i for raw in id or () for i in raw.split(",") if i),
        tag=selector.tags[0] if selector.tags else None,
        region=region,
        account=account,
    )
    policy = allow_policy(scope, document=settings.tunnel.document, ephemeral_keys=ephemeral_key, run_command=run_command)
    print(json.dumps(policy, indent=2))


@ssmfab_task(
    "aws", "ssh",
    help={
        "windows": "the PowerShell ProxyCommand form for Windows' OpenSSH",
        "install": "write the block into the ssh config (between marker lines, with a backup)",
        "file": "ssh config file for --install (default ~/.ssh/config)",
        "name": "a Name tag or glob plain ssh should reach by name through ssmfab-proxy ('web-*'); repeatable",
    },
)  # fmt: skip
def ssh_config(
    c: Any, flags: Flags, windows: bool = False, install: bool = False, file: str = "~/.ssh/config", name: list[str] | None = None
) -> None:
    """Print (or --install) the ~/.ssh/config block that makes plain `ssh i-…`, `ssh web-1`, `ssh web-1.REGION`
    and `scp` go through SSM."""
    client = flags.client()
    block = config_block(client, windows=windows, names=name or ())
    if not install:
        print(block, end="")
        return
    path = Path(file).expanduser()
    backup = install_block(path, block)
    print(f"ssh config block installed in {path}" + (f" (previous version kept in {backup})" if backup else ""))


@ssmfab_task(
    "select", "aws", "ssh",
    help={
        "list": "print the whole inventory (what Ansible asks a dynamic inventory for; the default)",
        "host": "print one host's variables (Ansible need not ask: _meta holds them all)",
    },
)  # fmt: skip
def ansible_inventory(c: Any, flags: Flags, list: bool = False, host: str | None = None) -> None:  # noqa: A002
    """An Ansible dynamic inventory of the selected instances (all when no selector is given): groups by tag and
    region, each host reached by Ansible's ssh connection through ssmfab-proxy."""
    client = flags.client()
    if client.settings.ssh.ephemeral_key:
        raise ConfigError("--ephemeral-key: Ansible's ssh needs a key that outlives this command; give --key")
    selection = client.select(flags.id, flags.name, flags.tag, asgs=flags.asg, ips=flags.ip)
    for skipped in selection.skipped:
        notice(f"left out {skipped.target.label}: {skipped.reason}")
    found = ansible_inventory_of(client, selection)
    if host is not None:
        print(json.dumps(found["_meta"]["hostvars"].get(host, {}), indent=2))
        return
    print(json.dumps(found, indent=2))


@ssmfab_task("select", "aws", "ssh")
def doctor(c: Any, flags: Flags) -> None:
    """Check every prerequisite (CLI, plugin, credentials, region, document, each target's agent, IAM)."""
    client = flags.client()
    selection = None
    if flags.id or flags.name or flags.tag or flags.asg or flags.ip:
        selection = client.select(flags.id, flags.name, flags.tag, asgs=flags.asg, ips=flags.ip)
    checks = run_checks(client, selection)
    for check in checks:
        print(check.line())
    failed = [check for check in checks if check.status == "fail"]
    if failed:
        raise Exit(f"{len(failed)} check(s) failed", code=1)


def sandbox_dir(given: str | None) -> Path:
    """The sandbox folder: given, else $SSMFAB_SANDBOX_DIR, else one per user and per checkout (two checkouts'
    sandboxes must not stop each other's), named after a hash of the checkout's path."""
    import hashlib

    checkout = str(Path(__file__).resolve().parent.parent)
    key = hashlib.sha256(checkout.encode()).hexdigest()[:10]
    default = os.environ.get("SSMFAB_SANDBOX_DIR") or Path(tempfile.gettempdir()) / f"ssmfab-sandbox-{os.getuid()}-{key}"
    return Path(given or default)


SANDBOX_DIR_HELP = "sandbox folder (default $SSMFAB_SANDBOX_DIR or a temp folder per user and checkout)"


@ssmfab_task(
    help={
        "dir": SANDBOX_DIR_HELP,
        "web": "web hosts (default 3)",
        "db": "db hosts (default 1)",
        "link": "SSM link model for every session: 'on' (1 s setup, 1 MB/s, 1024-byte messages) or "
        "'setup=S,rate=BYTES_PER_S,chunk=BYTES,jitter=S'; default off (loopback speed)",
        "plugin": "AWS's session-manager-plugin to run instead of the stand-in (default $SSMFAB_SANDBOX_PLUGIN)",
    }
)
def sandbox_up(c: Any, dir: str | None = None, web: int = 3, db: int = 1, link: str = "", plugin: str = "") -> None:  # noqa: A002
    """Start the local sandbox fleet: moto + ssmmessages, real sshd per instance, a session-manager-plugin."""
    import shlex

    from .sandbox import LinkModel, Sandbox, default_hosts
    from .sandbox.local_fleet import real_plugin_from_env

    try:
        model = LinkModel.parse(link)
    except ValueError as exc:
        raise SandboxError(f"--link {exc}") from None
    root = sandbox_dir(dir)
    sandbox = Sandbox(root, link=model, plugin=plugin or real_plugin_from_env()).up(default_hosts(web=web, db=db))
    rows = [[h.instance_id, h.name, ",".join(f"{k}={v}" for k, v in sorted(h.tags.items()) if k != "Name"), f"127.0.0.1:{h.port}"] for h in sandbox.hosts]
    print(table(["ID", "NAME", "TAGS", "SSHD"], rows))
    if model.active:
        print(f"\nSSM link model: {model.describe()}")
    print(f"\nsession-manager-plugin: {sandbox.plugin or 'the sandbox stand-in'}")
    where = f" --dir {shlex.quote(str(root))}" if dir else ""
    print(f"\nsandbox up in {root}; point this shell at it with:\n    . {root / 'env.sh'}\nstop it with: inv sandbox.down{where}")


@ssmfab_task(help={"dir": SANDBOX_DIR_HELP})
def sandbox_down(c: Any, dir: str | None = None) -> None:  # noqa: A002
    """Stop the sandbox fleet and remove its folder: no process or file is left."""
    from .sandbox import Sandbox

    root = sandbox_dir(dir)
    if not root.exists():
        print(f"no sandbox at {root}")
        return
    Sandbox.load(root).down()
    print(f"sandbox at {root} stopped and removed")


@ssmfab_task(help={"dir": SANDBOX_DIR_HELP})
def sandbox_env(c: Any, dir: str | None = None) -> None:  # noqa: A002
    """Print the shell lines that point AWS and ssmfab at the sandbox (use: eval "$(ssmfab sandbox.env)")."""
    env_file = sandbox_dir(dir) / "env.sh"
    if not env_file.is_file():
        raise SandboxError(f"no sandbox at {env_file.parent}: start one with `inv sandbox.up`")
    print(env_file.read_text(), end="")


@ssmfab_task(
    help={
        "stop": "end warm connections (all of them, or those --id/--name/--tag choose) and their SSM sessions",
        "id": "instance id (repeatable)", "name": "Name tag value or glob (repeatable)",
        "tag": "Key=Value (repeatable)",
    },
)  # fmt: skip
def persist(c: Any, stop: bool = False, id: list[str] | None = None, name: list[str] | None = None, tag: list[str] | None = None) -> None:  # noqa: A002
    """List the warm connections your keepers hold (host, user, age, idle, session id), or --stop them."""
    from .warm import ask_keepers

    if stop:
        answers = ask_keepers({"op": "stop", "ids": id or [], "names": name or [], "tags": tag or []})
        closed = sum(int(a["answer"].get("closed", 0)) for a in answers)
        print(f"closed {closed} warm connection(s)")
        if not (id or name or tag):
            from .ledger import end_orphaned_sessions
            from .persist import keeper_dir

            ended = end_orphaned_sessions(keeper_dir())
            if ended:
                print(f"ended {len(ended)} SSM session(s) left open by keepers that were killed")
        return
    if id or name or tag:
        raise ConfigError("--id, --name and --tag choose what --stop ends")
    rows = []
    for answer in ask_keepers({"op": "list"}):
        for e in answer["answer"]:
            rows.append([e["instance_id"], e["name"], e["user"], f"{e['age']:.0f}s", "in use" if e["in_use"] else f"{e['idle']:.0f}s",
                         f"{e['persist']:g}s", e["session_id"], e["keeper_pid"]])  # fmt: skip
    print(table(["HOST", "NAME", "USER", "AGE", "IDLE", "PERSIST", "SESSION", "KEEPER"], rows))
    print(f"{len(rows)} warm connection(s)")


def build_collection() -> Collection:
    sandbox = Collection("sandbox")
    sandbox.add_task(sandbox_up, "up")
    sandbox.add_task(sandbox_down, "down")
    sandbox.add_task(sandbox_env, "env")
    ns = Collection(hosts, run, put, get, deploy, rollback, fetch_logs, shell, forward, known_hosts, iam_policy, ssh_config,
                    ansible_inventory, doctor, audit, persist)
    ns.add_collection(sandbox)
    return ns


ns = build_collection()
