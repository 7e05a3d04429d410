"""Release-directory deploys: upload, hooks, atomic ``current`` switch, health check, rollback, prune.

Layout on each host (``base`` is ``deploy.base_dir``; relative means relative to the login directory)::

    base/releases/20261128T190102.123Z-4f1a9c/   one directory per release: UTC time to the millisecond and a
                                                random suffix, created with a mkdir that fails if it exists
    base/releases/…/.ssmfab-release             the release's verdict: "good" once it went live and passed its
                                                health check, "failed" when its deploy failed or was interrupted
    base/current -> releases/…                  a relative symlink, replaced atomically by rename(2)

A host whose deploy fails after the switch (a hook, the health check, Ctrl-C) is switched back to the release
it ran before, and that release's ``after_switch`` hooks run again so the app serves it. Rollback goes to the
newest release older than ``current`` that is marked good, and runs the hooks and the health check like a
deploy. Pruning deletes failed releases first; releases without a verdict (made before verdicts were recorded,
or by a deploy killed outright) are kept but never rolled back to.

Every step of one host runs over that host's single connection.
"""

from __future__ import annotations

import secrets
import shlex
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .config import DeploySettings
from .exceptions import CommandError, ConfigError, DeployError, SSMFabError
from .transfer import put

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")
#: The file inside a release directory that holds its verdict.
VERDICT_FILE = ".ssmfab-release"
GOOD, FAILED, UNKNOWN = "good", "failed", "unknown"
#: Seconds ``Deployer.interrupt`` waits for hosts to be switched back after Ctrl-C.
INTERRUPT_GRACE = 10.0


def release_name(now: datetime | None = None) -> str:
    """A release directory name: sortable UTC time to the millisecond plus a random suffix, so two deploys
    started in the same instant never share a folder."""
    when = now or datetime.now(timezone.utc)
    return f"{when:%Y%m%dT%H%M%S}.{when.microsecond // 1000:03d}Z-{secrets.token_hex(3)}"


@dataclass
class DeployReport:
    release: str
    previous: str | None
    files: int = 0
    bytes: int = 0
    #: Bytes of the artifact that crossed the link (fewer than ``bytes`` when it went compressed).
    wire_bytes: int = 0
    #: The most SSM sessions one of its files went over.
    streams: int = 1
    health_attempts: int = 0
    pruned: list[str] = field(default_factory=list)
    exited: int = 0


def check_artifact(settings: DeploySettings) -> Path:
    """The artifact as a local path, or a one-line error before any host is touched."""
    if not settings.artifact:
        raise ConfigError("no artifact to deploy: pass --artifact PATH or set deploy.artifact")
    path = Path(settings.artifact).expanduser()
    if not path.exists():
        raise ConfigError(f"artifact {path} does not exist: build it first or fix --artifact")
    if not (path.is_dir() or path.is_file()):
        raise ConfigError(f"artifact {path} is neither a file nor a directory")
    return path


def _quote(path: str) -> str:
    return shlex.quote(path)


def _label(conn: Any) -> str:
    return str(getattr(conn, "label", None) or conn.host)


@dataclass
class _UnderWay:
    """One host's deploy (or rollback) in progress, as ``interrupt()`` needs it to undo it."""

    conn: Any
    release: str
    previous: str | None
    mark_failed: bool = True
    switched: bool = False
    #: Claimed by whoever undoes it (the host's worker or ``interrupt()``), so it is undone once.
    undone: bool = False
    said: str = ""


class Interrupted(DeployError):
    """The run was interrupted (Ctrl-C) while this host was deploying."""


class Deployer:
    """One deploy of ``artifact`` to many hosts; ``deploy(conn)`` is the per-host operation."""

    def __init__(
        self,
        settings: DeploySettings,
        artifact: Path,
        release: str | None = None,
        notify: Callable[[str], Any] | None = None,
        on_bytes: Callable[[int], Any] | None = None,
        compress: bool | None = None,
        streams: int | None = None,
    ) -> None:
        self.notify = notify or (lambda message: None)
        #: Told the bytes of every chunk of the artifact uploaded (the progress line's rate and ETA).
        self.on_bytes = on_bytes
        #: The upload's ``compress`` and ``streams`` (None: as the measured link pays for; see transfer.put).
        self.compress = compress
        self.streams = streams
        self.settings = settings
        self.artifact = artifact
        self.release = release or release_name()
        self.base = settings.base_dir.rstrip("/") or "."
        #: Set by ``interrupt()``: hosts stop where they are.
        self._interrupted = threading.Event()
        #: Hosts whose deploy or rollback is under way: label -> what to undo if it is interrupted.
        self._under_way: dict[str, _UnderWay] = {}
        self._lock = threading.Lock()

    def interrupt(self, grace: float = INTERRUPT_GRACE) -> None:
        """Ctrl-C: stop every host's deploy and undo what it did, over its connection while that still works
        (each on a new channel beside the command it is running): a host already switched goes back to its
        previous release (after_switch re-run) and its release is marked failed. Called from the thread that
        caught Ctrl-C, before the fan-out closes the connections; returns within ``grace`` seconds."""
        self._interrupted.set()
        with self._lock:
            # A host not switched yet is only marked failed here: should its switch still land, the host's
            # own worker switches it back (its next step sees the interrupt).
            pending = [(label, work) for label, work in self._under_way.items() if not work.undone]
            for _, work in pending:
                work.undone = work.switched
        undoers = [threading.Thread(target=self._undo, args=(work,), name=f"ssmfab-undo-{label}", daemon=True) for label, work in pending]
        for undoer in undoers:
            undoer.start()
        deadline = time.monotonic() + grace
        for undoer in undoers:
            undoer.join(max(0.0, deadline - time.monotonic()))

    def _undo(self, work: _UnderWay) -> None:
        if work.undone:
            work.said = self._switch_back(work.conn, work.previous)
        if work.mark_failed:
            with suppress(Exception):
                self.mark(work.conn, work.release, FAILED)

    def _claim_undo(self, conn: Any) -> _UnderWay | None:
        """This host's record, if the worker (not ``interrupt()``) is to undo its deploy; None if done already."""
        with self._lock:
            work = self._under_way.get(_label(conn))
            if work is None or work.undone:
                return None
            work.undone = True
            return work

    def plan(self, label: str) -> list[str]:
        s, base = self.settings, self.base
        steps = [f"{label}: upload {self.artifact} to {base}/releases/{self.release} (verified)"]
        if self.artifact.name.endswith(ARCHIVE_SUFFIXES):
            steps.append(f"{label}: unpack {self.artifact.name} there")
        steps += [f"{label}: run before switch: {c}" for c in s.before_switch]
        steps.append(f"{label}: switch {base}/current -> releases/{self.release} (atomic rename)")
        steps += [f"{label}: run after switch: {c}" for c in s.after_switch]
        if s.health_check:
            steps.append(
                f"{label}: health check `{s.health_check}` up to {s.health_retries}x, {s.health_delay:g}s apart"
            )
        steps.append(
            f"{label}: on any failure after the switch: switch back to the previous release and re-run its after-switch hooks"
        )
        steps.append(f"{label}: keep the newest {s.keep_releases} good releases (failed ones are pruned first)")
        return steps

    # -- remote steps -----------------------------------------------------------------------------------
    def _sh(self, conn: Any, command: str, *, check_interrupt: bool = True) -> Any:
        if check_interrupt and self._interrupted.is_set():
            raise Interrupted(f"{_label(conn)}: interrupted (Ctrl-C)")
        result = conn.run(command, hide=True, warn=True)
        if result.failed:
            raise CommandError(_label(conn), command, result.exited, result.stderr)
        return result

    def _release_dir(self, release: str) -> str:
        return f"{self.base}/releases/{release}"

    def current(self, conn: Any) -> str | None:
        result = conn.run(f"readlink {_quote(self.base + '/current')}", hide=True, warn=True)
        link = result.stdout.strip()
        return link.rsplit("/", 1)[-1] if result.ok and link else None

    def switch(self, conn: Any, release: str | None, *, check_interrupt: bool = True) -> None:
        """Point ``current`` at ``release`` atomically (a new symlink renamed over the old one)."""
        current = f"{self.base}/current"
        if release is None:
            self._sh(conn, f"rm -f {_quote(current)}", check_interrupt=check_interrupt)
            return
        staging = f"{current}.ssmfab-{self.release}"
        self._sh(
            conn,
            f"ln -sfn {_quote('releases/' + release)} {_quote(staging)} && mv -Tf {_quote(staging)} {_quote(current)}",
            check_interrupt=check_interrupt,
        )

    def _hooks(self, conn: Any, commands: tuple[str, ...], release: str, *, check_interrupt: bool = True) -> None:
        # The variables are set on the host, not passed as ``env=`` (Fabric's inline export does no quoting: a
        # base_dir holding `$(…)` or `;` would run there); they are absolute, so hooks may cd anywhere.
        setup = (
            f"cd {_quote(self.base)} && export BASE_DIR=\"$PWD\" && "
            f"cd {_quote('releases/' + release)} && export RELEASE_DIR=\"$PWD\""
        )
        for command in commands:
            self._sh(conn, f"{setup} && {command}", check_interrupt=check_interrupt)

    def mark(self, conn: Any, release: str, verdict: str) -> None:
        """Record ``verdict`` (good or failed) in the release's folder on the host."""
        path = f"{self._release_dir(release)}/{VERDICT_FILE}"
        self._sh(conn, f"echo {verdict} > {_quote(path)}", check_interrupt=False)

    def healthy(self, conn: Any, report: DeployReport) -> bool:
        s = self.settings
        for attempt in range(1, s.health_retries + 1):
            if self._interrupted.is_set():
                raise Interrupted(f"{_label(conn)}: interrupted (Ctrl-C) during the health check")
            report.health_attempts = attempt
            result = conn.run(f"cd {_quote(self.base + '/current')} && {s.health_check}", hide=True, warn=True)
            if self._interrupted.is_set():  # the check was cut short by Ctrl-C, not failed
                raise Interrupted(f"{_label(conn)}: interrupted (Ctrl-C) during the health check")
            said = (result.stdout.strip() or result.stderr.strip()).splitlines()[-1:] or [""]
            verdict = "passed" if result.ok else f"failed (exit {result.exited})"
            self.notify(f"{_label(conn)}: health check {verdict} on attempt {attempt}/{s.health_retries}: {said[0]}")
            if result.ok:
                return True
            if attempt < s.health_retries and self._interrupted.wait(s.health_delay):
                raise Interrupted(f"{_label(conn)}: interrupted (Ctrl-C) during the health check")
        return False

    def verdicts(self, conn: Any) -> dict[str, str]:
        """Every release on the host and its verdict: good, failed or unknown (no record)."""
        script = (
            f"cd {_quote(self.base + '/releases')} 2>/dev/null || exit 0; "
            f"for r in *; do [ -d \"$r\" ] || continue; v=$(cat \"$r\"/{VERDICT_FILE} 2>/dev/null); "
            "printf '%s %s\\n' \"$r\" \"${v:-unknown}\"; done"
        )
        result = conn.run(script, hide=True, warn=True)
        found: dict[str, str] = {}
        for line in result.stdout.splitlines() if result.ok else ():
            name, _, verdict = line.rpartition(" ")
            if name:
                found[name] = verdict if verdict in (GOOD, FAILED) else UNKNOWN
        return found

    def prune(self, conn: Any, keep_also: set[str]) -> list[str]:
        """Keep ``keep_releases`` releases (plus ``keep_also``), choosing good ones first, then those without a
        verdict, then failed ones, newest first within each; delete the rest."""
        verdicts = self.verdicts(conn)
        rank = {GOOD: 0, UNKNOWN: 1, FAILED: 2}
        newest_first = sorted(verdicts, reverse=True)
        preferred = sorted(newest_first, key=lambda r: rank[verdicts[r]])  # stable: newest first within a rank
        kept = {r for r in keep_also if r in verdicts}
        for release in preferred:
            if len(kept) >= self.settings.keep_releases:
                break
            kept.add(release)
        old = sorted(r for r in verdicts if r not in kept)
        if old:
            paths = " ".join(_quote(self._release_dir(r)) for r in old)
            self._sh(conn, f"rm -rf -- {paths}", check_interrupt=False)
        return old

    # -- deploy and rollback ------------------------------------------------------------------------------
    def _go_live(self, conn: Any, work: _UnderWay, report: DeployReport, what: str) -> None:
        """Hooks, switch, hooks, health check; on any failure (Ctrl-C included) after the switch, switch back
        to ``work.previous`` and re-run its after-switch hooks, then raise."""
        label, release, previous = _label(conn), work.release, work.previous
        self._hooks(conn, self.settings.before_switch, release)
        self.switch(conn, release)
        with self._lock:
            work.switched = True
        self.notify(f"{label}: {self.base}/current -> releases/{release} (was {previous or 'none'})")
        try:
            self._hooks(conn, self.settings.after_switch, release)
            if self.settings.health_check and not self.healthy(conn, report):
                raise DeployError(f"{label}: {what}: health check `{self.settings.health_check}` failed {report.health_attempts}x")
        except SSMFabError as exc:
            raise DeployError(f"{exc}; {self._switch_back_once(conn, work)}", label) from exc
        except BaseException:
            self._switch_back_once(conn, work)
            raise

    def _switch_back_once(self, conn: Any, work: _UnderWay) -> str:
        """Switch back unless ``interrupt()`` did it already (then say what it said)."""
        if self._claim_undo(conn) is None:
            return work.said or "switched back (Ctrl-C)"
        work.said = self._switch_back(conn, work.previous)
        return work.said

    def _switch_back(self, conn: Any, previous: str | None) -> str:
        """Switch ``current`` back to ``previous`` and re-run its after-switch hooks; says what happened."""
        label = _label(conn)
        try:
            if previous is None:
                self.switch(conn, None, check_interrupt=False)
                said = f"no previous release to switch back to: removed {self.base}/current, nothing is live"
            else:
                self.switch(conn, previous, check_interrupt=False)
                self._hooks(conn, self.settings.after_switch, previous, check_interrupt=False)
                rerun = " and re-ran its after-switch hooks" if self.settings.after_switch else ""
                said = f"switched back to {previous}{rerun}"
        except Exception as exc:  # noqa: BLE001 - whatever broke, the user must be told the truth
            said = f"switching back to {previous or 'no release'} FAILED too ({exc}): check {self.base}/current by hand"
        self.notify(f"{label}: {said}")
        return said

    def deploy(self, conn: Any) -> DeployReport:
        label = _label(conn)
        release_dir = self._release_dir(self.release)
        report = DeployReport(release=self.release, previous=self.current(conn))
        # mkdir without -p for the release itself: a folder of that name already there is another deploy's.
        created = self._sh(
            conn,
            f"mkdir -p {_quote(self.base + '/releases')} && mkdir {_quote(release_dir)} 2>/dev/null || echo exists",
        )
        if created.stdout.strip() == "exists":
            raise DeployError(f"{label}: release folder {release_dir} already exists: another deploy uses the name {self.release}")
        work = _UnderWay(conn, self.release, report.previous)
        with self._lock:
            self._under_way[label] = work
        try:
            # A directory artifact's contents (not the directory itself) make up the release.
            sources = sorted(self.artifact.iterdir()) if self.artifact.is_dir() else [self.artifact]
            for source in sources:
                if self._interrupted.is_set():
                    raise Interrupted(f"{label}: interrupted (Ctrl-C) during the upload")
                # Once per host, over as many SSM sessions and as compressed as the measured link pays for.
                transfer = put(
                    conn, str(source), release_dir + "/", recursive=source.is_dir(), compress=self.compress,
                    streams=self.streams, progress=self.on_bytes,
                )  # fmt: skip
                report.files += transfer.files
                report.bytes += transfer.bytes
                report.wire_bytes += transfer.wire_bytes
                report.streams = max(report.streams, transfer.streams)
            if self.artifact.is_file() and self.artifact.name.endswith(ARCHIVE_SUFFIXES):
                archive = f"{release_dir}/{self.artifact.name}"
                self._sh(conn, f"tar -xzf {_quote(archive)} -C {_quote(release_dir)} && rm -f {_quote(archive)}")
            self.notify(f"{label}: uploaded {report.files} files ({report.bytes} bytes) to {release_dir}, verified")
            self._go_live(conn, work, report, f"release {self.release}")
        except BaseException:
            with suppress(Exception):
                self.mark(conn, self.release, FAILED)
            raise
        finally:
            with self._lock:
                self._under_way.pop(label, None)
        self.mark(conn, self.release, GOOD)
        report.pruned = self.prune(conn, {self.release, report.previous or ""})
        return report

    def rollback(self, conn: Any) -> DeployReport:
        """Switch ``current`` to the newest older release that passed its health check, with the hooks and the
        health check of a deploy; if that check fails, switch back to where it was."""
        label = _label(conn)
        current = self.current(conn)
        if current is None:
            raise DeployError(f"{label}: nothing to roll back: {self.base}/current does not exist")
        verdicts = self.verdicts(conn)
        good = [r for r in sorted(verdicts) if r < current and verdicts[r] == GOOD]
        if not good:
            older = [r for r in sorted(verdicts) if r < current]
            passed = f" ({len(older)} older, none marked good: failed or deployed before verdicts were recorded)" if older else ""
            raise DeployError(f"{label}: no release older than {current} in {self.base}/releases passed its health check{passed}")
        report = DeployReport(release=good[-1], previous=current)
        # Interrupted, a rollback goes back to where it was; the release it tried keeps its verdict.
        work = _UnderWay(conn, good[-1], current, mark_failed=False)
        with self._lock:
            self._under_way[label] = work
        try:
            self._go_live(conn, work, report, f"rollback to {good[-1]}")
        finally:
            with self._lock:
                self._under_way.pop(label, None)
        return report


def artifact_bytes(artifact: Path) -> int:
    """What one host's upload of ``artifact`` (a file or a folder's files) moves."""
    if artifact.is_file():
        return artifact.stat().st_size
    return sum(path.stat().st_size for path in artifact.rglob("*") if path.is_file())
