"""Ephemeral SSH keys: one ed25519 key per run, held in memory and pushed with EC2 Instance Connect
(``SendSSHPublicKey``) right before each connection; AWS keeps a pushed key valid for 60 seconds.

Nothing is written to disk, except for OpenSSH's benefit (``shell``) a 0600 file in a private temp folder
that is removed as soon as ssh exits. The private key is never logged.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .aws import aws_errors
from .exceptions import ConfigError


class EphemeralKey:
    def __init__(self) -> None:
        private = Ed25519PrivateKey.generate()
        self._openssh = private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        ).decode()
        self.pkey = paramiko.Ed25519Key(file_obj=io.StringIO(self._openssh))
        self.public_line = f"{self.pkey.get_name()} {self.pkey.get_base64()} ssmfab-ephemeral"

    def __repr__(self) -> str:
        return f"<EphemeralKey {self.pkey.get_name()} (private part not shown)>"

    def push(self, instance_connect: Any, instance_id: str, user: str) -> None:
        """Authorise the key for ``user`` on ``instance_id`` for the next 60 seconds."""
        if instance_id.startswith("mi-"):
            raise ConfigError(f"{instance_id}: ephemeral keys need EC2 Instance Connect, which hybrid nodes lack; use --key")
        with aws_errors("pushing the ephemeral key with EC2 Instance Connect", instance_id):
            instance_connect.send_ssh_public_key(InstanceId=instance_id, InstanceOSUser=user, SSHPublicKey=self.public_line)

    @contextmanager
    def private_file(self) -> Iterator[Path]:
        """The private key as a 0600 file in a 0700 folder, for OpenSSH; removed on exit, whatever happens."""
        folder = Path(tempfile.mkdtemp(prefix="ssmfab-key-"))
        path = folder / "id_ed25519"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(self._openssh)
            yield path
        finally:
            shutil.rmtree(folder, ignore_errors=True)
