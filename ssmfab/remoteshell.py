"""Building commands for a remote POSIX shell: every value that reaches it goes through here, quoted.

sshd hands a command to the login shell as one string, so a value is safe only once it is a single
shell word. Fabric 3.2 inlines ``env`` as ``export K=V && command`` without quoting (``X=a b`` arrives as
``a``; ``X=1; touch F`` runs ``touch``), so ssmfab builds that prefix itself, with ``shlex.quote``: single
quotes, inside which a POSIX shell gives every byte (newline, ``$``, backquote, ``\\``) its literal meaning.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping

from .exceptions import ConfigError

#: A name a POSIX shell accepts in ``export NAME=…``.
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def check_env(env: Mapping[str, str], *, source: str = "--env") -> None:
    """Refuse a name that is not a shell variable name, or a value that cannot be sent as UTF-8 (the SSH
    command is UTF-8 text), in one line naming it."""
    for name, value in env.items():
        if not isinstance(name, str) or not ENV_NAME.fullmatch(name):
            raise ConfigError(f"{source} {name!r}: not a shell variable name (letters, digits and _, not starting with a digit)")
        if not isinstance(value, str):
            raise ConfigError(f"{source} {name}: the value must be text, got {type(value).__name__}")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ConfigError(f"{source} {name}: the value is not valid UTF-8 text") from None


def quote(word: str) -> str:
    """``word`` as one shell word that the remote shell reads back byte for byte."""
    return shlex.quote(word)


def with_env(command: str, env: Mapping[str, str]) -> str:
    """``command`` preceded by ``export`` of every variable in ``env``, each value quoted (names checked)."""
    if not env:
        return command
    check_env(env, source="env")
    exports = " ".join(f"{name}={quote(value)}" for name, value in sorted(env.items()))
    return f"export {exports} && {command}"
