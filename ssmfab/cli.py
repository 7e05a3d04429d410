"""What every task shares: the common flags, turning errors into one line, selecting hosts, fanning out.

invoke builds a task's flags from its function signature, so ``@ssmfab_task("select", "ssh", "fleet")``
adds the shared flags of those groups to the signature it shows invoke, and hands them to the task body
as one ``Flags`` value. Task bodies then hold only what is particular to them.
"""

from __future__ import annotations

import functools
import gc
import inspect
import io
import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from invoke.exceptions import Exit
from invoke.tasks import task

from .client import Client
from .exceptions import ConfigError, SelectorError, SSMFabError
from .audit import AuditLog
from .doctor import caller_arn
from .headstart import HeadStartTunnels
from .interrupt import CLOSE_GRACE, Interrupted, exit_now, signals_interrupt
from .fleet import FleetResult, HostResult, Policy, checked_parallel, fan_out
from .persist import parse_persist
from .output import Progress, failure_lines, report_dict, summary_table
from .targets import INSTANCE_ID, Selection, Target, parse_selector, require_targets
from .scopes import scoped_clients, single_scope
from .tunnel import session_reason
from .version import __version__

FLAG_GROUPS: dict[str, tuple[str, ...]] = {
    "select": ("id", "name", "tag", "asg", "ip"),
    "aws": ("region", "profile", "role_arn"),
    "ssh": ("user", "key", "tunnel", "ephemeral_key", "strict_host_keys"),
    "fleet": ("parallel", "batch", "max_failures", "timeout", "json", "persist", "no_persist", "refresh"),
    "session": ("reason",),
    #: A single-host task that rides warm sessions (shell): the fleet group's warm-session flags alone.
    "warm": ("persist", "no_persist", "refresh"),
}
FLAG_HELP = {
    "id": "instance id (i-… or mi-…); repeatable, or comma-separated",
    "name": "Name tag value or glob ('web-*'); repeatable",
    "tag": "Key=Value, Key=a,b (either value) or a bare value of the default tag key (Role); repeatable, keys AND",
    "asg": "Auto Scaling group name or glob (its aws:autoscaling:groupName tag); repeatable",
    "ip": "private IP (10.0.1.5, 10.0.1.*) or private DNS name (ip-10-0-1-5.ec2.internal); repeatable",
    "region": "AWS region (default: AWS_REGION / profile); several: eu-west-1,us-east-1 (one run over all)",
    "profile": "AWS profile (default: AWS_PROFILE); several: prod,staging (one run over all)",
    "role_arn": "assume this role (arn:aws:iam::ACCOUNT:role/NAME) with the profile's credentials; several: one per account",
    "user": "SSH user (default: ec2-user, or the instance's ssmfab:user tag)",
    "key": "SSH private key file",
    "tunnel": "tunnel mode: plugin (StartSession + session-manager-plugin, the default) or cli (aws ssm start-session)",
    "ephemeral_key": "generate a key for this run and push it with EC2 Instance Connect before each connection",
    "strict_host_keys": "refuse hosts whose key is not pinned yet (no trust on first use)",
    "parallel": "hosts at once (default 32, config run.parallel)",
    "batch": "rolling batches: hosts per batch or a percentage (25%); a batch finishes before the next starts",
    "max_failures": "failed hosts tolerated (count or %); past it no new host starts",
    "timeout": "seconds one host may take, connection included",
    "json": "print a JSON report instead of the summary table",
    "persist": "keep the connections warm this long after the command (90s, 10m; 0: off; config ssh.persist)",
    "no_persist": "close the connections when the command ends (no warm sessions)",
    "refresh": "look the hosts up again instead of using the warm sessions' recent answer",
    "reason": "why: StartSession's Reason (Session Manager console, CloudTrail) and the audit record's "
              "(required when audit.require_reason is set)",
}
REPEATABLE = ("id", "name", "tag", "asg", "ip", "path", "env")
SWITCHES = ("json", "ephemeral_key", "strict_host_keys", "no_persist", "refresh")


def notice(message: str) -> None:
    # One write per line: print() writes the text and its newline separately, and host threads calling
    # this at once ran their lines together.
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def startup_over() -> None:
    """The hosts are known and AWS is set up: everything alive now (modules, AWS models, settings) lives
    until exit, so keep it out of the garbage collector's scans (~10% of a 50-host run's CPU went to them),
    and let the collector run again (the ``ssmfab`` program starts with it off) for the work that follows."""
    gc.freeze()
    gc.enable()


def parse_number(value: str, flag: str, kind: type[int] | type[float]) -> Any:
    try:
        return kind(value)
    except ValueError:
        wanted = "a whole number" if kind is int else "a number of seconds"
        raise ConfigError(f"--{flag.replace('_', '-')} {value!r}: expected {wanted}") from None


#: What only an instance id looks like (``i-zzz``, ``mi-123``): never a Name glob, even when malformed.
LOOKS_LIKE_ID = re.compile(r"m?i-[0-9A-Za-z]+")
#: What only a private address looks like: an IPv4 address (or glob) or EC2's private host name.
LOOKS_LIKE_ADDRESS = re.compile(r"[0-9*?]+(\.[0-9*?]+){3}|ip-\d+-\d+-\d+-\d+(\..*)?")


def loose_selector(text: str | None) -> dict[str, tuple[str, ...]]:
    """A positional target: an instance id, ``Key=Value`` (a tag), a private IP or DNS name, or a Name glob."""
    if not text:
        return {}
    if INSTANCE_ID.fullmatch(text.split(",")[0]) or LOOKS_LIKE_ID.fullmatch(text):
        return {"id": (text,)}  # a malformed id is refused by the selector's check, not taken as a Name
    if LOOKS_LIKE_ADDRESS.fullmatch(text):
        return {"ip": (text,)}
    return {"tag": (text,)} if "=" in text else {"name": (text,)}


@dataclass(frozen=True)
class Flags:
    """The shared flags as given on the command line (None: not given, config decides)."""

    id: tuple[str, ...] = ()
    name: tuple[str, ...] = ()
    tag: tuple[str, ...] = ()
    asg: tuple[str, ...] = ()
    ip: tuple[str, ...] = ()
    region: str | None = None
    profile: str | None = None
    role_arn: str | None = None
    user: str | None = None
    key: str | None = None
    tunnel: str | None = None
    ephemeral_key: bool = False
    strict_host_keys: bool = False
    parallel: str | None = None
    batch: str | None = None
    max_failures: str | None = None
    timeout: str | None = None
    json: bool = False
    persist: str | None = None
    no_persist: bool = False
    refresh: bool = False
    #: Where Clients come from when a keeper runs the command (warm sessions: see ``keeper``); None: made here.
    clients: Callable[[dict[str, Any], Flags], Client] | None = None
    reason: str | None = None
    #: Tunnels opened while their instance was looked up (``selection(head_start=True)``), dropped with the run.
    head_starts: list[HeadStartTunnels] = field(default_factory=list, compare=False, repr=False)

    def client(self) -> Client:
        given: dict[str, Any] = {
            "user": self.user, "key": self.key, "tunnel": self.tunnel,
            "reason": self.reason,
            "ephemeral_key": self.ephemeral_key or None,
            "strict_host_keys": self.strict_host_keys or None,
            # The client's settings carry --parallel too: its AWS connection pools are sized to it.
            "parallel": self.parallel_given(),
        }  # fmt: skip
        given = {k: v for k, v in given.items() if v not in (None, "")}
        if self.clients is not None and single_scope(self.region, self.profile, self.role_arn):
            # A keeper's pooled Clients (warm sessions): one region and profile each, no assumed role.
            scope = {k: v for k, v in (("region", self.region), ("profile", self.profile)) if v}
            return self.clients({**given, **scope}, self)
        # Several regions, profiles or roles: a MultiClient, one Client per combination (see scopes).
        return scoped_clients(self.region, self.profile, self.role_arn, notify=notice, **given)

    def targets(self, client: Client, positional: str | None = None, *, head_start: bool = False) -> list[Target]:
        """Resolve the selectors and insist on at least one target; what was left out rides along (``Targets``)."""
        return require_targets(self.selection(client, positional, head_start=head_start), client.aws.profile)

    def selection(
        self, client: Client, positional: str | None = None, *, tunnels: bool = True, head_start: bool = False
    ) -> Selection:
        """Resolve the selectors (at least one is required). ``tunnels``: the hosts will be reached through SSM
        tunnels, whose checks can run while the hosts are looked up. ``head_start``: they will be reached through
        ``client.connect``, so the tunnel of a single instance id can open during the lookup (see headstart)."""
        extra = loose_selector(positional)
        ids, names, tags = (self.id + extra.get("id", ()), self.name + extra.get("name", ()), self.tag + extra.get("tag", ()))
        asgs, ips = self.asg, self.ip + extra.get("ip", ())
        if not (ids or names or tags or asgs or ips):
            raise SelectorError("no hosts selected: give an instance id, --id, --name, --tag, --asg or --ip (all hosts: --name '*')")
        # Malformed selectors are refused before anything else starts (no plugin check, no AWS call).
        parse_selector(ids, names, tags, asgs=asgs, ips=ips, default_tag_key=client.settings.targets.default_tag_key)
        session_reason(client.settings)  # so is a missing reason that audit.require_reason asks for
        if tunnels:
            client.check_ssh_key()
            client.tunnels.prepare()  # the plugin's version check, beside the AWS clients and lookups
            if head_start and len(ids) == 1 and not (names or tags or asgs or ips):
                self.start_tunnel(client, ids[0])
        selection = client.select(ids, names, tags, asgs=asgs, ips=ips, refresh=self.refresh)
        if self.clients is None:
            startup_over()  # a keeper lives on: what one command leaves alive is not there for good
        # Hosts left out are not announced here: the report lists them (skipped, or failed if named by id).
        return selection

    def start_tunnel(self, client: Client, target: str) -> None:
        """Open ``target``'s tunnel beside its lookup when it is one plain instance id. Not in a keeper (its
        connections are warm and need none), nor where the Client pools connections (it says None)."""
        if self.clients is None and INSTANCE_ID.fullmatch(target):
            started = client.start_tunnel(target)
            if started is not None:
                self.head_starts.append(started)

    def drop_head_starts(self) -> None:
        """Close the tunnels opened beside a lookup that no connection took (the instance was left out, the run
        failed or was interrupted first), waiting at most CLOSE_GRACE for each."""
        for started in self.head_starts:
            started.drop(CLOSE_GRACE)

    def parallel_given(self) -> int | None:
        """--parallel as a number of hosts, None when not given."""
        return None if self.parallel is None else checked_parallel(parse_number(self.parallel, "parallel", int))

    def policy(self, client: Client, *, batch: str | None = None, max_failures: str | None = None) -> Policy:
        """The fan-out policy from the flags given, else the task's defaults, else config. ``client`` is this
        Flags' own (``client()``), whose settings already carry --parallel."""
        return Policy(
            parallel=client.settings.run.parallel,
            batch=self.batch or batch or None,
            max_failures=self.max_failures or max_failures or None,
            timeout=None if self.timeout in (None, "") else parse_number(str(self.timeout), "timeout", float),
        )

    def fan_out(
        self,
        client: Client,
        targets: list[Target],
        operation: Callable[[Any], Any],
        *,
        action: str,
        detail: str,
        secrets: tuple[str, ...] = (),
        describe: Callable[[Any], dict[str, Any]] | None = None,
        batch: str | None = None,
        max_failures: str | None = None,
        progress: Progress | None = None,
        on_interrupt: Callable[[], Any] | None = None,
    ) -> FleetResult[Any]:
        """Run under the policy from flags (else the given defaults, else config); show progress (``progress``:
        one the hosts' live output already clears before its lines) and the summary (or the JSON report);
        raise FleetError if any host failed."""
        policy = self.policy(client, batch=batch, max_failures=max_failures)
        progress = progress or self.progress(len(targets))
        with audit_trail(client, secrets) as audit:
            started: dict[str, tuple[Target, float]] = {}
            lock = threading.Lock()

            def tracked(conn: Any) -> Any:
                with lock:
                    started[conn.target.id] = (conn.target, time.monotonic())
                return operation(conn)

            def finished(host: HostResult[Any]) -> None:
                progress.update(host)
                with lock:
                    started.pop(host.target.id, None)
                record_result(audit, host, action, detail)

            try:
                result = fan_out(targets, client.connect, tracked, policy=policy, on_result=finished, on_interrupt=on_interrupt)
            except BaseException:
                # Ctrl-C or SIGTERM: hosts whose work had started get a record too (their commands ran).
                progress.close()
                with lock:
                    unfinished = list(started.values())
                for target, since in unfinished:
                    record_interrupted(audit, target, action, detail, time.monotonic() - since)
                raise
            progress.close()
        return self.report(result, describe)

    def progress(self, hosts: int) -> Progress:
        """The status line on stderr: on a terminal, and not with --json."""
        return Progress(hosts, sys.stderr, enabled=False if self.json else None)

    def report(self, result: FleetResult[Any], describe: Callable[[Any], dict[str, Any]] | None = None) -> FleetResult[Any]:
        """The summary table (or JSON report), then FleetError if any host failed. Each cause is said once: one
        cause (however many hosts share it) goes in the error line; several get a FAILED line each, and the
        error line only names the hosts."""
        causes = failure_lines(result)
        if self.json:
            print(json.dumps(report_dict(result, describe), indent=2))
        else:
            print(summary_table(result), flush=True)
            if len(causes) > 1:
                for line in causes:
                    notice(line)
        result.raise_for_failures(detail=len(causes) <= 1)
        return result


def where(target: Target) -> dict[str, Any]:
    """The account and region an audit record names (when known)."""
    return {k: v for k, v in (("account", target.account), ("region", target.region)) if v}


def record_result(audit: AuditLog | None, host: HostResult[Any], action: str, detail: str) -> None:
    if audit is not None:
        audit.record(
            instance_id=host.target.id, name=host.target.name, **where(host.target), action=action, detail=detail,
            status=host.status, exit_code=host.exit_code, bytes=getattr(host.value, "bytes", None),
            duration=round(host.duration, 3), error=host.error,
        )  # fmt: skip


def record_interrupted(audit: AuditLog | None, target: Target, action: str, detail: str, duration: float) -> None:
    if audit is not None:
        audit.record(
            instance_id=target.id, name=target.name, **where(target), action=action, detail=detail, status="interrupted",
            exit_code=None, bytes=None, duration=round(duration, 3),
            error=f"{target.label}: interrupted while under way; a remote command may still be running",
            wait_for_caller=False,
        )  # fmt: skip


def run_audited(client: Client, target: Target, action: str, detail: str, session: Callable[[], int]) -> int:
    """Run ``session`` (one host, e.g. a shell) and record it: ok or failed with its exit code, or interrupted."""
    with audit_trail(client) as audit:
        since = time.monotonic()
        try:
            code = session()
        except BaseException:
            record_interrupted(audit, target, action, detail, time.monotonic() - since)
            raise
        if audit is not None:
            audit.record(
                instance_id=target.id, name=target.name, **where(target), action=action, detail=detail,
                status="ok" if code == 0 else "failed", exit_code=code, bytes=None,
                duration=round(time.monotonic() - since, 3), error=None if code == 0 else f"{target.label}: exited {code}",
            )  # fmt: skip
    return code


@contextmanager
def audit_trail(client: Client, secrets: tuple[str, ...] = ()) -> Iterator[AuditLog | None]:
    """The run's audit log (None when disabled), with ``secrets`` added to those redacted. A log that cannot be
    written stops the run before it starts; the caller's ARN is looked up while the run goes on."""
    settings = client.settings.audit
    if not settings.enabled:
        yield None
        return
    cloudwatch = client.aws.client("logs") if settings.cloudwatch_log_group else None
    log = AuditLog.from_settings(settings, version=__version__, cloudwatch=cloudwatch)
    log.secrets = (*log.secrets, *secrets)
    log.reason = client.settings.tunnel.reason
    log.look_up_caller(lambda: client.caller_arn(caller_arn))  # asked once per warm Client
    yield log
    # Only a run that ended normally waits for the lookup: one interrupted (Ctrl-C) or failed exits at once,
    # and the lookup's daemon thread ends with the process instead of holding it up to botocore's timeouts.
    log.settle()


#: How long a thread holding the GIL keeps it when another wants it (Python's default: 5 ms). A transfer's
#: reader and paramiko's receiving thread each give the GIL up for every read and write, then wait out the
#: other's slice to get it back. Through the sandbox, alternated runs: 512 MB get 2.16 -> 2.07 s (medians of 16;
#: 1 ms did as well in a smaller sample, 0.5 ms worse: switching then costs more than it saves), 512 MB put
#: 2.70 -> 2.56 s (6 rounds), a 50-host run unchanged within noise. Set for the command line's runs only:
#: library users keep their interpreter's.
CLI_SWITCH_INTERVAL = 0.002


def quiet_prefetch_errors(args: threading.ExceptHookArgs) -> None:
    if args.thread is not None and "_prefetch_thread" in args.thread.name:
        return  # the transfer that owns the thread reports the failure
    threading.__excepthook__(args)


#: invoke settings its core flags set (--dry, --warn-only, --echo, --hide, --pty, -T) that ssmfab's remote
#: commands do not follow: refused rather than silently ignored.
INVOKE_RUN_SETTINGS = {"dry": "--dry", "warn": "--warn-only", "echo": "--echo", "hide": "--hide", "pty": "--pty"}


def refuse_what_invoke_would_ignore(c: Any, task_name: str, given: dict[str, Any], positional: list[str]) -> None:
    """Under plain ``inv`` (the ``ssmfab`` program has no such flags and checks every word itself): refuse
    invoke's run settings, and a positional argument that is really a request for help."""
    config = getattr(c, "config", None)
    if config is None:
        return
    run = config.get("run", {}) if hasattr(config, "get") else {}
    for key, flag in INVOKE_RUN_SETTINGS.items():
        if run.get(key):
            raise Exit(f"error: invoke's {flag} (run.{key}) is not honoured by ssmfab tasks: nothing was run", code=2)
    if (config.get("timeouts", {}) or {}).get("command"):
        raise Exit("error: invoke's --command-timeout (-T) is not honoured by ssmfab tasks (use --timeout): nothing was run", code=2)
    if getattr(type(config), "ssmfab_program", False):
        return
    if given.get("persist") not in (None, "", False):
        # Warm sessions ride the ssmfab command only (see README, "Warm sessions"): inv's warm flag would do nothing.
        try:
            warm = parse_persist(given["persist"]) > 0
        except ConfigError as exc:
            raise Exit(f"error: {exc}", code=2) from None
        if warm:
            raise Exit(
                f"error: --persist: warm sessions ride the `ssmfab` command, not inv (each inv run closes its connections "
                f"when it ends): nothing was run; use `ssmfab {task_name.replace('_', '-')} …`, or leave --persist out",
                code=2,
            )
    for name in positional:
        if given.get(name) in ("--help", "-h"):
            raise Exit(f"error: {given[name]} was read as {name.upper()}: for help run `inv --help {task_name.replace('_', '-')}`", code=2)


def ssmfab_task(*groups: str, **task_kwargs: Any) -> Callable[[Callable[..., Any]], Any]:
    """``@task`` plus the shared flags of ``groups``, their help texts, and one-line errors."""
    names = [name for group in groups for name in FLAG_GROUPS[group]]

    def decorate(body: Callable[..., Any]) -> Any:
        signature = inspect.signature(body)
        takes_flags = "flags" in signature.parameters
        own = [p for p in signature.parameters.values() if p.name != "flags"]
        shared = [
            inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=False if n in SWITCHES else None)
            for n in names
        ]

        positional = task_kwargs.get("positional") or [
            p.name for p in own[1:] if p.default is inspect.Parameter.empty
        ]

        @functools.wraps(body)
        def wrapper(c: Any, *args: Any, **kwargs: Any) -> Any:
            refuse_what_invoke_would_ignore(c, body.__name__, dict(zip(positional, args)) | kwargs, positional)
            # paramiko logs each failed handshake with a traceback, and its SFTP prefetch thread dies
            # loudly when a tunnel is cut mid-download; the one-line error below says it all.
            logging.getLogger("paramiko").setLevel(logging.CRITICAL)
            threading.excepthook = quiet_prefetch_errors
            sys.setswitchinterval(CLI_SWITCH_INTERVAL)
            # A local name that is not UTF-8 (os.fsdecode's lone surrogates) is printed as its bytes, as `ls` does,
            # where Python's stdout would raise on it (a UTF-8 locale other than C.UTF-8, PYTHONIOENCODING).
            if isinstance(sys.stdout, io.TextIOWrapper):
                sys.stdout.reconfigure(errors="surrogateescape")
            given: dict[str, Any] = {n: kwargs.pop(n) for n in names if n in kwargs}
            values: dict[str, Any] = {k: tuple(v) if k in REPEATABLE else v for k, v in given.items() if v is not None}
            # A keeper (warm sessions) runs the command in a process that lives on: it supplies the Clients, and
            # an interrupted command must end the command, not the process.
            clients = getattr(type(getattr(c, "config", None)), "client_source", None)
            flags = Flags(**values, clients=clients)
            try:
                with signals_interrupt():
                    try:
                        return body(c, *args, flags=flags, **kwargs) if takes_flags else body(c, *args, **kwargs)
                    except KeyboardInterrupt as exc:
                        stopped = exc if isinstance(exc, Interrupted) else Interrupted.from_exception(exc)
                        notice(stopped.message(f"ssmfab {body.__name__.replace('_', '-')}"))
                        flags.drop_head_starts()  # before exit_now: no tunnel or session outlives the command
                        if clients is not None:
                            raise Exit(code=stopped.exit_code) from None
                        exit_now(stopped.exit_code)  # threads stuck on AWS must not hold the exit
                        raise
                    finally:
                        flags.drop_head_starts()
            except SSMFabError as exc:
                raise Exit(f"error: {exc}", code=exc.exit_code) from None
            except BrokenPipeError:
                # `ssmfab hosts | head`: the reader left; stop quietly like other Unix tools.
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                raise Exit(code=141) from None

        wrapper.__signature__ = signature.replace(parameters=[*own, *shared])  # type: ignore[attr-defined]
        all_names = [p.name for p in own] + names
        helps = {k: v for k, v in {**FLAG_HELP, **task_kwargs.pop("help", {})}.items() if k in all_names}
        iterable = [n for n in REPEATABLE if n in all_names]
        # Short flags are chosen, not generated: invoke's would make -h --ephemeral-key on `run`.
        return task(help=helps, iterable=iterable, auto_shortflags=False, **task_kwargs)(wrapper)

    return decorate

