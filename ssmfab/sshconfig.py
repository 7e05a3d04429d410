"""The ``~/.ssh/config`` block for SSH over Session Manager, completed with ssmfab's settings, and its
idempotent installation between marker lines. Its ProxyCommand follows the tunnel mode: ``ssmfab-proxy``
in plugin mode (no aws process per connection, ~0.25 s faster to open), the aws CLI form AWS documents in
cli mode and for Windows.

In plugin mode the block also routes Name patterns (``ssmfab ssh-config --name 'web-*'``) and aws-gate style
aliases (``web-1.eu-west-1``, ``web-1.eu-west-1.prod``) through ``ssmfab-proxy``, which looks the name up.

With it, plain ``ssh i-0abc…`` and ``scp`` use the same ProxyCommand, user, key and pinned host keys as
ssmfab, so the two never disagree about a host.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .client import Client
from .config import Settings
from .exceptions import ConfigError
from .shell import plugin_proxy_command, proxy_command

BEGIN = "# >>> ssmfab: SSH over AWS Systems Manager (managed by `ssmfab ssh-config --install`) >>>"
END = "# <<< ssmfab <<<"
WINDOWS_POWERSHELL = r"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe"


#: What a Name pattern on a Host line may hold: ssh splits the line on spaces and treats ! , and quotes.
HOST_PATTERN = re.compile(r"^[A-Za-z0-9*?][A-Za-z0-9._*?-]*$")


def host_patterns(client: Client, names: Sequence[str] = (), *, first: bool = True) -> list[str]:
    """The Host patterns a block routes through SSM: instance ids (the ``first`` block only: ssh takes the first
    block that matches); with ssmfab-proxy (plugin mode) also the Name patterns given and the
    ``NAME.REGION[.PROFILE]`` aliases of the client's region and profile."""
    patterns = ["i-*", "mi-*"] if first else []
    if client.settings.tunnel.mode != "plugin":
        if names:
            raise ConfigError("Host names need ssmfab-proxy, which looks them up: use the plugin tunnel (--tunnel plugin)")
        return patterns
    for name in names:
        if not HOST_PATTERN.fullmatch(name) or name.startswith(("i-", "mi-")):
            raise ConfigError(f"--name {name!r}: a Host pattern is a Name or glob of letters, digits, . _ - * ? (e.g. 'web-*')")
    region, profile = client.aws.region, client.aws.profile
    if first:
        patterns += [*dict.fromkeys(names), f"*.{region}"]
    elif not profile:
        patterns.append(f"*.{region}")
    if profile:
        patterns.append(f"*.{region}.{profile}")
    return patterns


def config_block(client: Client, *, windows: bool = False, names: Sequence[str] = ()) -> str:
    """The managed section, marker lines included: a Host block per scope (a run over several profiles or
    regions gets one each, reached as ``NAME.REGION.PROFILE``); ``windows`` gives AWS's PowerShell
    ProxyCommand form; ``names``: Name tags (or globs) plain ssh should reach through SSM by name (plugin mode:
    ssmfab-proxy looks them up)."""
    from .scopes import MultiClient

    if windows and names:
        raise ConfigError("Host names need ssmfab-proxy, which the Windows form does not use: leave out --name")
    clients = client.clients if isinstance(client, MultiClient) else [client]
    if windows and len(clients) > 1:
        raise ConfigError("--windows writes one block: give one region and one profile")
    lines = [BEGIN]
    taken: set[str] = set()
    for index, scoped in enumerate(clients):
        hosts = ["i-*", "mi-*"] if windows else host_patterns(scoped, names, first=index == 0)
        hosts = [h for h in hosts if h not in taken]
        taken.update(hosts)
        if hosts:
            lines += host_block(scoped, hosts, windows=windows)
    lines.append(END)
    return "\n".join(lines) + "\n"


def host_block(client: Client, hosts: list[str], *, windows: bool = False) -> list[str]:
    settings = client.settings
    if windows:
        proxy = f'{WINDOWS_POWERSHELL} "{proxy_command(client)}"'
    elif settings.tunnel.mode == "plugin":
        proxy = plugin_proxy_command(client)
    else:
        proxy = f'sh -c "{proxy_command(client)}"'
    lines = [f"Host {' '.join(hosts)}", f"    User {settings.ssh.user}"]
    if settings.ssh.key:
        lines.append(f"    IdentityFile {settings.ssh.key}")
    return lines + [
        f"    UserKnownHostsFile {client.known_hosts.path}",
        "    HashKnownHosts no",
        f"    StrictHostKeyChecking {'yes' if settings.ssh.strict_host_keys else 'accept-new'}",
        f"    ProxyCommand {proxy}",
        # Keepalives well under SSM's 20-minute idle timeout; a dead session is noticed within about a minute.
        "    ServerAliveInterval 15",
        "    ServerAliveCountMax 4",
    ] + warm_lines(settings)


def warm_lines(settings: Settings) -> list[str]:
    """Warm sessions for plain ssh, scp, rsync and Ansible: one SSM session per host shared by every ssh until it
    has been idle for ssh.persist (the master's socket in ~/.ssh, the user's own folder); none when it is off."""
    persist = persist_for_ssh(settings.ssh.persist)
    if persist == "no":
        return []
    return ["    ControlMaster auto", "    ControlPath ~/.ssh/ssmfab-%C", f"    ControlPersist {persist}"]


def persist_for_ssh(persist: str) -> str:
    """ssh's ControlPersist for ``ssh.persist``: seconds, or ``no`` when warm sessions are off."""
    from .persist import parse_persist

    seconds = parse_persist(persist, "ssh.persist")
    return f"{max(1, round(seconds))}s" if seconds > 0 else "no"


def merged(existing: str, block: str) -> str:
    """``existing`` with the managed block replaced, or appended when there is none yet."""
    start, end = existing.find(BEGIN), existing.find(END)
    if start != -1 and end > start:
        return existing[:start] + block + existing[end + len(END) :].lstrip("\n")
    separator = "" if not existing or existing.endswith("\n\n") else ("\n" if existing.endswith("\n") else "\n\n")
    return existing + separator + block


def install(path: Path, block: str) -> Path | None:
    """Write the block into ``path`` atomically (temp file, then rename), keeping a backup of what was
    there. Returns the backup's path, or None when nothing changed or there was no file before."""
    path = path.expanduser()
    try:
        existing = path.read_text() if path.exists() else ""
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}; fix its permissions or pass --file") from exc
    updated = merged(existing, block)
    if updated == existing:
        return None
    backup = path.with_name(path.name + ".ssmfab-backup") if existing else None
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if backup is not None:
            shutil.copy2(path, backup)
        fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(updated)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(temp, 0o600)
            os.replace(temp, path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}; {path} is unchanged") from exc
    return backup
