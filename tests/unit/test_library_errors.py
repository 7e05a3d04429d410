"""Errors raised to library callers speak the library's terms (keywords), not only command-line flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from ssmfab.aws import aws_context
from ssmfab.config import Settings
from ssmfab.exceptions import ConfigError


def test_no_region_names_the_keyword(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(ConfigError) as caught:
        aws_context(Settings())
    assert "region=" in str(caught.value) and "pass --region" not in str(caught.value)
