"""AWS sessions and clients built from Settings, and the one place botocore errors become ssmfab errors."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .awsmodels import use_trimmed_models
from .config import Settings
from .exceptions import AccessDeniedError, AWSError, ConfigError, CredentialsError, TargetNotConnectedError, ThrottlingError

if TYPE_CHECKING:
    import boto3
    import botocore.session
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ssm import SSMClient

CREDENTIAL_CODES = {
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "AuthFailure",
    "RequestExpired",
}
ACCESS_CODES = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation"}
THROTTLING_CODES = {"ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded"}
#: botocore's own default for a client's connection pool.
DEFAULT_POOL_CONNECTIONS = 10
#: Defaults for a context built without Settings (the AWSSettings defaults; see config/ssmfab.toml).
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT = 20.0
DEFAULT_MAX_ATTEMPTS = 3


@dataclass
class AWSContext:
    """The session and the clients ssmfab needs, all bound to one region, profile and endpoint.

    ``session`` is a botocore Session (what aws_context builds: boto3 would add ~50 ms to every command's
    start for nothing ssmfab uses) or a boto3 Session a script passes in; clients come out the same. Scripts
    that want boto3's own API on the same credentials: ``boto3.Session(botocore_session=ctx.botocore_session)``.
    """

    session: botocore.session.Session | boto3.Session
    region: str
    profile: str | None
    endpoint_url: str | None
    #: HTTP connections each client keeps for reuse: at least as many as threads calling it at once. botocore
    #: keeps 10; past that every concurrent call opens a connection of its own (a TLS handshake against AWS)
    #: and throws it away afterwards: a 50-host run opened 44 and discarded 30.
    max_pool_connections: int = DEFAULT_POOL_CONNECTIONS
    #: Bounds on every call: botocore's own (60 s each, retried) held a command, and its Ctrl-C, for minutes
    #: when an endpoint stopped answering.
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    read_timeout: float = DEFAULT_READ_TIMEOUT
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    #: The role assumed for this context (None: the profile's own credentials).
    role_arn: str | None = None
    #: The account the instances of this context belong to, when known (from an assumed role's ARN).
    account: str = ""
    #: What child processes (session-manager-plugin, the aws CLI) need to act as this context: the assumed
    #: role's temporary credentials, which no profile names.
    child_env: dict[str, str] = field(default_factory=dict, repr=False)
    #: One client per service, shared by every thread (botocore clients are thread-safe; creating one is not,
    #: and costs 5-30 ms).
    _clients: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)
    _creating: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    @property
    def botocore_session(self) -> botocore.session.Session:
        wrapped = getattr(self.session, "_session", None)  # a boto3 Session wraps one
        return wrapped if wrapped is not None else self.session  # type: ignore[return-value]

    def client(self, service: str) -> Any:
        made = self._clients.get(service)
        if made is not None:
            # No lock for a client already made: a host thread asking for SSM must not wait out another
            # thread creating STS's (the audit's caller lookup, ~12 ms on the first connection's path).
            return made
        with self._creating:
            made = self._clients.get(service)
            if made is None:
                with aws_errors(f"creating the {service} client"):
                    made = self.botocore_session.create_client(
                        service, region_name=self.region, endpoint_url=self.endpoint_url,
                        config=self.client_config(),
                    )  # fmt: skip
                self._clients[service] = made
            return made

    def client_config(self) -> Any:
        """The botocore Config every client gets: pool size, timeouts and bounded retries."""
        from botocore.config import Config

        return Config(
            max_pool_connections=self.max_pool_connections,
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            retries={"mode": "standard", "max_attempts": self.max_attempts},
        )

    def cli_options(self, *, proxy: bool = False) -> list[str]:
        """``--region R [--profile P] [--endpoint-url U]``: how the aws CLI (and, with ``proxy``, ssmfab-proxy) is
        told this context. An assumed role reaches the aws CLI as ``child_env`` credentials (it has no role
        option, and a profile would take their place); ssmfab-proxy assumes it itself (``--role-arn``)."""
        options = ["--region", self.region]
        if self.profile and (proxy or not self.role_arn):
            options += ["--profile", self.profile]
        if self.role_arn and proxy:
            options += ["--role-arn", self.role_arn]
        if self.endpoint_url:
            options += ["--endpoint-url", self.endpoint_url]
        return options

    def process_env(self) -> dict[str, str]:
        """The environment for a child process acting as this context (the plugin, the aws CLI)."""
        env = dict(os.environ)
        if self.child_env:
            env.pop("AWS_PROFILE", None)
            env.update(self.child_env)
        return env

    def ec2(self) -> EC2Client:
        return self.client("ec2")  # type: ignore[no-any-return]

    def ssm(self) -> SSMClient:
        return self.client("ssm")  # type: ignore[no-any-return]


def aws_context(settings: Settings) -> AWSContext:
    """Region and profile follow boto3's chain unless settings (config, env or flags) name them."""
    import botocore.exceptions
    import botocore.session

    session = botocore.session.Session(profile=settings.aws.profile)
    if settings.aws.region:
        session.set_config_variable("region", settings.aws.region)
    try:
        session.get_scoped_config()  # the profile's section: ProfileNotFound now rather than at the first call
        region = session.get_config_variable("region")
    except botocore.exceptions.ProfileNotFound as exc:
        raise ConfigError(
            f"AWS profile {settings.aws.profile!r} not found: check profile= (--profile on the command line) or AWS_PROFILE, or run `aws configure list-profiles`"
        ) from exc
    use_trimmed_models(session)  # an EC2 client in ~10 ms instead of ~200 (see awsmodels)
    if not region:
        raise ConfigError("no AWS region: give region= (--region on the command line), set AWS_REGION, or set one in your profile")
    context = AWSContext(
        session=session, region=region, profile=settings.aws.profile, endpoint_url=settings.aws.endpoint_url,
        max_pool_connections=max(DEFAULT_POOL_CONNECTIONS, settings.run.parallel),
        connect_timeout=settings.aws.connect_timeout, read_timeout=settings.aws.read_timeout,
        max_attempts=settings.aws.max_attempts,
    )  # fmt: skip
    if settings.aws.role_arn:
        assume_role(context, settings.aws.role_arn)
    return context


#: arn:aws:iam::ACCOUNT:role/NAME (any partition).
ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::(\d{12}):role/[\w+=,.@/-]{1,512}$")


def assume_role(context: AWSContext, role_arn: str) -> None:
    """Switch ``context`` to ``role_arn``'s temporary credentials (assumed with the profile's own), for its
    clients and, through ``child_env``, for the plugin and the aws CLI it starts."""
    match = ROLE_ARN.fullmatch(role_arn)
    if match is None:
        raise ConfigError(f"--role-arn {role_arn!r}: expected arn:aws:iam::ACCOUNT:role/NAME")
    with aws_errors(f"assuming role {role_arn}"):
        credentials = context.client("sts").assume_role(RoleArn=role_arn, RoleSessionName="ssmfab")["Credentials"]
    session = context.botocore_session
    session.set_credentials(credentials["AccessKeyId"], credentials["SecretAccessKey"], credentials["SessionToken"])
    context._clients.clear()  # the STS client above used the profile's credentials; every later one the role's
    context.role_arn, context.account = role_arn, match.group(1)
    context.child_env = {
        "AWS_ACCESS_KEY_ID": credentials["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": credentials["SecretAccessKey"],
        "AWS_SESSION_TOKEN": credentials["SessionToken"],
    }


def describe_client_error(code: str, message: str, doing: str, target: str | None = None) -> Exception:
    """Turn an AWS error code into the matching ssmfab error with a fix; shared by boto3 and CLI paths."""
    subject = f"{target}: " if target else ""
    if code == "TargetNotConnected":
        return TargetNotConnectedError(
            f"{subject}SSM agent not connected (TargetNotConnected): the instance may be booting, stopped or "
            "lack network to SSM; check `ssmfab hosts` and retry",
            host=target,
        )
    if code in THROTTLING_CODES:
        return ThrottlingError(f"{subject}AWS throttled {doing} ({code}): lower --parallel if it persists", host=target)
    if code in CREDENTIAL_CODES:
        return CredentialsError(
            f"{subject}AWS rejected the credentials while {doing} ({code}): refresh them (e.g. `aws sso login`)"
        )
    if code in ACCESS_CODES:
        return AccessDeniedError(
            f"{subject}access denied while {doing}: {message} (grant it in IAM: see the README's IAM section)"
        )
    return AWSError(f"{subject}AWS error while {doing}: {code}: {message}")


@contextmanager
def aws_errors(doing: str, target: str | None = None) -> Iterator[None]:
    """Map botocore's exceptions raised inside the block to one-line ssmfab errors."""
    import botocore.exceptions as bx
    from botocore.parsers import ResponseParserError

    try:
        yield
    except bx.ClientError as exc:
        error = exc.response.get("Error", {})
        raise describe_client_error(str(error.get("Code", "")), str(error.get("Message", "")), doing, target) from exc
    except (bx.NoCredentialsError, bx.PartialCredentialsError) as exc:
        raise CredentialsError(
            f"no AWS credentials while {doing}: set AWS_PROFILE, run `aws configure` or `aws sso login`"
        ) from exc
    except (bx.SSOTokenLoadError, bx.UnauthorizedSSOTokenError, bx.TokenRetrievalError) as exc:
        raise CredentialsError(f"AWS SSO session expired while {doing}: run `aws sso login`") from exc
    except bx.CredentialRetrievalError as exc:
        # Short-lived keys that could not be renewed (a credential_process, a container or instance role).
        raise CredentialsError(
            f"AWS credentials could not be renewed while {doing}: {str(exc).splitlines()[0]}: refresh them "
            "(e.g. `aws sso login`)"
        ) from exc
    except bx.NoRegionError as exc:
        raise ConfigError("no AWS region: give region= (--region on the command line), set AWS_REGION, or set one in your profile") from exc
    except bx.EndpointConnectionError as exc:
        raise AWSError(f"cannot reach AWS while {doing}: {exc}; check the network, region and endpoint") from exc
    except (bx.BotoCoreError, ResponseParserError) as exc:
        raise AWSError(f"AWS error while {doing}: {str(exc).splitlines()[0]}") from exc
