"""Warm sessions: how long connections stay open after a command, and where the keeper that holds them lives.

Standard library only: the command line's fast path (``warm``) reads this before it knows whether it needs
paramiko, Fabric or boto3, and a warm command needs none of them.

A keeper is a background process of the user's that holds SSH-over-SSM connections between commands (see
``keeper``). There is one per user and identity: its socket's name is a digest of everything that decides who
the user is to AWS and to the hosts (every ``AWS_*`` and ``SSMFAB_*`` variable, HOME, PATH, the AWS config and
credentials files as they are now). Two identities never share a process, so one's credentials and connections
are never within reach of the other's commands. Inside a keeper, connections are keyed again by instance, SSH
user, key and tunnel (``pool``).

The socket is the user's alone: it lives in a 0700 folder under ``$XDG_RUNTIME_DIR`` (else the cache folder),
is made 0600, and the keeper checks every caller's uid (SO_PEERCRED) before it reads a byte.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path

from .exceptions import ConfigError

#: The command line's idle time when nothing says otherwise (see README, "Warm sessions").
DEFAULT_PERSIST = "1m"
#: Environment variable for the idle time (``0`` turns warm sessions off).
PERSIST_ENV = "SSMFAB_PERSIST"
#: Where keepers put their sockets, when set (otherwise $XDG_RUNTIME_DIR/ssmfab, else the cache folder).
KEEPER_DIR_ENV = "SSMFAB_KEEPER_DIR"
#: Variables that choose where or how long, not who: left out of the identity.
NOT_IDENTITY = (PERSIST_ENV, KEEPER_DIR_ENV, "SSMFAB_REFRESH")
#: Seconds a keeper keeps a selection's answer (instance ids and SSM status); --refresh asks again.
SELECTION_CACHE_SECONDS = 30.0

DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|)\s*")
UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "": 1.0, "m": 60.0, "h": 3600.0}


def parse_persist(text: str | float | int | bool | None, where: str = "--persist") -> float:
    """``"10m"``, ``"90s"``, ``90``, ``"0"`` (off) to seconds; ConfigError naming ``where`` otherwise."""
    if text is None or text is False:
        return 0.0
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        match = DURATION.fullmatch(str(text))
        if not match:
            raise ConfigError(f"{where} {text!r}: expected a duration like 90s, 10m or 1h (0 turns warm sessions off)")
        seconds = float(match.group(1)) * UNIT_SECONDS[match.group(2)]
    if seconds < 0:
        raise ConfigError(f"{where} {text!r}: must not be negative")
    return seconds


def describe_seconds(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"


def keeper_dir(env: Mapping[str, str] | None = None) -> Path:
    """The user's private folder for keeper sockets, created 0700; ConfigError if it is not private."""
    env = os.environ if env is None else env
    given = env.get(KEEPER_DIR_ENV)
    if given:
        folder = Path(given).expanduser()
    elif env.get("XDG_RUNTIME_DIR") and Path(env["XDG_RUNTIME_DIR"]).is_dir():
        folder = Path(env["XDG_RUNTIME_DIR"]) / "ssmfab"
    else:
        cache = Path(env.get("XDG_CACHE_HOME") or Path(env.get("HOME", "~")).expanduser() / ".cache")
        folder = cache / "ssmfab" / "keepers"
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        info = folder.lstat()
    except OSError as exc:
        raise ConfigError(f"cannot make the keeper folder {folder}: {exc.strerror}") from exc
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise ConfigError(
            f"{folder} must be a folder of yours that nobody else can open (chmod 700 {folder}); "
            "warm sessions are off until it is"
        )
    return folder


def _file_state(path: Path) -> list[int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return [info.st_ino, info.st_size, info.st_mtime_ns]


def identity(env: Mapping[str, str] | None = None, overrides: Mapping[str, str] | None = None) -> str:
    """A digest of who this command is to AWS and to the hosts; ``overrides``: identity flags given on the
    command line (--region, --profile, --tunnel…). Anything left in doubt makes a different digest: a
    needless second keeper is cheap, a shared one between identities is not acceptable."""
    env = os.environ if env is None else env
    home = Path(env.get("HOME", "~")).expanduser()
    aws_files = [
        Path(env.get("AWS_CONFIG_FILE") or home / ".aws" / "config").expanduser(),
        Path(env.get("AWS_SHARED_CREDENTIALS_FILE") or home / ".aws" / "credentials").expanduser(),
    ]
    facts = {
        "uid": os.getuid(),
        "env": sorted(
            (k, v) for k, v in env.items()
            if (k.startswith(("AWS_", "SSMFAB_")) and k not in NOT_IDENTITY) or k in ("HOME", "PATH", "XDG_CONFIG_HOME")
        ),
        "files": [[str(p), _file_state(p)] for p in aws_files],
        "flags": sorted((overrides or {}).items()),
    }  # fmt: skip
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]


def socket_path(folder: Path, digest: str) -> Path:
    return folder / f"keeper-{digest}.sock"


def keeper_sockets(folder: Path) -> list[Path]:
    """Every keeper socket in the folder (each identity's keeper)."""
    return sorted(folder.glob("keeper-*.sock"))
