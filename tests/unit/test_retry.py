"""Backoff retries only what passes (agent flaps, throttling), announces each retry, and gives up in time."""

from __future__ import annotations

import random

import pytest

from ssmfab.exceptions import AccessDeniedError, TargetNotConnectedError, ThrottlingError
from ssmfab.retry import Backoff


class Flaky:
    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "connected"


def test_transient_errors_are_retried_with_growing_jittered_delays() -> None:
    slept: list[float] = []
    notes: list[str] = []
    action = Flaky(TargetNotConnectedError("x"), ThrottlingError("y"))
    result = Backoff(attempts=4, delay=1.0).run(action, label="web-1", notify=notes.append, sleep=slept.append)
    assert result == "connected" and action.calls == 3
    assert 0.5 <= slept[0] <= 1.5 and 1.0 <= slept[1] <= 3.0
    assert notes[0].startswith("web-1: TargetNotConnected, retrying in") and notes[0].endswith("(attempt 2/4)")
    assert notes[1].startswith("web-1: Throttling, retrying in")


def test_permanent_errors_are_not_retried() -> None:
    action = Flaky(AccessDeniedError("denied"))
    with pytest.raises(AccessDeniedError):
        Backoff(attempts=4).run(action, label="web-1", sleep=lambda s: None)
    assert action.calls == 1


def test_gives_up_after_the_last_attempt() -> None:
    action = Flaky(*[TargetNotConnectedError("x")] * 5)
    with pytest.raises(TargetNotConnectedError):
        Backoff(attempts=3).run(action, label="web-1", sleep=lambda s: None)
    assert action.calls == 3


def test_delays_are_capped() -> None:
    delays = Backoff(attempts=10, delay=1.0, max_delay=5.0).delays(random.Random(7))
    assert len(delays) == 9 and max(delays) <= 7.5 and all(d >= 0.5 for d in delays)
