"""Private keys read once per run: the same keys paramiko would load, RSA without OpenSSL's slow self-check
(a consistency check instead), and every key this cannot read left to paramiko as a file."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, rsa

from ssmfab import keys
from ssmfab.client import Client
from ssmfab.keys import KeyRing, load_private_key


def keygen(path: Path, *options: str) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-N", "", "-C", "test", "-f", str(path), *options], check=True)
    return path


def signs_as(key: paramiko.PKey, reference: paramiko.PKey) -> bool:
    """``key`` is ``reference``'s private key: same public key, and what it signs the reference verifies."""
    signed = key.sign_ssh_data(b"ssmfab", "rsa-sha2-256" if key.get_name() == "ssh-rsa" else None)
    signature = signed if isinstance(signed, paramiko.Message) else paramiko.Message(signed)
    signature.rewind()
    public = paramiko.PKey.from_type_string(reference.get_name(), reference.asbytes())
    return key.asbytes() == reference.asbytes() and public.verify_ssh_sig(b"ssmfab", signature)


@pytest.mark.parametrize("options", [("-t", "rsa", "-b", "2048"), ("-t", "rsa", "-b", "2048", "-m", "PEM"), ("-t", "ed25519")])
def test_the_key_is_the_one_paramiko_loads(tmp_path: Path, options: tuple[str, ...]) -> None:
    path = keygen(tmp_path / "id", *options)
    key = load_private_key(str(path))
    assert key is not None and signs_as(key, paramiko.PKey.from_path(path))


def test_an_rsa_key_brings_its_certificate(tmp_path: Path) -> None:
    path = keygen(tmp_path / "id_rsa", "-t", "rsa", "-b", "2048")
    authority = keygen(tmp_path / "ca", "-t", "ed25519")
    subprocess.run(["ssh-keygen", "-q", "-s", str(authority), "-I", "ops", "-n", "root", f"{path}.pub"], check=True)
    key = load_private_key(str(path))
    assert key is not None and key.public_blob is not None
    assert key.public_blob.key_type == "ssh-rsa-cert-v01@openssh.com"


def test_keys_it_cannot_read_are_left_to_paramiko(tmp_path: Path) -> None:
    encrypted = tmp_path / "encrypted"
    subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "secret", "-f", str(encrypted)], check=True)
    assert load_private_key(str(encrypted)) is None  # paramiko asks for the passphrase, as before
    dsa_key = dsa.generate_private_key(key_size=2048)  # a type paramiko no longer reads
    pem = dsa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    (tmp_path / "id_dsa").write_bytes(pem)
    assert load_private_key(str(tmp_path / "id_dsa")) is None
    (tmp_path / "garbage").write_text("not a key\n")
    assert load_private_key(str(tmp_path / "garbage")) is None
    assert load_private_key(str(tmp_path / "missing")) is None


def test_a_damaged_rsa_key_is_not_used(tmp_path: Path) -> None:
    # Well-formed file, inconsistent numbers (a flipped bit in the stored CRT coefficient): the consistency check
    # catches it, OpenSSL's full check rejects it, and paramiko is left to report the file as it always did.
    numbers = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_numbers()
    damaged_numbers = rsa.RSAPrivateNumbers(
        numbers.p, numbers.q, numbers.d, numbers.dmp1, numbers.dmq1, numbers.iqmp ^ 2, numbers.public_numbers
    )
    damaged = damaged_numbers.private_key(unsafe_skip_rsa_key_validation=True)
    path = tmp_path / "damaged"
    path.write_bytes(damaged.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()))
    assert not keys._consistent(damaged)
    assert load_private_key(str(path)) is None


def test_each_key_is_read_once_for_every_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(keygen(tmp_path / "id", "-t", "ed25519"))
    loads: list[str] = []
    real = keys.load_private_key
    monkeypatch.setattr(keys, "load_private_key", lambda p: loads.append(p) or real(p))
    ring = KeyRing()
    got: list[paramiko.PKey | None] = []
    threads = [threading.Thread(target=lambda: got.append(ring.get(path))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert loads == [path] and len(got) == 8 and all(key is got[0] is not None for key in got)


def test_a_clients_connections_share_its_key(tmp_path: Path) -> None:
    path = str(keygen(tmp_path / "id_rsa", "-t", "rsa", "-b", "2048"))
    client = Client(key=path, region="us-east-1")
    first, second = client.connect("i-0123456789abcdef0"), client.connect("i-0123456789abcdef1")
    assert first.connect_kwargs["pkey"] is second.connect_kwargs["pkey"] is not None
    assert "key_filename" not in first.connect_kwargs and first.key_filename == path  # named in auth errors
    given = tmp_path / "other"
    keygen(given, "-t", "ed25519")
    third = client.connect("i-0123456789abcdef2", key_filename=str(given))  # a key given to connect() wins
    assert third.connect_kwargs["pkey"].asbytes() == paramiko.PKey.from_path(given).asbytes()
