"""The Session Manager data channel's binary messages, as session-manager-plugin 1.2.677.0 reads and writes them.

Both ends of the sandbox's data channel use this module: the ssmmessages stand-in service (which plays the SSM
agent) and the stand-in plugin. Every frame after the first (a text frame carrying the OpenDataChannel JSON) is
binary: a 120-byte big-endian header, then the payload.

====== ====== ==========================================================================
offset  size   field
====== ====== ==========================================================================
0       4      HeaderLength, always 116 (the payload starts at HeaderLength + 4)
4       32     MessageType, ASCII, padded with spaces
36      4      SchemaVersion (1)
40      8      CreatedDate, epoch milliseconds
48      8      SequenceNumber (signed)
56      8      Flags
64      16     MessageId: the UUID's bytes 8-15, then its bytes 0-7
80      32     SHA-256 of the payload
112     4      PayloadType
116     4      PayloadLength
120     n      Payload
====== ====== ==========================================================================

The plugin rejects a message with a zero header length, an empty type, a zero date, or (non-empty payload) a
digest that does not match; ``decode`` does the same, so the stand-ins are held to the plugin's rules.

Acknowledgements are ``acknowledge`` messages (sequence 0, Flags 3, PayloadType 0) carrying a JSON document that
names the acknowledged message's type, id and sequence number. The handshake (HandshakeRequest from the agent,
HandshakeResponse from the client, HandshakeComplete from the agent) travels as stream data with its own payload
types. A ``channel_closed`` message carries a JSON document whose ``Output``, when not empty, the plugin prints.

It imports only modules built into the interpreter (or its C extension modules): the stand-in plugin loads it
once per connection.
"""

from __future__ import annotations

import _json
import _struct
import os
import time

try:  # the C SHA-256 alone; hashlib would load OpenSSL's bindings and more (~2 ms per plugin start)
    from _sha256 import sha256 as _sha256  # type: ignore[import-not-found,unused-ignore]  # Python 3.11
except ImportError:  # pragma: no cover - Python 3.12 renamed the module
    from _sha2 import sha256 as _sha256  # type: ignore[import-not-found,no-redef,unused-ignore]

TYPE_CHECKING = False
if TYPE_CHECKING:  # importing typing would cost each plugin start ~10 ms
    from typing import Any

HEADER_LENGTH = 116
#: Bytes before the payload: the header plus the PayloadLength field.
PAYLOAD_OFFSET = HEADER_LENGTH + 4
SCHEMA_VERSION = 1
TYPE_FIELD_LENGTH = 32

# Message types.
INPUT_STREAM_DATA = "input_stream_data"
OUTPUT_STREAM_DATA = "output_stream_data"
ACKNOWLEDGE = "acknowledge"
CHANNEL_CLOSED = "channel_closed"
START_PUBLICATION = "start_publication"
PAUSE_PUBLICATION = "pause_publication"

# Payload types.
OUTPUT = 1
ERROR = 2
SIZE = 3
PARAMETER = 4
HANDSHAKE_REQUEST = 5
HANDSHAKE_RESPONSE = 6
HANDSHAKE_COMPLETE = 7
ENC_CHALLENGE_REQUEST = 8
ENC_CHALLENGE_RESPONSE = 9
FLAG = 10
STDERR = 11
EXIT_CODE = 12

# Flag payloads (a 4-byte big-endian number in a FLAG message).
DISCONNECT_TO_PORT = 1
TERMINATE_SESSION = 2
CONNECT_TO_PORT_ERROR = 3

#: The Flags field of an acknowledge message (the plugin's SYN|FIN); stream messages carry 0.
ACK_FLAGS = 3

# HeaderLength, MessageType, SchemaVersion, CreatedDate, SequenceNumber, Flags, MessageId, digest, PayloadType,
# PayloadLength.
_HEADER = _struct.Struct(">I32sIQqQ16s32sII")


class _JSONRules:
    """The settings json.JSONDecoder hands _json's scanner: the json module's defaults."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = float


def _not_serializable(value: object) -> object:
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def loads(text: str | bytes) -> Any:
    """``json.loads`` without the json module (which would import re, enum and collections); ValueError when
    ``text`` is not one JSON document."""
    text = (text.decode("utf-8") if isinstance(text, bytes) else text).strip()
    try:
        value, end = _json.make_scanner(_JSONRules())(text, 0)  # type: ignore[arg-type]  # read like a duck
    except StopIteration:
        raise ValueError(f"not JSON: {text[:80]!r}") from None
    if end != len(text):
        raise ValueError(f"extra data after JSON: {text[end : end + 80]!r}")
    return value


def dumps(value: Any) -> str:
    """``json.dumps(value)``: same separators, same ASCII escapes."""
    encode = _json.make_encoder(None, _not_serializable, _json.encode_basestring_ascii, None, ": ", ", ", False, False, True)
    return "".join(encode(value, 0))


def new_uuid() -> bytes:
    """A random (version 4) UUID's 16 bytes."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    return bytes(raw)


def uuid_text(raw: bytes) -> str:
    """The usual 8-4-4-4-12 hex form of a UUID's 16 bytes."""
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def uuid_bytes(text: str) -> bytes:
    return bytes.fromhex(text.replace("-", ""))


def message_id_to_wire(raw: bytes) -> bytes:
    """The MessageId field: the plugin writes the UUID's least significant half (bytes 8-15) first."""
    return raw[8:16] + raw[0:8]


def message_id_from_wire(field: bytes) -> bytes:
    return field[8:16] + field[0:8]


#: Payloads from this size on are digested by OpenSSL's SHA-256 (hardware SHA where the CPU has it: ~2 GB/s
#: here against the built-in's ~370 MB/s). The service digests every byte a session moves (the stand-in plugin
#: too, when it is the plugin): with the built-in a 64 MB download cost the service ~170 ms of CPU, taken from
#: the client, sshd and the plugin on the same machine. Smaller payloads (handshakes, acks, an interactive
#: session's keystrokes) keep the built-in, so a session that moves no bulk never loads OpenSSL (~2 ms).
OPENSSL_DIGEST_FROM = 4096


def digest(payload: bytes) -> bytes:
    if len(payload) >= OPENSSL_DIGEST_FROM:
        from _hashlib import openssl_sha256  # loaded on the first large payload, then found in sys.modules

        return bytes(openssl_sha256(payload).digest())
    return bytes(_sha256(payload).digest())


class Message:
    """One decoded data channel message. (A plain class: dataclasses would import more than this whole module.)"""

    __slots__ = ("message_type", "schema_version", "created_ms", "sequence", "flags", "message_id", "payload_type", "payload")

    def __init__(
        self,
        message_type: str,
        sequence: int,
        payload_type: int,
        payload: bytes,
        flags: int = 0,
        message_id: bytes | None = None,
        created_ms: int = 0,
        schema_version: int = SCHEMA_VERSION,
    ) -> None:
        self.message_type = message_type
        self.sequence = sequence
        self.payload_type = payload_type
        self.payload = payload
        self.flags = flags
        self.message_id = message_id if message_id is not None else new_uuid()
        self.created_ms = created_ms or int(time.time() * 1000)
        self.schema_version = schema_version

    @property
    def message_id_text(self) -> str:
        return uuid_text(self.message_id)

    def encode(self) -> bytes:
        kind = self.message_type.encode("ascii")
        if not kind or len(kind) > TYPE_FIELD_LENGTH:
            raise ValueError(f"message type {self.message_type!r} does not fit the 32-byte field")
        header = _HEADER.pack(
            HEADER_LENGTH,
            kind.ljust(TYPE_FIELD_LENGTH, b" "),
            self.schema_version,
            self.created_ms,
            self.sequence,
            self.flags,
            message_id_to_wire(self.message_id),
            digest(self.payload),
            self.payload_type,
            len(self.payload),
        )
        return header + self.payload

    def __repr__(self) -> str:
        return (
            f"Message({self.message_type}, seq={self.sequence}, payload_type={self.payload_type}, "
            f"flags={self.flags}, {len(self.payload)} bytes)"
        )


def decode(frame: bytes) -> Message:
    """Read one binary frame, rejecting what the plugin rejects (ValueError naming the fault)."""
    if len(frame) < PAYLOAD_OFFSET:
        raise ValueError(f"a data channel message needs at least {PAYLOAD_OFFSET} bytes, got {len(frame)}")
    (header_length, kind, schema, created, sequence, flags, wire_id, payload_digest, payload_type, length) = _HEADER.unpack_from(frame)
    if header_length == 0:
        raise ValueError("header length is zero")
    start = header_length + 4
    payload = bytes(frame[start : start + length])
    if len(payload) != length:
        raise ValueError(f"payload length says {length} bytes, the frame holds {len(payload)}")
    message_type = kind.decode("ascii", "replace").strip(" \x00")
    if not message_type:
        raise ValueError("message type is empty")
    if created == 0:
        raise ValueError("created date is zero")
    if length and digest(payload) != payload_digest:
        raise ValueError(f"payload digest mismatch on {message_type} seq {sequence}")
    return Message(message_type, sequence, payload_type, payload, flags, message_id_from_wire(wire_id), created, schema)


def stream_message(message_type: str, sequence: int, payload_type: int, payload: bytes) -> Message:
    """A stream data message (input_stream_data or output_stream_data), Flags 0 as the plugin sends them."""
    return Message(message_type, sequence, payload_type, payload)


def acknowledgement(of: Message) -> Message:
    """The acknowledge message for ``of``."""
    content = {
        "AcknowledgedMessageType": of.message_type,
        "AcknowledgedMessageId": of.message_id_text,
        "AcknowledgedMessageSequenceNumber": of.sequence,
        "IsSequentialMessage": True,
    }
    return Message(ACKNOWLEDGE, 0, 0, dumps(content).encode(), flags=ACK_FLAGS)


def acknowledged_sequence(ack: Message) -> int:
    """The sequence number an acknowledge message acknowledges (ValueError when it is not one)."""
    if ack.message_type != ACKNOWLEDGE:
        raise ValueError(f"{ack.message_type} is not an acknowledge message")
    content = loads(ack.payload)
    return int(content["AcknowledgedMessageSequenceNumber"])


def flag_payload(flag: int) -> bytes:
    return flag.to_bytes(4, "big")


def flag_of(message: Message) -> int:
    if message.payload_type != FLAG or len(message.payload) != 4:
        raise ValueError(f"{message!r} is not a flag message")
    return int.from_bytes(message.payload, "big")


def handshake_request_payload(agent_version: str, port_number: str, **properties: str) -> bytes:
    """What the agent asks of a client opening a Port session: SSH's by default; ``properties`` add what a port
    forwarding session needs (``type="LocalPortForwarding"``, ``localPortNumber``, ``host``)."""
    wanted = {"portNumber": port_number, **properties}
    return dumps(
        {
            "AgentVersion": agent_version,
            "RequestedClientActions": [
                {"ActionType": "SessionType", "ActionParameters": {"SessionType": "Port", "Properties": wanted}}
            ],
        }
    ).encode()


def handshake_response_payload(client_version: str, request: bytes) -> bytes:
    """The client's answer to a HandshakeRequest: every SessionType action processed (KMS is not supported)."""
    actions = loads(request).get("RequestedClientActions") or []
    processed = []
    errors = []
    for action in actions:
        if action.get("ActionType") == "SessionType":
            processed.append({"ActionType": "SessionType", "ActionStatus": 1, "ActionResult": None, "Error": ""})
        else:
            processed.append({"ActionType": action.get("ActionType"), "ActionStatus": 3, "ActionResult": None, "Error": "unsupported"})
            errors.append(f"{action.get('ActionType')} is not supported")
    return dumps({"ClientVersion": client_version, "ProcessedClientActions": processed, "Errors": errors}).encode()


def handshake_complete_payload(nanoseconds: int, customer_message: str = "") -> bytes:
    return dumps({"HandshakeTimeToComplete": nanoseconds, "CustomerMessage": customer_message}).encode()


def channel_closed(session_id: str, output: str = "") -> Message:
    """The service's last word on a session; the plugin prints ``output`` when there is one, then exits."""
    message_id = new_uuid()
    created = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    content = {
        "MessageId": uuid_text(message_id),
        "CreatedDate": created,
        "DestinationId": "",
        "SessionId": session_id,
        "MessageType": CHANNEL_CLOSED,
        "SchemaVersion": 1,
        "Output": output,
    }
    return Message(CHANNEL_CLOSED, 0, 0, dumps(content).encode(), message_id=message_id)


def open_data_channel(token: str, client_version: str) -> str:
    """The first (text) frame a client sends on a new websocket."""
    return dumps(
        {
            "MessageSchemaVersion": "1.0",
            "RequestId": uuid_text(new_uuid()),
            "TokenValue": token,
            "ClientId": uuid_text(new_uuid()),
            "ClientVersion": client_version,
        }
    )
