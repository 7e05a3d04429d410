"""The ``~/.ssh/config`` block for SSH over Session Manager, completed with ssmfab's settings, and its
idempotent installation between marker lines. Its ProxyCommand follows the tunnel mode: ``ssmfab-proxy``
in plugin mode (no aws process per connection, ~0.25 s faster to open), the aws CLI form AWS documents in
cli mode and for Windows.

With it, plain ``ssh i-0abc…`` and ``scp`` use the same ProxyCommand, user, key and pinned host keys as
ssmfab, so the two never disagree about a host.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from .client import Client
from .exceptions import ConfigError
from .shell import plugin_proxy_command, proxy_command

BEGIN = "# >>> ssmfab: SSH over AWS Systems Manager (managed by `ssmfab ssh-config --install`) >>>"
END = "# <<< ssmfab <<<"
WINDOWS_POWERSHELL = r"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe"


def config_block(client: Client, *, windows: bool = False, hosts: str = "i-* mi-*") -> str:
    """The Host block, marker lines included; ``windows`` gives AWS's PowerShell ProxyCommand form."""
    settings = client.settings
    if windows:
        proxy = f'{WINDOWS_POWERSHELL} "{proxy_command(client)}"'
    elif settings.tunnel.mode == "plugin":
        proxy = plugin_proxy_command(client)
    else:
        proxy = f'sh -c "{proxy_command(client)}"'
    lines = [
        BEGIN,
        f"Host {hosts}",
        f"    User {settings.ssh.user}",
    ]
    if settings.ssh.key:
        lines.append(f"    IdentityFile {settings.ssh.key}")
    lines += [
        f"    UserKnownHostsFile {client.known_hosts.path}",
        "    HashKnownHosts no",
        f"    StrictHostKeyChecking {'yes' if settings.ssh.strict_host_keys else 'accept-new'}",
        f"    ProxyCommand {proxy}",
        # Keepalives well under SSM's 20-minute idle timeout; a dead session is noticed within about a minute.
        "    ServerAliveInterval 15",
        "    ServerAliveCountMax 4",
    ]
    persist = persist_for_ssh(settings.ssh.persist)
    if persist != "no":
        # Warm sessions for plain ssh, scp, rsync and Ansible: one SSM session per host shared by every ssh
        # until it has been idle for ssh.persist (the master's socket in ~/.ssh, the user's own folder).
        lines += ["    ControlMaster auto", "    ControlPath ~/.ssh/ssmfab-%C", f"    ControlPersist {persist}"]
    lines += [END]
    return "\n".join(lines) + "\n"


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
