"""Deploys over the sandbox: switch, health-check rollback and the failure policy, rollback, dry run."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from ssmfab.client import Client
from ssmfab.config import DeploySettings
from ssmfab.deploy import Deployer, check_artifact, release_name
from ssmfab.exceptions import ConfigError
from ssmfab.fleet import Policy, fan_out
from ssmfab.sandbox import Sandbox


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    root = tmp_path / "build"
    (root / "bin").mkdir(parents=True)
    (root / "VERSION").write_text("1.2.3\n")
    script = root / "bin" / "health"
    script.write_text("#!/bin/sh\ntest -e VERSION && test ! -e ../../BROKEN\n")
    script.chmod(0o755)
    return root


def current(conn: object, base: str) -> str:
    return conn.run(f"readlink {base}/current || echo none", hide=True).stdout.strip()  # type: ignore[attr-defined]


def settings_for(artifact: Path, base: str, **changes: object) -> DeploySettings:
    defaults = DeploySettings(artifact=str(artifact), base_dir=base, health_check="./bin/health", health_delay=0.1)
    return dataclasses.replace(defaults, **changes)  # type: ignore[arg-type]


def test_deploy_switches_web_hosts_and_leaves_db_alone(client: Client, sandbox: Sandbox, artifact: Path, request: pytest.FixtureRequest) -> None:
    base = f"deploy-{request.node.callspec.id}"
    deployer = Deployer(settings_for(artifact, base, after_switch=("echo switched > ../../after-hook",)), artifact)
    web = client.targets(tags=["web"])
    result = fan_out(web, client.connect, deployer.deploy, policy=Policy(parallel=3, max_failures=0))
    assert [r.status for r in result.results] == ["ok", "ok", "ok"]
    for target in web:
        with client.connect(target) as conn:
            assert current(conn, base) == f"releases/{deployer.release}"
            assert conn.run(f"cat {base}/current/VERSION {base}/after-hook", hide=True).stdout.split() == ["1.2.3", "switched"]
            assert conn.run(f"test -x {base}/current/bin/health", warn=True).ok  # modes kept
    [db] = client.targets(tags=["db"])
    with client.connect(db) as conn:
        assert current(conn, base) == "none"


def test_failed_health_check_rolls_back_and_stops_the_rollout(client: Client, sandbox: Sandbox, artifact: Path, request: pytest.FixtureRequest) -> None:
    base = f"health-{request.node.callspec.id}"
    web = client.targets(tags=["web"])
    first = Deployer(settings_for(artifact, base), artifact, release="20260101T000000Z")
    assert not fan_out(web, client.connect, first.deploy, policy=Policy(parallel=3)).failed
    with client.connect(web[0]) as conn:
        conn.run(f"touch {base}/BROKEN")

    second = Deployer(settings_for(artifact, base, health_retries=2), artifact, release="20260102T000000Z")
    # One host per batch, default policy (no failure tolerated): web-1 fails, web-2 and web-3 never start.
    result = fan_out(web, client.connect, second.deploy, policy=Policy(parallel=3, batch=1, max_failures=0))
    assert [r.status for r in result.results] == ["failed", "skipped", "skipped"]
    assert "health check `./bin/health` failed 2x; switched back to 20260101T000000Z" in str(result.results[0].error)
    for target in web:
        with client.connect(target) as conn:
            assert current(conn, base) == "releases/20260101T000000Z"


def test_rollback_restores_the_previous_release_and_prune_keeps_n(client: Client, sandbox: Sandbox, artifact: Path, request: pytest.FixtureRequest) -> None:
    base = f"rollback-{request.node.callspec.id}"
    [target] = client.targets(names=["web-2"])
    releases = [f"2026010{n}T000000Z" for n in range(1, 5)]
    with client.connect(target) as conn:
        for release in releases:
            Deployer(settings_for(artifact, base, keep_releases=3), artifact, release=release).deploy(conn)
        assert conn.run(f"ls {base}/releases", hide=True).stdout.split() == releases[1:]
        report = Deployer(settings_for(artifact, base), artifact).rollback(conn)
        assert (report.release, report.previous) == (releases[2], releases[3])
        assert current(conn, base) == f"releases/{releases[2]}"


def test_dry_run_plan_and_bad_artifacts(artifact: Path, tmp_path: Path) -> None:
    deployer = Deployer(settings_for(artifact, "app"), artifact, release=release_name())
    plan = deployer.plan("web-1 (i-12345678)")
    assert plan[0].startswith("web-1 (i-12345678): upload")
    assert any("switch app/current" in step for step in plan)
    with pytest.raises(ConfigError, match="does not exist"):
        check_artifact(DeploySettings(artifact=str(tmp_path / "missing.tgz")))
    with pytest.raises(ConfigError, match="no artifact"):
        check_artifact(DeploySettings())
