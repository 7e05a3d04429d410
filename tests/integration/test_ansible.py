"""`ssmfab ansible-inventory`: the dynamic inventory's JSON shape, and (when ansible-core is installed) Ansible's
own ssh connection answering `ping` on every host through ssmfab-proxy."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ssmfab.sandbox import Sandbox

from .test_cli import assert_one_line_error, ssmfab


def test_inventory_shape(sandbox: Sandbox, sandbox_env: dict[str, str]) -> None:
    done = ssmfab("ansible-inventory", "--tag", "web", "--list", env=dict(os.environ))
    assert done.returncode == 0, done.stderr
    inventory = json.loads(done.stdout)
    web = ["web-1", "web-2", "web-3"]
    assert inventory["tag_Role_web"] == {"hosts": web}
    assert inventory["tag_Env_demo"] == {"hosts": web}
    assert inventory["region_us_east_1"] == {"hosts": web}
    assert set(inventory["all"]["children"]) == {"tag_Role_web", "tag_Env_demo", "tag_Name_web_1", "tag_Name_web_2",
                                                 "tag_Name_web_3", "region_us_east_1", "ungrouped"}  # fmt: skip
    hostvars = inventory["_meta"]["hostvars"]
    assert sorted(hostvars) == web
    one = hostvars["web-2"]
    assert one["ansible_host"] == sandbox.host("web-2").instance_id
    assert one["ansible_user"] == sandbox_env["SSMFAB_USER"]
    assert one["ansible_ssh_private_key_file"] == sandbox_env["SSMFAB_KEY"]
    # Ansible splits these with shlex: the ProxyCommand must come back as one word, %h %p intact.
    words = shlex.split(one["ansible_ssh_common_args"])
    proxy = next(w for w in words if w.startswith("ProxyCommand="))
    assert "ssmfab.proxy" in proxy and proxy.endswith(" %h %p")
    done = ssmfab("ansible-inventory", "--tag", "web", "--host", "web-2", env=dict(os.environ))
    assert json.loads(done.stdout) == one


def test_inventory_refuses_an_ephemeral_key(sandbox_env: dict[str, str]) -> None:
    assert_one_line_error(ssmfab("ansible-inventory", "--ephemeral-key", env=dict(os.environ)), 2, "--ephemeral-key")


@pytest.mark.skipif(shutil.which("ansible", path=str(Path(sys.executable).parent)) is None, reason="ansible-core is not installed")
def test_ansible_ping_through_ssmfab_proxy(sandbox_env: dict[str, str], tmp_path: Path) -> None:
    script = tmp_path / "inventory.sh"
    script.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m ssmfab.program ansible-inventory --tag web "$@"\n')
    script.chmod(0o755)
    env = dict(os.environ, ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-tmp"), ANSIBLE_PYTHON_INTERPRETER=sys.executable,
               ANSIBLE_SSH_CONTROL_PATH_DIR=str(tmp_path / "cp"), ANSIBLE_NOCOLOR="1")  # fmt: skip
    ansible = str(Path(sys.executable).parent / "ansible")
    try:
        done = subprocess.run(
            [ansible, "all", "-i", str(script), "-m", "ping", "-o"], capture_output=True, text=True, env=env, timeout=300, check=False
        )
    finally:
        # Ansible keeps each host's ssh (and so its SSM session) open for reuse (ControlPersist): end them here.
        masters = sorted((tmp_path / "cp").iterdir()) if (tmp_path / "cp").is_dir() else []
        for socket_path in masters:
            subprocess.run(["ssh", "-o", f"ControlPath={socket_path}", "-O", "exit", "any"], capture_output=True, timeout=60, check=False)
    assert masters, "Ansible's ssh kept no connection to reuse"
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(line.split(" | ")[0] for line in done.stdout.splitlines() if '"ping": "pong"' in line) == ["web-1", "web-2", "web-3"]
