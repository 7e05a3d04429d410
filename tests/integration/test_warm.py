"""Warm sessions on the sandbox: the keeper's connections reused across processes, expiring, replaced when dead,
never shared between identities, all gone after ``persist --stop`` or a killed keeper; and a warm command
prints exactly what a cold one prints, without loading paramiko, Fabric or boto3."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from ssmfab.sandbox import Sandbox
from ssmfab.warm import ask_keepers

from .conftest import processes_matching, session_status, tunnel_processes
from ..waiting import wait_until

SSMFAB = [sys.executable, "-m", "ssmfab.program"]
ANNOUNCEMENT = "ssmfab: warm sessions on:"


class Warm:
    def __init__(self, env: dict[str, str], folder: Path) -> None:
        self.env, self.folder = env, folder

    def __call__(self, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*SSMFAB, *args], capture_output=True, text=True, env={**self.env, **extra}, timeout=120, check=False)

    def keepers(self) -> list[str]:
        return processes_matching(f"ssmfab.keeper {self.folder}")

    def listing(self) -> list[dict[str, object]]:
        from ssmfab.warm import ask_keepers

        return [row for answer in ask_keepers({"op": "list"}, self.env) for row in answer["answer"]]


@pytest.fixture
def warm(sandbox_env: dict[str, str], sandbox: Sandbox) -> Iterator[Warm]:
    folder = Path(tempfile.mkdtemp(prefix="wk-", dir="/tmp"))  # a unix socket's path must stay short
    env = {**os.environ, **sandbox_env, "SSMFAB_PERSIST": "5m", "SSMFAB_KEEPER_DIR": str(folder)}
    helper = Warm(env, folder)
    try:
        yield helper
    finally:
        helper("persist", "--stop")
        wait_until(lambda: not helper.keepers(), "the keepers to exit after persist --stop")
        wait_until(lambda: not tunnel_processes(sandbox), "the keepers' plugins to exit")
        shutil.rmtree(folder, ignore_errors=True)


def steady(text: str) -> str:
    """Output with the per-run durations taken out (they differ between any two runs)."""
    return re.sub(r"\b\d+\.\d+s\b", "N.NNs", text)


def test_warm_run_reuses_the_connection_across_processes_and_prints_what_a_cold_run_prints(warm: Warm) -> None:
    host = "web-1"
    command = "echo out; echo err >&2; exit 3"
    cold_pin = warm("run", "--name", host, "true", SSMFAB_PERSIST="0")  # pins the host key: later runs say nothing of it
    assert cold_pin.returncode == 0, cold_pin.stderr
    cold = warm("run", "--name", host, command, SSMFAB_PERSIST="0")
    first = warm("run", "--name", host, command)
    assert ANNOUNCEMENT in first.stderr
    [kept] = warm.listing()
    second = warm("run", "--name", host, command)
    third = warm("run", "--name", host, command)
    for run in (first, second, third):
        assert run.returncode == cold.returncode == 1
        assert steady(run.stdout) == steady(cold.stdout)
    assert ANNOUNCEMENT not in second.stderr + third.stderr
    assert steady(second.stderr) == steady(third.stderr) == steady(cold.stderr)
    [still] = warm.listing()
    assert still["session_id"] == kept["session_id"] and still["uses"] == 3
    cold_json = warm("run", "--name", host, "--json", command, SSMFAB_PERSIST="0")
    warm_json = warm("run", "--name", host, "--json", command)
    strip = lambda text: [{k: v for k, v in h.items() if k != "duration"} for h in json.loads(text)["hosts"]]  # noqa: E731
    assert strip(warm_json.stdout) == strip(cold_json.stdout)
    assert warm_json.returncode == cold_json.returncode


def test_a_warm_command_loads_no_ssh_or_aws_library(warm: Warm) -> None:
    assert warm("run", "--name", "web-1", "true").returncode == 0
    traced = subprocess.run([sys.executable, "-X", "importtime", "-m", "ssmfab.program", "run", "--name", "web-1", "true"],
                            capture_output=True, text=True, env=warm.env, timeout=120, check=False)  # fmt: skip
    assert traced.returncode == 0, traced.stderr
    modules = [line.rsplit("|", 1)[-1].strip() for line in traced.stderr.splitlines() if line.startswith("import time:")]
    loaded = {name.split(".")[0] for name in modules}
    assert not loaded & {"paramiko", "fabric", "botocore", "boto3", "invoke"}, loaded & {"paramiko", "fabric", "botocore", "boto3"}
    # Nor what only costs a warm command's start: a keeper to start (subprocess), config files the keeper reads
    # (ssmfab.config, tomllib), annotations (typing), the Python halves of socket, signal and json.
    after_site = modules[modules.index("site") + 1 :] if "site" in modules else modules
    costly = {"subprocess", "ssmfab.config", "tomllib", "typing", "socket", "signal", "json", "hashlib", "threading"}
    assert not costly & set(after_site), costly & set(after_site)


def test_without_flag_or_variable_the_config_files_decide_read_by_the_keeper(warm: Warm, tmp_path: Path) -> None:
    env = {k: v for k, v in warm.env.items() if k != "SSMFAB_PERSIST"}
    xdg = tmp_path / "xdg"
    (xdg / "ssmfab").mkdir(parents=True)
    (xdg / "ssmfab" / "config.toml").write_text('[ssh]\npersist = "5m"\n')
    env["XDG_CONFIG_HOME"] = str(xdg)
    run = lambda *args, cwd=None: subprocess.run([*SSMFAB, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120)  # noqa: E731
    first = run("run", "--name", "web-2", "echo one")
    assert first.returncode == 0 and ANNOUNCEMENT in first.stderr, first.stderr
    second = run("run", "--name", "web-2", "echo two")
    assert second.returncode == 0 and "[web-2] two" in second.stdout
    [kept] = [r for a in ask_keepers({"op": "list"}, env) for r in a["answer"]]
    assert kept["uses"] == 2
    # A project whose ssmfab.toml turns warm sessions off: the keeper says so and the command runs on its own.
    project = tmp_path / "project"
    project.mkdir()
    (project / "ssmfab.toml").write_text('[ssh]\npersist = "0"\n')
    cold = run("run", "--name", "web-2", "echo three", cwd=str(project))
    assert cold.returncode == 0 and "[web-2] three" in cold.stdout, cold.stderr
    [still] = [r for a in ask_keepers({"op": "list"}, env) for r in a["answer"]]
    assert still["uses"] == 2 and still["session_id"] == kept["session_id"]
    run("persist", "--stop")


def test_idle_connections_close_and_the_keeper_exits_leaving_no_session(warm: Warm, sandbox: Sandbox) -> None:
    done = warm("run", "--name", "web-2", "--persist", "0.2s", "true")
    assert done.returncode == 0, done.stderr
    wait_until(lambda: not warm.keepers(), "the keeper to exit once its only connection idled out")
    wait_until(lambda: not tunnel_processes(sandbox), "the plugin to exit")
    ssm = boto3.client("ssm", endpoint_url=warm.env["AWS_ENDPOINT_URL"], region_name="us-east-1")
    active = [s for s in ssm.describe_sessions(State="Active")["Sessions"] if s.get("Target") == sandbox.host("web-2").instance_id]
    assert not active, active


def test_a_session_ended_by_an_admin_is_replaced_once_and_the_command_runs_once(warm: Warm, tmp_path: Path) -> None:
    counter = f"warm-count-{os.getpid()}"
    assert warm("run", "--name", "db-1", f"echo x >> {counter}").returncode == 0
    [kept] = warm.listing()
    ssm = boto3.client("ssm", endpoint_url=warm.env["AWS_ENDPOINT_URL"], region_name="us-east-1")
    ssm.terminate_session(SessionId=str(kept["session_id"]))
    again = warm("run", "--name", "db-1", f"echo x >> {counter}; wc -l < {counter}")
    assert again.returncode == 0, again.stderr
    assert "[db-1] 2" in again.stdout
    [replaced] = warm.listing()
    assert replaced["session_id"] != kept["session_id"]


def test_two_identities_never_share_a_keeper_or_a_connection(warm: Warm) -> None:
    assert warm("run", "--name", "web-3", "true").returncode == 0
    other = warm("run", "--name", "web-3", "true", AWS_ACCESS_KEY_ID="another-identity")
    assert other.returncode == 0, other.stderr
    assert ANNOUNCEMENT in other.stderr  # a keeper of its own
    rows = warm.listing()
    assert len(rows) == 2 and len({r["session_id"] for r in rows}) == 2 and len({r["keeper_pid"] for r in rows}) == 2


def test_a_killed_keeper_leaves_no_plugin_and_the_next_command_starts_a_new_one(warm: Warm, sandbox: Sandbox) -> None:
    assert warm("run", "--name", "web-1", "true").returncode == 0
    [kept] = warm.listing()
    assert tunnel_processes(sandbox)
    os.kill(int(str(kept["keeper_pid"])), signal.SIGKILL)
    wait_until(lambda: not tunnel_processes(sandbox), "the plugin to see its input end and exit")
    again = warm("run", "--name", "web-1", "echo back")
    assert again.returncode == 0, again.stderr
    assert ANNOUNCEMENT in again.stderr and "[web-1] back" in again.stdout
    # The killed keeper could not end its SSM session; the new one does, from the ledger it left.
    endpoint = warm.env["AWS_ENDPOINT_URL"]
    wait_until(lambda: session_status(endpoint, str(kept["session_id"])) == "Terminated", "the new keeper to end the old session")
    assert not list(warm.folder.glob("keeper-*.sessions.*.tmp"))


def test_persist_stop_ends_the_sessions_a_killed_keeper_left_open(warm: Warm) -> None:
    assert warm("run", "--name", "db-1", "true").returncode == 0
    [kept] = warm.listing()
    [ledger] = warm.folder.glob("keeper-*.sessions")
    assert str(kept["session_id"]) in ledger.read_text()
    os.kill(int(str(kept["keeper_pid"])), signal.SIGKILL)
    wait_until(lambda: not warm.keepers(), "the keeper to die")
    endpoint = warm.env["AWS_ENDPOINT_URL"]
    assert session_status(endpoint, str(kept["session_id"])) not in ("Terminated", "absent")  # AWS keeps it open
    stopped = warm("persist", "--stop")
    assert stopped.returncode == 0, stopped.stderr
    assert "ended 1 SSM session(s) left open by keepers that were killed" in stopped.stdout
    assert session_status(endpoint, str(kept["session_id"])) == "Terminated"
    assert not list(warm.folder.glob("keeper-*.sessions"))
    again = warm("persist", "--stop")
    assert "ended" not in again.stdout  # once


def test_a_keeper_that_exits_leaves_no_ledger(warm: Warm) -> None:
    assert warm("run", "--name", "web-2", "true").returncode == 0
    assert list(warm.folder.glob("keeper-*.sessions"))
    warm("persist", "--stop")
    wait_until(lambda: not warm.keepers(), "the keeper to exit")
    assert not list(warm.folder.glob("keeper-*.sessions"))


def test_persist_stop_by_name_ends_only_those(warm: Warm, sandbox: Sandbox) -> None:
    assert warm("run", "--tag", "Role=web", "true").returncode == 0
    assert len(warm.listing()) == 3
    stopped = warm("persist", "--stop", "--name", "web-2")
    assert "closed 1 warm connection(s)" in stopped.stdout
    assert sorted(str(r["name"]) for r in warm.listing()) == ["web-1", "web-3"]
    listed = warm("persist")
    assert "web-1" in listed.stdout and "web-2" not in listed.stdout


@pytest.mark.parametrize("task", ["run", "put", "get"])
def test_a_warm_session_gone_silent_is_replaced_once_before_anything_is_sent(
    warm: Warm, sandbox: Sandbox, tmp_path: Path, task: str
) -> None:
    """The instance-reboot case: the warm connection's session still looks open but nothing comes through it
    any more (the service black-holes it). The command's first channel cannot open: the connection is replaced
    and the command runs once on the new one; transfers open their own channels and are replaced the same way."""
    warm.env["SSMFAB_CONNECT_TIMEOUT"] = "5"  # how long that first channel may take (and the new session)
    host = {"run": "web-1", "put": "web-2", "get": "web-3"}[task]
    home = Path(sandbox.host(host).folder) / "home"
    counter = f"warm-silent-{os.getpid()}"
    (home / counter).unlink(missing_ok=True)
    assert warm("run", "--name", host, f"echo x >> {counter}").returncode == 0
    [kept] = warm.listing()
    sandbox.set_faults(session_id=str(kept["session_id"]), BlackHole=True)
    payload = os.urandom(3 * 1024 * 1024 + 17)
    if task == "run":
        done = warm("run", "--name", host, f"echo x >> {counter}; wc -l < {counter}")
        assert done.returncode == 0, done.stderr
        assert f"[{host}] 2" in done.stdout  # once: the first try never reached the host
    elif task == "put":
        local = tmp_path / "up.bin"
        local.write_bytes(payload)
        done = warm("put", str(local), f"silent-{os.getpid()}.bin", "--name", host)
        assert done.returncode == 0, done.stderr
        assert (home / f"silent-{os.getpid()}.bin").read_bytes() == payload
        (home / f"silent-{os.getpid()}.bin").unlink()
    else:
        (home / f"silent-{os.getpid()}.bin").write_bytes(payload)
        dest = tmp_path / "down"
        done = warm("get", f"silent-{os.getpid()}.bin", "--dest", str(dest), "--name", host)
        assert done.returncode == 0, done.stderr
        assert [p.read_bytes() for p in dest.rglob("*.bin")] == [payload]
        (home / f"silent-{os.getpid()}.bin").unlink()
    [replaced] = warm.listing()
    assert replaced["session_id"] != kept["session_id"]
    assert (home / counter).read_text() == ("x\n" * 2 if task == "run" else "x\n")


def test_inv_refuses_persist_in_one_line_and_runs_nothing(warm: Warm, sandbox: Sandbox) -> None:
    """Warm sessions ride the ssmfab command only: under inv, --persist would do nothing, so it is refused."""
    checkout = Path(__file__).resolve().parents[2]
    inv = [sys.executable, "-c", "import invoke.main, sys; sys.argv[0] = 'inv'; invoke.main.program.run()"]
    home = Path(sandbox.host("web-1").folder) / "home"
    marker = f"inv-persist-{os.getpid()}"
    run = lambda *words: subprocess.run([*inv, *words], capture_output=True, text=True, env=warm.env, cwd=checkout,  # noqa: E731
                                        timeout=120, check=False)  # fmt: skip
    refused = run("run", "--name", "web-1", "--persist", "10m", f"touch {marker}")
    assert refused.returncode == 2, refused.stderr
    [line] = refused.stderr.splitlines()
    assert line.startswith("error: --persist: warm sessions ride the `ssmfab` command, not inv"), line
    assert "`ssmfab run …`" in line
    assert not (home / marker).exists() and not warm.keepers()
    assert run("run", "--name", "web-1", "--persist", "soon", "true").stderr.startswith("error: --persist 'soon': expected a duration")
    off = run("run", "--name", "web-1", "--persist", "0", f"touch {marker}")  # off is what inv does anyway
    assert off.returncode == 0, off.stderr
    assert (home / marker).exists() and not warm.keepers()
    (home / marker).unlink()


def test_a_session_opened_by_the_command_its_keeper_is_killed_in_is_ended_by_persist_stop(warm: Warm, sandbox: Sandbox) -> None:
    """The keeper writes a session down as soon as it is open, not when its command hands the connection back."""
    home = Path(sandbox.host("web-3").folder) / "home"
    fifo = home / f"warm-held-{os.getpid()}"
    os.mkfifo(fifo)
    try:
        command = subprocess.Popen([*SSMFAB, "run", "--name", "web-3", f"echo started; cat {fifo.name}"], env=warm.env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        try:
            assert command.stdout is not None
            assert "[web-3] started" in command.stdout.readline()  # the session is open and the command runs in it
            [held] = warm.listing()
            assert held["in_use"]
            os.kill(int(str(held["keeper_pid"])), signal.SIGKILL)
            assert command.wait(timeout=120) == 1
        finally:
            if command.poll() is None:
                command.kill()
                command.wait()
        wait_until(lambda: not warm.keepers(), "the keeper to die")
        endpoint = warm.env["AWS_ENDPOINT_URL"]
        assert session_status(endpoint, str(held["session_id"])) not in ("Terminated", "absent")  # AWS keeps it open
        stopped = warm("persist", "--stop")
        assert "ended 1 SSM session(s) left open by keepers that were killed" in stopped.stdout, stopped.stdout
        assert session_status(endpoint, str(held["session_id"])) == "Terminated"
    finally:
        try:  # the remote `cat` outlived its connection: the end of its input ends it
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass
        fifo.unlink()


def test_a_reader_that_leaves_ends_a_warm_command_quietly_as_a_cold_one(warm: Warm) -> None:
    assert warm("run", "--name", "web-1", "true").returncode == 0
    runs = {}
    for persist in ("0", "5m"):
        runs[persist] = subprocess.run(
            ["bash", "-c", '"$@" | head -1; echo "status ${PIPESTATUS[0]}"', "-", *SSMFAB, "run", "--name", "web-1", "seq 500000"],
            env={**warm.env, "SSMFAB_PERSIST": persist}, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    assert runs["5m"].stdout == runs["0"].stdout == "[web-1] 1\nstatus 141\n", runs
    assert runs["5m"].stderr == runs["0"].stderr == "", runs
