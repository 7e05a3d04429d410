"""ssmfab's transfers behind Fabric's ``Connection.put``/``get`` signatures, and as fan-out operations.

A script calling ``conn.put``/``conn.get`` gets what the command line gets (streamed, verified, atomic, modes
kept) and Fabric's own return value, ``fabric.transfer.Result``, with the ssmfab report beside it.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from fabric.transfer import Result

from .download import get
from .outcome import TransferReport
from .upload import put

#: What ``put``'s and ``get``'s ``local`` may be: a path, or an open binary file-like object.
Local = str | os.PathLike[str] | BinaryIO


class TransferResult(Result):  # type: ignore[misc]
    """fabric.transfer.Result (``local``, ``orig_local``, ``remote``, ``orig_remote``, ``connection``) plus
    ``report``: every file that arrived with its size, SHA-256 and mode."""

    def __init__(self, *, local: Any, orig_local: Any, remote: str, orig_remote: Any, connection: Any, report: TransferReport):
        super().__init__(local=local, orig_local=orig_local, remote=remote, orig_remote=orig_remote, connection=connection)
        self.report = report

    def __repr__(self) -> str:
        return f"<TransferResult {self.report.files} files, {self.report.bytes} bytes: {self.orig_local!r} <-> {self.remote!r}>"


def _is_path(value: object) -> bool:
    return isinstance(value, (str, os.PathLike))


def connection_put(
    conn: Any,
    local: Local,
    remote: str | None = None,
    preserve_mode: bool = True,
    *,
    recursive: bool = False,
    compress: bool | None = None,
    streams: int | None = None,
) -> TransferResult:
    """Fabric's ``put``: ``remote`` empty means the login folder, an existing folder (or a trailing ``/``) means
    inside it; relative paths start at the login folder."""
    report = put(
        conn, local, remote or "", recursive=recursive, preserve_mode=preserve_mode, compress=compress, streams=streams
    )
    shown_local = os.path.abspath(os.path.expanduser(os.fspath(local))) if isinstance(local, (str, os.PathLike)) else local
    return TransferResult(
        local=shown_local, orig_local=local, remote=report.destination, orig_remote=remote, connection=conn, report=report
    )


def connection_get(
    conn: Any,
    remote: str,
    local: Local | None = None,
    preserve_mode: bool = True,
    *,
    recursive: bool = False,
    compress: bool | None = None,
) -> TransferResult:
    """Fabric's ``get``: ``local`` empty means the current folder under the remote file's name, a trailing
    separator (or an existing folder) means inside it; a string ``local`` may hold Fabric's ``{host}``,
    ``{user}``, ``{port}``, ``{dirname}`` and ``{basename}``."""
    target: Local = local if local else "." + os.sep
    if isinstance(target, str) and "{" in target:
        target = _interpolate(conn, remote, target)
    report = get(conn, remote, target, recursive=recursive, preserve_mode=preserve_mode, compress=compress)
    return TransferResult(
        local=report.destination if _is_path(target) else local,
        orig_local=local,
        remote=report.source,
        orig_remote=remote,
        connection=conn,
        report=report,
    )


def _interpolate(conn: Any, remote: str, local: str) -> str:
    """Fabric's local-path tokens, filled in as Fabric does (``dirname`` of the absolute remote path); a path
    whose braces are not tokens is left as it is."""
    home = str(conn.sftp().normalize("."))
    absolute = posixpath.join(home, remote)
    try:
        return local.format(
            host=conn.host,
            user=conn.user,
            port=conn.port,
            dirname=posixpath.dirname(absolute),
            basename=posixpath.basename(absolute),
        )
    except (KeyError, IndexError, ValueError):
        return local


def upload(
    local: str | os.PathLike[str],
    remote: str,
    *,
    recursive: bool = False,
    preserve_mode: bool = True,
    compress: bool | None = None,
    streams: int | None = None,
) -> Callable[[Any], TransferReport]:
    """An operation for ``fan_out``: put ``local`` to ``remote`` on each host (a folder goes whole when
    ``recursive``); each host's result is its TransferReport."""
    source = os.fspath(local)

    def operation(conn: Any) -> TransferReport:
        return put(conn, source, remote, recursive=recursive, preserve_mode=preserve_mode, compress=compress, streams=streams)

    return operation


def download(
    remote: str,
    dest: str | os.PathLike[str],
    *,
    recursive: bool = False,
    preserve_mode: bool = True,
    compress: bool | None = None,
) -> Callable[[Any], TransferReport]:
    """An operation for ``fan_out``: get ``remote`` (a file, a tree with ``recursive``, or a glob) from each host
    into ``dest/<instance-id>/``, so hosts never overwrite each other's files."""
    root = Path(dest).expanduser()

    def operation(conn: Any) -> TransferReport:
        folder = root / conn.target.id
        folder.mkdir(parents=True, exist_ok=True)
        return get(conn, remote, str(folder) + os.sep, recursive=recursive, preserve_mode=preserve_mode, compress=compress)

    return operation
