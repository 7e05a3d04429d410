"""``python -m ssmfab.sandbox.server``: a moto server on loopback with the sandbox's SSM calls installed, and the
sandbox's ssmmessages service (the Session Manager data channel) on its own thread in the same process, so the
SSM calls and the data channel share every session's state."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from pathlib import Path

from .moto_ext import install
from .plugin import LinkModel
from .ssmmessages import SSMMessagesService


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ready-file", type=Path, required=True, help="the bound port is written here once serving")
    parser.add_argument("--link", default="", help="SSM link model of every session (an SSMFAB_SANDBOX_LINK value)")
    args = parser.parse_args(argv)

    from moto.server import ThreadedMotoServer

    # werkzeug logs every request ("POST / HTTP/1.1" 200, nothing more) to moto.log: a tenth of the server's
    # CPU on a 50-host run, contending for the log's lock. Warnings and errors are still written.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    channels = SSMMessagesService(args.host, LinkModel.parse(args.link))
    channels.start()
    install(channels)
    server = ThreadedMotoServer(ip_address=args.host, port=args.port, verbose=False)
    server.start()
    _, port = server.get_host_and_port()
    temp = args.ready_file.with_suffix(".tmp")
    temp.write_text(str(port))
    os.replace(temp, args.ready_file)  # atomic: a reader never sees a half-written port

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop()
    channels.stop()


if __name__ == "__main__":
    main()
