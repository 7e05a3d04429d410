"""``ssmfab-proxy``: the fast ProxyCommand for OpenSSH and everything built on it (ssh, scp, sftp, rsync, Ansible).

    Host i-* mi-* web-* *.eu-west-1 *.eu-west-1.prod
        ProxyCommand ssmfab-proxy %h %p

A host that is not an instance id is looked up: a Name tag (``ssh web-1``), a private IP or DNS name, each
optionally qualified with region and profile as aws-gate's aliases are (``web-1.eu-west-1.prod``); it must
name exactly one running instance whose agent is Online, else one line says what matched.

It does what ``aws ssm start-session --document-name AWS-StartSSHSession`` does (StartSession, then the
session-manager-plugin with the aws CLI's calling convention) and then *becomes* the plugin (exec): no
aws process stays alive beside each connection (~60 MiB each), and it starts in a fraction of the aws
CLI's time because it loads only what StartSession needs.

Unlike the aws CLI it also ends the SSM session when ssh is done with it: session-manager-plugin calls no
TerminateSession when its input ends, so a session would otherwise stay open until SSM's idle timeout. Just
before the exec a watcher is forked off; it lets go of ssh's pipes, becomes a small shell that waits for the
plugin (the process ssh started) to exit, then runs ``ssmfab-proxy --end-session ID`` to call TerminateSession.
Settings (region, profile, endpoint, plugin, document) come from the usual ssmfab layers: config files and
SSMFAB_*/AWS_* environment variables.
"""

from __future__ import annotations

import os
import signal
import sys

from .aws import aws_context, aws_errors
from .config import load_settings
from .exceptions import SSMFabError
from .hostnames import parse_host_alias, resolve_host
from .tunnel import plugin_command, plugin_version, start_ssh_session

USAGE = (
    "usage: ssmfab-proxy [--region R] [--profile P] [--role-arn ARN] [--endpoint-url URL] [--reason TEXT] HOST [PORT]\n"
    "       HOST: an instance id, a Name tag, a private IP or DNS name, or NAME.REGION[.PROFILE]\n"
    "       (as an ssh ProxyCommand: ssmfab-proxy %h %p)"
)
#: Options and the setting each overrides.
OPTIONS = {
    "--region": "aws.region", "--profile": "aws.profile", "--endpoint-url": "aws.endpoint_url", "--role-arn": "aws.role_arn",
    "--reason": "tunnel.reason",
}  # fmt: skip
#: The watcher's own call back into ssmfab-proxy, once ssh is done: end this session.
END_SESSION = "--end-session"


#: What the session-end watcher runs: wait for the plugin (not its child, so no wait(2)) without keeping a Python
#: process alive for the whole connection (a forked copy of this one stayed at ~34 MiB once the plugin's exec
#: left its pages to it alone), then end the session with a fresh, short-lived ssmfab-proxy. GNU tail waits
#: on a pid with one process; elsewhere the shell asks every second.
WATCH_SCRIPT = 'pid=$1; shift; tail --pid="$pid" -f /dev/null 2>/dev/null || while kill -0 "$pid" 2>/dev/null; do sleep 1; done; exec "$@"'


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    overrides: dict[str, str] = {}
    while len(args) >= 2 and args[0] in OPTIONS:
        overrides[OPTIONS[args[0]]] = args[1]
        del args[:2]
    if len(args) == 2 and args[0] == END_SESSION:
        return end_session(args[1], overrides)
    if len(args) not in (1, 2) or args[0].startswith("-"):
        print(USAGE, file=sys.stderr)
        return 2
    port = args[1] if len(args) == 2 else None
    try:
        alias = parse_host_alias(args[0])
        # NAME.REGION[.PROFILE] names its own region and profile, whatever the options say.
        overrides.update({k: v for k, v in (("aws.region", alias.region), ("aws.profile", alias.profile)) if v})
        settings = load_settings(overrides=overrides)
        version = plugin_version(settings.tunnel.plugin)
        aws = aws_context(settings)
        ssm = aws.ssm()
        target = alias.host
        if not alias.is_instance_id:
            with aws_errors(f"looking up {alias.host}"):
                target = resolve_host(alias, aws.ec2(), ssm, region=aws.region, profile=aws.profile).id
        request, response = start_ssh_session(settings, ssm, target, label=alias.qualified(), port=port)
        command, env = plugin_command(settings, aws, ssm.meta.endpoint_url, version, request, response)
    except SSMFabError as exc:
        print(f"ssmfab-proxy: {exc}", file=sys.stderr)
        return exc.exit_code
    sys.stdout.flush()
    sys.stderr.flush()
    # The same region, profile, role and endpoint as this session's (an alias may have named them).
    options = [word for flag, key in OPTIONS.items() if key in overrides for word in (flag, overrides[key])]
    end_session_after_exit([sys.executable, "-m", "ssmfab.proxy", *options, END_SESSION, response["SessionId"]])
    os.execve(command[0], command, env)
    return 0  # not reached: execve replaces this process


def end_session(session_id: str, overrides: dict[str, str]) -> int:
    """``ssmfab-proxy [options] --end-session ID``: TerminateSession, as the watcher runs it once ssh is done."""
    try:
        settings = load_settings(overrides=overrides)
        with aws_errors(f"ending SSM session {session_id}", session_id):
            aws_context(settings).ssm().terminate_session(SessionId=session_id)
    except SSMFabError as exc:
        print(f"ssmfab-proxy: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


def end_session_after_exit(command: list[str]) -> None:
    """Fork a watcher that runs ``command`` once this process (about to become the plugin) has exited.

    The watcher gives up ssh's pipes at once (ssh must see EOF when the plugin ends, not when the watcher
    does), leaves ssh's process group, and ignores the hang-up and interrupt signals ssh and the terminal send
    to the proxy. It then becomes a shell that waits (WATCH_SCRIPT). A fork or exec that fails leaves the
    session to SSM's idle timeout, as under the aws CLI, rather than failing the connection."""
    watched = os.getpid()
    try:
        child = os.fork()
    except OSError:
        return
    if child:
        return
    try:
        for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_IGN)  # kept across exec: the shell, tail and the ending call ignore them
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.execv("/bin/sh", ["sh", "-c", WATCH_SCRIPT, "ssmfab-proxy-watch", str(watched), *command])
    except BaseException:  # noqa: BLE001 - nobody is left to tell; the session ends at SSM's idle timeout
        pass
    finally:
        os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
