"""Deploy and rollback run in this process over a real SSH connection: one OpenSSH sshd on loopback, reached
directly (deploy never sees SSM; it gets a Fabric connection and uploads through ssmfab.transfer). What an
operator sees is checked on the host's own files (the sshd's login folder is a local folder here): the release
layout, the ``current`` symlink, verdicts, what the hooks were given, what was pruned, the messages and errors.
Ctrl-C is driven by events: a hook or health check that blocks on a FIFO, a file it creates, a callback."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import stat
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from fabric import Connection

from ssmfab.config import DeploySettings
from ssmfab.deploy import Deployer, Interrupted, artifact_bytes, check_artifact, release_name
from ssmfab.exceptions import CommandError, ConfigError, DeployError
from ssmfab.sandbox.sshd import SSHServer

from .conftest import fabric_connection

LABEL = "web-1 (i-0123456789abcdef0)"
R1, R2, R3, R4, R5 = (f"2026010{n}T000000.000Z-00000{n}" for n in range(1, 6))
#: An after-switch hook that writes down which release it ran for (base/served, one line per run).
RECORD_HOOK = 'basename "$RELEASE_DIR" >> "$BASE_DIR/served"'
#: A health check that fails while base/BROKEN exists.
HEALTH = "./bin/health"


class LabelledConnection(Connection):  # type: ignore[misc]
    label = LABEL  # a plain attribute, as SSMConnection's label names the instance in every message


class TappedConnection(LabelledConnection):
    """Tells ``after`` every command it ran: a test acts at an exact point of a deploy (Ctrl-C there)."""

    after: Callable[[str], object] | None = None  # declared, so a plain attribute (not a Fabric config entry)

    def run(self, command: str, **kwargs: object) -> object:
        result = super().run(command, **kwargs)
        if self.after is not None:
            self.after(command)
        return result


def connect(server: tuple[SSHServer, Path], kind: type[Connection] = LabelledConnection) -> Connection:
    return fabric_connection(server, kind)


@pytest.fixture
def conn(server: tuple[SSHServer, Path]) -> Iterator[Connection]:
    connection = connect(server)
    try:
        yield connection
    finally:
        connection.close()


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    root = tmp_path / "build"
    (root / "bin").mkdir(parents=True)
    (root / "VERSION").write_text("1.2.3\n")
    script = root / "bin" / "health"
    script.write_text("#!/bin/sh\necho checking\ntest -e VERSION && test ! -e ../../BROKEN\n")
    script.chmod(0o755)
    return root


class Host:
    """The host's side of one base_dir, read from its files (the sshd's login folder is local here)."""

    def __init__(self, home: Path, base: str) -> None:
        self.home = home
        self.base = base
        self.root = home / base

    def current(self) -> str | None:
        link = self.root / "current"
        return os.readlink(link) if link.is_symlink() else None

    def releases(self) -> list[str]:
        folder = self.root / "releases"
        return sorted(p.name for p in folder.iterdir()) if folder.exists() else []

    def verdict(self, release: str) -> str:
        record = self.root / "releases" / release / ".ssmfab-release"
        return record.read_text() if record.exists() else "none"

    def served(self) -> list[str]:
        record = self.root / "served"
        return record.read_text().split() if record.exists() else []

    def breaks(self, broken: bool = True) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if broken:
            (self.root / "BROKEN").touch()
        else:
            (self.root / "BROKEN").unlink(missing_ok=True)


@pytest.fixture
def host(server: tuple[SSHServer, Path], request: pytest.FixtureRequest) -> Host:
    # One sshd serves every test: each test deploys to a base_dir of its own (relative: in the login folder).
    return Host(server[0].home, "app-" + re.sub(r"\W", "-", request.node.name))


def settings_for(artifact: Path, base: str, **changes: object) -> DeploySettings:
    defaults = DeploySettings(artifact=str(artifact), base_dir=base, health_check=HEALTH, health_delay=0.01)
    return dataclasses.replace(defaults, **changes)  # type: ignore[arg-type]


def seed(host: Host, artifact: Path, releases: dict[str, str | None], current: str) -> None:
    """The history a test starts from, laid out on the host's disk as earlier deploys leave it (the deploys that
    make it are tested on their own): release folders holding the artifact, each with its verdict (None: none
    recorded), and ``current`` pointing at one."""
    for release, verdict in releases.items():
        folder = host.root / "releases" / release
        shutil.copytree(artifact, folder)
        if verdict is not None:
            (folder / ".ssmfab-release").write_text(f"{verdict}\n")
    os.symlink(f"releases/{current}", host.root / "current")


# -- a deploy that goes well ----------------------------------------------------------------------------------


def test_a_deploy_lays_out_its_release_and_points_current_at_it(conn: Connection, host: Host, artifact: Path) -> None:
    messages: list[str] = []
    moved: list[int] = []
    seen_by_hook = "env > ../../before-env; pwd -P > ../../before-pwd"
    settings = settings_for(artifact, host.base, before_switch=(seen_by_hook,), after_switch=(RECORD_HOOK,))
    deployer = Deployer(settings, artifact, release=R1, notify=messages.append, on_bytes=moved.append)
    report = deployer.deploy(conn)

    size = artifact_bytes(artifact)
    assert (report.release, report.previous, report.files, report.bytes) == (R1, None, 2, size)
    assert (report.wire_bytes, report.streams, report.health_attempts, report.pruned) == (size, 1, 1, [])
    assert report.exited == 0  # the host's exit code in the summary table and --json
    assert sum(moved) == size  # the progress line is told every byte of the upload
    release = host.root / "releases" / R1
    assert sorted(p.name for p in release.iterdir()) == [".ssmfab-release", "VERSION", "bin"]
    assert (release / "VERSION").read_text() == "1.2.3\n"
    assert os.stat(release / "bin" / "health").st_mode & 0o777 == 0o755  # modes kept
    assert host.verdict(R1) == "good\n"
    assert host.current() == f"releases/{R1}"  # relative: the base folder can move
    # The switch renamed a new symlink over the old name: no staging link is left beside it.
    assert sorted(p.name for p in host.root.iterdir()) == ["before-env", "before-pwd", "current", "releases", "served"]
    # Hooks run in the release folder and get both folders as absolute paths.
    env = dict(line.split("=", 1) for line in (host.root / "before-env").read_text().splitlines() if "=" in line)
    assert (env["RELEASE_DIR"], env["BASE_DIR"]) == (str(release), str(host.root))
    assert (host.root / "before-pwd").read_text().strip() == str(release)
    assert host.served() == [R1]
    assert messages == [
        f"{LABEL}: uploaded 2 files ({size} bytes) to {host.base}/releases/{R1}, verified",
        f"{LABEL}: {host.base}/current -> releases/{R1} (was none)",
        f"{LABEL}: health check passed on attempt 1/3: checking",
    ]

    messages.clear()
    second = Deployer(settings, artifact, release=R2, notify=messages.append).deploy(conn)
    assert (second.release, second.previous) == (R2, R1)
    assert host.current() == f"releases/{R2}"
    assert f"{LABEL}: {host.base}/current -> releases/{R2} (was {R1})" in messages
    assert host.releases() == [R1, R2]


def test_an_archive_is_unpacked_into_the_release_and_not_kept(conn: Connection, host: Host, artifact: Path, tmp_path: Path) -> None:
    archive = tmp_path / "app.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(artifact.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(artifact)), recursive=False)
    report = Deployer(settings_for(archive, host.base), archive, release=R1).deploy(conn)
    assert (report.files, report.bytes) == (1, archive.stat().st_size)
    release = host.root / "releases" / R1
    assert sorted(p.name for p in release.iterdir()) == [".ssmfab-release", "VERSION", "bin"]
    assert host.current() == f"releases/{R1}" and host.verdict(R1) == "good\n"


def test_a_single_file_is_the_release_as_it_is(conn: Connection, host: Host, tmp_path: Path) -> None:
    jar = tmp_path / "app.tar"  # not .tar.gz: shipped as it is
    jar.write_bytes(b"not unpacked")
    report = Deployer(settings_for(jar, host.base, health_check="test -s app.tar"), jar, release=R1).deploy(conn)
    assert (report.files, report.bytes) == (1, 12)
    assert (host.root / "releases" / R1 / "app.tar").read_bytes() == b"not unpacked"


@pytest.mark.parametrize(
    "base",
    ["deploy $(touch PWNED); `touch PWNED` x", "it's \"quoted\" & spaced", "srv/APP-X/"],
    ids=["substitution", "quotes", "trailing-slash"],
)
def test_hooks_get_hostile_base_dirs_as_themselves(server: tuple[SSHServer, Path], artifact: Path, base: str, tmp_path: Path) -> None:
    home = server[0].home
    record = tmp_path / "seen"
    hook = f'printf "%s\\n%s\\n" "$BASE_DIR" "$RELEASE_DIR" > {record}'
    settings = settings_for(artifact, base, before_switch=(hook,), after_switch=(hook,), health_check=f"test -s {record}")
    with connect(server) as conn:
        Deployer(settings, artifact, release=R1).deploy(conn)
    root = home / base.rstrip("/")
    assert record.read_text().splitlines() == [str(root), str(root / "releases" / R1)]
    assert os.readlink(root / "current") == f"releases/{R1}"
    assert not list(home.glob("PWNED*")) and not list(home.glob("*/PWNED*"))
    assert sorted(p.name for p in root.iterdir()) == ["current", "releases"]  # no stray `current/` or `//`


def test_a_connection_without_a_label_is_named_by_its_host(server: tuple[SSHServer, Path], artifact: Path, host: Host) -> None:
    messages: list[str] = []
    with connect(server, Connection) as conn:
        report = Deployer(settings_for(artifact, host.base, health_check=""), artifact, release=R1, notify=messages.append).deploy(conn)
    assert report.health_attempts == 0
    assert messages[1] == f"127.0.0.1: {host.base}/current -> releases/{R1} (was none)"
    assert len(messages) == 2  # no health check configured: none run, none reported


def test_an_empty_base_dir_means_the_login_folder(server: tuple[SSHServer, Path], artifact: Path) -> None:
    home = server[0].home
    try:
        with connect(server) as conn:
            Deployer(settings_for(artifact, "", health_check=""), artifact, release=R1).deploy(conn)
        assert os.readlink(home / "current") == f"releases/{R1}"
        assert (home / "releases" / R1 / "VERSION").read_text() == "1.2.3\n"
    finally:
        (home / "current").unlink(missing_ok=True)
        shutil.rmtree(home / "releases", ignore_errors=True)


class StripingConnection(LabelledConnection):
    """Opens more connections to the same host on request, as SSMConnection.sibling does (each its own SSM
    session there): a big upload is striped over them."""

    def sibling(self) -> StripingConnection:
        return StripingConnection(self.host, port=self.port, user=self.user, config=self.config,
                                  connect_kwargs=self.connect_kwargs)  # fmt: skip


def test_the_upload_goes_striped_and_uncompressed_as_asked(server: tuple[SSHServer, Path], host: Host, tmp_path: Path) -> None:
    # 17 MiB of text: above the striping threshold, and would shrink under gzip (which ssmfab, left to itself,
    # uses when it pays: here the deploy was told not to).
    build = tmp_path / "build"
    build.mkdir()
    line = b"".join(b"%08d the same words again and again\n" % n for n in range(1000))
    (build / "big.txt").write_bytes((line * (17 * 1024 * 1024 // len(line) + 1))[: 17 * 1024 * 1024])
    settings = settings_for(build, host.base, health_check="")
    with connect(server, StripingConnection) as conn:
        report = Deployer(settings, build, release=R1, compress=False, streams=2).deploy(conn)
    assert (report.bytes, report.wire_bytes, report.streams) == (17 * 1024 * 1024, 17 * 1024 * 1024, 2)
    assert (host.root / "releases" / R1 / "big.txt").read_bytes() == (build / "big.txt").read_bytes()


def test_a_current_link_made_by_other_tools_is_understood(conn: Connection, host: Host, artifact: Path) -> None:
    # Capistrano and hand-made setups point current at the release by its absolute path.
    seed(host, artifact, {R1: "good"}, current=R1)
    (host.root / "current").unlink()
    os.symlink(host.root / "releases" / R1, host.root / "current")
    report = Deployer(settings_for(artifact, host.base, keep_releases=1), artifact, release=R2).deploy(conn)
    assert report.previous == R1 and report.pruned == []  # R1 is known as the previous release, and kept


# -- failures after the switch: switched back ---------------------------------------------------------------------


@pytest.mark.parametrize("failing", ["after_switch", "health_check"])
def test_a_failed_release_is_switched_back_and_the_previous_after_switch_hooks_rerun(
    conn: Connection, host: Host, artifact: Path, failing: str
) -> None:
    breaks = f'test "$(basename "$(pwd -P)")" != {R2}'  # fails in the second release only
    hooks = (RECORD_HOOK, f"{breaks} || {{ echo 'hook broke' >&2; exit 7; }}") if failing == "after_switch" else (RECORD_HOOK,)
    health = f"{breaks} && {HEALTH} || {{ echo first >&2; echo 'still down' >&2; exit 3; }}" if failing == "health_check" else HEALTH
    settings = settings_for(artifact, host.base, after_switch=hooks, health_check=health, health_retries=2)
    seed(host, artifact, {R1: "good"}, current=R1)  # a good release is live
    messages: list[str] = []
    with pytest.raises(DeployError) as failed:
        Deployer(settings, artifact, release=R2, notify=messages.append).deploy(conn)
    error = str(failed.value)
    assert failed.value.host == LABEL
    assert error.endswith(f"; switched back to {R1} and re-ran its after-switch hooks"), error
    if failing == "health_check":
        assert error.startswith(f"{LABEL}: release {R2}: health check `{health}` failed 2x;"), error
        assert [m for m in messages if "health check" in m] == [
            f"{LABEL}: health check failed (exit 3) on attempt 1/2: still down",
            f"{LABEL}: health check failed (exit 3) on attempt 2/2: still down",
        ]
    else:
        assert error.startswith(f"{LABEL}: `") and "exited 7: hook broke; switched back" in error, error
        assert not any("health check" in m for m in messages)  # never checked: the hook failed first
    assert messages[-1] == f"{LABEL}: switched back to {R1} and re-ran its after-switch hooks"
    assert host.current() == f"releases/{R1}"
    assert host.served() == [R2, R1]  # the app was told to serve the good release again
    assert (host.verdict(R1), host.verdict(R2)) == ("good\n", "failed\n")
    assert host.releases() == [R1, R2]  # a failed release stays for a look until pruned


def test_switching_back_without_after_switch_hooks_says_only_that(conn: Connection, host: Host, artifact: Path) -> None:
    settings = settings_for(artifact, host.base, health_retries=1)
    seed(host, artifact, {R1: "good"}, current=R1)  # a good release is live
    host.breaks()
    with pytest.raises(DeployError, match=re.escape(f"failed 1x; switched back to {R1}") + "$"):
        Deployer(settings, artifact, release=R2).deploy(conn)
    assert host.current() == f"releases/{R1}"


def test_a_failure_with_no_previous_release_says_nothing_is_live(conn: Connection, host: Host, artifact: Path) -> None:
    # A delay nobody would wait out: none comes after the last attempt (were it waited, the test would hang).
    settings = settings_for(artifact, host.base, after_switch=(RECORD_HOOK,), health_check="false", health_retries=1, health_delay=3600)
    messages: list[str] = []
    with pytest.raises(DeployError) as failed:
        Deployer(settings, artifact, release=R1, notify=messages.append).deploy(conn)
    assert f"{LABEL}: health check failed (exit 1) on attempt 1/1: " in messages  # it said nothing
    assert str(failed.value).endswith(f"; no previous release to switch back to: removed {host.base}/current, nothing is live")
    assert host.current() is None and not (host.root / "current").exists()
    assert host.verdict(R1) == "failed\n"
    assert host.served() == [R1]  # no release to re-run hooks for


def test_a_switch_back_that_fails_too_says_to_check_by_hand(conn: Connection, host: Host, artifact: Path) -> None:
    settings = settings_for(artifact, host.base, after_switch=('test ! -e "$BASE_DIR/BROKEN"',))
    seed(host, artifact, {R1: "good"}, current=R1)  # a good release is live
    host.breaks()  # now the after-switch hook fails for every release, the previous one included
    with pytest.raises(DeployError) as failed:
        Deployer(settings, artifact, release=R2).deploy(conn)
    assert str(failed.value).endswith(f"; switching back to {R1} FAILED too ({LABEL}: `cd {host.base} && export BASE_DIR=\"$PWD\" && "
                                      f"cd releases/{R1} && export RELEASE_DIR=\"$PWD\" && test ! -e \"$BASE_DIR/BROKEN\"` exited 1): "
                                      f"check {host.base}/current by hand")  # fmt: skip
    assert host.current() == f"releases/{R1}"  # the link itself went back; only its hook failed
    assert host.verdict(R2) == "failed\n"


def test_a_failed_hook_is_the_error_even_when_its_release_cannot_be_marked(conn: Connection, host: Host, artifact: Path) -> None:
    seed(host, artifact, {R1: "good"}, current=R1)
    breaks_all = 'mkdir "$RELEASE_DIR/.ssmfab-release"; echo "disk full" >&2; exit 4'  # the verdict cannot be written
    with pytest.raises(CommandError) as failed:
        Deployer(settings_for(artifact, host.base, before_switch=(breaks_all,)), artifact, release=R2).deploy(conn)
    assert str(failed.value).endswith("` exited 4: disk full")
    assert host.current() == f"releases/{R1}"


def test_a_failure_before_the_switch_leaves_current_alone(conn: Connection, host: Host, artifact: Path) -> None:
    settings = settings_for(artifact, host.base, before_switch=("echo 'migration failed' >&2; exit 4",), after_switch=(RECORD_HOOK,))
    seed(host, artifact, {R1: "good"}, current=R1)  # a good release is live
    with pytest.raises(CommandError) as failed:
        Deployer(settings, artifact, release=R2).deploy(conn)
    assert str(failed.value).endswith("exit 4` exited 4: migration failed")
    assert "switched back" not in str(failed.value)
    assert host.current() == f"releases/{R1}" and host.served() == []
    assert host.verdict(R2) == "failed\n"


def test_a_taken_release_folder_is_refused_and_left_alone(conn: Connection, host: Host, artifact: Path) -> None:
    instant = datetime(2026, 11, 28, 19, 1, 2, 123456, tzinfo=timezone.utc)
    names = {release_name(instant) for _ in range(20)}
    assert len(names) == 20  # same instant, twenty deploys: twenty folders
    assert all(re.fullmatch(r"20261128T190102\.123Z-[0-9a-f]{6}", name) for name in names), names

    settings = settings_for(artifact, host.base, after_switch=(RECORD_HOOK,))
    Deployer(settings, artifact, release=R1).deploy(conn)
    with pytest.raises(DeployError) as taken:
        Deployer(settings, artifact, release=R1).deploy(conn)
    assert str(taken.value) == (
        f"{LABEL}: release folder {host.base}/releases/{R1} already exists: another deploy uses the name {R1}"
    )
    assert host.verdict(R1) == "good\n" and host.served() == [R1]  # the first deploy's folder is untouched


def test_a_release_name_is_the_time_it_was_made(monkeypatch: pytest.MonkeyPatch) -> None:
    # In UTC whatever the local time zone: hosts and operators in several zones must sort releases alike.
    monkeypatch.setenv("TZ", "XYZ-05:45")  # UTC+05:45 (POSIX form, no zone database needed)
    time.tzset()
    try:
        before = datetime.now(timezone.utc).replace(microsecond=0)
        name = release_name()
        after = datetime.now(timezone.utc)
    finally:
        monkeypatch.undo()
        time.tzset()
    made = datetime.strptime(name[:19], "%Y%m%dT%H%M%S.%f").replace(tzinfo=timezone.utc)
    assert before <= made <= after and name[19:20] == "Z", name
    assert Deployer(DeploySettings(), Path(".")).release != Deployer(DeploySettings(), Path(".")).release


# -- Ctrl-C --------------------------------------------------------------------------------------------------------


def test_ctrl_c_in_a_script_deploying_one_host_switches_it_back(conn: Connection, host: Host, artifact: Path) -> None:
    settings = settings_for(artifact, host.base, after_switch=(RECORD_HOOK,))

    def interrupt_at_the_health_check(message: str) -> None:
        # Ctrl-C reaches a script's thread wherever it is; here: right after the first health check answered.
        if "health check" in message:
            raise KeyboardInterrupt

    seed(host, artifact, {R1: "good"}, current=R1)  # a good release is live
    with pytest.raises(KeyboardInterrupt):
        Deployer(settings, artifact, release=R2, notify=interrupt_at_the_health_check).deploy(conn)
    assert host.current() == f"releases/{R1}"
    assert host.served() == [R2, R1]
    assert host.verdict(R2) == "failed\n"


class Gate:
    """A FIFO on the host that a hook blocks on (``cat``) after touching a file; the test waits for that file
    (a file appearing, not a clock), acts, then lets the hook go."""

    def __init__(self, host: Host, name: str = "gate") -> None:
        host.root.mkdir(parents=True, exist_ok=True)
        self.fifo, self.started = host.root / name, host.root / f"{name}-started"
        os.mkfifo(self.fifo)
        self.hook = f'touch "$BASE_DIR/{name}-started" && cat "$BASE_DIR/{name}"'
        #: The same, for the health check (it runs in base/current, without the variables).
        self.check = f"touch ../../{name}-started && cat ../../{name}"

    def wait_started(self, worker: threading.Thread) -> None:
        deadline = time.monotonic() + 120  # a bound for a broken run, not a timing assumption
        while not self.started.exists():
            assert worker.is_alive() and time.monotonic() < deadline, "the blocking step never started"
            time.sleep(0.02)

    def open(self, worker: threading.Thread) -> None:
        """End the remote ``cat``: end-of-file once its reader is there (it may be a moment behind its file)."""
        deadline = time.monotonic() + 120
        while worker.is_alive() and time.monotonic() < deadline:
            try:
                fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # no reader yet
                time.sleep(0.02)
                continue
            os.close(fd)
            return


def in_thread(call: object) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            call()  # type: ignore[operator]
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            errors.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    return worker, errors


def test_ctrl_c_during_the_health_check_switches_back_at_once_and_once(conn: Connection, host: Host, artifact: Path) -> None:
    settings = settings_for(artifact, host.base, after_switch=(RECORD_HOOK,))
    seed(host, artifact, {R1: "good"}, current=R1)  # a good release is live
    gate = Gate(host)
    messages: list[str] = []
    deployer = Deployer(dataclasses.replace(settings, health_check=gate.check),
                        artifact, release=R2, notify=messages.append)  # fmt: skip
    worker, errors = in_thread(lambda: deployer.deploy(conn))
    try:
        gate.wait_started(worker)
        deployer.interrupt(grace=300)  # a bound for a broken run; the undo takes a few commands
        # Undone while the host's own health check still hangs, before a fan-out would close the connection.
        assert host.current() == f"releases/{R1}"
        assert host.served() == [R2, R1]
        assert host.verdict(R2) == "failed\n"
    finally:
        gate.open(worker)
        worker.join(120)
    [error] = errors
    assert isinstance(error, DeployError), error
    assert str(error) == (
        f"{LABEL}: interrupted (Ctrl-C) during the health check; switched back to {R1} and re-ran its after-switch hooks"
    )
    assert host.served() == [R2, R1]  # switched back once, not again by the host's own worker
    assert host.current() == f"releases/{R1}" and host.verdict(R2) == "failed\n"
    assert messages.count(f"{LABEL}: switched back to {R1} and re-ran its after-switch hooks") == 1


def test_ctrl_c_before_the_switch_marks_the_release_failed_and_never_switches(conn: Connection, host: Host, artifact: Path) -> None:
    settings = settings_for(artifact, host.base, after_switch=(RECORD_HOOK,))
    seed(host, artifact, {R1: "good"}, current=R1)  # a good release is live
    gate = Gate(host)
    second = 'touch "$BASE_DIR/second-hook-ran"'
    deployer = Deployer(dataclasses.replace(settings, before_switch=(gate.hook, second)), artifact, release=R2)
    worker, errors = in_thread(lambda: deployer.deploy(conn))
    try:
        gate.wait_started(worker)
        deployer.interrupt(grace=300)  # a bound for a broken run; the undo takes a few commands
        assert host.verdict(R2) == "failed\n" and host.current() == f"releases/{R1}"
    finally:
        gate.open(worker)
        worker.join(120)
    [error] = errors
    assert isinstance(error, Interrupted) and str(error) == f"{LABEL}: interrupted (Ctrl-C)", error
    assert host.current() == f"releases/{R1}"
    assert host.served() == []  # nothing switched, so nothing to switch back or re-run
    assert not (host.root / "second-hook-ran").exists()  # the hook after the one Ctrl-C came in never ran


def test_a_host_reached_after_ctrl_c_is_not_touched(conn: Connection, host: Host, artifact: Path) -> None:
    deployer = Deployer(settings_for(artifact, host.base), artifact, release=R1)
    deployer.interrupt(grace=300)
    with pytest.raises(Interrupted, match=re.escape(f"{LABEL}: interrupted (Ctrl-C)") + "$"):
        deployer.deploy(conn)
    assert not host.root.exists()  # not even a release folder


def test_ctrl_c_during_the_upload_stops_before_the_next_file(conn: Connection, host: Host, artifact: Path) -> None:
    settings = settings_for(artifact, host.base)
    deployer = Deployer(settings, artifact, release=R1, on_bytes=lambda _: deployer.interrupt())
    with pytest.raises(Interrupted, match=re.escape(f"{LABEL}: interrupted (Ctrl-C) during the upload") + "$"):
        deployer.deploy(conn)
    release = host.root / "releases" / R1
    assert sorted(p.name for p in release.iterdir()) == [".ssmfab-release", "VERSION"]  # bin/ (sorted after it) never went
    assert host.verdict(R1) == "failed\n" and host.current() is None


def test_ctrl_c_between_health_checks_does_not_wait_out_the_delay(conn: Connection, host: Host, artifact: Path) -> None:
    # A delay nobody would wait out: were the wait not cut short, this test would hang (and be stopped).
    settings = settings_for(artifact, host.base, health_check="false", health_retries=3, health_delay=3600)
    seed(host, artifact, {R1: "good"}, current=R1)  # a good release is live
    deployer: Deployer

    def interrupt_after_the_first_attempt(message: str) -> None:
        if "attempt 1/3" in message:
            deployer.interrupt(grace=300)  # a bound for a broken run; the undo takes a few commands

    deployer = Deployer(settings, artifact, release=R2, notify=interrupt_after_the_first_attempt)
    with pytest.raises(DeployError) as stopped:
        deployer.deploy(conn)
    assert str(stopped.value) == f"{LABEL}: interrupted (Ctrl-C) during the health check; switched back to {R1}"
    assert host.current() == f"releases/{R1}" and host.verdict(R2) == "failed\n"


@pytest.mark.parametrize("operation", ["deploy", "rollback"])
def test_ctrl_c_after_a_host_finished_leaves_it_alone(conn: Connection, host: Host, artifact: Path, operation: str) -> None:
    # Ctrl-C while other hosts are still at it: this one is done and stays where it went.
    seed(host, artifact, {R1: "good", R2: "good"}, current=R2)
    deployer = Deployer(settings_for(artifact, host.base, after_switch=(RECORD_HOOK,)), artifact, release=R3)
    report = deployer.deploy(conn) if operation == "deploy" else deployer.rollback(conn)
    deployer.interrupt(grace=300)
    assert host.current() == f"releases/{report.release}" and host.served() == [report.release]
    assert host.verdict(report.release) == "good\n"


def test_ctrl_c_during_a_switch_back_under_way_does_not_switch_back_twice(conn: Connection, host: Host, artifact: Path) -> None:
    seed(host, artifact, {R1: "good"}, current=R1)
    gate = Gate(host)
    # R2's hook fails; the switch back re-runs R1's, which blocks the first time only (then records as usual).
    breaks = f'test "$(basename "$RELEASE_DIR")" != {R2}'
    first_rerun_blocks = f'if [ "$(basename "$RELEASE_DIR")" = {R1} ] && mkdir "$BASE_DIR/once"; then {gate.hook}; fi'
    settings = settings_for(artifact, host.base, after_switch=(first_rerun_blocks, RECORD_HOOK, breaks))
    deployer = Deployer(settings, artifact, release=R2)
    worker, errors = in_thread(lambda: deployer.deploy(conn))
    try:
        gate.wait_started(worker)  # the host's own worker is switching back
        deployer.interrupt(grace=300)
    finally:
        gate.open(worker)
        worker.join(120)
    [error] = errors
    assert str(error).endswith(f"; switched back to {R1} and re-ran its after-switch hooks"), error
    assert host.served() == [R2, R1]  # R1's hooks ran once more, not twice
    assert host.current() == f"releases/{R1}" and host.verdict(R2) == "failed\n"


def test_ctrl_c_with_no_previous_release_leaves_nothing_live(conn: Connection, host: Host, artifact: Path) -> None:
    gate = Gate(host)
    deployer = Deployer(settings_for(artifact, host.base, health_check=gate.check), artifact, release=R1)
    worker, errors = in_thread(lambda: deployer.deploy(conn))
    try:
        gate.wait_started(worker)
        deployer.interrupt(grace=300)
        assert host.current() is None  # removed at once, while the check still hangs
    finally:
        gate.open(worker)
        worker.join(120)
    [error] = errors
    assert str(error) == (
        f"{LABEL}: interrupted (Ctrl-C) during the health check; "
        f"no previous release to switch back to: removed {host.base}/current, nothing is live"
    )
    assert host.verdict(R1) == "failed\n"


def test_ctrl_c_whose_undo_cannot_mark_the_release_still_ends_cleanly(conn: Connection, host: Host, artifact: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seed(host, artifact, {R1: "good"}, current=R1)
    gate = Gate(host)
    unmarkable = f'mkdir "$RELEASE_DIR/.ssmfab-release" && {gate.hook}'  # the verdict file cannot be written
    deployer = Deployer(settings_for(artifact, host.base, before_switch=(unmarkable,)), artifact, release=R2)
    crashed: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: crashed.append(args.exc_value))
    worker, errors = in_thread(lambda: deployer.deploy(conn))
    try:
        gate.wait_started(worker)
        deployer.interrupt(grace=300)
    finally:
        gate.open(worker)
        worker.join(120)
    assert crashed == []  # no thread died with a traceback
    [error] = errors
    assert isinstance(error, Interrupted) and str(error) == f"{LABEL}: interrupted (Ctrl-C)", error
    assert host.current() == f"releases/{R1}"


def test_ctrl_c_returns_within_its_grace_when_a_switch_back_hangs(conn: Connection, host: Host, artifact: Path) -> None:
    seed(host, artifact, {R1: "good"}, current=R1)
    check, rerun = Gate(host, "check"), Gate(host, "rerun")
    # R1's after-switch hook hangs when the switch back re-runs it, like an app that never finishes reloading.
    hook = f'if [ "$(basename "$RELEASE_DIR")" = {R1} ]; then {rerun.hook}; fi'
    deployer = Deployer(settings_for(artifact, host.base, after_switch=(hook,), health_check=check.check), artifact, release=R2)
    worker, errors = in_thread(lambda: deployer.deploy(conn))
    before = set(threading.enumerate())
    undoers: list[threading.Thread] = []
    try:
        check.wait_started(worker)
        # From the main thread, as the command line calls it (threads it starts would inherit its daemon flag).
        deployer.interrupt(grace=0.05)  # returns, though the switch back it started hangs
        # The threads Ctrl-C left undoing this host (Thread keeps its target while it runs).
        undoers = [t for t in set(threading.enumerate()) - before if getattr(t, "_target", None) == deployer._undo]
        # Left running, they must not keep the command from exiting (daemon threads end with the process).
        assert undoers and all(t.daemon for t in undoers), undoers
        rerun.wait_started(undoers[0])
        check.open(worker)  # the host's own worker: the health check ends, it sees the Ctrl-C
        worker.join(120)
    finally:
        check.open(worker)
        for undoer in undoers:
            rerun.open(undoer)
            undoer.join(120)
        worker.join(120)
    [error] = errors
    # Its switch back was claimed by Ctrl-C and is still running: the host's error says so, not what it said.
    assert str(error) == f"{LABEL}: interrupted (Ctrl-C) during the health check; switched back (Ctrl-C)", error
    assert host.current() == f"releases/{R1}" and host.verdict(R2) == "failed\n"


def test_ctrl_c_during_the_last_after_switch_hook_switches_back(conn: Connection, host: Host, artifact: Path) -> None:
    seed(host, artifact, {R1: "good"}, current=R1)
    gate = Gate(host)
    blocks_in_r2 = f'if [ "$(basename "$RELEASE_DIR")" = {R2} ]; then {gate.hook}; fi'
    deployer = Deployer(settings_for(artifact, host.base, after_switch=(RECORD_HOOK, blocks_in_r2)), artifact, release=R2)
    worker, errors = in_thread(lambda: deployer.deploy(conn))
    try:
        gate.wait_started(worker)
        deployer.interrupt(grace=300)
        assert host.current() == f"releases/{R1}" and host.served() == [R2, R1]
    finally:
        gate.open(worker)
        worker.join(120)
    [error] = errors
    # The hook ended; the health check that comes next is never run.
    assert str(error) == f"{LABEL}: interrupted (Ctrl-C) during the health check; switched back to {R1} and re-ran its after-switch hooks"
    assert host.served() == [R2, R1] and host.verdict(R2) == "failed\n"


def test_ctrl_c_once_a_host_is_marked_good_lets_it_finish(server: tuple[SSHServer, Path], host: Host, artifact: Path) -> None:
    seed(host, artifact, {R1: "good", R2: "good"}, current=R2)
    deployer = Deployer(settings_for(artifact, host.base, keep_releases=2), artifact, release=R3)
    with connect(server, TappedConnection) as conn:
        conn.after = lambda command: deployer.interrupt(grace=300) if command.startswith("echo good") else None
        report = deployer.deploy(conn)
    # Live and healthy when Ctrl-C came: it stays, counts as done, and its old releases are still pruned.
    assert report.pruned == [R1] and host.releases() == [R2, R3]
    assert host.current() == f"releases/{R3}" and host.verdict(R3) == "good\n"


def test_nothing_a_host_prints_reaches_the_terminal(conn: Connection, host: Host, artifact: Path, capfd: pytest.CaptureFixture[str]) -> None:
    # Hosts deploy side by side; what their commands print would interleave under ssmfab's own lines.
    seed(host, artifact, {R1: "good", R2: "good"}, current=R2)
    settings = settings_for(
        artifact, host.base, before_switch=("echo LOUD; echo LOUD >&2",), after_switch=("echo LOUD; echo LOUD >&2",),
        health_check=f"echo LOUD; echo LOUD >&2; {HEALTH}", keep_releases=1,
    )  # fmt: skip
    Deployer(settings, artifact, release=R3).deploy(conn)
    Deployer(settings, Path(".")).rollback(conn)
    assert capfd.readouterr() == ("", "")


# -- rollback ------------------------------------------------------------------------------------------------------
def test_rollback_goes_to_the_newest_good_release_never_a_failed_one(conn: Connection, host: Host, artifact: Path) -> None:
    seed(host, artifact, {R1: "good", R2: "good", R3: "failed", R4: "good"}, current=R4)
    settings = settings_for(artifact, host.base, after_switch=(RECORD_HOOK,), health_retries=1)
    messages: list[str] = []
    report = Deployer(settings, Path("."), notify=messages.append).rollback(conn)
    assert (report.release, report.previous, report.health_attempts) == (R2, R4, 1)  # not R3: it failed
    assert host.current() == f"releases/{R2}"
    assert host.served() == [R2]  # hooks ran for the release rolled back to
    assert messages == [
        f"{LABEL}: {host.base}/current -> releases/{R2} (was {R4})",
        f"{LABEL}: health check passed on attempt 1/1: checking",
    ]
    assert host.releases() == [R1, R2, R3, R4] and host.verdict(R2) == "good\n"  # a rollback deletes and marks nothing

    report = Deployer(settings, Path(".")).rollback(conn)  # and again: one further back
    assert (report.release, report.previous) == (R1, R2) and host.served() == [R2, R1]

    # Nothing older than R1 at all: a clear error, nothing changes.
    with pytest.raises(DeployError) as none_older:
        Deployer(settings, Path(".")).rollback(conn)
    assert str(none_older.value) == f"{LABEL}: no release older than {R1} in {host.base}/releases passed its health check"
    assert host.current() == f"releases/{R1}" and host.served() == [R2, R1]


def test_rollback_refuses_releases_without_a_good_verdict(conn: Connection, host: Host, artifact: Path) -> None:
    seed(host, artifact, {R1: None, R2: "failed", R3: "good"}, current=R3)  # R1: made before verdicts were recorded
    (host.root / "releases" / "0-stray-file").write_text("not a release")  # only folders are releases
    with pytest.raises(DeployError) as refused:
        Deployer(settings_for(artifact, host.base), Path(".")).rollback(conn)
    assert str(refused.value) == (
        f"{LABEL}: no release older than {R3} in {host.base}/releases passed its health check "
        "(2 older, none marked good: failed or deployed before verdicts were recorded)"
    )
    assert host.current() == f"releases/{R3}"


def test_rollback_with_nothing_live_says_so(conn: Connection, host: Host) -> None:
    with pytest.raises(DeployError) as nothing:
        Deployer(settings_for(Path("."), host.base), Path(".")).rollback(conn)
    assert str(nothing.value) == f"{LABEL}: nothing to roll back: {host.base}/current does not exist"
    assert not host.root.exists()


def test_rollback_whose_health_check_fails_goes_back_where_it_was(conn: Connection, host: Host, artifact: Path) -> None:
    seed(host, artifact, {R1: "good", R2: "good"}, current=R2)
    host.breaks()
    settings = settings_for(artifact, host.base, after_switch=(RECORD_HOOK,), health_retries=1)
    with pytest.raises(DeployError) as failed:
        Deployer(settings, Path(".")).rollback(conn)
    assert str(failed.value) == (
        f"{LABEL}: rollback to {R1}: health check `{HEALTH}` failed 1x; switched back to {R2} and re-ran its after-switch hooks"
    )
    assert host.current() == f"releases/{R2}"
    assert host.served() == [R1, R2]
    assert (host.verdict(R1), host.verdict(R2)) == ("good\n", "good\n")  # a rollback marks nothing


def test_ctrl_c_during_a_rollback_goes_back_and_keeps_the_verdict(conn: Connection, host: Host, artifact: Path) -> None:
    seed(host, artifact, {R1: "good", R2: "good"}, current=R2)
    gate = Gate(host)
    settings = settings_for(artifact, host.base, after_switch=(RECORD_HOOK,), health_check=gate.check)
    deployer = Deployer(settings, Path("."))
    worker, errors = in_thread(lambda: deployer.rollback(conn))
    try:
        gate.wait_started(worker)
        deployer.interrupt(grace=300)  # a bound for a broken run; the undo takes a few commands
        assert host.current() == f"releases/{R2}"
    finally:
        gate.open(worker)
        worker.join(120)
    [error] = errors
    assert isinstance(error, DeployError), error
    assert str(error) == f"{LABEL}: interrupted (Ctrl-C) during the health check; switched back to {R2} and re-ran its after-switch hooks"
    assert host.served() == [R1, R2]
    assert (host.verdict(R1), host.verdict(R2)) == ("good\n", "good\n")  # R1 was good; Ctrl-C says nothing of it


# -- pruning -------------------------------------------------------------------------------------------------------


def test_keep_releases_keeps_the_newest(conn: Connection, host: Host, artifact: Path) -> None:
    seed(host, artifact, {R1: "good", R2: "good", R3: "good"}, current=R3)
    (host.root / "releases" / "0 copied by hand").mkdir()  # no verdict, a name with spaces: pruned like any
    settings = settings_for(artifact, host.base, keep_releases=3, health_check="")
    assert Deployer(settings, artifact, release=R4).deploy(conn).pruned == ["0 copied by hand", R1]
    assert Deployer(settings, artifact, release=R5).deploy(conn).pruned == [R2]
    assert host.releases() == [R3, R4, R5]


def test_the_live_and_previous_releases_are_kept_whatever_keep_releases_says(conn: Connection, host: Host, artifact: Path) -> None:
    seed(host, artifact, {R1: "good", R2: "failed", R3: "failed"}, current=R3)
    report = Deployer(settings_for(artifact, host.base, keep_releases=1), artifact, release=R4).deploy(conn)
    assert report.pruned == [R1, R2]
    assert host.releases() == [R3, R4]  # R3 ran before: kept for a switch back by hand, failed or not


def test_failed_releases_are_pruned_first_and_never_push_out_a_good_one(conn: Connection, host: Host, artifact: Path) -> None:
    # R3 and R4 failed their health check (and were switched back to R2).
    seed(host, artifact, {R1: "good", R2: "good", R3: "failed", R4: "failed"}, current=R2)
    report = Deployer(settings_for(artifact, host.base, keep_releases=3), artifact, release=R5).deploy(conn)
    assert report.pruned == [R3, R4]
    assert host.releases() == [R1, R2, R5]  # the three good ones; both failed ones went first


def test_releases_without_a_verdict_are_kept_before_failed_ones(conn: Connection, host: Host, artifact: Path) -> None:
    seed(host, artifact, {R1: "something else", R2: "failed", R3: "good"}, current=R3)  # R1: neither good nor failed
    report = Deployer(settings_for(artifact, host.base, keep_releases=3), artifact, release=R4).deploy(conn)
    # Kept: R4 (live), R3 (previous, good), then R1 (no verdict) before R2 (failed).
    assert report.pruned == [R2]
    assert host.releases() == [R1, R3, R4]


def test_good_releases_are_kept_before_newer_ones_without_a_verdict(conn: Connection, host: Host, artifact: Path) -> None:
    seed(host, artifact, {R1: "good", R2: None, R3: "good"}, current=R3)
    report = Deployer(settings_for(artifact, host.base, keep_releases=3), artifact, release=R4).deploy(conn)
    assert report.pruned == [R2]  # kept: R4 (live), R3 (previous), R1 (good, though older than R2)
    assert host.releases() == [R1, R3, R4]


# -- the plan (--dry-run) and the artifact -------------------------------------------------------------------------


def test_the_plan_says_every_step_in_order(tmp_path: Path) -> None:
    archive = tmp_path / "app.tgz"
    archive.write_bytes(b"")
    settings = DeploySettings(
        base_dir="srv/app/", before_switch=("make migrate",), after_switch=("sudo systemctl reload app", "touch up"),
        health_check="curl -fs localhost/health", health_retries=4, health_delay=2.5, keep_releases=7,
    )  # fmt: skip
    assert Deployer(settings, archive, release=R1).plan(LABEL) == [
        f"{LABEL}: upload {archive} to srv/app/releases/{R1} (verified)",
        f"{LABEL}: unpack app.tgz there",
        f"{LABEL}: run before switch: make migrate",
        f"{LABEL}: switch srv/app/current -> releases/{R1} (atomic rename)",
        f"{LABEL}: run after switch: sudo systemctl reload app",
        f"{LABEL}: run after switch: touch up",
        f"{LABEL}: health check `curl -fs localhost/health` up to 4x, 2.5s apart",
        f"{LABEL}: on any failure after the switch: switch back to the previous release and re-run its after-switch hooks",
        f"{LABEL}: keep the newest 7 good releases (failed ones are pruned first)",
    ]
    plain = Deployer(DeploySettings(base_dir="app", health_check=""), tmp_path, release=R1).plan("h")
    assert [step.split(": ", 1)[1].split(" ", 1)[0] for step in plain] == ["upload", "switch", "on", "keep"]


def test_an_artifact_is_checked_before_any_host_is_touched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=r"^no artifact to deploy: pass --artifact PATH or set deploy.artifact$"):
        check_artifact(DeploySettings())
    missing = tmp_path / "missing.tgz"
    with pytest.raises(ConfigError, match=f"^artifact {re.escape(str(missing))} does not exist: build it first or fix --artifact$"):
        check_artifact(DeploySettings(artifact=str(missing)))
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match=f"^artifact {re.escape(str(fifo))} is neither a file nor a directory$"):
        check_artifact(DeploySettings(artifact=str(fifo)))
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "app.tgz").write_bytes(b"x")
    assert check_artifact(DeploySettings(artifact="~/app.tgz")) == tmp_path / "app.tgz"
    assert stat.S_ISDIR(check_artifact(DeploySettings(artifact=str(tmp_path))).stat().st_mode)


def test_artifact_bytes_count_every_file_of_a_folder(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "deep").write_bytes(b"12345")
    (tmp_path / "top").write_bytes(b"123")
    assert artifact_bytes(tmp_path) == 8
    assert artifact_bytes(tmp_path / "top") == 3


def test_release_names_sort_in_time_order() -> None:
    start = datetime(2026, 12, 31, 23, 59, 59, 999000, tzinfo=timezone.utc)
    later = [release_name(start + timedelta(milliseconds=n)) for n in range(3)]
    assert later == sorted(later) and later[1].startswith("20270101T000000.000Z-")
