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

import os
import stat

from .exceptions import ConfigError

# Typing only at type-check time: loading typing, collections.abc, pathlib, re, json or hashlib costs a warm
# command's start more than its whole round trip through the keeper (see warm).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from hashlib import sha256
else:
    try:
        from _sha256 import sha256  # the same digest; hashlib loads OpenSSL first
    except ImportError:  # Python 3.12+ names it _sha2; other interpreters may have neither
        try:
            from _sha2 import sha256
        except ImportError:
            from hashlib import sha256

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

#: Duration units, longest suffix first.
UNIT_SECONDS = (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0), ("", 1.0))


def _duration_seconds(text: str) -> float | None:
    """``"90s"``, ``"1.5 m"``, ``"10"`` to seconds; None when it is not a duration (digits with at most one dot,
    then a unit). Parsed by hand: the re module is one of the costs a warm command's start avoids."""
    text = text.strip()
    for unit, scale in UNIT_SECONDS:
        if text.endswith(unit):
            number = text[: len(text) - len(unit)].rstrip()
            whole, dot, fraction = number.partition(".")
            if whole.isascii() and whole.isdigit() and (not dot or (fraction.isascii() and fraction.isdigit())):
                return float(number) * scale
            return None
    return None


def parse_persist(text: str | float | int | bool | None, where: str = "--persist") -> float:
    """``"10m"``, ``"90s"``, ``90``, ``"0"`` (off) to seconds; ConfigError naming ``where`` otherwise."""
    if text is None or text is False:
        return 0.0
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        parsed = _duration_seconds(str(text))
        if parsed is None:
            raise ConfigError(f"{where} {text!r}: expected a duration like 90s, 10m or 1h (0 turns warm sessions off)")
        seconds = parsed
    if seconds < 0:
        raise ConfigError(f"{where} {text!r}: must not be negative")
    return seconds


def describe_seconds(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"


def keeper_dir(env: Mapping[str, str] | None = None) -> str:
    """The user's private folder for keeper sockets, created 0700; ConfigError if it is not private."""
    env = os.environ if env is None else env
    given = env.get(KEEPER_DIR_ENV)
    runtime = env.get("XDG_RUNTIME_DIR")
    if given:
        folder = os.path.expanduser(given)
    elif runtime and os.path.isdir(runtime):
        folder = os.path.join(runtime, "ssmfab")
    else:
        cache = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser(env.get("HOME", "~")), ".cache")
        folder = os.path.join(cache, "ssmfab", "keepers")
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        info = os.lstat(folder)
    except OSError as exc:
        raise ConfigError(f"cannot make the keeper folder {folder}: {exc.strerror}") from exc
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise ConfigError(
            f"{folder} must be a folder of yours that nobody else can open (chmod 700 {folder}); "
            "warm sessions are off until it is"
        )
    return folder


def _file_state(path: str) -> tuple[int, int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_ino, info.st_size, info.st_mtime_ns)


#: The version of the messages between a command and its keeper. Part of the identity, so a keeper still running
#: from an older ssmfab (it lives up to its idle time after an upgrade) is never asked in words it misreads.
KEEPER_PROTOCOL = 2


def identity(env: Mapping[str, str] | None = None, overrides: Mapping[str, str] | None = None) -> str:
    """A digest of who this command is to AWS and to the hosts; ``overrides``: identity flags given on the
    command line (--region, --profile, --tunnel…). Anything left in doubt makes a different digest: a
    needless second keeper is cheap, a shared one between identities is not acceptable."""
    env = os.environ if env is None else env
    home = os.path.expanduser(env.get("HOME", "~"))
    aws_files = [
        os.path.expanduser(env.get("AWS_CONFIG_FILE") or os.path.join(home, ".aws", "config")),
        os.path.expanduser(env.get("AWS_SHARED_CREDENTIALS_FILE") or os.path.join(home, ".aws", "credentials")),
    ]
    facts = (
        ("protocol", KEEPER_PROTOCOL),
        ("uid", os.getuid()),
        ("env", sorted(
            (k, v) for k, v in env.items()
            if (k.startswith(("AWS_", "SSMFAB_")) and k not in NOT_IDENTITY) or k in ("HOME", "PATH", "XDG_CONFIG_HOME")
        )),
        ("files", [(path, _file_state(path)) for path in aws_files]),
        ("flags", sorted((overrides or {}).items())),
    )  # fmt: skip
    # repr of tuples, lists, strings and ints is exact and stable, and needs no json module at start.
    return sha256(repr(facts).encode("utf-8", "surrogateescape")).hexdigest()[:16]


def socket_path(folder: str, digest: str) -> str:
    return os.path.join(folder, f"keeper-{digest}.sock")


def keeper_sockets(folder: str) -> list[str]:
    """Every keeper socket in the folder (each identity's keeper)."""
    return sorted(
        os.path.join(folder, name) for name in os.listdir(folder) if name.startswith("keeper-") and name.endswith(".sock")
    )
