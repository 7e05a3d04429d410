"""The benchmark's rows through AWS's plugin: which plugin they run, that they are skipped with the reason when
there is none, and that the OpenSSH fleet baseline really runs one ssh per host and fails when one does."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.__main__ import main  # noqa: E402
from bench.measure import run_measured  # noqa: E402
from bench.real_plugin import NO_PLUGIN, find_plugin, parallel_ssh  # noqa: E402
from ssmfab.exceptions import SandboxError  # noqa: E402
from ssmfab.sandbox.local_fleet import PLUGIN_ENV_VAR  # noqa: E402


def program(path: Path) -> Path:
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


def test_the_plugin_named_wins_then_the_environment_then_the_shared_copy(tmp_path: Path) -> None:
    named, from_env, shared = (program(tmp_path / n) for n in ("named", "from-env", "shared"))
    env = {PLUGIN_ENV_VAR: str(from_env)}
    assert find_plugin(str(named), env, shared) == str(named)
    assert find_plugin(None, env, shared) == str(from_env)
    assert find_plugin(None, {}, shared) == str(shared)
    assert find_plugin(None, {PLUGIN_ENV_VAR: "  "}, shared) == str(shared)
    assert find_plugin(None, {}, tmp_path / "absent") == ""
    assert find_plugin("", env, shared) == ""  # --plugin '': none, whatever else is there


def test_a_plugin_named_that_is_not_a_program_is_an_error_not_a_skip(tmp_path: Path) -> None:
    not_executable = tmp_path / "plugin"
    not_executable.write_text("")
    for named, env in ((str(tmp_path / "absent"), {}), (None, {PLUGIN_ENV_VAR: str(not_executable)})):
        with pytest.raises(SandboxError, match="no session-manager-plugin program there"):
            find_plugin(named, env, tmp_path / "absent")


def test_without_a_plugin_the_real_rows_are_skipped_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The other rows' plugin setting is not read when only the real rows run (and `--plugin ''` overrides it).
    monkeypatch.setenv(PLUGIN_ENV_VAR, str(tmp_path / "absent"))
    out = tmp_path / "results"
    assert main(["--rows", "real", "--repeat", "1", "--plugin", "", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "skipped" in printed and NO_PLUGIN in printed
    (row,) = json.loads((out / "latest.json").read_text())["rows"]
    assert row["skipped"] == NO_PLUGIN
    assert "--plugin PATH" in NO_PLUGIN and PLUGIN_ENV_VAR in NO_PLUGIN


def test_a_bad_plugin_option_ends_in_one_line_and_no_results(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "results"
    assert main(["--rows", "real", "--plugin", str(tmp_path / "absent"), "--out", str(out)]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [f"bench: {tmp_path / 'absent'}: no session-manager-plugin program there"]
    assert not out.exists()


@pytest.mark.skipif(shutil.which("xargs") is None, reason="needs xargs")
def test_the_ssh_baseline_runs_one_ssh_per_host_in_parallel_and_fails_when_one_does(tmp_path: Path) -> None:
    # A stand-in for ssh that records its arguments, one file per call, and fails for one instance id.
    calls = tmp_path / "calls"
    calls.mkdir()
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    ssh = fake_bin / "ssh"
    ssh.write_text(
        '#!/bin/sh\nprintf "%s\\n" "$@" > "$CALLS/$$"\ncase "$*" in *i-bad*) exit 255;; esac\nexit 0\n'
    )
    ssh.chmod(0o755)
    env = {"PATH": f"{fake_bin}{os.pathsep}/usr/bin:/bin", "CALLS": str(calls)}
    options = ["-i", "key file", "-o", "ProxyCommand=ssmfab-proxy %h %p"]
    ids = [f"i-{n:017x}" for n in range(1, 6)]
    hosts = tmp_path / "hosts.txt"
    hosts.write_text("".join(f"{i}\n" for i in ids))

    argv = parallel_ssh(options, "ec2-user", hosts, 5)
    assert argv[:7] == ["xargs", "-a", str(hosts), "-P", "5", "-I", "{}"]
    done = run_measured(argv, env)
    assert done.returncode == 0, done.stderr_tail
    seen = sorted(call.read_text().splitlines() for call in calls.iterdir())
    assert seen == [["-i", "key file", "-o", "ProxyCommand=ssmfab-proxy %h %p", f"ec2-user@{i}", "true"] for i in ids]

    hosts.write_text("".join(f"{i}\n" for i in [*ids, "i-bad"]))
    assert run_measured(parallel_ssh(options, "ec2-user", hosts, 5), env).returncode != 0
