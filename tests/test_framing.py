"""Tests for synth_datasets.framing: every body framing into items, or one typed error.

The table pins realistic server outputs; the properties check that any body gives items or a
ResponseFormatError, and that every framing round-trips.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from helpers import JSONISH_TEXT, json_objects
from hypothesis import given, settings
from hypothesis import strategies as st

from synth_datasets.errors import ResponseFormatError
from synth_datasets.framing import Item, parse_body
from synth_datasets.generated import parse_generated


def _item(i: int, generated: str | None = None) -> Item:
    return {
        "original": {"conv_prefix": [{"role": "user", "content": f"q{i}"}], "response": "r"},
        "generated": generated if generated is not None else json.dumps({"n": i, "text": f"g{i}"}),
    }


ITEMS = [_item(i) for i in range(3)]
_items = st.lists(
    st.builds(
        lambda original, generated: {"original": original, "generated": generated},
        json_objects,
        st.text(max_size=40),
    ),
    max_size=4,
)
_FAST = settings(max_examples=200, deadline=None)
_SLOWER = settings(max_examples=100, deadline=None)  # each example builds several objects


# --------------------------------------------------------------------------------------------
# parse_body: table


def _sse(*payloads: str, sep: str = "\n") -> str:
    return "".join(f"data: {p}{sep}{sep}" for p in payloads)


BODY_OK: list[Any] = [
    pytest.param(json.dumps(ITEMS), None, ITEMS, id="array"),
    pytest.param(json.dumps(ITEMS, indent=2), "application/json", ITEMS, id="pretty-array"),
    pytest.param("[]", "application/json", [], id="empty-array"),
    pytest.param(" \n[]\n", None, [], id="empty-array-whitespace"),
    pytest.param(json.dumps({"data": ITEMS}), None, ITEMS, id="wrapped-data"),
    pytest.param(
        json.dumps({"results": ITEMS, "usage": {"n": 3}}), None, ITEMS, id="wrapped-results"
    ),
    pytest.param(json.dumps({"items": ITEMS}), None, ITEMS, id="wrapped-items"),
    pytest.param(json.dumps({"generations": []}), None, [], id="wrapped-empty"),
    pytest.param(json.dumps(ITEMS[0]), None, ITEMS[:1], id="single-item-object"),
    pytest.param(
        _sse(*(json.dumps(i) for i in ITEMS)), "text/event-stream", ITEMS, id="sse-per-item"
    ),
    pytest.param(_sse(json.dumps(ITEMS)), "text/event-stream", ITEMS, id="sse-full-array"),
    pytest.param(
        ": keep-alive\n\nevent: generation\nid: 1\ndata: "
        + json.dumps(ITEMS[0])
        + "\n\nretry: 1000\n\n:comment\nevent: generation\ndata:"
        + json.dumps(ITEMS[1])
        + "\n\nevent: generation\ndata: "
        + json.dumps(ITEMS[2])
        + "\n\nevent: done\ndata: [DONE]\n\n",
        "text/event-stream; charset=utf-8",
        ITEMS,
        id="sse-done-comments-event-lines",
    ),
    pytest.param(
        _sse(*(json.dumps(i) for i in ITEMS), sep="\r\n"),
        "text/event-stream",
        ITEMS,
        id="sse-crlf",
    ),
    pytest.param(
        "data: " + json.dumps(ITEMS, indent=2).replace("\n", "\ndata: ") + "\n\n",
        "text/event-stream",
        ITEMS,
        id="sse-multiline-data",
    ),
    pytest.param(
        _sse(*(json.dumps(i) for i in ITEMS), json.dumps(ITEMS), "[DONE]"),
        "text/event-stream",
        ITEMS,
        id="sse-items-then-final-array",
    ),
    pytest.param(
        _sse(json.dumps(ITEMS[:1]), json.dumps(ITEMS[:2]), json.dumps(ITEMS)),
        "text/event-stream",
        ITEMS,
        id="sse-running-arrays",
    ),
    pytest.param(
        _sse(json.dumps(ITEMS[:2]), json.dumps(ITEMS[2:])),
        "text/event-stream",
        ITEMS,
        id="sse-batches-concatenated",
    ),
    pytest.param(
        _sse(json.dumps(ITEMS)[:25], json.dumps(ITEMS)[25:]),
        "text/event-stream",
        ITEMS,
        id="sse-json-split-across-events",
    ),
    pytest.param(
        "data: " + json.dumps(ITEMS[0]) + "\ndata: " + json.dumps(ITEMS[1]) + "\n\n",
        "text/event-stream",
        ITEMS[:2],
        id="sse-one-item-per-data-line",
    ),
    pytest.param(
        _sse(json.dumps({"data": ITEMS})), "text/event-stream", ITEMS, id="sse-wrapped-event"
    ),
    pytest.param(
        _sse(json.dumps(ITEMS[0])).rstrip("\n"), "text/event-stream", ITEMS[:1], id="sse-no-tail"
    ),
    pytest.param(
        _sse(json.dumps(ITEMS[0])) + "data: " + json.dumps(ITEMS[1]),
        "text/event-stream",
        ITEMS[:2],
        id="sse-no-tail-second-event",
    ),
    pytest.param(
        _sse(json.dumps(ITEMS[0]), "[DONE]") + "event: clo",
        "text/event-stream",
        ITEMS[:1],
        id="sse-cut-after-done",
    ),
    pytest.param(_sse("[DONE]"), "text/event-stream", [], id="sse-only-done"),
    pytest.param(
        "\n".join(json.dumps(i) for i in ITEMS), "application/x-ndjson", ITEMS, id="ndjson"
    ),
    pytest.param(
        "\n".join(json.dumps(i) for i in ITEMS) + "\n\n\n",
        "application/jsonl",
        ITEMS,
        id="ndjson-trailing-blank-lines",
    ),
    pytest.param(
        "\r\n".join(json.dumps(i) for i in ITEMS) + "\r\n", None, ITEMS, id="ndjson-sniffed-crlf"
    ),
    pytest.param(
        json.dumps(ITEMS[:2]) + "\n" + json.dumps(ITEMS[2:]), None, ITEMS, id="ndjson-of-arrays"
    ),
    pytest.param(json.dumps(ITEMS[0]), "application/x-ndjson", ITEMS[:1], id="ndjson-one-line"),
    pytest.param(_sse(json.dumps(ITEMS)), "application/json", ITEMS, id="says-json-is-sse"),
    pytest.param(json.dumps(ITEMS), "text/event-stream", ITEMS, id="says-sse-is-json"),
    pytest.param(
        "\n".join(json.dumps(i) for i in ITEMS), "application/json", ITEMS, id="says-json-is-ndjson"
    ),
    pytest.param(
        json.dumps([{"original": {"q": 1}, "generated": {"a": "é", "b": [1]}}]),
        None,
        [{"original": {"q": 1}, "generated": '{"a": "é", "b": [1]}'}],
        id="generated-object-serialised",
    ),
    pytest.param(
        json.dumps([{"original": {}, "generated": [1, 2]}]),
        None,
        [{"original": {}, "generated": "[1, 2]"}],
        id="generated-list-serialised",
    ),
    pytest.param(
        json.dumps([{"original": {"q": 1}, "generated": "x", "score": 0.5}]),
        None,
        [{"original": {"q": 1}, "generated": "x"}],
        id="extra-keys-dropped",
    ),
]


@pytest.mark.parametrize(("body", "content_type", "expected"), BODY_OK)
def test_parse_body_ok(body: str, content_type: str | None, expected: list[Item]) -> None:
    assert parse_body(body.encode(), content_type=content_type) == expected
    assert parse_body(body, content_type=content_type) == expected


def test_parse_body_items_have_exact_keys() -> None:
    for item in parse_body(_sse(*(json.dumps({**i, "x": 1}) for i in ITEMS))):
        assert set(item) == {"original", "generated"}
        assert isinstance(item["generated"], str)


def test_parse_body_escapes_lone_surrogates_in_generated() -> None:
    # An unpaired surrogate cannot be encoded as UTF-8 (Arrow refuses it): it becomes readable
    # text ("\\ud83d"); pairs, other escapes and `original` are left as they are.
    items = [
        {"original": {"q": 1}, "generated": "\ud83d broken emoji"},
        {"original": {"q": 2}, "generated": '{"a": "\udfff"}'},
        {"original": {"q": "\ud800"}, "generated": "ok \U0001f680 \u00e9"},
    ]
    want = ["\\ud83d broken emoji", '{"a": "\\udfff"}', "ok \U0001f680 \u00e9"]
    ascii_body = json.dumps(items)
    assert "\\ud83d\\ude80" in ascii_body  # the pair is escaped too: it must stay a pair
    # Bytes only hold the escape (UTF-8 cannot encode a surrogate); a str may hold either.
    for body in [ascii_body.encode(), ascii_body, json.dumps(items, ensure_ascii=False)]:
        got = parse_body(body)
        assert [i["generated"] for i in got] == want
        assert got[2]["original"] == {"q": "\ud800"}
    sse = "".join(f"data: {json.dumps(i)}\n\n" for i in items)
    assert [i["generated"] for i in parse_body(sse.encode())] == want
    # Escaped backslashes that merely look like a surrogate escape are plain text already.
    plain = [{"original": {}, "generated": "C:\\udata"}]
    assert parse_body(json.dumps(plain).encode()) == plain


def test_parse_body_bom() -> None:
    assert parse_body(b"\xef\xbb\xbf" + json.dumps(ITEMS).encode()) == ITEMS
    assert parse_body("\ufeff[]") == []


BODY_ERRORS: list[Any] = [
    pytest.param(
        b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head>"
        b"<body><h1>Bad Gateway</h1>" + b"x" * 500 + b"</body></html>",
        "HTML",
        id="html-page",
    ),
    pytest.param(json.dumps(ITEMS * 10).encode()[:-40], "truncated", id="truncated-array"),
    pytest.param(b'[{"original": {"q": 1}}]', "item 0 has no 'generated' key", id="no-generated"),
    pytest.param(
        b'[{"original": {}, "generated": "x"}, {"generated": "y"}]',
        "item 1 has no 'original' key",
        id="no-original",
    ),
    pytest.param(
        b'[{"original": "q1", "generated": "x"}]',
        "'original' is str, expected an object",
        id="original-not-object",
    ),
    pytest.param(
        b'[{"original": {}, "generated": null}]',
        "'generated' is None, expected a string",
        id="generated-null",
    ),
    pytest.param(b'"all good"', "expected a JSON array of items, got str", id="top-level-string"),
    pytest.param(b"[1, 2]", "item 0 is int", id="array-of-numbers"),
    pytest.param(b'{"detail": "boom"}', "without an items array (keys: 'detail')", id="object"),
    pytest.param(b'[{"original": {}, "generated": "\xff"}]', "not valid UTF-8", id="bad-utf8"),
    pytest.param(b"", "empty body", id="empty-body"),
    pytest.param(b" \r\n ", "empty body", id="blank-body"),
    pytest.param(b": ping\n\n: ping\n\n", "no data events", id="sse-only-comments"),
    pytest.param(b"data: not json\n\n", "event 1: invalid JSON", id="sse-bad-event"),
    pytest.param(
        ("data: " + json.dumps(ITEMS)[:30] + "\n\n").encode(), "truncated", id="sse-truncated"
    ),
    pytest.param(
        ("data: " + json.dumps(ITEMS)[:30] + "\n\ndata: [DONE]\n\n").encode(),
        "[DONE] while a JSON value was unfinished",
        id="sse-done-mid-value",
    ),
    pytest.param(b'data: {"error": "overloaded"}\n\n', "keys: 'error'", id="sse-error-event"),
    # Streams cut inside a field line: the events after the cut are lost.
    pytest.param(
        (_sse(json.dumps(ITEMS[0])) + "data: ").encode(), "mid-event, truncated", id="sse-cut-data"
    ),
    pytest.param(
        (_sse(json.dumps(ITEMS[0])) + "data:").encode(), "mid-event", id="sse-cut-data-colon"
    ),
    pytest.param((_sse(json.dumps(ITEMS[0])) + "da").encode(), "mid-event", id="sse-cut-field"),
    pytest.param(
        (_sse(json.dumps(ITEMS[0])) + "event: generation").encode(),
        "mid-event",
        id="sse-cut-event-line",
    ),
    pytest.param(
        (_sse(json.dumps(ITEMS[0])) + ": keep-al").encode(), "mid-event", id="sse-cut-comment"
    ),
    pytest.param(
        (_sse(json.dumps(ITEMS[0]), sep="\r\n") + "data: ").encode(),
        "mid-event",
        id="sse-crlf-cut-data",
    ),
    pytest.param(
        (_sse(json.dumps(ITEMS[0])) + "data: " + json.dumps(ITEMS[1])[:-1]).encode(),
        "truncated",
        id="sse-no-tail-cut-json",
    ),
    pytest.param(
        (json.dumps(ITEMS[0]) + "\n{oops}\n").encode(), "line 2: invalid JSON", id="ndjson-bad-line"
    ),
    pytest.param(b"[" * 100_000, "nested too deeply", id="deep-nesting"),
    pytest.param(b"[" + b"1" * 5000 + b"]", "unreadable JSON", id="huge-integer"),
]


@pytest.mark.parametrize(("body", "reason"), BODY_ERRORS)
def test_parse_body_errors(body: bytes, reason: str) -> None:
    with pytest.raises(ResponseFormatError) as info:
        parse_body(body, content_type="application/json", status_code=200, request_id="req-42")
    err = info.value
    assert err.status_code == 200
    assert err.request_id == "req-42"
    message = str(err)
    assert "\n" not in message and "\r" not in message
    assert reason in message
    assert "req-42" in message
    excerpt = message.partition("; excerpt: ")[2]
    assert excerpt, message
    assert len(excerpt) <= 150
    assert err.body is not None


def test_parse_body_error_excerpt_marks_cut() -> None:
    body = b"<html>" + b"y" * 1000 + b"</html>"
    with pytest.raises(ResponseFormatError) as info:
        parse_body(body, status_code=200)
    excerpt = str(info.value).partition("; excerpt: ")[2]
    assert len(excerpt) <= 120
    assert excerpt.endswith("…")


def test_parse_body_error_without_request_id() -> None:
    with pytest.raises(ResponseFormatError) as info:
        parse_body(b"nope", status_code=None, request_id=None)
    assert info.value.status_code is None
    assert info.value.request_id is None
    assert "request id" not in str(info.value)


def test_parse_body_rejects_non_bytes() -> None:
    with pytest.raises(TypeError):
        parse_body(123)  # type: ignore[arg-type]


# Properties

_body_prefixes = st.sampled_from(["", "data: ", "data:", ": ", "event: x\n", "[", "{", "\n"])


@_FAST
@given(
    prefix=_body_prefixes,
    raw=st.one_of(st.binary(max_size=80), JSONISH_TEXT.map(str.encode)),
    content_type=st.sampled_from(
        [None, "application/json", "text/event-stream", "application/x-ndjson"]
    ),
)
def test_property_parse_body_items_or_format_error(
    prefix: str, raw: bytes, content_type: str | None
) -> None:
    try:
        items = parse_body(prefix.encode() + raw, content_type=content_type, request_id="r")
    except ResponseFormatError as err:
        assert err.request_id == "r"
        assert "\n" not in str(err)
        return
    assert isinstance(items, list)
    for item in items:
        assert set(item) == {"original", "generated"}
        assert isinstance(item["original"], dict)
        assert isinstance(item["generated"], str)


def _encode(items: list[Item], framing: str, ascii_only: bool) -> tuple[str, str | None]:

    def dumps(value: Any) -> str:
        return json.dumps(value, ensure_ascii=ascii_only)

    if framing == "json":
        return dumps(items), "application/json"
    if framing == "wrapped":
        return dumps({"data": items}), "application/json"
    if framing == "sse-items":
        return "".join(f"data: {dumps(i)}\n\n" for i in items) + "data: [DONE]\n\n", None
    if framing == "sse-array":
        return f"event: result\ndata: {dumps(items)}\n\n", "text/event-stream"
    # ndjson; an empty result is one empty array, as an empty body is refused
    lines = [dumps(i) for i in items] or ["[]"]
    return "\n".join(lines) + "\n", "application/x-ndjson"


@_SLOWER
@given(
    items=_items,
    framing=st.sampled_from(["json", "wrapped", "sse-items", "sse-array", "ndjson"]),
    ascii_only=st.booleans(),
    crlf=st.booleans(),
)
def test_property_body_roundtrip(
    items: list[Item], framing: str, ascii_only: bool, crlf: bool
) -> None:
    body, content_type = _encode(items, framing, ascii_only)
    if crlf:
        body = body.replace("\n", "\r\n")  # JSON text never holds a raw newline
    assert parse_body(body.encode(), content_type=content_type) == items


@pytest.mark.parametrize(
    "number", ["-9223372036854775809", "18446744073709551616", "100000000000000000000000000000"]
)
def test_integers_past_64_bits_stay_integers(number):
    """The fast decoder (orjson) would read these as floats; the json module's ints are kept."""
    assert parse_generated(f'{{"n": {number}}}').value == {"n": int(number)}
    body = f'[{{"original": {{"n": {number}}}, "generated": "{{}}"}}]'.encode()
    assert parse_body(body)[0]["original"] == {"n": int(number)}
