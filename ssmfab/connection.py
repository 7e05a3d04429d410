"""A Fabric Connection whose transport is an SSM tunnel.

Everything Fabric offers (run, sudo, put, get, cd, prefix, forward_local, sftp) works with Fabric's
arguments: ``open``/``close`` differ, and ``put``/``get`` are ssmfab's verified, atomic, streamed transfers. Opening starts the tunnel, pins the host key per instance id and maps every
failure to a one-line ssmfab error naming the host; closing ends the SSH session, the tunnel's process
group and the SSM session, whatever state they are in. While open, keepalives watch the session (see
``keepalive``): a data channel that died ends the host's command with one line instead of a hang.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import paramiko
from fabric import Config, Connection

from .fastssh import fast_transport
from .exceptions import AuthenticationError, SessionLostError, SSHError, SSMFabError
from .interrupt import Interrupted
from .keepalive import KeepaliveWatch
from .keys import needs_passphrase
from .retry import Backoff
from .runners import DEFAULT_OUTPUT_CAP, CappedRemote
from .hostkeys import KnownHosts, PinningPolicy, changed_key_error
from .targets import Target
from .transfer.library import Local, TransferResult, connection_get, connection_put
from .tunnel import Tunnel, TunnelFactory

if TYPE_CHECKING:
    from .pool import ConnectionPool

#: Seconds the first channel of a warm connection may take to open before the connection counts as dead and is
#: replaced (nothing was sent on it yet). Shorter than a cold handshake's patience: a live warm session answers
#: in one round trip.
WARM_CHANNEL_TIMEOUT = 10.0


def default_config() -> Config:
    """Fabric config for SSM connections: an explicit empty ssh_config (a user's ~/.ssh/config must not
    swap our tunnel for its own) and no local stdin forwarding (hosts run in parallel threads; pass
    ``in_stream=sys.stdin`` to a single ``run`` that needs it), and a runner that keeps only the tail of
    huge outputs in memory. ``lazy``: Fabric's and invoke's own config files (``~/.fabric.yaml``,
    ``/etc/fabric.yaml``) are not read, so a ``run.warn`` or ``run.dry`` there cannot silently turn a fleet's
    failures into successes or its commands into no-ops; pass ``config=fabric.Config()`` to opt in."""
    overrides = {"run": {"in_stream": False}, "runners": {"remote": CappedRemote}}
    return Config(ssh_config=paramiko.SSHConfig(), overrides=overrides, lazy=True)


class SSMConnection(Connection):  # type: ignore[misc]
    """``fabric.Connection`` to one instance through Systems Manager.

    Build it with ``ssmfab.connect(...)`` or ``Client.connect(...)``, which fill in the tunnel factory,
    the pinned-keys file and the user from configuration.
    """

    # invoke's DataProxy turns assignments to undeclared attributes into config entries; declaring them
    # here keeps them plain attributes (Fabric does the same for host, user, port…).
    target: Target = cast(Target, None)
    tunnels: TunnelFactory = cast(TunnelFactory, None)
    known_hosts: KnownHosts = cast(KnownHosts, None)
    strict_host_keys = False
    notify: Any = None
    before_open: Callable[[], Any] | None = None
    output_cap = DEFAULT_OUTPUT_CAP
    backoff: Backoff = Backoff()
    stall_timeout = 60.0
    tunnel: Tunnel | None = None
    key_filename: str | None = None
    #: Set when the run is interrupted (a fan-out sets it on Ctrl-C): no tunnel opens any more, and transfers
    #: stop between chunks, removing their temporary files.
    cancel: threading.Event | None = None
    keepalive_interval = 10.0
    keepalive_count_max = 3
    #: Why the session was found dead by the keepalives, if it was (kept after the tunnel is closed).
    lost: SSMFabError | None = None
    #: The open session's keepalive watch (None while closed or with keepalives off).
    keepalive: KeepaliveWatch | None = None
    #: The pool a warm connection goes back to when released (None: released means closed).
    pool: ConnectionPool | None = None
    #: Seconds it stays warm once released.
    persist = 0.0
    #: Taken warm from the pool and no channel opened on it yet: a failure to open one means the session
    #: died while it waited, and nothing has been sent, so it is replaced once.
    warm_unproven = False
    #: The link's measured rate per direction ("put", "get"), bytes/s: transfers decide compression with it.
    link_rates: dict[str, float] = cast(dict[str, float], None)
    #: put/get's ``compress`` and ``streams`` when a call gives none (transfer.compress, transfer.streams).
    transfer_compress: bool | None = None
    transfer_streams: int | None = None
    #: The arguments this connection was made with, for sibling() (a striped transfer's extra sessions).
    made_with: dict[str, Any] = cast(dict[str, Any], None)

    def __init__(
        self,
        target: Target | str,
        *,
        tunnels: TunnelFactory,
        known_hosts: KnownHosts,
        user: str,
        key_filename: str | None = None,
        pkey: paramiko.PKey | None = None,
        strict_host_keys: bool = False,
        connect_timeout: float = 30.0,
        config: Config | None = None,
        connect_kwargs: dict[str, Any] | None = None,
        notify: Any = None,
        before_open: Callable[[], Any] | None = None,
        output_cap: int = DEFAULT_OUTPUT_CAP,
        backoff: Backoff | None = None,
        stall_timeout: float = 60.0,
        keepalive_interval: float = 10.0,
        keepalive_count_max: int = 3,
    ) -> None:
        arguments = dict(locals())
        self.made_with = {name: value for name, value in arguments.items() if name not in ("self", "target", "__class__")}
        self.target = target if isinstance(target, Target) else Target(id=target)
        kwargs: dict[str, Any] = {
            # With a ready socket paramiko's own `timeout` is unused; these bound each handshake phase.
            "banner_timeout": connect_timeout,
            "auth_timeout": connect_timeout,
            "channel_timeout": connect_timeout,
            "transport_factory": fast_transport,
        }
        if pkey is not None:
            kwargs["pkey"] = pkey  # ``key_filename``, already loaded: paramiko would read it again per connection
        elif key_filename:
            kwargs["key_filename"] = key_filename
        kwargs.update(connect_kwargs or {})
        super().__init__(
            host=self.target.id,
            user=user,
            port=22,
            config=config or default_config(),
            connect_kwargs=kwargs,
            gateway=False,
        )
        self.tunnels = tunnels
        self.known_hosts = known_hosts
        self.strict_host_keys = strict_host_keys
        self.notify = notify
        self.before_open = before_open
        self.output_cap = output_cap
        self.backoff = backoff or Backoff()
        self.stall_timeout = stall_timeout
        self.keepalive_interval = keepalive_interval
        self.keepalive_count_max = keepalive_count_max
        self.lost = None
        self.keepalive = None
        self.link_rates = {}
        self.tunnel: Tunnel | None = None
        self.gateway: Any = False
        self.key_filename = key_filename

    def sibling(self) -> SSMConnection:
        """An unopened connection to the same instance made the same way: its own tunnel and SSM session (a
        striped transfer moves parts over several at once). It follows this one's cancel event."""
        other = SSMConnection(self.target, **self.made_with)
        other.cancel = self.cancel
        return other

    @property
    def label(self) -> str:
        return self.target.label

    def __repr__(self) -> str:
        return f"<SSMConnection {self.target.label} user={self.user} tunnel={self.tunnels.mode}>"

    def open(self) -> Any:
        if self.is_connected:
            return None
        return self.backoff.run(self._open_once, label=self.label, notify=self.notify)

    def _open_once(self) -> Any:
        # A reconnect after the tunnel died: end what is left of the old one first.
        self._close_transport_and_tunnel()
        if self.before_open is not None:
            self.before_open()  # e.g. push an ephemeral key: it must be fresh for every (re)connection
        self.client.set_missing_host_key_policy(
            PinningPolicy(self.known_hosts, strict=self.strict_host_keys, notify=self.notify)
        )
        pinned = self.client.get_host_keys()
        pinned.clear()
        for key_type, key in self.known_hosts.lookup(self.host).items():
            pinned.add(self.host, key_type, key)
        # Fabric asks open_gateway() for a socket only when `gateway` is truthy.
        self.gateway = self.tunnels
        self.lost = None
        self.keepalive = None
        try:
            opened = super().open()
            self._watch_session()
            return opened
        except BaseException as exc:
            error = self.explain(exc)
            self._close_transport_and_tunnel()
            if error is None:
                raise
            raise error from exc
        finally:
            self.gateway = False

    def open_gateway(self) -> Any:
        if self.cancel is not None and self.cancel.is_set():
            raise Interrupted()
        self.tunnel = self.tunnels.open(self.host, self.label)
        if self.cancel is not None and self.cancel.is_set():
            # Interrupted while the tunnel opened: whoever closed this connection may have come too early.
            self._close_transport_and_tunnel()
            raise Interrupted()
        if self.pool is not None:
            self.pool.session_opened(self)  # a keeper writes it down now: killed mid-command, it leaves none unknown
        return self.tunnel.sock

    def _watch_session(self) -> None:
        tunnel, transport = self.tunnel, self.client.get_transport()
        if tunnel is None or transport is None or self.keepalive_interval <= 0:
            return
        interval, count = self.keepalive_interval, self.keepalive_count_max
        error = SessionLostError(
            f"{self.label}: SSM session lost: nothing came through the tunnel for {interval * (count + 1):g} s "
            f"({count} keepalives unanswered): check the instance's SSM agent and network "
            "(ssh.keepalive_interval / ssh.keepalive_count_max set the patience)",
            self.label,
        )

        def on_lost() -> None:
            self.lost = error
            tunnel.lose(error)  # cuts the stream: paramiko's transport ends and the command returns

        self.keepalive = KeepaliveWatch(transport, lambda: tunnel.sock.reads, interval, count, on_lost)
        self.keepalive.install()

    def open_channel(self, **kwargs: Any) -> Any:
        """A new session channel (``transport.open_session(**kwargs)``). On a connection just taken warm from its
        pool the first channel is also the proof that it still lives: when it cannot be opened within
        WARM_CHANNEL_TIMEOUT (the instance rebooted, or the session was ended or went silent while it waited),
        the connection is replaced once, before anything was sent on it, and the channel opened on the new one.
        Everything that opens a connection's first channel comes here (commands, SFTP, transfers' own
        channels), so none of them fails on, or waits out, a connection that died while it was warm."""
        if self.warm_unproven:
            self.warm_unproven = False
            limit = min(WARM_CHANNEL_TIMEOUT, self.connect_kwargs.get("channel_timeout") or WARM_CHANNEL_TIMEOUT)
            try:
                transport = self.client.get_transport()
                if transport is None:
                    raise EOFError("no transport")
                return transport.open_session(**{**kwargs, "timeout": min(limit, kwargs.get("timeout") or limit)})
            except (paramiko.SSHException, EOFError, OSError):
                self.replace()
        if not self.is_connected:
            self.open()
        return self.client.get_transport().open_session(**kwargs)

    def create_session(self) -> Any:
        if not self.warm_unproven:
            return super().create_session()
        return self.open_channel()

    def sftp(self) -> Any:
        if self.warm_unproven:
            channel = self.open_channel()
            channel.invoke_subsystem("sftp")
            stale: Any = getattr(self, "_sftp", None)
            self._sftp = paramiko.SFTPClient(channel)
            if stale is not None:
                with contextlib.suppress(Exception):
                    stale.close()
        return super().sftp()

    def replace(self) -> None:
        """A warm connection found dead before anything was sent on it: end it and open a new one."""
        self._close_transport_and_tunnel()
        self._sftp = None
        self.open()

    def release(self, keep: bool = True) -> None:
        """Done with the connection: back to its pool if it has one, ``keep`` is true and it is healthy (connected,
        not lost, not cancelled); closed otherwise."""
        healthy = (
            keep and self.pool is not None and self.persist > 0 and self.is_connected and self.lost is None
            and self.tunnel is not None and not (self.cancel is not None and self.cancel.is_set())
        )  # fmt: skip
        if healthy and self.pool is not None and self.pool.give_back(self, self.persist):
            return
        self.close()

    def __exit__(self, *exc: Any) -> None:
        self.release(keep=exc[0] is None)

    def _raise_if_lost(self, result: Any = None) -> None:
        """Raise why the session died under a command, if it did: keepalives unanswered, or (for a command that
        failed or ended without an exit status) the tunnel's own end."""
        if self.lost is not None:
            raise self.lost
        if result is not None and getattr(result, "exited", None) != -1:
            return
        tunnel, transport = self.tunnel, self.client.get_transport()
        if tunnel is not None and (transport is None or not transport.is_active()):
            failure = tunnel.failure(self.label)
            if failure is not None:
                raise failure

    def run(self, command: str, **kwargs: Any) -> Any:
        try:
            result = super().run(command, **kwargs)
        except Exception:
            self._raise_if_lost()  # the session died under the command: say that, not what it did to Fabric
            raise
        self._raise_if_lost(result)
        return result

    def sudo(self, command: str, **kwargs: Any) -> Any:
        try:
            result = super().sudo(command, **kwargs)
        except Exception:
            self._raise_if_lost()
            raise
        self._raise_if_lost(result)
        return result

    def put(
        self,
        local: Local,
        remote: str | None = None,
        preserve_mode: bool = True,
        *,
        recursive: bool = False,
        compress: bool | None = None,
        streams: int | None = None,
    ) -> TransferResult:
        """Fabric's ``put`` (same arguments, same ``Result``, file-like objects too) done the ssmfab way: streamed,
        verified against the host's SHA-256, renamed into place only when whole, modes kept; ``recursive`` sends
        a folder; ``compress`` forces gzip on the wire on or off (default: when it pays); ``streams`` sets how
        many SSM sessions a large file may use at once (default: measured). Raises TransferError (one line naming
        host and path); nothing half-written is left."""
        return connection_put(self, local, remote, preserve_mode, recursive=recursive, compress=compress, streams=streams)

    def get(
        self,
        remote: str,
        local: Local | None = None,
        preserve_mode: bool = True,
        *,
        recursive: bool = False,
        compress: bool | None = None,
    ) -> TransferResult:
        """Fabric's ``get`` (same arguments and tokens, same ``Result``, file-like objects too) done the ssmfab
        way: streamed, verified, atomic, modes kept; ``recursive`` fetches a folder, and a glob fetches its
        matches into the folder ``local``; ``compress`` as for put."""
        return connection_get(self, remote, local, preserve_mode, recursive=recursive, compress=compress)

    def explain(self, exc: BaseException) -> SSMFabError | None:
        """The one-line error a user should see for ``exc`` raised by open or a command, or None to let it through."""
        host = self.label
        if isinstance(exc, SSMFabError):
            return exc
        if self.lost is not None:
            return self.lost
        if isinstance(exc, paramiko.BadHostKeyException):
            return changed_key_error(self.host, exc.key, exc.expected_key, self.known_hosts, label=host)
        if isinstance(exc, paramiko.AuthenticationException):
            key = self.key_filename or self.connect_kwargs.get("key_filename") or "the agent/default keys"
            if self.key_filename and needs_passphrase(self.key_filename):
                return AuthenticationError(
                    f"{host}: SSH key {key} needs its passphrase and ssh-agent does not hold it: "
                    f"ssh-add {key}, or use a key without one",
                    host=host,
                )
            return AuthenticationError(
                f"{host}: SSH key refused for user {self.user!r} (key: {key}): check --user "
                "(or the instance's user tag) and --key, or push a key with EC2 Instance Connect",
                host=host,
            )
        if isinstance(exc, paramiko.SSHException) and "No authentication methods available" in str(exc):
            return AuthenticationError(
                f"{host}: no SSH key to offer for user {self.user!r}: pass --key, load one in ssh-agent, or use --ephemeral-key",
                host=host,
            )
        if isinstance(exc, OSError) and exc.filename is not None and not isinstance(exc, (socket.timeout, TimeoutError)):
            # A local file (a destination folder, a key file): not the tunnel's doing.
            return SSMFabError(f"{host}: {exc.strerror or exc}: {exc.filename}", host=host)
        if isinstance(exc, (paramiko.SSHException, EOFError, OSError)):
            failure = self.tunnel.failure(host) if self.tunnel is not None else None
            if failure is not None:
                return failure
            if self.tunnel is not None and not self.tunnel.sock.banner_seen:
                return SSHError(
                    f"{host}: no SSH banner through the SSM tunnel within {self.connect_kwargs.get('banner_timeout', 0):g} s: the session is "
                    "slow to set up or sshd does not answer on the instance; check the instance, or raise "
                    "ssh.connect_timeout (SSMFAB_CONNECT_TIMEOUT)",
                    host,
                )
            if isinstance(exc, (socket.timeout, TimeoutError)):
                return SSHError(
                    f"{host}: timed out talking SSH through the SSM tunnel: check the instance, or raise "
                    "ssh.connect_timeout (SSMFAB_CONNECT_TIMEOUT)",
                    host,
                )
            return SSHError(f"{host}: SSH through the SSM tunnel failed: {str(exc) or type(exc).__name__}", host)
        return None

    def _close_transport_and_tunnel(self) -> None:
        try:
            self.client.close()
        finally:
            if self.tunnel is not None:
                self.tunnel.close()
                self.tunnel = None
            self.transport = None

    def close(self) -> None:
        """Close SFTP, SSH, the tunnel process group and the SSM session; idempotent."""
        if self.pool is not None:
            self.pool.forget(self)
        try:
            super().close()
        finally:
            self._close_transport_and_tunnel()
