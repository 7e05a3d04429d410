"""Transfer paths and names, with no I/O: temporary names, globs, remote path arithmetic, safety checks on
names a host sends, and the parsing of ``sha256sum`` output."""

from __future__ import annotations

import fnmatch
import os
import re
import secrets
from pathlib import Path, PurePosixPath
from typing import Any


CHUNK = 256 * 1024
GLOB_CHARS = frozenset("*?[")


#: Bytes of a file name kept in its temporary name: the rest of ``.NAME.ssmfab-XXXXXXXX.part`` must fit NAME_MAX (255).
TEMP_STEM_BYTES = 200


def label_of(conn: Any) -> str:
    return str(getattr(conn, "label", None) or conn.host)


def show(path: str) -> str:
    """A path fit for a one-line message: quoted with escapes when it holds control characters, and as its
    bytes (``\\xe9``) when some are not UTF-8 (os.fsdecode's surrogates, which no terminal can print)."""
    if any(0xDC80 <= ord(ch) <= 0xDCFF for ch in path):
        return repr(path.encode("utf-8", "surrogateescape"))[1:]
    return repr(path) if any(ord(ch) < 32 or ord(ch) == 127 for ch in path) else path


def sftp_name(path: str) -> bool:
    """Whether ``path`` can cross SFTP, whose names are UTF-8 (paramiko encodes them strictly): a local name
    holding bytes that are not UTF-8 reaches Python as surrogates and cannot."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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


def umask() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # no way to read it without setting it elsewhere
    os.umask(mask)
    return mask

