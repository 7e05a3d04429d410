"""Port forwarding, ``ssh -L`` style: local ports that lead to a port on an instance, or through it to a host
only it can reach (an RDS database, say).

Two ways, one spec syntax (``[LOCAL_PORT:]HOST:PORT``; no LOCAL_PORT, or 0: any free port):

``SSHForwarder``
    Over the SSH connection ssmfab already makes through the SSM tunnel: every spec shares the one session,
    each local connection is an SSH ``direct-tcpip`` channel (sshd dials HOST:PORT on the instance's side).
    Needs an SSH login; sshd's ``AllowTcpForwarding`` decides.
``PluginForwarder``
    No SSH at all: one SSM session per spec with ``AWS-StartPortForwardingSession`` (HOST is the instance
    itself: ``localhost``) or ``AWS-StartPortForwardingSessionToRemoteHost`` (any other HOST), and
    session-manager-plugin listening on the local port, as ``aws ssm start-session`` would run it. Needs only
    ``ssm:StartSession`` on that document.

Both listen on loopback only, say which local address leads where, and close everything they opened (listeners,
channels, plugin processes, SSM sessions) on ``close()``, which Ctrl-C reaches through the context manager.
"""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import subprocess
import threading
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import IO, Any

from .aws import aws_errors
from .exceptions import ConfigError, TunnelError
from .targets import Target

#: ``[LOCAL_PORT:]HOST:PORT``; HOST may be an IPv6 address in brackets.
SPEC = re.compile(r"^(?:(?P<local>\d{1,5}):)?(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):(?P<port>\d{1,5})$")
#: Hosts that mean "the instance itself" (AWS-StartPortForwardingSession rather than ...ToRemoteHost).
INSTANCE_ITSELF = ("localhost", "127.0.0.1", "::1")
DOCUMENT = "AWS-StartPortForwardingSession"
REMOTE_HOST_DOCUMENT = "AWS-StartPortForwardingSessionToRemoteHost"
#: What session-manager-plugin prints once it listens (portsession/muxportforwarding.go, basicportforwarding.go).
PLUGIN_LISTENING = re.compile(r"Port (\d+) opened for sessionId")
BIND_ADDRESS = "127.0.0.1"


@dataclass(frozen=True)
class ForwardSpec:
    local_port: int
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.local_port}:{host}:{self.port}" if self.local_port else f"{host}:{self.port}"

    @property
    def to_instance_itself(self) -> bool:
        return self.host.lower() in INSTANCE_ITSELF


def parse_forward_specs(text: str) -> list[ForwardSpec]:
    """Specs separated by commas or spaces; ConfigError (one line, naming the spec) for anything malformed."""
    words = [w for w in re.split(r"[,\s]+", text.strip()) if w]
    if not words:
        raise ConfigError("no forward given: expected [LOCAL_PORT:]HOST:PORT, e.g. 8080:localhost:80")
    specs = []
    for word in words:
        match = SPEC.fullmatch(word)
        if match is None:
            raise ConfigError(
                f"bad forward {word!r}: expected [LOCAL_PORT:]HOST:PORT, e.g. 8080:localhost:80 or 5432:db.internal:5432"
            )
        local, port = int(match["local"] or 0), int(match["port"])
        if not 0 < port < 65536 or local > 65535:
            raise ConfigError(f"bad forward {word!r}: ports are 1-65535 (LOCAL_PORT 0 or none: any free port)")
        specs.append(ForwardSpec(local, match["host"].strip("[]"), port))
    taken = [s.local_port for s in specs if s.local_port]
    if len(taken) != len(set(taken)):
        raise ConfigError(f"forward {text.strip()!r} uses a local port twice")
    return specs


def bind_local(spec: ForwardSpec) -> socket.socket:
    """A loopback listener for ``spec`` (a free port when it names none); ConfigError when the port is taken."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.bind((BIND_ADDRESS, spec.local_port))
        listener.listen(16)
    except OSError as exc:
        listener.close()
        raise ConfigError(f"cannot listen on {BIND_ADDRESS}:{spec.local_port} for {spec}: {exc.strerror}; choose another LOCAL_PORT") from None
    return listener


@dataclass(frozen=True)
class Forwarding:
    """One open forward: the local address and where it leads."""

    spec: ForwardSpec
    local: str

    def line(self, via: str) -> str:
        return f"{self.local} -> {self.spec.host}:{self.spec.port} via {via}"


class _Forwarder:
    """A context manager that opens every forward or, when one fails, closes what it had opened."""

    def _open_all(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Any:
        try:
            self._open_all()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SSHForwarder(_Forwarder):
    """Local listeners whose connections become ``direct-tcpip`` channels of one SSH connection."""

    def __init__(self, conn: Any, specs: list[ForwardSpec], notify: Callable[[str], Any]) -> None:
        self.conn = conn
        self.specs = specs
        self.notify = notify
        self.forwardings: list[Forwarding] = []
        self._listeners: dict[socket.socket, ForwardSpec] = {}
        self._wake_read, self._wake_write = socket.socketpair()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def _open_all(self) -> None:
        for spec in self.specs:  # every port is bound before the session opens: a taken one fails at once
            listener = bind_local(spec)
            self._listeners[listener] = spec
            self.forwardings.append(Forwarding(spec, f"{BIND_ADDRESS}:{listener.getsockname()[1]}"))
        self.conn.open()
        self._start(self._accept_loop, "ssmfab-forward-accept")

    @property
    def alive(self) -> bool:
        transport = getattr(self.conn, "transport", None)
        return transport is not None and transport.is_active()

    def _start(self, target: Callable[..., None], name: str, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        sources: list[Any] = [*self._listeners, self._wake_read]
        while not self._stopping.is_set():
            ready, _, _ = select.select(sources, [], [])
            for listener in ready:
                if listener is self._wake_read or self._stopping.is_set():
                    return
                with suppress(OSError):
                    client, peer = listener.accept()
                    self._start(self._pump, "ssmfab-forward", client, peer, self._listeners[listener])

    def _pump(self, client: socket.socket, peer: tuple[str, int], spec: ForwardSpec) -> None:
        label = self.conn.target.label
        try:
            channel = self.conn.transport.open_channel("direct-tcpip", (spec.host, spec.port), peer)
        except Exception as exc:  # noqa: BLE001 - paramiko's ChannelException or a transport that went away
            self.notify(f"{label}: {spec.host}:{spec.port} could not be reached from the instance ({exc}); connection from {peer[1]} closed")
            client.close()
            return
        try:
            _relay(client, channel, self._wake_read, self._stopping)
        except OSError:
            pass  # either end went away mid-copy: this connection is over, the others go on
        finally:
            channel.close()
            client.close()

    def close(self) -> None:
        """Stop accepting, cut every forwarded connection, close the SSH connection (and so the SSM session)."""
        self._stopping.set()
        with suppress(OSError):
            self._wake_write.send(b"x")
        with self._lock:
            threads = list(self._threads)
        # Each thread sees the wake-up (it stays readable) and closes its own ends; closing them from here
        # while a thread selects on them would race it.
        for thread in threads:
            thread.join(10)
        for listener in self._listeners:
            listener.close()
        self._listeners.clear()
        with suppress(Exception):
            self.conn.close()
        self._wake_read.close()
        self._wake_write.close()


def _relay(client: socket.socket, channel: Any, wake: socket.socket, stopping: threading.Event) -> None:
    """Copy both ways until either side ends (or the forwarder stops)."""
    while not stopping.is_set():
        ready, _, _ = select.select([client, channel, wake], [], [])
        if wake in ready:
            return
        if client in ready:
            data = client.recv(32768)
            if not data:
                channel.shutdown_write()
                _drain(channel, client, wake, stopping)
                return
            channel.sendall(data)
        if channel in ready:
            data = channel.recv(32768)
            if not data:
                with suppress(OSError):
                    client.shutdown(socket.SHUT_WR)
                _drain_socket(client, channel, wake, stopping)
                return
            client.sendall(data)


def _drain(channel: Any, client: socket.socket, wake: socket.socket, stopping: threading.Event) -> None:
    """The local side finished sending: deliver the rest of the remote side's answer."""
    while not stopping.is_set():
        ready, _, _ = select.select([channel, wake], [], [])
        if wake in ready:
            return
        data = channel.recv(32768)
        if not data:
            return
        client.sendall(data)


def _drain_socket(client: socket.socket, channel: Any, wake: socket.socket, stopping: threading.Event) -> None:
    """The remote side finished sending: pass on what the local side still sends."""
    while not stopping.is_set():
        ready, _, _ = select.select([client, wake], [], [])
        if wake in ready:
            return
        data = client.recv(32768)
        if not data:
            return
        channel.sendall(data)


class PluginForwarder(_Forwarder):
    """One SSM port forwarding session per spec, session-manager-plugin listening for each."""

    def __init__(self, client: Any, target: Target, specs: list[ForwardSpec], *, wait: float) -> None:
        self.client = client
        self.target = target
        self.specs = specs
        self.wait = wait
        self.forwardings: list[Forwarding] = []
        self._plugins: list[tuple[subprocess.Popen[bytes], str]] = []

    def _open_all(self) -> None:
        for spec in self.specs:
            self.forwardings.append(self._open(spec))

    @property
    def alive(self) -> bool:
        return all(process.poll() is None for process, _ in self._plugins)

    def request(self, spec: ForwardSpec) -> dict[str, Any]:
        parameters = {"portNumber": [str(spec.port)], "localPortNumber": [str(spec.local_port)]}
        if not spec.to_instance_itself:
            parameters["host"] = [spec.host]
        request: dict[str, Any] = {
            "Target": self.target.id,
            "DocumentName": DOCUMENT if spec.to_instance_itself else REMOTE_HOST_DOCUMENT,
            "Parameters": parameters,
        }
        reason = self.client.settings.tunnel.reason
        if reason:
            request["Reason"] = reason
        return request

    def _open(self, spec: ForwardSpec) -> Forwarding:
        from .tunnel import plugin_command, plugin_version, session_reason

        session_reason(self.client.settings)
        version = plugin_version(self.client.settings.tunnel.plugin)
        ssm = self.client.aws.ssm()
        request = self.request(spec)
        with aws_errors(f"starting the port forwarding session for {spec}", self.target.label):
            response = dict(ssm.start_session(**request))
        session_id = str(response["SessionId"])
        argv, env = plugin_command(self.client.settings, self.client.aws, ssm.meta.endpoint_url, version, request, response)
        try:
            process = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as exc:
            self._end_session(session_id)
            raise TunnelError(f"{self.target.label}: cannot start {argv[0]}: {exc.strerror}") from None
        self._plugins.append((process, session_id))
        port, said = _listening_port(process, self.wait)
        if port is None:
            last = next((line for line in reversed(said) if line.strip()), "no output")
            raise TunnelError(f"{self.target.label}: session-manager-plugin did not open a local port for {spec}: {last.strip()}")
        # Keep reading what the plugin prints, so it never blocks on a full pipe.
        threading.Thread(target=_discard, args=(process.stdout,), name="ssmfab-forward-plugin", daemon=True).start()
        return Forwarding(spec, f"localhost:{port}")

    def close(self) -> None:
        """End each plugin (SIGTERM: it sends TerminateSession itself), then make sure each session ended."""
        for process, _ in self._plugins:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process, session_id in self._plugins:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            if process.stdout is not None:
                process.stdout.close()
            self._end_session(session_id)
        self._plugins.clear()

    def _end_session(self, session_id: str) -> None:
        from .tunnel import SessionEnder

        SessionEnder(self.client.aws.ssm, self.client.notify).end(session_id, self.target.id)


def _listening_port(process: subprocess.Popen[bytes], wait: float) -> tuple[int | None, list[str]]:
    """The port the plugin says it listens on, reading its output until it says so, exits, or ``wait`` passes."""
    assert process.stdout is not None
    said: list[str] = []
    found: list[int] = []
    done = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for raw in iter(process.stdout.readline, b""):
            line = raw.decode(errors="replace")
            said.append(line)
            match = PLUGIN_LISTENING.search(line)
            if match:
                found.append(int(match.group(1)))
                break
        done.set()

    reader = threading.Thread(target=read, name="ssmfab-forward-wait", daemon=True)
    reader.start()
    done.wait(wait)
    return (found[0] if found else None), said


def _discard(stream: IO[bytes] | None) -> None:
    if stream is None:
        return
    with suppress(ValueError, OSError):
        for _ in iter(stream.readline, b""):
            pass
