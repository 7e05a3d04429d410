"""The connect row's floors: what ``ssmfab run --id X true`` would cost if parts of it cost nothing.

    python bench/connect_floor.py                          # ssmfab's libraries loaded, nothing more
    python bench/connect_floor.py HOST PORT USER KEY_FILE  # ... then `true` over SSH straight to sshd

It loads ssmfab's libraries as the ``ssmfab`` program does. Given a host, it then runs ``true`` over one SSH
connection straight to sshd through ssmfab's paramiko settings (fastssh), and exits with the command's status.
No AWS client, no lookup, no StartSession, no plugin, no host-key or config file: each of those only adds to
ssmfab's time.
"""

from __future__ import annotations

import gc
import sys

gc.disable()  # as the program does while it starts

from ssmfab.program import import_invoke_lean  # noqa: E402

import_invoke_lean()

import botocore.session  # noqa: E402,F401  # loaded by every ssmfab command that reaches AWS
import fabric  # noqa: E402,F401  # ssmfab's connections are Fabric's
import paramiko  # noqa: E402


def run_true(host: str, port: str, user: str, key_file: str) -> int:
    import socket  # loaded with paramiko already; imported here, as fastssh is, so the bare floor loads neither

    from ssmfab.fastssh import fast_transport

    key = paramiko.PKey.from_path(key_file)
    transport = fast_transport(socket.create_connection((host, int(port))))
    try:
        transport.start_client()
        transport.auth_publickey(user, key)
        channel = transport.open_session()
        channel.exec_command("true")
        return int(channel.recv_exit_status())
    finally:
        transport.close()


if __name__ == "__main__":
    sys.exit(run_true(*sys.argv[1:]) if sys.argv[1:] else 0)
