"""Planning a transfer before any byte moves: what a local source sends (scan_local), what a remote path or
glob fetches (plan_download), and the checks that refuse unsafe names, links leading out and unusable folders."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ..exceptions import ConfigError, TransferError
from .outcome import LocalReadError, TransferReport
from .paths import glob_matches, has_glob, remote_inside, remote_join, sftp_name, show, split_glob, temp_name, unsafe_name
from .session import STREAM_MIN_BYTES, Session


@dataclass(frozen=True)
class Upload:
    local: Path
    rel: str  # POSIX path below the transfer's top; "" for a single file
    size: int
    mode: int | None  # None: a file-like object, which has no mode to keep
    #: The open binary file-like object to read instead of ``local`` (read from its start, like Fabric).
    fileobj: Any = None
    #: False when ``size`` is only a guess (a file-like object that cannot seek: its end is where it ends).
    exact: bool = True

    @property
    def source(self) -> str:
        """How reports name where the file came from."""
        return str(self.local) if self.fileobj is None else f"<{type(self.fileobj).__name__} {show(str(self.local))}>"

    @contextmanager
    def open(self) -> Iterator[LocalReader]:
        """The bytes to send, readable from their start; a caller's file-like object is left open."""
        if self.fileobj is not None:
            yield LocalReader(self.fileobj, self.source)
            return
        what = show(str(self.local))  # one line, whatever the name holds
        try:
            source = self.local.open("rb")
        except OSError as exc:  # removed or made unreadable since it was listed
            raise LocalReadError(what, exc) from exc
        with source:
            yield LocalReader(source, what)


class LocalReader:
    """A local source whose failed reads raise LocalReadError naming ``what``."""

    def __init__(self, source: Any, what: str) -> None:
        self._source = source
        self.what = what

    def read(self, size: int = -1) -> bytes:
        try:
            data: bytes = self._source.read(size)
        except OSError as exc:
            raise LocalReadError(self.what, exc) from exc
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        try:
            return int(self._source.seek(offset, whence))
        except OSError as exc:
            raise LocalReadError(self.what, exc) from exc


@dataclass
class LocalTree:
    dirs: list[tuple[str, int]] = field(default_factory=list)  # (rel, mode), parents first
    files: list[Upload] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def scan_fileobj(fileobj: Any, host: str) -> LocalTree:
    """What an upload of an open binary file-like object sends: its whole content (it is rewound first, as
    Fabric does; one that cannot seek is read from where it is to its end, and always streamed)."""
    if isinstance(fileobj.read(0), str):
        raise TransferError(f"{host}: the file-like object to upload is in text mode; open it in binary mode ('rb')", host)
    name = getattr(fileobj, "name", None)
    label = os.path.basename(name) if isinstance(name, str) else ""
    if label:
        _refuse_newline(host, Path(label), label)
    try:
        size, exact = fileobj.seek(0, os.SEEK_END), True
        fileobj.seek(0)
    except (OSError, AttributeError, ValueError):
        size, exact = STREAM_MIN_BYTES, False  # unknown: the streamed path takes any size
    return LocalTree(files=[Upload(Path(label), "", size, None, fileobj, exact)])


def _refuse_newline(host: str, path: Path, name: str) -> None:
    if "\n" in name or "\r" in name:
        raise TransferError(
            f"{host}: refusing local name {show(str(path))}: it contains a newline; rename it before uploading", host
        )


def scan_local(source: Path, recursive: bool, host: str) -> LocalTree:
    """What an upload of ``source`` sends. Raises before anything leaves for a missing source, a directory
    without ``recursive`` or a name with a newline; unsendable entries (sockets, dangling links, loops,
    names that are not UTF-8) become per-file errors."""
    try:
        info = source.stat()
    except FileNotFoundError:
        raise TransferError(f"{host}: {show(str(source))}: no such local file or directory; check the path", host) from None
    except OSError as exc:  # a link loop, a file where a folder was named, a folder we may not search
        advice = "check its permissions" if exc.errno in (errno.EACCES, errno.EPERM) else "check the path"
        raise TransferError(f"{host}: cannot read {show(str(source))}: {exc.strerror}; {advice}", host) from exc
    _refuse_newline(host, source, source.name)
    tree = LocalTree()
    if stat.S_ISREG(info.st_mode):
        if not os.access(source, os.R_OK):
            raise TransferError(f"{host}: cannot read {show(str(source))}: permission denied; check its permissions", host)
        tree.files.append(Upload(source, "", info.st_size, stat.S_IMODE(info.st_mode)))
        return tree
    if not stat.S_ISDIR(info.st_mode):
        raise TransferError(f"{host}: {show(str(source))} is not a regular file or directory; name a file or folder", host)
    if not recursive:
        raise TransferError(f"{host}: {show(str(source))} is a directory; pass recursive=True to upload the whole tree", host)

    def walk(folder: Path, rel: str, chain: frozenset[tuple[int, int]]) -> None:
        try:
            with os.scandir(folder) as entries:
                names = sorted(entry.name for entry in entries)
        except OSError as exc:
            tree.errors.append(f"{host}: skipping folder {show(str(folder))}: {exc.strerror}; check its permissions")
            return
        for name in names:
            path = folder / name
            _refuse_newline(host, path, name)
            if not sftp_name(name):
                tree.errors.append(f"{host}: skipping {show(str(path))}: its name is not UTF-8, as SFTP needs; rename it")
                continue
            child = f"{rel}/{name}" if rel else name
            try:
                info = path.stat()  # follows symlinks: a linked file or folder is sent as what it points to
            except OSError:
                tree.errors.append(f"{host}: skipping {show(str(path))}: a dangling symlink or unreadable; fix or remove it")
                continue
            if stat.S_ISDIR(info.st_mode):
                key = (info.st_dev, info.st_ino)
                if key in chain:
                    tree.errors.append(f"{host}: skipping {show(str(path))}: a symlink loop; remove the link")
                    continue
                tree.dirs.append((child, stat.S_IMODE(info.st_mode)))
                walk(path, child, chain | {key})
            elif stat.S_ISREG(info.st_mode) and os.access(path, os.R_OK):
                tree.files.append(Upload(path, child, info.st_size, stat.S_IMODE(info.st_mode)))
            elif stat.S_ISREG(info.st_mode):
                tree.errors.append(f"{host}: skipping {show(str(path))}: permission denied; check its permissions")
            else:
                tree.errors.append(f"{host}: skipping {show(str(path))}: not a regular file (socket, FIFO or device)")

    walk(source, "", frozenset({(info.st_dev, info.st_ino)}))
    return tree


def check_local_folder(folder: Path, flag: str = "--dest") -> None:
    """Refuse, before any host is contacted, a local destination folder that cannot be used: a file in the way
    (at it or at a parent), or one this user may not create files in (the nearest existing parent, when the
    folder is still to be made)."""
    path = folder.expanduser()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "" if existing == path else f" (its parent {show(str(existing))} is a file)"
        raise ConfigError(f"{flag} {show(str(folder))}: exists and is not a folder{where}; choose a folder")
    try:  # a real file, not os.access: its error names the cause (permission, read-only file system, quota)
        fd, probe = local_temp(existing, "probe")
    except OSError as exc:
        raise ConfigError(f"{flag} {show(str(folder))}: cannot create files in {show(str(existing))}: {exc.strerror}") from None
    os.close(fd)
    probe.unlink()


def expand_remote(sftp: Any, pattern: str, *, files_only: bool = False) -> list[str]:
    """Remote paths matching a glob, expanded with sftp listings (never a remote shell), sorted. Relative
    patterns are relative to the SFTP client's directory; unsafe names are left out."""
    if not has_glob(pattern):
        try:
            attrs = sftp.stat(pattern)
        except OSError:
            return []
        return [pattern] if not files_only or stat.S_ISREG(attrs.st_mode or 0) else []
    base, parts = split_glob(pattern)
    found = []
    for path, attrs, _ in glob_remote(sftp, base, parts, []):
        if files_only:
            mode = attrs.st_mode or 0
            if stat.S_ISLNK(mode):
                try:
                    mode = sftp.stat(path).st_mode or 0
                except OSError:
                    continue
            if not stat.S_ISREG(mode):
                continue
        found.append(path)
    return sorted(found)


def glob_remote(sftp: Any, base: str, parts: list[str], refused: list[str], host: str = "") -> list[tuple[str, Any, bool]]:
    """(path, lstat attributes, whether a symlinked directory was crossed) for each match, one listing per
    directory level. Matching names that could not be local file names go to ``refused``."""
    level: list[tuple[str, Any, bool]] = [(base, None, False)]
    for part in parts:
        matched: list[tuple[str, Any, bool]] = []
        for path, attrs, linked in level:
            if attrs is not None and not (stat.S_ISDIR(attrs.st_mode or 0) or stat.S_ISLNK(attrs.st_mode or 0)):
                continue
            try:
                entries = sftp.listdir_attr(path)
            except OSError:
                continue  # not a directory, or not ours to list: matches nothing, as in a shell
            crossed = linked or (attrs is not None and stat.S_ISLNK(attrs.st_mode or 0))
            for entry in sorted(entries, key=lambda e: str(e.filename)):
                if not glob_matches(entry.filename, part):
                    continue
                why = unsafe_name(entry.filename)
                if why:
                    refused.append(
                        f"{host}: refusing remote name {show(entry.filename)} in {show(path)}: it {why}; "
                        "rename it on the host to fetch it"
                    )
                    continue
                matched.append((remote_join(path, entry.filename), entry, crossed))
        level = matched
    return level


@dataclass(frozen=True)
class Download:
    remote: str
    local: Path
    size: int
    mode: int


@dataclass
class DownloadPlan:
    folder: Path  # nothing is written outside it
    dirs: list[tuple[Path, int]] = field(default_factory=list)
    files: list[Download] = field(default_factory=list)


def plan_download(session: Session, remote: str, local: str, recursive: bool, report: TransferReport) -> DownloadPlan:
    host, sftp = session.host, session.sftp
    dest = Path(local).expanduser()
    matches: list[tuple[str, Any]] = []
    if has_glob(remote):
        base, parts = split_glob(remote)
        base = session.absolute(base)
        found = glob_remote(sftp, base, parts, report.errors, host)
        if not found and not report.errors and (literal := session.attrs(session.absolute(remote))) is not None:
            found = [(session.absolute(remote), literal, False)]  # a name that merely looks like a glob
        if not found and not report.errors:
            raise TransferError(
                f"{host}: no remote file matches {show(remote)}; check the pattern (relative to {session.home})", host
            )
        base_real = ""
        for path, attrs, crossed in found:
            if crossed or stat.S_ISLNK(attrs.st_mode or 0):
                base_real = base_real or str(sftp.normalize(base))
                followed = _follow_link(session, path, base_real, report)
                if followed is None:
                    continue
                attrs = followed[1]
            matches.append((path, attrs))
        into_dir = True
    else:
        path = session.absolute(remote)
        attrs = session.attrs(path)
        if attrs is None:
            raise TransferError(
                f"{host}: {show(remote)}: no such remote file or directory; check the path (relative to {session.home})",
                host,
            )
        if stat.S_ISDIR(attrs.st_mode or 0) and not recursive:
            raise TransferError(f"{host}: {show(remote)} is a directory; pass recursive=True to fetch the whole tree", host)
        matches.append((path, attrs))
        into_dir = local.endswith("/") or local.endswith(os.sep) or dest.is_dir()

    if into_dir and dest.exists() and not dest.is_dir():
        raise TransferError(f"{host}: local {show(str(dest))} exists and is not a folder; choose a folder to fetch into", host)
    plan = DownloadPlan(folder=dest if into_dir else dest.parent)
    report.source = session.absolute(remote)
    report.destination = str(plan.folder.absolute())
    for path, attrs in matches:
        name = PurePosixPath(path).name
        if name in ("", ".", ".."):
            name = PurePosixPath(str(sftp.normalize(path))).name
        why = unsafe_name(name)
        if why:
            report.errors.append(
                f"{host}: refusing remote name {show(name)} ({show(path)}): it {why}; rename it on the host to fetch it"
            )
            continue
        target = dest / name if into_dir else dest
        if not has_glob(remote):
            report.destination = str(target.absolute())
        mode = attrs.st_mode or 0
        if stat.S_ISDIR(mode):
            if not recursive:
                report.errors.append(f"{host}: skipping directory {show(path)}: pass recursive=True to fetch it")
                continue
            real = str(sftp.normalize(path))
            plan.dirs.append((target, stat.S_IMODE(mode)))
            _walk_remote(session, path, real, real, (real,), target, plan, report)
        elif stat.S_ISREG(mode):
            plan.files.append(Download(path, target, attrs.st_size or 0, stat.S_IMODE(mode)))
        else:
            report.errors.append(f"{host}: skipping {show(path)}: not a regular file or directory")
    return plan


def _resolve(session: Session, path: str, report: TransferReport) -> str | None:
    try:
        return str(session.sftp.normalize(path))
    except OSError as exc:
        session.check(exc)
        report.errors.append(_dangling(session.host, path))
        return None


def _dangling(host: str, path: str) -> str:
    return f"{host}: skipping {show(path)}: a dangling symlink; fix or remove it on the host"


def _follow_link(session: Session, path: str, root_real: str, report: TransferReport) -> tuple[str, Any] | None:
    """Where a symlink (or a path through one) really leads and what is there, when that stays inside
    ``root_real``; None when it leads out (refused, reported) or is gone."""
    real = _resolve(session, path, report)
    if real is None:
        return None
    if not remote_inside(root_real, real):
        report.errors.append(_outside(session.host, path, real, root_real))
        return None
    attrs = session.attrs(path)
    if attrs is None:  # OpenSSH resolves a link to a missing file without complaint: only stat finds it dangling
        report.errors.append(_dangling(session.host, path))
        return None
    return real, attrs


def _outside(host: str, path: str, real: str, root: str) -> str:
    return (
        f"{host}: refusing {show(path)}: a symlink to {show(real)}, outside the fetched tree {show(root)}; "
        "fetch that path directly if you need it"
    )


def _walk_remote(
    session: Session,
    top: str,
    top_real: str,
    root_real: str,
    chain: tuple[str, ...],
    local_top: Path,
    plan: DownloadPlan,
    report: TransferReport,
) -> None:
    """Add a remote tree's folders and files to ``plan``, refusing names and links that lead out."""
    host = session.host
    try:
        entries = session.sftp.listdir_attr(top)
    except OSError as exc:
        session.check(exc)
        report.errors.append(f"{host}: cannot list {show(top)} ({exc.strerror or exc}); check its permissions on the host")
        return
    except UnicodeDecodeError:  # paramiko decodes names strictly
        report.errors.append(f"{host}: cannot list {show(top)}: it holds names that are not UTF-8; rename them on the host")
        return
    for entry in sorted(entries, key=lambda e: str(e.filename)):
        name = str(entry.filename)
        why = unsafe_name(name)
        if why:
            report.errors.append(
                f"{host}: refusing remote name {show(name)} in {show(top)}: it {why}; rename it on the host to fetch it"
            )
            continue
        path, local, real = remote_join(top, name), local_top / name, remote_join(top_real, name)
        attrs: Any = entry
        if stat.S_ISLNK(entry.st_mode or 0):
            followed = _follow_link(session, path, root_real, report)
            if followed is None:
                continue
            real, attrs = followed
        mode = attrs.st_mode or 0
        if stat.S_ISDIR(mode):
            if real in chain:
                report.errors.append(f"{host}: skipping {show(path)}: a symlink loop back to {show(real)}; remove the link")
                continue
            plan.dirs.append((local, stat.S_IMODE(mode)))
            _walk_remote(session, path, real, root_real, (*chain, real), local, plan, report)
        elif stat.S_ISREG(mode):
            plan.files.append(Download(path, local, attrs.st_size or 0, stat.S_IMODE(mode)))
        else:
            report.errors.append(f"{host}: skipping {show(path)}: not a regular file (socket, FIFO or device)")


def local_temp(folder: Path, name: str) -> tuple[int, Path]:
    """A new, empty temporary file beside the destination, readable by its owner only while partial."""
    while True:
        temp = folder / temp_name(name)
        with suppress(FileExistsError):  # O_EXCL: never an existing file, nor a symlink planted there
            return os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600), temp

