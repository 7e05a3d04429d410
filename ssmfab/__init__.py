"""ssmfab: Fabric SSH connections through AWS Systems Manager Session Manager.

    import ssmfab
    with ssmfab.connect("i-0123456789abcdef0", user="ec2-user") as conn:
        conn.run("uname -a")
"""

from __future__ import annotations

from .client import Client, connect
from .config import Settings, load_settings
from .connection import SSMConnection
from .exceptions import (
    AccessDeniedError,
    AuthenticationError,
    AWSCLIError,
    AWSError,
    CommandError,
    ConfigError,
    DeployError,
    CredentialsError,
    FleetError,
    HostKeyError,
    NoTargetsError,
    PluginError,
    SandboxError,
    SelectorError,
    SSHError,
    SSMFabError,
    TargetNotConnectedError,
    ThrottlingError,
    TransferError,
    TunnelError,
)
from .fleet import FleetResult, HostResult, fan_out, run_command
from .targets import Selection, Selector, Skipped, Target, parse_selector, resolve

from .version import __version__

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
    "FleetResult",
    "HostKeyError",
    "HostResult",
    "NoTargetsError",
    "PluginError",
    "SandboxError",
    "Selection",
    "Selector",
    "SelectorError",
    "Settings",
    "Skipped",
    "SSHError",
    "SSMConnection",
    "SSMFabError",
    "Target",
    "TargetNotConnectedError",
    "ThrottlingError",
    "TransferError",
    "TunnelError",
    "__version__",
    "connect",
    "fan_out",
    "load_settings",
    "parse_selector",
    "resolve",
    "run_command",
]
