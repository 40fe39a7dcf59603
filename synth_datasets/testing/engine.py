"""The reference server's offline engine: deterministic string rewriting, NOT a language model.

Each example's structure is copied and its string leaves rewritten (a few words swapped from a
small vocabulary plus a variant marker), seeded from the request content, so the same request
always gets the same answer. The per-item faults of ``Faults`` are applied here too.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Mapping
from typing import Any

from .faults import Faults

__all__ = ["CONTENT_TYPES", "build_payload", "generate_items"]

CONTENT_TYPES = {
    "json": "application/json",
    "chunked": "application/json",
    "sse": "text/event-stream",
    "ndjson": "application/x-ndjson",
}

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
_TRAILING_PUNCT = ".,;:!?)\"'"
_ITEM_RATES = (
    "rate_malformed",
    "rate_fenced",
    "rate_wrapped",
    "rate_shortfall",
    "rate_alter_original",
)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _rewrite_text(text: str, rng: random.Random, marker: str) -> str:
    """Swap a few words for vocabulary words and append the variant marker.

    The marker makes every generation differ from the seed and from its siblings; the swaps
    make the text look a little less like a copy. Cost is linear in the text, with at most
    32 swaps, so the engine runs at many thousands of rows per second.
    """
    if not text or _KEEP_RE.match(text):
        return text
    words = text.split(" ")
    n = len(words)
    for _ in range(min(1 + n // 6, 32)):
        i = rng.randrange(n)
        word = words[i]
        core = word.rstrip(_TRAILING_PUNCT)
        if not core.isalpha():
            continue
        new = _VOCAB[rng.randrange(len(_VOCAB))]
        if core[0].isupper():
            new = new.capitalize()
        words[i] = new + word[len(core) :]
    return " ".join(words) + marker


def _rewrite(value: Any, rng: random.Random, marker: str) -> Any:
    """Same keys, nesting, list lengths and non-string leaves; string leaves rewritten.

    Keys are visited in sorted order (the output keeps the received order), so the result
    depends on the example's content, not on how its keys happened to be ordered.
    """
    if isinstance(value, str):
        return _rewrite_text(value, rng, marker)
    if isinstance(value, dict):
        out: dict[str, Any] = dict.fromkeys(value)
        for key in sorted(value):
            out[key] = _rewrite(value[key], rng, marker)
        return out
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


def _fence(text: str, rng: random.Random) -> str:
    if rng.random() < 0.5:
        return f"```json\n{text}\n```"
    return f"Here is the result:\n{text}"


def _alter(original: dict[str, Any]) -> dict[str, Any]:
    """Return a copy that matches no sent example: first string leaf gets " (edited)"."""
    altered: dict[str, Any] = json.loads(json.dumps(original))
    stack: list[Any] = [altered]
    while stack:
        node = stack.pop()
        items = list(node.items()) if isinstance(node, dict) else list(enumerate(node))
        for key, child in items:
            if isinstance(child, str):
                node[key] = child + " (edited)"
                return altered
        stack.extend(reversed([c for _, c in items if isinstance(c, (dict, list))]))
    key = "_edited"
    while key in altered:
        key += "_"
    altered[key] = True
    return altered


def _rng(digest: bytes, salt: int = 0) -> random.Random:
    return random.Random(int.from_bytes(digest[:16], "big") + (salt << 128))


def generate_items(body: Mapping[str, Any], faults: Faults) -> list[dict[str, Any]]:
    """Build the 200 answer's items: ``multiplier`` rewrites per example, plus item faults.

    Seeds come from sha256 of (canonical prompt/model_id/multiplier) + example canonical JSON +
    generation index, so the same request always yields the same items.
    """
    multiplier = int(body["multiplier"])  # JSON Schema's "integer" admits 3.0, as pydantic does
    request = {"model_id": body["model_id"], "multiplier": multiplier, "prompt": body["prompt"]}
    base = hashlib.sha256(_canonical(request).encode()).digest()
    item_faults = any(getattr(faults, name) > 0 for name in _ITEM_RATES)
    salt = faults.seed & ((1 << 64) - 1)
    items: list[dict[str, Any]] = []
    for example in body["examples"]:
        ex_digest = hashlib.sha256(base + _canonical(example).encode()).digest()
        extra = _rng(hashlib.sha256(ex_digest + b"extra").digest(), salt).random()
        count = multiplier + (extra < faults.rate_extra)
        for index in range(count):
            digest = hashlib.sha256(ex_digest + index.to_bytes(8, "big")).digest()
            generated: Any = _rewrite(example, _rng(digest), f" (variant {index + 1})")
            original: dict[str, Any] = example
            if not item_faults:
                items.append(
                    {"original": original, "generated": json.dumps(generated, ensure_ascii=False)}
                )
                continue
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
                text = _fence(text, rng)
            if alter < faults.rate_alter_original:
                original = _alter(example)
            items.append({"original": original, "generated": text})
    if faults.shuffle:
        _rng(hashlib.sha256(base + b"shuffle").digest(), salt).shuffle(items)
    return items


def _encode(items: list[dict[str, Any]], framing: str) -> bytes:
    if framing == "sse":
        events = [f"data: {json.dumps(item, ensure_ascii=False)}\n\n" for item in items]
        return ("".join(events) + "data: [DONE]\n\n").encode()
    if framing == "ndjson":
        return "".join(json.dumps(item, ensure_ascii=False) + "\n" for item in items).encode()
    return json.dumps(items, ensure_ascii=False).encode()


def build_payload(body: Mapping[str, Any], faults: Faults) -> tuple[bytes, int]:
    """The encoded 200 body in ``faults.framing`` and how many items it carries."""
    items = generate_items(body, faults)
    return _encode(items, faults.framing), len(items)
