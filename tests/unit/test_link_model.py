"""The sandbox's stand-in plugin: its SSM link model (how it is written, that the pacing it promises holds)
and its lean start."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from ssmfab.sandbox import plugin
from ssmfab.sandbox.plugin import LinkModel, Pacer


def test_off_by_default() -> None:
    for text in ("", "off", "0", "no"):
        assert not LinkModel.parse(text).active
    assert LinkModel.parse("").describe() == "off"


def test_on_means_what_users_report_for_real_sessions() -> None:
    model = LinkModel.parse("on")
    assert (model.setup, model.rate, model.chunk) == (1.0, 1_000_000, 1024)


def test_named_values_override_and_suffixes_scale() -> None:
    model = LinkModel.parse("setup=2.5,rate=800k")
    assert (model.setup, model.rate, model.chunk) == (2.5, 800_000, 1024)
    assert LinkModel.parse("rate=1.5m,chunk=512").rate == 1_500_000


def test_spec_parses_back_to_the_same_model() -> None:
    model = LinkModel(setup=0.25, rate=123_456, chunk=700)
    assert LinkModel.parse(model.spec()) == model


@pytest.mark.parametrize("text", ["speed=1", "rate=fast", "setup", "chunk=0", "setup=-1"])
def test_bad_values_name_the_part(text: str) -> None:
    with pytest.raises(ValueError, match=text.split("=")[0]):
        LinkModel.parse(text)


def test_pacer_holds_the_rate() -> None:
    pacer = Pacer(rate=1_000_000)
    started = time.monotonic()
    for _ in range(200):
        pacer.sent(1024)
    # 204,800 bytes at 1 MB/s cannot take less than ~0.2 s (a floor, not a speed target).
    assert time.monotonic() - started >= 0.19


def test_pacer_without_rate_never_waits() -> None:
    pacer = Pacer(rate=0)
    started = time.monotonic()
    for _ in range(10_000):
        pacer.sent(1 << 20)
    assert time.monotonic() - started < 1.0


def test_plugin_json_reads_and_writes_like_the_json_module() -> None:
    documents = [
        '{"SessionId": "s-1", "StreamUrl": "tcp://127.0.0.1:22", "TokenValue": "t"}',
        ' {"a": [1, 2.5, -3e2, true, false, null, "caf\\u00e9\\n\\"q\\""], "b": {}} ',
        "[]",
    ]
    for text in documents:
        assert plugin.loads(text) == json.loads(text)
        assert plugin.loads(text.encode()) == json.loads(text)
        assert plugin.dumps(plugin.loads(text)) == json.dumps(json.loads(text))
    for bad in ["", "nope", "{", '{"a": 1} trailing']:
        with pytest.raises(ValueError):
            plugin.loads(bad)


def test_plugin_starts_on_builtin_modules_only() -> None:
    """It runs once per connection: modules such as json, socket or typing would triple its start-up cost."""
    done = subprocess.run(
        [sys.executable, "-S", "-X", "importtime", plugin.__file__, "--version"], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == plugin.VERSION
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    assert imported & {"json", "re", "socket", "threading", "signal", "typing", "enum", "collections"} == set()
