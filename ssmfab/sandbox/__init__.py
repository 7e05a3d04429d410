"""The sandbox fleet: a local stand-in for AWS (moto + real sshd + a stand-in session-manager-plugin)."""

from .local_fleet import HostSpec, Sandbox, SandboxHost, default_hosts, running_sandbox

__all__ = ["HostSpec", "Sandbox", "SandboxHost", "default_hosts", "running_sandbox"]
