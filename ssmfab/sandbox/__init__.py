"""The sandbox fleet: a local stand-in for AWS (moto + real sshd + a stand-in session-manager-plugin)."""

from .local_fleet import HostSpec, Sandbox, SandboxHost, default_hosts, running_sandbox
from .plugin import LinkModel

__all__ = ["HostSpec", "LinkModel", "Sandbox", "SandboxHost", "default_hosts", "running_sandbox"]
