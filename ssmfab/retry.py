"""Jittered exponential backoff for the transient failures of starting an SSM session.

Right after boot an instance's agent flaps (TargetNotConnected), and large fan-outs hit StartSession's
rate limit (ThrottlingException). Both pass; AccessDenied or an unknown target never does, so only the
transient kinds are retried, and each retry is announced.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from .exceptions import TargetNotConnectedError, ThrottlingError

T = TypeVar("T")
RETRYABLE = (TargetNotConnectedError, ThrottlingError)


@dataclass(frozen=True)
class Backoff:
    #: Attempts in all (1 = no retry).
    attempts: int = 4
    #: First delay in seconds; each retry doubles it, up to ``max_delay``, with ±50% jitter.
    delay: float = 1.0
    max_delay: float = 20.0

    def delays(self, rng: random.Random | None = None) -> list[float]:
        chooser = rng or random.Random()
        return [
            min(self.max_delay, self.delay * 2**n) * chooser.uniform(0.5, 1.5) for n in range(max(0, self.attempts - 1))
        ]

    def run(
        self,
        action: Callable[[], T],
        *,
        label: str,
        notify: Callable[[str], Any] | None = None,
        sleep: Callable[[float], Any] = time.sleep,
    ) -> T:
        delays: list[float] = []  # drawn at the first retry: most actions never need one
        for attempt in range(1, self.attempts + 1):
            try:
                return action()
            except RETRYABLE as exc:
                if attempt == self.attempts:
                    raise
                delays = delays or self.delays()
                wait = delays[attempt - 1]
                kind = type(exc).__name__.removesuffix("Error")
                if notify is not None:
                    notify(f"{label}: {kind}, retrying in {wait:.1f}s (attempt {attempt + 1}/{self.attempts})")
                sleep(wait)
        raise AssertionError("unreachable: the last attempt returns or raises")
