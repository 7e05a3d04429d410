"""The command line as users run it: `ssmfab …` in a process, through the real aws CLI to real sshd."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ssmfab.sandbox import Sandbox

from .conftest import new_active_sessions

SSMFAB = [sys.executable, "-m", "ssmfab.program"]


def ssmfab(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SSMFAB, *args], capture_output=True, text=True, env=env, timeout=timeout, check=False)


def run_in_pty(argv: list[str], timeout: float = 120) -> tuple[int, str]:
    """Run ``argv`` with a pseudo-terminal as its stdin, stdout and stderr; its exit code and all it wrote."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(argv, stdin=follower, stdout=follower, stderr=follower, env=dict(os.environ))
    os.close(follower)
    seen = bytearray()
    try:
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: every holder of the terminal's other end has closed it
                break
            if not chunk:
                break
            seen += chunk
        code = process.wait(timeout=timeout)
    finally:
        os.close(leader)
        if process.poll() is None:
            process.kill()
            process.wait()
    return code, seen.decode(errors="replace").replace("\r\n", "\n")


def assert_one_line_error(done: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    assert done.returncode == code, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    error_lines = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1, done.stderr
    for needle in needles:
        assert needle in error_lines[0], error_lines[0]


def test_hosts_table(sandbox_env: dict[str, str]) -> None:
    done = ssmfab("hosts", "--tag", "web", env=dict(os.environ))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["ID", "NAME", "STATE", "SSM", "IP", "TAGS"]
    assert [line.split()[1] for line in lines[2:5]] == ["web-1", "web-2", "web-3"]
    assert all("running" in line and "Online" in line and "Role=web" in line for line in lines[2:5])
    assert "3 reachable, 0 skipped" in done.stdout


def test_run_prefixes_output_and_summarises(sandbox: Sandbox, sandbox_env: dict[str, str]) -> None:
    command = "echo hi from $(basename $(dirname $HOME)); echo oops >&2"
    done = ssmfab("run", "--tag", "web", "--parallel", "2", command, env=dict(os.environ))
    assert done.returncode == 0, done.stderr
    names = ["web-1", "web-2", "web-3"]
    lines = done.stdout.splitlines()
    # Hosts finish in any order, but every line is whole and carries its own host's prefix, and nothing else
    # comes before the table.
    assert sorted(lines[:3]) == [f"[{n}] hi from {n}" for n in names]
    assert lines[3].split() == ["HOST", "NAME", "STATUS", "EXIT", "TIME"]
    assert set(lines[4]) <= {"-", " "}
    rows = [line.split() for line in lines[5:8]]
    assert [row[1:4] for row in rows] == [[n, "ok", "0"] for n in names]
    assert [row[0] for row in rows] == [sandbox.host(n).instance_id for n in names]
    assert all(re.fullmatch(r"\d+\.\d\ds", row[4]) for row in rows), rows
    assert lines[8:] == ["3 ok, 0 failed"]
    # stderr: each host's own stderr line, prefixed, and the first-use pin notices; nothing more.
    errors = done.stderr.splitlines()
    assert sorted(e for e in errors if e.startswith("[")) == [f"[{n}] oops" for n in names]
    others = [e for e in errors if not e.startswith("[")]
    assert sorted(e.split(":")[0] for e in others) == sorted(sandbox.host(n).instance_id for n in names)
    assert all(": first connection, pinned host key ssh-ed25519 SHA256:" in e for e in others), others


def test_run_exit_code_is_non_zero_when_a_host_fails(sandbox_env: dict[str, str]) -> None:
    done = ssmfab("run", "--name", "web-1", "--name", "db-1", "exit 4", env=dict(os.environ))
    assert_one_line_error(done, 1, "2 of 2 hosts failed", "exited 4")
    assert "0 ok, 2 failed" in done.stdout


@pytest.mark.parametrize(
    ("args", "code", "needles"),
    [
        (["run", "--id", "i-nothex", "true"], 2, ["bad instance id 'i-nothex'"]),
        (["run", "--tag", "Role=", "true"], 2, ["no value given"]),
        (["run", "true"], 2, ["no hosts selected"]),
        (["run", "--tag", "Role=cache", "true"], 3, ["--tag Role=cache", "us-east-1"]),
        (["run", "--tag", "web", "--parallel", "zero", "true"], 2, ["--parallel 'zero'"]),
        (["run", "--tag", "web", "--tunnel", "carrier", "true"], 2, ["tunnel.mode 'carrier'"]),
    ],
)
def test_bad_input_is_one_line_and_non_zero(sandbox_env: dict[str, str], args: list[str], code: int, needles: list[str]) -> None:
    assert_one_line_error(ssmfab(*args, env=dict(os.environ)), code, *needles)


def test_missing_plugin(sandbox_env: dict[str, str], tmp_path: Path) -> None:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if not (Path(p) / "session-manager-plugin").exists())
    done = ssmfab("run", "--name", "web-1", "true", env=env)
    assert_one_line_error(done, 1, "session-manager-plugin not found", "install")


def test_missing_plugin_fails_every_host_and_leaves_no_session(sandbox_env: dict[str, str], sessions_before: set[str]) -> None:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if not (Path(p) / "session-manager-plugin").exists())
    done = ssmfab("run", "--tag", "web", "true", env=env)
    # One cause shared by every host: said once, in the error line that names the hosts.
    assert_one_line_error(done, 1, "3 of 3 hosts failed", "web-1", "web-2", "web-3")
    assert done.stderr.count("session-manager-plugin not found") == 1, done.stderr
    assert not [line for line in done.stderr.splitlines() if line.startswith("FAILED")], done.stderr
    # The plugin check overlaps StartSession: sessions started meanwhile are ended again.
    assert new_active_sessions(sandbox_env, sessions_before) == set()


def test_too_old_plugin(sandbox_env: dict[str, str], tmp_path: Path) -> None:
    old = tmp_path / "bin" / "session-manager-plugin"
    old.parent.mkdir()
    old.write_text("#!/bin/sh\necho 1.1.17.0\n")
    old.chmod(0o755)
    env = dict(os.environ, PATH=f"{old.parent}{os.pathsep}{os.environ['PATH']}")
    done = ssmfab("run", "--name", "web-1", "true", env=env)
    assert_one_line_error(done, 1, "1.1.17.0 is too old", ">= 1.1.23.0")


def test_missing_credentials(sandbox_env: dict[str, str]) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    done = ssmfab("hosts", "--tag", "web", env=env)
    assert_one_line_error(done, 1, "no AWS credentials", "aws configure")


def test_unreachable_host_fails_alone_with_exit_1(sandbox: Sandbox, sandbox_env: dict[str, str]) -> None:
    sandbox.stop_host("web-2")
    try:
        done = ssmfab("run", "--tag", "web", "echo ok", env=dict(os.environ))
    finally:
        sandbox.start_host("web-2")
    assert_one_line_error(done, 1, "1 of 3 hosts failed", "web-2")
    assert "[web-1] ok" in done.stdout and "[web-3] ok" in done.stdout
    assert "2 ok, 1 failed" in done.stdout


def test_json_report_lists_every_host_when_one_is_down(sandbox: Sandbox, sandbox_env: dict[str, str]) -> None:
    sandbox.stop_host("web-1")
    try:
        done = ssmfab("run", "--tag", "web", "--json", "echo ok", env=dict(os.environ))
    finally:
        sandbox.start_host("web-1")
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert (report["ok"], report["failed"], report["not_started"]) == (2, 1, 0)
    by_name = {h["name"]: h for h in report["hosts"]}
    assert set(by_name) == {"web-1", "web-2", "web-3"}
    assert by_name["web-1"]["status"] == "failed" and "web-1" in by_name["web-1"]["error"]
    assert by_name["web-2"]["stdout"] == "ok\n" and by_name["web-2"]["exit_code"] == 0


def test_batches_and_failure_budget_stop_where_they_should(sandbox_env: dict[str, str]) -> None:
    # Batches of 2 in name order (db-1, web-1 | web-2, web-3); db-1 fails; with no failure tolerated
    # the second batch never starts.
    command = 'test "$(basename $(dirname $HOME))" != db-1'
    done = ssmfab("run", "--name", "*", "--batch", "2", "--max-failures", "0", "--json", command, env=dict(os.environ))
    report = json.loads(done.stdout)
    statuses = {h["name"]: h["status"] for h in report["hosts"]}
    assert statuses == {"db-1": "failed", "web-1": "ok", "web-2": "skipped", "web-3": "skipped"}
    assert done.returncode == 1
    # 25% of 4 hosts tolerates one failure: everything runs.
    done = ssmfab("run", "--name", "*", "--batch", "2", "--max-failures", "25%", "--json", command, env=dict(os.environ))
    assert [h["status"] for h in json.loads(done.stdout)["hosts"]] == ["failed", "ok", "ok", "ok"]


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["run", "--tag", "web", "true", "--no-such-flag"], 2, "error: run: unknown option '--no-such-flag'"),
        (["deploy", "--tag", "web", "--artifact", "/nonexistent/app.tgz"], 2, "artifact /nonexistent/app.tgz does not exist"),
        (["deploy", "--tag", "web"], 2, "no artifact to deploy"),
        (["run", "--tag", "web", "--batch", "half", "true"], 2, "--batch 'half'"),
        (["run", "--tag", "web", "--batch", "0", "true"], 2, "--batch 0: a batch needs at least 1 host (leave --batch out to run all at once)"),
        (["fetch-logs", "web-1", "--since", "yesterday"], 2, "--since 'yesterday'"),
        (["put", "/nonexistent/file", "x", "--tag", "web"], 2, "/nonexistent/file: no such local file"),
    ],
)
def test_bad_fleet_input(sandbox_env: dict[str, str], args: list[str], code: int, needle: str) -> None:
    done = ssmfab(*args, env=dict(os.environ))
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr
    assert needle in done.stderr


def test_fetch_logs_refuses_dotdot_paths(sandbox_env: dict[str, str], tmp_path: Path) -> None:
    done = ssmfab("fetch-logs", "web-1", "--path", "../../etc/hostname", "--dest", str(tmp_path / "logs"), env=dict(os.environ))
    assert done.returncode == 1
    assert "would land outside" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "etc").exists()


def test_put_and_get_tasks(sandbox_env: dict[str, str], tmp_path: Path) -> None:
    tree = tmp_path / "site"
    (tree / "css").mkdir(parents=True)
    (tree / "index.html").write_text("<h1>hi</h1>\n")
    (tree / "css" / "app.css").write_text("body{}\n")
    done = ssmfab("put", str(tree), "uploads/", "--tag", "web", env=dict(os.environ))
    assert done.returncode == 0, done.stderr
    done = ssmfab("get", "uploads/site/*.html", "--dest", str(tmp_path / "back"), "--tag", "web", env=dict(os.environ))
    assert done.returncode == 0, done.stderr
    copies = sorted(p.relative_to(tmp_path / "back").as_posix() for p in (tmp_path / "back").rglob("index.html"))
    assert len(copies) == 3 and all(c.startswith("i-") for c in copies)


def test_per_host_timeout_cuts_a_hung_host(sandbox_env: dict[str, str]) -> None:
    # The timeout is what is tested, so it must pass; it is set far above what a healthy host takes on a
    # busy machine (well under a second here), so only the hung host can reach it.
    done = ssmfab("run", "--name", "web-*", "--timeout", "15", "--json",
                  'if [ "$(basename $(dirname $HOME))" = web-2 ]; then exec sleep 600; fi; echo done', env=dict(os.environ))  # fmt: skip
    report = json.loads(done.stdout)
    statuses = {h["name"]: (h["status"], h["error"]) for h in report["hosts"]}
    assert statuses["web-1"] == ("ok", None) and statuses["web-3"] == ("ok", None)
    assert statuses["web-2"][0] == "failed"
    [hung] = [h for h in report["hosts"] if h["name"] == "web-2"]
    assert hung["error"] == f"web-2 ({hung['instance_id']}): timed out after 15s (--timeout)"
    assert hung["duration"] >= 15 and hung["exit_code"] is None
    assert done.returncode == 1


@pytest.mark.parametrize("mode", ["plugin", "cli"])
def test_shell_runs_a_command_through_openssh(mode: str, sandbox_env: dict[str, str]) -> None:
    # Under a terminal, as users run it: the remote command gets a terminal of its own (ssh -t).
    code, seen = run_in_pty([*SSMFAB, "shell", "web-3", "--tunnel", mode, "--cmd", "echo from-shell; tty"])
    assert code == 0, seen
    lines = [line.strip() for line in seen.splitlines() if line.strip()]
    assert "from-shell" in lines, seen
    assert any(re.fullmatch(r"/dev/pts/\d+", line) for line in lines), seen
    assert "Traceback" not in seen and "not a tty" not in seen
    # Without a terminal (a script's pipes), the command still runs, and says it has none.
    done = ssmfab("shell", "web-3", "--tunnel", mode, "--cmd", "echo from-shell; tty || true", env=dict(os.environ))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["from-shell", "not a tty"], (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    assert Path(sandbox_env["SSMFAB_KNOWN_HOSTS"]).read_text().startswith("i-")  # ssh pinned it in ssmfab's file
    done = ssmfab("shell", "Role=web", "--cmd", "true", env=dict(os.environ))
    assert done.returncode == 2 and "matches 3 hosts" in done.stderr


@pytest.mark.parametrize("mode", ["plugin", "cli"])
def test_generated_ssh_config_makes_plain_ssh_and_scp_work(
    sandbox: Sandbox, sandbox_env: dict[str, str], tmp_path: Path, mode: str
) -> None:
    config = tmp_path / "ssh_config"
    done = ssmfab("ssh-config", "--tunnel", mode, "--install", "--file", str(config), env=dict(os.environ))
    assert done.returncode == 0, done.stderr
    assert ("ssmfab.proxy" in config.read_text()) == (mode == "plugin")
    host = sandbox.host("web-1").instance_id
    ssh = subprocess.run(["ssh", "-F", str(config), "-o", "BatchMode=yes", "-i", sandbox_env["SSMFAB_KEY"], host, "echo via-ssh"],
                         capture_output=True, text=True, env=dict(os.environ), timeout=60, check=False)  # fmt: skip
    assert ssh.returncode == 0, ssh.stderr
    assert ssh.stdout.strip() == "via-ssh"
    (tmp_path / "f.txt").write_text("scp works\n")
    scp = subprocess.run(["scp", "-F", str(config), "-i", sandbox_env["SSMFAB_KEY"], str(tmp_path / "f.txt"), f"{host}:f.txt"],
                         capture_output=True, text=True, env=dict(os.environ), timeout=60, check=False)  # fmt: skip
    assert scp.returncode == 0, scp.stderr
    # ssh pinned the key in ssmfab's file, so ssmfab now trusts the host without a first-use notice.
    done = ssmfab("run", "--id", host, "cat f.txt", env=dict(os.environ))
    assert "scp works" in done.stdout and "first connection" not in done.stderr


def test_doctor_passes_on_the_sandbox_and_names_each_failure(sandbox: Sandbox, sandbox_env: dict[str, str]) -> None:
    done = ssmfab("doctor", "--tag", "web", env=dict(os.environ))
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    for name in ("session-manager-plugin", "AWS region", "AWS credentials", "SSH session document"):
        assert any(line.startswith("PASS") and f"{name}:" in line for line in lines), name
    assert not any("aws CLI:" in line for line in lines)  # the default plugin tunnel does not need it
    assert sum(line.startswith("PASS  web-") for line in lines) == 3
    cli_mode = ssmfab("doctor", "--tag", "web", "--tunnel", "cli", env=dict(os.environ))
    assert cli_mode.returncode == 0 and any(line.startswith("PASS") and "aws CLI:" in line for line in cli_mode.stdout.splitlines())
    sandbox.set_agent_status("web-2", "Online", agent_version="2.3.100.0")
    sandbox.set_agent_status("web-3", "ConnectionLost")
    try:
        done = ssmfab("doctor", "--tag", "web", env=dict(os.environ))
    finally:
        sandbox.set_agent_status("web-2", "Online")
        sandbox.set_agent_status("web-3", "Online")
    assert done.returncode == 1
    failures = [line for line in done.stdout.splitlines() if line.startswith("FAIL")]
    assert len(failures) == 2
    assert any("web-2" in f and "2.3.100.0 is too old" in f and "fix:" in f for f in failures)
    assert any("web-3" in f and "ConnectionLost" in f for f in failures)


def test_doctor_without_plugin_or_credentials(sandbox_env: dict[str, str]) -> None:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if not (Path(p) / "session-manager-plugin").exists())
    del env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
    done = ssmfab("doctor", env=env)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert any(line.startswith("FAIL  session-manager-plugin") for line in done.stdout.splitlines())
    assert any(line.startswith("FAIL  AWS credentials") and "fix:" in line for line in done.stdout.splitlines())


def test_strict_host_keys_flag_refuses_unpinned_hosts(sandbox_env: dict[str, str]) -> None:
    done = ssmfab("run", "--name", "web-1", "--strict-host-keys", "true", env=dict(os.environ))
    assert done.returncode == 1 and "is not pinned and strict host keys are on" in done.stderr
    assert ssmfab("run", "--name", "web-1", "true", env=dict(os.environ)).returncode == 0  # pins it
    assert ssmfab("run", "--name", "web-1", "--strict-host-keys", "true", env=dict(os.environ)).returncode == 0
    listed = ssmfab("known-hosts", env=dict(os.environ))
    assert listed.returncode == 0 and "ssh-ed25519" in listed.stdout and "SHA256:" in listed.stdout


@pytest.mark.parametrize("where", [None, "s3", "cloudwatch"])
def test_run_command_output_past_the_inline_limit(sandbox_env: dict[str, str], where: str | None) -> None:
    import boto3

    extra: list[str] = []
    if where == "s3":
        boto3.client("s3", endpoint_url=sandbox_env["AWS_ENDPOINT_URL"], region_name="us-east-1").create_bucket(Bucket="ssmfab-output")
        extra = ["--output-s3-bucket", "ssmfab-output"]
    elif where == "cloudwatch":
        extra = ["--cloudwatch-output"]
    done = ssmfab("run", "--name", "db-1", "--via", "run-command", "--json", *extra,
                  "printf '%60000s' | tr ' ' x; echo", env=dict(os.environ))  # fmt: skip
    assert done.returncode == 0, done.stderr
    [host] = json.loads(done.stdout)["hosts"]
    if where is None:
        assert len(host["stdout"]) == 24000 and host["truncated"] is True
    else:
        assert host["stdout"] == "x" * 60000 + "\n"


def test_past_max_failures_no_new_host_starts(sandbox: Sandbox, sandbox_env: dict[str, str], tmp_path: Path) -> None:
    # One host at a time, each failing at once: with a budget of 0 failures the first failure ends the run.
    # Every host that starts leaves a marker in its home, so the count does not depend on timing.
    marker = f"started-{tmp_path.name}"
    try:
        done = ssmfab(
            "run", "--name", "*", "--parallel", "1", "--max-failures", "0", f"touch {marker}; exit 5",
            env=dict(os.environ),
        )  # fmt: skip
        started = [h.name for h in sandbox.hosts if (Path(h.folder) / "home" / marker).exists()]
    finally:
        for h in sandbox.hosts:
            (Path(h.folder) / "home" / marker).unlink(missing_ok=True)
    assert len(started) == 1, (started, done.stdout, done.stderr)
    assert_one_line_error(done, 1, "1 of 4 hosts failed (3 not started)", f"{started[0]} (i-", "exited 5")
