"""Property-based tests: linking, truncated bodies and the row builder end-to-end.

``tests/test_generated.py`` and ``tests/test_framing.py`` already have the round-trip and never-raises properties of
``parse_body`` and ``parse_generated``; these add:

* linking (``link_items``) over random examples with duplicates, shuffles, missing and extra
  items and altered ``original`` objects: an item is only ever linked to an example equal to its
  ``original``;
* truncation: every strict prefix of a framed body is refused or yields a prefix of its items;
* the one parse-and-cast path: whatever text comes back, the table has the output schema, the
  row accounting holds and a clean row equals datasets' own encoding of its values;
* the row builder end-to-end: random features and values, sent through ``Dataset.map`` with a
  ``SynthMapper`` to a stand-in server that answers exactly what the test drew (over real HTTP),
  so that the whole path, Arrow encoding included, is exercised without patching anything.
"""

from __future__ import annotations

import datetime as dt
import http.server
import json
import threading
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import datasets
import pyarrow as pa
import pytest
from conftest import MODEL_ID
from datasets import ClassLabel, Dataset, Features, Json, LargeList, List, Value
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from synth_datasets import ResponseFormatError, SynthClient, SynthMapper
from synth_datasets.framing import parse_body
from synth_datasets.generated import parse_generated
from synth_datasets.layout import plan_layout
from synth_datasets.lineage import ERROR_KINDS, error_kinds
from synth_datasets.linking import canonical_json, link_items
from synth_datasets.rows import RowBuilder

datasets.disable_progress_bars()

# --------------------------------------------------------------------------------------------
# Linking

_leaf = st.one_of(
    st.none(), st.integers(-3, 3), st.sampled_from(["a", "b", "é", ""]), st.sampled_from([0.5, 2.0])
)
_example = st.dictionaries(
    st.sampled_from(["q", "a", "n"]),
    st.one_of(_leaf, st.lists(_leaf, max_size=2)),
    max_size=3,
)


def _echo(value: Any, reorder: bool) -> Any:
    """How a server may echo an example: integral floats as ints, keys in another order."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        keys = sorted(value, reverse=True) if reorder else list(value)
        return {k: _echo(value[k], reorder) for k in keys}
    if isinstance(value, list):
        return [_echo(v, reorder) for v in value]
    return value


@st.composite
def _answers(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int, list[int]]:
    """Examples (with duplicates), the server's items and the intended example of each item.

    ``sources[t]`` is the position the server generated item ``t`` for, or -1 for an item whose
    ``original`` was altered (it matches no example).
    """
    pool = draw(st.lists(_example, min_size=1, max_size=4))
    examples = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=6))
    multiplier = draw(st.integers(1, 3))
    complete = draw(st.booleans())
    items: list[dict[str, Any]] = []
    sources: list[int] = []
    for pos, example in enumerate(examples):
        count = multiplier if complete else draw(st.integers(0, multiplier + 1))
        for k in range(count):
            altered = not complete and draw(st.integers(0, 9)) == 0
            original = {**example, "_edited": True} if altered else example
            original = _echo(original, reorder=draw(st.booleans()))
            items.append({"original": original, "generated": f"{pos}/{k}"})
            sources.append(-1 if altered else pos)
    order = draw(st.permutations(range(len(items)))) if draw(st.booleans()) else range(len(items))
    return examples, [items[t] for t in order], multiplier, [sources[t] for t in order]


@settings(max_examples=300, deadline=None)
@given(answer=_answers())
def test_property_links_are_never_wrong(answer: Any) -> None:
    examples, items, multiplier, sources = answer
    links = link_items(examples, items, multiplier)
    assert len(links) == len(items)
    keys = [canonical_json(e) for e in examples]
    for item, link, source in zip(items, links, sources, strict=True):
        key = canonical_json(item["original"])
        if key not in keys:
            assert link is None and source == -1  # unmatched: never guessed
        else:
            assert link is not None and keys[link] == key  # only to an equal example
    # Every item of a key is linked, to copies of that key only.
    by_key = Counter(canonical_json(i["original"]) for i in items)
    linked = Counter(keys[p] for p in links if p is not None)
    assert linked == Counter({k: n for k, n in by_key.items() if k in keys})
    # A complete answer gives every copy exactly `multiplier` items.
    if Counter(sources) == dict.fromkeys(range(len(examples)), multiplier):
        assert Counter(links) == dict.fromkeys(range(len(examples)), multiplier)


@settings(max_examples=300, deadline=None)
@given(answer=_answers())
def test_property_duplicates_are_balanced(answer: Any) -> None:
    examples, items, multiplier, _sources = answer
    links = link_items(examples, items, multiplier)
    copies: dict[str, list[int]] = defaultdict(list)
    for pos, example in enumerate(examples):
        copies[canonical_json(example)].append(pos)
    counts = Counter(p for p in links if p is not None)
    for positions in copies.values():
        shares = [counts.get(p, 0) for p in positions]
        assert max(shares) - min(shares) <= 1, (positions, shares)


@pytest.mark.parametrize(
    ("example", "echoed"),
    [({"x": 1}, {"x": True}), ({"x": 0}, {"x": False}), ({"x": [1.0]}, {"x": [True]})],
)
def test_bool_and_int_are_different_originals(example: Any, echoed: Any) -> None:
    assert canonical_json(example) != canonical_json(echoed)
    assert link_items([example], [{"original": echoed, "generated": "{}"}], 1) == [None]


# --------------------------------------------------------------------------------------------
# Truncated bodies

_items = st.lists(
    st.fixed_dictionaries(
        {"original": _example, "generated": st.text(max_size=12).map(json.dumps)}
    ),
    min_size=1,
    max_size=4,
)


def _frame(items: list[dict[str, Any]], framing: str) -> str:
    if framing == "json":
        return json.dumps(items)
    if framing == "sse":
        return "".join(f"data: {json.dumps(i)}\n\n" for i in items) + "data: [DONE]\n\n"
    return "".join(json.dumps(i) + "\n" for i in items)


_CONTENT_TYPES = {"json": "application/json", "sse": "text/event-stream", "ndjson": None}


@settings(max_examples=200, deadline=None)
@given(items=_items, framing=st.sampled_from(["json", "sse", "ndjson"]), data=st.data())
def test_property_a_truncated_body_never_yields_a_wrong_item(
    items: Any, framing: Any, data: Any
) -> None:
    """A cut body is refused, or (for streams) yields a prefix of the items: never a different
    or damaged item. A JSON array cut anywhere is always refused."""
    body = _frame(items, framing).encode()
    cut = data.draw(st.integers(0, len(body) - 1))
    try:
        got = parse_body(body[:cut], content_type=_CONTENT_TYPES[framing])
    except ResponseFormatError:
        return
    assert framing != "json"
    assert got == items[: len(got)]


# --------------------------------------------------------------------------------------------
# The row builder end-to-end: Dataset.map -> SynthMapper -> HTTP -> stand-in server


class _Canned:
    """A stand-in endpoint that answers whatever ``answer(examples)`` returns."""

    def __init__(self) -> None:
        self.answer: Callable[[list[dict[str, Any]]], list[dict[str, Any]]] = lambda e: []
        self.received: list[list[dict[str, Any]]] = []
        canned = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                canned.received.append(body["examples"])
                payload = json.dumps(canned.answer(body["examples"])).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def canned() -> Iterator[_Canned]:
    server = _Canned()
    yield server
    server.close()


def expand_with(
    canned: _Canned,
    ds: Dataset,
    answer: Callable[[list[dict[str, Any]]], list[dict[str, Any]]],
    multiplier: int,
    columns: list[str] | None = None,
) -> tuple[Dataset, SynthMapper]:
    canned.answer = answer
    canned.received.clear()
    client = SynthClient("sk-canned", canned.url, max_retries=0, backoff_factor=0.01)
    mapper = SynthMapper(
        prompt="p",
        multiplier=multiplier,
        model_id=MODEL_ID,
        client=client,
        columns=columns,
        request_size=max(1, len(ds)),
        cache=False,
        on_error="keep",
    )
    try:
        out = ds.map(mapper, **mapper.map_kwargs(ds))
    finally:
        mapper.close()
    return out, mapper


_LABELS = ["neg", "pos"]
_SCALARS = [Value("string"), Value("int64"), Value("int32"), Value("float64"), Value("bool")]
_scalar_features = st.sampled_from(_SCALARS)
_features = st.one_of(
    _scalar_features,
    _scalar_features.map(List),
    st.fixed_dictionaries({"x": _scalar_features, "y": _scalar_features}),
    st.fixed_dictionaries({"x": _scalar_features}).map(List),
    st.just(ClassLabel(names=_LABELS)),
)


def _values(feature: Any, *, generated: bool = False) -> st.SearchStrategy[Any]:
    """Values that fit ``feature`` (as JSON would carry them when ``generated``)."""
    if isinstance(feature, ClassLabel):
        labels = st.integers(0, len(_LABELS) - 1)
        return st.none() | (labels | st.sampled_from(_LABELS) if generated else labels)
    if isinstance(feature, List):
        return st.none() | st.lists(_values(feature.feature, generated=generated), max_size=3)
    if isinstance(feature, dict):
        fields = {k: _values(f, generated=generated) for k, f in feature.items()}
        return st.none() | st.fixed_dictionaries(fields)
    dtype = feature.dtype
    if dtype == "string":
        return st.none() | st.text(max_size=8)
    if dtype == "int64":
        return st.none() | st.integers(-(2**63), 2**63 - 1)
    if dtype == "int32":
        return st.none() | st.integers(-(2**31), 2**31 - 1)
    if dtype == "float64":
        return st.none() | st.floats(allow_nan=False, allow_infinity=False)
    return st.none() | st.booleans()


def _expected(feature: Any, value: Any) -> Any:
    """What the output column holds for a generated value that fits."""
    if value is None:
        return None
    if isinstance(feature, ClassLabel):
        return _LABELS.index(value) if isinstance(value, str) else value
    if isinstance(feature, List):
        return [_expected(feature.feature, v) for v in value]
    if isinstance(feature, dict):
        return {k: _expected(f, value[k]) for k, f in feature.items()}
    return value


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=6,
)


@st.composite
def _scenario(draw: st.DrawFn) -> dict[str, Any]:
    names = ["c0", "c1", "c2"][: draw(st.integers(1, 3))]
    features = Features({n: draw(_features) for n in names})
    sent = draw(st.lists(st.sampled_from(names), min_size=1, unique=True))
    row = st.fixed_dictionaries({n: _values(features[n]) for n in names})
    unique = draw(st.lists(row, min_size=1, max_size=3))
    rows = draw(st.lists(st.sampled_from(unique), min_size=1, max_size=5))  # duplicates
    multiplier = draw(st.integers(1, 3))
    generated = Features({n: features[n] for n in sent})
    plans: list[list[tuple[str, Any, bool]]] = []  # per seed: (text, expected or None, altered)
    for _ in rows:
        plan = []
        for _k in range(draw(st.integers(0, multiplier + 1))):
            obj = {n: draw(_values(generated[n], generated=True)) for n in sent}
            kind = draw(st.sampled_from(["json", "wrapped", "fenced", "prose", "other", "junk"]))
            if kind == "json":
                text = json.dumps(obj)
            elif kind == "wrapped":
                text = json.dumps({"generated_data": obj})
            elif kind == "fenced":
                text = f"```json\n{json.dumps(obj, indent=2)}\n```"
            elif kind == "prose":
                text = f"Here it is: {json.dumps(obj)} Anything else?"
            elif kind == "other":
                text, obj = json.dumps(draw(_json)), None
            else:
                text, obj = draw(st.text(max_size=20)), None
            expected = None if obj is None else {n: _expected(generated[n], obj[n]) for n in sent}
            plan.append((text, expected, draw(st.integers(0, 7)) == 0))
        plans.append(plan)
    n_items = sum(len(p) for p in plans)
    order = draw(st.permutations(range(n_items)))
    return {
        "features": features,
        "sent": sent,
        "rows": rows,
        "multiplier": multiplier,
        "plans": plans,
        "order": order,
    }


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(scenario=_scenario())
def test_property_row_builder_end_to_end(canned: _Canned, scenario: Any) -> None:
    features, sent = scenario["features"], scenario["sent"]
    ds = Dataset.from_list(scenario["rows"], features=features)
    texts: list[tuple[str, bool]] = []  # (text, altered), server order
    expected: dict[str, dict[str, Any]] = {}

    def answer(examples: list[dict[str, Any]]) -> list[dict[str, Any]]:
        items = []
        for example, plan in zip(examples, scenario["plans"], strict=True):
            for text, want, altered in plan:
                original = {**example, "_edited": 1} if altered else example
                items.append({"original": original, "generated": text})
                if want is not None:
                    expected[text] = want
        items = [items[t] for t in scenario["order"]]
        texts.extend((i["generated"], "_edited" in i["original"]) for i in items)
        return items

    out, mapper = expand_with(canned, ds, answer, scenario["multiplier"], columns=sent)
    (examples,) = canned.received
    assert mapper.layout is not None and out.features == mapper.layout.features

    # Every item is exactly one row; every seed that got nothing has one shortfall row.
    assert Counter(r for r in out["generated_raw"] if r is not None) == Counter(t for t, _ in texts)
    keys = [canonical_json(e) for e in examples]
    # The keys some unaltered item came back for: their seeds are linked, the others are short.
    linked_keys = {
        keys[i] for i, plan in enumerate(scenario["plans"]) for _text, _want, alt in plan if not alt
    }
    source_indices = [i for i in out["source_index"] if i is not None]
    assert source_indices == sorted(source_indices)
    passthrough = [c for c in features if c not in sent]
    seen_unlinked = False
    for row in out:
        i = row["source_index"]
        if i is None:
            seen_unlinked = True
            assert row["error"].startswith("unlinked:") and row["original"] is None
            assert all(row[c] is None for c in passthrough)
            continue
        assert not seen_unlinked  # unlinked rows come last
        assert row["original"] == examples[i]
        assert all(row[c] == ds[i][c] for c in passthrough)
        if row["generated_raw"] is None:
            assert row["error"].startswith("shortfall:")
            assert all(row[c] is None for c in sent)
            continue
        assert keys[i] in linked_keys
        want = expected.get(row["generated_raw"])
        if want is not None:
            assert row["error"] is None, row
            assert {c: row[c] for c in sent} == want
        elif row["error"] is not None:
            assert row["error"].startswith(("parse:", "missing:", "type:")), row["error"]
            assert any(row[c] is None for c in sent)
    for i in range(len(examples)):
        if keys[i] not in linked_keys:
            rows_i = [r for r in out if r["source_index"] == i]
            assert len(rows_i) == 1 and rows_i[0]["error"].startswith("shortfall:")


# --------------------------------------------------------------------------------------------
# The one parse-and-cast path over random texts

_READABLE = [Value(d) for d in ("string", "large_string", "int8", "int64", "uint16", "float64")]
_column_feature = st.one_of(
    st.sampled_from([*_READABLE, Value("bool"), Json(), ClassLabel(names=_LABELS)]),
    st.sampled_from(_READABLE).map(List),
    st.fixed_dictionaries({"x": st.sampled_from(_READABLE), "y": st.sampled_from(_READABLE)}),
    st.fixed_dictionaries({"x": st.sampled_from(_READABLE)}).map(LargeList),
    st.fixed_dictionaries({"x": st.sampled_from(_READABLE).map(List), "y": st.just(Value("bool"))}),
)
_any_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-300, 300)
    | st.integers()
    | st.integers(min_value=2**1020)
    | st.floats()  # NaN and infinities: json.dumps writes NaN, Infinity, -Infinity
    | st.sampled_from([0.0, -0.0, 1e308, -5e-324])
    | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.sampled_from("xyz"), inner),
    max_leaves=5,
)


def _fitting(feature: Any) -> st.SearchStrategy[Any]:
    """JSON values that fit ``feature`` (the usual answer), at the edges of its range too."""
    if isinstance(feature, Json):
        return _any_json
    if isinstance(feature, ClassLabel):
        return st.integers(0, len(_LABELS) - 1) | st.sampled_from(_LABELS)
    if isinstance(feature, dict):
        return st.fixed_dictionaries({k: _fitting(f) for k, f in feature.items()})
    if isinstance(feature, (List, LargeList)):
        return st.lists(_fitting(feature.feature), max_size=3)
    dtype = feature.dtype
    if "string" in dtype:
        return st.text(max_size=6)
    if dtype == "bool":
        return st.booleans()
    if dtype == "float64":
        return (
            st.floats()  # NaN and infinities too: json.dumps writes NaN, Infinity, -Infinity
            | st.just(-0.0)
            | st.integers(-(2**70), 2**70)
            | st.integers(2**1023, 2**1030)  # past the largest float for some
        )
    bits = int(dtype.lstrip("uint"))
    if dtype.startswith("u"):
        return st.integers(0, 2**bits - 1)
    return st.integers(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)


@st.composite
def _texts(draw: st.DrawFn) -> tuple[dict[str, Any], list[str | None]]:
    names = ["a", "b"][: draw(st.integers(1, 2))]
    features = {n: draw(_column_feature) for n in names}
    texts: list[str | None] = []
    for _ in range(draw(st.integers(1, 6))):
        obj = {
            n: draw(_fitting(features[n]) if draw(st.integers(0, 5)) else _any_json)
            for n in names
            if draw(st.integers(0, 19))
        }
        if draw(st.integers(0, 3)) == 0:
            obj["extra"] = draw(_any_json)  # ignored by both ways, but it must parse
        text = json.dumps(
            obj, ensure_ascii=draw(st.booleans()), indent=draw(st.sampled_from([None, 1]))
        )
        # What json.dumps never writes: -0 as an integer, Inf, -NaN; None: no answer.
        odd = text.replace("-0.0", "-0").replace("Infinity", "Inf").replace("NaN", "-NaN")
        text = draw(st.sampled_from([text, text, odd]))
        texts.append(draw(st.sampled_from([text] * 6 + [None, text[:-1], "x" + text])))
    return features, texts


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=_texts())
def test_property_whatever_is_generated_the_table_has_the_output_schema(case: Any) -> None:
    """One row per answer and one per seed without any, in the output schema; a row without an
    error holds exactly datasets' own encoding of the generated values (as Arrow converts them to
    the column types), a row with one names known kinds only."""
    features, texts = case
    layout = plan_layout(Features({"q": Value("int64")}), generated_features=features)
    builder = RowBuilder(layout, 1)
    examples = [{"q": i} for i in range(len(texts))]
    items = [
        {"original": e, "generated": t}
        for e, t in zip(examples, texts, strict=True)
        if t is not None
    ]
    rows, counts = builder.collect(examples, items)
    table, more = builder.to_arrow(
        [(0, rows)], {"q": list(range(len(texts)))}, range(len(texts)), examples
    )
    assert table.schema == layout.features.arrow_schema
    assert table.column("source_index").to_pylist() == list(range(len(texts)))
    assert table.column("generated_raw").to_pylist() == texts
    names = list(features)
    out = table.select(names).to_pylist()
    errors = table.column("error").to_pylist()
    assert counts["empty_seeds"] == texts.count(None)
    assert more["parse_errors"] == sum((e or "").startswith("parse:") for e in errors)
    clean = 0
    for text, row, error in zip(texts, out, errors, strict=True):
        if error is not None:
            assert error_kinds(error) <= ERROR_KINDS.keys(), error
            assert any(row[n] is None for n in names)
            continue
        assert text is not None
        generated = parse_generated(text).value
        assert generated is not None
        try:  # datasets' encoding, then Arrow's conversion to the column types
            encoded = Features(features).encode_example({n: generated[n] for n in names})
            expected = pa.Table.from_pylist([encoded], schema=Features(features).arrow_schema)
        except (pa.ArrowException, OverflowError):
            event("a value converted that Arrow alone refuses (an integer past int64 to float)")
            continue
        assert repr(row) == repr(expected.to_pylist()[0])
        clean += 1
    event("clean rows" if clean else "no clean row")


# --------------------------------------------------------------------------------------------
# Values a server can send that fit no column: null with a reason, never a crashed run

_HOSTILE: list[Any] = [
    pytest.param(Value("float64"), '{"v": 1' + "0" * 400 + "}", id="integer-too-large-for-a-float"),
    pytest.param(Value("string"), '{"v": "\\ud800"}', id="lone-surrogate-in-a-value"),
    pytest.param(List(Value("string")), '{"v": ["ok", "\\udfff"]}', id="lone-surrogate-in-a-list"),
    pytest.param(Value("timestamp[ns]"), '{"v": "2500-01-01T00:00:00"}', id="timestamp-ns-range"),
    pytest.param(Value("time64[us]"), '{"v": "25:99:00"}', id="time-not-a-time"),
    pytest.param(Value("decimal128(5, 2)"), '{"v": "1234.5678"}', id="decimal-too-precise"),
]


@pytest.mark.parametrize(("feature", "generated"), _HOSTILE)
def test_a_value_that_fits_no_column_is_null_with_a_reason(
    canned: _Canned, feature: Any, generated: Any
) -> None:
    seed = {"v": None, "q": "question"}
    ds = Dataset.from_list([seed], features=Features({"v": feature, "q": Value("string")}))

    def answer(examples: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{"original": examples[0], "generated": generated}]

    out, _ = expand_with(canned, ds, answer, 1, columns=["v", "q"])
    (row,) = out.to_list()
    assert row["v"] is None and row["error"].startswith("type: v")
    assert row["generated_raw"] is not None


def test_a_generated_string_with_a_lone_surrogate_is_kept_readably(canned: _Canned) -> None:
    ds = Dataset.from_list([{"q": "question"}])

    def answer(examples: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{"original": examples[0], "generated": "\ud83d broken emoji"}]

    out, _ = expand_with(canned, ds, answer, 1)
    (row,) = out.to_list()
    assert row["generated_raw"] and row["error"].startswith("parse:")


def test_datetimes_in_generated_text_are_cast(canned: _Canned) -> None:
    features = Features({"when": Value("timestamp[us]"), "day": Value("date32")})
    seed = {"when": dt.datetime(2024, 1, 1), "day": dt.date(2024, 1, 1)}
    ds = Dataset.from_list([seed], features=features)

    def answer(examples: list[dict[str, Any]]) -> list[dict[str, Any]]:
        good = '{"when": "2025-02-03T04:05:06", "day": "2025-02-03"}'
        bad = '{"when": "yesterday", "day": 20250203}'
        return [{"original": examples[0], "generated": t} for t in (good, bad)]

    out, _ = expand_with(canned, ds, answer, 2)
    good, bad = out.to_list()
    assert good["when"] == dt.datetime(2025, 2, 3, 4, 5, 6) and good["day"] == dt.date(2025, 2, 3)
    assert good["error"] is None
    assert bad["when"] is None and bad["day"] is None
    assert "type: when: expected an ISO timestamp" in bad["error"] and "type: day" in bad["error"]
