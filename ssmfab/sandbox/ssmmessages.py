"""The sandbox's ``ssmmessages`` service: the Session Manager data channel, with the SSM agent's side played here.

It runs in the sandbox's moto server process, on its own thread and event loop, so the SSM calls
(StartSession, ResumeSession, TerminateSession, DescribeSessions in ``moto_ext``) and the data channel share
one view of every session. For a Port session (``AWS-StartSSHSession``) it does what the agent and the
service do together, as session-manager-plugin 1.2.677.0 expects:

- The StreamUrl is ``ws://127.0.0.1:<port>/v1/data-channel/<session-id>?role=publish_subscribe``. The first
  frame must be the OpenDataChannel text frame with the session's current token; a missing or wrong token,
  or a token of another session, closes the websocket (policy violation) and nothing else happens.
- The agent starts the handshake (HandshakeRequest, seq 0), waits for the client's HandshakeResponse, sends
  HandshakeComplete, then connects to the instance's sshd and forwards both ways.
- Every input message is acknowledged (duplicates too, and then dropped); messages ahead of the expected
  sequence number are kept until the gap is filled. Its own output is kept until acknowledged and resent
  when overdue (timeout as the plugin's: RFC 6298, 200 ms at first, at most 1 s): the plugin drops output
  that arrives before its port session attaches stdout, without an ack.
- When sshd closes, the rest of the output is delivered, then ``channel_closed`` ends the plugin and the
  session is Terminated. TerminateSession does the same at once. When sshd cannot be reached, the agent
  marks its port plugin failed with Go's dial error, which reaches the plugin as channel_closed's Output
  (printed as ``SessionId: <id> : Unable to connect to specified port: ...``); the session is Failed.
- A websocket that goes away leaves the session Connected (as on AWS, until an idle timeout this sandbox
  does not model): ResumeSession gives the session a new token, the plugin reconnects to the same URL, and
  both sides carry on with the sequence numbers where they were; unacknowledged output is resent.

**Port forwarding** (``AWS-StartPortForwardingSession``, ``AWS-StartPortForwardingSessionToRemoteHost``): the
handshake asks for a ``LocalPortForwarding`` Port session (``portNumber``, ``localPortNumber`` and ``host`` as
the documents pass them), so the plugin listens on a local port itself. With this agent version the plugin
multiplexes every local connection over the one data channel with smux (protocol 1: an 8-byte header of
version, command, little-endian length and stream id; SYN opens a stream, PSH carries data, FIN ends it, NOP
is a keepalive; ``portsession/muxportforwarding.go``). ``MuxAgent`` is the agent's side of that: a SYN dials
the destination (the instance's own port: loopback here, as every sandbox instance is; or ``host``), data goes
both ways in PSH frames, either side's end is a FIN. A destination that refuses is recorded (``PortRefused``)
and its stream ended with a FIN. Events: ``StreamOpened`` (with the destination), ``StreamClosed``.

**Link model** (``LinkModel``: ``inv sandbox.up --link``, ``SSMFAB_SANDBOX_LINK``, ``Sandbox.set_link``): the
service holds back the handshake for ``setup`` seconds (plus up to ``jitter``), sends output in messages of
at most ``chunk`` bytes (the agent reads sshd 1024 bytes at a time) and at most ``rate`` bytes per second.
Uploads are paced by the plugin itself.

**Fault switches** (``SandboxSetFaults``; ``Sandbox.set_faults``/``clear_faults``), per instance (every session
to it, current and later) or per session, flipped at any time and acting at once:

====================== ========= ==============================================================================
``SetupDelay``         seconds   extra wait before the handshake (on top of the link model's setup)
``DropAfterBytes``     bytes     abort the websocket once this many more payload bytes (either direction) have
                                 moved; 0 = now. One-shot: it clears itself when it fires.
``RefuseResume``       bool      ResumeSession fails (DoesNotExistException)
``NeverAcknowledge``   bool      input is processed but never acknowledged
``BlackHole``          bool      nothing is delivered either way (frames are read and discarded, output is held
                                 unsent), the websocket stays open; turning it off resumes delivery
``PortClosed``         bool      the agent cannot connect to the port (as if sshd were down)
``UnreachableStream``  bool      StartSession hands out a StreamUrl nothing answers on (a port the service holds
                                 bound but never listens on: connections are refused), as when the client cannot
                                 reach ssmmessages; the plugin retries, then waits forever. Read at StartSession:
                                 set it for the instance before the session starts.
====================== ========= ==============================================================================

A value of null removes one switch; ``Clear: true`` removes them all.

**Events** (``SandboxWaitForEvent``/``SandboxListEvents``; ``Sandbox.wait_for_event``/``events``): every step is
recorded with the instance id and session id, so tests wait for what happened instead of sleeping:
``StartSession``, ``ResumeSession``, ``ResumeRefused``, ``TerminateSession``, ``TokenRefused``,
``DataChannelOpened`` (a websocket accepted with a valid token), ``HandshakeComplete``, ``PortConnected``,
``PortRefused``, ``WebSocketDropped`` (by a fault), ``WebSocketClosed`` (by the plugin), ``ChannelClosed``.
``SandboxWaitForEvent`` blocks until ``Count`` such events have been recorded (or ``TimeoutSeconds``, a
safety net, pass: then it answers with what it saw).
"""

from __future__ import annotations

import asyncio
import random
import secrets
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from . import datachannel as dc
from .plugin import LinkModel

AGENT_VERSION = "3.3.1142.0"
#: Output kept unacknowledged before the agent stops reading sshd.
WINDOW_BYTES = 4 << 20
#: The plugin's retransmission timer: initial, cap, floor (config.go: 200 ms, 1 s; checks every 100 ms).
INITIAL_RTO, MAX_RTO, MIN_RTO = 0.2, 1.0, 0.1
RESEND_TICK = 0.1
#: How long the agent waits for the client's HandshakeResponse before giving up on the session.
HANDSHAKE_TIMEOUT = 60.0
#: How long output still unacknowledged after sshd closed is kept for a client that may yet resume.
DRAIN_TIMEOUT = 30.0
POLICY_VIOLATION = 1008

FAULTS: dict[str, type] = {
    "SetupDelay": float,
    "DropAfterBytes": int,
    "RefuseResume": bool,
    "NeverAcknowledge": bool,
    "BlackHole": bool,
    "PortClosed": bool,
    "UnreachableStream": bool,
}


class ServiceError(Exception):
    """A request the service refuses (unknown session, bad fault switch); the SSM handler maps it to AWS's error."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _now() -> float:
    return datetime.now(timezone.utc).timestamp()


@dataclass
class Outgoing:
    message: dc.Message
    frame: bytes
    sent_at: float = 0.0
    resent: bool = False


@dataclass
class Agent:
    """The agent's half of one session's data channel (lives on the service's event loop)."""

    service: SSMMessagesService
    session: dict[str, Any]
    address: tuple[str, int]
    ws: Any = None
    next_out: int = 0
    unacked: dict[int, Outgoing] = field(default_factory=dict)
    unacked_bytes: int = 0
    expected_in: int = 0
    ahead: dict[int, dc.Message] = field(default_factory=dict)
    started: bool = False
    finished: bool = False
    handshake_done: asyncio.Event = field(default_factory=asyncio.Event)
    window_open: asyncio.Event = field(default_factory=asyncio.Event)
    drained: asyncio.Event = field(default_factory=asyncio.Event)
    attached: asyncio.Event = field(default_factory=asyncio.Event)
    #: One frame at a time: an old websocket's last frames and a resumed one's can arrive together, and a
    #: message must not be taken as the expected one twice while the first copy waits on sshd.
    receiving: asyncio.Lock = field(default_factory=asyncio.Lock)
    writer: asyncio.StreamWriter | None = None
    before_port: list[bytes] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    srtt: float = 0.0
    rttvar: float = 0.0
    rto: float = INITIAL_RTO
    moved_since_drop_armed: int = 0
    pace_due: float = 0.0

    @property
    def session_id(self) -> str:
        return str(self.session["SessionId"])

    @property
    def target(self) -> str:
        return str(self.session["Target"])

    def fault(self, name: str) -> Any:
        return self.service.fault(self.target, self.session_id, name)

    def record(self, event: str, **detail: Any) -> None:
        self.service.record(event, self.target, self.session_id, **detail)

    # -- websockets --------------------------------------------------------------------------------
    async def attach(self, ws: Any) -> None:
        old, self.ws = self.ws, ws
        self.attached.set()
        if old is not None and old is not ws:
            await _abort(old)
        if not self.started:
            self.started = True
            self.window_open.set()
            self.drained.set()
            self.tasks.append(asyncio.ensure_future(self._run()))
            self.tasks.append(asyncio.ensure_future(self._resend_overdue()))
        else:
            for item in list(self.unacked.values()):  # a resumed client gets what it may have missed at once
                await self._send(item)

    async def detach(self, ws: Any) -> None:
        if self.ws is ws:
            self.ws = None
            self.attached.clear()

    async def receive(self, frame: bytes) -> None:
        async with self.receiving:
            await self._receive(frame)

    async def _receive(self, frame: bytes) -> None:
        if self.fault("BlackHole"):
            return
        try:
            message = dc.decode(frame)
        except ValueError:
            return  # the real service drops what it cannot parse
        if message.message_type == dc.ACKNOWLEDGE:
            self._acknowledged(message)
        elif message.message_type == dc.INPUT_STREAM_DATA:
            self._count_moved(len(message.payload))
            if not self.fault("NeverAcknowledge"):
                await self._send_raw(dc.acknowledgement(message).encode())
            if message.sequence == self.expected_in:
                await self._process(message)
                self.expected_in += 1
                while self.expected_in in self.ahead:
                    await self._process(self.ahead.pop(self.expected_in))
                    self.expected_in += 1
            elif message.sequence > self.expected_in:
                self.ahead.setdefault(message.sequence, message)
            # behind: a duplicate, acknowledged above and dropped

    async def _process(self, message: dc.Message) -> None:
        if message.payload_type == dc.HANDSHAKE_RESPONSE:
            self.handshake_done.set()
        elif message.payload_type == dc.OUTPUT:
            if self.writer is None:
                self.before_port.append(message.payload)
            else:
                self.writer.write(message.payload)
                await self.writer.drain()
        elif message.payload_type == dc.FLAG:
            flag = dc.flag_of(message)
            if flag == dc.TERMINATE_SESSION:
                await self.finish("", "Terminated")
            elif flag == dc.DISCONNECT_TO_PORT and self.writer is not None:
                self.writer.close()

    def _acknowledged(self, ack: dc.Message) -> None:
        try:
            sequence = dc.acknowledged_sequence(ack)
        except (ValueError, KeyError, TypeError):
            return
        item = self.unacked.pop(sequence, None)
        if item is None:
            return
        if not item.resent:  # Karn: a resent message's ack says nothing about the round trip
            self._sample_rtt(time.monotonic() - item.sent_at)
        self.unacked_bytes -= len(item.message.payload)
        if self.unacked_bytes < WINDOW_BYTES:
            self.window_open.set()
        if not self.unacked:
            self.drained.set()

    def _sample_rtt(self, rtt: float) -> None:
        if self.srtt == 0.0:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt
        self.rto = min(MAX_RTO, max(MIN_RTO, self.srtt + 4 * self.rttvar))

    def _count_moved(self, count: int) -> None:
        limit = self.fault("DropAfterBytes")
        if limit is None:
            self.moved_since_drop_armed = 0
            return
        self.moved_since_drop_armed += count
        ws = self.ws
        if self.moved_since_drop_armed >= int(limit) and ws is not None:
            self.moved_since_drop_armed = 0
            self.service.clear_fault(self.target, self.session_id, "DropAfterBytes")
            self.record("WebSocketDropped", bytes=int(limit))
            self.ws = None
            self.attached.clear()
            asyncio.ensure_future(_abort(ws))

    def faults_changed(self) -> None:
        """A switch was flipped: act on the ones that act at once."""
        if self.fault("DropAfterBytes") == 0:
            self._count_moved(0)

    # -- sending -----------------------------------------------------------------------------------
    async def _send_raw(self, frame: bytes) -> bool:
        ws = self.ws
        if ws is None:
            return False
        try:
            await ws.send(frame)
            return True
        except Exception:  # noqa: BLE001 - a websocket that died mid-send: the message stays unacked
            return False

    async def _send(self, item: Outgoing) -> None:
        if self.fault("BlackHole"):
            return
        item.sent_at = time.monotonic()
        await self._send_raw(item.frame)

    async def _emit(self, payload_type: int, payload: bytes) -> None:
        message = dc.stream_message(dc.OUTPUT_STREAM_DATA, self.next_out, payload_type, payload)
        self.next_out += 1
        item = Outgoing(message, message.encode())
        self.unacked[message.sequence] = item
        self.unacked_bytes += len(payload)
        self.drained.clear()
        if self.unacked_bytes >= WINDOW_BYTES:
            self.window_open.clear()
        await self._pace(len(payload))
        self._count_moved(len(payload) if payload_type == dc.OUTPUT else 0)
        await self._send(item)
        item.sent_at = time.monotonic()

    async def _pace(self, count: int) -> None:
        link = self.service.link
        if link.rate:
            now = time.monotonic()
            self.pace_due = max(self.pace_due, now) + count / link.rate
            if self.pace_due > now:
                await asyncio.sleep(self.pace_due - now)
        if link.jitter:
            await asyncio.sleep(random.uniform(0, link.jitter))

    async def _resend_overdue(self) -> None:
        while not self.finished:
            await asyncio.sleep(RESEND_TICK)
            if self.ws is None or self.fault("BlackHole"):
                continue
            now = time.monotonic()
            for item in list(self.unacked.values()):
                if item.message.sequence in self.unacked and now - item.sent_at >= self.rto:
                    item.resent = True
                    await self._send(item)

    # -- the session -------------------------------------------------------------------------------
    def handshake_properties(self) -> dict[str, str]:
        """The Port session's properties the handshake asks the client to take (SSH's: the port only)."""
        return {"portNumber": str((self.session.get("Parameters") or {}).get("portNumber", ["22"])[0])}

    async def _handshake(self, jitter: bool = True) -> bool:
        """The session's setup delay, then the handshake the agent starts; False when the client never answered
        (the session is then Failed and finished)."""
        link = self.service.link
        delay = link.setup + float(self.fault("SetupDelay") or 0) + (random.uniform(0, link.jitter) if jitter and link.jitter else 0)
        if delay:
            await asyncio.sleep(delay)
        started = time.monotonic_ns()
        properties = dict(self.handshake_properties())
        port = properties.pop("portNumber")
        await self._emit(dc.HANDSHAKE_REQUEST, dc.handshake_request_payload(AGENT_VERSION, port, **properties))
        try:
            await asyncio.wait_for(self.handshake_done.wait(), HANDSHAKE_TIMEOUT)
        except asyncio.TimeoutError:
            await self.finish("", "Failed")
            return False
        await self._emit(dc.HANDSHAKE_COMPLETE, dc.handshake_complete_payload(time.monotonic_ns() - started))
        self.record("HandshakeComplete")
        return True

    async def _run(self) -> None:
        try:
            if not await self._handshake():
                return
            reader = await self._connect_port(self.handshake_properties()["portNumber"])
            if reader is None:
                return
            await self._forward_port(reader)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the agent's session ends; the sandbox keeps serving
            self.record("AgentError", error=repr(exc))
            await self.finish("", "Failed")

    async def _connect_port(self, port: str) -> asyncio.StreamReader | None:
        try:
            if self.fault("PortClosed"):
                raise ConnectionRefusedError(111, "connection refused")
            reader, writer = await asyncio.open_connection(*self.address)
        except OSError as exc:
            reason = "connection refused" if isinstance(exc, ConnectionRefusedError) else (exc.strerror or str(exc)).lower()
            # What the agent's port plugin reports when it cannot dial (port_basic.go InitializeSession).
            text = f"Unable to connect to specified port: dial tcp 127.0.0.1:{port}: connect: {reason}"
            self.record("PortRefused", output=text)
            await self.finish(text, "Failed")
            return None
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.writer = writer
        self.record("PortConnected")
        for data in self.before_port:
            writer.write(data)
        self.before_port.clear()
        await writer.drain()
        return reader

    async def _forward_port(self, reader: asyncio.StreamReader) -> None:
        while not self.finished:
            await self.window_open.wait()
            data = await reader.read(self.service.link.chunk)
            if not data:
                break
            await self._emit(dc.OUTPUT, data)
        if self.finished:
            return
        # sshd closed: deliver what is still unacknowledged (to a client that may yet resume), then close.
        last_progress = len(self.unacked)
        while self.unacked:
            try:
                await asyncio.wait_for(self.drained.wait(), DRAIN_TIMEOUT)
            except asyncio.TimeoutError:
                if len(self.unacked) == last_progress:
                    break
                last_progress = len(self.unacked)
        await self.finish("", "Terminated")

    async def finish(self, output: str, status: str) -> None:
        """End the session: channel_closed to the client (when one is attached), sshd closed, status recorded."""
        if self.finished:
            return
        self.finished = True
        self.service.end_session(self.session, status)
        ws = self.ws
        if ws is not None:
            await self._send_raw(dc.channel_closed(self.session_id, output).encode())
        self.record("ChannelClosed", output=output, status=status)
        if self.writer is not None:
            self.writer.close()
        if ws is not None:
            try:
                await asyncio.wait_for(ws.close(), 2)
            except Exception:  # noqa: BLE001 - the client went away first
                await _abort(ws)
        current = asyncio.current_task()
        for task in self.tasks:
            if task is not current:
                task.cancel()
        self.service.forget(self.session_id)


async def _abort(ws: Any) -> None:
    """Cut a websocket the way a network does: no close frame, the TCP connection just ends."""
    transport = getattr(ws, "transport", None)
    if transport is not None:
        transport.abort()


#: Documents whose sessions forward local connections (the plugin listens; smux over the data channel).
PORT_FORWARDING_DOCUMENTS = ("AWS-StartPortForwardingSession", "AWS-StartPortForwardingSessionToRemoteHost")
#: smux protocol 1 (github.com/xtaci/smux frame.go): header = version, command, length (LE16), stream id (LE32).
SMUX_HEADER = struct.Struct("<BBHI")
SMUX_SYN, SMUX_FIN, SMUX_PSH, SMUX_NOP = 0, 1, 2, 3
#: Largest payload of one frame this side sends (the plugin's own frames are at most 32 KiB).
SMUX_FRAME = 16384


def _parameter(session: dict[str, Any], name: str, default: str = "") -> str:
    values = (session.get("Parameters") or {}).get(name) or [default]
    return str(values[0])


@dataclass
class MuxAgent(Agent):
    """The agent's side of a port forwarding session: smux streams, each dialled to the destination."""

    smux_buffer: bytearray = field(default_factory=bytearray)
    streams: dict[int, asyncio.StreamWriter] = field(default_factory=dict)
    #: Data for streams still being dialled, in order.
    pending: dict[int, list[bytes]] = field(default_factory=dict)

    @property
    def destination(self) -> tuple[str, int]:
        host = _parameter(self.session, "host", "127.0.0.1") if self.session.get("DocumentName", "").endswith("RemoteHost") else "127.0.0.1"
        return host, int(_parameter(self.session, "portNumber", "80"))

    def handshake_properties(self) -> dict[str, str]:
        properties = {
            "portNumber": _parameter(self.session, "portNumber", "80"),
            "type": "LocalPortForwarding",
            "localPortNumber": _parameter(self.session, "localPortNumber", "0"),
        }
        if self.session.get("DocumentName", "").endswith("RemoteHost"):
            properties["host"] = _parameter(self.session, "host")
        return properties

    async def _run(self) -> None:
        try:
            await self._handshake(jitter=False)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the agent's session ends; the sandbox keeps serving
            self.record("AgentError", error=repr(exc))
            await self.finish("", "Failed")

    async def _process(self, message: dc.Message) -> None:
        if message.payload_type != dc.OUTPUT:
            await super()._process(message)
            return
        self.smux_buffer += message.payload
        while len(self.smux_buffer) >= SMUX_HEADER.size:
            _, command, length, sid = SMUX_HEADER.unpack_from(self.smux_buffer)
            if len(self.smux_buffer) < SMUX_HEADER.size + length:
                break
            data = bytes(self.smux_buffer[SMUX_HEADER.size : SMUX_HEADER.size + length])
            del self.smux_buffer[: SMUX_HEADER.size + length]
            await self._frame(command, sid, data)

    async def _frame(self, command: int, sid: int, data: bytes) -> None:
        if command == SMUX_SYN:
            self.pending[sid] = []
            self.tasks.append(asyncio.ensure_future(self._stream(sid)))
        elif command == SMUX_PSH:
            writer = self.streams.get(sid)
            if writer is not None:
                writer.write(data)
                await writer.drain()
            elif sid in self.pending:
                self.pending[sid].append(data)
        elif command == SMUX_FIN:
            writer = self.streams.get(sid)
            if writer is not None and writer.can_write_eof():
                writer.write_eof()
            elif sid in self.pending:
                self.pending[sid].append(b"")  # the end, once dialled
        # NOP (keepalive) and protocol 2's UPD need no answer

    async def _send_frame(self, command: int, sid: int, data: bytes = b"") -> None:
        await self._emit(dc.OUTPUT, SMUX_HEADER.pack(1, command, len(data), sid) + data)

    async def _stream(self, sid: int) -> None:
        host, port = self.destination
        try:
            if self.fault("PortClosed"):
                raise ConnectionRefusedError(111, "connection refused")
            reader, writer = await asyncio.open_connection(host, port)
        except OSError as exc:
            self.pending.pop(sid, None)
            self.record("PortRefused", output=f"dial tcp {host}:{port}: {exc.strerror or exc}", stream=sid)
            await self._send_frame(SMUX_FIN, sid)
            return
        self.streams[sid] = writer
        self.record("StreamOpened", destination=f"{host}:{port}", stream=sid)
        for data in self.pending.pop(sid, []):
            if data:
                writer.write(data)
            elif writer.can_write_eof():
                writer.write_eof()
        try:
            await writer.drain()
            while not self.finished:
                await self.window_open.wait()
                data = await reader.read(min(self.service.link.chunk, SMUX_FRAME))
                if not data:
                    break
                await self._send_frame(SMUX_PSH, sid, data)
            if not self.finished:
                await self._send_frame(SMUX_FIN, sid)
        except (OSError, ConnectionError):
            if not self.finished:
                await self._send_frame(SMUX_FIN, sid)
        finally:
            self.streams.pop(sid, None)
            writer.close()
            self.record("StreamClosed", stream=sid)

    async def finish(self, output: str, status: str) -> None:
        for writer in list(self.streams.values()):
            writer.close()
        await super().finish(output, status)


class SSMMessagesService:
    """The data channel endpoint; ``start()`` runs it on its own thread and event loop."""

    def __init__(self, host: str = "127.0.0.1", link: LinkModel = LinkModel()) -> None:
        self.host = host
        self.port = 0
        self.link = link
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: Any = None
        #: A port bound and never listened on: what UnreachableStream's StreamUrl names (refused, and no one
        #: else can take it while the service runs).
        self._unreachable: socket.socket | None = None
        self._sessions: dict[str, dict[str, Any]] = {}
        self._agents: dict[str, Agent] = {}
        self._faults: dict[str, dict[str, Any]] = {}
        self._events: list[dict[str, Any]] = []
        self._changed = threading.Condition()

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> int:
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._listen())
            except BaseException as exc:  # noqa: BLE001 - handed to start()'s caller
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._shutdown())
            loop.close()

        self._thread = threading.Thread(target=serve, name="ssmmessages", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]
        return self.port

    async def _listen(self) -> None:
        from websockets.asyncio.server import serve

        self._server = await serve(
            self._handle, self.host, 0, compression=None, max_size=None, ping_interval=None, close_timeout=2
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        self._unreachable = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._unreachable.bind((self.host, 0))

    async def _shutdown(self) -> None:
        for agent in list(self._agents.values()):
            await agent.finish("", "Terminated")
        self._server.close()
        await self._server.wait_closed()
        if self._unreachable is not None:
            self._unreachable.close()

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def stream_url(self, session_id: str) -> str:
        return f"ws://{self.host}:{self.port}/v1/data-channel/{session_id}?role=publish_subscribe"

    def _call(self, function: Callable[[], Any]) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(function)

    # -- called by the SSM handlers (moto's threads) -----------------------------------------------
    def open_session(self, session: dict[str, Any], address: tuple[str, int]) -> None:
        session["SandboxStreamAddress"] = address
        session["StreamUrl"] = self.stream_url(session["SessionId"])
        if self.fault(session["Target"], session["SessionId"], "UnreachableStream") and self._unreachable is not None:
            port = self._unreachable.getsockname()[1]
            session["StreamUrl"] = f"ws://{self.host}:{port}/v1/data-channel/{session['SessionId']}?role=publish_subscribe"
        self._sessions[session["SessionId"]] = session
        self.record("StartSession", session["Target"], session["SessionId"])

    def resume(self, session: dict[str, Any]) -> None:
        """A new token for a live session (ServiceError when the fault switch refuses it)."""
        if self.fault(session["Target"], session["SessionId"], "RefuseResume"):
            self.record("ResumeRefused", session["Target"], session["SessionId"])
            raise ServiceError("DoesNotExistException", f"Session {session['SessionId']} cannot be resumed.")
        session["TokenValue"] = secrets.token_urlsafe(24)
        self.record("ResumeSession", session["Target"], session["SessionId"])

    def terminate(self, session: dict[str, Any]) -> None:
        self.record("TerminateSession", session["Target"], session["SessionId"])
        agent = self._agents.get(session["SessionId"])
        if agent is not None and self._loop is not None:
            asyncio.run_coroutine_threadsafe(agent.finish("", "Terminated"), self._loop)

    def end_session(self, session: dict[str, Any], status: str) -> None:
        if session.get("Status") == "Connected":
            session["Status"] = status
            session["EndDate"] = _now()

    def forget(self, session_id: str) -> None:
        self._agents.pop(session_id, None)

    def set_link(self, link: LinkModel) -> None:
        self.link = link

    # -- faults ------------------------------------------------------------------------------------
    def set_faults(self, target: str | None, session_id: str | None, values: dict[str, Any], clear: bool = False) -> None:
        if bool(target) == bool(session_id):
            raise ServiceError("ValidationException", "name exactly one of Target or SessionId")
        scope = f"session:{session_id}" if session_id else f"target:{target}"
        unknown = sorted(set(values) - set(FAULTS))
        if unknown:
            raise ServiceError("ValidationException", f"unknown fault switches {unknown}; known: {sorted(FAULTS)}")
        current = {} if clear else dict(self._faults.get(scope, {}))
        for name, value in values.items():
            if value is None:
                current.pop(name, None)
            else:
                current[name] = FAULTS[name](value)
        self._faults[scope] = current
        self._call(self._faults_changed)

    def _faults_changed(self) -> None:
        for agent in list(self._agents.values()):
            agent.faults_changed()

    def fault(self, target: str, session_id: str, name: str) -> Any:
        value = self._faults.get(f"session:{session_id}", {}).get(name)
        return value if value is not None else self._faults.get(f"target:{target}", {}).get(name)

    def clear_fault(self, target: str, session_id: str, name: str) -> None:
        for scope in (f"session:{session_id}", f"target:{target}"):
            self._faults.get(scope, {}).pop(name, None)

    # -- events ------------------------------------------------------------------------------------
    def record(self, event: str, target: str, session_id: str, **detail: Any) -> None:
        with self._changed:
            self._events.append({"Event": event, "Target": target, "SessionId": session_id, "Time": _now(), **detail})
            self._changed.notify_all()

    def events(self, event: str | None = None, target: str | None = None, session_id: str | None = None) -> list[dict[str, Any]]:
        with self._changed:
            return [
                dict(e) for e in self._events
                if (event is None or e["Event"] == event) and (target is None or e["Target"] == target)
                and (session_id is None or e["SessionId"] == session_id)
            ]  # fmt: skip

    def wait_for(self, event: str, target: str | None, session_id: str | None, count: int, timeout: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = self.events(event, target, session_id)
                left = deadline - time.monotonic()
                if len(found) >= count or left <= 0:
                    return found
                self._changed.wait(left)

    # -- the websocket endpoint --------------------------------------------------------------------
    async def _handle(self, ws: Any) -> None:
        path = str(ws.request.path).split("?", 1)[0]
        session_id = path.rsplit("/", 1)[-1] if path.startswith("/v1/data-channel/") else ""
        session = self._sessions.get(session_id)
        try:
            first = await asyncio.wait_for(ws.recv(), HANDSHAKE_TIMEOUT)
            opened = dc.loads(first) if isinstance(first, str) else {}
        except Exception:  # noqa: BLE001 - no OpenDataChannel frame: refused below
            opened = {}
        token = opened.get("TokenValue") if isinstance(opened, dict) else None
        if session is None or not token or token != session.get("TokenValue") or session.get("Status") != "Connected":
            self.record("TokenRefused", session["Target"] if session else "", session_id)
            await ws.close(POLICY_VIOLATION, "invalid token for this data channel")
            return
        agent = self._agents.get(session_id)
        if agent is None:
            host, port = session["SandboxStreamAddress"]
            kind = MuxAgent if session.get("DocumentName") in PORT_FORWARDING_DOCUMENTS else Agent
            agent = self._agents[session_id] = kind(self, session, (host, int(port)))
        self.record("DataChannelOpened", session["Target"], session_id)
        await agent.attach(ws)
        try:
            async for frame in ws:
                if isinstance(frame, bytes):
                    await agent.receive(frame)
        except Exception:  # noqa: BLE001 - a websocket that died: the session waits for a resume
            pass
        finally:
            if agent.ws is ws:
                await agent.detach(ws)
                if not agent.finished:
                    self.record("WebSocketClosed", session["Target"], session_id)
