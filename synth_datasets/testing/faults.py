"""``Faults``: what the reference server does wrong, as one plain value (no aiohttp here).

Each field's ``help`` metadata is also the ``serve`` command's help for the flag of that name,
so the command line and the dataclass cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, TypeGuard

__all__ = ["FRAMINGS", "SCRIPT_WORDS", "Faults", "parse_script"]

FRAMINGS = ("json", "chunked", "sse", "ndjson")
SCRIPT_WORDS = ("drop", "truncate", "hang", "stall", "ok")


def parse_script(text: str) -> list[int | str]:
    """``"429,drop,ok"`` as ``[429, "drop", "ok"]`` (the ``--script`` flag)."""
    parts = (part.strip() for part in text.split(","))
    return [int(part) if part.isdigit() else part for part in parts if part]


def _opt(default: Any, help: str, **argparse_options: Any) -> Any:
    """A field whose metadata carries its ``serve`` flag's help (and argparse options)."""
    return dataclasses.field(default=default, metadata={"help": help, **argparse_options})


def _rate(what: str) -> Any:
    return _opt(0.0, f"fraction {what}")


@dataclasses.dataclass
class Faults:
    """What the server does wrong, per instance; everything is off by default.

    Rates are fractions in [0, 1]. Status, drop and truncate outcomes are drawn once per generate
    request from ``random.Random(seed)``; per-item faults (malformed, fenced, wrapped, shortfall,
    extra, alter_original, shuffle) are derived from the request content and ``seed``, so they are
    deterministic per item. ``script`` is consumed first, one entry per generate request
    (a request refused by ``max_concurrency`` consumes nothing). Latency applies to every
    admitted request and is its whole time to answer, the server's own work included; scripted
    and random statuses are answered before auth and validation.

    Script words: ``"drop"`` (the connection closes mid-body), ``"truncate"`` (the body ends early
    but cleanly), ``"hang"`` (nothing is sent for ``hang`` seconds, then the whole answer,
    streamed: a read timeout before the headers), ``"stall"`` (headers and half the body, a pause
    of ``hang`` seconds, then the rest: a read timeout mid-body) and ``"ok"``. Each counts under
    its own key in ``stats()["by_status"]`` instead of ``"200"``.
    """

    latency: float = _opt(0.0, "seconds each answer takes in all (work included)")
    latency_jitter: float = _opt(0.0, "extra uniform [0, J] seconds")
    rate_429: float = _rate("answered 429")
    rate_500: float = _rate("answered 500")
    rate_502: float = _rate("answered 502")
    rate_503: float = _rate("answered 503")
    retry_after: float = _opt(1.0, "Retry-After seconds on 429/503")
    hang: float = _opt(5.0, "seconds a scripted 'hang' or 'stall' request waits (default 5)")
    rate_drop: float = _rate("whose connection drops mid-body")
    rate_truncate: float = _rate("whose body ends early")
    framing: str = _opt("json", "body framing", choices=FRAMINGS)
    rate_malformed: float = _rate("of malformed generations")
    rate_fenced: float = _rate("wrapped in prose or fences")
    rate_wrapped: float = _rate('wrapped as {"generated_data"}')
    shuffle: bool = _opt(False, "shuffle item order")
    rate_shortfall: float = _rate("of generations omitted")
    rate_extra: float = _rate("of examples given one extra")
    rate_alter_original: float = _rate("of items whose original is altered")
    max_concurrency: int | None = _opt(None, "answer 429 beyond N in-flight requests", type=int)
    script: list[int | str] = dataclasses.field(
        default_factory=list,
        metadata={
            "help": "comma-separated forced outcomes for the first requests, e.g. 429,429,drop,ok "
            f"(words: {', '.join(SCRIPT_WORDS)})",
            "type": parse_script,
        },
    )
    seed: int = _opt(0, "seed of the fault RNG")

    def __post_init__(self) -> None:
        """Refuse bad values up front: a typo'd fault must not silently mean "no fault"."""
        for field in dataclasses.fields(self):
            if isinstance(field.default, float):
                self._check_number(field.name)
        if self.framing not in FRAMINGS:
            raise ValueError(f"Faults.framing must be one of {FRAMINGS}, got {self.framing!r}")
        if not isinstance(self.shuffle, bool):
            raise ValueError(f"Faults.shuffle must be a bool, got {self.shuffle!r}")
        limit = self.max_concurrency
        if limit is not None and (not _is_int(limit) or limit < 1):
            raise ValueError(f"Faults.max_concurrency must be None or an int >= 1, got {limit!r}")
        if not _is_int(self.seed):
            raise ValueError(f"Faults.seed must be an int, got {self.seed!r}")
        if isinstance(self.script, (str, bytes)) or not isinstance(self.script, Sequence):
            raise ValueError(f"Faults.script must be a list, got {self.script!r}")
        for entry in self.script:
            if _is_int(entry):
                if entry != 200 and not 400 <= entry <= 599:
                    raise ValueError(f"Faults.script status must be 200 or 4xx/5xx, got {entry}")
            elif entry not in SCRIPT_WORDS:
                raise ValueError(
                    f"Faults.script entry must be an int status or one of {SCRIPT_WORDS}, "
                    f"got {entry!r}"
                )
        # Our own copy: the server consumes it, the caller's list stays as it was.
        self.script = list(self.script)

    def _check_number(self, name: str) -> None:
        value = getattr(self, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"Faults.{name} must be a number, got {value!r}")
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"Faults.{name} must be a finite number >= 0, got {value!r}")
        if name.startswith("rate_") and value > 1:
            raise ValueError(f"Faults.{name} is a fraction in [0, 1], got {value!r}")
        setattr(self, name, float(value))


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)
