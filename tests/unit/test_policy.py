"""Fan-out policy arguments: counts and percentages, and the mistakes users make with them."""

from __future__ import annotations

import pytest

from ssmfab.exceptions import ConfigError
from ssmfab.fleet import Policy, parse_count


@pytest.mark.parametrize(
    ("value", "total", "round_up", "expected"),
    [
        (None, 10, True, None),
        ("", 10, True, None),
        ("3", 10, True, 3),
        (4, 10, False, 4),
        ("25%", 10, True, 3),  # batches round up: never a batch of zero hosts
        ("25%", 10, False, 2),  # failure budgets round down: 25% of 10 tolerates 2
        ("1%", 3, True, 1),
        ("0%", 8, False, 0),
        ("100%", 7, True, 7),
    ],
)
def test_parse_count(value: str | int | None, total: int, round_up: bool, expected: int | None) -> None:
    assert parse_count(value, total, "batch", round_up=round_up) == expected


@pytest.mark.parametrize("value", ["-1", "abc", "150%", "%", "1.5"])
def test_parse_count_rejects_nonsense(value: str) -> None:
    with pytest.raises(ConfigError, match=f"--max-failures '{value}'"):
        parse_count(value, 10, "max-failures", round_up=False)


def test_policy_validation() -> None:
    with pytest.raises(ConfigError, match="--parallel must be at least 1"):
        Policy(parallel=0)
    with pytest.raises(ConfigError, match="--timeout must be positive"):
        Policy(timeout=0)
