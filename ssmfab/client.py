"""The library's front door: settings, AWS clients and the tunnel factory, held together for one run.

    client = ssmfab.Client(region="eu-west-1", user="ubuntu")
    for target in client.targets(tags=["Role=web"]):
        with client.connect(target) as conn:
            conn.run("uptime")

Nothing here is global: two Clients with different regions or profiles can live side by side.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from .aws import AWSContext, aws_context, aws_errors
from .config import Settings, load_settings
from .ephemeral import EphemeralKey
from .connection import SSMConnection
from .hostkeys import KnownHosts
from .keys import KeyRing, check_key_file
from .persist import SELECTION_CACHE_SECONDS, parse_persist
from .pool import ConnectionPool
from .retry import Backoff
from .targets import INSTANCE_ID, Selection, Target, parse_selector, require_targets, resolve
from .exceptions import SelectorError
from .headstart import HeadStartTunnels
from .tunnel import TunnelFactory, tunnel_factory

#: Friendly keyword names accepted by Client(...) and connect(...), mapped to settings keys.
OVERRIDE_KEYS = {
    "region": "aws.region",
    "profile": "aws.profile",
    "endpoint_url": "aws.endpoint_url",
    "role_arn": "aws.role_arn",
    "default_tag_key": "targets.default_tag_key",
    "user": "ssh.user",
    "user_tag": "ssh.user_tag",
    "key": "ssh.key",
    "key_filename": "ssh.key",
    "known_hosts": "ssh.known_hosts",
    "strict_host_keys": "ssh.strict_host_keys",
    "ephemeral_key": "ssh.ephemeral_key",
    "connect_timeout": "ssh.connect_timeout",
    "stall_timeout": "ssh.stall_timeout",
    "keepalive_interval": "ssh.keepalive_interval",
    "keepalive_count_max": "ssh.keepalive_count_max",
    "tunnel": "tunnel.mode",
    "document": "tunnel.document",
    "remote_port": "tunnel.remote_port",
    "aws_cli": "tunnel.aws_cli",
    "plugin": "tunnel.plugin",
    "attempts": "tunnel.attempts",
    "retry_delay": "tunnel.retry_delay",
    "reason": "tunnel.reason",
    "parallel": "run.parallel",
    "compress": "transfer.compress",
    "streams": "transfer.streams",
}


def settings_from(overrides: dict[str, Any], settings: Settings | None = None) -> Settings:
    """Settings from every layer plus keyword overrides (``None`` values mean "not given")."""
    unknown = sorted(set(overrides) - set(OVERRIDE_KEYS))
    if unknown:
        raise TypeError(f"unknown setting(s): {', '.join(unknown)}; known: {', '.join(sorted(OVERRIDE_KEYS))}")
    dotted = {OVERRIDE_KEYS[name]: value for name, value in overrides.items()}
    return settings.merged(dotted) if settings is not None else load_settings(dotted)


class Client:
    def __init__(
        self,
        settings: Settings | None = None,
        *,
        aws: AWSContext | None = None,
        tunnels: TunnelFactory | None = None,
        notify: Callable[[str], Any] | None = None,
        persist: str | float | bool | None = None,
        pool: ConnectionPool | None = None,
        **overrides: Any,
    ) -> None:
        """``persist``: keep connections warm after use for this long ("10m", seconds, or True for the
        configured ``ssh.persist``); off unless given. ``pool``: where warm connections wait (a Client of its own
        by default; a keeper shares one between its Clients)."""
        self.settings = settings_from(overrides, settings)
        if persist is True:
            persist = self.settings.ssh.persist
        #: Seconds a released connection stays warm (0: closed at once, as without persistence).
        self.persist = parse_persist(persist, "persist")
        self.pool = pool if pool is not None else (ConnectionPool() if self.persist > 0 else None)
        self._selections: dict[Any, tuple[float, Selection]] = {}
        self._caller: str | None = None
        self._aws = aws
        self._tunnels = tunnels
        self.notify = notify
        self.known_hosts = KnownHosts(self.settings.ssh.known_hosts)
        self._ephemeral: EphemeralKey | None = None
        self._keys = KeyRing()
        # Connections are made from fan-out worker threads: lazy members are built once, under this lock.
        self._lock = threading.RLock()

    @property
    def aws(self) -> AWSContext:
        # Built on first use: listing the config or the sandbox needs no AWS session.
        with self._lock:
            if self._aws is None:
                self._aws = aws_context(self.settings)
            return self._aws

    @property
    def tunnels(self) -> TunnelFactory:
        with self._lock:
            if self._tunnels is None:
                self._tunnels = tunnel_factory(self.settings, self.aws, self.notify)
            return self._tunnels

    @property
    def ephemeral_key(self) -> EphemeralKey | None:
        """The run's ephemeral key when ``ssh.ephemeral_key`` is on: one key for every host of the run."""
        with self._lock:
            if self.settings.ssh.ephemeral_key and self._ephemeral is None:
                self._ephemeral = EphemeralKey()
            return self._ephemeral

    def push_key(self, target: Target) -> None:
        """Push the ephemeral key for ``target``'s user (valid 60 s); called before every (re)connection."""
        key = self.ephemeral_key
        if key is None:
            return
        key.push(self.aws.client("ec2-instance-connect"), target.id, self.user_for(target))  # made once, in AWSContext

    def start_tunnel(self, target_id: str) -> HeadStartTunnels | None:
        """Open a tunnel to ``target_id`` now, on a thread, for the next connection to it to take: while the
        instance is looked up (see headstart). Drop it (``drop``) once the run is over, taken or not. None when
        connections are kept warm: a warm one needs no tunnel."""
        if self.pool is not None:
            return None
        with self._lock:
            head_start = HeadStartTunnels(self.tunnels, target_id)
            self._tunnels = head_start
        return head_start

    def check_ssh_key(self) -> None:
        """ConfigError now, before any AWS call, if the configured key file cannot work (see keys.check_key_file)."""
        if self.settings.ssh.key and not self.settings.ssh.ephemeral_key:
            check_key_file(self.settings.ssh.key)

    def select(
        self, ids: Iterable[str] = (), names: Iterable[str] = (), tags: Iterable[str] = (), *,
        asgs: Iterable[str] = (), ips: Iterable[str] = (), refresh: bool = False,
    ) -> Selection:  # fmt: skip
        """Every instance matching the selectors, reachable or not (see ``Selection.skipped``). ``asgs``: Auto
        Scaling group names; ``ips``: private IPs or private DNS names (globs allowed in all). With persistence
        on, the answer is kept SELECTION_CACHE_SECONDS for the same selectors (``refresh``: ask AWS again)."""
        selector = parse_selector(ids, names, tags, asgs=asgs, ips=ips, default_tag_key=self.settings.targets.default_tag_key)
        if self.persist > 0 and not refresh:
            with self._lock:
                cached = self._selections.get(selector)
            if cached is not None and time.monotonic() - cached[0] < SELECTION_CACHE_SECONDS:
                return cached[1]
        with aws_errors(f"looking up instances for {selector}"):
            selection = resolve(selector, self.aws.ec2(), self.aws.ssm(), region=self.aws.region)
        if self.persist > 0:
            with self._lock:
                self._selections[selector] = (time.monotonic(), selection)
        return selection

    def caller_arn(self, lookup: Callable[[Client], str] | None = None) -> str:
        """Who the credentials are (sts:GetCallerIdentity, or ``lookup``), asked once per Client when persistence
        is on: a keeper's Client is one identity for its whole life (see ``persist``)."""
        if self.persist > 0 and self._caller is not None:
            return self._caller
        if lookup is None:
            from .doctor import caller_arn

            lookup = caller_arn
        arn = lookup(self)
        self._caller = arn
        return arn

    def close(self) -> None:
        """Close the connections kept warm (a Client without persistence keeps none)."""
        if self.pool is not None:
            self.pool.close_all()

    def targets(
        self, ids: Iterable[str] = (), names: Iterable[str] = (), tags: Iterable[str] = (), *,
        asgs: Iterable[str] = (), ips: Iterable[str] = (),
    ) -> list[Target]:  # fmt: skip
        """The reachable instances matching the selectors; NoTargetsError if there are none."""
        return require_targets(self.select(ids, names, tags, asgs=asgs, ips=ips), self.aws.profile)

    def user_for(self, target: Target) -> str:
        tag = self.settings.ssh.user_tag
        return (target.tags.get(tag) if tag else None) or self.settings.ssh.user

    def connect(self, target: Target | str, **connection_kwargs: Any) -> SSMConnection:
        """An unopened SSMConnection (Fabric opens it on first use); close it or use it as a context manager."""
        if isinstance(target, str):
            if not INSTANCE_ID.fullmatch(target):
                raise SelectorError(f"bad instance id {target!r}: expected i-… or mi-… followed by 8 or 17 hex digits")
            target = Target(id=target, region=self.aws.region)
        ssh = self.settings.ssh
        options: dict[str, Any] = {
            "user": self.user_for(target),
            "key_filename": ssh.key,
            "strict_host_keys": ssh.strict_host_keys,
            "connect_timeout": ssh.connect_timeout,
            "notify": self.notify,
            "output_cap": self.settings.run.output_cap,
            "stall_timeout": ssh.stall_timeout,
            "keepalive_interval": ssh.keepalive_interval,
            "keepalive_count_max": ssh.keepalive_count_max,
            "backoff": Backoff(attempts=self.settings.tunnel.attempts, delay=self.settings.tunnel.retry_delay),
        }
        key = self.ephemeral_key
        if key is not None:
            chosen = target
            options["key_filename"] = None
            options["connect_kwargs"] = {"pkey": key.pkey, "look_for_keys": False, "allow_agent": False}
            options["before_open"] = lambda: self.push_key(chosen)
        poolable = self.pool is not None and self.persist > 0 and key is None and not connection_kwargs
        options.update(connection_kwargs)
        if options.get("key_filename") and "pkey" not in options:
            # Read once for all of the client's connections (see keys); None leaves the file to paramiko.
            options["pkey"] = self._keys.get(options["key_filename"])
        if not poolable or self.pool is None:
            return self._transfer_defaults(SSMConnection(target, tunnels=self.tunnels, known_hosts=self.known_hosts, **options))
        pool_key = self._pool_key(target, options)
        warm = self.pool.take(pool_key)
        if warm is not None:
            warm.target = target  # the selection's current view (name, tags) for labels
            warm.persist = self.persist
            warm.warm_unproven = True
            return self._transfer_defaults(warm)
        conn = SSMConnection(target, tunnels=self.tunnels, known_hosts=self.known_hosts, **options)
        conn.pool, conn.persist = self.pool, self.persist
        self.pool.add(conn, pool_key, self.persist)
        return self._transfer_defaults(conn)

    def _transfer_defaults(self, conn: SSMConnection) -> SSMConnection:
        """This client's transfer.compress and transfer.streams, for the connection's put/get (a warm one may
        have been made under other settings)."""
        conn.transfer_compress = self.settings.transfer.compress_flag
        conn.transfer_streams = self.settings.transfer.streams_flag
        return conn

    def _pool_key(self, target: Target, options: dict[str, Any]) -> str:
        """Everything that changes who a connection is: the instance, the SSH user and key, and the AWS and
        tunnel settings it is opened with."""
        pkey = options.get("pkey")
        key = pkey.fingerprint if pkey is not None else f"file:{options.get('key_filename') or '(agent/default keys)'}"
        s = self.settings
        facts = repr((target.id, options["user"], key, s.aws, s.ssh, s.tunnel, s.run.output_cap, self.aws.region, self.aws.profile))
        return hashlib.sha256(facts.encode()).hexdigest()


def connect(target: Target | str, *, settings: Settings | None = None, **kwargs: Any) -> SSMConnection:
    """``ssmfab.connect("i-0abc…", user=…, key_filename=…)``: one Fabric Connection through SSM.

    Keyword arguments naming settings (region, profile, user, key_filename, tunnel, …) override the
    configuration; any others go to SSMConnection (e.g. ``connect_kwargs``, ``config``).
    """
    setting_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in OVERRIDE_KEYS}
    return Client(settings, **setting_kwargs).connect(target, **kwargs)
