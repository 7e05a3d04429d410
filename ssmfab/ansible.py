"""An Ansible dynamic inventory of the selected instances, each reached with Ansible's own ssh connection
through ssmfab's ProxyCommand (ssmfab-proxy in plugin mode): no S3 bucket (Ansible's aws_ssm connection copies
every module through one), OpenSSH's ControlPersist reuses each host's session across tasks, and the host keys
are ssmfab's pinned ones.

The JSON is what ``ansible-inventory --list`` prints: a group per tag (``tag_Role_web``, the aws_ec2
inventory plugin's naming), ``region_us_east_1`` per region, and ``_meta.hostvars`` with each host's
``ansible_host`` (its instance id, which the ProxyCommand takes as is), user, key and ssh arguments.
"""

from __future__ import annotations

import re
import shlex
from collections import Counter
from typing import Any

from .client import Client
from .scopes import client_for
from .shell import plugin_proxy_command, proxy_command
from .targets import Selection, Target

#: Characters Ansible accepts in a group name (others become "_", as the aws_ec2 plugin does).
GROUP_UNSAFE = re.compile(r"[^A-Za-z0-9_]")


def group_name(*parts: str) -> str:
    return GROUP_UNSAFE.sub("_", "_".join(parts))


def ssh_common_args(client: Client) -> str:
    """The ssh options Ansible adds to every ssh/scp/sftp it runs for the host, as one shell-quoted string."""
    settings = client.settings
    proxy = plugin_proxy_command(client) if settings.tunnel.mode == "plugin" else proxy_command(client)
    options = [
        f"ProxyCommand={proxy}",
        f"UserKnownHostsFile={client.known_hosts.path}",
        "HashKnownHosts=no",
        f"StrictHostKeyChecking={'yes' if settings.ssh.strict_host_keys else 'accept-new'}",
    ]
    return " ".join(f"-o {shlex.quote(option)}" for option in options)


def inventory(client: Client, selection: Selection) -> dict[str, Any]:
    """The dynamic inventory for ``selection``'s reachable targets (a host's name is its Name tag when that
    is unique in the selection, else its instance id)."""
    names = Counter(t.name for t in selection.targets if t.name)
    groups: dict[str, list[str]] = {}
    hostvars: dict[str, dict[str, Any]] = {}
    for target in selection.targets:
        host = target.name if target.name and names[target.name] == 1 else target.id
        hostvars[host] = host_vars(client_for(client, target), target)
        for key, value in sorted(target.tags.items()):
            groups.setdefault(group_name("tag", key, value), []).append(host)
        if target.region:
            groups.setdefault(group_name("region", target.region), []).append(host)
    result: dict[str, Any] = {"_meta": {"hostvars": hostvars}, "all": {"children": sorted(groups) + ["ungrouped"]}}
    result.update({name: {"hosts": hosts} for name, hosts in sorted(groups.items())})
    result["ungrouped"] = {"hosts": [h for h in hostvars if not any(h in hs for hs in groups.values())]}
    return result


def host_vars(client: Client, target: Target) -> dict[str, Any]:
    variables: dict[str, Any] = {
        "ansible_host": target.id,
        "ansible_port": client.settings.tunnel.remote_port,
        "ansible_user": client.user_for(target),
        "ansible_connection": "ssh",
        "ansible_ssh_common_args": ssh_common_args(client),
        "ec2_instance_id": target.id,
        "ec2_private_ip": target.private_ip,
        "ec2_region": target.region,
        "ec2_platform": target.platform,
        "ec2_tags": dict(target.tags),
    }
    if target.account:
        variables["ec2_account"] = target.account
    if client.settings.ssh.key:
        variables["ansible_ssh_private_key_file"] = client.settings.ssh.key
    return variables
