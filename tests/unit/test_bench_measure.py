"""The benchmark's measuring stick: wall time and the peak memory of a whole process tree, orphans included."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.measure import become_subreaper, run_measured, tree  # noqa: E402

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")


@pytest.mark.parametrize("sample_memory", [True, False], ids=["sampled", "timed"])
def test_memory_of_children_counts_and_orphans_are_ended(tmp_path: Path, sample_memory: bool) -> None:
    become_subreaper()
    marker = tmp_path / "orphan-alive"
    script = (
        # a child that allocates ~80 MiB, and a grandchild orphaned in the background that would outlive us
        f"(sleep 30; touch {marker}) >/dev/null 2>&1 & "
        f"{sys.executable} -c 'b = bytearray(80 * 1024 * 1024); import time; time.sleep(0.5)'"
    )
    measured = run_measured(["sh", "-c", script], {"PATH": "/usr/bin:/bin"}, sample_memory=sample_memory)
    assert measured.returncode == 0
    if sample_memory:
        assert measured.peak_mib is not None and measured.peak_mib >= 70
    else:
        assert measured.peak_mib is None  # a timed run is not watched
    assert measured.seconds >= 0.5
    # The orphaned `sleep 30` was ended with the run: it never gets to touch its marker.
    assert not any(
        b"sleep\x0030" in Path(f"/proc/{pid}/cmdline").read_bytes() for pid in tree(os.getpid(), os.getpid(), set()) - {os.getpid()}
    )


def test_a_failing_command_reports_its_exit_and_stderr() -> None:
    measured = run_measured(["sh", "-c", "echo boom >&2; exit 3"], {"PATH": "/usr/bin:/bin"})
    assert measured.returncode == 3
    assert "boom" in measured.stderr_tail


class EnvOnlySandbox:
    """What Bench reads of a sandbox to run a pair: its environment (no fleet is needed to run `sh`)."""

    def env(self) -> dict[str, str]:
        return {"PATH": "/usr/bin:/bin"}


@pytest.mark.parametrize("quick", [False, True], ids=["slow pair", "quick pair"])
def test_a_pair_alternates_its_commands_and_a_quick_pair_more_often(tmp_path: Path, quick: bool) -> None:
    from bench.cases import QUICK_ROUNDS, Bench
    from ssmfab.sandbox import LinkModel

    order = tmp_path / "order"
    bench = Bench(EnvOnlySandbox(), tmp_path, 2, LinkModel.parse("off"))  # type: ignore[arg-type]
    ours, theirs = (("ours", lambda: ["sh", "-c", f"echo ours >> {order}"]), ("theirs", lambda: ["sh", "-c", f"echo theirs >> {order}"]))
    sides = bench.pair("row", ours, theirs, quick=quick)
    rounds = 2 * (QUICK_ROUNDS if quick else 1)
    assert [len(side.runs) for side in sides] == [rounds, rounds]
    assert [len(side.watched) for side in sides] == [1, 1]
    ran = order.read_text().split()
    timed = ran[2:]
    assert len(timed) == 2 * rounds
    # Theirs first on even rounds, ours first on odd ones: neither always runs on a machine the other warmed.
    assert timed[:4] == ["theirs", "ours", "ours", "theirs"]
