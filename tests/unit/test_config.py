"""Configuration layering: defaults < files < SSMFAB_* env < overrides, strict about unknown keys."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ssmfab.config import Settings, env_var_names, load_settings
from ssmfab.exceptions import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_documented_defaults_match_the_code() -> None:
    """config/ssmfab.toml documents every setting: its active values and its env var names must be true."""
    documented = load_settings(env={}, files=[REPO / "config" / "ssmfab.toml"])
    assert documented == Settings()
    text = (REPO / "config" / "ssmfab.toml").read_text()
    for section in dataclasses.fields(Settings):
        for setting in dataclasses.fields(getattr(Settings(), section.name)):
            assert re.search(rf"^(# )?{setting.name} = |^\[{section.name}\.{setting.name}\]", text, re.M), (
                f"{section.name}.{setting.name} is not documented in config/ssmfab.toml"
            )
    for dotted, env_name in env_var_names().items():
        section, key = dotted.split(".")
        assert f"[{section}]" in text
        assert re.search(rf"^#? ?{key} = .*# {env_name}\b", text, re.M), f"{dotted} / {env_name} undocumented"


def test_layers_apply_in_order(tmp_path: Path) -> None:
    system = tmp_path / "system.toml"
    system.write_text('[ssh]\nuser = "ubuntu"\n[run]\nparallel = 3\n')
    project = tmp_path / "project.toml"
    project.write_text("[run]\nparallel = 5\n")
    env = {"SSMFAB_PARALLEL": "7", "SSMFAB_STRICT_HOST_KEYS": "yes"}
    settings = load_settings(env=env, files=[system, project])
    assert settings.ssh.user == "ubuntu"
    assert settings.run.parallel == 7
    assert settings.ssh.strict_host_keys is True
    settings = load_settings({"run.parallel": 2, "ssh.user": None}, env=env, files=[system, project])
    assert settings.run.parallel == 2
    assert settings.ssh.user == "ubuntu"


def test_default_files_include_project_and_explicit(tmp_path: Path) -> None:
    (tmp_path / "ssmfab.toml").write_text('[tunnel]\nmode = "plugin"\n')
    explicit = tmp_path / "explicit.toml"
    explicit.write_text('[ssh]\nuser = "admin"\n')
    settings = load_settings(env={"HOME": str(tmp_path), "SSMFAB_CONFIG": str(explicit)}, cwd=tmp_path)
    assert settings.tunnel.mode == "plugin"
    assert settings.ssh.user == "admin"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[ssh]\nusr = 'x'\n", "unknown setting ssh.usr"),
        ("[shh]\nuser = 'x'\n", "unknown section [shh]"),
        ("[run]\nparallel = 'many'\n", "run.parallel: expected int"),
        ("[run]\nparallel = 0\n", "run.parallel must be at least 1"),
        ("[tunnel]\nmode = 'carrier-pigeon'\n", "tunnel.mode 'carrier-pigeon'"),
        ("[ssh\n", "not valid TOML"),
    ],
)
def test_bad_files_name_the_file_and_key(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(content)
    with pytest.raises(ConfigError) as err:
        load_settings(env={}, files=[path])
    assert message in str(err.value)
    assert str(path) in str(err.value)


def test_bad_env_value_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="environment: ssh.connect_timeout: expected float"):
        load_settings(env={"SSMFAB_CONNECT_TIMEOUT": "soon"}, files=[])


def test_missing_explicit_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="SSMFAB_CONFIG names"):
        load_settings(env={"SSMFAB_CONFIG": str(tmp_path / "nope.toml")}, cwd=tmp_path)


def test_settings_are_immutable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().ssh.user = "root"  # type: ignore[misc]


def test_user_tag_overrides_the_configured_user() -> None:
    from ssmfab.client import Client
    from ssmfab.targets import Target

    client = Client(user="ec2-user")
    assert client.user_for(Target(id="i-12345678", tags={"ssmfab:user": "ubuntu"})) == "ubuntu"
    assert client.user_for(Target(id="i-12345678")) == "ec2-user"
    assert Client(user_tag="").user_for(Target(id="i-12345678", tags={"ssmfab:user": "x"})) == "ec2-user"


def test_the_toml_parser_loads_only_for_a_config_file(tmp_path: Path) -> None:
    # Loading it costs every command a few milliseconds; a run without config files never needs it.
    config = tmp_path / "ssmfab.toml"
    config.write_text('[ssh]\nuser = "ubuntu"\n')
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from ssmfab.config import load_settings\n"
        "load_settings(env={}, files=[])\n"
        "print('tomllib' in sys.modules)\n"
        f"print(load_settings(env={{}}, files=[Path({str(config)!r})]).ssh.user, 'tomllib' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.split("\n")[:2] == ["False", "ubuntu True"]
