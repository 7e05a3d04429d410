"""Pinned host keys: trust on first use with a notice, strict refusal, forget, concurrent appends."""

from __future__ import annotations

import threading
from pathlib import Path

import paramiko
import pytest

from ssmfab.exceptions import HostKeyError
from ssmfab.hostkeys import KnownHosts, PinningPolicy, changed_key_error, fingerprint


def test_first_use_pins_and_notifies(tmp_path: Path) -> None:
    store = KnownHosts(tmp_path / "sub" / "known_hosts")
    host_key = paramiko.RSAKey.generate(1024)
    notes: list[str] = []
    client = paramiko.SSHClient()
    PinningPolicy(store, strict=False, notify=notes.append).missing_host_key(client, "i-12345678", host_key)
    assert store.lookup("i-12345678")["ssh-rsa"] == host_key
    assert (store.path.stat().st_mode & 0o777) == 0o600
    assert notes == [f"i-12345678: first connection, pinned host key ssh-rsa {fingerprint(host_key)}"]
    assert store.entries() == [("i-12345678", "ssh-rsa", fingerprint(host_key))]


def test_strict_refuses_unknown_keys(tmp_path: Path) -> None:
    store = KnownHosts(tmp_path / "known_hosts")
    with pytest.raises(HostKeyError, match="i-12345678: host key SHA256:.* is not pinned"):
        PinningPolicy(store, strict=True).missing_host_key(
            paramiko.SSHClient(), "i-12345678", paramiko.RSAKey.generate(1024)
        )
    assert not store.path.exists()


def test_changed_key_message_has_both_fingerprints_and_the_fix(tmp_path: Path) -> None:
    store = KnownHosts(tmp_path / "known_hosts")
    old, new = paramiko.RSAKey.generate(1024), paramiko.RSAKey.generate(1024)
    message = str(changed_key_error("i-12345678", new, old, store))
    assert fingerprint(old) in message and fingerprint(new) in message
    assert "ssmfab known-hosts --forget i-12345678" in message
    assert fingerprint(old) != fingerprint(new)


def test_forget_removes_only_that_host(tmp_path: Path) -> None:
    store = KnownHosts(tmp_path / "known_hosts")
    store.add("i-11111111", paramiko.RSAKey.generate(1024))
    store.add("i-22222222", paramiko.RSAKey.generate(1024))
    assert store.forget("i-11111111") == 1
    assert [e[0] for e in store.entries()] == ["i-22222222"]
    assert store.forget("i-11111111") == 0


def test_concurrent_first_connections_keep_every_key(tmp_path: Path) -> None:
    store = KnownHosts(tmp_path / "known_hosts")
    keys = {f"i-{n:08x}": paramiko.RSAKey.generate(1024) for n in range(16)}
    threads = [threading.Thread(target=store.add, args=item) for item in keys.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {host for host, _, _ in store.entries()} == set(keys)


def test_the_file_is_parsed_once_per_version_and_outside_edits_are_seen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = KnownHosts(tmp_path / "known_hosts")
    key_a, key_b = paramiko.RSAKey.generate(1024), paramiko.RSAKey.generate(1024)
    store.add("i-aaaaaaaa", key_a)
    parses: list[str] = []
    real_load = paramiko.HostKeys.load
    monkeypatch.setattr(paramiko.HostKeys, "load", lambda self, path: (parses.append(path), real_load(self, path))[1])
    for _ in range(5):
        assert store.lookup("i-aaaaaaaa")["ssh-rsa"] == key_a
    assert len(parses) == 1
    # Another process (ssh-keygen -R, a second ssmfab) rewrites the file: the next lookup sees it.
    store.path.write_text(f"i-bbbbbbbb ssh-rsa {key_b.get_base64()}\n")
    assert store.lookup("i-aaaaaaaa") == {}
    assert store.lookup("i-bbbbbbbb")["ssh-rsa"] == key_b
    assert len(parses) == 2
    store.path.unlink()
    assert store.lookup("i-bbbbbbbb") == {}
