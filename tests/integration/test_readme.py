"""The README's library example runs, unmodified, against the sandbox."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def test_library_example_runs_against_the_sandbox(sandbox_env: dict[str, str]) -> None:
    section = README.read_text().split("## Library use", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    done = subprocess.run(
        [sys.executable, "-c", code.group(1)], capture_output=True, text=True, env=dict(os.environ), timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("Linux")
    assert [line.split()[0] for line in lines[-3:]] == ["web-1", "web-2", "web-3"]
    assert all(" ok " in line and "load average" in line for line in lines[-3:])


def test_library_transfer_example_runs_against_the_sandbox(sandbox_env: dict[str, str], tmp_path: Path) -> None:
    section = README.read_text().split("## Library use", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 2
    done = subprocess.run(
        [sys.executable, "-c", blocks[1]],
        capture_output=True,
        text=True,
        env={**os.environ, "TMPDIR": str(tmp_path)},
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    sent, pulled = done.stdout.splitlines()[-2:]
    remote, digest, buffer, files = sent.split(" ")
    assert remote.endswith("/releases/app.conf") and len(digest) == 12 and buffer == "b'key=2\\n'" and files == "2"
    assert pulled.count("app.conf") == 3 and "override.conf" in pulled
