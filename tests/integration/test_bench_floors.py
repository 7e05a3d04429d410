"""The benchmark's connect floors measure what they claim: each loads the libraries ``ssmfab run`` needs and
nothing a real run does not, and the SSH floor really runs a command on a host."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ssmfab.sandbox import Sandbox

FLOOR = Path(__file__).resolve().parents[2] / "bench" / "connect_floor.py"


def modules_loaded(code: str, env: dict[str, str], report: Path) -> set[str]:
    """The modules loaded when ``code`` ends, however it ends (the program exits through SystemExit)."""
    at_exit = f"import atexit, sys; atexit.register(lambda: open({str(report)!r}, 'w').write(' '.join(sys.modules)))\n"
    subprocess.run([sys.executable, "-c", at_exit + code], capture_output=True, env=env, timeout=120, check=True)
    return set(report.read_text().split())


def as_main(script: Path, *args: str) -> str:
    """Code that runs ``script`` as ``python script args`` would, without loading runpy or anything else."""
    source = f"compile(open({str(script)!r}).read(), {str(script)!r}, 'exec')"
    return f"sys.argv = {[script.name, *args]!r}\nexec({source}, {{'__name__': '__main__'}})\n"


@pytest.mark.parametrize("floor", ["libraries", "ssh"])
def test_a_floor_loads_the_libraries_and_nothing_a_real_run_does_not(
    floor: str, sandbox: Sandbox, sandbox_env: dict[str, str], tmp_path: Path
) -> None:
    host = sandbox.hosts[0]
    run = f"sys.argv = ['ssmfab', 'run', '--id', {host.instance_id!r}, 'true']\nfrom ssmfab.program import main\nmain()\n"
    ran = modules_loaded(run, sandbox_env, tmp_path / "run.txt")
    ssh = ("127.0.0.1", str(host.port), sandbox.user, sandbox_env["SSMFAB_KEY"]) if floor == "ssh" else ()
    loaded = modules_loaded(as_main(FLOOR, *ssh), sandbox_env, tmp_path / "floor.txt")
    assert {"paramiko", "fabric", "botocore.session", "invoke"} <= loaded
    assert loaded - ran == set(), "the floor loads modules ssmfab run does not, so it overstates the floor"


def test_the_ssh_floor_runs_true_on_a_host_and_fails_with_a_wrong_key(
    sandbox: Sandbox, sandbox_env: dict[str, str], tmp_path: Path
) -> None:
    host = sandbox.hosts[0]
    floor = [sys.executable, str(FLOOR), "127.0.0.1", str(host.port), sandbox.user]
    done = subprocess.run([*floor, sandbox_env["SSMFAB_KEY"]], capture_output=True, text=True, env=sandbox_env, timeout=60)
    assert done.returncode == 0, done.stderr
    stranger = tmp_path / "id_stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    refused = subprocess.run([*floor, str(stranger)], capture_output=True, text=True, env=sandbox_env, timeout=60)
    assert refused.returncode != 0 and "AuthenticationException" in refused.stderr
