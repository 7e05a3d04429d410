"""put/get like scp: a file, a whole tree or a glob; atomic, verified, modes kept.

Every file travels to a temporary name beside its destination (``.NAME.ssmfab-XXXXXXXX.part``), is hashed
while it streams, is checked against a SHA-256 the host computes (one ``xargs -0 sha256sum`` for the whole
transfer, paths on stdin, never in a shell string; big files get theirs from the command that streams
them), gets its mode, and only then is renamed over its final name (``posix-rename`` remotely,
``os.replace`` locally). An interrupted transfer therefore never leaves a half-written file under a final
name, and removes the temporary files it made whenever the connection still allows it.

Downloads treat the host as untrusted: a remote name that could not be a plain local file name (``/``, a
newline, ``.``, ``..``) and a symlink leading outside the fetched tree are refused file by file, the rest
still arrives, then one TransferError sums up what was refused. Nothing is written outside the local
destination folder (checked on resolved paths).

Remote relative paths (and ``~``) start at the login directory, where sftp starts.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import queue
import re
import secrets
import shlex
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import paramiko

from .exceptions import ConfigError, SSMFabError, TransferError
from .interrupt import Interrupted
from .fastssh import WINDOW_SIZE, send_stream
from .hoststreams import DIGEST_LINE, STREAM_GET, STREAM_PUT

#: Local read/write size; paramiko cuts it into 32 KiB SFTP requests, pipelined both ways.
CHUNK = 256 * 1024
#: Read requests a download keeps in flight (x 32 KiB): enough to fill a slow, long pipe, bounded in memory.
PREFETCH_REQUESTS = 256
GLOB_CHARS = frozenset("*?[")
#: Seconds without progress after which a transfer fails, when the connection does not say otherwise.
DEFAULT_STALL_TIMEOUT = 60.0
#: Slowest hashing speed assumed for the host: the checksum may take this long per byte before it counts as stuck.
HASH_BYTES_PER_SECOND = 20_000_000
#: Bytes of a file name kept in its temporary name: the rest of ``.NAME.ssmfab-XXXXXXXX.part`` must fit NAME_MAX (255).
TEMP_STEM_BYTES = 200
#: A temporary file of ours untouched for this long belongs to no live transfer (one that stops making progress
#: fails after ssh.stall_timeout): an upload of the same name removes it (left by a killed or cut-off run).
STALE_TEMP_SECONDS = 600

#: Largest data packet a stream channel accepts (paramiko offers 32 KiB; OpenSSH takes up to 256 KiB): paramiko's
#: work is per packet, so a download through the sandbox tunnel went from ~100-360 MB/s to ~730.
STREAM_PACKET = 128 * 1024
#: Files at least this big travel over an exec channel as one plain byte stream (paramiko's SFTP costs a
#: request per 32 KiB in Python) and are hashed by the host in the same command (STREAM_PUT, STREAM_GET)
#: instead of by a separate checksum command after.
STREAM_MIN_BYTES = 4 * 1024 * 1024

_SUM_SCRIPT = (
    "if command -v sha256sum >/dev/null 2>&1; then exec xargs -0 sha256sum --; fi; "
    "if command -v shasum >/dev/null 2>&1; then exec xargs -0 shasum -a 256 --; fi; "
    "echo 'neither sha256sum nor shasum is installed' >&2; exit 127"
)
#: The one remote command of a transfer: SHA-256 of each NUL-terminated path read from stdin. ``sh -c`` so a
#: login shell of another family (fish, csh) runs it the same.
SUM_COMMAND = f"sh -c {shlex.quote(_SUM_SCRIPT)}"


@dataclass(frozen=True)
class FileTransfer:
    """One file that arrived: from where, to where, its size, SHA-256 (equal on both ends) and final mode."""

    source: str
    destination: str
    size: int
    sha256: str
    mode: int


@dataclass
class TransferReport:
    """What a put or get did on one host. When ``errors`` is not empty the call raised a TransferError
    (carrying this report as ``.report``) after delivering everything else."""

    host: str = ""
    items: list[FileTransfer] = field(default_factory=list)
    #: Directories of the tree created or filled (empty ones included), on the receiving side.
    directories: list[str] = field(default_factory=list)
    #: One line per refused or failed file, naming host, path and what to do.
    errors: list[str] = field(default_factory=list)
    duration: float = 0.0

    @property
    def files(self) -> int:
        return len(self.items)

    @property
    def bytes(self) -> int:  # noqa: A003 - the name every report of the package uses
        return sum(item.size for item in self.items)

    @property
    def paths(self) -> list[str]:
        return [item.destination for item in self.items]


# --- pure helpers (no I/O) ---------------------------------------------------------------------------------


def label_of(conn: Any) -> str:
    return str(getattr(conn, "label", None) or conn.host)


def show(path: str) -> str:
    """A path fit for a one-line message: quoted with escapes when it holds control characters."""
    return repr(path) if any(ord(ch) < 32 or ord(ch) == 127 for ch in path) else path


def one_line(text: str) -> str:
    return " ".join(text.split())


def _temp_stem(name: str) -> str:
    stem = name
    while len(stem.encode("utf-8", "surrogateescape")) > TEMP_STEM_BYTES:
        stem = stem[:-1]
    return stem


def temp_name(name: str) -> str:
    """``.NAME.ssmfab-XXXXXXXX.part``: hidden, recognisable, unique, and never longer than NAME_MAX."""
    return f".{_temp_stem(name)}.ssmfab-{secrets.token_hex(4)}.part"


def is_temp_of(entry: str, name: str) -> bool:
    """Whether ``entry`` is a temporary name ``temp_name(name)`` could have given."""
    return re.fullmatch(re.escape(f".{_temp_stem(name)}.ssmfab-") + r"[0-9a-f]{8}\.part", entry) is not None


def unsafe_name(name: str) -> str | None:
    """Why a remote directory entry cannot become a local file name, or None if it is fine."""
    if name in ("", ".", ".."):
        return f"is {name or 'empty'}, not a file name"
    if "/" in name or (os.altsep is not None and os.altsep in name):
        return "contains a slash"
    if "\n" in name or "\r" in name:
        return "contains a newline"
    if "\0" in name:
        return "contains a NUL byte"
    return None


def has_glob(pattern: str) -> bool:
    return any(ch in GLOB_CHARS for ch in pattern)


def split_glob(pattern: str) -> tuple[str, list[str]]:
    """``/var/log/*/app*.log`` -> (``/var/log``, [``*``, ``app*.log``]): the literal prefix and the rest."""
    parts = list(PurePosixPath(pattern).parts)
    literal: list[str] = []
    while parts and not has_glob(parts[0]):
        literal.append(parts.pop(0))
    base = str(PurePosixPath(*literal)) if literal else "."
    return base, parts


def glob_matches(name: str, part: str) -> bool:
    """fnmatch, except that (as in a shell) a leading dot must be matched explicitly."""
    if name.startswith(".") and not part.startswith("."):
        return False
    return fnmatch.fnmatchcase(name, part)


def remote_join(base: str, name: str) -> str:
    if base in ("", "."):
        return name
    if name in ("", "."):
        return base
    return f"{base.rstrip('/')}/{name}"


def remote_absolute(home: str, path: str) -> str:
    """``path`` on the host as an absolute path: relative paths and ``~`` start at the login directory."""
    if path in ("", ".", "~", "~/"):
        path = home
    elif path.startswith("~/"):
        path = remote_join(home, path[2:])
    elif not path.startswith("/"):
        path = remote_join(home, path)
    return str(PurePosixPath(path))


def remote_inside(root: str, path: str) -> bool:
    """Whether the absolute, resolved remote ``path`` is ``root`` or below it."""
    top = root.rstrip("/")
    return path == root or path == top or path.startswith(top + "/")


def local_inside(root: Path, path: Path) -> bool:
    """Whether ``path`` (following any symlink already on disk) stays within ``root``."""
    base, resolved = root.resolve(), path.resolve()
    return resolved == base or resolved.is_relative_to(base)


_ESCAPES = {"n": "\n", "r": "\r", "\\": "\\"}


def parse_sums(output: bytes) -> dict[str, str]:
    """{path: hex digest} from ``sha256sum``/``shasum -a 256`` output, undoing their escaping of odd names
    (a line starting with a backslash has ``\\n`` and ``\\\\`` in its name)."""
    sums: dict[str, str] = {}
    for raw in output.split(b"\n"):
        escaped = raw.startswith(b"\\")
        line = raw[1:] if escaped else raw
        digest, separator, name = line[:64], line[64:66], line[66:]
        if separator not in (b"  ", b" *") or not re.fullmatch(rb"[0-9a-fA-F]{64}", digest):
            continue
        path = name.decode("utf-8", "surrogateescape")
        if escaped:
            path = re.sub(r"\\(.)", lambda m: _ESCAPES.get(m[1], m[0]), path)
        sums[path] = digest.decode().lower()
    return sums


def _umask() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # no way to read it without setting it elsewhere
    os.umask(mask)
    return mask


# --- local side of an upload ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Upload:
    local: Path
    rel: str  # POSIX path below the transfer's top; "" for a single file
    size: int
    mode: int


@dataclass
class _LocalTree:
    dirs: list[tuple[str, int]] = field(default_factory=list)  # (rel, mode), parents first
    files: list[_Upload] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _refuse_newline(host: str, path: Path, name: str) -> None:
    if "\n" in name or "\r" in name:
        raise TransferError(
            f"{host}: refusing local name {show(str(path))}: it contains a newline; rename it before uploading", host
        )


def scan_local(source: Path, recursive: bool, host: str) -> _LocalTree:
    """What an upload of ``source`` sends. Raises before anything leaves for a missing source, a directory
    without ``recursive`` or a name with a newline; unsendable entries (sockets, dangling links, loops)
    become per-file errors."""
    try:
        info = source.stat()
    except FileNotFoundError:
        raise TransferError(f"{host}: {show(str(source))}: no such local file or directory; check the path", host) from None
    except OSError as exc:
        raise TransferError(f"{host}: cannot read {show(str(source))}: {exc.strerror}; check its permissions", host) from exc
    _refuse_newline(host, source, source.name)
    tree = _LocalTree()
    if stat.S_ISREG(info.st_mode):
        if not os.access(source, os.R_OK):
            raise TransferError(f"{host}: cannot read {show(str(source))}: permission denied; check its permissions", host)
        tree.files.append(_Upload(source, "", info.st_size, stat.S_IMODE(info.st_mode)))
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
                tree.files.append(_Upload(path, child, info.st_size, stat.S_IMODE(info.st_mode)))
            elif stat.S_ISREG(info.st_mode):
                tree.errors.append(f"{host}: skipping {show(str(path))}: permission denied; check its permissions")
            else:
                tree.errors.append(f"{host}: skipping {show(str(path))}: not a regular file (socket, FIFO or device)")

    walk(source, "", frozenset({(info.st_dev, info.st_ino)}))
    return tree


# --- the remote side ------------------------------------------------------------------------------------


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
        fd, probe = _local_temp(existing, "probe")
    except OSError as exc:
        raise ConfigError(f"{flag} {show(str(folder))}: cannot create files in {show(str(existing))}: {exc.strerror}") from None
    os.close(fd)
    probe.unlink()


def open_sftp(conn: Any) -> Any:
    """The connection's shared SFTP client (for callers that list or stat remote files themselves)."""
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
        self.held = False
        #: The file moving now, for failure messages of multi-file transfers ("" for a single file).
        self.current = ""
        #: Set when the run is interrupted (see interrupt): the transfer stops at its next chunk and cleans up.
        self.cancel: threading.Event | None = getattr(conn, "cancel", None)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="ssmfab-stall-watch", daemon=True)

    def progress(self) -> None:
        """Called for every chunk moved; raises Interrupted once the run is interrupted."""
        if self.cancel is not None and self.cancel.is_set():
            raise Interrupted()
        self.last = time.monotonic()

    @contextmanager
    def hold(self) -> Iterator[None]:
        """No stall checks inside (a step with its own timeout, such as hashing a huge file remotely)."""
        self.held = True
        try:
            yield
        finally:
            self.held = False
            self.progress()

    def _watch(self) -> None:
        while not self._done.wait(min(0.5, self.limit / 4)):
            if not self.held and time.monotonic() - self.last > self.limit:
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


class _Session:
    """One transfer's own SFTP channel (a fresh one: it starts in the login directory whatever the
    connection's shared client did, and a large window keeps a slow tunnel full)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.host = label_of(conn)
        self.stall = float(getattr(conn, "stall_timeout", DEFAULT_STALL_TIMEOUT))
        if not conn.is_connected:
            conn.open()
        # An ssmfab connection opens the first channel itself: one taken warm is replaced there if it died
        # while it waited (before anything is sent); paramiko's from_transport would wait up to an hour on it.
        open_channel = getattr(conn, "open_channel", None)
        if open_channel is not None:
            channel = open_channel(window_size=WINDOW_SIZE)
        else:
            channel = conn.client.get_transport().open_session(window_size=WINDOW_SIZE)
        self.transport: Any = conn.client.get_transport()
        channel.invoke_subsystem("sftp")
        self.sftp: Any = paramiko.SFTPClient(channel)
        self.home = str(self.sftp.normalize("."))
        #: Remote path -> SHA-256 the host computed while the file streamed ("" when it did not match).
        self.streamed: dict[str, str] = {}

    def close(self) -> None:
        with suppress(Exception):
            self.sftp.close()

    def alive(self) -> bool:
        return bool(self.transport is not None and self.transport.is_active())

    def absolute(self, path: str) -> str:
        return remote_absolute(self.home, path)

    def check(self, exc: OSError) -> None:
        """Re-raise ``exc`` if it is the connection failing rather than the host refusing one path."""
        if not self.alive() or isinstance(exc, (socket.timeout, TimeoutError)):
            raise exc

    def attrs(self, path: str) -> Any | None:
        """stat of a remote path (following links), or None when it does not exist or cannot be seen."""
        try:
            return self.sftp.stat(path)
        except OSError as exc:
            self.check(exc)
            return None

    def is_dir(self, path: str) -> bool:
        attrs = self.attrs(path)
        return attrs is not None and stat.S_ISDIR(attrs.st_mode or 0)

    def sha256(self, paths: list[str], total_bytes: int) -> tuple[dict[str, str], str]:
        """({path: digest}, stderr tail) for remote paths, in one command reading NUL-separated paths on
        stdin. A path missing from the answer could not be hashed (the tail says why)."""
        if not paths:
            return {}, ""
        limit = self.stall + total_bytes / HASH_BYTES_PER_SECOND
        payload = b"".join(path.encode("utf-8", "surrogateescape") + b"\0" for path in paths)
        channel = self.transport.open_session(timeout=self.stall)
        errors = bytearray()

        def feed_and_drain_stderr() -> None:
            # A thread, so a big answer filling our window cannot block the remote end from reading stdin.
            with suppress(Exception):
                channel.sendall(payload)
                channel.shutdown_write()
                while len(errors) < 64 * 1024 and (data := channel.recv_stderr(65536)):
                    errors.extend(data)

        try:
            channel.settimeout(limit)
            channel.exec_command(SUM_COMMAND)
            feeder = threading.Thread(target=feed_and_drain_stderr, name="ssmfab-sha256-stdin", daemon=True)
            feeder.start()
            output = bytearray()
            while data := channel.recv(65536):
                output.extend(data)
            feeder.join(limit)
            if not channel.status_event.wait(limit):
                raise TimeoutError
            status = channel.recv_exit_status()
        except (socket.timeout, TimeoutError):
            raise TransferError(
                f"{self.host}: the remote SHA-256 check of {len(paths)} files gave no answer within {limit:.0f}s; "
                "check the host's load and the tunnel, then retry",
                self.host,
            ) from None
        finally:
            channel.close()
        if not self.alive():
            raise EOFError("the connection closed during the remote SHA-256 check")
        tail = one_line(errors.decode(errors="replace"))[-300:]
        if status == 127 and "neither sha256sum nor shasum" in tail:
            raise TransferError(
                f"{self.host}: cannot verify the transfer: neither sha256sum nor shasum is installed on the host; "
                "install coreutils (or perl's shasum)",
                self.host,
            )
        return parse_sums(bytes(output)), tail

    def remove(self, paths: list[str]) -> list[str]:
        """Delete remote temporary files; returns those that may remain (the connection is gone)."""
        left = []
        for path in paths:
            if not self.alive():
                left.append(path)
                continue
            try:
                self.sftp.remove(path)
            except Exception as exc:  # noqa: BLE001 - cleanup after a failure must not hide that failure
                if not (isinstance(exc, FileNotFoundError) and self.alive()):
                    left.append(path)
        return left

    def rmdirs(self, paths: list[str]) -> None:
        """Remove directories this transfer created, deepest first, if they are still empty."""
        for path in reversed(paths):
            if not self.alive():
                return
            with suppress(Exception):  # not empty, or the connection went: either way, leave it
                self.sftp.rmdir(path)


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
    for path, attrs, _ in _glob(sftp, base, parts, []):
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


def _glob(sftp: Any, base: str, parts: list[str], refused: list[str], host: str = "") -> list[tuple[str, Any, bool]]:
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


# --- put ------------------------------------------------------------------------------------------------


def put(conn: Any, local: str, remote: str, *, recursive: bool = False, preserve_mode: bool = True) -> TransferReport:
    """Upload a file, or with ``recursive`` a directory tree (empty folders included), to ``remote``.

    Like scp: into ``remote`` when it is an existing directory or ends with ``/`` (created if missing),
    else as ``remote``. Each file is written to a temporary name beside its destination, verified with a
    SHA-256 computed on the host, given its local mode (``preserve_mode``), then renamed into place. On any
    failure the temporary files are removed when the connection allows it, and no final name ever holds a
    partial file. Raises TransferError (one line: host, path, what to do)."""
    started = time.monotonic()
    host = label_of(conn)
    source = Path(local).expanduser()
    tree = scan_local(source, recursive, host)
    report = TransferReport(host=host, errors=list(tree.errors))
    doing = f"upload to {show(remote)}"
    watch = StallWatch(conn)
    session: _Session | None = None
    temps: dict[str, tuple[_Upload, str, str, int, int]] = {}  # temp -> (upload, final, sha256, mode, bytes)
    created: list[str] = []
    try:
        session = _Session(conn)
        with watch:
            _put(session, tree, source, remote, preserve_mode, report, watch, temps, created)
    except BaseException as exc:
        left = session.remove(list(temps)) if session is not None else list(temps)
        if session is not None:
            session.rmdirs(created)
        failure = _failure(conn, session, exc, doing, watch, left)
        if failure is exc:
            raise
        raise failure from exc
    finally:
        if session is not None:
            session.close()
    report.duration = time.monotonic() - started
    if report.errors:
        raise _incomplete(report)
    return report


def _put(
    session: _Session,
    tree: _LocalTree,
    source: Path,
    remote: str,
    preserve_mode: bool,
    report: TransferReport,
    watch: StallWatch,
    temps: dict[str, tuple[_Upload, str, str, int, int]],
    created: list[str],
) -> None:
    host, sftp = session.host, session.sftp
    dest = session.absolute(remote)
    into_dir = remote.endswith("/") or remote in ("", ".", "~") or session.is_dir(dest)
    name = source.name if source.name not in ("", ".", "..") else source.resolve().name
    top = remote_join(dest, name) if into_dir and name else dest
    is_tree = source.is_dir()
    _ensure_dir(session, dest if into_dir else str(PurePosixPath(top).parent), created)
    if is_tree:
        top_is_new = _ensure_dir(session, top, created)
        new_dirs = {top} if top_is_new else set()
        report.directories.append(top)
        for rel, _ in tree.dirs:
            path = remote_join(top, rel)
            parent = str(PurePosixPath(path).parent)
            if parent in new_dirs:
                _mkdir(session, path)  # inside a folder made a moment ago: nothing to look up first
                created.append(path)
                new_dirs.add(path)
            elif _ensure_dir(session, path, created):
                new_dirs.add(path)
            report.directories.append(path)
            watch.progress()

    total = 0
    for item in tree.files:
        final = remote_join(top, item.rel) if item.rel else top
        folder, base = str(PurePosixPath(final).parent), PurePosixPath(final).name
        temp = remote_join(folder, temp_name(base))
        temps[temp] = (item, final, "", 0, 0)
        watch.current = final if len(tree.files) > 1 else ""
        digest, sent, mode = _send(session, item, temp, final, preserve_mode, watch)
        temps[temp] = (item, final, digest, mode, sent)
        total += sent

    with watch.hold():
        sums, tail = session.sha256([t for t in temps if t not in session.streamed], total)
    sums.update({temp: digest for temp, digest in session.streamed.items() if digest})
    for temp, (item, final, digest, mode, sent) in list(temps.items()):
        if sums.get(temp) != digest:
            why = f"the host could not read it back ({tail})" if temp not in sums else "checksums differ"
            report.errors.append(f"{host}: {show(final)} did not verify after upload ({why}); left unchanged, retry")
            if not session.remove([temp]):
                del temps[temp]
            continue
        try:
            sftp.posix_rename(temp, final)
        except OSError as exc:
            session.check(exc)
            session.remove([temp])
            del temps[temp]
            report.errors.append(_rename_refused(session, final, exc))
            continue
        del temps[temp]
        report.items.append(FileTransfer(str(item.local), final, sent, digest, mode))
        watch.progress()
    if preserve_mode and is_tree:
        # Last, deepest first: a folder without write permission for its owner still receives its files.
        modes = [(top, stat.S_IMODE(source.stat().st_mode))] + [(remote_join(top, rel), mode) for rel, mode in tree.dirs]
        for path, mode in reversed(modes):
            sftp.chmod(path, mode)


def _ensure_dir(session: _Session, path: str, created: list[str]) -> bool:
    """mkdir -p; True if ``path`` did not exist. A non-directory in the way is a TransferError."""
    attrs = session.attrs(path)
    if attrs is not None:
        if not stat.S_ISDIR(attrs.st_mode or 0):
            raise TransferError(
                f"{session.host}: {show(path)} exists on the host and is not a directory; remove it or choose another destination",
                session.host,
            )
        return False
    parent = str(PurePosixPath(path).parent)
    if parent != path:
        _ensure_dir(session, parent, created)
    try:
        _mkdir(session, path)
    except TransferError:
        if not session.is_dir(path):  # made by someone else meanwhile: fine
            raise
        return False
    created.append(path)
    return True


def _mkdir(session: _Session, path: str) -> None:
    try:
        session.sftp.mkdir(path)
    except OSError as exc:
        session.check(exc)
        raise TransferError(
            f"{session.host}: cannot create directory {show(path)} on the host ({exc.strerror or exc}); "
            "check the permissions of its parent",
            session.host,
        ) from exc


def _send(
    session: _Session, item: _Upload, temp: str, final: str, preserve_mode: bool, watch: StallWatch
) -> tuple[str, int, int]:
    """Stream one local file to a new remote ``temp``: (sha256, bytes sent, mode given)."""
    sftp = session.sftp
    digest = hashlib.sha256()
    sent = 0
    refused: OSError | None = None
    with item.local.open("rb") as source:
        try:
            # "x": O_EXCL, so the temp name can never be an existing file, nor a symlink someone planted there.
            target = sftp.open(temp, "wxb")
        except OSError as exc:
            session.check(exc)
            folder = str(PurePosixPath(temp).parent)
            raise TransferError(
                f"{session.host}: cannot create files in {show(folder)} on the host ({exc.strerror or exc}); "
                "check its permissions and free space",
                session.host,
            ) from exc
        with target:
            default_mode = 0 if preserve_mode else stat.S_IMODE(target.stat().st_mode or 0o644)
            target.chmod(0o600)  # while partial, readable by its owner only (it may be a secret)
            if item.size < STREAM_MIN_BYTES:
                target.set_pipelined(True)
                try:
                    sent = copy_hashed(source.read, target.write, digest, watch)
                    _confirm_writes(target)
                except OSError as exc:
                    session.check(exc)
                    refused = exc
            else:
                _remove_stale(session, temp, PurePosixPath(final).name, target.stat().st_mtime or 0)
        if refused is not None:
            # SFTP says only "Failure" for a full disk or a quota: the host's own copy program says which (and
            # if the write goes through now, it is verified like any other).
            source.seek(0)
            digest = hashlib.sha256()
            sent, session.streamed[temp] = _stream_up(session, source, temp, final, digest, watch)
        elif item.size >= STREAM_MIN_BYTES:
            # _put compares it like a read-back checksum ("" when the host gave none).
            sent, session.streamed[temp] = _stream_up(session, source, temp, final, digest, watch)
    mode = item.mode if preserve_mode else default_mode
    sftp.chmod(temp, mode)
    return digest.hexdigest(), sent, mode


def _confirm_writes(target: Any) -> None:
    """Wait for the host's answer to every pipelined write still unanswered, raising the first refusal.
    paramiko checks those answers only past 100 writes in flight and drops the rest when the file closes, so a
    full disk under a small file showed only as a checksum mismatch."""
    target.flush()
    pending = target._reqs  # noqa: SLF001 - paramiko keeps no public way to wait for its pipelined writes
    while pending:
        target.sftp._read_response(pending.popleft())  # noqa: SLF001 - raises the host's refusal


def _remove_stale(session: _Session, temp: str, name: str, now: float) -> None:
    """Remove the temporary files of earlier uploads of ``name`` into ``temp``'s folder that no live transfer
    can own (untouched for STALE_TEMP_SECONDS by the host's clock, ``now``): a run killed or cut off mid-way
    leaves its temporary file, and each retry would add another."""
    folder = str(PurePosixPath(temp).parent)
    try:
        entries = session.sftp.listdir_attr(folder)
    except OSError as exc:
        session.check(exc)
        return
    for entry in entries:
        path = remote_join(folder, str(entry.filename))
        if (
            path != temp and is_temp_of(str(entry.filename), name) and stat.S_ISREG(entry.st_mode or 0)
            and (entry.st_mtime or 0) < now - STALE_TEMP_SECONDS
        ):  # fmt: skip
            session.remove([path])


def copy_hashed(
    read: Callable[[int], bytes], write: Callable[[bytes], Any], digest: Any, watch: StallWatch, *, hash_aside: bool = False
) -> int:
    """Copy ``read`` -> ``write`` in CHUNK pieces until EOF, hashing and reporting progress; the bytes copied.
    ``hash_aside`` hashes in a helper thread (see BackgroundHash)."""
    copied = 0
    with BackgroundHash(digest) if hash_aside else nullcontext(digest) as hasher:
        while chunk := read(CHUNK):
            hasher.update(chunk)
            write(chunk)
            copied += len(chunk)
            watch.progress()
    return copied


class BackgroundHash:
    """Feeds a hash from its own thread, so hashing (which releases the GIL) overlaps sending the next chunk
    instead of following it: 512 MB uploads ~10% sooner through the sandbox tunnel. Downloads hash inline: a
    third busy thread beside paramiko's receiver made them ~7% slower. Chunks are hashed in the order given;
    leaving the block waits for the last one."""

    #: Chunks waiting to be hashed at most (x CHUNK bytes of memory).
    DEPTH = 8

    def __init__(self, digest: Any) -> None:
        self.digest = digest
        self._chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=self.DEPTH)
        self._thread = threading.Thread(target=self._run, name="ssmfab-hash", daemon=True)

    def _run(self) -> None:
        while (chunk := self._chunks.get()) is not None:
            self.digest.update(chunk)

    def update(self, chunk: bytes) -> None:
        self._chunks.put(chunk)

    def __enter__(self) -> BackgroundHash:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._chunks.put(None)
        self._thread.join()


def _stream_channel(session: _Session, command: str) -> Any:
    """An exec channel for one streamed file. No timeout while bytes flow: the StallWatch judges progress
    (and cuts a frozen tunnel); only the wait for the host's checksum gets one (see _answer_timeout)."""
    channel = session.transport.open_session(window_size=WINDOW_SIZE, max_packet_size=STREAM_PACKET, timeout=session.stall)
    channel.exec_command(command)
    return channel


def _answer_timeout(session: _Session, size: int) -> float:
    return session.stall + size / HASH_BYTES_PER_SECOND


def _stream_up(session: _Session, source: Any, temp: str, final: str, digest: Any, watch: StallWatch) -> tuple[int, str]:
    """Send the rest of ``source`` into the (already created, private) remote ``temp`` over an exec channel;
    (bytes sent, the SHA-256 the host computed of what it wrote)."""
    channel = _stream_channel(session, f"{STREAM_PUT} {shlex.quote(temp)}")
    sent = 0

    def send(data: bytes) -> None:
        nonlocal sent
        send_stream(channel, data)
        sent += len(data)

    try:
        copy_hashed(source.read, send, digest, watch, hash_aside=True)
        channel.shutdown_write()
    except OSError as exc:
        refused = _host_quit(session, channel, sent, final)
        channel.close()
        raise (refused or exc) from exc
    except BaseException:
        channel.close()
        raise
    return sent, _host_digest(session, channel, sent, watch, channel.recv, "upload", final)


def _host_quit(session: _Session, channel: Any, sent: int, final: str) -> TransferError | None:
    """Why the host's end of an upload stream quit early (disk full, file size limit), in its own words;
    None when it did not (the connection itself failed)."""
    if not session.alive() or not channel.exit_status_ready():
        return None
    status = channel.recv_exit_status()
    said = b""
    with suppress(OSError, socket.timeout):
        channel.settimeout(1.0)
        while data := channel.recv_stderr(4096):
            said += data
    reason = one_line(said.decode(errors="replace")) or f"exit status {status}"
    return TransferError(
        f"{session.host}: the host stopped writing {show(final)} after {sent} bytes sent ({reason}); "
        "nothing left half-written; check its free space and limits, then retry",
        session.host,
    )


def _host_digest(
    session: _Session, channel: Any, moved: int, watch: StallWatch, read: Callable[[int], bytes], doing: str, what: str = ""
) -> str:
    """Once the bytes moved: the SHA-256 the host computed of them, read with ``read`` (the channel's stdout or
    stderr) within a time that grows with the size; "" when the answer holds none. Closes the channel."""
    answer = bytearray()
    said = bytearray()
    try:
        channel.settimeout(_answer_timeout(session, moved))
        with watch.hold():
            while data := read(4096):
                answer.extend(data)
            status = channel.recv_exit_status()
            if read != channel.recv_stderr:
                while len(said) < 4096 and (data := channel.recv_stderr(4096)):
                    said.extend(data)
    finally:
        channel.close()
    if not session.alive():
        raise EOFError(f"the connection closed during the {doing}")
    found = DIGEST_LINE.search(bytes(answer))
    if found is None and status != 0 and doing == "upload":
        # The host's copy program failed (a full disk, a quota): its own words say why.
        reason = one_line(bytes(said).decode(errors="replace")) or f"exit status {status}"
        raise TransferError(
            f"{session.host}: the host stopped writing {show(watch.current or what)} after {moved} bytes sent ({reason}); "
            "nothing left half-written; check its free space and limits, then retry",
            session.host,
        )
    return found.group(1).decode() if found else ""


def _rename_refused(session: _Session, final: str, exc: OSError) -> str:
    if session.is_dir(final):
        return f"{session.host}: {show(final)} is a directory on the host; remove it or choose another destination"
    if "unsupported" in str(exc).lower():
        return (
            f"{session.host}: the host's SFTP server cannot rename atomically (no posix-rename) for {show(final)}; "
            "use OpenSSH's sftp-server"
        )
    return f"{session.host}: could not move the upload into place at {show(final)} ({exc}); check the folder's permissions"


# --- get ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Download:
    remote: str
    local: Path
    size: int
    mode: int


@dataclass
class _DownloadPlan:
    folder: Path  # nothing is written outside it
    dirs: list[tuple[Path, int]] = field(default_factory=list)
    files: list[_Download] = field(default_factory=list)


def get(conn: Any, remote: str, local: str, *, recursive: bool = False, preserve_mode: bool = True) -> TransferReport:
    """Download a file, a directory tree (``recursive``) or a glob (``logs/*.log``, ``a/*/b?.txt``) to ``local``.

    Like scp: into ``local`` when it is an existing folder, ends with a separator, or ``remote`` is a glob;
    else as ``local``. Each file lands in a temporary file beside its destination, is verified against a
    SHA-256 computed on the host, gets the remote mode (``preserve_mode``), then replaces the final name.
    Unsafe remote names and symlinks leading out of the fetched tree are refused one by one; the rest
    arrives, then a TransferError (carrying the report as ``.report``) sums up the refusals."""
    started = time.monotonic()
    host = label_of(conn)
    report = TransferReport(host=host)
    doing = f"download of {show(remote)}"
    watch = StallWatch(conn)
    session: _Session | None = None
    temps: list[Path] = []
    try:
        session = _Session(conn)
        with watch:
            plan = _plan_download(session, remote, local, recursive, report)
            _fetch(session, plan, preserve_mode, report, watch, temps)
    except BaseException as exc:
        failure = _failure(conn, session, exc, doing, watch, [])
        if failure is exc:
            raise
        raise failure from exc
    finally:
        for temp in temps:  # local: always possible, whatever happened to the connection
            with suppress(OSError):
                temp.unlink()
        if session is not None:
            session.close()
    report.duration = time.monotonic() - started
    if report.errors:
        raise _incomplete(report)
    return report


def _plan_download(session: _Session, remote: str, local: str, recursive: bool, report: TransferReport) -> _DownloadPlan:
    host, sftp = session.host, session.sftp
    dest = Path(local).expanduser()
    matches: list[tuple[str, Any]] = []
    if has_glob(remote):
        base, parts = split_glob(remote)
        base = session.absolute(base)
        found = _glob(sftp, base, parts, report.errors, host)
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
    plan = _DownloadPlan(folder=dest if into_dir else dest.parent)
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
        mode = attrs.st_mode or 0
        if stat.S_ISDIR(mode):
            if not recursive:
                report.errors.append(f"{host}: skipping directory {show(path)}: pass recursive=True to fetch it")
                continue
            real = str(sftp.normalize(path))
            plan.dirs.append((target, stat.S_IMODE(mode)))
            _walk_remote(session, path, real, real, (real,), target, plan, report)
        elif stat.S_ISREG(mode):
            plan.files.append(_Download(path, target, attrs.st_size or 0, stat.S_IMODE(mode)))
        else:
            report.errors.append(f"{host}: skipping {show(path)}: not a regular file or directory")
    return plan


def _resolve(session: _Session, path: str, report: TransferReport) -> str | None:
    try:
        return str(session.sftp.normalize(path))
    except OSError as exc:
        session.check(exc)
        report.errors.append(f"{session.host}: skipping {show(path)}: a dangling symlink; fix or remove it on the host")
        return None


def _follow_link(session: _Session, path: str, root_real: str, report: TransferReport) -> tuple[str, Any] | None:
    """Where a symlink (or a path through one) really leads and what is there, when that stays inside
    ``root_real``; None when it leads out (refused, reported) or is gone."""
    real = _resolve(session, path, report)
    if real is None:
        return None
    if not remote_inside(root_real, real):
        report.errors.append(_outside(session.host, path, real, root_real))
        return None
    attrs = session.attrs(path)
    return None if attrs is None else (real, attrs)


def _outside(host: str, path: str, real: str, root: str) -> str:
    return (
        f"{host}: refusing {show(path)}: a symlink to {show(real)}, outside the fetched tree {show(root)}; "
        "fetch that path directly if you need it"
    )


def _walk_remote(
    session: _Session,
    top: str,
    top_real: str,
    root_real: str,
    chain: tuple[str, ...],
    local_top: Path,
    plan: _DownloadPlan,
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
            plan.files.append(_Download(path, local, attrs.st_size or 0, stat.S_IMODE(mode)))
        else:
            report.errors.append(f"{host}: skipping {show(path)}: not a regular file (socket, FIFO or device)")


def _fetch(
    session: _Session, plan: _DownloadPlan, preserve_mode: bool, report: TransferReport, watch: StallWatch, temps: list[Path]
) -> None:
    host = session.host
    root = plan.folder
    root.mkdir(parents=True, exist_ok=True)

    def refuse_outside(path: Path) -> bool:
        if local_inside(root, path):
            return False
        report.errors.append(f"{host}: refusing to write {show(str(path))}: it resolves outside {show(str(root))}")
        return True

    made: list[tuple[Path, int]] = []
    for folder, mode in plan.dirs:
        if refuse_outside(folder):
            continue
        try:
            folder.mkdir(exist_ok=True)
        except FileExistsError:
            report.errors.append(f"{host}: local {show(str(folder))} exists and is not a folder; move it away and retry")
            continue
        if refuse_outside(folder):  # a symlink raced into place
            continue
        made.append((folder, mode))
        report.directories.append(str(folder))

    fetched: list[tuple[_Download, Path, str, int]] = []
    seen: set[Path] = set()
    for item in plan.files:
        parent = item.local.parent
        if item.local in seen:
            report.errors.append(
                f"{host}: skipping {show(item.remote)}: another remote file also lands on {show(str(item.local))}; fetch it separately"
            )
            continue
        seen.add(item.local)
        if refuse_outside(parent):
            continue
        if item.local.is_dir() and not item.local.is_symlink():
            report.errors.append(f"{host}: skipping {show(item.remote)}: local {show(str(item.local))} is a folder; move it away")
            continue
        try:
            parent.mkdir(parents=True, exist_ok=True)
            fd, temp = _local_temp(parent, item.local.name)
        except (FileExistsError, NotADirectoryError):
            report.errors.append(f"{host}: skipping {show(item.remote)}: local {show(str(parent))} is not a folder; move it away")
            continue
        temps.append(temp)
        watch.current = item.remote if len(plan.files) > 1 else ""
        received = _receive(session, item, fd, watch, report)
        if received is not None:
            fetched.append((item, temp, *received))

    with watch.hold():
        hashed_later = [item.remote for item, *_ in fetched if item.remote not in session.streamed]
        sums, tail = session.sha256(hashed_later, sum(size for *_, size in fetched))
    sums.update({path: digest for path, digest in session.streamed.items() if digest})
    default_mode = 0o666 & ~_umask()
    for item, temp, digest, size in fetched:
        if sums.get(item.remote) != digest:
            why = f"the host could not read it ({tail})" if item.remote not in sums else "it changed while being copied"
            report.errors.append(f"{host}: {show(item.remote)} did not verify after download ({why}); retry")
            continue  # its temp file goes with the others
        mode = item.mode if preserve_mode else default_mode
        os.chmod(temp, mode)
        os.replace(temp, item.local)
        temps.remove(temp)
        report.items.append(FileTransfer(item.remote, str(item.local), size, digest, mode))
    if preserve_mode:
        for folder, mode in reversed(made):  # deepest first, after their files arrived
            os.chmod(folder, mode)


def _local_temp(folder: Path, name: str) -> tuple[int, Path]:
    """A new, empty temporary file beside the destination, readable by its owner only while partial."""
    while True:
        temp = folder / temp_name(name)
        with suppress(FileExistsError):  # O_EXCL: never an existing file, nor a symlink planted there
            return os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600), temp


def _receive(session: _Session, item: _Download, fd: int, watch: StallWatch, report: TransferReport) -> tuple[str, int] | None:
    """Stream one remote file into the open temp file ``fd``: (sha256, bytes), or None if the host would
    not open it (gone since it was listed, unreadable): that is reported, the rest goes on."""
    digest = hashlib.sha256()
    got = 0
    with os.fdopen(fd, "wb") as target:
        try:
            source = session.sftp.open(item.remote, "rb")
        except OSError as exc:
            session.check(exc)
            report.errors.append(f"{session.host}: cannot read {show(item.remote)} ({exc}); check it on the host")
            return None
        with source:
            if item.size < STREAM_MIN_BYTES:
                source.prefetch(item.size, PREFETCH_REQUESTS)
                got = copy_hashed(source.read, target.write, digest, watch)
        if item.size >= STREAM_MIN_BYTES:
            got = _stream_down(session, item.remote, target, digest, watch)
    return digest.hexdigest(), got


def _stream_down(session: _Session, remote: str, target: Any, digest: Any, watch: StallWatch) -> int:
    """Receive ``remote`` over an exec channel into ``target``; the host's SHA-256 of what it sent lands in
    ``session.streamed`` (compared by _fetch like a read-back checksum)."""
    channel = _stream_channel(session, f"{STREAM_GET} {shlex.quote(remote)}")
    got = 0
    try:
        got = copy_hashed(channel.recv, target.write, digest, watch)
    except BaseException:
        channel.close()
        raise
    session.streamed[remote] = _host_digest(session, channel, got, watch, channel.recv_stderr, "download")
    return got


# --- errors ---------------------------------------------------------------------------------------------


def _incomplete(report: TransferReport) -> TransferError:
    more = len(report.errors) - 1
    tail = f" ({more} more problem{'s' if more > 1 else ''}; {report.files} files arrived)" if more else ""
    error = TransferError(report.errors[0] + tail, report.host)
    setattr(error, "report", report)  # noqa: B010 - the files that did arrive, for scripts that want them
    return error


def _failure(
    conn: Any, session: _Session | None, exc: BaseException, doing: str, watch: StallWatch, left: list[str]
) -> BaseException:
    """The one-line TransferError for a transfer that failed part-way (KeyboardInterrupt and the like pass)."""
    if not isinstance(exc, Exception):
        return exc
    host = label_of(conn)
    note = ""
    if left:
        note = f"; temporary {'file' if len(left) == 1 else 'files'} {show(left[0])}{' and others' if len(left) > 1 else ''} may remain, delete once the host is reachable"
    if watch.current:
        doing = f"{doing} (at {show(watch.current)})"
    if watch.stalled:
        return TransferError(
            f"{host}: {doing} stalled: no progress for {watch.limit:g}s (ssh.stall_timeout); nothing left "
            f"half-written{note}; check the host and its tunnel, then retry",
            host,
        )
    if isinstance(exc, SSMFabError):
        if note and isinstance(exc, TransferError):
            return TransferError(f"{exc}{note}", host)
        return exc
    lost = session is None or not session.alive()
    explain: Callable[[BaseException], Any] | None = getattr(conn, "explain", None) if lost else None
    explained = explain(exc) if explain is not None else None
    reason = one_line(str(explained) if explained is not None else f"{type(exc).__name__}: {exc}")
    reason = reason.removeprefix(f"{host}: ")
    advice = "check the connection, then retry" if lost else "fix the cause, then retry"
    return TransferError(f"{host}: {doing} failed, nothing left half-written{note} ({reason}); {advice}", host)
