"""The data channel codec against the facts of the wire format (field offsets, MessageId byte order, digest)
as session-manager-plugin 1.2.677.0 reads and writes them, checked byte by byte rather than by round trip."""

from __future__ import annotations

import hashlib
import json
import struct
import subprocess
import sys
import uuid

import pytest

from ssmfab.sandbox import datachannel as dc


def test_header_fields_sit_at_the_documented_offsets() -> None:
    message_id = uuid.UUID("00112233-4455-6677-8899-aabbccddeeff")
    payload = b"SSH-2.0-OpenSSH\r\n"
    frame = dc.Message(dc.OUTPUT_STREAM_DATA, 7, dc.OUTPUT, payload, flags=0, message_id=message_id.bytes, created_ms=1_700_000_000_123).encode()
    assert len(frame) == 120 + len(payload)
    assert struct.unpack(">I", frame[0:4])[0] == 116
    assert frame[4:36] == b"output_stream_data".ljust(32, b" ")
    assert struct.unpack(">I", frame[36:40])[0] == 1
    assert struct.unpack(">Q", frame[40:48])[0] == 1_700_000_000_123
    assert struct.unpack(">q", frame[48:56])[0] == 7
    assert struct.unpack(">Q", frame[56:64])[0] == 0
    # The UUID's bytes 8-15, then bytes 0-7.
    assert frame[64:80] == bytes.fromhex("8899aabbccddeeff") + bytes.fromhex("0011223344556677")
    assert frame[80:112] == hashlib.sha256(payload).digest()
    assert struct.unpack(">I", frame[112:116])[0] == dc.OUTPUT == 1
    assert struct.unpack(">I", frame[116:120])[0] == len(payload)
    assert frame[120:] == payload


def test_decode_reads_a_frame_built_by_hand() -> None:
    message_id = uuid.uuid4()
    payload = b"\x00\x01binary\xff"
    frame = (
        struct.pack(">I", 116) + b"input_stream_data".ljust(32, b" ") + struct.pack(">IQqQ", 1, 123, 42, 0)
        + message_id.bytes[8:] + message_id.bytes[:8] + hashlib.sha256(payload).digest()
        + struct.pack(">II", 1, len(payload)) + payload
    )  # fmt: skip
    message = dc.decode(frame)
    assert (message.message_type, message.sequence, message.payload_type, message.payload) == ("input_stream_data", 42, 1, payload)
    assert message.message_id_text == str(message_id)


@pytest.mark.parametrize(
    ("offset", "value", "fault"),
    [(0, b"\0\0\0\0", "header length"), (4, b" " * 32, "type is empty"), (40, b"\0" * 8, "date is zero"), (80, b"\0" * 32, "digest")],
)
def test_decode_rejects_what_the_plugin_rejects(offset: int, value: bytes, fault: str) -> None:
    frame = bytearray(dc.stream_message(dc.INPUT_STREAM_DATA, 0, dc.OUTPUT, b"data").encode())
    frame[offset : offset + len(value)] = value
    with pytest.raises(ValueError, match=fault):
        dc.decode(bytes(frame))


def test_an_empty_payload_needs_no_digest() -> None:
    frame = bytearray(dc.stream_message(dc.INPUT_STREAM_DATA, 3, dc.OUTPUT, b"").encode())
    frame[80:112] = b"\0" * 32
    assert dc.decode(bytes(frame)).sequence == 3


def test_acknowledgement_names_the_message_as_the_plugin_expects() -> None:
    data = dc.stream_message(dc.OUTPUT_STREAM_DATA, 5, dc.OUTPUT, b"x")
    ack = dc.decode(dc.acknowledgement(data).encode())
    assert (ack.message_type, ack.sequence, ack.flags, ack.payload_type) == ("acknowledge", 0, 3, 0)
    assert json.loads(ack.payload) == {
        "AcknowledgedMessageType": "output_stream_data",
        "AcknowledgedMessageId": data.message_id_text,
        "AcknowledgedMessageSequenceNumber": 5,
        "IsSequentialMessage": True,
    }
    assert dc.acknowledged_sequence(ack) == 5


def test_handshake_and_flag_payloads() -> None:
    request = json.loads(dc.handshake_request_payload("3.3.1142.0", "22"))
    assert request["RequestedClientActions"] == [
        {"ActionType": "SessionType", "ActionParameters": {"SessionType": "Port", "Properties": {"portNumber": "22"}}}
    ]
    response = json.loads(dc.handshake_response_payload("1.2.677.0", dc.handshake_request_payload("3.3.1142.0", "22")))
    assert response["ProcessedClientActions"][0]["ActionStatus"] == 1 and response["Errors"] == []
    assert json.loads(dc.handshake_complete_payload(5, "")) == {"HandshakeTimeToComplete": 5, "CustomerMessage": ""}
    flag = dc.Message(dc.INPUT_STREAM_DATA, 9, dc.FLAG, dc.flag_payload(dc.TERMINATE_SESSION))
    assert flag.payload == b"\0\0\0\x02" and dc.flag_of(dc.decode(flag.encode())) == 2


def test_channel_closed_carries_the_output_the_plugin_prints() -> None:
    closed = dc.decode(dc.channel_closed("s-1", "refused").encode())
    content = json.loads(closed.payload)
    assert closed.message_type == "channel_closed"
    assert (content["SessionId"], content["Output"], content["MessageType"]) == ("s-1", "refused", "channel_closed")


def test_open_data_channel_is_the_plugins_first_text_frame() -> None:
    opened = json.loads(dc.open_data_channel("tok", "1.2.677.0"))
    assert set(opened) == {"MessageSchemaVersion", "RequestId", "TokenValue", "ClientId", "ClientVersion"}
    assert opened["TokenValue"] == "tok" and str(uuid.UUID(opened["RequestId"])) == opened["RequestId"]


def test_codec_loads_on_builtin_modules_only() -> None:
    """The stand-in plugin loads it once per connection: hashlib, json or typing would each cost a start."""
    done = subprocess.run(
        [sys.executable, "-S", "-X", "importtime", "-c", f"import sys; sys.path.insert(0, {dc.__file__.rsplit('/', 1)[0]!r}); import datachannel"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    assert imported & {"hashlib", "json", "re", "typing", "enum", "collections", "uuid", "struct"} == set()


@pytest.mark.parametrize("size", [0, 1, dc.OPENSSL_DIGEST_FROM - 1, dc.OPENSSL_DIGEST_FROM, 1 << 20])
def test_the_digest_is_sha256_below_and_above_the_size_openssl_takes_over(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    assert dc.digest(payload) == hashlib.sha256(payload).digest()


def test_a_session_without_bulk_never_loads_openssl() -> None:
    """Handshakes and keystrokes keep the built-in SHA-256: the stand-in plugin's start pays nothing for OpenSSL."""
    code = (
        f"import sys; sys.path.insert(0, {dc.__file__.rsplit('/', 1)[0]!r}); import datachannel as dc; "
        f"dc.digest(b'x' * (dc.OPENSSL_DIGEST_FROM - 1)); print('_hashlib' in sys.modules); "
        f"dc.digest(b'x' * dc.OPENSSL_DIGEST_FROM); print('_hashlib' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "True"]
