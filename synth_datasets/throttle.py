"""How many requests are in flight at once: a fixed number, or adaptive (``max_concurrency="auto"``).

The adaptive limit is TCP's congestion window applied to a rate-limited API (additive increase,
multiplicative decrease): it grows by one per clean answer until the first 429 or 503 (doubling
each round trip), then by one per round trip of clean answers, at most one a second; it shrinks
by a tenth on each refusal. A token bucket refuses only once it is empty: a gentle decrease keeps
it in use, a slow growth empties it seldom. Only answers to requests sent since the last decrease
move it (the refusals of a burst sent before it say nothing new), and it grows only while it is
used up. A request waiting out its ``Retry-After`` holds no place; when even one request at a
time is refused, nothing is sent until its ``Retry-After`` has passed.

One adaptive limit is shared by every engine of a process sending to the same endpoint with the
same token, since the quota is theirs together.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable

__all__ = ["REFUSALS", "ConcurrencyLimit", "Throttle", "shared_limit"]

logger = logging.getLogger("synth_datasets.throttle")

REFUSALS = frozenset({429, 503})  # the answers that mean "too many": the limit shrinks
START = 4  # the adaptive limit's first value (below the ceiling)
DECREASE = 0.9  # the share of the limit kept on a refusal
GROWTH = 1.0  # past the first refusal, the most the limit grows in a second


class ConcurrencyLimit:
    """Places for requests in flight: ``size`` of them, or (``size=None``) an adaptive number
    between 1 and ``ceiling``."""

    def __init__(self, size: int | None, ceiling: int) -> None:
        self.adaptive = size is None
        self.ceiling = ceiling if size is None else size
        self.limit = float(min(START, ceiling) if size is None else size)
        self.in_flight = 0
        self._round = 0  # one more at each decrease
        self._threshold = math.inf  # below it, the limit doubles per round trip
        self._grown = 0.0  # monotonic time of the last growth past the threshold
        self._resume = 0.0  # monotonic time before which nothing is sent
        self._changed = threading.Condition()

    def __repr__(self) -> str:
        kind = f"auto, ceiling {self.ceiling}" if self.adaptive else "fixed"
        return f"<ConcurrencyLimit {self.limit:.1f} ({kind}), {self.in_flight} in flight>"

    def acquire(self) -> int:
        """Wait for a place; returns the round it was taken in (for ``release``)."""
        with self._changed:
            while True:
                pause = self._resume - time.monotonic()
                if pause <= 0 and self.in_flight < int(self.limit):
                    self.in_flight += 1
                    return self._round
                self._changed.wait(pause if pause > 0 else None)

    def release(self, taken: int, status: int | None, retry_after: float = 0.0) -> None:
        """Give a place back, with the answer's status (None: no answer) and, for a refusal, the
        seconds it asked to wait."""
        with self._changed:
            # Grown only while used up: a limit far above what is in flight (the client busy
            # elsewhere, the data running out) would let a burst of that size out at once.
            full = self.in_flight >= self.limit - 1
            self.in_flight -= 1
            if self.adaptive and taken == self._round and status is not None:
                now = time.monotonic()
                if status in REFUSALS:
                    if self.limit < 2:  # one at a time is too many: everyone waits
                        self._resume = max(self._resume, now + retry_after)
                    before, self.limit = self.limit, max(1.0, self.limit * DECREASE)
                    self._threshold = self.limit
                    logger.debug(
                        "%d: requests in flight at most %.1f (was %.1f, %d in flight)",
                        status,
                        self.limit,
                        before,
                        self.in_flight,
                    )
                    self._round += 1
                    self._grown = now
                elif status < 300 and full:
                    if self.limit < self._threshold:
                        grow = 1.0
                    else:  # one per round trip, and at most GROWTH a second
                        grow = min(1.0 / self.limit, (now - self._grown) * GROWTH)
                        self._grown = now
                    self.limit = min(float(self.ceiling), self.limit + grow)
            free = int(self.limit) - self.in_flight
            if free > 0:
                self._changed.notify(free)


_SHARED: dict[tuple[int, str, str], ConcurrencyLimit] = {}
_SHARED_LOCK = threading.Lock()


def shared_limit(base_url: str, api_key: str, ceiling: int) -> ConcurrencyLimit:
    """The process's adaptive limit for this endpoint and token (made on first use); a larger
    ``ceiling`` raises it. Keyed by the process id too: a forked child learns its own."""
    digest = hashlib.sha256(api_key.encode()).hexdigest()  # never kept in clear
    key = (os.getpid(), base_url, digest)
    with _SHARED_LOCK:
        limit = _SHARED.get(key)
        if limit is None:
            limit = _SHARED[key] = ConcurrencyLimit(None, ceiling)
        else:
            limit.ceiling = max(limit.ceiling, ceiling)
        return limit


class Throttle:
    """One engine's way through a ``ConcurrencyLimit``: the place each of its threads holds, and
    the counts of its attempts (``count(retries=1)``, ``count(rate_limited=1)``)."""

    def __init__(self, limit: ConcurrencyLimit, count: Callable[..., None] | None = None) -> None:
        self.limit = limit
        self.in_flight = 0  # this engine's own, for the progress bar
        self._count = count
        self._lock = threading.Lock()
        self._held = threading.local()

    def __repr__(self) -> str:
        return f"<Throttle {self.in_flight} in flight of {self.limit!r}>"

    def acquire(self) -> None:
        """Before an attempt: wait for a place."""
        taken = self.limit.acquire()
        self._held.taken = taken
        with self._lock:
            self.in_flight += 1

    def release(self, status: int | None, retry_after: float = 0.0) -> None:
        """After an attempt: its status (None: no answer); a thread holding no place is a no-op."""
        taken = getattr(self._held, "taken", None)
        if taken is None:
            return
        self._held.taken = None
        with self._lock:
            self.in_flight -= 1
        self.limit.release(taken, status, retry_after)
        if status == 429 and self._count is not None:
            self._count(rate_limited=1)

    def wait(self, status: int | None, seconds: float) -> None:
        """A retry's wait, spent without a place (taken again after it)."""
        if self._count is not None:
            self._count(retries=1)
        holding = getattr(self._held, "taken", None) is not None
        self.release(status, seconds)
        time.sleep(seconds)
        if holding:
            self.acquire()
