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

The work is split by job: ``plan`` decides what moves (local scan, remote listing and globs, refusals),
``upload`` and ``download`` move it (``guard`` has the host remove a cut upload's temporary files), ``session``
holds what both share on the connection (the SFTP channel, the stall watch, hashed copying, streamed channels),
``outcome`` the reports and errors, ``paths`` the pure name and path helpers; the programs the host runs are in ``ssmfab.hoststreams``.
"""

from __future__ import annotations

from .download import get
from .outcome import FileTransfer, TransferReport
from .paths import (
    GLOB_CHARS,
    TEMP_STEM_BYTES,
    glob_matches,
    has_glob,
    is_temp_of,
    label_of,
    local_inside,
    one_line,
    parse_sums,
    remote_absolute,
    remote_inside,
    remote_join,
    show,
    split_glob,
    temp_name,
    unsafe_name,
)
from .plan import check_local_folder, expand_remote, scan_local
from .session import (
    CHUNK,
    DEFAULT_STALL_TIMEOUT,
    HASH_BYTES_PER_SECOND,
    PREFETCH_REQUESTS,
    STREAM_MIN_BYTES,
    STREAM_PACKET,
    BackgroundHash,
    StallWatch,
    copy_hashed,
    open_sftp,
)
from .upload import STALE_TEMP_SECONDS, put

__all__ = [
    "BackgroundHash",
    "CHUNK",
    "DEFAULT_STALL_TIMEOUT",
    "FileTransfer",
    "GLOB_CHARS",
    "HASH_BYTES_PER_SECOND",
    "PREFETCH_REQUESTS",
    "STALE_TEMP_SECONDS",
    "STREAM_MIN_BYTES",
    "STREAM_PACKET",
    "StallWatch",
    "TEMP_STEM_BYTES",
    "TransferReport",
    "check_local_folder",
    "copy_hashed",
    "expand_remote",
    "get",
    "glob_matches",
    "has_glob",
    "is_temp_of",
    "label_of",
    "local_inside",
    "one_line",
    "open_sftp",
    "parse_sums",
    "put",
    "remote_absolute",
    "remote_inside",
    "remote_join",
    "scan_local",
    "show",
    "split_glob",
    "temp_name",
    "unsafe_name",
]
