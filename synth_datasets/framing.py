"""Read one whole 200 body into items; anything else raises :class:`ResponseFormatError`.

The docs warn the service may stream, so server-sent events and newline-delimited JSON are read
too; the documented JSON array (the hot path) is tried first.
"""

from __future__ import annotations

import contextlib
import functools
import json
import operator
import re
from dataclasses import dataclass
from typing import Any, TypeAlias

import orjson

from .errors import ResponseFormatError

__all__ = ["Item", "parse_body"]

Item: TypeAlias = dict[str, Any]
"""Exactly the keys ``original`` (dict) and ``generated`` (str). A plain dict, not a class, so
that the dicts ``json.loads`` built are returned as they are: no allocation on the hot path."""

_DECODER = json.JSONDecoder()
_decode = _DECODER.decode
_raw_decode = _DECODER.raw_decode

# orjson silently reads an integer past 64 bits as a float: text with 19 digits in a row goes to
# the json module. A byte translation finds such a run far cheaper than a regular expression.
_DIGIT_MAP = bytes(0x39 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_DIGIT_RUN = b"9" * 19


def _may_hold_long_integer(data: bytes) -> bool:
    # find, not `in`: bytes.__contains__ first tries its argument as an int and builds an error.
    return data.translate(_DIGIT_MAP).find(_DIGIT_RUN) >= 0


def fast_loads(text: str) -> Any:
    """``json.loads`` through orjson where it reads the same; the json module decides the rest."""
    if not _may_hold_long_integer(text.encode("utf-8", "surrogatepass")):
        try:
            return orjson.loads(text)
        except ValueError as exc:
            # Past orjson's depth limit: refused on every Python (3.13's json module would read
            # what 3.10-3.12's refuses), and the casters never recurse that deep.
            if "depth limit" in str(exc):
                raise RecursionError(str(exc)) from None
    return _decode(text)


def kind(value: Any) -> str:
    """A short type name for messages ("list", "str", "int", ...; "None" for null)."""
    return "None" if value is None else type(value).__name__


def excerpt(source: str | bytes, limit: int, pos: int = 0) -> str:
    """``repr`` of at most ``limit`` characters of ``source`` around ``pos``; "…" marks a cut."""
    start = max(0, min(pos - limit // 2, len(source) - limit))
    head = "…" if start > 0 else ""
    budget = limit - len(head)
    text = repr(source[start : start + budget])
    more = start + budget < len(source)
    if len(text) + more > budget:
        text = text[: budget - 1] + "…"
    elif more:
        text += "…"
    return head + text


_WS = re.compile(r"[ \t\n\r]*")  # JSON's own whitespace, as the json module skips it
_get_generated = operator.itemgetter("generated")
_WRAPPER_KEYS = ("data", "results", "items", "generations")
_NDJSON_TYPES = frozenset(
    f"application/{t}"
    for t in ["x-ndjson", "ndjson", "jsonl", "x-jsonl", "jsonlines", "x-jsonlines", "json-lines"]
)
_SSE_STARTS = ("data:", "event:", "id:", "retry:", ":")
_BODY_EXCERPT = 120  # characters of body quoted in a ResponseFormatError message
_BODY_KEEP = 4096  # characters of body kept on the error (it may be pickled across workers)
_dump = functools.partial(json.dumps, ensure_ascii=False)  # a decoded value, for an excerpt


@dataclass(eq=False)
class _Malformed(Exception):
    """Why the body is not the documented shape; quote ``snippet`` (e.g. the item at fault)
    instead of the body when given, around ``pos``."""

    reason: str
    snippet: str | None = None
    pos: int = 0


def parse_body(
    raw: bytes | str,
    *,
    content_type: str | None = None,
    status_code: int | None = 200,
    request_id: str | None = None,
) -> list[Item]:
    """Read a whole 200 body into items; raise ``ResponseFormatError`` if it is not items.

    ``content_type`` is only a hint (headers lie): the body is sniffed. An array that repeats the
    items of earlier events or lines (a running or final array) replaces them.
    """
    items: list[Item] | None = None
    if isinstance(raw, (bytes, bytearray)) and raw[:1] == b"[" and not _may_hold_long_integer(raw):
        # Fast path: the documented shape, read straight from the bytes. What fails here is
        # reported by the full path below, excerpt and all.
        with contextlib.suppress(ValueError, _Malformed):
            items = _items_from_value(orjson.loads(raw), "")
    if items is None:
        if isinstance(raw, str):
            text = raw.removeprefix("\ufeff")
        elif isinstance(raw, (bytes, bytearray, memoryview)):
            try:
                text = bytes(raw).decode("utf-8-sig")  # without its byte order mark
            except UnicodeDecodeError as exc:
                why = f"body is not valid UTF-8 ({exc.reason} at byte {exc.start})"
                raise _format_error(
                    _Malformed(why, None, exc.start), exc.object, status_code, request_id
                ) from None
        else:
            raise TypeError(f"parse_body() expects bytes or str, got {type(raw).__name__}")
        try:
            items = _parse_text(text, content_type)
        except (_Malformed, RecursionError, ValueError) as exc:
            if isinstance(exc, _Malformed):
                bad = exc
            elif isinstance(exc, RecursionError):
                bad = _Malformed("JSON nested too deeply to read")
            else:  # not a JSONDecodeError: e.g. an integer too long to convert
                bad = _Malformed(f"unreadable JSON ({exc})")
            raise _format_error(bad, text, status_code, request_id) from None
    if not all(map(str.isascii, map(_get_generated, items))):  # O(1) per string, loop in C
        # An unpaired surrogate (JSON "\ud83d") becomes the text \ud83d: no UTF-8 text or Arrow
        # column holds one. Only non-ASCII strings can hold one; encoding them is cheap.
        for item in items:
            try:
                item["generated"].encode("utf-8")
            except UnicodeEncodeError:
                item["generated"] = item["generated"].encode("utf-8", "backslashreplace").decode()
    return items


def _format_error(
    bad: _Malformed, body: str | bytes, status_code: int | None, request_id: str | None
) -> ResponseFormatError:
    quoted = excerpt(body if bad.snippet is None else bad.snippet, _BODY_EXCERPT, bad.pos)
    status = f"{status_code} " if status_code is not None else ""
    rid = f" (request id {request_id})" if request_id else ""
    reason = " ".join(bad.reason.split("\n"))  # keep the message on one line, whatever it quotes
    message = f"unexpected {status}response body{rid}: {reason}; excerpt: {quoted}"
    return ResponseFormatError(
        message, status_code=status_code, request_id=request_id, body=body[:_BODY_KEEP]
    )


def _parse_text(text: str, content_type: str | None) -> list[Item]:
    try:
        value = _decode(text)  # the documented shape: one JSON document
    except json.JSONDecodeError as exc:
        # A copy without traceback or context: those hold this frame, and this frame would hold
        # them back, a cycle that keeps the frames (and the caller's items) alive until a GC pass.
        first_error = json.JSONDecodeError(exc.msg, exc.doc, exc.pos)
    else:
        return _items_from_value(value, "")
    start = _WS.match(text).end()  # type: ignore[union-attr]  # always matches
    if start >= len(text):
        raise _Malformed("empty body")
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if text.startswith(_SSE_STARTS, start) or (
        media == "text/event-stream" and text[start] not in "[{"
    ):
        return _parse_sse(text)
    if first_error.msg == "Extra data" or media in _NDJSON_TYPES:
        return _parse_values(text, "")
    raise _json_error(first_error, text, "")


def _json_error(exc: json.JSONDecodeError, text: str, where: str) -> _Malformed:
    """Name a JSON failure plainly: HTML page, truncated document or invalid JSON."""
    if text.startswith("<", _WS.match(text).end()):  # type: ignore[union-attr]
        return _Malformed(f"{where}body is HTML or XML, not JSON", text)
    at = f"line {exc.lineno} column {exc.colno}"
    if _truncated(exc):
        return _Malformed(f"{where}JSON ends early, truncated? ({exc.msg}: {at})", text, exc.pos)
    return _Malformed(f"{where}invalid JSON ({exc.msg}: {at})", text, exc.pos)


def _truncated(exc: json.JSONDecodeError) -> bool:
    """True when decoding failed because the text ran out, not because of a bad character."""
    return exc.pos >= len(exc.doc.rstrip()) or exc.msg.startswith("Unterminated string")


def _items_from_value(value: Any, where: str) -> list[Item]:
    """Items from one decoded JSON value: an array, a wrapping object or a single item."""
    if type(value) is list:
        return _normalize_list(value, where)
    if isinstance(value, dict):
        if "original" in value or "generated" in value:
            return [_normalize(value, where)]
        for key in _WRAPPER_KEYS:
            inner = value.get(key)
            if isinstance(inner, list):
                return _normalize_list(inner, f"{where}{key!r} ")
        keys = ", ".join(excerpt(k, 30) for k in list(value)[:8])
        raise _Malformed(
            f"{where}JSON object without an items array (keys: {keys or 'none'})", _dump(value)
        )
    raise _Malformed(f"{where}expected a JSON array of items, got {kind(value)}", _dump(value))


def _normalize_list(values: list[Any], where: str) -> list[Item]:
    # Fast path, inline: what json.loads built already has the exact shape; keep that dict.
    return [
        item
        if type(item) is dict
        and len(item) == 2
        and type(item.get("generated")) is str
        and type(item.get("original")) is dict
        else _normalize(item, where, i)
        for i, item in enumerate(values)
    ]


def _normalize(item: Any, where: str, index: int | None = None) -> Item:
    label = f"{where}item" if index is None else f"{where}item {index}"
    if not isinstance(item, dict):
        raise _Malformed(
            f"{label} is {kind(item)}, expected an object with 'original' and 'generated'",
            _dump(item),
        )
    missing = " or ".join(repr(k) for k in ("original", "generated") if k not in item)
    if missing:
        raise _Malformed(f"{label} has no {missing} key", _dump(item))
    original, generated = item["original"], item["generated"]
    if not isinstance(original, dict):
        raise _Malformed(
            f"{label}: 'original' is {kind(original)}, expected an object", _dump(item)
        )
    if isinstance(generated, (dict, list)):
        generated = json.dumps(generated, ensure_ascii=False)
    elif not isinstance(generated, str):
        raise _Malformed(
            f"{label}: 'generated' is {kind(generated)}, expected a string", _dump(item)
        )
    return {"original": original, "generated": generated}


def _merge(acc: list[Item], value: Any, where: str) -> None:
    """Add one event's or line's items; an array that repeats ``acc`` as its prefix replaces it."""
    if isinstance(value, dict) and ("original" in value or "generated" in value):
        acc.append(_normalize(value, where))  # one item per event or line
        return
    new = _items_from_value(value, where)
    if acc and len(new) >= len(acc) and new[: len(acc)] == acc:
        acc[:] = new
    else:
        acc.extend(new)


def _parse_values(text: str, where: str) -> list[Item]:
    """Several JSON values one after another (NDJSON, or concatenated); merge their items."""
    items: list[Item] = []
    pos = _WS.match(text).end()  # type: ignore[union-attr]
    line = 1
    counted = 0
    while pos < len(text):
        line += text.count("\n", counted, pos)
        counted = pos
        try:
            value, end = _raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise _json_error(exc, text, f"{where}line {line}: ") from None
        _merge(items, value, f"{where}line {line}: ")
        pos = _WS.match(text, end).end()  # type: ignore[union-attr]
    return items


def _parse_sse(text: str) -> list[Item]:
    """Server-sent events (WHATWG framing); each event's data is JSON items."""
    items: list[Item] = []
    data: list[str] = []
    pending = ""  # JSON split across events (raw chunks): joined until it parses
    events = 0
    done = False
    if "\r" in text:  # CRLF and lone CR end lines too (WHATWG); JSON text never holds a raw CR
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    # A body that ends without a line break was cut inside its last line unless that line is data
    # (a final event whose JSON must then be complete, checked below like any other event).
    tail_field, _, tail_value = lines[-1].partition(":")
    cut = bool(lines[-1]) and (tail_field != "data" or not tail_value.strip())
    lines.append("")  # a body that ends without a blank line still dispatches its last event
    for line in lines:
        if line:
            field, _, value = line.partition(":")
            if field == "data":  # comments (":..."), event:, id:, retry: carry no items
                data.append(value[1:] if value.startswith(" ") else value)
            continue
        payload = "\n".join(data)
        data = []
        if not payload.strip():
            continue
        events += 1
        where = f"event {events}: "
        if payload.strip() == "[DONE]":
            if pending:
                raise _Malformed(
                    f"{where}[DONE] while a JSON value was unfinished", pending, len(pending)
                )
            done = True
            continue
        payload = pending + payload
        pending = ""
        try:
            value = _decode(payload)
        except json.JSONDecodeError as exc:
            if exc.msg == "Extra data":  # several values in one event, e.g. one per data: line
                items.extend(_parse_values(payload, where))
                continue
            if _truncated(exc):
                pending = payload  # maybe a raw chunk of a longer value: wait for the rest
                continue
            raise _json_error(exc, payload, where) from None
        _merge(items, value, where)
    if pending:
        try:
            _decode(pending)
        except json.JSONDecodeError as exc:
            raise _json_error(exc, pending, f"event {events}: ") from None
    if cut and not done:  # e.g. "...}\n\ndata: ": the events after the cut are lost
        raise _Malformed(
            "stream ends mid-event, truncated? (last line unfinished)", text, len(text)
        )
    if not events and not done:
        raise _Malformed("event stream carried no data events")
    return items
