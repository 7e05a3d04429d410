"""A stand-in ``session-manager-plugin`` for the sandbox, following the real plugin's calling convention.

The aws CLI (and ssmfab's plugin tunnel) run it as::

    session-manager-plugin RESPONSE REGION StartSession PROFILE REQUEST_JSON ENDPOINT

where RESPONSE is the name of an environment variable holding the StartSession response JSON (older
plugins got the JSON itself; both are accepted). It connects to the StreamUrl the sandbox's StartSession
returned (the instance's sshd), bridges stdin/stdout to it, and terminates the session when either side
closes or on SIGTERM/SIGHUP. Only the standard library is imported: it starts once per connection.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
from typing import Any
from urllib.parse import urlparse

VERSION = "1.2.779.0"
CHUNK = 256 * 1024


def _session(first_arg: str) -> dict[str, Any]:
    try:
        return dict(json.loads(first_arg))
    except ValueError:
        return dict(json.loads(os.environ[first_arg]))


def _terminate(endpoint: str, region: str, session_id: str) -> None:
    from ssmfab.sandbox.moto_ext import call_sandbox_ssm

    try:
        call_sandbox_ssm(endpoint, region, "TerminateSession", {"SessionId": session_id})
    except OSError:
        pass  # the sandbox may already be gone; nothing else to clean up


def _pump(source: int, sink: socket.socket | int, stop: threading.Event) -> None:
    """Copy until EOF or error, in large chunks: no per-byte Python work."""
    try:
        while not stop.is_set():
            if isinstance(sink, socket.socket):
                data = os.read(source, CHUNK)
                if not data:
                    break
                sink.sendall(data)
            else:
                data = os.read(source, CHUNK)
                if not data:
                    break
                view = memoryview(data)
                while view:
                    view = view[os.write(sink, view) :]
    except OSError:
        pass
    finally:
        stop.set()


def bridge(conn: socket.socket) -> None:
    """stdin -> sshd and sshd -> stdout until either side closes."""
    stop = threading.Event()
    upstream = threading.Thread(target=_pump, args=(0, conn, stop), daemon=True)
    upstream.start()
    downstream = threading.Thread(target=_pump, args=(conn.fileno(), 1, stop), daemon=True)
    downstream.start()
    while not stop.is_set():
        stop.wait(0.5)
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def main(argv: list[str]) -> int:
    if argv[1:2] == ["--version"]:
        print(VERSION)
        return 0
    if len(argv) < 7 or argv[3] != "StartSession":
        print("Usage: session-manager-plugin RESPONSE REGION StartSession PROFILE REQUEST ENDPOINT", file=sys.stderr)
        return 1
    session = _session(argv[1])
    region, request, endpoint = argv[2], json.loads(argv[5]), argv[6]
    session_id = session["SessionId"]
    target = request.get("Target", "?")

    def on_signal(signum: int, frame: Any) -> None:
        _terminate(endpoint, region, session_id)
        os._exit(0)

    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, on_signal)

    port = (request.get("Parameters", {}).get("portNumber") or ["22"])[0]
    if str(port) != "22":
        print(f"Unable to connect to port {port} on {target}: connection refused", file=sys.stderr)
        _terminate(endpoint, region, session_id)
        return 1
    stream = urlparse(session["StreamUrl"])
    try:
        conn = socket.create_connection((stream.hostname or "127.0.0.1", stream.port or 0), timeout=10)
    except OSError as exc:
        print(f"Error: could not reach {target}'s sshd: {exc.strerror or exc}", file=sys.stderr)
        _terminate(endpoint, region, session_id)
        return 1
    conn.settimeout(None)
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        bridge(conn)
    finally:
        conn.close()
        _terminate(endpoint, region, session_id)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
