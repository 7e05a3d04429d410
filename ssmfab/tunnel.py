"""How bytes reach an instance's sshd: the one seam between SSH and AWS Systems Manager.

A ``TunnelFactory`` opens a ``Tunnel`` to an instance id; the tunnel's ``sock`` is one end of a
``socketpair`` whose other end is the stdin/stdout of the process carrying the SSM session, as OpenSSH
does for a ProxyCommand. paramiko then works on a real socket (select, timeouts) rather than on pipes.

Modes:

``cli``
    The documented ProxyCommand ``aws ssm start-session --target ID --document-name AWS-StartSSHSession
    --parameters portNumber=22``. The aws process stays alive (as the plugin's parent) for the session.
    Neither the aws CLI nor the plugin ends the SSM session when the input ends: the session id the plugin
    prints on the stream is read (TunnelSocket) and TerminateSession called on close.
``plugin``
    StartSession through boto3 in this process, then session-manager-plugin started directly with the
    aws CLI's exact calling convention, so any real plugin build works; TerminateSession on close.

What the plugin prints before sshd's banner never reaches paramiko (see ``tunnelsocket``): it is kept for
the error line of a session that ended before SSH started.

Every tunnel process runs in its own session and process group; ``close()`` ends the whole group, so
the plugin under an aws process is never orphaned (paramiko's ProxyCommand only signals its child).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from contextlib import suppress
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any, Protocol

from .aws import AWSContext, aws_errors, describe_client_error
from .config import Settings
from .exceptions import (
    AccessDeniedError, AWSCLIError, ConfigError, CredentialsError, PluginError, SessionLostError, SSMFabError, TunnelError,
)  # fmt: skip
from .tunnelsocket import TunnelSocket

if TYPE_CHECKING:
    from mypy_boto3_ssm import SSMClient

#: The first plugin release that supports SSH sessions (AWS's documentation).
MIN_PLUGIN_VERSION = (1, 1, 23, 0)
#: Plugins up to this version take the StartSession response JSON itself as their first argument;
#: newer ones take the name of an environment variable holding it (the aws CLI's convention).
LAST_PLUGIN_WITH_INLINE_RESPONSE = (1, 2, 497, 0)
RESPONSE_ENV_VAR = "AWS_SSM_START_SESSION_RESPONSE"
PLUGIN_INSTALL_HINT = (
    "install session-manager-plugin: "
    "https://docs.aws.amazon.com/systems-manager/latest/userguide/session-manager-working-with-install-plugin.html"
)
AWS_ERROR_LINE = re.compile(r"An error occurred \((\w+)\) when calling the (\w+) operation: (.*)")


class Tunnel(Protocol):
    """An open byte stream to one instance's sshd."""

    sock: TunnelSocket

    def close(self) -> None: ...

    def lose(self, error: SSMFabError) -> None:
        """The session is dead (keepalives went unanswered): remember why, and cut the stream now so paramiko
        stops waiting on it; ``failure`` then returns ``error``."""
        ...

    def failure(self, host: str) -> SSMFabError | None:
        """Why the tunnel broke, from its process's exit status and stderr; None if it looks healthy."""
        ...


class TunnelFactory(Protocol):
    mode: str

    def check(self) -> None:
        """Verify prerequisites (CLI, plugin version) once, raising a one-line error with the fix."""
        ...

    def prepare(self) -> None:
        """Start the checks the first tunnel needs in the background (while hosts are looked up, say); a
        failure surfaces at ``check`` or ``open``."""
        ...

    def open(self, target_id: str, label: str | None = None) -> Tunnel:
        """Open a tunnel to ``target_id``; ``label`` (e.g. "web-1 (i-…)") names it in errors."""
        ...


def parse_version(text: str) -> tuple[int, ...]:
    match = re.search(r"(\d+(?:\.\d+)+)", text)
    return tuple(int(p) for p in match.group(1).split(".")) if match else ()


def plugin_version(plugin: str) -> tuple[int, ...]:
    """The installed plugin's version, or PluginError naming the fix."""
    path = shutil.which(plugin)
    if path is None:
        raise PluginError(f"{plugin} not found on PATH: {PLUGIN_INSTALL_HINT}")
    try:
        done = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PluginError(f"{path} --version failed ({exc}): reinstall it; {PLUGIN_INSTALL_HINT}") from exc
    version = parse_version(done.stdout)
    if not version:
        raise PluginError(f"{path} --version printed no version ({done.stdout.strip()!r}): {PLUGIN_INSTALL_HINT}")
    if version < MIN_PLUGIN_VERSION:
        shown = ".".join(map(str, version))
        raise PluginError(f"session-manager-plugin {shown} is too old for SSH (needs >= 1.1.23.0): {PLUGIN_INSTALL_HINT}")
    return version


class PluginCheck:
    """``plugin_version`` run once, on a thread of its own, by whichever comes first: ``start`` (to overlap
    other waits) or ``version``. Fan-out threads share it; a failure is kept and raised to every caller."""

    def __init__(self, plugin: str) -> None:
        self.plugin = plugin
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._version: tuple[int, ...] = ()
        self._failure: SSMFabError | None = None

    def start(self) -> None:
        with self._lock:
            if self._thread is None:
                # Not a daemon: an interpreter that exits first (say, no host matched) waits the few ms for
                # `--version` instead of leaving it behind.
                self._thread = threading.Thread(target=self._run, name="ssmfab-plugin-version")
                self._thread.start()

    def _run(self) -> None:
        try:
            self._version = plugin_version(self.plugin)
        except SSMFabError as exc:
            self._failure = exc

    def raise_if_failed(self) -> None:
        """Raise the check's failure if it has already failed; never waits."""
        if self._failure is not None:
            raise self._failure

    def version(self) -> tuple[int, ...]:
        """The plugin's version, waiting for the check (started here if no one has), or its PluginError."""
        self.start()
        assert self._thread is not None
        self._thread.join()
        self.raise_if_failed()
        return self._version


#: Lines the aws CLI and the plugin print around the real reason a session failed.
NOISE_PREFIXES = ("Command '[", "WARNING", "For more information", "https://", "Starting session", "Exiting session")


def _telling(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith(NOISE_PREFIXES)


def _shortened(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _group_alive(pgid: int) -> bool:
    """Whether any non-zombie process is left in the group (zombies of reparented children don't count)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False  # the usual case, answered without reading /proc
    except PermissionError:
        pass
    try:
        entries = os.listdir("/proc")
    except OSError:
        try:
            os.killpg(pgid, 0)
            return True
        except (ProcessLookupError, PermissionError):
            return False
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                stat = handle.read().decode(errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False


class ProcessTunnel:
    """A child process group whose stdin/stdout is the other end of ``sock``."""

    def __init__(
        self,
        argv: list[str],
        env: dict[str, str] | None = None,
        *,
        on_close: Callable[[str | None], object] | None = None,
        session_id: str | None = None,
    ) -> None:
        self.argv = argv
        self._own, child_end = socket.socketpair()
        #: What paramiko gets: a duplicate, so that close() can still shut the socket down after paramiko
        #: closed its copy (its transport thread keeps the socket open until a pending recv() times out).
        self.sock = TunnelSocket(self._own.dup())
        child_fd = child_end.fileno()
        self._stderr: IO[bytes] = tempfile.TemporaryFile()
        #: Called on close with the SSM session's id (None if it never became known), to end the session.
        self._on_close = on_close
        self._session_id = session_id
        self._closed = False
        self._final_stderr = ""
        self.lost: SSMFabError | None = None
        try:
            self.process = subprocess.Popen(
                argv,
                stdin=child_fd,
                stdout=child_fd,
                stderr=self._stderr,
                env=env,
                close_fds=True,
                start_new_session=True,
            )
        except OSError as exc:
            self.sock.close()
            self._own.close()
            self._stderr.close()
            raise TunnelError(f"cannot start {argv[0]}: {exc.strerror}") from exc
        finally:
            child_end.close()

    @property
    def session_id(self) -> str | None:
        """The SSM session's id: known from StartSession (plugin mode) or announced by the plugin (cli mode)."""
        return self._session_id or self.sock.session_id

    def lose(self, error: SSMFabError) -> None:
        self.lost = error
        with suppress(OSError):
            self._own.shutdown(socket.SHUT_RDWR)

    def stderr_text(self) -> str:
        if self._stderr.closed:
            return self._final_stderr
        self._stderr.seek(0)
        return self._stderr.read()[-8192:].decode(errors="replace")

    def failure(self, host: str) -> SSMFabError | None:
        if self.lost is not None:
            return self.lost
        try:
            # A dying tunnel may still be writing its reason; give it a moment to finish.
            code: int | None = self.process.wait(timeout=0 if self._closed else 2)
        except subprocess.TimeoutExpired:
            code = None
        if self._closed and not self.stderr_text().strip():
            return TunnelError(f"{host}: the connection was closed while in use", host)
        text = self.stderr_text()
        match = AWS_ERROR_LINE.search(text)
        if match:
            error = describe_client_error(match.group(1), match.group(3).strip(), f"calling {match.group(2)}", host)
            return error if isinstance(error, SSMFabError) else TunnelError(str(error), host)
        if "SessionManagerPlugin is not found" in text:
            return PluginError(f"{host}: the aws CLI found no session-manager-plugin: {PLUGIN_INSTALL_HINT}", host)
        if "Unable to locate credentials" in text:
            return CredentialsError(
                f"{host}: the aws CLI found no AWS credentials: set AWS_PROFILE, run `aws configure` or `aws sso login`"
            )
        last = next((line.strip() for line in reversed(text.splitlines()) if _telling(line)), "")
        # A plugin that ended before paramiko read anything (its first write, the banner, found the stream
        # closed) left its last words unread: take them in now.
        self.sock.read_available_preamble(via=None if self._closed else self._own)
        said = self.sock.reason  # what the plugin printed on the stream instead of an SSH banner
        if self.sock.overflowed:
            return TunnelError(
                f"{host}: no SSH banner in what came through the SSM tunnel (it began: {_shortened(said, 120)}); "
                "check that the document's port on the instance is sshd's",
                host,
            )
        if not self.sock.banner_seen and said:
            return TunnelError(
                f"{host}: the SSM session ended before SSH started: {_shortened(said)}; "
                "check that sshd runs on the instance and listens on the document's port",
                host,
            )
        if code is None:
            # Still running: the stream is open. Not a closed tunnel; the caller knows what it waited for.
            return None
        reason = f": {last}" if last else ""
        if self.sock.banner_seen:
            # SSH had started: the SSM session ended under it. AWS's plugin exits 0 without a word when its data
            # channel died and ResumeSession failed; an instance whose sshd went away ends the session too.
            return SessionLostError(
                f"{host}: SSM session lost: the tunnel ended under the SSH session (exit {code}){reason}: its data "
                "channel died or sshd on the instance closed; check the instance's SSM agent, sshd and network",
                host,
            )
        return TunnelError(f"{host}: SSM tunnel closed (exit {code}){reason}; check that sshd runs on the instance", host)

    def _group_alive(self) -> bool:
        # While the leader lives the group does: no need to read /proc for it (that scan cost a 50-host
        # run ~10% of its CPU, repeated every few ms while plugins ended their sessions).
        return self.process.poll() is None or _group_alive(self.process.pid)

    def close(self) -> None:
        """End the whole process group: EOF first, then SIGTERM, then SIGKILL. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self.sock.read_available_preamble(via=self._own)  # a session id printed but not read yet (cli mode)
        with suppress(OSError):
            self._own.shutdown(socket.SHUT_RDWR)  # EOF to the tunnel process now, whoever holds a copy
        self._own.close()
        self.sock.close()
        ending: threading.Thread | None = None
        if self._on_close is not None:
            # While the process winds down, not after: ending the SSM session is a round trip to AWS, and
            # the plugin closes its data channel on its way out (one host's close 40 -> 25 ms on the
            # sandbox). session-manager-plugin calls no TerminateSession when its input ends, so this does.
            # On a thread of its own, so an AWS that does not answer never keeps the processes alive.
            ending = threading.Thread(target=self._end_session, name="ssmfab-end-session", daemon=True)
            ending.start()
        try:
            self._end_group()
        finally:
            if ending is not None:
                ending.join()  # bounded by the AWS client's timeouts (aws.read_timeout, aws.max_attempts)

    def _end_session(self) -> None:
        assert self._on_close is not None
        try:
            self._on_close(self.session_id)
        except Exception:  # noqa: BLE001 - a thread of its own: nobody to raise to; the processes still end
            logging.getLogger("ssmfab").warning("ending the SSM session %s failed", self.session_id, exc_info=True)

    def _end_group(self) -> None:
        pgid = self.process.pid
        try:
            self.process.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            pass
        for sig, grace in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
            if not self._group_alive():
                break
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and self._group_alive():
                if self.process.poll() is None:
                    try:
                        self.process.wait(timeout=0.05)
                    except subprocess.TimeoutExpired:
                        pass
                else:
                    time.sleep(0.02)
        try:
            self.process.wait(timeout=3)
        except subprocess.TimeoutExpired:
            pass
        # Keep the last words for failure(), which may run after close() (e.g. a transfer cut mid-way).
        self._final_stderr = self.stderr_text()
        self._stderr.close()


class SessionEnder:
    """TerminateSession for the tunnels of one run. A failure never fails a host (its work is done; the
    session ends at SSM's idle timeout), but it is said once per run through ``notify``: the same cause
    (a policy without ssm:TerminateSession, say) would otherwise print a line per host."""

    def __init__(self, ssm: Callable[[], SSMClient], notify: Callable[[str], object] | None = None) -> None:
        self._ssm = ssm
        self.notify = notify
        self._lock = threading.Lock()
        self._told = False

    def end(self, session_id: str | None, target_id: str) -> None:
        if not session_id:
            return
        try:
            with aws_errors(f"ending SSM session {session_id}", target_id):
                self._ssm().terminate_session(SessionId=session_id)
        except SSMFabError as exc:
            with self._lock:
                if self._told:
                    return
                self._told = True
            fix = "; allow ssm:TerminateSession in IAM" if isinstance(exc, AccessDeniedError) else ""
            message = f"warning: SSM sessions could not be ended on close and stay open until SSM's idle timeout: {exc}{fix}"
            if self.notify is not None:
                self.notify(message)
            else:
                logging.getLogger("ssmfab").warning(message)


def _cli_seconds(seconds: float) -> str:
    """A timeout as the aws CLI takes it: whole seconds (it refuses "2.5": every tunnel would fail), rounded up
    so it is never shorter than ours, nor 0 for a positive one (the aws CLI reads 0 as "no timeout")."""
    return str(math.ceil(seconds))


class CLITunnelFactory:
    """The documented ProxyCommand: ``aws ssm start-session … --document-name AWS-StartSSHSession``."""

    mode = "cli"

    def __init__(self, settings: Settings, aws: AWSContext, notify: Callable[[str], object] | None = None) -> None:
        self.settings = settings
        self.aws = aws
        self._plugin = PluginCheck(settings.tunnel.plugin)
        self.ender = SessionEnder(aws.ssm, notify)

    def prepare(self) -> None:
        self._plugin.start()

    def check(self) -> None:
        if shutil.which(self.settings.tunnel.aws_cli) is None:
            raise AWSCLIError(
                f"{self.settings.tunnel.aws_cli} not found on PATH: install the AWS CLI, "
                "or use the plugin tunnel (--tunnel plugin / tunnel.mode = \"plugin\")"
            )
        self._plugin.version()

    def argv(self, target_id: str, port: str | None = None) -> list[str]:
        """The command line; ``argv("%h", "%p")`` gives the ProxyCommand for an ssh config."""
        tunnel = self.settings.tunnel
        return [
            tunnel.aws_cli, "ssm", "start-session",
            "--target", target_id,
            "--document-name", tunnel.document,
            "--parameters", f"portNumber={port or tunnel.remote_port}",
            *self.aws.cli_options(),
        ]  # fmt: skip

    def open(self, target_id: str, label: str | None = None) -> Tunnel:
        self.check()
        # The CLI's own AWS calls get the same bounds as ours (not in argv(): ssh configs keep the plain form).
        bounds = ["--cli-connect-timeout", _cli_seconds(self.aws.connect_timeout), "--cli-read-timeout", _cli_seconds(self.aws.read_timeout)]
        reason = session_reason(self.settings)
        if reason:
            bounds += ["--reason", reason]
        env = dict(self.aws.process_env(), AWS_MAX_ATTEMPTS=str(self.aws.max_attempts), AWS_RETRY_MODE="standard")
        # The plugin announces the session's id on the stream; neither it nor the aws CLI ends the session.
        return ProcessTunnel(
            [*self.argv(target_id), *bounds], env, on_close=lambda session_id: self.ender.end(session_id, target_id)
        )


class PluginTunnelFactory:
    """StartSession in-process, then session-manager-plugin with the aws CLI's calling convention."""

    mode = "plugin"

    def __init__(self, settings: Settings, aws: AWSContext, notify: Callable[[str], object] | None = None) -> None:
        self.settings = settings
        self.aws = aws
        self._plugin = PluginCheck(settings.tunnel.plugin)
        self.ender = SessionEnder(lambda: self.ssm, notify)

    def prepare(self) -> None:
        self._plugin.start()

    def check(self) -> None:
        self._plugin.version()

    @property
    def ssm(self) -> SSMClient:
        return self.aws.ssm()  # one shared client (AWSContext makes it once)

    def open(self, target_id: str, label: str | None = None) -> Tunnel:
        # A failed plugin check fails every later open at once, before it starts a session. Unprepared, the
        # first open checks the plugin while StartSession is in flight: both are waits, not work.
        self._plugin.raise_if_failed()
        self._plugin.start()
        request, response = start_ssh_session(self.settings, self.ssm, target_id, label)
        session_id = response["SessionId"]

        def terminate(known_id: str | None = session_id) -> None:
            # The session must end on AWS's side too, whatever the plugin did on its way out.
            self.ender.end(known_id or session_id, target_id)

        try:
            version = self._plugin.version()
        except SSMFabError:
            terminate()
            raise
        argv, env = plugin_command(self.settings, self.aws, self.ssm.meta.endpoint_url, version, request, response)
        try:
            return ProcessTunnel(argv, env, on_close=terminate, session_id=session_id)
        except TunnelError:
            terminate()
            raise


def session_reason(settings: Settings) -> str:
    """The reason sessions are opened for ("" for none); ConfigError when ``audit.require_reason`` wants one."""
    if settings.audit.require_reason and not settings.tunnel.reason.strip():
        raise ConfigError(
            "a reason is required (audit.require_reason): give --reason TEXT, e.g. --reason 'INC-123 restart nginx' "
            "(it is shown in the Session Manager console and CloudTrail, and kept in the audit trail)"
        )
    return settings.tunnel.reason


def start_ssh_session(
    settings: Settings, ssm: SSMClient, target_id: str, label: str | None = None, port: str | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """StartSession with the SSH document: the request (the plugin needs it too) and the response."""
    request: dict[str, Any] = {
        "Target": target_id,
        "DocumentName": settings.tunnel.document,
        "Parameters": {"portNumber": [port or str(settings.tunnel.remote_port)]},
    }
    reason = session_reason(settings)
    if reason:
        request["Reason"] = reason
    with aws_errors("starting the SSM session", label or target_id):
        response = ssm.start_session(**request)
    return request, dict(response)


def plugin_command(
    settings: Settings, aws: AWSContext, endpoint_url: str, version: tuple[int, ...], request: dict[str, Any], response: dict[str, Any]
) -> tuple[list[str], dict[str, str]]:
    """The plugin's argv and environment exactly as the aws CLI builds them, so any real plugin build works."""
    session = {k: response[k] for k in ("SessionId", "TokenValue", "StreamUrl")}
    env = aws.process_env()
    if version <= LAST_PLUGIN_WITH_INLINE_RESPONSE:
        first_arg = json.dumps(session)
    else:
        env[RESPONSE_ENV_VAR] = json.dumps(session)
        first_arg = RESPONSE_ENV_VAR
    argv = [
        str(shutil.which(settings.tunnel.plugin)),
        first_arg,
        aws.region,
        "StartSession",
        "" if aws.role_arn else aws.profile or "",  # an assumed role's credentials come in the environment
        json.dumps(request),
        endpoint_url,
    ]
    return argv, env


def tunnel_factory(settings: Settings, aws: AWSContext, notify: Callable[[str], object] | None = None) -> TunnelFactory:
    """The factory for ``tunnel.mode``; ``notify`` gets run-wide notices (a session that could not be ended)."""
    if settings.tunnel.mode == "plugin":
        return PluginTunnelFactory(settings, aws, notify)
    return CLITunnelFactory(settings, aws, notify)
