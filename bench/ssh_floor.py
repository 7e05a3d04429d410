"""A floor for the connect row: what ``ssmfab run --id X true`` would cost if SSM and AWS cost nothing.

    python bench/ssh_floor.py HOST PORT USER KEY_FILE

It loads ssmfab's libraries as the ``ssmfab`` program does, then runs ``true`` over one SSH connection straight
to sshd through ssmfab's paramiko settings (fastssh), and exits with the command's status. No AWS client, no
lookup, no StartSession, no plugin, no host-key or config file: each of those only adds to ssmfab's time.
"""

from __future__ import annotations

import gc
import sys

gc.disable()  # as the program does while it starts

from ssmfab.program import import_invoke_lean  # noqa: E402

import_invoke_lean()

import socket  # noqa: E402

import botocore.session  # noqa: E402,F401  # loaded by every ssmfab command that reaches AWS
import fabric  # noqa: E402,F401  # ssmfab's connections are Fabric's
import paramiko  # noqa: E402

from ssmfab.fastssh import fast_transport  # noqa: E402


def main(host: str, port: str, user: str, key_file: str) -> int:
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
    sys.exit(main(*sys.argv[1:]))
