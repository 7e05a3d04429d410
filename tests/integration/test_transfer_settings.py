"""transfer.compress and transfer.streams on the command line: a config file's and the environment's values
reach put, get and deploy's upload, and a flag wins over them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ssmfab.sandbox import Sandbox

SSMFAB = [sys.executable, "-m", "ssmfab.program"]
#: Streamed (4 MiB and more) and incompressible: left to decide, ssmfab sends it raw (it does not shrink), so
#: only compression asked for (by a setting or a flag) puts more bytes on the wire than the file holds.
DATA = os.urandom(5 * 1024 * 1024)


def ssmfab_json(*args: str, env: dict[str, str]) -> dict[str, object]:
    done = subprocess.run([*SSMFAB, *args, "--json"], capture_output=True, text=True, timeout=180, check=False, env=env)
    assert done.returncode == 0, done.stderr
    [only] = json.loads(done.stdout)["hosts"]
    assert isinstance(only, dict)
    return only


def test_the_config_file_and_the_environment_set_compression_and_a_flag_wins(
    sandbox: Sandbox, sandbox_env: dict[str, str], tmp_path: Path
) -> None:
    home = Path(sandbox.host("web-3").folder) / "home"
    (tmp_path / "noise.bin").write_bytes(DATA)
    config = tmp_path / "ssmfab.toml"
    config.write_text('[transfer]\ncompress = "always"\nstreams = 1\n')
    from_file = {**os.environ, "SSMFAB_CONFIG": str(config)}
    put = ["put", str(tmp_path / "noise.bin"), "settings.bin", "--name", "web-3"]
    assert ssmfab_json(*put, env=from_file)["wire_bytes"] > len(DATA)
    assert ssmfab_json(*put, "--no-compress", env=from_file)["wire_bytes"] == len(DATA)
    get = ["get", "settings.bin", "--name", "web-3", "--dest", str(tmp_path / "back")]
    assert ssmfab_json(*get, env=from_file)["wire_bytes"] > len(DATA)
    assert (tmp_path / "back" / "settings.bin").read_bytes() == DATA

    never = {**from_file, "SSMFAB_TRANSFER_COMPRESS": "never"}  # the environment over the file
    assert ssmfab_json(*put, env=never)["wire_bytes"] == len(DATA)
    assert ssmfab_json(*put, "--compress", env=never)["wire_bytes"] > len(DATA)
    deployed = ssmfab_json(
        "deploy", "--artifact", str(tmp_path / "noise.bin"), "--base-dir", "settings-app", "--name", "web-3",
        env={**from_file, "SSMFAB_TRANSFER_COMPRESS": "always"},
    )  # fmt: skip
    assert deployed["wire_bytes"] > len(DATA) and deployed["streams"] == 1

    bad = subprocess.run(
        [*SSMFAB, *put], capture_output=True, text=True, timeout=180, check=False,
        env={**from_file, "SSMFAB_TRANSFER_COMPRESS": "sometimes"},
    )  # fmt: skip
    assert bad.returncode != 0
    assert bad.stderr.strip() == "error: environment: transfer.compress 'sometimes' is not one of auto, always, never"
    (home / "settings.bin").unlink()
    subprocess.run(["rm", "-rf", str(home / "settings-app")], check=True)
