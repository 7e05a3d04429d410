"""put/get like scp, recursive, atomic and verified.

Every file travels to a temporary name beside its destination (``.NAME.ssmfab-XXXXXXXX.part``), is
checked against a SHA-256 computed on the other side, gets its mode, and only then is renamed over the
final name (``posix-rename`` remotely, ``os.replace`` locally). An interrupted transfer therefore leaves
nothing half-written under a final name. Remote names that could escape the destination (``..``, ``/``,
newlines, symlinks leading outside the fetched tree) are refused one by one, and reported.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import secrets
import shlex
import stat
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from .exceptions import SSMFabError, TransferError

CHUNK = 256 * 1024
GLOB_CHARS = frozenset("*?[")
#: Remote checksum commands are batched to stay far below the remote's argument-length limit.
MAX_ARGS_CHARS = 64 * 1024


@dataclass
class TransferReport:
    files: int = 0
    bytes: int = 0
    paths: list[str] = field(default_factory=list)
    #: Per-file refusals (unsafe names, symlinks leading out); the transfer raises if there are any.
    refused: list[str] = field(default_factory=list)
    duration: float = 0.0


#: Seconds without progress after which a transfer fails, when the connection does not say otherwise.
DEFAULT_STALL_TIMEOUT = 60.0


def open_sftp(conn: Any) -> Any:
    return conn.sftp()


class StallWatch:
    """Cuts the connection's tunnel when a transfer makes no progress for ``stall_timeout`` seconds.

    paramiko blocks for ever writing to a peer that stopped reading (a frozen tunnel), holding locks a
    channel timeout cannot break; closing the tunnel's socket and processes is what unblocks it. The
    watching thread ends with the ``with`` block."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.limit = float(getattr(conn, "stall_timeout", DEFAULT_STALL_TIMEOUT))
        self.last = time.monotonic()
        self.stalled = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="ssmfab-stall-watch", daemon=True)

    def progress(self) -> None:
        self.last = time.monotonic()

    def _watch(self) -> None:
        while not self._done.wait(min(0.5, self.limit / 4)):
            if time.monotonic() - self.last > self.limit:
                self.stalled = True
                tunnel = getattr(self.conn, "tunnel", None)
                if tunnel is not None:
                    tunnel.close()
                else:
                    self.conn.client.get_transport().sock.close()
                return

    def __enter__(self) -> StallWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()


def label_of(conn: Any) -> str:
    return str(getattr(conn, "label", None) or conn.host)


def temp_name(name: str) -> str:
    return f".{name}.ssmfab-{secrets.token_hex(4)}.part"


def unsafe_name(name: str) -> str | None:
    """Why a remote directory entry cannot become a local file name, or None if it is fine."""
    if name in ("", ".", ".."):
        return "is a relative path component"
    if "/" in name or "\\" in name:
        return "contains a path separator"
    if "\n" in name or "\r" in name or "\0" in name:
        return "contains a newline or NUL"
    return None


def has_glob(pattern: str) -> bool:
    return any(ch in GLOB_CHARS for ch in pattern)


def split_glob(pattern: str) -> tuple[str, list[str]]:
    """``/var/log/*/app*.log`` -> (``/var/log``, [``*``, ``app*.log``]): the literal prefix and the rest."""
    pure = PurePosixPath(pattern)
    parts = list(pure.parts)
    literal: list[str] = []
    while parts and not has_glob(parts[0]):
        literal.append(parts.pop(0))
    base = str(PurePosixPath(*literal)) if literal else "."
    return base, parts


def _join(base: str, name: str) -> str:
    return name if base in (".", "") else f"{base.rstrip('/')}/{name}" if base != "/" else f"/{name}"


def expand_remote(sftp: Any, pattern: str, *, files_only: bool = False) -> list[str]:
    """Remote paths matching a glob, expanded with sftp listings (never a remote shell), sorted."""
    if not has_glob(pattern):
        try:
            attrs = sftp.stat(pattern)
        except OSError:
            return []
        return [pattern] if not files_only or stat.S_ISREG(attrs.st_mode or 0) else []
    base, parts = split_glob(pattern)
    paths = [base]
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        matched: list[str] = []
        for path in paths:
            try:
                entries = sftp.listdir_attr(path)
            except OSError:
                continue
            for entry in entries:
                if not fnmatch.fnmatchcase(entry.filename, part) or unsafe_name(entry.filename):
                    continue
                if entry.filename.startswith(".") and not part.startswith("."):
                    continue  # like a shell glob, * does not match dot files
                full = _join(path, entry.filename)
                if not last:
                    matched.append(full)
                    continue
                if files_only:
                    try:
                        if not stat.S_ISREG(sftp.stat(full).st_mode or 0):
                            continue
                    except OSError:
                        continue
                matched.append(full)
        paths = matched
    return sorted(paths)


def _remote_sums(conn: Any, paths: list[str]) -> list[str]:
    """SHA-256 of each remote path, in order, with as few commands as the argument limit allows."""
    sums: list[str] = []
    batch: list[str] = []
    size = 0

    def flush() -> None:
        if not batch:
            return
        args = " ".join(shlex.quote(p) for p in batch)
        command = (
            f"if command -v sha256sum >/dev/null 2>&1; then sha256sum -- {args}; "
            f"else shasum -a 256 -- {args}; fi"
        )
        result = conn.run(command, hide=True, warn=True)
        lines = [line for line in result.stdout.splitlines() if line.strip()]
        if result.failed or len(lines) != len(batch):
            raise TransferError(
                f"{label_of(conn)}: could not checksum remote files ({result.stderr.strip()[-200:] or 'no sha256sum/shasum'})"
            )
        # sha256sum escapes odd names with a leading backslash; the digest follows it.
        sums.extend(line.lstrip("\\")[:64] for line in lines)
        batch.clear()

    for path in paths:
        if size + len(path) > MAX_ARGS_CHARS:
            flush()
            size = 0
        batch.append(path)
        size += len(path) + 3
    flush()
    return sums


def _remote_is_dir(sftp: Any, path: str) -> bool:
    try:
        return stat.S_ISDIR(sftp.stat(path).st_mode or 0)
    except OSError:
        return False


def _mkdir_p(sftp: Any, path: str) -> None:
    if path in ("", ".", "/") or _remote_is_dir(sftp, path):
        return
    _mkdir_p(sftp, str(PurePosixPath(path).parent))
    try:
        sftp.mkdir(path)
    except OSError:
        if not _remote_is_dir(sftp, path):
            raise


def _upload_plan(local: Path, remote: str, sftp: Any, recursive: bool) -> tuple[list[str], list[tuple[Path, str]]]:
    """Remote directories to create and (local file, remote final path) pairs."""
    into_dir = remote.endswith("/") or _remote_is_dir(sftp, remote)
    remote = remote.rstrip("/") or "/"
    if local.is_dir():
        if not recursive:
            raise TransferError(f"{local} is a directory: use recursive=True (the put task does this for you)")
        top = _join(remote, local.name) if into_dir else remote
        dirs, files = [top], []
        for folder, subdirs, names in os.walk(local):
            rel = Path(folder).relative_to(local)
            remote_folder = top if rel == Path(".") else _join(top, rel.as_posix())
            dirs += [_join(remote_folder, d) for d in sorted(subdirs)]
            files += [(Path(folder) / n, _join(remote_folder, n)) for n in sorted(names)]
        return dirs, files
    if not local.is_file():
        raise TransferError(f"{local}: no such local file or directory")
    return [], [(local, _join(remote, local.name) if into_dir else remote)]


def put(conn: Any, local: str, remote: str, *, recursive: bool = False, preserve_mode: bool = True) -> TransferReport:
    """Upload a file (or, recursive, a directory tree) so every remote file appears complete or not at all."""
    started = time.monotonic()
    source = Path(local).expanduser()
    for part in source.parts:
        if "\n" in part:
            raise TransferError(f"refusing local name {str(source)!r}: it contains a newline")
    sftp = open_sftp(conn)
    dirs, files = _upload_plan(source, remote, sftp, recursive)
    for path, _ in files:
        if "\n" in path.name:
            raise TransferError(f"refusing local name {str(path)!r}: it contains a newline")
    report = TransferReport()
    temps: list[tuple[str, str]] = []
    digests: list[str] = []
    try:
        for directory in dirs:
            _mkdir_p(sftp, directory)
        with StallWatch(conn) as watch:
            try:
                for path, final in files:
                    parent = str(PurePosixPath(final).parent)
                    temp = _join(parent, temp_name(PurePosixPath(final).name))
                    temps.append((temp, final))
                    digests.append(_send(sftp, path, temp, preserve_mode, watch))
                    report.bytes += path.stat().st_size
            except BaseException as exc:
                raise _stalled(conn, watch, exc, f"upload to {remote}") from exc
        if files and _remote_sums(conn, [t for t, _ in temps]) != digests:
            raise TransferError(f"{label_of(conn)}: checksum mismatch after upload to {remote}; nothing was replaced")
        for temp, final in temps:
            if _remote_is_dir(sftp, final):
                raise TransferError(f"{label_of(conn)}: {final} is a directory; cannot replace it with a file")
            sftp.posix_rename(temp, final)
        temps.clear()
    except BaseException as exc:
        _remove_remote(sftp, [t for t, _ in temps])
        raise _as_transfer_error(conn, exc, f"upload to {remote}") from exc
    report.files = len(files)
    report.paths = [final for _, final in files]
    report.duration = time.monotonic() - started
    return report


def _send(sftp: Any, path: Path, remote_temp: str, preserve_mode: bool, watch: StallWatch) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source, sftp.open(remote_temp, "wb") as target:
        target.set_pipelined(True)
        while chunk := source.read(CHUNK):
            digest.update(chunk)
            target.write(chunk)
            watch.progress()
    if preserve_mode:
        sftp.chmod(remote_temp, stat.S_IMODE(path.stat().st_mode))
    return digest.hexdigest()


def _remove_remote(sftp: Any, paths: list[str]) -> None:
    for path in paths:
        try:
            sftp.remove(path)
        except Exception:  # noqa: BLE001 - best effort: the connection may be what failed
            pass


def _stalled(conn: Any, watch: StallWatch, exc: BaseException, doing: str) -> BaseException:
    if not watch.stalled:
        return exc
    return TransferError(
        f"{label_of(conn)}: {doing} stalled: no progress for {watch.limit:g}s (ssh.stall_timeout); "
        "nothing left half-written"
    )


def _as_transfer_error(conn: Any, exc: BaseException, doing: str) -> BaseException:
    if isinstance(exc, (SSMFabError, KeyboardInterrupt, SystemExit)):
        return exc
    explain = getattr(conn, "explain", None)
    explained = explain(exc) if explain is not None else None
    reason = str(explained) if explained is not None else f"{type(exc).__name__}: {exc}"
    return TransferError(f"{label_of(conn)}: {doing} failed, nothing left half-written ({reason})")


@dataclass
class _Download:
    remote: str
    local: Path
    size: int
    mode: int


def _walk_remote(sftp: Any, top: str, local_top: Path, report: TransferReport, host: str) -> Iterator[_Download | Path]:
    """Files to download and local directories to create, refusing names and links that lead out."""
    root_real = sftp.normalize(top)
    yield local_top
    for entry in sorted(sftp.listdir_attr(top), key=lambda e: e.filename):
        why = unsafe_name(entry.filename)
        if why:
            report.refused.append(f"{host}: refusing remote name {entry.filename!r} in {top}: it {why}")
            continue
        path, local = _join(top, entry.filename), local_top / entry.filename
        mode = entry.st_mode or 0
        if stat.S_ISLNK(mode):
            try:
                real = sftp.normalize(path)
                mode = sftp.stat(path).st_mode or 0
            except OSError:
                report.refused.append(f"{host}: refusing {path}: dangling symlink")
                continue
            if real != root_real and not real.startswith(root_real.rstrip("/") + "/"):
                report.refused.append(f"{host}: refusing {path}: symlink to {real}, outside the fetched tree")
                continue
            if stat.S_ISDIR(mode):
                report.refused.append(f"{host}: skipping {path}: symlink to a directory inside the tree")
                continue
        if stat.S_ISDIR(mode):
            yield from _walk_remote(sftp, path, local, report, host)
        elif stat.S_ISREG(mode):
            size = sftp.stat(path).st_size or 0
            yield _Download(path, local, size, stat.S_IMODE(mode))


def get(conn: Any, remote: str, local: str, *, recursive: bool = False, preserve_mode: bool = True) -> TransferReport:
    """Download a file, a directory tree (recursive) or a glob; each file appears complete or not at all."""
    started = time.monotonic()
    host = label_of(conn)
    sftp = open_sftp(conn)
    dest = Path(local).expanduser()
    matches = expand_remote(sftp, remote) if has_glob(remote) else [remote]
    if not matches:
        raise TransferError(f"{host}: no remote file matches {remote}")
    into_dir = local.endswith(os.sep) or dest.is_dir() or len(matches) > 1
    report = TransferReport()
    downloads: list[_Download] = []
    folders: list[Path] = []
    try:
        for path in matches:
            try:
                attrs = sftp.stat(path)
            except OSError as exc:
                raise TransferError(f"{host}: {path}: no such remote file or directory") from exc
            name = PurePosixPath(path).name or PurePosixPath(sftp.normalize(path)).name
            target = dest / name if into_dir else dest
            if stat.S_ISDIR(attrs.st_mode or 0):
                if not recursive:
                    raise TransferError(f"{host}: {path} is a directory: use recursive=True")
                for item in _walk_remote(sftp, path, target, report, host):
                    (folders.append(item) if isinstance(item, Path) else downloads.append(item))
            else:
                downloads.append(_Download(path, target, attrs.st_size or 0, stat.S_IMODE(attrs.st_mode or 0)))
        root = dest.resolve()
        for item in [*folders, *(d.local for d in downloads)]:
            resolved = item.resolve()
            if resolved != root and not resolved.is_relative_to(root) and into_dir:
                raise TransferError(f"{host}: refusing to write {item}: outside {dest}")
        with StallWatch(conn) as watch:
            try:
                _fetch_all(conn, sftp, downloads, folders, preserve_mode, report, watch)
            except BaseException as exc:
                raise _stalled(conn, watch, exc, f"download of {remote}") from exc
    except BaseException as exc:
        raise _as_transfer_error(conn, exc, f"download of {remote}") from exc
    report.duration = time.monotonic() - started
    if report.refused:
        raise TransferError(f"{report.refused[0]}" + (f" (and {len(report.refused) - 1} more)" if len(report.refused) > 1 else ""))
    return report


def _fetch_all(
    conn: Any, sftp: Any, downloads: list[_Download], folders: list[Path], preserve_mode: bool, report: TransferReport, watch: StallWatch
) -> None:
    temps: list[Path] = []
    try:
        for folder in folders:
            folder.mkdir(parents=True, exist_ok=True)
        digests = []
        for item in downloads:
            item.local.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=f".{item.local.name}.ssmfab-", suffix=".part", dir=item.local.parent)
            temps.append(Path(name))
            digests.append(_receive(sftp, item, fd, watch))
            if preserve_mode:
                os.chmod(name, item.mode)
        if downloads and _remote_sums(conn, [d.remote for d in downloads]) != digests:
            raise TransferError(f"{label_of(conn)}: checksum mismatch after download; nothing was written")
        for temp, item in zip(temps, downloads):
            if item.local.is_dir():
                raise TransferError(f"{label_of(conn)}: {item.local} is a local directory; cannot replace it with a file")
            os.replace(temp, item.local)
            report.files += 1
            report.bytes += item.size
            report.paths.append(str(item.local))
        temps.clear()
    finally:
        for temp in temps:
            temp.unlink(missing_ok=True)


def _receive(sftp: Any, item: _Download, fd: int, watch: StallWatch) -> str:
    digest = hashlib.sha256()
    with os.fdopen(fd, "wb") as target, sftp.open(item.remote, "rb") as source:
        source.prefetch(item.size)
        while chunk := source.read(CHUNK):
            digest.update(chunk)
            target.write(chunk)
            watch.progress()
    return digest.hexdigest()
