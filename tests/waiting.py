"""Waiting for an event in a test: a condition polled until it holds. The limit only stops a broken run from
hanging; no test's verdict rests on how long something took."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(condition: Callable[[], bool], what: str, limit: float = 120.0) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``limit`` seconds."""
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened within {limit:g} s: {what}")
        time.sleep(0.01)
