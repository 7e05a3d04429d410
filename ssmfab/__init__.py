"""ssmfab: Fabric SSH connections through AWS Systems Manager Session Manager.

    import ssmfab
    with ssmfab.connect("i-0123456789abcdef0", user="ec2-user") as conn:
        conn.run("uname -a")
"""

from __future__ import annotations

# Not typing's TYPE_CHECKING: loading typing costs ~3 ms of every start, and the command line's warm path
# (see warm) loads nothing it does not use.
TYPE_CHECKING = False

from .exceptions import (
    AccessDeniedError,
    AuthenticationError,
    AWSCLIError,
    AWSError,
    CommandError,
    ConfigError,
    CredentialsError,
    DeployError,
    FleetError,
    HostKeyError,
    NoTargetsError,
    PluginError,
    SandboxError,
    SelectorError,
    SessionLostError,
    SSHError,
    SSMFabError,
    TargetNotConnectedError,
    ThrottlingError,
    TransferError,
    TunnelError,
)
from .version import __version__

if TYPE_CHECKING:
    from typing import Any

    from .client import Client, connect
    from .config import Settings, load_settings
    from .connection import SSMConnection
    from .fleet import FleetResult, HostResult, fan_out, run_command
    from .targets import Selection, Selector, Skipped, Target, parse_selector, resolve
    from .transfer import FileTransfer, TransferReport, get, put
    from .transfer.library import TransferResult, download, upload

# The rest of the API is imported on first use: paramiko, Fabric and boto3 cost a few hundred milliseconds,
# which entry points that need none of them (the ssmfab-proxy ProxyCommand) should not pay.
_LAZY = {
    "Client": "client",
    "connect": "client",
    "Settings": "config",
    "load_settings": "config",
    "SSMConnection": "connection",
    "FleetResult": "fleet",
    "HostResult": "fleet",
    "fan_out": "fleet",
    "run_command": "fleet",
    "Selection": "targets",
    "Selector": "targets",
    "Skipped": "targets",
    "Target": "targets",
    "parse_selector": "targets",
    "resolve": "targets",
    "FileTransfer": "transfer",
    "TransferReport": "transfer",
    "get": "transfer",
    "put": "transfer",
    "TransferResult": "transfer.library",
    "download": "transfer.library",
    "upload": "transfer.library",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ssmfab' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value

__all__ = [
    "AccessDeniedError",
    "AuthenticationError",
    "AWSCLIError",
    "AWSError",
    "Client",
    "CommandError",
    "ConfigError",
    "DeployError",
    "CredentialsError",
    "FleetError",
    "FileTransfer",
    "FleetResult",
    "HostKeyError",
    "HostResult",
    "NoTargetsError",
    "PluginError",
    "SandboxError",
    "Selection",
    "Selector",
    "SelectorError",
    "SessionLostError",
    "Settings",
    "Skipped",
    "SSHError",
    "SSMConnection",
    "SSMFabError",
    "Target",
    "TargetNotConnectedError",
    "ThrottlingError",
    "TransferError",
    "TransferReport",
    "TransferResult",
    "TunnelError",
    "__version__",
    "connect",
    "download",
    "fan_out",
    "get",
    "load_settings",
    "parse_selector",
    "put",
    "resolve",
    "run_command",
    "upload",
]
