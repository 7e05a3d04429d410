"""Remote command quoting, checked by a real POSIX shell: whatever a value holds, ``sh -c`` gets it back byte
for byte and runs nothing of it. (sshd hands the command string to the login shell the same way.)"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ssmfab.exceptions import ConfigError
from ssmfab.remoteshell import check_env, quote, with_env

HOSTILE = [
    "plain",
    "",
    "two words",
    "it's",
    '"double"',
    "a;touch PWNED",
    "$(touch PWNED)",
    "`touch PWNED`",
    "${HOME}",
    "line\nbreak; touch PWNED",
    "back\\slash",
    "-n",
    "*",
    "ünïcödé — 名前",
    "'; touch PWNED; echo '",
]


def sh(command: str, cwd: Path) -> str:
    done = subprocess.run(["sh", "-c", command], cwd=cwd, capture_output=True, text=True, check=False, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("value", HOSTILE)
def test_a_quoted_word_reaches_the_shell_as_itself(value: str, tmp_path: Path) -> None:
    (tmp_path / "a-file").touch()  # something for a stray * to expand to
    assert sh(f"printf '%s' {quote(value)}", tmp_path) == value
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]  # nothing ran


def test_the_environment_is_exported_quoted_and_in_name_order(tmp_path: Path) -> None:
    env = {f"V{n:02d}": value for n, value in enumerate(HOSTILE)}
    command = with_env('for name in ' + " ".join(sorted(env)) + '; do eval "printf \'%s\\0\' \\"\\$$name\\""; done', env)
    assert command.startswith("export V00=plain V01='' V02='two words' ")
    assert sh(command, tmp_path).split("\0")[:-1] == [env[name] for name in sorted(env)]
    assert not (tmp_path / "PWNED").exists()


def test_the_command_runs_only_after_the_exports_succeed(tmp_path: Path) -> None:
    assert with_env("echo hi", {"B": "2", "A": "1"}) == "export A=1 B=2 && echo hi"
    assert sh(with_env('echo "$A-$B"', {"B": "2", "A": "1"}), tmp_path) == "1-2\n"


def test_no_environment_leaves_the_command_alone() -> None:
    assert with_env("echo hi", {}) == "echo hi"


@pytest.mark.parametrize("name", ["1X", "A-B", "A B", "X;touch PWNED", "", "É"])
def test_a_name_no_shell_accepts_is_refused_in_one_line(name: str) -> None:
    with pytest.raises(ConfigError) as caught:
        with_env("true", {name: "v"})
    assert str(caught.value) == (
        f"env {name!r}: not a shell variable name (letters, digits and _, not starting with a digit)"
    )
    with pytest.raises(ConfigError, match=r"^--env "):
        check_env({name: "v"})


@pytest.mark.parametrize("name", ["A", "_", "a_1", "_9", "LONG_NAME_42"])
def test_shell_variable_names_are_accepted(name: str) -> None:
    check_env({name: "v"})


def test_values_that_are_not_utf8_text_are_refused_naming_the_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        check_env({"GOOD": "x", "BAD": "\udcff"}, source="deploy.env")
    assert str(caught.value) == "deploy.env BAD: the value is not valid UTF-8 text"
    with pytest.raises(ConfigError) as caught:
        check_env({"NUM": 3})  # type: ignore[dict-item]
    assert str(caught.value) == "--env NUM: the value must be text, got int"
    with pytest.raises(ConfigError, match=r"^--env 3: not a shell variable name"):
        check_env({3: "x"})  # type: ignore[dict-item]
