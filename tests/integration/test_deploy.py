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


# -- releases, verdicts, switch-back, rollback, prune, Ctrl-C ---------------------------------------------------


@pytest.fixture
def plugin_client(sandbox_env: dict[str, str]) -> Client:
    return Client(tunnel="plugin", notify=lambda message: None)


def home_of(sandbox: Sandbox, name: str) -> Path:
    """The sandbox host's login folder, seen from this machine (relative base_dirs live there)."""
    return Path(sandbox.host(name).folder) / "home"


def verdict(conn: object, base: str, release: str) -> str:
    return conn.run(f"cat {base}/releases/{release}/.ssmfab-release || echo none", hide=True).stdout.strip()  # type: ignore[attr-defined]


#: An after-switch hook that writes down which release it ran for (base/served, one line per run).
RECORD_HOOK = 'basename "$RELEASE_DIR" >> "$BASE_DIR/served"'


def served(conn: object, base: str) -> list[str]:
    return conn.run(f"cat {base}/served || true", hide=True).stdout.split()  # type: ignore[attr-defined]


def test_release_names_never_collide_and_a_taken_folder_is_refused(plugin_client: Client, artifact: Path, request: pytest.FixtureRequest) -> None:
    from datetime import datetime, timezone

    from ssmfab.exceptions import DeployError

    instant = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert release_name(instant) != release_name(instant)  # same instant, two deploys: two folders
    base = f"collide-{request.node.name[-8:]}"
    [target] = plugin_client.targets(names=["web-1"])
    with plugin_client.connect(target) as conn:
        Deployer(settings_for(artifact, base), artifact, release="20260101T000000Z").deploy(conn)
        with pytest.raises(DeployError, match="already exists"):
            Deployer(settings_for(artifact, base), artifact, release="20260101T000000Z").deploy(conn)
        assert verdict(conn, base, "20260101T000000Z") == "good"  # the first deploy's folder is untouched


@pytest.mark.parametrize("failing", ["after_switch", "health_check"])
def test_a_failed_release_is_switched_back_and_the_previous_after_switch_hooks_rerun(
    plugin_client: Client, artifact: Path, failing: str
) -> None:
    from ssmfab.exceptions import DeployError

    base = f"switchback-{failing}"
    good, bad = "20260101T000000Z", "20260102T000000Z"
    [target] = plugin_client.targets(names=["web-2"])
    breaks = f'test "$(basename "$(pwd -P)")" != {bad}'  # fails in the bad release only
    hooks = (RECORD_HOOK, breaks) if failing == "after_switch" else (RECORD_HOOK,)
    health = f"./bin/health && {breaks}" if failing == "health_check" else "./bin/health"
    settings = settings_for(artifact, base, after_switch=hooks, health_check=health, health_retries=1)
    with plugin_client.connect(target) as conn:
        Deployer(settings, artifact, release=good).deploy(conn)
        with pytest.raises(DeployError, match=f"switched back to {good} and re-ran its after-switch hooks"):
            Deployer(settings, artifact, release=bad).deploy(conn)
        assert current(conn, base) == f"releases/{good}"
        assert served(conn, base) == [good, bad, good]  # the app was told to serve the good release again
        assert (verdict(conn, base, good), verdict(conn, base, bad)) == ("good", "failed")


def test_a_failure_with_no_previous_release_says_nothing_is_live(plugin_client: Client, artifact: Path) -> None:
    from ssmfab.exceptions import DeployError

    base = "no-previous"
    [target] = plugin_client.targets(names=["web-3"])
    settings = settings_for(artifact, base, health_check="false", health_retries=1)
    with plugin_client.connect(target) as conn:
        with pytest.raises(DeployError, match=f"no previous release to switch back to: removed {base}/current, nothing is live"):
            Deployer(settings, artifact, release="20260101T000000Z").deploy(conn)
        assert current(conn, base) == "none"
        assert verdict(conn, base, "20260101T000000Z") == "failed"


def test_rollback_skips_failed_releases_and_runs_hooks_and_health_check(plugin_client: Client, artifact: Path) -> None:
    from ssmfab.exceptions import DeployError

    base = "rollback-good"
    r1, r2, r3 = "20260101T000000Z", "20260102T000000Z", "20260103T000000Z"
    [target] = plugin_client.targets(names=["db-1"])
    settings = settings_for(artifact, base, after_switch=(RECORD_HOOK,), health_retries=1)
    with plugin_client.connect(target) as conn:
        Deployer(settings, artifact, release=r1).deploy(conn)
        conn.run(f"touch {base}/BROKEN")
        with pytest.raises(DeployError):
            Deployer(settings, artifact, release=r2).deploy(conn)
        conn.run(f"rm {base}/BROKEN")
        Deployer(settings, artifact, release=r3).deploy(conn)
        assert served(conn, base) == [r1, r2, r1, r3]

        report = Deployer(settings, artifact).rollback(conn)
        assert (report.release, report.previous, report.health_attempts) == (r1, r3, 1)  # not r2: it failed
        assert current(conn, base) == f"releases/{r1}"
        assert served(conn, base)[-1] == r1  # hooks ran for the release rolled back to

        # Nothing older passed its check: a clear error, nothing changes.
        with pytest.raises(DeployError, match=f"no release older than {r1} .* passed its health check"):
            Deployer(settings, artifact).rollback(conn)
        assert current(conn, base) == f"releases/{r1}"


def test_rollback_whose_health_check_fails_goes_back_where_it_was(plugin_client: Client, artifact: Path) -> None:
    from ssmfab.exceptions import DeployError

    base = "rollback-unhealthy"
    r1, r2 = "20260101T000000Z", "20260102T000000Z"
    [target] = plugin_client.targets(names=["web-1"])
    settings = settings_for(artifact, base, after_switch=(RECORD_HOOK,), health_retries=1)
    with plugin_client.connect(target) as conn:
        Deployer(settings, artifact, release=r1).deploy(conn)
        Deployer(settings, artifact, release=r2).deploy(conn)
        conn.run(f"touch {base}/BROKEN")
        with pytest.raises(DeployError, match=f"health check .* failed 1x; switched back to {r2}"):
            Deployer(settings, artifact).rollback(conn)
        assert current(conn, base) == f"releases/{r2}"
        assert served(conn, base) == [r1, r2, r1, r2]


def test_failed_releases_are_pruned_first_and_never_push_out_a_good_one(plugin_client: Client, artifact: Path) -> None:
    from ssmfab.exceptions import DeployError

    base = "prune-failed"
    names = [f"2026010{n}T000000Z" for n in range(1, 6)]
    [target] = plugin_client.targets(names=["web-2"])
    settings = settings_for(artifact, base, keep_releases=3, health_retries=1)
    with plugin_client.connect(target) as conn:
        for n, release in enumerate(names):
            broken = n in (2, 3)  # the third and fourth deploys fail their health check
            conn.run(f"{'touch' if broken else 'rm -f'} {base}/BROKEN")
            if broken:
                with pytest.raises(DeployError):
                    Deployer(settings, artifact, release=release).deploy(conn)
            else:
                Deployer(settings, artifact, release=release).deploy(conn)
        kept = conn.run(f"ls {base}/releases", hide=True).stdout.split()
        assert kept == [names[0], names[1], names[4]]  # the three good ones; both failed ones went first


def test_hook_variables_are_quoted(plugin_client: Client, artifact: Path) -> None:
    base = "deploy $(touch PWNED-hook); x"
    [target] = plugin_client.targets(names=["web-3"])
    settings = settings_for(artifact, base, after_switch=('test "$(basename "$BASE_DIR")" = "deploy \\$(touch PWNED-hook); x"',), health_check="")
    with plugin_client.connect(target) as conn:
        Deployer(settings, artifact, release="20260101T000000Z").deploy(conn)
        assert conn.run("ls PWNED-hook", hide=True, warn=True).failed
        conn.run("rm -rf 'deploy $(touch PWNED-hook); x'", hide=True)


def deploy_config(tmp_path: Path, artifact: Path, **settings: object) -> dict[str, str]:
    import json
    import os

    lines = ["[deploy]", f"artifact = {json.dumps(str(artifact))}"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in settings.items()]
    config = tmp_path / "ssmfab.toml"
    config.write_text("\n".join(lines) + "\n")
    return dict(os.environ, SSMFAB_CONFIG=str(config), SSMFAB_AUDIT_PATH=str(tmp_path / "audit.jsonl"))


def test_ctrl_c_during_the_health_check_switches_the_host_back(
    sandbox: Sandbox, plugin_client: Client, artifact: Path, tmp_path: Path
) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    base = "ctrl-c"
    home = home_of(sandbox, "web-1")
    (home / base).mkdir(parents=True, exist_ok=True)
    gate = home / base / "gate"
    os.mkfifo(gate)
    [target] = plugin_client.targets(names=["web-1"])
    with plugin_client.connect(target) as conn:
        Deployer(settings_for(artifact, base, after_switch=(RECORD_HOOK,)), artifact, release="20260101T000000Z").deploy(conn)
    # The new release's health check says it started, then blocks reading a FIFO until the test lets it go.
    env = deploy_config(tmp_path, artifact, base_dir=base, after_switch=[RECORD_HOOK],
                        health_check="touch ../../health-started && cat ../../gate")  # fmt: skip
    process = subprocess.Popen([sys.executable, "-m", "ssmfab.program", "deploy", "--name", "web-1"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
    try:
        deadline = time.monotonic() + 120  # a bound for a broken run, not a timing assumption
        while not (home / base / "health-started").exists():
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
        fd = None
        try:
            fd = os.open(gate, os.O_WRONLY | os.O_NONBLOCK)  # releases the remote `cat`, if still waiting
        except OSError:
            pass
        if fd is not None:
            os.close(fd)
    assert process.returncode != 0, out
    assert "Traceback" not in err, err
    assert "switched back to 20260101T000000Z" in err, err
    with plugin_client.connect(target) as conn:
        assert current(conn, base) == "releases/20260101T000000Z"
        [new] = [r for r in conn.run(f"ls {base}/releases", hide=True).stdout.split() if r != "20260101T000000Z"]
        assert verdict(conn, base, new) == "failed"
        assert served(conn, base) == ["20260101T000000Z", new, "20260101T000000Z"]


def snapshot(folder: Path) -> dict[str, tuple[int, int, int]]:
    """Every path under ``folder`` with its mode, size and modification time."""
    found = {}
    for path in sorted(folder.rglob("*")):
        info = path.lstat()
        found[str(path.relative_to(folder))] = (info.st_mode, info.st_size, info.st_mtime_ns)
    return found


def test_dry_run_touches_nothing_on_the_host(sandbox: Sandbox, sandbox_env: dict[str, str], artifact: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    env = deploy_config(tmp_path, artifact, base_dir="dry", after_switch=[RECORD_HOOK], health_check="./bin/health")
    homes = {name: home_of(sandbox, name) for name in ("web-1", "web-2", "web-3")}
    before = {name: snapshot(home) for name, home in homes.items()}
    done = subprocess.run([sys.executable, "-m", "ssmfab.program", "deploy", "--tag", "web", "--dry-run"],
                          capture_output=True, text=True, env=env, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert sum("switch dry/current -> releases/" in line for line in done.stdout.splitlines()) == 3
    assert {name: snapshot(home) for name, home in homes.items()} == before
    assert not (tmp_path / "audit.jsonl").exists()  # nothing ran, nothing to record


def test_ctrl_c_in_a_script_deploying_one_host_switches_it_back(plugin_client: Client, artifact: Path) -> None:
    base = "ctrl-c-library"
    good, bad = "20260101T000000Z", "20260102T000000Z"
    settings = settings_for(artifact, base, after_switch=(RECORD_HOOK,))

    def interrupt_at_the_health_check(message: str) -> None:
        # Ctrl-C reaches a script's thread wherever it is; here: right after the first health check answered.
        if "health check" in message:
            raise KeyboardInterrupt

    [target] = plugin_client.targets(names=["web-3"])
    with plugin_client.connect(target) as conn:
        Deployer(settings, artifact, release=good).deploy(conn)
        with pytest.raises(KeyboardInterrupt):
            Deployer(settings, artifact, release=bad, notify=interrupt_at_the_health_check).deploy(conn)
        assert current(conn, base) == f"releases/{good}"
        assert served(conn, base) == [good, bad, good]
        assert verdict(conn, base, bad) == "failed"


@pytest.mark.parametrize(
    ("flags", "streams", "compressed"),
    [(["--streams", "3", "--compress"], 3, True), (["--streams", "1", "--no-compress"], 1, False)],
    ids=["striped-compressed", "one-session-plain"],
)
def test_deploy_streams_and_compress_flags_reach_the_upload(
    sandbox: Sandbox, sandbox_env: dict[str, str], tmp_path: Path, flags: list[str], streams: int, compressed: bool
) -> None:
    import json
    import subprocess
    import sys

    # 17 MiB of source text: above the striping threshold, and shrinks several times under gzip.
    text = b"".join(path.read_bytes() for path in sorted(Path(__file__).parents[2].joinpath("ssmfab").rglob("*.py")))
    size = 17 * 1024 * 1024
    build = tmp_path / "release.tar"
    build.write_bytes((text * (size // len(text) + 1))[:size])
    base = f"flags-{streams}"
    env = deploy_config(tmp_path, build, base_dir=base)
    done = subprocess.run([sys.executable, "-m", "ssmfab.program", "deploy", "--name", "web-3", "--json", *flags],
                          capture_output=True, text=True, env=env, timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    [host] = json.loads(done.stdout)["hosts"]
    assert (host["bytes"], host["streams"]) == (size, streams)
    assert (host["wire_bytes"] < size // 2) if compressed else (host["wire_bytes"] == size)
    landed = home_of(sandbox, "web-3") / base / "current" / "release.tar"
    assert landed.read_bytes() == build.read_bytes()
