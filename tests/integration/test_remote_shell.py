"""What reaches a remote shell from the user: ``--env`` values, deploy's directories, local input. Values
arrive byte for byte and never run as code; a command's input is closed unless the user forwards it."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ssmfab.client import Client
from ssmfab.config import DeploySettings
from ssmfab.deploy import Deployer

SSMFAB = [sys.executable, "-m", "ssmfab.program"]


def hostile_values(marker: Path) -> dict[str, str]:
    """Values a user may well pass, and ones an attacker would: each must arrive as it is."""
    return {
        "SPACES": "a  b ",
        "QUOTES": "it's \"quoted\" 'twice'",
        "SEMICOLON": f"1; touch {marker}; Y=2",
        "SUBSTITUTION": f"$(touch {marker})",
        "BACKTICKS": f"`touch {marker}`",
        "NEWLINES": f"first\nsecond\n$(touch {marker})\n",
        "EMPTY": "",
        "EQUALS": "a=b=c",
        "NON_ASCII": "héllo ☃ 日本",
        "EXPANSIONS": "$HOME ${PATH} $1 $$ *",
        "BACKSLASHES": "a\\b\\'c\\\\",
        "LEADING_DASH": "-n -e",
    }


def hex_of_each(names: list[str]) -> str:
    """A remote command printing each variable's exact bytes in hex, one per line."""
    return "; ".join(f"printf %s \"${name}\" | od -An -v -tx1 | tr -d ' \\n'; echo" for name in names)


def ssmfab(*args: str, stdin: bytes | None = None, timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    """The program in its own session. ``timeout`` only keeps a hang (the old behaviour of `cat`) from
    blocking the suite, and then ends the whole group (its tunnels hold the output pipes); no test measures
    time."""
    process = subprocess.Popen([*SSMFAB, *args], stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip
    try:
        out, err = process.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail(f"ssmfab {' '.join(args)} did not end")
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def test_env_values_arrive_byte_for_byte_and_run_nothing(sandbox_env: dict[str, str], tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    values = hostile_values(marker)
    names = sorted(values)
    env_flags = [arg for name in names for arg in ("--env", f"{name}={values[name]}")]
    done = ssmfab("run", "--tag", "web", "--json", *env_flags, hex_of_each(names))
    assert done.returncode == 0, done.stderr.decode()
    report = json.loads(done.stdout)
    assert [h["status"] for h in report["hosts"]] == ["ok"] * 3
    for host in report["hosts"]:
        assert host["stdout"].splitlines() == [values[name].encode().hex() for name in names], host["name"]
    assert not marker.exists(), "a value ran as code"


def test_invalid_env_names_are_refused_before_any_aws_call(sandbox_env: dict[str, str]) -> None:
    env = dict(os.environ, AWS_ENDPOINT_URL="http://127.0.0.1:9")  # nothing listens: any AWS call would fail
    for name in ("VÄR", "A-B", "1X", "X Y", ""):
        done = subprocess.run([*SSMFAB, "run", "--tag", "web", "--env", f"{name}=v", "true"], capture_output=True,
                              text=True, env=env, timeout=120, check=False)  # fmt: skip
        assert done.returncode == 2, (name, done.stderr)
        assert done.stderr.splitlines() == [
            f"error: --env {name!r}: not a shell variable name (letters, digits and _, not starting with a digit)"
        ]


def test_library_run_quotes_env(sandbox_env: dict[str, str], tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    values = hostile_values(marker)
    client = Client(tunnel="plugin", notify=lambda message: None)
    [target] = client.targets(names=["web-1"])
    with client.connect(target) as conn:
        result = conn.run(hex_of_each(sorted(values)), env=values, hide=True)
    assert result.stdout.splitlines() == [values[name].encode().hex() for name in sorted(values)]
    assert not marker.exists()


def test_deploy_hooks_get_a_hostile_base_dir_as_data(sandbox_env: dict[str, str], tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    base = f"deploy $(touch {marker}); x `touch {marker}` it's"
    artifact = tmp_path / "art"
    artifact.mkdir()
    (artifact / "VERSION").write_text("1\n")
    hook = 'printf %s "$BASE_DIR" > seen-base; printf %s "$RELEASE_DIR" > seen-release'  # run in the release folder
    settings = DeploySettings(artifact=str(artifact), base_dir=base, before_switch=(hook,), after_switch=("true",))
    client = Client(tunnel="plugin", notify=lambda message: None)
    [target] = client.targets(names=["web-2"])
    deployer = Deployer(settings, artifact)
    with client.connect(target) as conn:
        deployer.deploy(conn)
        seen_base = conn.run(f"cat {_q(base + '/current/seen-base')}", hide=True).stdout
        seen_release = conn.run(f"cat {_q(base + '/current/seen-release')}", hide=True).stdout
        home = conn.run("pwd", hide=True).stdout.rstrip("\n")
        conn.run(f"rm -rf {_q(base)}", hide=True)
    # The hooks get absolute paths: a relative base_dir is taken from the login folder.
    assert seen_base == f"{home}/{base}"
    assert seen_release == f"{home}/{base}/releases/{deployer.release}"
    assert not marker.exists(), "deploy.base_dir ran as code in a hook"


def _q(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def test_remote_input_is_closed_so_cat_and_read_end(sandbox_env: dict[str, str]) -> None:
    # Before: the command's input stayed open, and `cat` waited for ever.
    done = ssmfab("run", "--tag", "web", "cat; read x; echo \"read exit $?\"", timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    lines = done.stdout.decode().splitlines()
    assert sorted(line for line in lines if line.startswith("[web-")) == [f"[web-{n}] read exit 1" for n in (1, 2, 3)]


def test_stdin_flag_forwards_a_pipe_to_one_host(sandbox_env: dict[str, str]) -> None:
    payload = os.urandom(1 << 20) + b"\nlast line without newline"
    done = ssmfab("run", "--name", "web-1", "--stdin", "sha256sum", stdin=payload)
    assert done.returncode == 0, done.stderr.decode()
    assert f"[web-1] {hashlib.sha256(payload).hexdigest()}  -" in done.stdout.decode().splitlines()


def test_stdin_flag_refuses_several_hosts(sandbox_env: dict[str, str], tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    done = ssmfab("run", "--tag", "web", "--stdin", f"touch {marker}", stdin=b"x")
    assert done.returncode == 2
    assert done.stderr.decode().splitlines()[-1] == "error: --stdin goes to one host; the selectors match 3"
    assert not marker.exists()
