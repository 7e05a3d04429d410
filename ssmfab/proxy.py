"""``ssmfab-proxy``: the fast ProxyCommand for OpenSSH and everything built on it (ssh, scp, sftp, rsync, Ansible).

    Host i-* mi-*
        ProxyCommand ssmfab-proxy %h %p

It does what ``aws ssm start-session --document-name AWS-StartSSHSession`` does (StartSession, then the
session-manager-plugin with the aws CLI's calling convention) and then *becomes* the plugin (exec): no
aws process stays alive beside each connection (~60 MiB each), and it starts in a fraction of the aws
CLI's time because it loads only what StartSession needs. As under the aws CLI, nothing ends the SSM session when
ssh closes (session-manager-plugin calls no TerminateSession when its input ends): it stays open until SSM's
idle timeout. ssmfab's own commands end theirs. Settings (region, profile, endpoint, plugin, document) come from the usual ssmfab
layers: config files and SSMFAB_*/AWS_* environment variables.
"""

from __future__ import annotations

import os
import sys

from .aws import aws_context
from .config import load_settings
from .exceptions import SSMFabError
from .tunnel import plugin_command, plugin_version, start_ssh_session

USAGE = (
    "usage: ssmfab-proxy [--region R] [--profile P] [--endpoint-url URL] INSTANCE_ID [PORT]\n"
    "       (as an ssh ProxyCommand: ssmfab-proxy %h %p)"
)
#: Options and the setting each overrides.
OPTIONS = {"--region": "aws.region", "--profile": "aws.profile", "--endpoint-url": "aws.endpoint_url"}


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    overrides: dict[str, str] = {}
    while len(args) >= 2 and args[0] in OPTIONS:
        overrides[OPTIONS[args[0]]] = args[1]
        del args[:2]
    if len(args) not in (1, 2) or args[0].startswith("-"):
        print(USAGE, file=sys.stderr)
        return 2
    target = args[0]
    port = args[1] if len(args) == 2 else None
    try:
        settings = load_settings(overrides=overrides)
        version = plugin_version(settings.tunnel.plugin)
        aws = aws_context(settings)
        ssm = aws.ssm()
        request, response = start_ssh_session(settings, ssm, target, port=port)
        command, env = plugin_command(settings, aws, ssm.meta.endpoint_url, version, request, response)
    except SSMFabError as exc:
        print(f"ssmfab-proxy: {exc}", file=sys.stderr)
        return exc.exit_code
    sys.stdout.flush()
    os.execve(command[0], command, env)


if __name__ == "__main__":
    sys.exit(main())
