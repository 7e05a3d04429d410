"""The time a host gets to answer with a checksum: the stall limit, plus the time to hash the bytes at the
slowest speed assumed (a large file on a slow disk is not taken for a stuck host)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from ssmfab.transfer.session import HASH_BYTES_PER_SECOND, answer_timeout


def test_the_checksums_time_is_the_stall_limit_plus_the_time_to_hash_the_bytes() -> None:
    session: Any = SimpleNamespace(stall=60.0)
    assert answer_timeout(session, 0) == 60.0
    assert answer_timeout(session, 2 * HASH_BYTES_PER_SECOND) == 62.0
    assert answer_timeout(SimpleNamespace(stall=5.0), 10 * HASH_BYTES_PER_SECOND) == 15.0  # type: ignore[arg-type]
