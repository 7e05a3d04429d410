"""The sandbox's SSM link model: how it is written, and that the pacing it promises holds."""

from __future__ import annotations

import time

import pytest

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
