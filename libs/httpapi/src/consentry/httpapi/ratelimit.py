"""Rate limiting per API key: a token bucket per key id, in each API process.

Every authenticated request takes one token from its key's bucket, which refills at
`http_rate_limit_per_second` up to `http_rate_limit_burst` tokens. An empty bucket answers
429 `rate-limited` (problem+json) with `Retry-After`: the whole seconds until a token is
back. The buckets live in the process (no shared store, no round trip): with N API
processes (`CONSENTRY_HTTP_WORKERS`, replicas) a key may reach N times the rate, which is the
price of never adding latency or a dependency to the request path. Only valid keys get a
bucket (the check follows authentication), so the table is bounded by the keys issued.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from consentry.httpapi.problems import Problem


@dataclass
class _Bucket:
    tokens: float
    updated: float


class KeyRateLimiter:
    """Token buckets by key id; `rate` tokens per second, at most `burst` (rate 0: off)."""

    def __init__(
        self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._rate = rate
        self._burst = float(max(burst, 1))
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    @property
    def enabled(self) -> bool:
        return self._rate > 0

    def wait_seconds(self, key_id: str) -> float:
        """Take a token for `key_id`: 0.0 when there was one, else the seconds until one."""
        if not self.enabled:
            return 0.0
        now = self._clock()
        bucket = self._buckets.get(key_id)
        if bucket is None:
            bucket = self._buckets[key_id] = _Bucket(self._burst, now)
        else:
            elapsed = max(now - bucket.updated, 0.0)  # a clock that steps back adds nothing
            bucket.tokens = min(self._burst, bucket.tokens + elapsed * self._rate)
            bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self._rate

    def check(self, key_id: str) -> None:
        """Raise 429 `rate-limited` with `Retry-After` when `key_id` has no token left."""
        wait = self.wait_seconds(key_id)
        if wait > 0:
            retry_after = max(1, math.ceil(wait))
            raise Problem(
                429,
                "rate-limited",
                f"Too many requests with this API key; retry after {retry_after} s",
                headers={"Retry-After": str(retry_after)},
            )
