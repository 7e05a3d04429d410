"""The sandbox fleet: a moto server (with the ssmmessages data channel service), one real sshd per fake EC2
instance, and a session-manager-plugin: the project's stand-in, or AWS's own when one is named
(``plugin=PATH``, ``inv sandbox.up --plugin PATH``, ``SSMFAB_SANDBOX_PLUGIN``).

``Sandbox(root).up()`` leaves everything under ``root`` (state.json, env.sh, keys, host folders, logs)
and ``down()`` stops every process it started and removes ``root``; ``Sandbox.load(root)`` lets another
process (``inv sandbox.down``) do that. The processes run in their own sessions on purpose: the sandbox
outlives ``inv sandbox.up`` until ``inv sandbox.down``, like the AWS account it stands in for.
"""

from __future__ import annotations

import getpass
import json
import os
import py_compile
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..exceptions import SandboxError
from .moto_ext import sandbox_put_instance_information
from . import datachannel as stand_in_codec
from . import plugin as stand_in_plugin
from .plugin import LINK_ENV_VAR, LinkModel, call_sandbox_ssm
from .sshd import SSHServer, find_sshd, free_ports, generate_key, terminate_group

#: The stand-in plugin as the sandbox runs it (compiled, in its bin folder): every tunnel process the sandbox
#: serves carries this name on its command line.
PLUGIN_PROGRAM = "stand-in-session-manager-plugin.pyc"
#: Names AWS's own plugin for the sandbox (and the integration tests) instead of the stand-in.
PLUGIN_ENV_VAR = "SSMFAB_SANDBOX_PLUGIN"

REGION = "us-east-1"
AGENT_VERSION = "3.3.1142.0"
#: AWS owns this document in every region; moto has no copy, so the sandbox adds AWS's content.
SSH_SESSION_DOCUMENT = {
    "schemaVersion": "1.0",
    "description": "Document to start SSH session",
    "sessionType": "Port",
    "parameters": {
        "portNumber": {"type": "String", "description": "(Optional) Port number of SSH server on the instance", "default": "22"}
    },
    "properties": {"portNumber": "{{ portNumber }}"},
}


@dataclass(frozen=True)
class HostSpec:
    name: str
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class SandboxHost:
    name: str
    instance_id: str
    tags: dict[str, str]
    port: int
    pid: int | None
    folder: str
    private_ip: str = ""


def default_hosts(web: int = 3, db: int = 1) -> list[HostSpec]:
    """web-1..N (Role=web) and db-1..M (Role=db), all Env=demo."""
    hosts = [HostSpec(f"web-{n}", {"Role": "web", "Env": "demo"}) for n in range(1, web + 1)]
    hosts += [HostSpec(f"db-{n}", {"Role": "db", "Env": "demo"}) for n in range(1, db + 1)]
    return hosts


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return ""
    return "" if state == "Z" else raw.replace(b"\0", b" ").decode(errors="replace")


def real_plugin_from_env() -> str:
    """AWS's plugin named by SSMFAB_SANDBOX_PLUGIN ("" when unset); SandboxError when it is not a program."""
    named = os.environ.get(PLUGIN_ENV_VAR, "").strip()
    return checked_plugin(named) if named else ""


def checked_plugin(path: str) -> str:
    found = Path(path).expanduser().absolute()
    if not found.is_file() or not os.access(found, os.X_OK):
        raise SandboxError(f"{path}: no session-manager-plugin program there")
    return str(found)


class Sandbox:
    def __init__(self, root: str | os.PathLike[str], link: LinkModel = LinkModel(), plugin: str = "") -> None:
        self.root = Path(root).absolute()
        #: The SSM link model every session of this sandbox gets (applied by its ssmmessages service; the
        #: stand-in plugin reads it from env() and env.sh to pace uploads as the real one does); off by default.
        self.link = link
        #: AWS's session-manager-plugin to run instead of the stand-in ("" = the stand-in).
        self.plugin = checked_plugin(plugin) if plugin else ""
        self.endpoint = ""
        self.moto_pid: int | None = None
        self.user = getpass.getuser()
        self.hosts: list[SandboxHost] = []
        self._servers: dict[str, SSHServer] = {}
        self._moto: subprocess.Popen[bytes] | None = None

    # -- paths -------------------------------------------------------------------------------------
    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def key_file(self) -> Path:
        return self.root / "id_ed25519"

    @property
    def bin_dir(self) -> Path:
        return self.root / "bin"

    @property
    def stand_in_plugin(self) -> Path:
        """The sandbox's stand-in plugin program (there whichever plugin the sandbox runs)."""
        return self.bin_dir / "stand-in-session-manager-plugin"

    # -- lifecycle ---------------------------------------------------------------------------------
    def up(self, hosts: Sequence[HostSpec] | None = None) -> Sandbox:
        if self.state_file.exists():
            raise SandboxError(f"a sandbox is already up at {self.root}: stop it first with `inv sandbox.down`")
        sshd = find_sshd()
        specs = list(hosts if hosts is not None else default_hosts())
        if len({h.name for h in specs}) != len(specs):
            raise SandboxError("sandbox host names must be unique")
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            self._start_moto()
            generate_key(self.key_file, "ssmfab sandbox client")
            authorized = self.root / "authorized_keys"
            shutil.copyfile(self.key_file.with_suffix(".pub"), authorized)
            ports = free_ports(len(specs))
            servers = {spec.name: SSHServer(self.root / "hosts" / spec.name, port, authorized) for spec, port in zip(specs, ports)}
            with ThreadPoolExecutor(max_workers=8) as pool:
                list(pool.map(lambda s: (s.prepare(), s.start(sshd, new_port_on_conflict=True)), servers.values()))
            self._servers = servers
            self._wait_moto()
            self._create_instances(specs)
            self._write_launchers()
            self._save()
        except BaseException:
            self.down()
            raise
        return self

    def _start_moto(self) -> None:
        ready = self.root / "moto.port"
        with (self.root / "moto.log").open("ab") as log:
            self._moto = subprocess.Popen(
                [sys.executable, "-m", "ssmfab.sandbox.server", "--ready-file", str(ready), "--link", self.link.spec()],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        self.moto_pid = self._moto.pid

    def _wait_moto(self, timeout: float = 60.0) -> None:
        ready = self.root / "moto.port"
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if self._moto is not None and self._moto.poll() is not None:
                log = (self.root / "moto.log").read_text(errors="replace").strip().splitlines()[-1:]
                raise SandboxError(f"the sandbox's moto server exited: {' '.join(log) or 'no output'}")
            if time.monotonic() > deadline:
                raise SandboxError(f"the sandbox's moto server did not start within {timeout:.0f}s")
            time.sleep(0.05)
        self.endpoint = f"http://127.0.0.1:{ready.read_text().strip()}"

    def _create_instances(self, specs: Sequence[HostSpec]) -> None:
        import boto3

        ec2 = boto3.client(
            "ec2", endpoint_url=self.endpoint, region_name=REGION,
            aws_access_key_id="testing", aws_secret_access_key="testing",
        )  # fmt: skip
        ssm = boto3.client(
            "ssm", endpoint_url=self.endpoint, region_name=REGION,
            aws_access_key_id="testing", aws_secret_access_key="testing",
        )  # fmt: skip
        ssm.create_document(Name="AWS-StartSSHSession", Content=json.dumps(SSH_SESSION_DOCUMENT), DocumentType="Session")
        image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
        registry = []
        for spec in specs:
            tags = {"Name": spec.name, **spec.tags}
            instance = ec2.run_instances(
                ImageId=image, MinCount=1, MaxCount=1, InstanceType="t3.micro",
                TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}],
            )["Instances"][0]  # fmt: skip
            server = self._servers[spec.name]
            host = SandboxHost(
                name=spec.name,
                instance_id=instance["InstanceId"],
                tags=tags,
                port=server.port,
                pid=server.pid,
                folder=str(server.folder),
                private_ip=instance.get("PrivateIpAddress", ""),
            )
            self.hosts.append(host)
            registry.append(self._registration(host, "Online"))
        sandbox_put_instance_information(self.endpoint, REGION, registry)

    @staticmethod
    def _registration(host: SandboxHost, ping_status: str, agent_version: str = AGENT_VERSION) -> dict[str, Any]:
        return {
            "InstanceId": host.instance_id,
            "PingStatus": ping_status,
            "AgentVersion": agent_version,
            "PlatformType": "Linux",
            "PlatformName": "Amazon Linux",
            "ResourceType": "EC2Instance",
            "IPAddress": host.private_ip,
            "ComputerName": f"{host.name}.sandbox.internal",
            "SandboxStreamAddress": f"127.0.0.1:{host.port}",
            "SandboxPushedKeysFile": str(Path(host.folder) / "pushed_keys"),
            "SandboxHome": str(Path(host.folder) / "home"),
        }

    def _write_launchers(self) -> None:
        self.bin_dir.mkdir(exist_ok=True)
        # Run without site (-S): the stand-in is stdlib-only and starts once per connection. It runs from bytecode
        # compiled here, as an installed program would: a script is compiled from source at every start
        # (~3 ms of CPU each, 51 starts in a 50-host run, on the cores the run is measured on). Its codec is
        # compiled beside it, where it imports it from. It is always there (tests compare both plugins); the
        # name the aws CLI and ssmfab look up is AWS's plugin when one was named.
        source = str(Path(stand_in_plugin.__file__).resolve())
        code = py_compile.compile(source, cfile=str(self.bin_dir / PLUGIN_PROGRAM), doraise=True)
        codec = str(Path(stand_in_codec.__file__).resolve())
        py_compile.compile(codec, cfile=str(self.bin_dir / "datachannel.pyc"), doraise=True)
        self.stand_in_plugin.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "{code}" "$@"\n')
        self.stand_in_plugin.chmod(0o755)
        plugin = self.bin_dir / "session-manager-plugin"
        if self.plugin:
            plugin.symlink_to(self.plugin)
        else:
            shutil.copyfile(self.stand_in_plugin, plugin)
            plugin.chmod(0o755)
        (self.root / "aws-config").touch()
        (self.root / "aws-credentials").touch()
        lines = ["# Point this shell at the ssmfab sandbox fleet: . THIS_FILE", "unset AWS_PROFILE AWS_DEFAULT_PROFILE AWS_SESSION_TOKEN"]
        lines += [f"export {name}={_sh_quote(value)}" for name, value in self.env(path="$PATH").items()]
        (self.root / "env.sh").write_text("\n".join(lines) + "\n")

    def _save(self) -> None:
        state = {
            "root": str(self.root),
            "endpoint": self.endpoint,
            "region": REGION,
            "moto_pid": self.moto_pid,
            "user": self.user,
            "link": self.link.as_dict(),
            "plugin": self.plugin,
            "hosts": [asdict(h) for h in self.hosts],
        }
        temp = self.state_file.with_suffix(".tmp")
        temp.write_text(json.dumps(state, indent=2))
        os.replace(temp, self.state_file)

    @classmethod
    def load(cls, root: str | os.PathLike[str]) -> Sandbox:
        box = cls(root)
        try:
            state = json.loads(box.state_file.read_text())
        except FileNotFoundError:
            raise SandboxError(f"no sandbox at {box.root}: start one with `inv sandbox.up`") from None
        box.endpoint = state["endpoint"]
        box.moto_pid = state["moto_pid"]
        box.user = state["user"]
        box.link = LinkModel(**state.get("link", {}))
        box.plugin = state.get("plugin", "")
        box.hosts = [SandboxHost(**h) for h in state["hosts"]]
        authorized = box.root / "authorized_keys"
        box._servers = {h.name: SSHServer(Path(h.folder), h.port, authorized) for h in box.hosts}
        return box

    def _ours(self, pid: int | None) -> bool:
        """Only signal a pid that is still one of this sandbox's processes (pids get reused)."""
        return pid is not None and str(self.root) in _cmdline(pid)

    def down(self) -> None:
        """Stop every process of this sandbox and remove its folder; safe to call more than once."""
        for name, server in self._servers.items():
            if server.process is not None:
                server.stop()
            else:
                pid = next((h.pid for h in self.hosts if h.name == name), None)
                if pid is not None and self._ours(pid):
                    terminate_group(pid)
        if self._moto is not None:
            terminate_group(self._moto.pid, self._moto)
        elif self._ours(self.moto_pid):
            terminate_group(self.moto_pid)  # type: ignore[arg-type]
        self._end_orphaned_sessions()
        self._servers = {}
        self._moto = None
        shutil.rmtree(self.root, ignore_errors=True)

    def _end_orphaned_sessions(self) -> None:
        """Commands a client walked away from (a cut tunnel, a per-host timeout) keep running on a real
        instance; on the sandbox they would outlive it, so end every process whose HOME is a sandbox host's."""
        marker = f"HOME={self.root}/hosts/".encode()
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                environ = Path(f"/proc/{entry}/environ").read_bytes()
            except OSError:
                continue
            if any(item.startswith(marker) for item in environ.split(b"\0")):
                try:
                    os.kill(int(entry), signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    # -- for tests and demos -----------------------------------------------------------------------
    def host(self, name: str) -> SandboxHost:
        for host in self.hosts:
            if host.name == name:
                return host
        raise SandboxError(f"no sandbox host named {name!r} (have: {', '.join(h.name for h in self.hosts)})")

    def stop_host(self, name: str) -> None:
        """Stop one host's sshd (the instance's SSH service goes down; its SSM agent stays Online)."""
        host = self.host(name)
        server = self._servers[name]
        if server.process is not None:
            server.stop()
        elif self._ours(host.pid):
            terminate_group(host.pid)  # type: ignore[arg-type]
        host.pid = None

    def crash_host(self, name: str) -> None:
        """Kill a host's sshd and its live connections at once (a crash mid-command). Only for a sandbox
        started by this process."""
        server = self._servers[name]
        if server.process is None:
            raise SandboxError(f"{name}: crash_host needs the sandbox object that started it")
        server.crash()
        self.host(name).pid = None

    def start_host(self, name: str) -> None:
        """Start a stopped host's sshd again: same port, same host key."""
        host = self.host(name)
        server = self._servers[name]
        server.start(find_sshd())
        host.pid = server.pid
        self._save()

    def set_agent_status(self, name: str, ping_status: str, agent_version: str = AGENT_VERSION) -> None:
        """Change what SSM reports for a host's agent (e.g. ConnectionLost makes StartSession refuse it)."""
        entry = self._registration(self.host(name), ping_status, agent_version)
        sandbox_put_instance_information(self.endpoint, REGION, [entry])

    def refuse_sessions(self, name: str, code: str = "TargetNotConnected") -> None:
        """Make StartSession fail for a host with an AWS error code while its agent still reports Online
        (what users see while an agent flaps after boot)."""
        entry = {**self._registration(self.host(name), "Online"), "SandboxSessionError": code}
        sandbox_put_instance_information(self.endpoint, REGION, [entry])

    def authorize_key(self, public_key: str) -> None:
        """Let ``public_key`` (an OpenSSH public key line) log in to every host, beside the sandbox's own key."""
        with (self.root / "authorized_keys").open("a") as authorized:
            authorized.write(public_key.strip() + "\n")

    def refuse_client_key(self, name: str) -> None:
        """Restart a host's sshd with no authorised key: SSH authentication to it fails."""
        server = self._servers[name]
        self.stop_host(name)
        empty = server.folder / "no_authorized_keys"
        empty.write_text("")
        server.authorized_keys = empty
        server.prepare()
        self.start_host(name)

    def rotate_host_key(self, name: str) -> None:
        """Give a host a new host key (as a rebuilt instance would have) and restart its sshd."""
        server = self._servers[name]
        self.stop_host(name)
        server.host_key.unlink()
        server.host_key.with_suffix(".pub").unlink()
        server.prepare()
        self.start_host(name)

    def host_public_key(self, name: str) -> str:
        """The host's public key line (type and base64), as sshd offers it."""
        return " ".join(self._servers[name].host_key.with_suffix(".pub").read_text().split()[:2])

    # -- the data channel: link model, fault switches, events (see ssmmessages) ----------------------
    def set_link(self, link: LinkModel) -> None:
        """The link model every session gets from now on (and the stand-in's upload pacing, through env())."""
        call_sandbox_ssm(self.endpoint, REGION, "SandboxSetLink", {"Link": link.spec()})
        self.link = link
        if self.state_file.exists():
            self._save()

    @contextmanager
    def linked(self, link: LinkModel) -> Iterator[dict[str, str]]:
        """``with box.linked(model) as env:`` the link model for the block (env: this sandbox's env() with it),
        then the one before."""
        before = self.link
        self.set_link(link)
        try:
            yield self.env()
        finally:
            self.set_link(before)

    def set_faults(self, name: str | None = None, session_id: str | None = None, clear: bool = False, **faults: Any) -> None:
        """Flip data channel fault switches for a host (every session to it) or one session: SetupDelay=seconds,
        DropAfterBytes=n (0 = now), RefuseResume, NeverAcknowledge, BlackHole, PortClosed,
        UnreachableStream (read at StartSession) (None removes one)."""
        scope = {"SessionId": session_id} if session_id else {"Target": self.host(name or "").instance_id}
        call_sandbox_ssm(self.endpoint, REGION, "SandboxSetFaults", {**scope, "Faults": faults, "Clear": clear})

    def clear_faults(self, name: str | None = None, session_id: str | None = None) -> None:
        self.set_faults(name, session_id, clear=True)

    def wait_for_event(
        self, event: str, name: str | None = None, session_id: str | None = None, count: int = 1, timeout: float = 120
    ) -> list[dict[str, Any]]:
        """Block until the data channel service recorded ``count`` events ``event`` (for host ``name`` or session
        ``session_id`` when given); SandboxError when ``timeout`` (a safety net, not a schedule) passes first."""
        body: dict[str, Any] = {"Event": event, "Count": count, "TimeoutSeconds": timeout}
        if name:
            body["Target"] = self.host(name).instance_id
        if session_id:
            body["SessionId"] = session_id
        found = list(call_sandbox_ssm(self.endpoint, REGION, "SandboxWaitForEvent", body, timeout=timeout + 10)["Events"])
        if len(found) < count:
            raise SandboxError(f"{event} seen {len(found)} times, {count} expected, within {timeout:g}s")
        return found

    def events(self, event: str | None = None, name: str | None = None, session_id: str | None = None) -> list[dict[str, Any]]:
        body: dict[str, Any] = {"Event": event, "SessionId": session_id}
        if name:
            body["Target"] = self.host(name).instance_id
        return list(call_sandbox_ssm(self.endpoint, REGION, "SandboxListEvents", body)["Events"])

    def pushed_keys(self) -> list[dict[str, Any]]:
        """Every EC2 Instance Connect push the sandbox received."""
        return list(call_sandbox_ssm(self.endpoint, REGION, "SandboxListPushedKeys", {})["PushedKeys"])

    def env(self, path: str | None = None) -> dict[str, str]:
        """Environment pointing the aws CLI, boto3 and ssmfab at this sandbox."""
        venv_bin = str(Path(sys.executable).parent)
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "AWS_CONFIG_FILE": str(self.root / "aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(self.root / "aws-credentials"),
            "PATH": os.pathsep.join([str(self.bin_dir), venv_bin, path if path is not None else os.environ.get("PATH", "")]),
            "SSMFAB_USER": self.user,
            "SSMFAB_KEY": str(self.key_file),
            "SSMFAB_KNOWN_HOSTS": str(self.root / "known_hosts"),
            "SSMFAB_AUDIT_PATH": str(self.root / "audit.jsonl"),
            **({LINK_ENV_VAR: self.link.spec()} if self.link.active else {}),
        }


def _sh_quote(value: str) -> str:
    if value.endswith("$PATH"):
        # Keep $PATH expandable when the file is sourced.
        return '"' + value.replace('"', '\\"') + '"'
    import shlex

    return shlex.quote(value)


@contextmanager
def running_sandbox(root: str | os.PathLike[str], hosts: Sequence[HostSpec] | None = None) -> Iterator[Sandbox]:
    """``with running_sandbox(tmp) as box: …``: up, then down whatever happens."""
    box = Sandbox(root).up(hosts)
    try:
        yield box
    finally:
        box.down()
