"""The reference server's offline engine: deterministic string rewriting, NOT a language model.

Each example's string leaves get a few words swapped from a small vocabulary and a variant
marker, seeded from the request content (same request, same answer), then ``Faults``' per-item
faults are applied.
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
import re
from collections.abc import Mapping
from typing import Any

from .faults import Faults

__all__ = ["build_payload", "generate_items"]

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
_ITEM_FAULTS = ("malformed", "fenced", "wrapped", "shortfall", "alter_original")


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
    item_faults = any(getattr(faults, f"rate_{name}") > 0 for name in _ITEM_FAULTS)
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


def build_payload(body: Mapping[str, Any], faults: Faults) -> tuple[bytes, int]:
    """The encoded 200 body in ``faults.framing`` and how many items it carries."""
    items = generate_items(body, faults)
    dumps = functools.partial(json.dumps, ensure_ascii=False)
    if faults.framing == "sse":
        text = "".join(f"data: {dumps(item)}\n\n" for item in items) + "data: [DONE]\n\n"
    elif faults.framing == "ndjson":
        text = "".join(dumps(item) + "\n" for item in items)
    else:
        text = dumps(items)
    return text.encode(), len(items)
