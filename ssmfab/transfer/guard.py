"""The host removes an upload's temporary files when the upload is cut off.

A file sent over SFTP (the small ones) is written by sftp-server, which leaves whatever it was writing when
the connection drops; so does the moment between a streamed file's last byte and its rename. A cut-off client
cannot remove anything, so one more command runs on the host beside the upload (hoststreams.TEMP_GUARD): each
temporary path is told to it before the file is created, and when its input ends (the upload closes it when
done, sshd closes it when the connection goes) it removes those still there. A finished upload has renamed or
removed them all by then, so it finds nothing to do.

The guard is opened while the transfer sets up (a thread: it costs no round trip of its own) and is best
effort: a host that refuses it (an SFTP-only account) still receives files, as before.
"""

from __future__ import annotations

import shlex
import threading
from contextlib import suppress
from typing import Any

from ..hoststreams import TEMP_GUARD


class TempGuard:
    """One upload's guard command on the host; ``announce`` each temporary path before creating it, ``close``
    when the upload is over (whatever its outcome)."""

    def __init__(self, transport: Any, timeout: float) -> None:
        self._transport = transport
        self._timeout = timeout
        self._channel: Any = None
        self._opener = threading.Thread(target=self._open, name="ssmfab-temp-guard", daemon=True)
        self._opener.start()

    def _open(self) -> None:
        channel = None
        with suppress(Exception):  # no guard: the upload goes on as it would without one
            channel = self._transport.open_session(timeout=self._timeout)
            channel.exec_command(TEMP_GUARD)
            self._channel = channel
            return
        if channel is not None:
            with suppress(Exception):
                channel.close()

    def announce(self, path: str) -> None:
        """Tell the host about ``path`` before it is created: in one SSH packet, sent before the request that
        creates the file, so sshd has handed it to the guard before the file can exist."""
        self._opener.join()
        if self._channel is None:
            return
        record = (shlex.quote(path) + " ").encode("utf-8", "surrogateescape")
        try:
            self._channel.sendall(record)
        except Exception:  # noqa: BLE001 - the connection failing is the transfer's own next error to report
            self._channel = None

    def close(self) -> None:
        """End the guard's input: the host removes whichever announced file is still there (none, when the
        upload finished)."""
        self._opener.join()
        channel, self._channel = self._channel, None
        if channel is not None:
            with suppress(Exception):
                channel.shutdown_write()
                channel.close()
