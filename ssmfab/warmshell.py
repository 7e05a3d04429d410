"""A shell on a warm connection: a pty channel of the connection the keeper holds, relayed to the caller's terminal.

A cold ``ssmfab shell`` hands the terminal to OpenSSH (see ``shell``). A warm one has no terminal of its own to
hand over: the keeper runs the command, and the caller (``warm``) forwards its keys, in raw mode, and its
terminal's size. So the keeper opens the channel itself, as ssh would (a pty of the caller's TERM and size,
then the login shell or the command), copies the caller's input to it and its output back, passes each
change of the terminal's size on, and ends with the remote exit code, as ssh does. What ssh prints of its own
when such a session ends ("Connection to HOST closed.", after it has put the terminal back) is printed too:
a warm shell's output is a cold one's.
"""

from __future__ import annotations

import os
import select
import threading
from collections.abc import Callable
from typing import IO, Any

#: Seconds between looks at whether this command was interrupted while nothing moved (the keeper interrupts a
#: command by raising in its thread, which a blocked select would not see).
POLL_SECONDS = 0.25
#: ssh's exit code when the connection ends without the remote command's.
NO_EXIT_STATUS = 255


class ForwardedTerminal:
    """The caller's terminal, as far as the keeper knows it: TERM, its size, and whom to tell when it changes."""

    def __init__(self, term: str, columns: int, rows: int, restore: Callable[[], object] = lambda: None) -> None:
        self.term = term
        self.size = (columns, rows)
        #: Asks the caller to put its terminal back in the mode it had (the session is over).
        self.restore = restore
        self._lock = threading.Lock()
        self._listener: Callable[[int, int], object] | None = None

    def listen(self, listener: Callable[[int, int], object] | None) -> None:
        with self._lock:
            self._listener = listener

    def resize(self, columns: int, rows: int) -> None:
        with self._lock:
            self.size = (columns, rows)
            listener = self._listener
        if listener is not None:
            try:
                listener(columns, rows)
            except Exception:  # noqa: BLE001 - a channel already closed: nothing left to resize
                pass


def pty_session(
    conn: Any, command: str | None, terminal: ForwardedTerminal, input_fd: int, output: IO[bytes], errors: IO[str]
) -> int:
    """Run ``command`` (None: the login shell) on ``conn`` with a pty the size of ``terminal``; copy ``input_fd``
    to it and its output to ``output`` until it ends, then say so on ``errors`` as ssh does. Its exit code
    (255 when the connection ended first)."""
    channel = conn.create_session()  # on a warm connection, also the proof that it still lives
    try:
        columns, rows = terminal.size
        channel.get_pty(term=terminal.term, width=columns, height=rows)
        terminal.listen(lambda width, height: channel.resize_pty(width=width, height=height))
        if command:
            channel.exec_command(command)
        else:
            channel.invoke_shell()
        reading = True
        while True:
            watched = [channel, input_fd] if reading else [channel]
            ready, _, _ = select.select(watched, [], [], POLL_SECONDS)
            if input_fd in ready:
                data = os.read(input_fd, 32768)
                if data:
                    channel.sendall(data)
                else:
                    channel.shutdown_write()
                    reading = False
            if channel.recv_stderr_ready():
                output.write(channel.recv_stderr(32768))
                output.flush()
            if channel in ready or channel.recv_ready():
                data = channel.recv(32768)
                if not data:
                    break
                output.write(data)
                output.flush()
        while channel.recv_stderr_ready():
            output.write(channel.recv_stderr(32768))
        output.flush()
        status = int(channel.recv_exit_status())
        terminal.restore()
        if status < 0:  # the connection ended under the shell: why, in one line, if it is known
            conn._raise_if_lost()
            return NO_EXIT_STATUS
        errors.write(f"Connection to {conn.target.id} closed.\r\n")
        errors.flush()
        return status
    finally:
        terminal.listen(None)
        terminal.restore()  # interrupted too: what is said next is read on a terminal in its own mode
        channel.close()
