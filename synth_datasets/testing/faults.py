"""``Faults``: what the reference server does wrong, as one plain value (no aiohttp here).

Each field's metadata is also the ``serve`` command's flag of that name (help, argparse options).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, NoReturn, TypeGuard

from ..errors import ConfigurationError

__all__ = [
    "CONTENT_TYPES",
    "FRAMINGS",
    "SCRIPT_WORDS",
    "Faults",
    "parse_schedule",
    "parse_script",
]

# Each body framing's content type ("chunked" is JSON sent in chunks).
CONTENT_TYPES = {
    "json": "application/json",
    "chunked": "application/json",
    "sse": "text/event-stream",
    "ndjson": "application/x-ndjson",
}
FRAMINGS = tuple(CONTENT_TYPES)
SCRIPT_WORDS = ("drop", "truncate", "hang", "stall", "ok")


def parse_script(text: str) -> list[int | str]:
    """``"429,drop,ok"`` as ``[429, "drop", "ok"]`` (the ``--script`` flag)."""
    parts = (part.strip() for part in text.split(","))
    return [int(part) if part.isdigit() else part for part in parts if part]


def parse_schedule(text: str) -> list[tuple[float, float]]:
    """``"10:0.5,30:1"`` as ``[(10.0, 0.5), (30.0, 1.0)]`` (the ``--limit-schedule`` flag)."""
    steps = []
    for part in (p.strip() for p in text.split(",")):
        if part:
            at, _, factor = part.partition(":")
            steps.append((float(at), float(factor)))
    return steps


def _opt(default: Any, help: str, **argparse_options: Any) -> Any:
    """A field whose metadata carries its ``serve`` flag's help (and argparse options)."""
    return dataclasses.field(default=default, metadata={"help": help, **argparse_options})


def _rate(what: str) -> Any:
    return _opt(0.0, f"fraction {what}")


@dataclasses.dataclass
class Faults:
    """What the server does wrong, per instance; everything is off by default.

    Rates are fractions in [0, 1]. Status, drop and truncate outcomes are drawn once per generate
    request from ``random.Random(seed)``; per-item faults are derived from the request content and
    ``seed``. ``script`` is consumed first, one entry per request that ``max_concurrency`` admits.
    Latency is an admitted request's whole time to answer, work included; scripted and random
    statuses are answered before auth and validation.

    Rate limits are enforced as providers do, before anything else: ``requests_per_second`` and
    ``generations_per_minute`` are token buckets (holding ``limit_burst`` of a second and of a
    minute of them, at least one, full at the start), a refused request takes nothing from them and is answered 429 at once
    with a ``Retry-After`` of ``retry_after`` or the time until the buckets hold enough, which
    ever is longer. ``limit_schedule`` multiplies both limits by a factor from a given second on.

    Script words: ``drop`` (the connection closes mid-body), ``truncate`` (the body ends early but
    cleanly), ``hang`` (nothing for ``hang`` seconds, then the whole answer: a read timeout before
    the headers), ``stall`` (headers and half the body, a ``hang`` seconds pause, then the rest)
    and ``ok``. Each counts under its own key in ``stats()["by_status"]`` instead of ``"200"``.
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
    shuffle: bool = _opt(False, "shuffle item order", action="store_true")
    rate_shortfall: float = _rate("of generations omitted")
    rate_extra: float = _rate("of examples given one extra")
    rate_alter_original: float = _rate("of items whose original is altered")
    max_concurrency: int | None = _opt(None, "answer 429 beyond N in-flight requests", type=int)
    requests_per_second: float | None = _opt(
        None, "answer 429 beyond R requests per second (a token bucket of one second)", type=float
    )
    generations_per_minute: float | None = _opt(
        None,
        "answer 429 beyond G generations (examples x multiplier) per minute (a bucket of a minute)",
        type=float,
    )
    limit_burst: float = _opt(
        1.0, "what the buckets hold, as a share of the limits' period: 1 = a second, a minute"
    )
    limit_schedule: list[tuple[float, float]] = dataclasses.field(
        default_factory=list,
        metadata={
            "help": "the limits times a factor from a time on, in seconds from the first request "
            "(after start or a stats reset), e.g. 10:0.5,30:1",
            "type": parse_schedule,
        },
    )
    script: list[int | str] = dataclasses.field(
        default_factory=list,
        metadata={
            "help": "comma-separated forced outcomes for the first requests, e.g. 429,429,drop,ok "
            f"(words: {', '.join(SCRIPT_WORDS)})",
            "type": parse_script,
        },
    )
    seed: int = _opt(0, "seed of the fault RNG", type=int)

    def __post_init__(self) -> None:
        """Refuse bad values up front: a typo'd fault must not silently mean "no fault"."""
        for name in (f.name for f in dataclasses.fields(self) if isinstance(f.default, float)):
            value, rate = getattr(self, name), name.startswith("rate_")
            if not (
                _is_number(value)
                and math.isfinite(value)
                and 0 <= value <= (1 if rate else math.inf)
            ):
                _refuse(name, "a fraction in [0, 1]" if rate else "a finite number >= 0", value)
            setattr(self, name, float(value))
        if self.framing not in FRAMINGS:
            _refuse("framing", f"one of {FRAMINGS}", self.framing)
        if not isinstance(self.shuffle, bool):
            _refuse("shuffle", "a bool", self.shuffle)
        limit = self.max_concurrency
        if limit is not None and (not _is_int(limit) or limit < 1):
            _refuse("max_concurrency", "None or an int >= 1", limit)
        for name in ("requests_per_second", "generations_per_minute"):
            value = getattr(self, name)
            if value is not None:
                if not (_is_number(value) and math.isfinite(value) and value > 0):
                    _refuse(name, "a finite number > 0 (unset: no limit)", value)
                setattr(self, name, float(value))
        if isinstance(self.limit_schedule, (str, bytes)) or not isinstance(
            self.limit_schedule, Sequence
        ):
            _refuse("limit_schedule", "a list of (seconds, factor) pairs", self.limit_schedule)
        steps = []
        for step in self.limit_schedule:
            pair = tuple(step) if isinstance(step, Sequence) and not isinstance(step, str) else ()
            numbers = [float(v) for v in pair if _is_number(v)]
            if len(numbers) != 2 or len(pair) != 2 or not all(map(math.isfinite, numbers)):
                _refuse("limit_schedule", "a list of (seconds, factor) pairs", step)
            if numbers[0] < 0 or numbers[1] <= 0:
                _refuse("limit_schedule", "steps of seconds >= 0 and a factor > 0", step)
            steps.append((numbers[0], numbers[1]))
        self.limit_schedule = sorted(steps)
        # What shapes the rate limits would change nothing without one: a typo, or a limit left
        # out (a limit_burst other than its default is one given).
        shaping = {
            "limit_schedule": (bool(steps), "changes the rate limits"),
            "limit_burst": (self.limit_burst != Faults.limit_burst, "sizes the rate limits"),
        }
        for name, (given, what) in shaping.items():
            if given and self.requests_per_second is None and self.generations_per_minute is None:
                raise ConfigurationError(
                    f"{name} {what}, and none is set: set requests_per_second or "
                    "generations_per_minute too",
                    option=name,
                    also=("requests_per_second", "generations_per_minute"),
                )
        if not _is_int(self.seed):
            _refuse("seed", "an int", self.seed)
        if isinstance(self.script, (str, bytes)) or not isinstance(self.script, Sequence):
            _refuse("script", "a list", self.script)
        for entry in self.script:
            status = _is_int(entry) and (entry == 200 or 400 <= entry <= 599)
            if not status and entry not in SCRIPT_WORDS:
                _refuse("script", f"a list of 200, 4xx/5xx statuses and {SCRIPT_WORDS}", entry)
        self.script = list(self.script)  # our own copy: the server consumes it, the caller's stays


def _refuse(name: str, expected: str, value: object) -> NoReturn:
    """``name`` is the keyword of ``Faults`` and the flag of ``serve`` (``guard.in_cli_words``)."""
    raise ConfigurationError(f"{name} must be {expected}, got {value!r}", option=name)


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)
