"""Read one ``generated`` string into a dict, cheapest way first; a failure is a row's error,
never an exception that would fail the whole batch."""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import json_repair

from .framing import excerpt, fast_loads, kind

__all__ = ["Parsed", "parse_generated"]

_GEN_EXCERPT = 80  # characters of text quoted in a failure reason
_GENERATED_WRAPPER = "generated_data"
_MAX_FENCES = 16
_MAX_SPANS = 64
_MAX_REPAIRS = 3
_NOTHING: Any = object()  # "no value seen", distinct from a JSON null
# What Parsed(...) calls, without the frame of NamedTuple's Python __new__: once per row.
_tuple_new = tuple.__new__
# Apart from strings, only braces matter to find balanced objects; escapes come as pairs so that
# an escaped quote never ends a string.
_SCAN = re.compile(r"""\\.|[{}"']""", re.S)
_FENCE_LINE = re.compile(r"^[ \t]*```", re.M)
_CLOSED, _OPEN, _CUT = "closed", "open", "cut"  # states of an object span (_object_spans)


class Parsed(NamedTuple):
    """``value`` or a one-line ``error``; ``method`` ("json", "fenced", "embedded", "repaired",
    "" on failure) lets callers count how much text needed help."""

    value: dict[str, Any] | None
    error: str | None
    method: str


def parse_generated(text: object) -> Parsed:
    """Turn one ``generated`` string into a dict; never raises.

    A repair counts only when it yields some non-empty value (prose is never "repaired" into
    nothing), and truncated text is not repaired unless only closing brackets are missing:
    closing a string or number cut short gives a wrong value with no error.
    """
    try:
        if type(text) is str:
            try:
                value = fast_loads(text)
            except ValueError:
                return _parse_fallback(text, "")
            except RecursionError:
                return _parse_fallback(text, "JSON nested too deeply")
            if type(value) is dict:
                if len(value) == 1 and _GENERATED_WRAPPER in value:
                    value = _unwrap(value)
                return _tuple_new(Parsed, (value, None, "json"))
            if isinstance(value, str):
                inner = _strict_object(value)
                if inner is not None:
                    return Parsed(_unwrap(inner), None, "json")
            return _not_object(value, text)
        if isinstance(text, str):
            return parse_generated(str(text))
        return Parsed(None, f"expected a string, got {kind(text)}", "")
    except Exception as exc:  # never let one row's text kill a batch
        source = text if isinstance(text, str) else repr(text)
        reason = f"could not parse ({type(exc).__name__}): {excerpt(source, _GEN_EXCERPT)}"
        return Parsed(None, reason, "")


def _not_object(value: Any, text: str) -> Parsed:
    reason = f"expected a JSON object, got {kind(value)}: {excerpt(text, _GEN_EXCERPT)}"
    return Parsed(None, reason, "")


def _strict_object(text: str) -> dict[str, Any] | None:
    try:
        value = fast_loads(text)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _unwrap(value: dict[str, Any]) -> dict[str, Any]:
    """``{"generated_data": {...}}`` (or the inner object as JSON text) -> the inner object."""
    if len(value) != 1 or _GENERATED_WRAPPER not in value:
        return value
    inner = value[_GENERATED_WRAPPER]
    if isinstance(inner, dict):
        return inner
    if isinstance(inner, str):
        obj = _strict_object(inner)
        if obj is not None:
            return obj
    return value


def _tail_excerpt(source: str, limit: int) -> str:
    """``repr`` of the end of ``source``, at most ``limit`` characters, "…" first when cut."""
    n = limit
    while n > 1 and len(repr(source[-n:])) + (n < len(source)) > limit:
        n -= 1
    return ("…" if n < len(source) else "") + repr(source[-n:])


def _parse_fallback(text: str, problem: str) -> Parsed:
    if not text.strip():
        return Parsed(None, "empty string", "")
    non_object: Any = _NOTHING
    if "```" in text:
        for body in _fence_bodies(text):
            try:
                value = fast_loads(body)
            except (ValueError, RecursionError):
                continue
            if isinstance(value, dict):
                return Parsed(_unwrap(value), None, "fenced")
            if non_object is _NOTHING:
                non_object = value
    if "{" not in text:
        if non_object is not _NOTHING:
            return _not_object(non_object, text)
        problem = problem or "no JSON object found"
        return Parsed(None, f"{problem}: {excerpt(text, _GEN_EXCERPT)}", "")
    spans = _object_spans(text)
    for start, end, state in spans:
        if state != _CLOSED:
            problem = problem or "unterminated JSON object"
            continue
        try:
            value = fast_loads(text[start:end])
        except RecursionError:
            problem = problem or "JSON nested too deeply"
            continue
        except ValueError as exc:
            problem = problem or f"invalid JSON ({getattr(exc, 'msg', exc)})"
            continue
        if isinstance(value, dict):
            return Parsed(_unwrap(value), None, "embedded")
    truncated = False
    # Longest spans first: the real object is usually longer than a stray "{name}" in prose.
    for start, end, state in sorted(spans, key=lambda s: s[0] - s[1])[:_MAX_REPAIRS]:
        if state == _CUT:
            truncated = True  # repairing would close a cut value: a shorter, wrong one
            continue
        repaired = _repair(text[start:end])
        if repaired is not None:
            return Parsed(repaired, None, "repaired")
    if truncated:
        end_quote = _tail_excerpt(text, _GEN_EXCERPT)  # the end: where it was cut
        reason = f"truncated JSON object (never closed), not repairable: {end_quote}"
        return Parsed(None, reason, "")
    problem = problem or "no JSON object found"
    return Parsed(None, f"{problem}, not repairable: {excerpt(text, _GEN_EXCERPT)}", "")


def _fence_bodies(text: str) -> list[str]:
    """Candidate bodies of Markdown code fences, in order.

    An opener starts a line, so a ``` inside a JSON string (no raw newlines) is never one. A body
    ends at the next ```, or else at the next fence starting a line; an unclosed one runs to the end.
    """
    bodies: list[str] = []
    n = len(text)
    opener = _FENCE_LINE.search(text)
    while opener is not None and len(bodies) < _MAX_FENCES:
        start = opener.end()
        # Skip the info string (``json``, ``JSON``, ``python``...) but not content on that line.
        while start < n and text[start] not in " \t\r\n{[":
            start += 1
        close_any = text.find("```", start)
        if close_any == -1:
            bodies.append(text[start:])
            break
        bodies.append(text[start:close_any])
        closer = _FENCE_LINE.search(text, start)
        if closer is None:
            bodies.append(text[start:])
            break
        if closer.end() - 3 != close_any:
            bodies.append(text[start : closer.end() - 3])
        opener = _FENCE_LINE.search(text, closer.end())
    return bodies


def _object_spans(text: str) -> list[tuple[int, int, str]]:
    """Outermost ``{...}`` spans as (start, end, state), strings respected; linear.

    Quotes count only inside braces (an apostrophe in prose cannot hide the object). A span open at
    the end is ``_OPEN`` when only closing brackets are missing, else ``_CUT``.
    """
    spans: list[tuple[int, int, str]] = []
    depth = 0
    quote = ""
    start = 0
    for match in _SCAN.finditer(text, text.find("{")):
        token = match.group()
        if quote:
            if token == quote:
                quote = ""
            continue
        if depth == 0:
            if token == "{":
                depth = 1
                start = match.start()
            continue
        if token == "{":
            depth += 1
        elif token == "}":
            depth -= 1
            if depth == 0:
                spans.append((start, match.end(), _CLOSED))
                if len(spans) >= _MAX_SPANS:
                    return spans
        elif token in ('"', "'"):
            quote = token
    if depth:
        whole = not quote and text.rstrip()[-1] in "}]"
        spans.append((start, len(text), _OPEN if whole else _CUT))
    return spans


def _repair(fragment: str) -> dict[str, Any] | None:
    try:
        value = json_repair.loads(fragment, skip_json_loads=True)
    except Exception:  # json_repair raises ValueError on deep nesting; be safe with the rest
        return None
    if isinstance(value, dict):
        value = _unwrap(value)
        if any(v != "" for v in value.values()):  # prose is never "repaired" into nothing
            return value
    return None
