"""What writes the reference server's generations: the ``Engine`` interface, and the offline
engine behind it, deterministic string rewriting that is NOT a language model.

The server asks its engine for the ``{original, generated}`` items of a checked request body and
encodes them in the framing the faults say; request-level faults (statuses, latency, framing) are
the server's, so they apply to every engine. The offline engine swaps a few words of each
example's string leaves from a small vocabulary and adds a variant marker, seeded from the
request content (same request, same answer), then applies ``Faults``' per-item faults.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import json
import random
import re
from collections.abc import Mapping
from typing import Any

from .._version import __version__
from ..config import OFFLINE_ENGINE
from .faults import Faults

__all__ = [
    "ITEM_FAULTS",
    "Engine",
    "EngineError",
    "OfflineEngine",
    "encode_items",
    "generate_items",
]

# The offline engine's own faults (``rate_<name>``, and ``shuffle``): they act on items, the
# other fields of Faults on whole requests.
ITEM_FAULTS = ("malformed", "fenced", "wrapped", "shortfall", "extra", "alter_original")
# Above this many generations the offline engine works in a thread so the loop keeps serving.
_EXECUTOR_THRESHOLD = 2_000


class EngineError(Exception):
    """A request the engine could not answer: the server answers ``status`` with ``detail``
    (and ``Retry-After: retry_after`` when given), as the endpoint would."""

    def __init__(self, status: int, detail: str, retry_after: str | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.retry_after = status, detail, retry_after


class Engine:
    """What the server needs from whatever writes the generations.

    ``generate`` runs on the server's event loop; ``open`` and ``close`` bracket the server's
    life there (a connection pool, say).
    """

    @property
    def announce(self) -> str:
        """The ``X-Synth-Engine`` header of every response: its rows are never taken for
        another engine's (or Collinear's)."""
        raise NotImplementedError

    @property
    def description(self) -> str:
        """The engine in words, for the people running it."""
        raise NotImplementedError

    @property
    def model_id(self) -> str:
        """The model UUID a run against this engine sends (the endpoint needs one); engines
        differ in it, so the request cache never serves one engine's answers for another's."""
        raise NotImplementedError

    def requests_in_flight(self, generations: int) -> int | None:
        """How many requests of ``generations`` each a client should keep in flight: enough to
        keep the engine busy, few enough that none waits long in its queue; None: no limit."""
        return None

    async def open(self) -> None:
        """Called on the server loop before the first request."""

    async def close(self) -> None:
        """Called on the server loop when the server stops."""

    def check_faults(self, faults: Faults) -> None:
        """Refuse (``ValueError``) faults this engine cannot honour."""

    async def generate(self, body: Mapping[str, Any], faults: Faults) -> list[dict[str, Any]]:
        """The items of the 200 answer to a checked request body; ``EngineError`` otherwise."""
        raise NotImplementedError


@dataclasses.dataclass
class OfflineEngine(Engine):
    """Deterministic rewriting of each example's strings: NOT a language model."""

    announce = f"{OFFLINE_ENGINE}/{__version__}"
    description = "offline engine: deterministic rewriting, not a language model"
    model_id = "00000000-0000-4000-8000-000000000000"

    async def generate(self, body: Mapping[str, Any], faults: Faults) -> list[dict[str, Any]]:
        if len(body["examples"]) * body["multiplier"] <= _EXECUTOR_THRESHOLD:
            return generate_items(body, faults)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, generate_items, body, faults)


_VOCAB = (
    "answer", "budget", "bridge", "change", "city", "context", "detail", "doctor", "engineer",
    "evening", "example", "family", "feature", "field", "friend", "garden", "group", "idea",
    "issue", "journey", "level", "library", "market", "message", "method", "model", "morning",
    "note", "option", "order", "pattern", "plan", "point", "process", "question", "range",
    "reason", "recipe", "record", "report", "request", "result", "review", "river", "sample",
    "school", "signal", "source", "step", "student", "summary", "target", "task", "teacher",
    "topic", "update", "value", "weekend", "window",
)  # fmt: skip
# Short identifier-like strings ("user", "assistant", "system", "tool") are kept: roles stay valid.
_KEEP_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]{0,11}\Z")


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _rewrite_text(text: str, rng: random.Random, marker: str) -> str:
    """Swap a few words (at most 32) for vocabulary words and append the variant marker, which
    makes every generation differ from the seed and from its siblings."""
    if not text or _KEEP_RE.match(text):
        return text
    words = text.split(" ")
    n = len(words)
    for _ in range(min(1 + n // 6, 32)):
        i = rng.randrange(n)
        word = words[i]
        core = word.rstrip(".,;:!?)\"'")
        if not core.isalpha():
            continue
        new = _VOCAB[rng.randrange(len(_VOCAB))]
        if core[0].isupper():
            new = new.capitalize()
        words[i] = new + word[len(core) :]
    return " ".join(words) + marker


def _rewrite(value: Any, rng: random.Random, marker: str) -> Any:
    """Same structure and non-string leaves, string leaves rewritten; keys are visited sorted
    (the output keeps their order), so key order does not change the result."""
    if isinstance(value, str):
        return _rewrite_text(value, rng, marker)
    if isinstance(value, dict):
        rewritten = {key: _rewrite(value[key], rng, marker) for key in sorted(value)}
        return {key: rewritten[key] for key in value}
    if isinstance(value, list):
        return [_rewrite(item, rng, marker) for item in value]
    return value


def _malform(text: str, rng: random.Random) -> str:
    """Break JSON text in one of the ways model output breaks; the result never parses."""
    kind = rng.randrange(4)
    if kind == 0 and text.endswith("}"):
        return text[:-1] + ",}"  # trailing comma
    if kind == 1 and '"' in text:
        return text.replace('"', "'")  # single quotes
    if kind == 2 and len(text) > 1:
        return text[:-1]  # missing closing brace
    return text[: max(1, len(text) // 2)]  # cut mid-way


def _edit(node: Any) -> bool:
    """Append " (edited)" to the first string among ``node``'s children, else of its containers."""
    items = list(node.items()) if isinstance(node, dict) else list(enumerate(node))
    for key, child in items:
        if isinstance(child, str):
            node[key] = child + " (edited)"
            return True
    return any(_edit(child) for _, child in items if isinstance(child, (dict, list)))


def _alter(original: dict[str, Any]) -> dict[str, Any]:
    """A copy that matches no sent example: a string edited, or else a key added."""
    altered: dict[str, Any] = json.loads(json.dumps(original))
    if not _edit(altered):
        key = "_edited"
        while key in altered:
            key += "_"
        altered[key] = True
    return altered


def _rng(digest: bytes, salt: int = 0) -> random.Random:
    return random.Random(int.from_bytes(digest[:16], "big") + (salt << 128))


def generate_items(body: Mapping[str, Any], faults: Faults) -> list[dict[str, Any]]:
    """The 200 answer's items: ``multiplier`` rewrites per example, seeded from sha256 of the
    request's prompt, model and multiplier, the example and its index; then the item faults."""
    multiplier = body["multiplier"]  # an int: validation converted 3.0 or "3" as pydantic does
    request = {"model_id": body["model_id"], "multiplier": multiplier, "prompt": body["prompt"]}
    base = hashlib.sha256(_canonical(request).encode()).digest()
    item_faults = any(getattr(faults, f"rate_{name}") > 0 for name in ITEM_FAULTS)
    salt = faults.seed & ((1 << 64) - 1)
    items: list[dict[str, Any]] = []
    for example in body["examples"]:
        ex_digest = hashlib.sha256(base + _canonical(example).encode()).digest()
        extra = _rng(hashlib.sha256(ex_digest + b"extra").digest(), salt).random()
        count = multiplier + (extra < faults.rate_extra)
        for index in range(count):
            digest = hashlib.sha256(ex_digest + index.to_bytes(8, "big")).digest()
            generated: Any = _rewrite(example, _rng(digest), f" (variant {index + 1})")
            short = wrap = mal = fence = alter = 1.0  # no item faults: no draws
            if item_faults:
                rng = _rng(digest[16:], salt)
                short, wrap, mal, fence, alter = (rng.random() for _ in range(5))
            if short < faults.rate_shortfall:
                continue
            if wrap < faults.rate_wrapped:
                generated = {"generated_data": generated}
            text = json.dumps(generated, ensure_ascii=False)
            if mal < faults.rate_malformed:
                text = _malform(text, rng)
            if fence < faults.rate_fenced:
                prose = rng.random() >= 0.5
                text = f"Here is the result:\n{text}" if prose else f"```json\n{text}\n```"
            original = _alter(example) if alter < faults.rate_alter_original else example
            items.append({"original": original, "generated": text})
    if faults.shuffle:
        _rng(hashlib.sha256(base + b"shuffle").digest(), salt).shuffle(items)
    return items


def encode_items(items: list[dict[str, Any]], framing: str) -> bytes:
    """The 200 body carrying ``items`` in ``framing`` (see ``faults.FRAMINGS``)."""
    dumps = functools.partial(json.dumps, ensure_ascii=False)
    if framing == "sse":
        text = "".join(f"data: {dumps(item)}\n\n" for item in items) + "data: [DONE]\n\n"
    elif framing == "ndjson":
        text = "".join(dumps(item) + "\n" for item in items)
    else:
        text = dumps(items)
    return text.encode()
