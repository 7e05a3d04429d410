"""The data the benchmark moves: random bytes for raw transfers, realistic text logs for fetch-logs."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

MIB = 1024 * 1024

_PATHS = ["/", "/api/v1/orders", "/api/v1/orders/{n}", "/api/v1/users/{n}/cart", "/static/app.{h}.js",
          "/static/css/site.{h}.css", "/healthz", "/login", "/search?q=item{n}", "/api/v1/inventory/{n}"]  # fmt: skip
_AGENTS = ["Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
           "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5",
           "curl/8.5.0", "ELB-HealthChecker/2.0", "python-requests/2.32.3", "Go-http-client/2.0"]  # fmt: skip
_LEVELS = ["INFO"] * 12 + ["DEBUG"] * 6 + ["WARN"] * 2 + ["ERROR"]
_EVENTS = ["order placed", "payment authorised", "cache miss", "cache hit", "user signed in", "cart updated",
           "inventory reserved", "retrying upstream call", "request completed", "slow query"]  # fmt: skip
_METHODS = ["GET"] * 8 + ["POST"] * 2 + ["PUT", "DELETE"]
_STATUSES = [200] * 20 + [201, 204, 301, 304, 400, 401, 403, 404, 500, 502]


def random_file(path: Path, size: int) -> str:
    """``size`` random bytes at ``path`` (incompressible, like an artifact); returns the SHA-256."""
    digest = hashlib.sha256()
    rng = random.Random(size)
    with path.open("wb") as out:
        left = size
        while left:
            block = rng.randbytes(min(left, 4 * MIB))
            out.write(block)
            digest.update(block)
            left -= len(block)
    return digest.hexdigest()


#: Clients repeat in real access logs: a pool, not a fresh address per line.
_CLIENTS = [f"10.{n % 251}.{n * 7 % 253}.{n * 13 % 254 + 1}" for n in range(5000)]


def _access_line(rng: random.Random, second: int) -> str:
    ip = rng.choice(_CLIENTS)
    path = rng.choice(_PATHS).format(n=rng.randrange(100_000), h=f"{rng.getrandbits(32):08x}")
    stamp = f"{1 + second // 86400 % 28:02d}/Nov/2026:{second // 3600 % 24:02d}:{second // 60 % 60:02d}:{second % 60:02d}"
    return (
        f'{ip} - - [{stamp} +0000] "{rng.choice(_METHODS)} {path} HTTP/1.1" {rng.choice(_STATUSES)} '
        f'{rng.randrange(200, 90_000)} "-" "{rng.choice(_AGENTS)}" {rng.random() * 0.8:.3f}\n'
    )


def _app_line(rng: random.Random, second: int) -> str:
    stamp = f"2026-11-{1 + second // 86400 % 28:02d}T{second // 3600 % 24:02d}:{second // 60 % 60:02d}:{second % 60:02d}.{rng.randrange(1000):03d}Z"
    return (
        f'{{"ts":"{stamp}","level":"{rng.choice(_LEVELS)}","msg":"{rng.choice(_EVENTS)}",'
        f'"request_id":"{rng.getrandbits(64):016x}","user":{rng.randrange(50_000)},"ms":{rng.randrange(1, 900)}}}\n'
    )


def log_tree(root: Path, total: int) -> int:
    """Write about ``total`` bytes of nginx access logs and JSON application logs (rotated files) under
    ``root``; returns the bytes written. Seeded: every run gets the same text."""
    rng = random.Random(42)
    files = [root / "nginx" / "access.log", root / "nginx" / "access.log.1", root / "app" / "app.log", root / "app" / "app.log.1"]
    share = total // len(files)
    written = 0
    for index, path in enumerate(files):
        path.parent.mkdir(parents=True, exist_ok=True)
        line = _access_line if "nginx" in path.parts else _app_line
        second = index * 500_000
        size = 0
        with path.open("w") as out:
            lines: list[str] = []
            while size < share:
                text = line(rng, second)
                second += rng.randrange(2)
                lines.append(text)
                size += len(text)
                if len(lines) == 2000:
                    out.write("".join(lines))
                    lines.clear()
            out.write("".join(lines))
        written += size
    return written


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while block := source.read(4 * MIB):
            digest.update(block)
    return digest.hexdigest()
