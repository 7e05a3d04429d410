"""One real OpenSSH sshd on a loopback port, standing in for one instance's port 22.

Each host gets its own host key, config, authorized_keys and home directory. Commands and sftp start in
that home, so several sandbox hosts on one machine behave like separate machines for relative paths.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from ..exceptions import SandboxError

SSHD_INSTALL_HINT = (
    "install OpenSSH's server (Debian/Ubuntu: apt-get install -y openssh-server; Fedora: dnf install openssh-server)"
)
SFTP_SERVER_PATHS = ("/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server", "/usr/libexec/sftp-server")
# ForceCommand gives every session the host's home as working directory; with it, a subsystem request
# arrives as SSH_ORIGINAL_COMMAND (the sftp-server command line), so sftp keeps working.
LOGIN_SCRIPT = """#!/bin/sh
cd "$HOME" || exit 1
if [ -z "$SSH_ORIGINAL_COMMAND" ]; then exec "${SHELL:-/bin/sh}" -l; fi
exec "${SHELL:-/bin/sh}" -c "$SSH_ORIGINAL_COMMAND"
"""


def find_sshd() -> str:
    found = shutil.which("sshd") or next((p for p in ("/usr/sbin/sshd", "/usr/local/sbin/sshd") if os.access(p, os.X_OK)), None)
    if found is None:
        raise SandboxError(f"sshd not found: {SSHD_INSTALL_HINT}")
    return os.path.abspath(found)  # sshd refuses to re-exec itself from a relative path


def find_sftp_server() -> str:
    found = next((p for p in SFTP_SERVER_PATHS if os.access(p, os.X_OK)), None)
    if found is None:
        raise SandboxError(f"sftp-server not found next to sshd: {SSHD_INSTALL_HINT}")
    return found


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (probes are held open together so none is handed out twice)."""
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [int(probe.getsockname()[1]) for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def generate_key(path: Path, comment: str) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        stdout=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )


class SSHServer:
    """sshd for one sandbox host, living in ``folder``."""

    def __init__(self, folder: Path, port: int, authorized_keys: Path) -> None:
        self.folder = folder
        self.port = port
        self.authorized_keys = authorized_keys
        self.home = folder / "home"
        self.config = folder / "sshd_config"
        self.host_key = folder / "ssh_host_ed25519_key"
        self.pid_file = folder / "sshd.pid"
        self.log = folder / "sshd.log"
        self.process: subprocess.Popen[bytes] | None = None

    def prepare(self) -> None:
        """Host key, login script and config; kept across stop/start so the host key never changes."""
        self.home.mkdir(parents=True, exist_ok=True)
        if not self.host_key.exists():
            generate_key(self.host_key, f"sandbox host {self.folder.name}")
        login = self.folder / "login"
        login.write_text(LOGIN_SCRIPT)
        login.chmod(0o755)
        as_root = os.geteuid() == 0
        self.config.write_text(
            "\n".join(
                [
                    "ListenAddress 127.0.0.1",
                    f"Port {self.port}",
                    f"HostKey {self.host_key}",
                    f"PidFile {self.pid_file}",
                    # The second file receives EC2 Instance Connect pushes (each with an expiry-time).
                    f"AuthorizedKeysFile {self.authorized_keys} {self.folder / 'pushed_keys'}",
                    f"UsePAM {'no' if as_root else 'yes'}",
                    "StrictModes no",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PubkeyAuthentication yes",
                    "PermitRootLogin prohibit-password",
                    "MaxStartups 500:30:1000",
                    "MaxSessions 100",
                    "LogLevel ERROR",
                    "UseDNS no",
                    f"SetEnv HOME={self.home}",
                    f"Subsystem sftp {find_sftp_server()} -d {self.home}",
                    f"ForceCommand {login}",
                    "",
                ]
            )
        )

    def start(self, sshd: str, timeout: float = 10.0, *, new_port_on_conflict: bool = False) -> None:
        """Start and wait for the banner. A probed port can be taken by another process before sshd binds
        it; with ``new_port_on_conflict`` (only before the port is published) sshd moves to another one."""
        for attempt in range(3):
            try:
                self._start_once(sshd, timeout)
                return
            except SandboxError as exc:
                if not (new_port_on_conflict and "Cannot bind" in str(exc)) or attempt == 2:
                    raise
                self.port = free_ports(1)[0]
                self.prepare()

    def _start_once(self, sshd: str, timeout: float) -> None:
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege-separation folder
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sshd, "-D", "-e", "-f", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # Ctrl-C in a terminal must not take the fleet down mid-test
            )
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float) -> None:
        """Until sshd answers with its banner; a dead sshd is reported with its own last words."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                break
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as probe:
                    if probe.recv(64).startswith(b"SSH-"):
                        return
            except OSError:
                time.sleep(0.05)
        tail = self.log.read_text(errors="replace").strip().splitlines()[-1:] if self.log.exists() else []
        self.stop()
        raise SandboxError(f"sshd for {self.folder.name} did not start on port {self.port}: {' '.join(tail) or 'no output'}")

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def stop(self) -> None:
        if self.process is None:
            return
        terminate_group(self.process.pid, self.process)
        self.process = None

    def crash(self) -> None:
        """SIGKILL sshd and every connection it serves, as a crashing instance would."""
        if self.process is None:
            return
        for pid in [*descendants(self.process.pid), self.process.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait()
        self.process = None


def terminate_group(pid: int, process: subprocess.Popen[bytes] | None = None, grace: float = 3.0) -> None:
    """SIGTERM a process group (sshd and its session children), SIGKILL after ``grace`` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            break
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if process is not None:
                if process.poll() is not None:
                    break
            elif not process_alive(pid):
                break
            time.sleep(0.02)
        else:
            continue
        break
    if process is not None:
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (sshd's per-connection children start their own sessions, so
    signalling the listener's group does not reach them)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[-1].split()
            except OSError:
                continue
            parents.setdefault(int(fields[1]), []).append(int(entry))
    found, queue = [], [pid]
    while queue:
        for child in parents.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


def process_alive(pid: int) -> bool:
    """Whether ``pid`` still runs: a zombie does not (a daemon's parent may never reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False
