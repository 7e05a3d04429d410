"""The shared-flag plumbing between invoke and the task bodies."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import threading
from dataclasses import fields
from pathlib import Path

import pytest

from ssmfab.cli import CLI_SWITCH_INTERVAL, FLAG_GROUPS, FLAG_HELP, Flags, loose_selector, notice
from ssmfab.config import Settings
from ssmfab.exceptions import ConfigError
from ssmfab.tasks import ns


def test_every_shared_flag_is_a_field_with_help() -> None:
    names = {n for group in FLAG_GROUPS.values() for n in group}
    # clients: a keeper's; head_starts: the run's early tunnels (see headstart). Neither is a flag.
    assert {f.name for f in fields(Flags)} - {"clients", "head_starts"} == names
    assert names <= set(FLAG_HELP)


def test_tasks_expose_the_shared_flags() -> None:
    run = ns["run"]
    params = [a.name for a in run.get_arguments()]
    for flag in ("id", "name", "tag", "region", "profile", "user", "key", "tunnel", "parallel", "batch", "json"):
        assert flag in params
    assert [a.name for a in run.get_arguments() if a.positional] == ["command"]
    assert not any(a.name in ("batch", "parallel") for a in ns["hosts"].get_arguments())


def test_positional_target_forms() -> None:
    assert loose_selector("i-0123456789abcdef0") == {"id": ("i-0123456789abcdef0",)}
    assert loose_selector("Role=web") == {"tag": ("Role=web",)}
    assert loose_selector("web-*") == {"name": ("web-*",)}
    assert loose_selector(None) == {}


class ThreadSwitchingStream(io.StringIO):
    """A stderr whose write runs Python code, so another thread may run between two writes (as a real
    stderr's flush lets it)."""

    def write(self, text: str) -> int:
        sum(range(3))
        return super().write(text)


def test_parallel_reaches_the_client_settings_and_bad_values_name_the_flag() -> None:
    assert Flags(parallel="50").client().settings.run.parallel == 50
    assert Flags().client().settings.run.parallel == Settings().run.parallel  # not given: config's (the default)
    with pytest.raises(ConfigError, match="--parallel must be at least 1, got 0"):
        Flags(parallel="0").client()
    with pytest.raises(ConfigError, match="--parallel 'x': expected a whole number"):
        Flags(parallel="x").client()


def test_notices_from_many_threads_stay_whole_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = ThreadSwitchingStream()
    monkeypatch.setattr(sys, "stderr", stream)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible

    def speak(n: int) -> None:
        for m in range(300):
            notice(f"i-{n:08x}: message {m} " + "x" * 40)

    threads = [threading.Thread(target=speak, args=(n,)) for n in range(8)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 8 * 300
    assert all(re.fullmatch(r"i-[0-9a-f]{8}: message \d+ x{40}", line) for line in lines)


def printed_around_the_program(argv: list[str], after: str, *, before: str = "", env: dict[str, str] | None = None) -> list[str]:
    """The lines a fresh interpreter prints running ``before``, then ``ssmfab ARGV`` (its own exit caught), then
    ``after``: each test's view of the process the program leaves behind."""
    script = (
        f"import sys\n{before}"
        "from ssmfab import program\n"
        f"sys.argv = {['ssmfab', *argv]!r}\n"
        f"try:\n    program.main()\nexcept SystemExit:\n    pass\n{after}"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env, check=True)
    return done.stdout.splitlines()


def test_the_program_starts_without_the_collector_and_selection_brings_it_back() -> None:
    lines = printed_around_the_program(
        ["--version"],
        "import gc\n"
        "print('off' if not gc.isenabled() else 'on')\n"
        "from ssmfab.cli import startup_over\n"
        "startup_over()\n"
        "print('on' if gc.isenabled() else 'off', gc.get_freeze_count() > 1000)\n",
    )
    assert lines[-2:] == ["off", "on True"]


def test_the_program_loads_no_unittest_mock_until_a_mock_is_built() -> None:
    # invoke.context imports unittest.mock (and with it asyncio) for MockContext; the program defers that
    # import to the first Mock built, and a later `import unittest.mock` still gets the real module.
    lines = printed_around_the_program(
        ["--list"],
        "print(sorted(m for m in ('asyncio', 'unittest', 'unittest.mock') if m in sys.modules))\n"
        "from invoke import MockContext\n"
        "context = MockContext(run={'uptime': 'up 3 days'})\n"
        "import unittest.mock\n"
        "print(context.run('uptime').stdout, isinstance(context.run, unittest.mock.Mock))\n",
    )
    assert lines[-2:] == ["[]", "up 3 days True"]


def test_the_program_loads_no_yaml_parser_until_a_yaml_file_is_read(tmp_path: Path) -> None:
    # invoke binds its YAML parser at import for invoke.yaml config files; the program defers loading it to
    # the first such file, which still loads, and a later `import invoke.vendor.yaml` gets the real module.
    config = tmp_path / "runtime.yaml"
    config.write_text("run:\n  echo: true\nssmfab_probe: [1, 2]\n")
    lines = printed_around_the_program(
        ["--list"],
        "print([m for m in sys.modules if 'yaml' in m])\n"
        "from invoke import Config\n"
        f"config = Config(runtime_path={str(config)!r})\n"
        "config.load_runtime()\n"
        "import invoke.vendor.yaml\n"
        "print(config.run.echo, config.ssmfab_probe, invoke.vendor.yaml.safe_load('a: 1'))\n",
    )
    assert lines[-2:] == ["[]", "True [1, 2] {'a': 1}"]


def test_command_line_runs_hand_the_gil_over_sooner(tmp_path: Path) -> None:
    # A task run from the command line (here `audit`, which needs no AWS) sets the interpreter's switch interval;
    # importing ssmfab alone leaves it as it was.
    lines = printed_around_the_program(
        ["audit"],
        "print(sys.getswitchinterval())\n",
        before="import ssmfab.tasks\nprint(sys.getswitchinterval())\n",
        env={**os.environ, "SSMFAB_AUDIT_PATH": str(tmp_path / "audit.jsonl")},
    )
    assert float(lines[0]) == 0.005 and float(lines[-1]) == CLI_SWITCH_INTERVAL
