"""The run's SSH private key, read once and shared by every connection.

Given a key file, paramiko reads and parses it again for every connection, and for an RSA key that costs
~130 ms of CPU under the GIL: OpenSSL's self-check of a private key tests both primes for primality
(cryptography does it on every load). A 20-host run with a 3072-bit RSA key took 3.7 s against 1.3 s with
an ed25519 key. OpenSSH does not run that test on its own key files; here an RSA key is checked for
consistency instead (n = p*q and the CRT values agree with d: a few big-integer operations), and a key that
fails it is loaded with the full check, whose error paramiko would have given.

A key this module cannot read (encrypted, unknown type, damaged) is left to paramiko as a file, so its
prompts, errors and messages stay what they were.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .exceptions import ConfigError


def _consistent(key: rsa.RSAPrivateKey) -> bool:
    """Whether an RSA key's numbers agree with each other (what a truncated or altered file breaks)."""
    numbers = key.private_numbers()
    p, q, d, e, n = numbers.p, numbers.q, numbers.d, numbers.public_numbers.e, numbers.public_numbers.n
    return (
        p > 1 and q > 1 and p * q == n
        and numbers.dmp1 == d % (p - 1) and numbers.dmq1 == d % (q - 1)
        and (e * numbers.dmp1) % (p - 1) == 1 and (e * numbers.dmq1) % (q - 1) == 1
        and (numbers.iqmp * q) % p == 1
    )  # fmt: skip


def _load(data: bytes, *, full_check: bool) -> object:
    # OpenSSH's own format first (what ssh-keygen writes), then PEM, as paramiko's PKey.from_path does.
    skip = not full_check
    try:
        return serialization.load_ssh_private_key(data, password=None, unsafe_skip_rsa_key_validation=skip)
    except ValueError:
        return serialization.load_pem_private_key(data, password=None, unsafe_skip_rsa_key_validation=skip)


def load_private_key(path: str) -> paramiko.PKey | None:
    """The key in ``path`` (with its ``-cert.pub`` certificate when there is one), or None to leave the file to
    paramiko: encrypted, unreadable, of a type paramiko reads itself, or damaged."""
    key_path = Path(path).expanduser()
    try:
        data = key_path.read_bytes()
        loaded = _load(data, full_check=False)
        if not isinstance(loaded, rsa.RSAPrivateKey):
            key: paramiko.PKey = paramiko.PKey.from_path(key_path)  # ed25519, ECDSA: quick to load; certs included
            return key
        if not _consistent(loaded):
            loaded = _load(data, full_check=True)  # raises for a damaged key
        key = paramiko.RSAKey(key=loaded)
        certificate = Path(f"{key_path}-cert.pub")
        if certificate.exists():
            key.load_certificate(str(certificate))
    except Exception:  # noqa: BLE001 - whatever the file is (encrypted: TypeError, DSA: UnknownKeyType, damaged),
        # paramiko then reads it per connection as before, asks for its passphrase or says why it cannot.
        return None
    return key


def needs_passphrase(path: str) -> bool:
    """Whether the key file is protected by a passphrase (False when it cannot be read or parsed at all)."""
    try:
        _load(Path(path).expanduser().read_bytes(), full_check=False)
    except TypeError:  # cryptography: "Password was not given but private key is encrypted"
        return True
    except Exception:  # noqa: BLE001 - unreadable or of another kind: paramiko says why, later
        return False
    return False


def check_key_file(path: str, env: dict[str, str] | None = None) -> None:
    """Refuse, before any AWS call, a key file that cannot work: missing, unreadable, not a file, or protected
    by a passphrase with no ssh-agent running to hold it unlocked."""
    file = Path(path).expanduser()
    where = f"SSH key {path} (--key / ssh.key)"
    if not file.exists():
        raise ConfigError(f"{where}: no such file; check the path")
    if not file.is_file():
        raise ConfigError(f"{where}: not a file; name the private key file")
    try:
        file.open("rb").close()
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read it ({exc.strerror}); check its permissions") from None
    agent = (os.environ if env is None else env).get("SSH_AUTH_SOCK")
    if not agent and needs_passphrase(path):
        raise ConfigError(f"{where} needs its passphrase: load it into ssh-agent (ssh-add {path}) or use a key without one")


class KeyRing:
    """Private keys loaded once per path for all of a run's connections (which open on many threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: dict[str, paramiko.PKey | None] = {}

    def get(self, path: str) -> paramiko.PKey | None:
        with self._lock:
            if path not in self._keys:
                self._keys[path] = load_private_key(path)
            return self._keys[path]
