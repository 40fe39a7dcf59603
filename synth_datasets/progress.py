"""The live progress bar of an expansion: rows and rows/s, requests in flight, retries, 429s and
error rows as they happen, and an ETA.

A ticker thread redraws it twice a second from the counters (the request threads add rows as each
answer arrives, the map calls their seeds and error rows once parsed); it closes itself, leaving
the totals on screen, once every seed is accounted for.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

if TYPE_CHECKING:
    from .mapper import ExpansionStats
    from .throttle import Throttle

__all__ = ["Progress"]

INTERVAL = 0.5  # seconds between redraws


class Progress:
    """A bar of ``seeds`` x ``multiplier`` target rows."""

    def __init__(
        self, seeds: int, multiplier: int, stats: ExpansionStats, throttle: Throttle
    ) -> None:
        self.seeds = seeds
        self.stats = stats
        self.throttle = throttle
        self._done = 0  # seeds accounted for
        self._rows = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.bar = tqdm(total=seeds * multiplier, unit=" rows", desc="synth_datasets", leave=True)
        self._ticker = threading.Thread(target=self._tick, name="synth_datasets-progress")
        self._ticker.daemon = True
        self._ticker.start()

    def add_rows(self, rows: int) -> None:
        """An answer (or a failed request) made ``rows`` rows."""
        with self._lock:
            self._rows += rows

    def account(self, seeds: int) -> None:
        """A map call's ``seeds`` are done, their error rows counted."""
        with self._lock:
            self._done += seeds
            if self._done >= self.seeds:
                self._stop.set()

    def text(self) -> str:
        """What the bar says besides the rows: in flight, retries, 429s, error rows."""
        s, limit = self.stats, self.throttle.limit
        cap = f" of {int(limit.limit)}" if limit.adaptive else ""
        return (
            f"{self.throttle.in_flight}{cap} in flight, {s.retries} retries, "
            f"{s.rate_limited} 429s, {s.error_rows} error rows"
        )

    def _draw(self) -> None:
        with self._lock:
            rows = self._rows
        self.bar.update(rows - self.bar.n)
        self.bar.set_postfix_str(self.text(), refresh=True)

    def _tick(self) -> None:
        while not self._stop.wait(INTERVAL):
            self._draw()
        self._draw()
        self.bar.close()

    def close(self) -> None:
        """Stop the redraws and leave the last line (called when the engine closes)."""
        self._stop.set()
        if self._ticker is not threading.current_thread():
            self._ticker.join()
