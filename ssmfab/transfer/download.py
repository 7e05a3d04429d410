"""get: a remote file, tree or glob to a local folder, each file under a temporary name, verified, then renamed."""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import tempfile
import time
from contextlib import suppress
from dataclasses import replace
from pathlib import Path
from typing import Any, BinaryIO

from ..exceptions import TransferError
from ..hoststreams import DIGEST_LINE, STREAM_GET
from .compress import WORTH_SPEED, Gunzipping, link_rate
from .outcome import FileTransfer, TransferReport, failure, incomplete
from .paths import has_glob, label_of, local_inside, one_line, show, umask
from .plan import Download, DownloadPlan, local_temp, plan_download
from .session import (
    CHUNK, PREFETCH_REQUESTS, STREAM_MIN_BYTES, Session, StallWatch, configured, copy_hashed, exec_stream, host_answer,
    open_channel, stall_limit, stream_channel,
)


def get(
    conn: Any,
    remote: str,
    local: str | os.PathLike[str] | BinaryIO,
    *,
    recursive: bool = False,
    preserve_mode: bool = True,
    compress: bool | None = None,
) -> TransferReport:
    """Download a file, a directory tree (``recursive``) or a glob (``logs/*.log``, ``a/*/b?.txt``) to ``local``.

    Like scp: into ``local`` when it is an existing folder, ends with a separator, or ``remote`` is a glob;
    else as ``local``. Each file lands in a temporary file beside its destination, is verified against a
    SHA-256 computed on the host, gets the remote mode (``preserve_mode``), then replaces the final name.
    Unsafe remote names and symlinks leading out of the fetched tree are refused one by one; the rest
    arrives, then a TransferError (carrying the report as ``.report``) sums up the refusals.

    ``local`` may also be a binary file-like object open for writing: one remote file is written into it from
    its current position, and only once verified (it waits in a private temporary file until then).

    ``compress``: True or False forces gzip on the wire for streamed files, None (default) compresses when
    it pays (see ssmfab.transfer.compress); an ssmfab connection's default is its transfer.compress setting."""
    compress, _ = configured(conn, compress)
    if not isinstance(local, (str, os.PathLike)):
        return _get_into(conn, remote, local, compress)
    return _get_path(conn, remote, os.fspath(local), recursive, preserve_mode, compress)


def _get_into(conn: Any, remote: str, fileobj: BinaryIO, compress: bool | None) -> TransferReport:
    host = label_of(conn)
    if not callable(getattr(fileobj, "write", None)):
        raise TransferError(f"{host}: cannot download into a {type(fileobj).__name__}: give a path or a binary file-like object", host)
    if has_glob(remote):
        raise TransferError(f"{host}: {show(remote)} is a pattern; a file-like object takes one file, give its path", host)
    with tempfile.TemporaryDirectory(prefix="ssmfab-get-") as folder:
        report = _get_path(conn, remote, folder + os.sep, False, False, compress)
        arrived = report.items[0]
        label = f"<{type(fileobj).__name__}>"
        try:
            with open(arrived.destination, "rb") as verified:
                shutil.copyfileobj(verified, fileobj, CHUNK)
        except (OSError, TypeError) as exc:
            raise TransferError(
                f"{host}: {show(remote)} arrived and verified, but writing it into the file-like object failed "
                f"({one_line(str(exc))}); open it for binary writing",
                host,
            ) from exc
    report.items[0] = replace(arrived, destination=label)
    report.destination = label
    return report


def _get_path(conn: Any, remote: str, local: str, recursive: bool, preserve_mode: bool, compress: bool | None) -> TransferReport:
    started = time.monotonic()
    host = label_of(conn)
    report = TransferReport(host=host)
    doing = f"download of {show(remote)}"
    watch = StallWatch(conn)
    session: Session | None = None
    early: _Early | None = None
    temps: list[Path] = []
    try:
        early = _start_early(conn, remote, recursive, compress)
        session = Session(conn)
        session.compress = compress
        with watch:
            plan = plan_download(session, remote, local, recursive, report)
            _fetch(session, plan, preserve_mode, report, watch, temps, early)
    except BaseException as exc:
        error = failure(conn, session, exc, doing, watch, [])
        if error is exc:
            raise
        raise error from exc
    finally:
        for temp in temps:  # local: always possible, whatever happened to the connection
            with suppress(OSError):
                temp.unlink()
        if early is not None:
            early.channel.close()
        if session is not None:
            session.close()
    report.duration = time.monotonic() - started
    if session is not None:
        report.wire_bytes = sum(session.wire.get(item.source, item.size) for item in report.items)
    if report.errors:
        raise incomplete(report)
    return report


def _fetch(
    session: Session,
    plan: DownloadPlan,
    preserve_mode: bool,
    report: TransferReport,
    watch: StallWatch,
    temps: list[Path],
    early: _Early | None = None,
) -> None:
    host = session.host
    claimed = early.claim(session, plan) if early is not None else None
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

    fetched: list[tuple[Download, Path, str, int]] = []
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
            fd, temp = local_temp(parent, item.local.name)
        except (FileExistsError, NotADirectoryError):
            report.errors.append(f"{host}: skipping {show(item.remote)}: local {show(str(parent))} is not a folder; move it away")
            continue
        temps.append(temp)
        watch.current = item.remote if len(plan.files) > 1 else ""
        received = _receive(session, item, fd, watch, report, claimed)
        if received is not None:
            fetched.append((item, temp, *received))

    with watch.hold():
        hashed_later = [item.remote for item, *_ in fetched if item.remote not in session.streamed]
        sums, tail = session.sha256(hashed_later, sum(size for *_, size in fetched))
    sums.update({path: digest for path, digest in session.streamed.items() if digest})
    default_mode = 0o666 & ~umask()
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


def _receive(
    session: Session, item: Download, fd: int, watch: StallWatch, report: TransferReport, early: _Early | None = None
) -> tuple[str, int] | None:
    """Copy one remote file into the open temp file ``fd`` (over SFTP when small, else streamed; from
    ``early`` when its stream is already running): (sha256, bytes), or None if the host would not open it
    (gone since it was listed, unreadable): that is reported, the rest goes on."""
    digest = hashlib.sha256()
    with os.fdopen(fd, "wb") as target:
        try:
            if early is None and item.size < STREAM_MIN_BYTES:
                try:
                    source = session.sftp.open(item.remote, "rb")
                except OSError as exc:
                    session.check(exc)
                    raise _Unreadable(str(exc)) from exc
                with source:
                    source.prefetch(item.size, PREFETCH_REQUESTS)
                    got = copy_hashed(source.read, target.write, digest, watch)
            else:
                got = _stream_down(session, item, target, digest, watch, early)
        except _Unreadable as exc:
            report.errors.append(f"{session.host}: cannot read {show(item.remote)} ({exc}); check it on the host")
            return None
    return digest.hexdigest(), got


def _stream_down(session: Session, item: Download, target: Any, digest: Any, watch: StallWatch, early: _Early | None) -> int:
    """Receive ``item`` over an exec channel (``early``'s, or a new one) into ``target``; the host's SHA-256 of
    what it sent lands in ``session.streamed`` (compared by _fetch like a read-back checksum). A host that
    could not open or read the file at all raises _Unreadable (an OSError) in its own words."""
    if early is not None:
        channel, codec = early.channel, early.codec
    else:
        codec = _codec(session.conn, session.compress)
        channel = stream_channel(session, _stream_command(item.remote, codec))
    got = 0
    try:
        header = _header(session, channel, item.size) if codec != "raw" else b""
        unpacker = Gunzipping(channel.recv) if header == b"Z" else None
        got = copy_hashed(channel.recv if unpacker is None else unpacker.read, target.write, digest, watch)
        if unpacker is not None:
            session.wire[item.remote] = unpacker.wire
    except BaseException:
        channel.close()
        raise
    answer, status, _ = host_answer(session, channel, got, watch, channel.recv_stderr, "download")
    found = DIGEST_LINE.search(answer)
    began = bool(header) if codec != "raw" else got > 0
    if found is None and status != 0 and not began:
        # It sent nothing, not even its codec byte: the file could not be opened or read (gone since it was
        # listed, not readable, a folder now). The python program says its error; the shell names the file.
        raise _Unreadable(one_line(answer.decode(errors="replace")) or f"exit status {status}")
    if codec != "raw" and not header:
        raise EOFError("the host's stream ended before its codec byte")
    session.streamed[item.remote] = found.group(1).decode() if found else ""
    return got


class _Unreadable(OSError):
    """The host's program could not open or read a file it was asked to stream (its words as the message)."""


def _stream_command(path: str, codec: str) -> str:
    return f"{STREAM_GET} {shlex.quote(path)}" + (f" {codec}" if codec != "raw" else "")


#: Before the early stream's program (see _Early): the directory it runs in, on stderr, so that a relative path
#: is known to name the file the SFTP session planned (sftp-server may start elsewhere: its -d option).
_SAY_WHERE = "sh -c 'pwd -P >&2; exec \"$@\"' sh "


class _Early:
    """The host's copy of a download's one named file, started before the transfer's SFTP session opens:
    the host starts its program and judges the file's first bytes while the SFTP session opens, stats and
    plans, instead of after; and a small file comes in that one command with its checksum, not over SFTP and
    then a checksum command. Through AWS's plugin on the sandbox a 64 MB download's first byte came ~15 ms
    sooner; over a real link each step saved is a round trip. Used only when the plan is that file; else closed
    unread (the program only reads on the host, and ends at its next write)."""

    def __init__(self, path: str, codec: str, channel: Any) -> None:
        self.path = path  # as the program got it
        self.codec = codec
        self.channel = channel

    def claim(self, session: Session, plan: DownloadPlan) -> _Early | None:
        """This stream when ``plan`` is its one file in the same place, else None (its channel closed here)."""
        if len(plan.files) == 1 and plan.files[0].remote == session.absolute(self.path) and self._where() in (None, session.home):
            return self
        self.channel.close()
        return None

    def _where(self) -> str | None:
        """The program's directory (its first line on stderr) when the path is relative, else None."""
        if self.path.startswith("/"):
            return None
        said = bytearray()
        while not said.endswith(b"\n") and len(said) < 4096 and (piece := self.channel.recv_stderr(1)):
            said += piece
        return bytes(said[:-1]).decode(errors="surrogateescape")


def _start_early(conn: Any, remote: str, recursive: bool, compress: bool | None) -> _Early | None:
    """The early stream (see _Early) for a download of one named file: not a glob, a tree, or a folder by its
    look (a trailing slash, the login folder itself)."""
    if recursive or has_glob(remote) or remote.endswith("/") or remote in ("", ".", "~"):
        return None
    path = remote[2:] if remote.startswith("~/") else remote  # the program starts in the login folder
    codec = _codec(conn, compress)
    command = _SAY_WHERE + _stream_command(path, codec)
    return _Early(path, codec, exec_stream(lambda **kwargs: open_channel(conn, **kwargs), command, stall_limit(conn)))


def _codec(conn: Any, compress: bool | None) -> str:
    """What the host is asked for: gzip (forced), raw (refused), auto at the link's download rate when it is
    known, else ask (the host judges its file's first MiB and asks for the link's verdict only when it shrinks:
    see hoststreams.HOST_COPY). A file that does not shrink is never preceded by timing the link."""
    if compress is not None:
        return "gzip" if compress else "raw"
    known: dict[str, float] | None = getattr(conn, "link_rates", None)
    return f"auto:{known['get']:.0f}" if known and "get" in known else "ask"


def _header(session: Session, channel: Any, size: int) -> bytes:
    """The one byte a host sends before a stream when asked for auto, ask or gzip: Z (gzip) or R (raw); b""
    when the stream ended before it. Asked, a host whose data shrinks first sends ``?SPEED``: the link is timed
    then and the verdict sent back; for a file under STREAM_MIN_BYTES (streamed only because its stream
    started early) the verdict is raw, as over SFTP: timing the link would cost more than it could save."""
    first = bytes(channel.recv(1))
    if first in (b"Z", b"R", b""):
        return first
    if first != b"?":  # not ssmfab's host program speaking: never guess what the bytes are
        raise ValueError(f"the host's stream began with {first!r}, not the codec byte it was asked for")
    line = bytearray()
    while not line.endswith(b"\n"):
        piece = channel.recv(1)
        if not piece:
            raise EOFError("the host's stream ended before it said whether it compresses")
        line += piece
    speed = float(line.decode("ascii").strip())
    if size < STREAM_MIN_BYTES:
        channel.sendall(b"R")
    else:
        rate = link_rate(session.conn, session.transport, "get", session.stall)
        channel.sendall(b"Z" if rate < WORTH_SPEED * speed else b"R")
    return bytes(channel.recv(1))
