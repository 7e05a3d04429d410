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


def test_forget_removes_exactly_that_host_not_ids_it_is_a_prefix_of(tmp_path: Path) -> None:
    # An 8-hex id is a prefix of 17-hex ids that start with the same digits: forgetting one must not
    # touch the other, in either direction, nor a line naming several hosts that does not name it.
    short, long, other = "i-0abc1234", "i-0abc1234567890def", "i-22222222"
    store = KnownHosts(tmp_path / "known_hosts")
    store.add(short, paramiko.RSAKey.generate(1024))
    store.add(long, paramiko.RSAKey.generate(1024))
    store.add(other, paramiko.RSAKey.generate(1024))
    with store.path.open("a") as handle:
        handle.write(f"{long}0,{other}0 ssh-rsa {paramiko.RSAKey.generate(1024).get_base64()}\n")
    assert store.forget(short) == 1
    assert sorted(e[0] for e in store.entries()) == sorted([long, f"{long}0", other, f"{other}0"])
    assert store.forget(short) == 0
    assert store.forget(long) == 1
    assert sorted(e[0] for e in store.entries()) == sorted([f"{long}0", other, f"{other}0"])
    # A line listing several names goes when one of them is forgotten (as ssh-keygen -R does).
    assert store.forget(f"{other}0") == 1
    assert [e[0] for e in store.entries()] == [other]


def test_forget_on_a_missing_file_is_a_no_op(tmp_path: Path) -> None:
    store = KnownHosts(tmp_path / "known_hosts")
    assert store.forget("i-11111111") == 0
    assert not store.path.exists()


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


def test_fingerprints_match_openssh(tmp_path: Path) -> None:
    # ssh-keygen -lf is what users compare against; its SHA256 form has no base64 padding.
    import shutil
    import subprocess

    if shutil.which("ssh-keygen") is None:
        pytest.skip("OpenSSH's ssh-keygen is not installed")
    for key in (paramiko.RSAKey.generate(1024), paramiko.ECDSAKey.generate()):
        public = tmp_path / "key.pub"
        public.write_text(f"{key.get_name()} {key.get_base64()}\n")
        listed = subprocess.run(["ssh-keygen", "-lf", str(public)], capture_output=True, text=True, check=True).stdout
        assert fingerprint(key) == listed.split()[1]


def test_first_use_creates_private_folders_and_tells_stderr_by_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = KnownHosts(tmp_path / "a" / "b" / "known_hosts")
    host_key = paramiko.RSAKey.generate(1024)
    client = paramiko.SSHClient()
    PinningPolicy(store, strict=False).missing_host_key(client, "i-12345678", host_key)
    assert (store.path.parent.stat().st_mode & 0o777) == 0o700
    assert capsys.readouterr().err == f"i-12345678: first connection, pinned host key ssh-rsa {fingerprint(host_key)}\n"
    # This connection trusts the key at once, not only later ones reading the file.
    assert client.get_host_keys().lookup("i-12345678")["ssh-rsa"] == host_key


def test_errors_name_their_host(tmp_path: Path) -> None:
    store = KnownHosts(tmp_path / "known_hosts")
    old, new = paramiko.RSAKey.generate(1024), paramiko.RSAKey.generate(1024)
    with pytest.raises(HostKeyError) as refused:
        PinningPolicy(store, strict=True).missing_host_key(paramiko.SSHClient(), "i-12345678", new)
    assert refused.value.host == "i-12345678"
    changed = changed_key_error("i-12345678", new, old, store, label="web-1 (i-12345678)")
    assert changed.host == "i-12345678"
    assert str(changed).startswith("web-1 (i-12345678): HOST KEY CHANGED")
    assert str(changed_key_error("i-12345678", new, old, store)).startswith("i-12345678: HOST KEY CHANGED")
