"""A TCP proxy in front of the sandbox's AWS endpoint: it counts the calls that pass and can hold one kind of
call unanswered (AWS slow or silent on that call alone) until it is released."""

from __future__ import annotations

import contextlib
import socket
import threading


class AWSProxy:
    """Forwards every connection to ``upstream`` (``http://host:port``). A request containing ``hold`` (a
    marker such as ``b"Action=DescribeInstances"`` or ``b"AmazonSSM.TerminateSession"``) is not forwarded
    until ``release()``: ``held`` is set when one arrives. ``count(marker)`` says how many requests carried
    a marker so far."""

    def __init__(self, upstream: str, hold: bytes | None = None) -> None:
        self.upstream = upstream.removeprefix("http://").rsplit(":", 1)
        self.hold = hold
        self.held = threading.Event()
        self.released = threading.Event()
        self._seen: list[bytes] = []
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self._sockets: list[socket.socket] = [self._server]
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        threading.Thread(target=self._serve, name="aws-proxy", daemon=True).start()

    def count(self, marker: bytes) -> int:
        with self._lock:
            return sum(chunk.count(marker) for chunk in self._seen)

    def release(self) -> None:
        self.released.set()

    def close(self) -> None:
        self.released.set()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def __enter__(self) -> AWSProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self._server.accept()
                aws = socket.create_connection((self.upstream[0], int(self.upstream[1])))
                self._sockets.extend((client, aws))
                threading.Thread(target=self._pipe, args=(client, aws, True), daemon=True).start()
                threading.Thread(target=self._pipe, args=(aws, client, False), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, requests: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if requests:
                    with self._lock:
                        self._seen.append(data)
                    if self.hold is not None and self.hold in data:
                        self.held.set()
                        self.released.wait()
                sink.sendall(data)
