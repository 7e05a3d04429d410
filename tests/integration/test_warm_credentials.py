"""Credentials that expire stop new sessions, not live ones: a keeper whose credentials can no longer be refreshed
still runs a command on the connection it holds, while a host it holds nothing for fails in one line.

AWS itself cannot run here, and the sandbox's moto checks no signature, so the expiry is the credential
source's: a profile whose ``credential_process`` (the way SSO helpers, aws-vault and the like hand out
short-lived keys) gives keys that expire in 5 minutes, which botocore therefore asks for again before every
call, until the test revokes them: from then on the process fails, as an expired SSO login's does."""

from __future__ import annotations

import sys
from pathlib import Path

from ssmfab.sandbox import Sandbox

from .test_warm import ANNOUNCEMENT, Warm, warm  # noqa: F401 - warm is a fixture

__all__ = ["warm"]

CREDENTIAL_PROCESS = """\
import datetime, json, os, sys
if os.path.exists(sys.argv[1]):
    sys.exit("the session token expired: log in again")
expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=5)
print(json.dumps({"Version": 1, "AccessKeyId": "AKIAEXPIRING", "SecretAccessKey": "secret", "SessionToken": "token",
                  "Expiration": expires.isoformat()}))
"""


def test_expired_credentials_stop_new_sessions_not_live_ones(warm: Warm, sandbox: Sandbox, tmp_path: Path) -> None:
    revoked = tmp_path / "revoked"
    script = tmp_path / "credentials.py"
    script.write_text(CREDENTIAL_PROCESS)
    config = tmp_path / "aws-config"
    config.write_text(f"[profile expiring]\nregion = us-east-1\ncredential_process = {sys.executable} {script} {revoked}\n")
    env = {k: v for k, v in warm.env.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")}
    env.update(AWS_CONFIG_FILE=str(config), AWS_PROFILE="expiring")
    warm.env = env  # the fixture's persist --stop runs as this identity too

    first = warm("run", "--name", "web-1", "echo first")
    assert first.returncode == 0 and ANNOUNCEMENT in first.stderr and "[web-1] first" in first.stdout, first.stderr
    [kept] = warm.listing()
    revoked.touch()  # from now on every AWS call fails: StartSession too

    # The warm connection lives on: the command runs on it (its hosts were looked up moments ago).
    again = warm("run", "--name", "web-1", "echo still-warm")
    assert again.returncode == 0 and "[web-1] still-warm" in again.stdout, again.stderr
    [still] = warm.listing()
    assert still["session_id"] == kept["session_id"] and still["uses"] == 2
    # A host the keeper holds nothing for needs AWS: one line says the credentials are the cause.
    new = warm("run", "--name", "web-2", "echo never")
    assert new.returncode != 0 and "never" not in new.stdout
    assert "Traceback" not in new.stderr
    [error] = [line for line in new.stderr.splitlines() if line.strip()]
    assert error.startswith("error: AWS credentials could not be renewed while looking up instances for --name web-2")
    assert error.endswith("the session token expired: log in again: refresh them (e.g. `aws sso login`)"), error
    assert [row["instance_id"] for row in warm.listing()] == [kept["instance_id"]]
