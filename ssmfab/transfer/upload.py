"""put: a local file or tree to the host, each file under a temporary name, verified, then renamed."""

from __future__ import annotations

import hashlib
import os
import shlex
import socket
import stat
import time
from contextlib import suppress
from pathlib import Path, PurePosixPath
from collections.abc import Callable
from typing import Any, BinaryIO

from ..exceptions import TransferError
from ..fastssh import send_stream
from ..hoststreams import STREAM_PUT
from .guard import TempGuard
from .compress import SAMPLE_BYTES, WORTH_RATIO, Gzipping, Prefixed, judge, level_for, link_rate, worth_it
from .outcome import FileTransfer, TransferReport, failure, incomplete
from .paths import is_temp_of, label_of, one_line, remote_join, sftp_name, show, temp_name
from .plan import LocalTree, Upload, scan_fileobj, scan_local
from .stripe import streams_for, striped_up
from .session import STREAM_MIN_BYTES, Session, StallWatch, configured, copy_hashed, host_digest, stream_channel


#: A temporary file of ours untouched for this long belongs to no live transfer (one that stops making progress
#: fails after ssh.stall_timeout): an upload of the same name removes it (left by a killed or cut-off run).
STALE_TEMP_SECONDS = 600


def put(
    conn: Any,
    local: str | os.PathLike[str] | BinaryIO,
    remote: str,
    *,
    recursive: bool = False,
    preserve_mode: bool = True,
    compress: bool | None = None,
    streams: int | None = None,
    progress: Callable[[int], Any] | None = None,
) -> TransferReport:
    """Upload a file, or with ``recursive`` a directory tree (empty folders included), to ``remote``.

    Like scp: into ``remote`` when it is an existing directory or ends with ``/`` (created if missing),
    else as ``remote``. Each file is written to a temporary name beside its destination, verified with a
    SHA-256 computed on the host, given its local mode (``preserve_mode``), then renamed into place. On any
    failure the temporary files are removed when the connection allows it, and no final name ever holds a
    partial file. Raises TransferError (one line: host, path, what to do).

    ``local`` may also be an open binary file-like object: its whole content is sent (it is rewound first and
    its position restored after, as Fabric does), into a directory only under its ``.name``; the file gets the
    host's default mode.

    ``compress``: True or False forces gzip on the wire for streamed files (4 MiB and more), None (default)
    compresses when it pays: the data shrinks and the link is slower than the compressor (see
    ssmfab.transfer.compress). ``streams``: SSM sessions a file of 16 MiB or more may use at once (each its own
    tunnel; None: 8 when the link is measured slow, else 1; see ssmfab.transfer.stripe). On an ssmfab
    connection, None for either means its transfer.compress or transfer.streams setting. ``progress`` is told
    the bytes of every chunk sent, from the transfer's threads."""
    started = time.monotonic()
    host = label_of(conn)
    compress, streams = configured(conn, compress, streams)
    if not isinstance(local, (str, os.PathLike)):
        return _put_fileobj(conn, local, remote, preserve_mode, compress, None, progress, started)
    source = Path(local).expanduser()
    tree = scan_local(source, recursive, host)
    return _put_tree(conn, tree, source, remote, preserve_mode, compress, streams, progress, started)


def _put_fileobj(
    conn: Any,
    fileobj: BinaryIO,
    remote: str,
    preserve_mode: bool,
    compress: bool | None,
    streams: int | None,
    progress: Callable[[int], Any] | None,
    started: float,
) -> TransferReport:
    host = label_of(conn)
    if not callable(getattr(fileobj, "read", None)):
        raise TransferError(f"{host}: cannot upload a {type(fileobj).__name__}: give a path or a binary file-like object", host)
    try:
        position: int | None = fileobj.tell()
    except (OSError, AttributeError, ValueError):
        position = None
    tree = scan_fileobj(fileobj, host)
    try:
        return _put_tree(conn, tree, tree.files[0].local, remote, preserve_mode, compress, streams, progress, started)
    finally:
        if position is not None:
            with suppress(OSError, ValueError):
                fileobj.seek(position)


def _put_tree(
    conn: Any,
    tree: LocalTree,
    source: Path,
    remote: str,
    preserve_mode: bool,
    compress: bool | None,
    streams: int | None,
    progress: Callable[[int], Any] | None,
    started: float,
) -> TransferReport:
    host = label_of(conn)
    report = TransferReport(host=host, errors=list(tree.errors))
    doing = f"upload to {show(remote)}"
    watch = StallWatch(conn)
    watch.on_bytes = progress
    session: Session | None = None
    guard: TempGuard | None = None
    temps: dict[str, tuple[Upload, str, str, int, int]] = {}  # temp -> (upload, final, sha256, mode, bytes)
    created: list[str] = []
    try:
        session = Session(conn)
        session.compress = compress
        session.streams = streams
        guard = TempGuard(session.transport, session.stall)
        with watch:
            _put(session, tree, source, remote, preserve_mode, report, watch, temps, created, guard)
    except BaseException as exc:
        left = session.remove(list(temps)) if session is not None else list(temps)
        if session is not None:
            session.rmdirs(created)
        error = failure(conn, session, exc, doing, watch, left)
        if error is exc:
            raise
        raise error from exc
    finally:
        if guard is not None:
            guard.close()
        if session is not None:
            session.close()
    report.duration = time.monotonic() - started
    if report.errors:
        raise incomplete(report)
    return report


def _put(
    session: Session,
    tree: LocalTree,
    source: Path,
    remote: str,
    preserve_mode: bool,
    report: TransferReport,
    watch: StallWatch,
    temps: dict[str, tuple[Upload, str, str, int, int]],
    created: list[str],
    guard: TempGuard,
) -> None:
    host, sftp = session.host, session.sftp
    dest = session.absolute(remote)
    into_dir = remote.endswith("/") or remote in ("", ".", "~") or session.is_dir(dest)
    from_object = bool(tree.files) and tree.files[0].fileobj is not None
    if from_object:
        name = source.name
        if into_dir and not name:
            raise TransferError(
                f"{host}: {show(remote)} is a directory and the file-like object has no name; give the remote file's path",
                host,
            )
    else:
        name = source.name if source.name not in ("", ".", "..") else source.resolve().name
    top = remote_join(dest, name) if into_dir and name else dest
    if not sftp_name(top):  # the local name it took is not UTF-8: caught before anything is made on the host
        raise TransferError(
            f"{host}: cannot upload to {show(top)}: the name is not UTF-8, as SFTP needs; rename it or name the remote file", host
        )
    report.source = tree.files[0].source if from_object else str(source.absolute())
    report.destination = top
    is_tree = not from_object and source.is_dir()
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
        guard.announce(temp)  # before it exists: a cut from here on leaves the host to remove it
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
            why = "checksums differ" if temp in sums else f"the host could not read it back{f' ({tail})' if tail else ''}"
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
        report.items.append(FileTransfer(item.source, final, sent, digest, mode))
        report.wire_bytes += session.wire.get(temp, sent)
        report.streams = session.most_streams
        watch.progress()
    if preserve_mode and is_tree:
        # Last, deepest first: a folder without write permission for its owner still receives its files.
        modes = [(top, stat.S_IMODE(source.stat().st_mode))] + [(remote_join(top, rel), mode) for rel, mode in tree.dirs]
        for path, mode in reversed(modes):
            sftp.chmod(path, mode)


def _ensure_dir(session: Session, path: str, created: list[str]) -> bool:
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


def _mkdir(session: Session, path: str) -> None:
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
    session: Session, item: Upload, temp: str, final: str, preserve_mode: bool, watch: StallWatch
) -> tuple[str, int, int]:
    """Stream one local file to a new remote ``temp``: (sha256, bytes sent, mode given)."""
    sftp = session.sftp
    digest: Any = hashlib.sha256()
    sent = 0
    refused: OSError | None = None
    keep_mode = preserve_mode and item.mode is not None
    with item.open() as source:
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
            default_mode = 0 if keep_mode else stat.S_IMODE(target.stat().st_mode or 0o644)
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
            sent, session.streamed[temp] = _stream_up(session, source, item.size if item.exact else None, temp, final, digest, watch)
        elif item.size >= STREAM_MIN_BYTES and (streams := _streams(session, item)) > 1:
            _, level = _compression(session, source, streams)
            sent, whole, session.streamed[temp], session.wire[temp] = striped_up(
                session, str(item.local), item.size, temp, final, watch, streams, level
            )
            digest = _Known(whole)
            session.most_streams = max(session.most_streams, streams)
        elif item.size >= STREAM_MIN_BYTES:
            # _put compares it like a read-back checksum ("" when the host gave none).
            sent, session.streamed[temp] = _stream_up(session, source, item.size if item.exact else None, temp, final, digest, watch)
    mode = item.mode if keep_mode and item.mode is not None else default_mode
    sftp.chmod(temp, mode)
    return digest.hexdigest(), sent, mode


class _Known:
    """A digest already computed (a striped upload hashes the whole file on its own)."""

    def __init__(self, hexdigest: str) -> None:
        self._hex = hexdigest

    def hexdigest(self) -> str:
        return self._hex


def _streams(session: Session, item: Upload) -> int:
    """Sessions for one file: several only for a local file on disk (pieces are read at their offsets)."""
    return 1 if item.fileobj is not None else streams_for(session, item.size, session.streams)


def _confirm_writes(target: Any) -> None:
    """Wait for the host's answer to every pipelined write still unanswered, raising the first refusal.
    paramiko checks those answers only past 100 writes in flight and drops the rest when the file closes, so a
    full disk under a small file showed only as a checksum mismatch."""
    target.flush()
    pending = target._reqs  # noqa: SLF001 - paramiko keeps no public way to wait for its pipelined writes
    while pending:
        target.sftp._read_response(pending.popleft())  # noqa: SLF001 - raises the host's refusal


def _remove_stale(session: Session, temp: str, name: str, now: float) -> None:
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


def _stream_up(
    session: Session, source: Any, size: int | None, temp: str, final: str, digest: Any, watch: StallWatch
) -> tuple[int, str]:
    """Send ``source`` (``size`` bytes from its start, or up to its end when the size is unknown) into the (already
    created, private) remote ``temp`` over an exec channel; (bytes sent, the SHA-256 the host computed of what it
    wrote)."""
    reader, level = _compression(session, source)
    # The size lets the host tell a cut stream from a finished one (both end its input) and drop the file itself;
    # a stream of unknown size (a pipe) is checked by its SHA-256 alone.
    command = f"{STREAM_PUT} {shlex.quote(temp)} {'gzip' if level else 'raw'}" + (f" {size}" if size is not None else "")
    channel = stream_channel(session, command)
    sent = 0
    packer = Gzipping(lambda data: send_stream(channel, data), level) if level else None

    def send(data: bytes) -> None:
        nonlocal sent
        if packer is not None:
            packer.write(data)
        else:
            send_stream(channel, data)
        sent += len(data)

    try:
        copy_hashed(reader.read, send, digest, watch, hash_aside=True)
        if packer is not None:
            packer.close()
            session.wire[temp] = packer.wire
        channel.shutdown_write()
    except OSError as exc:
        refused = _host_quit(session, channel, sent, final)
        channel.close()
        raise (refused or exc) from exc
    except BaseException:
        channel.close()
        raise
    return sent, host_digest(session, channel, sent, watch, channel.recv, final)


def _compression(session: Session, source: Any, streams: int = 1) -> tuple[Any, int]:
    """(what to read from, the zlib level to gzip it at, 0 for none): forced on or off by ``session.compress``,
    else judged on the first MiB (read here, sent first) against the link's measured upload rate (times the
    ``streams`` sharing the work)."""
    if session.compress is False:
        return source, 0
    sample = source.read(SAMPLE_BYTES)
    reader = Prefixed(sample, source.read)
    ratio, speed = judge(sample)
    if not session.compress and ratio > WORTH_RATIO:
        return reader, 0  # no need to time the link for data that does not shrink
    rate = link_rate(session.conn, session.transport, "put", session.stall) * streams
    if session.compress or worth_it(ratio, speed, rate):
        return reader, level_for(speed, rate)
    return reader, 0


def _host_quit(session: Session, channel: Any, sent: int, final: str) -> TransferError | None:
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


def _rename_refused(session: Session, final: str, exc: OSError) -> str:
    if session.is_dir(final):
        return f"{session.host}: {show(final)} is a directory on the host; remove it or choose another destination"
    if "unsupported" in str(exc).lower():
        return (
            f"{session.host}: the host's SFTP server cannot rename atomically (no posix-rename) for {show(final)}; "
            "use OpenSSH's sftp-server"
        )
    return f"{session.host}: could not move the upload into place at {show(final)} ({exc}); check the folder's permissions"

