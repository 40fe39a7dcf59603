"""Turn response bodies and ``generated`` strings into Python objects: tolerant, never silent.

Two pure functions (no I/O), both on the hot path of every request, so each tries the cheap
strict-JSON route first and only then the slower fallbacks:

* :func:`parse_body`: one whole (already buffered) 200 body -> ``list[Item]``. The documented shape
  is a JSON array of ``{"original": object, "generated": string}``. The docs warn the service may
  stream, so the same items framed as server-sent events or newline-delimited JSON, or wrapped in
  an object, are accepted too. Anything else raises :class:`ResponseFormatError`, so the client
  can retry it like a broken connection.
* :func:`parse_generated`: one ``generated`` string -> ``Parsed``: strict JSON, then a fenced code
  block, then an object embedded in prose, then ``json_repair``. It never raises: a row whose text
  cannot be read keeps its error (and its raw text) instead of failing the whole batch.
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable
from typing import Any, NamedTuple, TypeAlias

import json_repair

from .errors import ResponseFormatError

__all__ = ["Item", "Parsed", "parse_body", "parse_generated"]

Item: TypeAlias = dict[str, Any]
"""One generation: a plain dict with exactly the keys ``original`` (dict) and ``generated`` (str).

A plain dict rather than a class keeps the hot path allocation-free: the dicts that ``json.loads``
built are returned as they are when they already have this exact shape.
"""

_DECODER = json.JSONDecoder()
_decode = _DECODER.decode


_orjson_loads: Callable[[bytes | bytearray | memoryview | str], Any] | None
try:
    from orjson import loads as _orjson_loads
except ImportError:  # pragma: no cover - orjson is a dependency; stay correct without it
    _orjson_loads = None


# orjson reads an integer past 64 bits as a float, silently: text with 19 digits in a row (an
# integer that may be that large, or just a long number in a string) goes to the json module.
# Mapping every byte to "9" (digit) or " " and looking for a run is a few times cheaper than a
# regular expression, which would cost more than the decoding it guards.
_DIGIT_MAP = bytes(0x39 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_DIGIT_RUN = b"9" * 19


def _may_hold_long_integer(data: bytes) -> bool:
    return _DIGIT_RUN in data.translate(_DIGIT_MAP)


def _fast_decode(text: str) -> Any:
    """``json.loads``, through orjson when it can: a fraction of the CPU on the hot path.

    Anything orjson refuses (NaN, lone surrogates, bad JSON) or might read differently (very long
    integers) goes to the json module, so what is accepted and every error stay the json
    module's.
    """
    if _orjson_loads is not None and not _may_hold_long_integer(
        text.encode("utf-8", "surrogatepass")
    ):
        try:
            return _orjson_loads(text)
        except ValueError:
            pass
    return _decode(text)


_raw_decode = _DECODER.raw_decode
_WS = re.compile(r"[ \t\n\r]*")  # JSON's own whitespace, as the json module skips it
_BOM = b"\xef\xbb\xbf"
_get_generated = operator.itemgetter("generated")

_WRAPPER_KEYS = ("data", "results", "items", "generations")
_SSE_TYPES = frozenset({"text/event-stream"})
_NDJSON_TYPES = frozenset(
    {
        "application/x-ndjson",
        "application/ndjson",
        "application/jsonl",
        "application/x-jsonl",
        "application/jsonlines",
        "application/x-jsonlines",
        "application/json-lines",
    }
)
_SSE_STARTS = ("data:", "event:", "id:", "retry:", ":")
_BODY_EXCERPT = 120  # characters of body quoted in a ResponseFormatError message
_BODY_KEEP = 4096  # characters of body kept on the error (it may be pickled across workers)

_GEN_EXCERPT = 80  # characters of text quoted in a parse_generated failure reason
_GENERATED_WRAPPER = "generated_data"
_MAX_FENCES = 16
_MAX_SPANS = 64
_MAX_REPAIRS = 3
_NOTHING: Any = object()  # "no value seen", distinct from a JSON null
# Apart from strings, only braces matter to find balanced objects; escapes come as pairs so that
# an escaped quote never ends a string.
_SCAN = re.compile(r"""\\.|[{}"']""", re.S)
_FENCE_LINE = re.compile(r"^[ \t]*```", re.M)
_CLOSED, _OPEN, _CUT = "closed", "open", "cut"  # states of an object span (_object_spans)


# --------------------------------------------------------------------------------------------
# Shared helpers


def _kind(value: Any) -> str:
    """A short type name for messages ("list", "str", "int", ...; "None" for null)."""
    return "None" if value is None else type(value).__name__


def _excerpt(source: str | bytes, limit: int, pos: int = 0) -> str:
    """``repr`` of a piece of ``source`` around ``pos``, at most ``limit`` characters, one line.

    "…" marks each side that was cut, so a reader knows the quote is partial.
    """
    start = 0
    if len(source) > limit and pos > limit // 2:
        start = min(pos - limit // 2, max(len(source) - limit, 0))
    head = "…" if start > 0 else ""
    budget = limit - len(head)
    chunk = source[start : start + budget]
    text = repr(chunk)
    more = start + budget < len(source)
    if len(text) + more > budget:
        text = text[: budget - 1] + "…"
    elif more:
        text += "…"
    return head + text


def _tail_excerpt(source: str, limit: int) -> str:
    """``repr`` of the end of ``source``, at most ``limit`` characters, "…" first when cut."""
    if len(source) <= limit - 2:
        whole = repr(source)
        if len(whole) <= limit:
            return whole
    n = limit - 3  # room for "…" and the quotes
    text = repr(source[-n:])
    while len(text) > limit - 1 and n > 1:  # escapes made it longer: take fewer characters
        n = max(min(n - 1, n * (limit - 3) // (len(text) - 2)), 1)
        text = repr(source[-n:])
    return "…" + text


def _dump(value: Any) -> str:
    """JSON text of a value for an excerpt; never raises."""
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        return repr(value)


# --------------------------------------------------------------------------------------------
# parse_body


class _Malformed(Exception):
    """Internal: why the body is not the documented shape, and what to quote from."""

    def __init__(self, reason: str, snippet: str | None = None, pos: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.snippet = snippet  # quote this instead of the body (e.g. the offending item)
        self.pos = pos


def parse_body(
    raw: bytes | str,
    *,
    content_type: str | None = None,
    status_code: int | None = 200,
    request_id: str | None = None,
) -> list[Item]:
    """Read a whole 200 body into items; raise ``ResponseFormatError`` if it is not items.

    Accepted framings: a JSON array of items (the documented one, parsed with a single
    ``json.loads``); a JSON object holding that array under ``data``, ``results``, ``items`` or
    ``generations``; server-sent events whose ``data`` carry an item, an array of items or such an
    object (``[DONE]``, comments and other fields ignored); newline-delimited JSON (one item or one
    array per line). ``content_type`` is a hint: the body is sniffed too, because headers lie.

    Every item must be an object with ``original`` (object) and ``generated`` (string; an object or
    array is re-serialised to JSON text). Each returned :data:`Item` has exactly those two keys.
    A ``generated`` string holding an unpaired surrogate (JSON ``"\\ud83d"``, which no UTF-8 text
    or Arrow column can hold) gets it as the readable text ``\\ud83d`` instead.
    When events or lines repeat the items already seen (a running or final full array), the
    longer array replaces them rather than duplicating them.

    The error's message is one line with the reason and a quoted excerpt (≤ 120 characters) of the
    body; it carries ``status_code``, ``request_id`` and the first 4096 characters of the body.
    """
    if (
        _orjson_loads is not None
        and isinstance(raw, (bytes, bytearray))
        and raw[:1] == b"["
        and not _may_hold_long_integer(raw)
    ):
        # Fast path: the documented shape, read straight from the bytes.
        try:
            value = _orjson_loads(raw)
        except ValueError:
            pass
        else:
            try:
                items = _items_from_value(value, "")
            except _Malformed:
                pass  # the full path below reports it, excerpt and all
            else:
                if not all(map(str.isascii, map(_get_generated, items))):
                    _escape_lone_surrogates(items)
                return items
    if isinstance(raw, str):
        text = raw[1:] if raw.startswith("\ufeff") else raw
    elif isinstance(raw, (bytes, bytearray, memoryview)):
        data = bytes(raw)
        if data.startswith(_BOM):
            data = data[3:]
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _format_error(
                _Malformed(f"body is not valid UTF-8 ({exc.reason} at byte {exc.start})"),
                data,
                status_code,
                request_id,
                exc.start,
            ) from None
    elif raw is None:
        text = ""
    else:
        raise TypeError(f"parse_body() expects bytes or str, got {type(raw).__name__}")
    try:
        items = _parse_text(text, content_type)
    except _Malformed as bad:
        raise _format_error(bad, text, status_code, request_id) from None
    except RecursionError:
        raise _format_error(
            _Malformed("JSON nested too deeply to read"), text, status_code, request_id
        ) from None
    except ValueError as exc:  # not a JSONDecodeError: e.g. an integer too long to convert
        raise _format_error(
            _Malformed(f"unreadable JSON ({exc})"), text, status_code, request_id
        ) from None
    if not all(map(str.isascii, map(_get_generated, items))):  # O(1) per string, loop in C
        _escape_lone_surrogates(items)
    return items


def _escape_lone_surrogates(items: list[Item]) -> None:
    """Rewrite ``generated`` strings holding an unpaired surrogate (``"\\ud83d"`` in the JSON)
    with that surrogate as the text ``\\ud83d``: such a string cannot be encoded as UTF-8, so no
    Arrow column could store it, while the escaped text stays readable (and fails to parse as a
    generation with a reason, instead of crashing the run). ``original`` is left as it is.

    Only non-ASCII strings can hold one; encoding them is cheaper than scanning the whole body
    for ``\\ud`` escapes (frequent in bodies written with ``ensure_ascii``).
    """
    for i, item in enumerate(items):
        generated = item["generated"]
        if generated.isascii():
            continue
        try:
            generated.encode("utf-8")
        except UnicodeEncodeError:
            fixed = generated.encode("utf-8", "backslashreplace").decode("utf-8")
            items[i] = {"original": item["original"], "generated": fixed}


def _format_error(
    bad: _Malformed,
    body: str | bytes,
    status_code: int | None,
    request_id: str | None,
    pos: int | None = None,
) -> ResponseFormatError:
    source = bad.snippet if bad.snippet is not None else body
    excerpt = _excerpt(source, _BODY_EXCERPT, bad.pos if pos is None else pos)
    status = f"{status_code} " if status_code is not None else ""
    rid = f" (request id {request_id})" if request_id else ""
    reason = " ".join(bad.reason.split("\n"))  # keep the message on one line, whatever it quotes
    message = f"unexpected {status}response body{rid}: {reason}; excerpt: {excerpt}"
    return ResponseFormatError(
        message, status_code=status_code, request_id=request_id, body=body[:_BODY_KEEP]
    )


def _media_type(content_type: str | None) -> str:
    if not content_type:
        return ""
    return content_type.split(";", 1)[0].strip().lower()


def _parse_text(text: str, content_type: str | None) -> list[Item]:
    # Fast path: the documented shape, one JSON document.
    try:
        value = _decode(text)
    except json.JSONDecodeError as exc:
        # A copy without traceback or context: those hold this frame, and this frame would hold
        # them back, a cycle that keeps the frames (and the caller's items) alive until a GC pass.
        first_error = json.JSONDecodeError(exc.msg, exc.doc, exc.pos)
    else:
        return _items_from_value(value, "")
    start = _WS.match(text).end()  # type: ignore[union-attr]  # always matches
    if start >= len(text):
        raise _Malformed("empty body")
    media = _media_type(content_type)
    first = text[start]
    if text.startswith(_SSE_STARTS, start) or (media in _SSE_TYPES and first not in "[{"):
        return _parse_sse(text)
    if first_error.msg == "Extra data" or media in _NDJSON_TYPES:
        return _parse_values(text, "")
    raise _json_error(first_error, text, "")


def _json_error(exc: json.JSONDecodeError, text: str, where: str) -> _Malformed:
    """Name a JSON failure plainly: HTML page, truncated document or invalid JSON."""
    start = _WS.match(text).end()  # type: ignore[union-attr]
    if text.startswith("<", start):
        return _Malformed(f"{where}body is HTML or XML, not JSON", text)
    at = f"line {exc.lineno} column {exc.colno}"
    if _truncated(exc):
        reason = f"{where}JSON ends early, truncated? ({exc.msg}: {at})"
    else:
        reason = f"{where}invalid JSON ({exc.msg}: {at})"
    return _Malformed(reason, text, exc.pos)


def _truncated(exc: json.JSONDecodeError) -> bool:
    """True when decoding failed because the text ran out, not because of a bad character."""
    return exc.pos >= len(exc.doc.rstrip()) or exc.msg.startswith("Unterminated string")


def _items_from_value(value: Any, where: str) -> list[Item]:
    """Items from one decoded JSON value: an array, a wrapping object or a single item."""
    if type(value) is list:
        return _normalize_list(value, where)
    if isinstance(value, dict):
        if "original" in value or "generated" in value:
            return [_normalize(value, f"{where}item")]
        for key in _WRAPPER_KEYS:
            inner = value.get(key)
            if isinstance(inner, list):
                return _normalize_list(inner, f"{where}{key!r} ")
        keys = ", ".join(_excerpt(k, 30) for k in list(value)[:8])
        raise _Malformed(
            f"{where}JSON object without an items array (keys: {keys or 'none'})", _dump(value)
        )
    raise _Malformed(f"{where}expected a JSON array of items, got {_kind(value)}", _dump(value))


def _normalize_list(values: list[Any], where: str) -> list[Item]:
    out: list[Item] = []
    append = out.append
    for i, item in enumerate(values):
        # Fast path: what json.loads built already has the exact shape; keep that dict.
        if (
            type(item) is dict
            and len(item) == 2
            and type(item.get("generated")) is str
            and type(item.get("original")) is dict
        ):
            append(item)
        else:
            append(_normalize(item, f"{where}item {i}"))
    return out


def _normalize(item: Any, label: str) -> Item:
    if not isinstance(item, dict):
        raise _Malformed(
            f"{label} is {_kind(item)}, expected an object with 'original' and 'generated'",
            _dump(item),
        )
    missing = [key for key in ("original", "generated") if key not in item]
    if missing:
        names = " or ".join(repr(k) for k in missing)
        raise _Malformed(f"{label} has no {names} key", _dump(item))
    original = item["original"]
    generated = item["generated"]
    if not isinstance(original, dict):
        raise _Malformed(
            f"{label}: 'original' is {_kind(original)}, expected an object", _dump(item)
        )
    if isinstance(generated, (dict, list)):
        generated = json.dumps(generated, ensure_ascii=False)
    elif not isinstance(generated, str):
        raise _Malformed(
            f"{label}: 'generated' is {_kind(generated)}, expected a string", _dump(item)
        )
    return {"original": original, "generated": generated}


def _merge(acc: list[Item], value: Any, where: str) -> None:
    """Add one event's or line's items; an array that repeats ``acc`` as its prefix replaces it."""
    if type(value) is dict:
        if (  # fast path: one well-formed item per event or line
            len(value) == 2
            and type(value.get("generated")) is str
            and type(value.get("original")) is dict
        ):
            acc.append(value)
            return
        if "original" in value or "generated" in value:
            acc.append(_normalize(value, f"{where}item"))
            return
    new = _items_from_value(value, where)
    if acc and len(new) >= len(acc) and new[: len(acc)] == acc:
        acc[:] = new
    else:
        acc.extend(new)


def _parse_values(text: str, where: str) -> list[Item]:
    """Several JSON values one after another (NDJSON, or concatenated); merge their items."""
    items: list[Item] = []
    n = len(text)
    pos = _WS.match(text).end()  # type: ignore[union-attr]
    line = 1
    counted = 0
    while pos < n:
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
            if line[0] == ":":
                continue  # comment / keep-alive
            field, _, value = line.partition(":")
            if field == "data":
                data.append(value[1:] if value.startswith(" ") else value)
            continue  # event:, id:, retry: and unknown fields carry no items
        if not data:
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
        if pending:
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
        raise _json_error(_decode_error(pending), pending, f"event {events}: ")
    if cut and not done:  # e.g. "...}\n\ndata: ": the events after the cut are lost
        raise _Malformed(
            "stream ends mid-event, truncated? (last line unfinished)", text, len(text)
        )
    if not events and not done:
        raise _Malformed("event stream carried no data events")
    return items


def _decode_error(text: str) -> json.JSONDecodeError:
    try:
        _decode(text)
    except json.JSONDecodeError as exc:
        return exc
    return json.JSONDecodeError("unexpected end of data", text, len(text))  # pragma: no cover


# --------------------------------------------------------------------------------------------
# parse_generated


class Parsed(NamedTuple):
    """Outcome of :func:`parse_generated`.

    ``value`` is the object (``None`` on failure); ``error`` a one-line reason (``None`` on
    success); ``method`` says which step worked: ``"json"``, ``"fenced"``, ``"embedded"``,
    ``"repaired"``, or ``""`` on failure, so callers can count how much text needed help.
    """

    value: dict[str, Any] | None
    error: str | None
    method: str


def parse_generated(text: object) -> Parsed:
    """Turn one ``generated`` string into a dict; never raises.

    Steps, cheapest first: strict ``json.loads``; the first fenced code block holding an object;
    the first balanced ``{...}`` in surrounding prose that is strict JSON; ``json_repair`` on the
    object-like spans (trailing commas, single quotes, unquoted keys, Python literals), accepted
    only when it yields a non-empty dict whose values are not all empty strings (so prose is never
    "repaired" into an object made of nothing). Truncated text is not repaired (closing a string
    or number cut short would give a wrong value, with no error): an object never closed fails
    ("truncated ..."), unless the text stops right after a whole inner object or array, so that
    only closing brackets are missing. A
    ``{"generated_data": {...}}`` wrapper (also with the inner object as JSON text) is unwrapped,
    and so is a JSON string that itself holds an object (double encoding). Any other result (a
    list, number, string) is a failure whose reason names what was found.
    """
    try:
        if type(text) is str:
            try:
                value = _fast_decode(text)
            except ValueError:
                return _parse_fallback(text, "")
            except RecursionError:
                return _parse_fallback(text, "JSON nested too deeply")
            if type(value) is dict:
                if len(value) == 1 and _GENERATED_WRAPPER in value:
                    value = _unwrap(value)
                return Parsed(value, None, "json")
            if isinstance(value, str):
                inner = _strict_object(value)
                if inner is not None:
                    return Parsed(_unwrap(inner), None, "json")
            return _not_object(value, text)
        if isinstance(text, str):
            return parse_generated(str(text))
        return Parsed(None, f"expected a string, got {_kind(text)}", "")
    except Exception as exc:  # never let one row's text kill a batch
        source = text if isinstance(text, str) else repr(text)
        return Parsed(
            None,
            f"could not parse ({type(exc).__name__}): {_excerpt(source, _GEN_EXCERPT)}",
            "",
        )


def _not_object(value: Any, text: str) -> Parsed:
    return Parsed(
        None, f"expected a JSON object, got {_kind(value)}: {_excerpt(text, _GEN_EXCERPT)}", ""
    )


def _strict_object(text: str) -> dict[str, Any] | None:
    try:
        value = _fast_decode(text)
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


def _parse_fallback(text: str, problem: str) -> Parsed:
    if not text.strip():
        return Parsed(None, "empty string", "")
    non_object: Any = _NOTHING
    if "```" in text:
        for body in _fence_bodies(text):
            try:
                value = _decode(body)
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
        return Parsed(None, f"{problem}: {_excerpt(text, _GEN_EXCERPT)}", "")
    spans = _object_spans(text)
    truncated = False
    for start, end, state in spans:
        if state != _CLOSED:
            problem = problem or "unterminated JSON object"
            continue
        try:
            value = _decode(text[start:end])
        except RecursionError:
            problem = problem or "JSON nested too deeply"
            continue
        except ValueError as exc:
            problem = problem or f"invalid JSON ({getattr(exc, 'msg', exc)})"
            continue
        if isinstance(value, dict):
            return Parsed(_unwrap(value), None, "embedded")
    # Longest spans first: the real object is usually longer than a stray "{name}" in prose.
    for start, end, state in sorted(spans, key=lambda s: s[0] - s[1])[:_MAX_REPAIRS]:
        if state == _CUT:
            truncated = True  # repairing would close a cut value: a shorter, wrong one
            continue
        repaired = _repair(text[start:end])
        if repaired is not None:
            return Parsed(repaired, None, "repaired")
    if truncated:
        excerpt = _tail_excerpt(text, _GEN_EXCERPT)  # the end: where it was cut
        return Parsed(None, f"truncated JSON object (never closed), not repairable: {excerpt}", "")
    problem = problem or "no JSON object found"
    return Parsed(None, f"{problem}, not repairable: {_excerpt(text, _GEN_EXCERPT)}", "")


def _fence_bodies(text: str) -> list[str]:
    """Candidate bodies of Markdown code fences (```lang ... ```), in order.

    An opening fence must start a line (as in Markdown), so a ``` inside a JSON string (where raw
    newlines cannot occur) is never taken for one. The body ends at the first ``` after it (a
    one-line fence) or, when that cuts it short, at the next fence that starts a line; an unclosed
    fence runs to the end of the text (truncated output).
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
    """Outermost ``{...}`` spans as (start, end, state), strings respected; iterative, linear.

    Quotes count only inside braces, so an apostrophe in the surrounding prose cannot hide the
    object. A span still open at the end of the text (truncated output) comes last, as
    ``_OPEN`` when the text stops right after a whole object or array (only closing brackets are
    missing: repairing it adds no value of its own), else as ``_CUT`` (it stops inside a string,
    number, literal or key, or between a key and its value: any repair would invent the rest).
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
    if isinstance(value, tuple):  # (value, log) when logging is on; not the default
        value = value[0]
    if not isinstance(value, dict):
        return None
    value = _unwrap(value)
    if not value or all(v == "" for v in value.values()):
        return None
    return value
