"""Every error ssmfab raises on purpose.

One root, so callers can catch ``SSMFabError`` and know the message is meant for a human: it names the host or
filter involved and says what to do about it, in one line.

::

    SSMFabError
    ├── ConfigError                 a config file, env var or flag is unusable
    ├── SelectorError               a malformed instance id, --name or --tag
    ├── NoTargetsError              the selectors matched no usable instance
    ├── AWSError                    an AWS API call failed
    │   ├── CredentialsError        no, expired or rejected credentials
    │   ├── AccessDeniedError       IAM refused the call
    │   └── ThrottlingError         AWS asked us to slow down (retried)
    ├── TunnelError                 the SSM tunnel could not be opened or died
    │   ├── PluginError             session-manager-plugin missing or too old
    │   ├── AWSCLIError             the aws CLI is missing (cli tunnel mode)
    │   ├── TargetNotConnectedError the instance's SSM agent is not connected (retried)
    │   └── SessionLostError        the SSM session went silent: keepalives went unanswered
    ├── SSHError                    the SSH layer inside the tunnel failed
    │   ├── AuthenticationError     the SSH key or user was refused
    │   └── HostKeyError            unknown key in strict mode, or a changed key
    ├── CommandError                a remote command exited non-zero
    ├── DeployError                 a deploy or rollback step failed on a host
    ├── TransferError               a put/get was refused, failed or did not verify
    ├── FleetError                  one or more hosts of a fan-out failed
    └── SandboxError                the local sandbox fleet could not start or stop
"""

from __future__ import annotations


class SSMFabError(Exception):
    """Root of ssmfab's errors. ``str(err)`` is a complete one-line message for a user."""

    #: Process exit code the command line uses for this kind of error.
    exit_code = 1

    def __init__(self, message: str = "", host: str | None = None) -> None:
        super().__init__(message)
        #: The instance the error is about, when there is one.
        self.host = host


class ConfigError(SSMFabError):
    exit_code = 2


class SelectorError(SSMFabError):
    exit_code = 2


class NoTargetsError(SSMFabError):
    exit_code = 3


class AWSError(SSMFabError):
    pass


class CredentialsError(AWSError):
    pass


class AccessDeniedError(AWSError):
    pass


class ThrottlingError(AWSError):
    pass


class TunnelError(SSMFabError):
    pass


class PluginError(TunnelError):
    pass


class AWSCLIError(TunnelError):
    pass


class TargetNotConnectedError(TunnelError):
    pass


class SessionLostError(TunnelError):
    """The data channel died without closing (keepalives went unanswered); the tunnel was cut."""


class SSHError(SSMFabError):
    pass


class AuthenticationError(SSHError):
    pass


class HostKeyError(SSHError):
    pass


class CommandError(SSMFabError):
    """A remote command exited non-zero; carries the host, command, exit code and the tail of its output."""

    def __init__(self, host: str, command: str, exit_code: int, stderr_tail: str = "") -> None:
        detail = f": {stderr_tail.strip().splitlines()[-1]}" if stderr_tail.strip() else ""
        super().__init__(f"{host}: `{command}` exited {exit_code}{detail}", host)
        self.command = command
        self.returncode = exit_code
        self.stderr_tail = stderr_tail


class DeployError(SSMFabError):
    pass


class TransferError(SSMFabError):
    """A put/get was refused, failed part-way or did not verify; no final name holds a partial file."""


class FleetError(SSMFabError):
    """Raised when hosts of a fan-out failed; the message lists each failed host and why, saying a cause that
    several hosts share once (or, with ``detail=False``, only which hosts failed)."""

    def __init__(
        self, failures: dict[str, str], total: int, not_started: int = 0, *, skipped: int = 0, detail: bool = True
    ) -> None:
        held = ", ".join(
            part for part in (f"{not_started} not started" if not_started else "", f"{skipped} skipped" if skipped else "") if part
        )
        head = f"{len(failures)} of {total} hosts failed" + (f" ({held})" if held else "")
        if detail:
            by_cause: dict[str, list[str]] = {}
            for host, why in failures.items():
                by_cause.setdefault(why, []).append(host)
            parts = [f"{', '.join(hosts)}: {why}" for why, hosts in by_cause.items()]
        else:
            parts = [", ".join(failures)]
        shown = "; ".join(parts[:5]) + (f"; and {len(parts) - 5} more" if len(parts) > 5 else "")
        super().__init__(f"{head}: {shown}")
        self.failures = failures
        self.total = total


class SandboxError(SSMFabError):
    pass
