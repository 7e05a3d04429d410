"""Interactive shells: hand the terminal to OpenSSH with ssmfab's ProxyCommand and pins.

OpenSSH handles terminals, resizing, escape sequences and agent forwarding better than any Python
emulation, so when ``ssh`` is installed ssmfab runs it (as a child, so the audit trail records the session
when it ends); the same known_hosts file keeps ssh and ssmfab in agreement about host keys.
"""

from __future__ import annotations

import shlex
import shutil
import sys

from .client import Client
from .targets import Target
from .tunnel import CLITunnelFactory, plugin_version, session_reason


#: Words of a ProxyCommand that carry ssh's own tokens (host, port), left for ssh to expand.
SSH_TOKEN_WORDS = ("%h", "%p", "portNumber=%p")


def _ssh_words(argv: list[str]) -> str:
    """``argv`` as a ProxyCommand line: each word quoted for the shell, ``%`` doubled for ssh (which expands
    ``%h``-style tokens in ProxyCommand), except the words carrying ssh's own ``%h`` and ``%p``."""
    return " ".join(part if part in SSH_TOKEN_WORDS else shlex.quote(part).replace("%", "%%") for part in argv)


def proxy_command(client: Client, reason: str = "") -> str:
    """The ProxyCommand AWS documents, completed with region, profile and endpoint (``%h``/``%p`` kept);
    ``reason``: StartSession's Reason (for one run's ssh, never in a saved ssh config)."""
    argv = CLITunnelFactory(client.settings, client.aws).argv("%h", "%p")
    return _ssh_words(argv + (["--reason", reason] if reason else []))


def plugin_proxy_command(client: Client, reason: str = "") -> str:
    """``ssmfab-proxy`` (this interpreter's) as a ProxyCommand: StartSession, then the plugin alone."""
    argv = [sys.executable, "-m", "ssmfab.proxy", *client.aws.cli_options(proxy=True), *(["--reason", reason] if reason else [])]
    return _ssh_words([*argv, "%h", "%p"])


def ssh_command(client: Client, target: Target, command: str | None = None) -> list[str] | None:
    """The ``ssh`` argv for an interactive session on ``target`` through the configured tunnel mode; None when
    OpenSSH's client (or, in cli mode, the aws CLI) is missing: the caller then opens a pty through paramiko."""
    ssh = shutil.which("ssh")
    if ssh is None:
        return None
    if client.settings.tunnel.mode == "cli":
        if shutil.which(client.settings.tunnel.aws_cli) is None:
            return None
        CLITunnelFactory(client.settings, client.aws).check()
        proxy = proxy_command(client, session_reason(client.settings))
    else:
        plugin_version(client.settings.tunnel.plugin)
        proxy = plugin_proxy_command(client, session_reason(client.settings))
    settings = client.settings
    client.known_hosts.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    argv = [
        ssh,
        "-o", f"ProxyCommand={proxy}",
        "-o", f"UserKnownHostsFile={client.known_hosts.path}",
        "-o", "HashKnownHosts=no",  # ssmfab lists and forgets pins by instance id
        "-o", f"StrictHostKeyChecking={'yes' if settings.ssh.strict_host_keys else 'accept-new'}",
        "-o", f"ConnectTimeout={int(settings.ssh.connect_timeout)}",
        "-p", str(settings.tunnel.remote_port),
        "-l", client.user_for(target),
    ]  # fmt: skip
    if settings.ssh.key and not settings.ssh.ephemeral_key:
        argv += ["-i", settings.ssh.key]
    argv += ["-t", target.id]
    if command:
        argv.append(command)
    return argv
