"""Linking and casting, without a server: pure functions over small tables."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import random

import pyarrow as pa
import pytest
from datasets import ClassLabel, Features, Json, LargeList, List, Value
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from synth_datasets import ConfigurationError
from synth_datasets.rows import (
    Collected,
    RowBuilder,
    _ArrowReader,
    _compile_bools,
    canonical_json,
    link_items,
    plan_layout,
)

A, B, C = {"q": "a"}, {"q": "b"}, {"q": "c", "n": 1.0}


def items(originals):
    return [{"original": o, "generated": '{"q": "x"}'} for o in originals]


def test_link_in_order_fast_path():
    assert link_items([A, B], items([A, A, B, B]), 2) == [0, 0, 1, 1]


def test_link_shuffled():
    assert link_items([A, B, C], items([C, A, B, A, C, B]), 2) == [2, 0, 1, 0, 2, 1]


def test_link_number_echoed_as_int():
    assert link_items([C], items([{"n": 1, "q": "c"}]), 1) == [0]


def test_link_duplicates_in_order():
    assert link_items([A, B, A], items([A, A, B, B, A, A]), 2) == [0, 0, 1, 1, 2, 2]


def test_link_unknown_original_is_none_never_guessed():
    assert link_items([A, B], items([A, {"q": "edited"}, B, B]), 2) == [0, None, 1, 1]


def test_link_random_shuffles_never_wrong():
    rng = random.Random(0)
    for _ in range(200):
        examples = [
            {"k": rng.choice("abc"), "v": rng.randint(0, 3)} for _ in range(rng.randint(1, 6))
        ]
        m = rng.randint(1, 3)
        its = [{"original": e, "generated": ""} for e in examples for _ in range(m)]
        rng.shuffle(its)
        links = link_items(examples, its, m)
        for item, pos in zip(its, links, strict=False):
            assert pos is not None and examples[pos] == item["original"]
        # balanced: each example position gets exactly m items
        assert sorted(links) == sorted(p for p in range(len(examples)) for _ in range(m))


@pytest.mark.parametrize(
    ("copies", "multiplier", "returned", "expected"),
    [
        (6, 2, 2, [0, 1]),  # short: two copies get one each (was [0, 0] + 5 shortfall rows)
        (2, 2, 3, [0, 0, 1]),
        (2, 2, 5, [0, 0, 0, 1, 1]),  # long: the first copies take the extra items
        (3, 1, 7, [0, 0, 0, 1, 1, 2, 2]),
        (2, 3, 6, [0, 0, 0, 1, 1, 1]),  # complete: multiplier each, as before
    ],
)
def test_link_duplicates_are_balanced(copies, multiplier, returned, expected):
    examples = [{"q": "same"}] * copies
    assert link_items(examples, items([{"q": "same"}] * returned), multiplier) == expected


def test_link_duplicates_balanced_among_other_examples():
    examples = [A, B, A, A]
    got = link_items(examples, items([B, A, A, A, A]), 2)  # 4 items for 3 copies of A
    assert got == [1, 0, 0, 2, 3]


@pytest.mark.parametrize(
    ("example", "echoed"),
    [
        ({"x": 1}, {"x": True}),
        ({"x": 0}, {"x": False}),
        ({"x": True}, {"x": 1}),
        ({"x": [1.0]}, {"x": [True]}),
        ({"x": [{"y": 1}]}, {"x": [{"y": True}]}),
        ({"x": {"y": [0]}}, {"x": {"y": [False]}}),
    ],
)
def test_link_bool_is_not_int(example, echoed):
    assert example == echoed  # what the fast path's == alone would accept
    assert link_items([example], items([echoed]), 1) == [None]
    assert link_items([example] * 2, items([echoed, example]), 1) == [None, 0]


def test_link_fast_path_keeps_int_valued_floats():
    assert link_items([{"x": 2.0, "b": True}], items([{"x": 2, "b": True}]), 1) == [0]


@pytest.mark.parametrize(
    ("features", "example", "echoed", "linked"),
    [
        ({"n": Value("int64")}, {"n": 1}, {"n": True}, False),
        ({"n": Value("int64")}, {"n": 1}, {"n": 1.0}, True),
        ({"b": Value("bool")}, {"b": False}, {"b": 0}, False),
        ({"n": List(Value("float64"))}, {"n": [1.0, 0.0]}, {"n": [1, False]}, False),
        ({"s": {"t": ClassLabel(names=["a", "b"])}}, {"s": {"t": 1}}, {"s": {"t": True}}, False),
        ({"j": Json()}, {"j": {"k": [1]}}, {"j": {"k": [True]}}, False),
        ({"j": Json()}, {"j": {"k": [1]}}, {"j": {"k": [1]}}, True),
    ],
)
def test_row_builder_links_bools_strictly(features, example, echoed, linked):
    layout = layout_for({"q": Value("string"), **features})
    check = _compile_bools(layout.original_features)
    example, echoed = {"q": "x", **example}, {"q": "x", **echoed}
    assert link_items([example], items([echoed]), 1, bools_match=check) == [0 if linked else None]
    _, counts = RowBuilder(layout, 1).collect([example], items([echoed]))
    assert (counts["unlinked"] == 0) is linked


def test_text_only_features_need_no_bool_check():
    conversation = List({"role": Value("string"), "content": Value("string")})
    assert _compile_bools({"m": conversation, "t": Value("large_string")}) is None
    assert _compile_bools({"m": conversation, "n": Value("int32")}) is not None


def test_canonical_json_sorts_keys():
    assert canonical_json({"b": 1, "a": [1.0]}) == '{"a":[1],"b":1}'


def layout_for(features, **kw):
    return plan_layout(Features(features), **kw)


def build(features, generated, **kw):
    layout = layout_for(features, **kw)
    batch = {c: [None] for c in layout.input_features}
    ex = {c: None for c in layout.columns}
    rows, counts = RowBuilder(layout, 1).build(
        batch, [7], [ex], [{"original": ex, "generated": generated}]
    )
    return rows, counts


@pytest.mark.parametrize(
    ("feature", "value", "expected", "error"),
    [
        (Value("string"), '"x"', "x", None),
        (Value("string"), "3", None, "expected text"),
        (Value("int32"), "3", 3, None),
        (Value("int32"), "3.0", 3, None),
        (Value("int8"), "300", None, "does not fit"),
        (Value("int64"), "true", None, "expected an integer"),
        (Value("float64"), "3", 3.0, None),
        (Value("bool"), "1", None, "true/false"),
        (List(Value("string")), '["a", "b"]', ["a", "b"], None),
        (List(Value("string")), '"a"', None, "expected a list"),
        (
            {"role": Value("string"), "content": Value("string")},
            '{"role": "u", "content": "c", "x": 1}',
            {"role": "u", "content": "c"},
            None,
        ),
        (
            {"role": Value("string"), "content": Value("string")},
            '{"role": "u"}',
            None,
            "content: missing",
        ),
        (ClassLabel(names=["neg", "pos"]), '"pos"', 1, None),
        (ClassLabel(names=["neg", "pos"]), '"meh"', None, "labels"),
        (Value("string"), "null", None, None),
        (Value("string"), '"\\ud800"', None, "not UTF-8"),
        (Value("float64"), "1" + "0" * 400, None, "too large for float64"),
        (Value("timestamp[us]"), '"2500-01-01T00:00:00"', dt.datetime(2500, 1, 1), None),
        (Value("timestamp[ns]"), '"2500-01-01T00:00:00"', None, "does not fit timestamp[ns]"),
        (Value("timestamp[ns]"), '"2000-01-01T00:00:00"', dt.datetime(2000, 1, 1), None),
        (Value("timestamp[ns]"), '"1600-01-01T00:00:00"', None, "out of bounds"),
        (Value("date32"), '"2024-02-30"', None, "expected an ISO date"),
        (Value("duration[us]"), "90.5", dt.timedelta(seconds=90.5), None),
        (Value("duration[s]"), "90", dt.timedelta(seconds=90), None),
        (Value("duration[us]"), '"90"', None, "expected a number of seconds"),
        (Value("duration[us]"), "true", None, "expected a number of seconds"),
        (Value("duration[ns]"), "1e12", None, "does not fit duration[ns]"),
        (Value("duration[us]"), "1e300", None, "seconds"),
        (Value("decimal128(5, 2)"), '"1.25"', decimal.Decimal("1.25"), None),
        (Value("decimal128(5, 2)"), "3", decimal.Decimal("3"), None),
        (Value("decimal128(5, 2)"), "1.5", decimal.Decimal("1.5"), None),
        (Value("decimal128(5, 2)"), '"1234.5678"', None, "does not fit decimal128(5, 2)"),
        (Value("decimal128(5, 2)"), '"123456"', None, "does not fit"),
        (Value("decimal128(5, 2)"), '"NaN"', None, "does not fit"),
        (Value("decimal128(5, 2)"), '"lots"', None, "expected a decimal number"),
        (Value("decimal128(5, 2)"), "false", None, "expected a decimal number"),
        # time columns: Arrow takes no text (ISO or not), so it is null with Arrow's reason
        (Value("time64[us]"), '"12:30:00"', dt.time(12, 30), None),
        (Value("time64[us]"), '"25:99:00"', None, "expected an ISO time"),
        (Value("time32[s]"), "3600", 3600, None),  # what Arrow takes: seconds
        (Value("time32[s]"), "[1]", None, "does not fit time32[s]"),
    ],
)
def test_casting_table(feature, value, expected, error):
    rows, _ = build({"c": feature}, f'{{"c": {value}}}')
    assert rows["c"] == [expected]
    assert rows["source_index"] == [7]
    if error is None:
        assert rows["error"] == [None]
    else:
        assert error in rows["error"][0] and rows["error"][0].startswith("type: c")


def test_parse_failure_keeps_raw():
    rows, counts = build({"c": Value("string")}, "not json at all")
    assert rows["c"] == [None] and rows["generated_raw"] == ["not json at all"]
    assert rows["error"][0].startswith("parse:") and counts["parse_errors"] == 1


def test_layout_order_and_features():
    layout = layout_for(
        {"a": Value("string"), "p": Value("int64"), "b": Value("string")}, columns=["b", "a"]
    )
    assert layout.column_names == [
        "b",
        "a",
        "p",
        "source_index",
        "original",
        "generated_raw",
        "error",
    ]
    assert layout.features["original"] == {"b": Value("string"), "a": Value("string")}


def test_layout_without_original():
    layout = layout_for({"a": Value("string")}, keep_original=False)
    assert "original" not in layout.column_names


@pytest.mark.parametrize(
    ("features", "kw", "needle"),
    [
        ({"a": Value("string")}, {"columns": ["a", "a"]}, "twice"),
        ({"a": Value("string")}, {"columns": []}, "empty"),
        (
            {"a": Value("string"), "p": Value("string")},
            {"columns": ["a"], "generated_features": {"p": Value("string")}},
            "passthrough",
        ),
        ({"original": Value("string")}, {}, "collide"),
        ({"a": Value("binary")}, {}, "bytes"),
        ({"a": {"inner": Value("large_binary")}}, {}, "bytes"),
    ],
)
def test_layout_refusals(features, kw, needle):
    with pytest.raises(ConfigurationError, match=needle):
        layout_for(features, **kw)


def test_original_of_a_duration_is_float_seconds():
    layout = layout_for({"d": Value("duration[us]"), "t": Value("time64[us]")})
    assert layout.original_features == {"d": Value("float64"), "t": Value("string")}


def arrow_rows(features, generated, raw="{}", error=None, example=None):
    """``to_arrow`` over one row whose generated values are given as is (no caster ran)."""
    layout = layout_for(features)
    builder = RowBuilder(layout, 1)
    ex = example if example is not None else {c: None for c in layout.columns}
    table = pa.Table.from_pylist(
        [{c: None for c in layout.input_features}], schema=layout.input_features.arrow_schema
    )
    rows = Collected([0], {c: [v] for c, v in generated.items()}, [raw], [error])
    out = builder.to_arrow(rows, table, [7], [ex])
    assert out.schema == layout.features.arrow_schema
    return out.to_pylist()[0], rows


def test_to_arrow_nulls_a_value_arrow_refuses_and_says_why():
    row, rows = arrow_rows(
        {"a": Value("int8"), "b": Value("string")},
        {"a": 300, "b": "ok"},
        error="missing: something",
    )
    assert row["a"] is None and row["b"] == "ok" and row["source_index"] == 7
    assert row["error"].startswith("missing: something; type: a: ")
    assert rows.errors == ["missing: something"]  # the collected rows are left as they were


def test_to_arrow_keeps_the_good_values_of_a_column():
    layout = layout_for({"a": Value("string")})
    table = pa.Table.from_pylist([{"a": None}] * 3, schema=layout.input_features.arrow_schema)
    rows = Collected([0, 1, 2], {"a": ["x", "\udcff", None]}, ["1", "2", "3"], [None] * 3)
    ex = [{"a": None}] * 3
    out = RowBuilder(layout, 1).to_arrow(rows, table, [0, 1, 2], ex).to_pylist()
    assert [r["a"] for r in out] == ["x", None, None]
    assert [r["error"] for r in out][0::2] == [None, None]
    assert out[1]["error"].startswith("type: a: ") and "surrogates" in out[1]["error"]


def test_to_arrow_json_value_that_cannot_be_encoded():
    row, _ = arrow_rows({"j": Value("null")}, {"j": {"k": "\ud800"}})
    assert row["j"] is None and row["error"].startswith("type: j: ")


def test_to_arrow_original_that_does_not_fit():
    # `original` is rebuilt from the examples when a column was converted (here a duration)
    row, _ = arrow_rows(
        {"d": Value("duration[s]")}, {"d": dt.timedelta(seconds=1)}, example={"d": "soon"}
    )
    assert row["original"] is None and row["d"] == dt.timedelta(seconds=1)
    assert row["error"].startswith("type: original: ")


def test_to_arrow_raw_and_error_text_with_a_lone_surrogate_are_kept_escaped():
    row, _ = arrow_rows(
        {"a": Value("string")}, {"a": "x"}, raw="bad \ud83d emoji", error="parse: \ud83d"
    )
    assert row["generated_raw"] == "bad \\ud83d emoji"
    assert row["error"] == "parse: \\ud83d"


def test_time_column_reads_iso_text():
    """Times travel as ISO text (that is how a seed's time is sent), so they come back as text."""
    rows, _ = build({"t": Value("time64[us]")}, '{"t": "12:30:05"}')
    assert rows["t"] == [dt.time(12, 30, 5)] and rows["error"] == [None]


# -- generated text read by Arrow: the same rows as the casters, or the casters decide -------------

_CONVERSATION = List({"role": Value("string"), "content": Value("string")})


def _clean(feature):
    """A value that fits ``feature`` as is (for the features of the table below)."""
    if isinstance(feature, List):
        if isinstance(feature.feature, Value):
            return [_clean(feature.feature)]
        return [{"role": "u", "content": "c"}]
    return "ok" if feature.dtype == "string" else 1


def _pending(builder, texts, errors=None):
    n = len(texts)
    errors = errors or [None] * n
    return Collected(list(range(n)), {}, list(texts), list(errors), pending=True)


def _table(builder, rows):
    layout = builder.layout
    n = len(rows.positions)
    schema = layout.features.arrow_schema
    table = pa.table({c: pa.nulls(n, schema.field(c).type) for c in layout.input_features})
    return builder.to_arrow(rows, table, list(range(n)), [{} for _ in range(n)])


def _both_ways(features, texts, errors=None):
    """(rows read with Arrow's help; the rows Arrow read itself; rows read by the casters
    alone; both counts), tables as ``to_arrow`` makes them."""
    builder = RowBuilder(layout_for(features, keep_original=False), 1)
    reader = _ArrowReader.for_layout(builder.layout, builder.schema)
    read = reader.read(texts) if reader is not None else None
    fast, fast_counts = builder.resolve(_pending(builder, texts, errors), arrow=True)
    slow, slow_counts = builder.resolve(_pending(builder, texts, errors), arrow=False)
    assert (read is None) == all(isinstance(v, list) for v in fast.generated.values())
    return (
        _table(builder, fast),
        [] if read is None else read[0],
        _table(builder, slow),
        (fast_counts, slow_counts),
    )


def _same(a, b):
    """Equal tables; repr tells -0.0 from 0.0, which Table.equals does not."""
    return a.schema == b.schema and repr(a.to_pylist()) == repr(b.to_pylist())


def test_clean_texts_are_read_by_arrow_into_the_output_types():
    features = {"m": _CONVERSATION, "n": Value("int8"), "ok": Value("bool"), "s": Value("string")}
    texts = [
        json.dumps({"m": [{"role": "u", "content": f"é{i}"}], "n": i, "ok": i % 2 == 0, "s": "x"})
        for i in range(3)
    ] + ['{"m": [], "n": 3, "ok": true, "s": "y", "extra": {"ignored": [1]}}']
    fast, read, slow, _ = _both_ways(features, texts)
    assert read == [0, 1, 2, 3] and _same(fast, slow)
    assert fast.column("n").to_pylist() == [0, 1, 2, 3]
    assert fast.column("m").to_pylist()[1] == [{"role": "u", "content": "é1"}]
    assert fast.column("error").to_pylist() == [None] * 4


def test_rows_without_text_stay_null_next_to_arrow_read_rows():
    texts = ['{"s": "a"}', None, '{"s": "b"}', None]
    errors = [None, "shortfall: x", None, "request: y"]
    fast, read, slow, _ = _both_ways({"s": Value("string")}, texts, errors)
    assert read == [0, 2] and _same(fast, slow)
    assert fast.column("s").to_pylist() == ["a", None, "b", None]
    assert fast.column("error").to_pylist() == errors


@pytest.mark.parametrize(
    ("features", "text", "error"),
    [
        ({"s": Value("string")}, '{"t": "x"}', "missing: no 's'"),
        ({"m": _CONVERSATION}, '{"m": [{"role": "u"}]}', "content: missing"),
        ({"s": Value("string")}, '{"s": null}', None),  # a JSON null is a null value, kept
        ({"n": Value("int32")}, '{"n": 3.0}', None),  # the casters' conversion
        ({"n": Value("int8")}, '{"n": 300}', "does not fit"),
        ({"n": Value("int64")}, '{"n": true}', "expected an integer"),
        ({"s": Value("string")}, '{"s": 3}', "expected text"),
        ({"s": Value("string")}, '{"s": "\\ud800"}', "not UTF-8"),
        ({"s": Value("string")}, '```json\n{"s": "x"}\n```', None),  # fenced: parse_generated
        ({"s": Value("string")}, '{"generated_data": {"s": "x"}}', None),  # unwrapped
        ({"s": Value("string")}, '{"s": "a"}{"s": "b"}', None),  # the first object, one row
        # a text that makes two lines throws the rows out of line: the casters read them all
        ({"s": Value("string")}, '{"s": "a"}}\n{"i":1,"g":{"s": "b"}', None),
        ({"s": Value("string")}, "", "parse:"),
        ({"s": Value("string")}, '"{\\"s\\": \\"x\\"}"', None),  # double encoded
        ({"s": Value("string")}, '{"s": "a", "s": "b"}', None),  # the last one, like json
        # JSON that Arrow reads and Python does not, or reads to another value:
        ({"f": Value("float64")}, '{"f": Infinity}', None),
        ({"f": Value("float64")}, '{"f": Inf}', "expected a number"),
        ({"f": Value("float64")}, '{"f": -NaN}', "expected a number"),
        ({"s": Value("string")}, '{"s": "\\/", "x": Inf}', None),  # extra key, still refused
        ({"f": Value("float64")}, '{"f": 1' + "0" * 400 + "}", "too large for float64"),
        ({"f": Value("float64")}, '{"f": 1.8e308}', None),
        ({"f": List(Value("float64"))}, '{"f": [1, -0]}', None),  # 0.0 for the casters
        ({"s": Value("string")}, '{"s": "a", "x": ' + "[" * 1100 + "]" * 1100 + "}", "parse:"),
    ],
)
def test_what_arrow_would_read_differently_is_read_by_the_casters(features, text, error):
    clean = json.dumps({name: _clean(f) for name, f in features.items()})
    fast, read, slow, (fast_counts, slow_counts) = _both_ways(features, [clean, text, clean])
    # Arrow reads the clean rows and leaves the other to the casters.
    assert read == ([] if '"i":1' in text else [0, 2])
    assert _same(fast, slow) and fast_counts == slow_counts
    assert fast.column("generated_raw").to_pylist() == [clean, text, clean]
    assert fast.column("error").to_pylist()[::2] == [None, None]
    got = fast.column("error").to_pylist()[1]
    assert (got is None) if error is None else (error in got), got


@pytest.mark.parametrize(
    "feature",
    [
        Value("float32"),
        Value("timestamp[us]"),
        Value("date32"),
        Value("decimal128(5, 2)"),
        ClassLabel(names=["a", "b"]),
        Json(),
        List(Value("string"), length=2),
        {"x": Value("time64[us]")},
    ],
)
def test_columns_arrow_would_read_its_own_way_are_left_to_the_casters(feature):
    layout = layout_for({"c": feature, "s": Value("string")})
    builder = RowBuilder(layout, 1)
    assert _ArrowReader.for_layout(layout, builder.schema) is None and not builder.defers


_READABLE = [Value(d) for d in ("string", "large_string", "int8", "int64", "uint16", "float64")]
_readable_feature = st.one_of(
    st.sampled_from([*_READABLE, Value("bool")]),
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


def _fitting(feature):
    """JSON values that fit ``feature`` (the usual answer), at the edges of its range too."""
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
def _texts(draw):
    names = ["a", "b"][: draw(st.integers(1, 2))]
    features = {n: draw(_readable_feature) for n in names}
    texts = []
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
        # What json.dumps never writes: -0 as an integer, Inf, -NaN.
        odd = text.replace("-0.0", "-0").replace("Infinity", "Inf").replace("NaN", "-NaN")
        text = draw(st.sampled_from([text, text, odd]))
        texts.append(draw(st.sampled_from([text] * 6 + [None, text[:-1], "x" + text])))
    return features, texts


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=_texts())
def test_property_arrow_reading_gives_the_casters_rows(case):
    features, texts = case
    fast, read, slow, (fast_counts, slow_counts) = _both_ways(features, texts)
    present = sum(t is not None for t in texts)
    event(
        "all read by Arrow"
        if read and len(read) == present
        else ("some read by Arrow" if read else "all read by the casters")
    )
    assert fast_counts == slow_counts
    assert _same(fast, slow), (fast.to_pylist(), slow.to_pylist())


def test_a_reader_refused_again_and_again_tries_less_often_and_recovers():
    layout = layout_for({"s": Value("string")}, keep_original=False)
    reader = _ArrowReader.for_layout(layout, RowBuilder(layout, 1).schema)
    clean, fenced = ['{"s": "a"}'], ['```json\n{"s": "a"}\n```']
    assert reader.read(clean)[1]["s"].to_pylist() == ["a"]
    for _ in range(4):
        assert reader.read(fenced) is None  # refused: the casters read these
    attempts = [reader.read(clean) is not None for _ in range(40)]
    assert attempts.index(True) == 31  # tried again on one batch in 32 only
    assert all(reader.read(clean) is not None for _ in range(5))  # then every time again


def test_rows_collected_unparsed_are_parsed_by_whichever_output_is_asked_for():
    layout = layout_for({"q": Value("string"), "n": Value("int64")}, columns=["q"])
    builder = RowBuilder(layout, 2)
    example = {"q": "seed"}
    answer = [
        {"original": example, "generated": '{"q": "a"}'},
        {"original": example, "generated": '```json\n{"q": "b"}\n```'},
    ]
    rows, _ = builder.collect([example], answer, defer=True)
    assert rows.pending and rows.generated == {}
    as_dict = builder.to_pydict(rows, {"q": ["seed"], "n": [5]}, [3], [example])
    assert as_dict["q"] == ["a", "b"] and as_dict["n"] == [5, 5] and as_dict["error"] == [None] * 2
    table = pa.table({"q": ["seed"], "n": [5]})
    as_arrow = builder.to_arrow(rows, table, [3], [example]).to_pydict()
    assert {k: as_arrow[k] for k in as_dict} == as_dict


def test_a_non_standard_token_after_a_multi_line_text_leaves_only_its_own_row():
    texts = [json.dumps({"s": f"r{i}", "f": i}, indent=1 if i == 0 else None) for i in range(40)]
    texts[10] = '{"s": "note: Information", "f": 1}'  # read as a NaN/Inf token: casters
    texts[30] = '{"s": "x", "f": NaN}'
    fast, read, slow, _ = _both_ways({"s": Value("string"), "f": Value("float64")}, texts)
    assert read == [i for i in range(40) if i not in (10, 30)] and _same(fast, slow)


def test_rows_arrow_fails_on_one_by_one_are_left_after_a_few_attempts():
    features = {"n": Value("int64")}
    few = ['{"n": 1}'] * 20
    few[3] = few[17] = '{"n": "x"}'  # Arrow names each row: two more attempts
    fast, read, slow, _ = _both_ways(features, few)
    assert read == [i for i in range(20) if i not in (3, 17)] and _same(fast, slow)
    many = ['{"n": 1}'] * 20
    for i in range(0, 20, 2):  # ten such rows: past the attempts, the casters read them all
        many[i] = '{"n": "x"}'
    fast, read, slow, _ = _both_ways(features, many)
    assert read == [] and _same(fast, slow)
    assert fast.column("n").to_pylist()[1::2] == [1] * 10


def test_rows_without_text_do_not_count_against_the_reader():
    layout = layout_for({"s": Value("string")}, keep_original=False)
    reader = _ArrowReader.for_layout(layout, RowBuilder(layout, 1).schema)
    for _ in range(10):  # failed requests only, then a mostly-shortfall batch read in full
        assert reader.read([None] * 8) is None
        assert reader.read(['{"s": "a"}'] + [None] * 7)[0] == [0]
    assert reader.refusals == 0
