"""The ``ssmfab`` program accepts only what it honours: invoke's own flags are refused, ``--help`` anywhere
after a task shows help, ``--`` ends options, one task per command. Each case runs the real program against
the sandbox fleet and checks that nothing ran on any host: no marker file, no audit record."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SSMFAB = [sys.executable, "-m", "ssmfab.program"]


@pytest.fixture
def audited(sandbox_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ, SSMFAB_AUDIT_PATH=str(tmp_path / "audit.jsonl"))
    return env


def ssmfab(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SSMFAB, *args], capture_output=True, text=True, env=env, timeout=120, check=False,
                          stdin=subprocess.DEVNULL)  # fmt: skip


def assert_nothing_ran(env: dict[str, str], marker: Path) -> None:
    # The sandbox's hosts share this machine's file system: a command that ran would have made the marker.
    assert not marker.exists(), "a command ran on a host"
    audit = Path(env["SSMFAB_AUDIT_PATH"])
    assert not audit.exists() or audit.read_text() == "", audit.read_text()


@pytest.mark.parametrize(
    ("before", "after", "flag"),
    [
        (["--dry"], [], "--dry"),
        ([], ["--warn-only"], "--warn-only"),
        (["-w"], [], "--warn-only"),
        (["-T", "5"], [], "--command-timeout"),
        ([], ["--echo"], "--echo"),
        (["--pty"], [], "--pty"),
        ([], ["--hide", "both"], "--hide"),
        (["--config", "x.yaml"], [], "--config"),
    ],
)
def test_invoke_flags_are_refused_and_nothing_runs(
    audited: dict[str, str], tmp_path: Path, before: list[str], after: list[str], flag: str
) -> None:
    marker = tmp_path / "ran"
    done = ssmfab(audited, *before, "run", "--tag", "web", *after, f"touch {marker}")
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [f"error: {flag} is an invoke option that ssmfab does not honour: nothing was run"]
    assert_nothing_ran(audited, marker)


@pytest.mark.parametrize(
    "words",
    [
        ["--tag", "web", "--help"],
        ["--tag", "web", "{touch}", "--help"],
        ["--help", "--tag", "web", "{touch}"],
        ["--tag", "web", "-h", "{touch}"],
        ["--help"],
        ["-h"],
        ["--env", "X=1", "--tag", "web", "{touch}", "-h"],
    ],
)
def test_help_after_the_task_shows_its_help_and_runs_nothing(audited: dict[str, str], tmp_path: Path, words: list[str]) -> None:
    marker = tmp_path / "ran"
    done = ssmfab(audited, "run", *[w.replace("{touch}", f"touch {marker}") for w in words])
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "Usage: ssmfab run [--options] COMMAND"
    assert "--ephemeral-key" in done.stdout and "--stdin" in done.stdout
    assert done.stderr == ""
    assert_nothing_ran(audited, marker)


def test_h_is_help_on_every_task_and_no_task_has_generated_short_flags(audited: dict[str, str]) -> None:
    for task in ("hosts", "put", "get", "deploy", "rollback", "fetch-logs", "shell", "iam-policy", "doctor"):
        done = ssmfab(audited, task, "-h")
        assert done.returncode == 0, (task, done.stderr)
        assert done.stdout.startswith(f"Usage: ssmfab {task} "), done.stdout
        options = [line.split()[0] for line in done.stdout.splitlines() if line.startswith("  -")]
        assert options and all(option.startswith("--") for option in options), (task, options)


def test_double_dash_ends_options(audited: dict[str, str], tmp_path: Path) -> None:
    done = ssmfab(audited, "run", "--name", "web-1", "--", "printf", "%s+%s\\\\n", "--help", "-h")
    assert done.returncode == 0, done.stderr
    assert "[web-1] --help+-h" in done.stdout.splitlines()
    # Positional arguments of other tasks, one word each.
    local = tmp_path / "-leading dash"
    local.write_text("payload\n")
    done = ssmfab(audited, "put", "--name", "web-1", "--", str(local), str(tmp_path / "landed"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "landed").read_text() == "payload\n"


@pytest.mark.parametrize(
    ("words", "message"),
    [
        (["run", "--tag", "web", "touch {marker}", "deploy"], "error: run: unexpected argument 'deploy'"),
        (["run", "--tag", "web", "touch", "{marker}"], "error: run: unexpected argument"),
        (["run", "--tag", "web", "-rf", "touch {marker}"], "error: run: unknown option '-rf'"),
        (["run", "--tag", "web", "--bogus", "touch {marker}"], "error: run: unknown option '--bogus'"),
        (["run", "--tag", "web", "touch {marker}", "--", "more"], "error: run: takes no more arguments"),
        (["--bogus", "run", "--tag", "web", "touch {marker}"], "error: unknown option '--bogus'"),
    ],
)
def test_misread_words_are_refused_and_nothing_runs(audited: dict[str, str], tmp_path: Path, words: list[str], message: str) -> None:
    marker = tmp_path / "ran"
    done = ssmfab(audited, *[w.replace("{marker}", str(marker)) for w in words])
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith(message), line
    assert_nothing_ran(audited, marker)


def test_inv_in_a_checkout_refuses_invoke_run_flags_and_help_as_a_command(audited: dict[str, str], tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    checkout = Path(__file__).resolve().parents[2]
    inv = [sys.executable, "-c", "import invoke.main, sys; sys.argv[0] = 'inv'; invoke.main.program.run()"]
    for words in (["--dry", "run", "--tag", "web", f"touch {marker}"], ["run", "--tag", "web", "--help"]):
        done = subprocess.run([*inv, *words], capture_output=True, text=True, env=audited, cwd=checkout, timeout=120, check=False)
        assert done.returncode == 2, done.stderr
        assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith("error: "), done.stderr
    assert_nothing_ran(audited, marker)
