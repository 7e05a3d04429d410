"""Release-directory deploys: upload, hooks, atomic ``current`` switch, health check, rollback, prune.

Layout on each host (``base`` is ``deploy.base_dir``; relative means relative to the login directory)::

    base/releases/20261128T190102Z/   one directory per release, named by UTC timestamp
    base/current -> releases/…        a relative symlink, replaced atomically by rename(2)

Every step of one host runs over that host's single connection.
"""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from collections.abc import Callable
from typing import Any

from .config import DeploySettings
from .exceptions import CommandError, ConfigError, DeployError
from .transfer import put

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")


def release_name(now: datetime | None = None) -> str:
    return (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%SZ")


@dataclass
class DeployReport:
    release: str
    previous: str | None
    files: int = 0
    bytes: int = 0
    health_attempts: int = 0
    pruned: list[str] = field(default_factory=list)
    exited: int = 0

    def summary(self) -> str:
        return f"release {self.release} live (was {self.previous or 'none'}), {self.files} files, {self.bytes} bytes"


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


class Deployer:
    """One deploy of ``artifact`` to many hosts; ``deploy(conn)`` is the per-host operation."""

    def __init__(
        self,
        settings: DeploySettings,
        artifact: Path,
        release: str | None = None,
        notify: Callable[[str], Any] | None = None,
    ) -> None:
        self.notify = notify or (lambda message: None)
        self.settings = settings
        self.artifact = artifact
        self.release = release or release_name()
        self.base = settings.base_dir.rstrip("/") or "."

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
                f"{label}: health check `{s.health_check}` up to {s.health_retries}x, {s.health_delay:g}s apart; "
                "on failure switch back to the previous release"
            )
        steps.append(f"{label}: keep the newest {s.keep_releases} releases")
        return steps

    def _sh(self, conn: Any, command: str, **kwargs: Any) -> Any:
        result = conn.run(command, hide=True, warn=True, **kwargs)
        if result.failed:
            raise CommandError(_label(conn), command, result.exited, result.stderr)
        return result

    def current(self, conn: Any) -> str | None:
        result = conn.run(f"readlink {_quote(self.base + '/current')}", hide=True, warn=True)
        link = result.stdout.strip()
        return link.rsplit("/", 1)[-1] if result.ok and link else None

    def switch(self, conn: Any, release: str | None) -> None:
        """Point ``current`` at ``release`` atomically (a new symlink renamed over the old one)."""
        current = f"{self.base}/current"
        if release is None:
            self._sh(conn, f"rm -f {_quote(current)}")
            return
        staging = f"{current}.ssmfab-{self.release}"
        self._sh(conn, f"ln -sfn {_quote('releases/' + release)} {_quote(staging)} && mv -Tf {_quote(staging)} {_quote(current)}")

    def _hooks(self, conn: Any, commands: tuple[str, ...], release_dir: str) -> None:
        for command in commands:
            self._sh(conn, f"cd {_quote(release_dir)} && {command}", env={"RELEASE_DIR": release_dir, "BASE_DIR": self.base})

    def healthy(self, conn: Any, report: DeployReport) -> bool:
        s = self.settings
        for attempt in range(1, s.health_retries + 1):
            report.health_attempts = attempt
            result = conn.run(f"cd {_quote(self.base + '/current')} && {s.health_check}", hide=True, warn=True)
            said = (result.stdout.strip() or result.stderr.strip()).splitlines()[-1:] or [""]
            verdict = "passed" if result.ok else f"failed (exit {result.exited})"
            self.notify(f"{_label(conn)}: health check {verdict} on attempt {attempt}/{s.health_retries}: {said[0]}")
            if result.ok:
                return True
            if attempt < s.health_retries:
                time.sleep(s.health_delay)
        return False

    def releases(self, conn: Any) -> list[str]:
        result = conn.run(f"ls -1 {_quote(self.base + '/releases')}", hide=True, warn=True)
        return sorted(line for line in result.stdout.split("\n") if line.strip()) if result.ok else []

    def prune(self, conn: Any, keep_also: set[str]) -> list[str]:
        releases = self.releases(conn)
        old = [r for r in releases[: -self.settings.keep_releases] if r not in keep_also]
        if old:
            paths = " ".join(_quote(f"{self.base}/releases/{r}") for r in old)
            self._sh(conn, f"rm -rf -- {paths}")
        return old

    def deploy(self, conn: Any) -> DeployReport:
        label = _label(conn)
        release_dir = f"{self.base}/releases/{self.release}"
        report = DeployReport(release=self.release, previous=self.current(conn))
        self._sh(conn, f"mkdir -p {_quote(release_dir)}")
        # A directory artifact's contents (not the directory itself) make up the release.
        sources = sorted(self.artifact.iterdir()) if self.artifact.is_dir() else [self.artifact]
        for source in sources:
            transfer = put(conn, str(source), release_dir + "/", recursive=source.is_dir())
            report.files += transfer.files
            report.bytes += transfer.bytes
        if self.artifact.is_file() and self.artifact.name.endswith(ARCHIVE_SUFFIXES):
            archive = f"{release_dir}/{self.artifact.name}"
            self._sh(conn, f"tar -xzf {_quote(archive)} -C {_quote(release_dir)} && rm -f {_quote(archive)}")
        self.notify(f"{label}: uploaded {report.files} files ({report.bytes} bytes) to {release_dir}, verified")
        self._hooks(conn, self.settings.before_switch, release_dir)
        self.switch(conn, self.release)
        self.notify(f"{label}: {self.base}/current -> releases/{self.release} (was {report.previous or 'none'})")
        try:
            self._hooks(conn, self.settings.after_switch, release_dir)
            if self.settings.health_check and not self.healthy(conn, report):
                raise DeployError(
                    f"{label}: health check `{self.settings.health_check}` failed {report.health_attempts}x; "
                    f"switched back to {report.previous or 'no release'}"
                )
        except BaseException:
            self.switch(conn, report.previous)
            self.notify(f"{label}: switched back to {report.previous or 'no release'}")
            raise
        report.pruned = self.prune(conn, {self.release, report.previous or ""})
        return report

    def rollback(self, conn: Any) -> DeployReport:
        """Switch ``current`` back to the release before it."""
        label = _label(conn)
        current = self.current(conn)
        releases = self.releases(conn)
        older = [r for r in releases if current is None or r < current]
        if not older:
            raise DeployError(f"{label}: no release older than {current or 'none'} in {self.base}/releases to roll back to")
        report = DeployReport(release=older[-1], previous=current)
        self.switch(conn, older[-1])
        self.notify(f"{label}: {self.base}/current -> releases/{older[-1]} (was {current or 'none'})")
        return report
