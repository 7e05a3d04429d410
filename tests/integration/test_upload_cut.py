"""A small upload (sent over SFTP, below the streamed cut-over) whose SSM data channel drops mid-file: once the
host sees the connection end, no temporary file of it is left in the destination folder, and the next
upload into that folder finds nothing stray."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from ssmfab.client import Client
from ssmfab.exceptions import TransferError
from ssmfab.sandbox import Sandbox
from ssmfab.transfer import STREAM_MIN_BYTES, put
from tests.integration import test_transfer as helpers
from ..waiting import wait_until

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")

#: Seconds the host may take to notice the ended session (a safety net: the test waits for the file to go).
PATIENCE = 60
#: Below STREAM_MIN_BYTES: the SFTP path, which no host program watches.
SMALL = 3 << 20
#: A folder name a careless remote shell would act on.
HOSTILE_FOLDER = "cut $(touch pwned) `touch pwned` 'q\" ; x\nline"


def temps_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".ssmfab-" in p.name) if folder.is_dir() else []


def test_a_small_upload_cut_by_a_dropped_channel_leaves_no_temporary_file(
    client: Client, sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert SMALL < STREAM_MIN_BYTES
    name = "web-2"
    home = helpers.home_of(sandbox, name)
    folder = home / HOSTILE_FOLDER
    shutil.rmtree(folder, ignore_errors=True)  # an earlier failed run's
    source = tmp_path / "small.bin"
    source.write_bytes(os.urandom(SMALL))
    remote = f"{HOSTILE_FOLDER}/"
    dropped_before = len(sandbox.events("WebSocketDropped", name))

    def drop_the_data_channel() -> None:
        sandbox.set_faults(name, RefuseResume=True, DropAfterBytes=0)
        sandbox.wait_for_event("WebSocketDropped", name, count=dropped_before + 1)

    [target] = client.targets(names=[name])
    conn = client.connect(target)
    try:
        # The drop comes once part of the file reached the host's temporary file, whatever the machine's speed.
        cut = helpers.mid_transfer(monkeypatch, helpers.grown(folder, ".small.bin.ssmfab-*.part", 0), drop_the_data_channel)
        with pytest.raises(TransferError, match=r"upload to .* failed, nothing left half-written") as err:
            put(conn, str(source), remote)
        assert cut.is_set()
    finally:
        conn.close()
        sandbox.clear_faults(name)
    assert "\n" not in str(err.value).replace(HOSTILE_FOLDER, "")
    assert not (folder / "small.bin").exists()
    wait_until(lambda: temps_in(folder) == [], f"the temporary file of the cut upload removed on {name}")
    assert not (home / "pwned").exists()

    # Reachable again: the next upload into the folder arrives and leaves nothing beside it (the drop hook
    # fired once and stays quiet).
    with client.connect(target) as again:
        report = put(again, str(source), remote)
    assert report.files == 1
    assert (folder / "small.bin").read_bytes() == source.read_bytes()
    assert temps_in(folder) == []
    (folder / "small.bin").unlink()
    folder.rmdir()
