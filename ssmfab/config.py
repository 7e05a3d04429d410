"""Layered configuration, lowest to highest precedence:

1. built-in defaults (the dataclasses below; ``config/ssmfab.toml`` documents them),
2. TOML files: ``/etc/ssmfab/config.toml``, ``$XDG_CONFIG_HOME/ssmfab/config.toml`` (``~/.config``),
   ``./ssmfab.toml`` in the working directory, then the file named by ``$SSMFAB_CONFIG``,
3. ``SSMFAB_*`` environment variables, only for known keys and converted to the key's type,
4. explicit overrides (command-line flags or keyword arguments), ``None`` meaning "not given".

Like invoke's ``Config``, unknown keys are errors rather than silently ignored: a typo in a config file
should not quietly deploy to the wrong place.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .exceptions import ConfigError

TUNNEL_MODES = ("cli", "plugin")
#: transfer.compress: "auto" compresses when it pays, "always" is --compress, "never" is --no-compress.
COMPRESS_CHOICES = ("auto", "always", "never")


#: Hosts worked on at once. An SSM session spends most of its life waiting (1-3 s to set up, then a slow
#: link), so hosts at once is most of a fleet's speed: 20 hosts whose sessions take 1 s to open ran in 4.1 s
#: 10 at a time and 2.9 s 20 at a time. 32 bounds a laptop's plugin processes and the StartSession rate
#: (throttling is retried with backoff).
DEFAULT_PARALLEL = 32


@dataclass(frozen=True)
class AWSSettings:
    #: None: follow boto3's chain (AWS_REGION, AWS_DEFAULT_REGION, the profile's region).
    region: str | None = field(default=None, metadata={"env": "SSMFAB_REGION"})
    #: None: follow boto3's chain (AWS_PROFILE, then the default profile); SSO profiles work.
    profile: str | None = field(default=None, metadata={"env": "SSMFAB_PROFILE"})
    #: None: follow boto3's chain (AWS_ENDPOINT_URL and friends).
    endpoint_url: str | None = field(default=None, metadata={"env": "SSMFAB_ENDPOINT_URL"})
    #: A role to assume (with the profile's credentials) for every AWS call and session: one role per account.
    role_arn: str | None = field(default=None, metadata={"env": "SSMFAB_ROLE_ARN"})
    #: Seconds to wait for a TCP connection to an AWS endpoint (botocore's default, 60, held Ctrl-C for minutes).
    connect_timeout: float = field(default=10.0, metadata={"env": "SSMFAB_AWS_CONNECT_TIMEOUT"})
    #: Seconds to wait for an AWS answer once connected.
    read_timeout: float = field(default=20.0, metadata={"env": "SSMFAB_AWS_READ_TIMEOUT"})
    #: Attempts per AWS call in all (botocore's standard retry mode: throttling and transient errors).
    max_attempts: int = field(default=3, metadata={"env": "SSMFAB_AWS_MAX_ATTEMPTS"})


@dataclass(frozen=True)
class TargetSettings:
    #: The tag key a bare ``--tag web`` refers to.
    default_tag_key: str = field(default="Role", metadata={"env": "SSMFAB_DEFAULT_TAG_KEY"})


@dataclass(frozen=True)
class SSHSettings:
    user: str = field(default="ec2-user", metadata={"env": "SSMFAB_USER"})
    #: An instance tag whose value, when present, overrides ``user`` for that instance ("" disables it).
    user_tag: str = field(default="ssmfab:user", metadata={"env": "SSMFAB_USER_TAG"})
    #: Private key file; None lets paramiko try the agent and ~/.ssh/id_* keys.
    key: str | None = field(default=None, metadata={"env": "SSMFAB_KEY"})
    #: ssmfab's own known_hosts file: host keys are pinned per instance id.
    known_hosts: str = field(default="~/.config/ssmfab/known_hosts", metadata={"env": "SSMFAB_KNOWN_HOSTS"})
    #: Generate a key for the run and push it with EC2 Instance Connect before each connection.
    ephemeral_key: bool = field(default=False, metadata={"env": "SSMFAB_EPHEMERAL_KEY"})
    #: Refuse hosts whose key is not pinned yet, instead of trusting them on first use.
    strict_host_keys: bool = field(default=False, metadata={"env": "SSMFAB_STRICT_HOST_KEYS"})
    #: Seconds allowed for the tunnel plus the SSH handshake.
    connect_timeout: float = field(default=30.0, metadata={"env": "SSMFAB_CONNECT_TIMEOUT"})
    #: Seconds a transfer may go without progress before it fails (and leaves nothing half-written).
    stall_timeout: float = field(default=60.0, metadata={"env": "SSMFAB_STALL_TIMEOUT"})
    #: Seconds without anything from the tunnel after which a keepalive asks sshd for an answer (0: none);
    #: OpenSSH's ServerAliveInterval. A data channel can die without closing: this is how it is noticed.
    keepalive_interval: float = field(default=10.0, metadata={"env": "SSMFAB_KEEPALIVE_INTERVAL"})
    #: Keepalives in a row that may go unanswered before the session counts as lost (ServerAliveCountMax):
    #: by default a dead session ends its host's work within (3 + 1) x 10 s.
    keepalive_count_max: int = field(default=3, metadata={"env": "SSMFAB_KEEPALIVE_COUNT_MAX"})
    #: Warm sessions: how long the ``ssmfab`` command keeps a connection open after a command ("90s", "10m";
    #: "0": off). Library Clients keep none unless given ``persist=``. See README, "Warm sessions".
    persist: str = field(default="1m", metadata={"env": "SSMFAB_PERSIST"})


@dataclass(frozen=True)
class TunnelSettings:
    #: "cli": the documented ProxyCommand (``aws ssm start-session ...``);
    #: "plugin": StartSession through boto3, then session-manager-plugin directly (no aws process).
    mode: str = field(default="plugin", metadata={"env": "SSMFAB_TUNNEL"})
    document: str = field(default="AWS-StartSSHSession", metadata={"env": "SSMFAB_DOCUMENT"})
    #: The port sshd listens on, on the instance.
    remote_port: int = field(default=22, metadata={"env": "SSMFAB_REMOTE_PORT"})
    aws_cli: str = field(default="aws", metadata={"env": "SSMFAB_AWS_CLI"})
    plugin: str = field(default="session-manager-plugin", metadata={"env": "SSMFAB_PLUGIN"})
    #: Attempts to open a session when SSM answers TargetNotConnected or throttles (1 = no retry).
    attempts: int = field(default=4, metadata={"env": "SSMFAB_TUNNEL_ATTEMPTS"})
    #: First retry delay in seconds; doubled per retry (max 20 s), with jitter.
    retry_delay: float = field(default=1.0, metadata={"env": "SSMFAB_TUNNEL_RETRY_DELAY"})
    #: Why the sessions are opened: StartSession's Reason (shown in the Session Manager console and CloudTrail)
    #: and the audit record's. One line, at most 256 characters.
    reason: str = field(default="", metadata={"env": "SSMFAB_REASON"})


@dataclass(frozen=True)
class RunSettings:
    #: Hosts worked on at once.
    parallel: int = field(default=DEFAULT_PARALLEL, metadata={"env": "SSMFAB_PARALLEL"})
    #: Characters of each command's stdout/stderr kept in memory (the tail); output still streams in full.
    output_cap: int = field(default=1_000_000, metadata={"env": "SSMFAB_OUTPUT_CAP"})


@dataclass(frozen=True)
class TransferSettings:
    """Defaults of put, get and deploy (command line and library); their flags and arguments win."""

    #: gzip streamed files on the wire: "auto" (when the data shrinks and the link is slower than gzip),
    #: "always" or "never".
    compress: str = field(default="auto", metadata={"env": "SSMFAB_TRANSFER_COMPRESS"})
    #: SSM sessions an upload of 16 MiB or more may use at once; 0: measured (8 on a slow link, else 1).
    streams: int = field(default=0, metadata={"env": "SSMFAB_TRANSFER_STREAMS"})

    @property
    def compress_flag(self) -> bool | None:
        """``compress`` as put/get take it: True, False, or None (when it pays)."""
        return {"always": True, "never": False}.get(self.compress)

    @property
    def streams_flag(self) -> int | None:
        """``streams`` as put takes it (None: measured)."""
        return self.streams or None


@dataclass(frozen=True)
class DeploySettings:
    #: A local file or directory; a .tar.gz/.tgz file is unpacked into the release directory.
    artifact: str = field(default="", metadata={"env": "SSMFAB_DEPLOY_ARTIFACT"})
    #: Remote base: releases go to <base_dir>/releases/<UTC time>-<suffix>, <base_dir>/current points at one.
    base_dir: str = field(default="app", metadata={"env": "SSMFAB_DEPLOY_BASE_DIR"})
    #: Commands run in the new release directory before ``current`` is switched.
    before_switch: tuple[str, ...] = ()
    #: Commands run in the new release directory after the switch, before the health check.
    after_switch: tuple[str, ...] = ()
    #: Run in <base_dir>/current after the switch; exit 0 means healthy. "" skips the check.
    health_check: str = field(default="", metadata={"env": "SSMFAB_DEPLOY_HEALTH_CHECK"})
    health_retries: int = field(default=3, metadata={"env": "SSMFAB_DEPLOY_HEALTH_RETRIES"})
    #: Seconds between health-check attempts.
    health_delay: float = field(default=2.0, metadata={"env": "SSMFAB_DEPLOY_HEALTH_DELAY"})
    #: Releases kept per host (the current and previous ones are never pruned).
    keep_releases: int = field(default=5, metadata={"env": "SSMFAB_DEPLOY_KEEP_RELEASES"})
    #: Rolling batch (hosts or a percentage); "" deploys to all hosts at once (bounded by run.parallel).
    batch: str = field(default="", metadata={"env": "SSMFAB_DEPLOY_BATCH"})
    #: Failed hosts tolerated before the rollout stops starting new hosts.
    max_failures: str = field(default="0", metadata={"env": "SSMFAB_DEPLOY_MAX_FAILURES"})


@dataclass(frozen=True)
class LogSettings:
    #: Remote files or globs fetched by fetch-logs when no --path is given.
    paths: tuple[str, ...] = ("/var/log/messages", "/var/log/syslog")
    #: Extra paths per tag, as "Key=Value" = ["glob", ...]; added for instances carrying that tag.
    paths_by_tag: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: Local destination; files land in <dest>/<instance-id>/<remote path>.
    dest: str = field(default="logs", metadata={"env": "SSMFAB_LOGS_DEST"})


@dataclass(frozen=True)
class AuditSettings:
    #: Append a JSON line for every command and transfer the command line runs.
    enabled: bool = field(default=True, metadata={"env": "SSMFAB_AUDIT"})
    #: The log file (created 0600); its folder must exist unless it is the default one.
    path: str = field(default="~/.local/state/ssmfab/audit.jsonl", metadata={"env": "SSMFAB_AUDIT_PATH"})
    #: Strings replaced by *** wherever they appear in a record (tokens, passwords passed in commands).
    secrets: tuple[str, ...] = ()
    #: Also ship records to this CloudWatch Logs group ("" = local file only).
    cloudwatch_log_group: str = field(default="", metadata={"env": "SSMFAB_AUDIT_LOG_GROUP"})
    #: Refuse to open sessions without a reason (``--reason``, ``tunnel.reason``).
    require_reason: bool = field(default=False, metadata={"env": "SSMFAB_AUDIT_REQUIRE_REASON"})


@dataclass(frozen=True)
class Settings:
    aws: AWSSettings = field(default_factory=AWSSettings)
    targets: TargetSettings = field(default_factory=TargetSettings)
    ssh: SSHSettings = field(default_factory=SSHSettings)
    tunnel: TunnelSettings = field(default_factory=TunnelSettings)
    run: RunSettings = field(default_factory=RunSettings)
    transfer: TransferSettings = field(default_factory=TransferSettings)
    deploy: DeploySettings = field(default_factory=DeploySettings)
    logs: LogSettings = field(default_factory=LogSettings)
    audit: AuditSettings = field(default_factory=AuditSettings)

    def merged(self, overrides: Mapping[str, Any], source: str = "overrides") -> Settings:
        """A copy with ``{"section.key": value}`` applied; ``None`` values are skipped (not given)."""
        sections: dict[str, dict[str, Any]] = {}
        for dotted, value in overrides.items():
            if value is None:
                continue
            section, _, key = dotted.partition(".")
            sections.setdefault(section, {})[key] = value
        return _apply(self, sections, source)


def _section_types() -> dict[str, Any]:
    defaults = Settings()
    return {f.name: getattr(defaults, f.name) for f in dataclasses.fields(Settings)}


def _convert(value: Any, target_type: str, where: str) -> Any:
    """Coerce a file or environment value to the field's declared type, or say exactly what is wrong."""
    wanted = target_type.replace(" ", "")
    if wanted in ("str", "str|None"):
        if isinstance(value, str):
            return value
    elif wanted == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off", ""):
            return value.lower() in ("1", "true", "yes", "on")
    elif wanted == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
    elif wanted == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif wanted == "tuple[str,...]":
        if isinstance(value, str):
            return tuple(line for line in value.splitlines() if line.strip())
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return tuple(value)
    elif wanted == "dict[str,tuple[str,...]]":
        if isinstance(value, Mapping) and all(
            isinstance(v, (list, tuple)) and all(isinstance(i, str) for i in v) for v in value.values()
        ):
            return {str(k): tuple(v) for k, v in value.items()}
    shown = target_type.replace(" | None", "").replace("tuple[str, ...]", "list of strings")
    raise ConfigError(f"{where}: expected {shown}, got {value!r}")


def _apply(settings: Settings, sections: Mapping[str, Any], source: str) -> Settings:
    known_sections = {f.name for f in dataclasses.fields(Settings)}
    updates: dict[str, Any] = {}
    for section_name, values in sections.items():
        if section_name not in known_sections:
            raise ConfigError(
                f"{source}: unknown section [{section_name}] (known: {', '.join(sorted(known_sections))})"
            )
        if not isinstance(values, Mapping):
            raise ConfigError(f"{source}: [{section_name}] must be a table of settings")
        current = getattr(settings, section_name)
        fields_by_name = {f.name: f for f in dataclasses.fields(current)}
        changes: dict[str, Any] = {}
        for key, value in values.items():
            if key not in fields_by_name:
                raise ConfigError(
                    f"{source}: unknown setting {section_name}.{key} "
                    f"(known: {', '.join(sorted(fields_by_name))})"
                )
            changes[key] = _convert(value, str(fields_by_name[key].type), f"{source}: {section_name}.{key}")
        updates[section_name] = dataclasses.replace(current, **changes)
    result = dataclasses.replace(settings, **updates)
    _validate(result, source)
    return result


def _validate(settings: Settings, source: str) -> None:
    if settings.tunnel.mode not in TUNNEL_MODES:
        raise ConfigError(
            f"{source}: tunnel.mode {settings.tunnel.mode!r} is not one of {', '.join(TUNNEL_MODES)}"
        )
    if settings.run.output_cap < 1000:
        raise ConfigError(f"{source}: run.output_cap must be at least 1000 characters")
    if settings.run.parallel < 1:
        raise ConfigError(f"{source}: run.parallel must be at least 1, got {settings.run.parallel}")
    if not 0 < settings.tunnel.remote_port < 65536:
        raise ConfigError(f"{source}: tunnel.remote_port {settings.tunnel.remote_port} is not a TCP port")
    if settings.aws.connect_timeout <= 0 or settings.aws.read_timeout <= 0 or settings.aws.max_attempts < 1:
        raise ConfigError(f"{source}: aws.connect_timeout and aws.read_timeout must be positive, aws.max_attempts at least 1")
    if settings.ssh.connect_timeout <= 0:
        raise ConfigError(f"{source}: ssh.connect_timeout must be positive")
    if settings.ssh.keepalive_interval < 0 or settings.ssh.keepalive_count_max < 1:
        raise ConfigError(f"{source}: ssh.keepalive_interval must not be negative and ssh.keepalive_count_max at least 1")
    from .persist import parse_persist  # here: persist reads nothing of config, config checks its durations

    parse_persist(settings.ssh.persist, f"{source}: ssh.persist")
    if settings.tunnel.attempts < 1 or settings.tunnel.retry_delay < 0:
        raise ConfigError(f"{source}: tunnel.attempts must be at least 1 and tunnel.retry_delay not negative")
    reason = settings.tunnel.reason
    if len(reason) > 256 or any(ord(ch) < 32 or ord(ch) == 127 for ch in reason):
        raise ConfigError(f"{source}: the reason (--reason, tunnel.reason) must be one line of at most 256 characters")
    if settings.transfer.compress not in COMPRESS_CHOICES:
        raise ConfigError(
            f"{source}: transfer.compress {settings.transfer.compress!r} is not one of {', '.join(COMPRESS_CHOICES)}"
        )
    if settings.transfer.streams < 0:
        raise ConfigError(f"{source}: transfer.streams must be 0 (measured) or a number of SSM sessions, got {settings.transfer.streams}")
    if settings.deploy.keep_releases < 2:
        raise ConfigError(f"{source}: deploy.keep_releases must be at least 2 (current and previous)")
    if settings.deploy.health_retries < 1:
        raise ConfigError(f"{source}: deploy.health_retries must be at least 1")


def default_config_files(env: Mapping[str, str], cwd: Path) -> list[Path]:
    """Config files in the order they are read (later ones win)."""
    xdg = Path(env.get("XDG_CONFIG_HOME") or Path(env.get("HOME", "~")).expanduser() / ".config")
    files = [Path("/etc/ssmfab/config.toml"), xdg / "ssmfab" / "config.toml", cwd / "ssmfab.toml"]
    explicit = env.get("SSMFAB_CONFIG")
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ConfigError(f"SSMFAB_CONFIG names {path}, which is not a file: fix or unset SSMFAB_CONFIG")
        files.append(path)
    return files


def _read_toml(path: Path) -> dict[str, Any]:
    # Imported here: the TOML parser costs ~7 ms to load (it compiles its regular expressions), which a
    # command run without any config file need not pay.
    import tomllib

    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from exc


def _env_layer(env: Mapping[str, str]) -> dict[str, dict[str, str]]:
    layer: dict[str, dict[str, str]] = {}
    for section_name, section in _section_types().items():
        for f in dataclasses.fields(section):
            name = f.metadata.get("env")
            if name and name in env:
                layer.setdefault(section_name, {})[f.name] = env[name]
    return layer


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    files: list[Path] | None = None,
    cwd: Path | None = None,
) -> Settings:
    """Build Settings from every layer. ``env``/``files``/``cwd`` default to the process's own."""
    env = os.environ if env is None else env
    files = default_config_files(env, cwd or Path.cwd()) if files is None else files
    settings = Settings()
    for path in files:
        if path.is_file():
            settings = _apply(settings, _read_toml(path), str(path))
    env_values = _env_layer(env)
    if env_values:
        settings = _apply(settings, env_values, "environment")
    return settings.merged(overrides or {}, "command line")


def env_var_names() -> dict[str, str]:
    """``{"section.key": "SSMFAB_..."}`` for documentation and tests."""
    return {
        f"{section_name}.{f.name}": f.metadata["env"]
        for section_name, section in _section_types().items()
        for f in dataclasses.fields(section)
        if "env" in f.metadata
    }
