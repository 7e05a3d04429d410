"""The fast paths chosen by the benchmark, each held to the plain path's guarantees: the ssmfab-proxy
ProxyCommand under real OpenSSH, AES-GCM preferred, streamed transfers verified and atomic, and the
sandbox's SSM link model doing what it says."""

from __future__ import annotations

import hashlib
import os
import resource
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from ssmfab import transfer
from ssmfab.client import Client
from ssmfab.exceptions import TransferError
from ssmfab import fastssh
from ssmfab.fastssh import ByteQueue
from ssmfab.hoststreams import stream_command
from ssmfab.sandbox import LinkModel, Sandbox

from .conftest import new_active_sessions, tunnel_processes

BIG = transfer.STREAM_MIN_BYTES + 12_345


def host(sandbox: Sandbox, name: str) -> tuple[str, Path]:
    entry = sandbox.host(name)
    return entry.instance_id, Path(entry.folder) / "home"


def ssh_argv(sandbox_env: dict[str, str], proxy: str) -> list[str]:
    return [
        "ssh", "-i", sandbox_env["SSMFAB_KEY"], "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
        "-o", "LogLevel=ERROR", "-o", "BatchMode=yes", "-o", f"ProxyCommand={proxy}",
    ]  # fmt: skip


@pytest.mark.skipif(shutil.which("ssh") is None, reason="OpenSSH client not installed")
def test_ssmfab_proxy_carries_openssh_and_leaves_nothing(
    sandbox: Sandbox, sandbox_env: dict[str, str], sessions_before: set[str]
) -> None:
    instance, _ = host(sandbox, "web-1")
    done = subprocess.run(
        [*ssh_argv(sandbox_env, f"ssmfab-proxy --region us-east-1 --endpoint-url {sandbox.endpoint} %h %p"),
         f"{sandbox.user}@{instance}", "echo through-the-proxy"],
        env=sandbox_env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "through-the-proxy"
    deadline = time.monotonic() + 30  # a backstop for a busy machine: they normally end within a second
    while (tunnel_processes(sandbox) or new_active_sessions(sandbox_env, sessions_before)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert tunnel_processes(sandbox) == []
    assert new_active_sessions(sandbox_env, sessions_before) == set()  # its session ended, as under the aws CLI


@pytest.mark.skipif(shutil.which("ssh") is None, reason="OpenSSH client not installed")
def test_ssmfab_proxy_keeps_no_python_process_alive_beside_the_connection(
    sandbox: Sandbox, sandbox_env: dict[str, str], sessions_before: set[str]
) -> None:
    # The session-end watcher waits as a shell (and tail), not as a forked copy of the proxy's Python (~34 MiB).
    instance, home = host(sandbox, "web-2")
    for name in ("proxy-started", "proxy-release"):
        (home / name).unlink(missing_ok=True)
    ssh = subprocess.Popen(
        [*ssh_argv(sandbox_env, f"ssmfab-proxy --region us-east-1 --endpoint-url {sandbox.endpoint} %h %p"),
         f"{sandbox.user}@{instance}", "touch proxy-started; while [ ! -e proxy-release ]; do sleep 0.05; done"],
        env=sandbox_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not (home / "proxy-started").exists():
            assert ssh.poll() is None and time.monotonic() < deadline, "the command never started"
            time.sleep(0.02)
        [session] = new_active_sessions(sandbox_env, sessions_before)  # this connection's
        # Its watcher only: an earlier connection's may be ending its own session right now, as Python.
        watchers = [pid for pid in os.listdir("/proc") if pid.isdigit() and _cmdline(pid).endswith(f"\0{session}\0".encode())]
        assert watchers, "no session-end watcher beside the connection"
        for pid in watchers:
            exe = os.path.realpath(f"/proc/{pid}/exe")
            assert "python" not in os.path.basename(exe), f"a Python process waits beside the connection: {exe}"
    finally:
        (home / "proxy-release").touch()
        ssh.communicate(timeout=60)
    assert ssh.returncode == 0
    deadline = time.monotonic() + 30
    while new_active_sessions(sandbox_env, sessions_before) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert new_active_sessions(sandbox_env, sessions_before) == set()


def _cmdline(pid: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_ssmfab_proxy_errors_are_one_line(sandbox_env: dict[str, str]) -> None:
    done = subprocess.run(["ssmfab-proxy", "i-00000000000000000", "22"], env=sandbox_env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("ssmfab-proxy: i-00000000000000000: ")
    for bad in ([], ["--region"], ["--bogus", "x", "i-00000000000000000"]):
        usage = subprocess.run(["ssmfab-proxy", *bad], env=sandbox_env, capture_output=True, text=True, timeout=60)
        assert usage.returncode == 2 and "ProxyCommand" in usage.stderr


def test_aes_gcm_is_negotiated_first_and_sessions_buffer_in_byte_queues(client: Client, sandbox: Sandbox) -> None:
    instance, _ = host(sandbox, "web-2")
    with client.connect(instance) as conn:
        assert conn.run("seq 100000", hide=True).stdout.split() == [str(n) for n in range(1, 100001)]
        transport = conn.client.get_transport()
        assert transport is not None and transport.local_cipher == "aes128-gcm@openssh.com"
        channel = transport.open_session()
        assert isinstance(channel.in_buffer, ByteQueue) and isinstance(channel.in_stderr_buffer, ByteQueue)
        channel.close()


@pytest.mark.parametrize("python", [True, False], ids=["host-python3", "host-posix-tools"])
def test_streamed_files_round_trip_verified(
    client: Client, sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, python: bool
) -> None:
    instance, home = host(sandbox, "web-3")
    monkeypatch.setattr(transfer.upload, "STREAM_PUT", stream_command("put", python=python))
    monkeypatch.setattr(transfer.download, "STREAM_GET", stream_command("get", python=python))
    payload = os.urandom(BIG)
    (tmp_path / "big.bin").write_bytes(payload)
    (tmp_path / "big.bin").chmod(0o640)
    with client.connect(instance) as conn:
        sent = transfer.put(conn, str(tmp_path / "big.bin"), "streamed.bin")
        got = transfer.get(conn, "streamed.bin", str(tmp_path / "back.bin"))
    digest = hashlib.sha256(payload).hexdigest()
    assert sent.items[0].sha256 == got.items[0].sha256 == digest
    assert (home / "streamed.bin").read_bytes() == payload and (home / "streamed.bin").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "back.bin").read_bytes() == payload
    assert not [p for p in home.iterdir() if p.name.endswith(".part")]
    (home / "streamed.bin").unlink()


def spy_on_packetizer(monkeypatch: pytest.MonkeyPatch, method: str) -> list[tuple[Any, ...]]:
    """The arguments of every call to FastPacketizer.<method> from now on; the method still does its work."""
    calls: list[tuple[Any, ...]] = []
    real = getattr(fastssh.FastPacketizer, method)

    def spied(self: fastssh.FastPacketizer, *args: Any) -> Any:
        calls.append(args)
        return real(self, *args)

    monkeypatch.setattr(fastssh.FastPacketizer, method, spied)
    return calls


def test_streamed_uploads_go_out_in_sealed_batches_and_survive_key_exchanges(
    client: Client, sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    instance, home = host(sandbox, "web-3")
    payload = os.urandom(3 * BIG)
    (tmp_path / "batched.bin").write_bytes(payload)
    sealed = spy_on_packetizer(monkeypatch, "_send_sealed")
    rekeys = spy_on_packetizer(monkeypatch, "_trigger_rekey")
    with client.connect(instance) as conn:
        conn.open()
        packetizer = conn.client.get_transport().packetizer
        # Ask for a key exchange every 4 MiB sent, as a long-lived connection would after its limit: the stream
        # must pause for each and go on with the new keys.
        packetizer.REKEY_BYTES = 4 * 1024 * 1024
        report = transfer.put(conn, str(tmp_path / "batched.bin"), "batched.bin")
        assert conn.run("echo still-talking", hide=True).stdout.strip() == "still-talking"
    assert report.items[0].sha256 == hashlib.sha256(payload).hexdigest()
    assert (home / "batched.bin").read_bytes() == payload
    assert len(rekeys) >= 2, "no key exchange happened mid-stream"
    batches = [len(data.pieces) for (data,) in sealed]
    assert sum(batches) >= len(payload) // (32 * 1024) and max(batches) > 1
    (home / "batched.bin").unlink()


def test_streamed_uploads_under_another_cipher_take_paramikos_own_path(
    client: Client, sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    instance, home = host(sandbox, "web-3")
    payload = os.urandom(BIG)
    (tmp_path / "ctr.bin").write_bytes(payload)
    sealed = spy_on_packetizer(monkeypatch, "_send_sealed")
    no_gcm = {"disabled_algorithms": {"ciphers": list(fastssh.FAST_CIPHERS)}}
    with client.connect(instance, connect_kwargs=no_gcm) as conn:
        conn.open()
        assert "gcm" not in conn.client.get_transport().local_cipher
        report = transfer.put(conn, str(tmp_path / "ctr.bin"), "ctr.bin")
    assert report.items[0].sha256 == hashlib.sha256(payload).hexdigest()
    assert (home / "ctr.bin").read_bytes() == payload
    assert sealed == []
    (home / "ctr.bin").unlink()


def test_a_stream_the_host_got_wrong_is_never_renamed_into_place(
    client: Client, sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    instance, home = host(sandbox, "web-3")
    (tmp_path / "big.bin").write_bytes(os.urandom(BIG))
    # The host writes something else than it received (as a failing disk would); its checksum says so.
    monkeypatch.setattr(transfer.upload, "STREAM_PUT", """sh -c 'cat > "$1"; echo extra >> "$1"; sha256sum < "$1"' sh""")
    with client.connect(instance) as conn, pytest.raises(TransferError, match="bad.bin did not verify after upload"):
        transfer.put(conn, str(tmp_path / "big.bin"), "bad.bin")
    assert not [p for p in home.iterdir() if p.name == "bad.bin" or p.name.endswith(".part")]


def test_a_stream_the_host_could_not_write_is_never_renamed_into_place(
    client: Client, sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    instance, home = host(sandbox, "web-3")
    (tmp_path / "big.bin").write_bytes(os.urandom(BIG))
    # The real upload command, run where files may not grow past 1 MiB (as on a full disk): cat fails midway.
    monkeypatch.setattr(transfer.upload, "STREAM_PUT", "ulimit -f 1024; " + transfer.upload.STREAM_PUT)
    stopped = r"the host stopped writing \S*full.bin after \d+ bytes sent \(.+\); nothing left half-written"
    with client.connect(instance) as conn, pytest.raises(TransferError, match=stopped):
        transfer.put(conn, str(tmp_path / "big.bin"), "full.bin")
    assert not [p for p in home.iterdir() if p.name == "full.bin" or p.name.endswith(".part")]


def test_a_download_that_does_not_match_the_hosts_checksum_is_dropped(
    client: Client, sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    instance, home = host(sandbox, "web-3")
    (home / "odd.bin").write_bytes(os.urandom(BIG))
    monkeypatch.setattr(transfer.download, "STREAM_GET", """sh -c '[ -z "$2" ] || printf R; cat -- "$1"; echo 0000000000000000000000000000000000000000000000000000000000000000 - >&2' sh""")
    dest = tmp_path / "dest"
    with client.connect(instance) as conn, pytest.raises(TransferError, match="odd.bin did not verify after download"):
        transfer.get(conn, "odd.bin", str(dest) + os.sep)
    assert list(dest.iterdir()) == []
    (home / "odd.bin").unlink()


def test_a_host_stream_without_its_codec_byte_is_refused_not_guessed(
    client: Client, sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    instance, home = host(sandbox, "web-3")
    # A host program that does not answer the codec question: its first byte is not taken as an answer (the
    # download would then fail its checksum, one byte short, under a misleading cause).
    (home / "plain.txt").write_bytes(b"x" * BIG)
    monkeypatch.setattr(transfer.download, "STREAM_GET", """sh -c 'cat -- "$1"; sha256sum < "$1" >&2' sh""")
    monkeypatch.setattr(transfer.download, "_codec", lambda conn, compress: "ask")
    dest = tmp_path / "dest"
    with client.connect(instance) as conn, pytest.raises(TransferError, match=r"plain.txt .*began with b'x', not the codec byte"):
        transfer.get(conn, "plain.txt", str(dest) + os.sep)
    assert list(dest.iterdir()) == []
    (home / "plain.txt").unlink()


def test_a_download_the_local_disk_refuses_midway_leaves_nothing(
    client: Client, sandbox: Sandbox, tmp_path: Path
) -> None:
    instance, home = host(sandbox, "web-3")
    (home / "large.bin").write_bytes(os.urandom(3 * BIG))
    dest = tmp_path / "dest"
    dest.mkdir()
    # Files of this process may not grow past 2 MiB (as on a full local disk): the streamed download's write
    # fails midway; one line, no partial file, and the connection is still good for the next command.
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        with client.connect(instance) as conn:
            resource.setrlimit(resource.RLIMIT_FSIZE, (2 << 20, limits[1]))
            try:
                with pytest.raises(TransferError, match=r"download of large.bin failed, nothing left half-written \(.*File too large\)") as err:
                    transfer.get(conn, "large.bin", str(dest) + os.sep)
            finally:
                resource.setrlimit(resource.RLIMIT_FSIZE, limits)
            assert conn.run("echo still here", hide=True).stdout == "still here\n"  # the connection lives on
    finally:
        signal.signal(signal.SIGXFSZ, previous)
    assert "\n" not in str(err.value)
    assert list(dest.iterdir()) == []
    (home / "large.bin").unlink()


def test_the_link_model_delays_setup_and_caps_bandwidth(
    sandbox: Sandbox, sandbox_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    instance, home = host(sandbox, "db-1")
    (home / "slow.bin").write_bytes(os.urandom(300_000))
    client = Client(tunnel="plugin", notify=lambda message: None)
    # The service side applies the model (to any plugin): setup delay and download rate.
    with sandbox.linked(LinkModel.parse("setup=0.5,rate=200k,chunk=1024")):
        started = time.monotonic()
        with client.connect(instance) as conn:
            conn.run("true", hide=True)
            connected = time.monotonic()
            transfer.get(conn, "slow.bin", str(tmp_path / "slow.bin"))
            moved = time.monotonic()
    # Floors the model guarantees (not speed targets): 0.5 s of setup, 300 kB at 200 kB/s.
    assert connected - started >= 0.5
    assert moved - connected >= 1.4
    assert (tmp_path / "slow.bin").read_bytes() == (home / "slow.bin").read_bytes()
    (home / "slow.bin").unlink()


def test_a_download_past_paramikos_rekey_point_completes(client: Client, sandbox: Sandbox, tmp_path: Path) -> None:
    # paramiko asks to rekey after 512 MiB; a rekey started mid-stream used to stall 30 s or fail the get.
    instance, home = host(sandbox, "db-1")
    size = 600_000_000
    with client.connect(instance) as conn:
        conn.run(f"head -c {size} /dev/zero > huge.bin", hide=True)
        report = transfer.get(conn, "huge.bin", str(tmp_path / "huge.bin"))
        conn.run("rm huge.bin", hide=True)
    assert report.bytes == size == (tmp_path / "huge.bin").stat().st_size
    zeros = hashlib.sha256()
    for _ in range(size // 1_000_000):
        zeros.update(bytes(1_000_000))
    assert report.items[0].sha256 == zeros.hexdigest()
