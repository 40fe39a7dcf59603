"""Each returned item linked to the example it came from: by content, never by position alone;
by equality, then by canonical JSON, where ``1`` is ``1.0`` and ``true`` is not ``1``."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from datasets import Value

from .layout import leaves

__all__ = ["bools_may_differ", "canonical_json", "link_items"]


def _normalise(value: Any) -> Any:
    # A server may echo 1.0 as 1: the same number must link the same way.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _normalise(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    return value


def canonical_json(value: Any) -> str:
    """The text two values share when JSON sees them as equal: how items are matched."""
    return json.dumps(_normalise(value), sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _bools_match(a: Any, b: Any) -> bool:
    """Given ``a == b``: whether their bools sit in the same places (``True == 1`` in Python,
    not in JSON). Numbers are left to ``==``, where ``1.0 == 1`` as in ``canonical_json``."""
    if a.__class__ is dict:
        return all(_bools_match(x, b[k]) for k, x in a.items())
    if a.__class__ is list:
        return all(map(_bools_match, a, b))
    return (a.__class__ is bool) is (b.__class__ is bool)


def _same_bools(sent: list[Any], echoed: list[Any]) -> bool:
    """``_bools_match`` of every pair; identical orjson text proves it in one C call, so the
    values are walked only when their text differs (``1.0`` echoed as ``1``, keys reordered)."""
    try:
        if orjson.dumps(sent) == orjson.dumps(echoed):
            return True
    except TypeError:  # orjson.JSONEncodeError: an integer past 64 bits
        pass
    return all(map(_bools_match, sent, echoed))


def bools_may_differ(feature: Any) -> bool:
    """Whether two ``==`` values of ``feature`` may hold bools in different places: not when
    they hold nothing but text and nulls (``==`` is type-strict there)."""
    text = ("string", "large_string", "string_view", "null")
    return not all(isinstance(f, Value) and f.dtype in text for f in leaves(feature))


def link_items(
    examples: Sequence[Mapping[str, Any]],
    items: Sequence[Mapping[str, Any]],
    multiplier: int,
    *,
    check_bools: bool = True,
) -> list[int | None]:
    """The position in ``examples`` of each item's ``original``, or None when none matches.

    Identical examples share their items in order and evenly: copy ``j`` of ``copies`` takes the
    next ``q + (j < r)`` items, ``q, r = divmod(items, copies)``. ``check_bools=False`` skips the
    bool check of ``==`` pairs (see ``bools_may_differ``).
    """
    n = len(items)
    # Fast path: the server answered in order and in full; `==` says True == 1 (JSON does not).
    if n == len(examples) * multiplier:
        sent = [e for e in examples for _ in range(multiplier)]
        echoed = [item["original"] for item in items]
        if echoed == sent and (not check_bools or _same_bools(sent, echoed)):
            return [t // multiplier for t in range(n)]
    by_key: dict[str, list[int]] = defaultdict(list)
    for pos, example in enumerate(examples):
        by_key[canonical_json(example)].append(pos)
    keys = [canonical_json(item.get("original")) for item in items]
    totals = Counter(keys)
    seen: dict[str, int] = defaultdict(int)
    out: list[int | None] = []
    for key in keys:
        positions = by_key.get(key)
        if not positions:
            out.append(None)
            continue
        k = seen[key]
        seen[key] = k + 1
        q, r = divmod(totals[key], len(positions))
        # Copies 0..r-1 take q + 1 items each, the others q.
        j = k // (q + 1) if k < r * (q + 1) else r + (k - r * (q + 1)) // q
        out.append(positions[j])
    return out
