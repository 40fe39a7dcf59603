"""A run's budget: how many requests (``max_requests``) and generations (``max_generations``) it
may send, spent before each request that the cache cannot answer.

A request that does not fit is not sent and leaves no row (it was never asked): the run goes on,
so answers already in the cache still become rows, and it ends partial. The record of what was
left out (``Budget.partial``) goes into the provenance, hence the card, the report, the manifest
and the exit code of the command line.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

__all__ = ["BUDGET_OPTIONS", "Budget", "partial_message"]

logger = logging.getLogger("synth_datasets.budget")

BUDGET_OPTIONS = ("max_requests", "max_generations")


@dataclass
class Budget:
    """What one run has spent and left out. On Ray the same class is one actor shared by all."""

    # One lock for every instance, held for a few additions: the counters alone pickle.
    _lock: ClassVar[threading.Lock] = threading.Lock()
    max_requests: int | None = None
    max_generations: int | None = None
    requests_sent: int = 0
    generations_sent: int = 0
    requests_not_sent: int = 0
    seed_rows_not_sent: int = 0
    stopped_by: str | None = None

    def take(self, seed_rows: int, generations: int) -> bool:
        """Spend one request asking for ``generations``; False (nothing spent) if it does not fit
        in what is left."""
        with self._lock:
            over = None
            if self.max_requests is not None and self.requests_sent >= self.max_requests:
                over = "max_requests"
            elif (
                self.max_generations is not None
                and self.generations_sent + generations > self.max_generations
            ):
                over = "max_generations"
            if over is None:
                self.requests_sent += 1
                self.generations_sent += generations
                return True
            first = self.stopped_by is None
            self.stopped_by = self.stopped_by or over
            self.requests_not_sent += 1
            self.seed_rows_not_sent += seed_rows
        if first:
            logger.info("synth_datasets: %s reached: no further request is sent", over)
        return False

    def partial(self) -> dict[str, Any] | None:
        """What the provenance records of a run that stopped at its budget; None if it did not."""
        if self.stopped_by is None:
            return None
        return {
            "stopped_by": self.stopped_by,
            "limit": getattr(self, self.stopped_by),
            "requests_sent": self.requests_sent,
            "generations_sent": self.generations_sent,
            "requests_not_sent": self.requests_not_sent,
            "seed_rows_not_sent": self.seed_rows_not_sent,
        }


def partial_message(partial: Mapping[str, Any], spell: Callable[[str], str] | None = None) -> str:
    """One line on a run that stopped at its budget; ``spell`` names the option as the user
    typed it (the command line's flag), by default ``name=value``."""
    name, limit = str(partial["stopped_by"]), partial["limit"]
    option = f"{spell(name)} {limit}" if spell else f"{name}={limit}"
    again = spell(name) if spell else name
    requests, seeds = partial["requests_not_sent"], partial["seed_rows_not_sent"]
    return (
        f"stopped at the budget ({option}): {requests} request{'s' * (requests != 1)} for "
        f"{seeds} seed row{'s' * (seeds != 1)} {'were' if requests != 1 else 'was'} not sent "
        "(those seeds have no rows); "
        f"what was answered is cached, so a rerun with a higher {again} continues from there "
        "without paying for it again"
    )
