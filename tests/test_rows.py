"""The rows of a map batch: linked, parsed, cast and emitted as one table of the output schema."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from datasets import ClassLabel, Dataset, Features, Json, List, Value
from datasets.formatting import PythonFormatter
from datasets.formatting.formatting import LazyBatch

from synth_datasets.layout import make_examples, plan_layout
from synth_datasets.rows import RowBuilder

_CONVERSATION = List({"role": Value("string"), "content": Value("string")})


def emit(layout, examples, items, *, multiplier=1, batch=None, indices=None):
    """``collect`` then ``to_arrow`` over one request; the table and the counts."""
    builder = RowBuilder(layout, multiplier)
    rows, counts = builder.collect(examples, items)
    if batch is None:
        batch = {c: [None] * len(examples) for c in layout.input_features}
    indices = list(range(len(examples))) if indices is None else indices
    table, more = builder.to_arrow([(0, rows)], batch, indices, examples)
    assert table.schema == layout.features.arrow_schema
    return table, {**counts, **more}


def one_row(features, text, example=None, **kw):
    layout = plan_layout(Features(features), **kw)
    ex = example if example is not None else {c: None for c in layout.columns}
    table, counts = emit(layout, [ex], [{"original": ex, "generated": text}], indices=[7])
    return table.to_pylist()[0], counts


def test_a_value_that_does_not_fit_is_null_with_its_reason():
    row, counts = one_row({"c": Value("int8"), "d": Value("string")}, '{"c": 300, "d": "ok"}')
    assert row["c"] is None and row["d"] == "ok" and row["source_index"] == 7
    assert row["error"].startswith("type: c: 300 does not fit int8")
    assert counts["cast_errors"] == 1


def test_parse_failure_keeps_raw():
    row, counts = one_row({"c": Value("string")}, "not json at all")
    assert row["c"] is None and row["generated_raw"] == "not json at all"
    assert row["error"].startswith("parse:") and counts["parse_errors"] == 1


def test_time_column_reads_iso_text():
    """Times travel as ISO text (that is how a seed's time is sent), so they come back as text."""
    row, _ = one_row({"t": Value("time64[us]")}, '{"t": "12:30:05"}')
    assert row["t"] == dt.time(12, 30, 5) and row["error"] is None


def test_original_that_does_not_fit_is_null_with_its_reason():
    # `original` is rebuilt from the examples when a column was converted (here a duration)
    row, _ = one_row({"d": Value("duration[s]")}, '{"d": 1}', example={"d": "soon"})
    assert row["original"] is None and row["d"] == dt.timedelta(seconds=1)
    assert row["error"].startswith("type: original: ")


def test_raw_and_error_text_with_a_lone_surrogate_are_kept_escaped():
    row, _ = one_row({"a": Value("string")}, "bad \ud83d emoji")
    assert row["generated_raw"] == "bad \\ud83d emoji"
    assert row["error"].startswith("parse:")


def test_clean_texts_become_typed_columns_and_extra_keys_are_ignored():
    features = {"m": _CONVERSATION, "n": Value("int8"), "ok": Value("bool"), "s": Value("string")}
    texts = [
        json.dumps({"m": [{"role": "u", "content": f"é{i}"}], "n": i, "ok": i % 2 == 0, "s": "x"})
        for i in range(3)
    ] + ['{"m": [], "n": 3, "ok": true, "s": "y", "extra": {"ignored": [1]}}']
    layout = plan_layout(Features(features), keep_original=False)
    ex = {c: None for c in layout.columns}
    table, _ = emit(layout, [ex], [{"original": ex, "generated": t} for t in texts], multiplier=4)
    assert table.column("n").to_pylist() == [0, 1, 2, 3]
    assert table.column("m").to_pylist()[1] == [{"role": "u", "content": "é1"}]
    assert table.column("error").to_pylist() == [None] * 4


def test_seeds_without_text_get_one_row_each_next_to_the_others():
    layout = plan_layout(Features({"s": Value("string"), "p": Value("int64")}), columns=["s"])
    builder = RowBuilder(layout, 1)
    examples = [{"s": "a"}, {"s": "b"}, {"s": "c"}]
    answered, counts = builder.collect(
        examples[:2], [{"original": {"s": "a"}, "generated": '{"s": "A"}'}]
    )
    failed = builder.collect_errors(1, "HTTP 500")
    batch = {"s": ["a", "b", "c"], "p": [10, 11, 12]}
    table, _ = builder.to_arrow([(0, answered), (2, failed)], batch, [5, 6, 7], examples)
    assert table.schema == layout.features.arrow_schema
    assert table.column("s").to_pylist() == ["A", None, None]
    assert table.column("p").to_pylist() == [10, 11, 12]
    assert table.column("source_index").to_pylist() == [5, 6, 7]
    errors = table.column("error").to_pylist()
    assert errors[0] is None and errors[1].startswith("shortfall:")
    assert errors[2] == "request: HTTP 500" and counts["empty_seeds"] == 1


def test_no_request_is_an_empty_table_of_the_output_schema():
    layout = plan_layout(Features({"s": Value("string")}))
    table, counts = RowBuilder(layout, 2).to_arrow([], {"s": []}, [], [])
    assert (
        counts == {"parse_errors": 0, "cast_errors": 0}
        and table.num_rows == 0
        and table.schema == layout.features.arrow_schema
    )


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
        ({"s": Value("string")}, '{"s": "a"}}\n{"i":1,"g":{"s": "b"}', None),
        ({"s": Value("string")}, "", "parse:"),
        ({"s": Value("string")}, '"{\\"s\\": \\"x\\"}"', None),  # double encoded
        ({"s": Value("string")}, '{"s": "a", "s": "b"}', None),  # the last one, like json
        # JSON extensions and edge values:
        ({"f": Value("float64")}, '{"f": Infinity}', None),
        ({"f": Value("float64")}, '{"f": Inf}', "expected a number"),
        ({"f": Value("float64")}, '{"f": -NaN}', "expected a number"),
        ({"s": Value("string")}, '{"s": "\\/", "x": Inf}', None),  # extra key, still refused
        ({"f": Value("float64")}, '{"f": 1' + "0" * 400 + "}", "too large for float64"),
        ({"f": Value("float64")}, '{"f": 1.8e308}', None),
        ({"f": List(Value("float64"))}, '{"f": [1, -0]}', None),  # 0.0 for the casters
        ({"s": Value("string")}, '{"s": "a", "x": ' + "[" * 1100 + "]" * 1100 + "}", "parse:"),
        ({"s": Value("string"), "f": Value("float64")}, '{"s": "note: Information", "f": 1}', None),
        ({"n": Value("int64")}, '{"n": "x"}', "expected an integer"),
        ({"c": Value("float32")}, '{"c": 0.5}', None),
        ({"c": ClassLabel(names=["a", "b"])}, '{"c": "b"}', None),
        ({"c": List(Value("string"), length=2)}, '{"c": ["a"]}', "expected 2 items"),
        ({"c": {"x": Value("time64[us]")}}, '{"c": {"x": "10:00:00"}}', None),
        ({"j": Json()}, '{"j": {"k": "\\ud800"}}', "type: j: "),
    ],
)
def test_each_text_gets_its_values_or_its_reason(features, text, error):
    row, counts = one_row(features, text, keep_original=False)
    assert row["generated_raw"] == text
    got = row["error"]
    assert (got is None) if error is None else (error in got), got
    assert counts["parse_errors"] == (got or "").startswith("parse:")


def test_an_arrow_batch_and_a_python_batch_give_the_same_table():
    """Dataset.map hands a batch backed by Arrow; IterableDataset.map and Ray hand Python values:
    the passthrough columns and ``original`` come out with the same types and values."""
    features = Features(
        {
            "q": Value("string"),
            "label": ClassLabel(names=["neg", "pos"]),
            "when": Value("timestamp[s]"),
            "tags": List(Value("string")),
            "meta": Json(),
        }
    )
    seeds = Dataset.from_list(
        [
            {
                "q": "a",
                "label": 1,
                "when": dt.datetime(2024, 1, 1),
                "tags": ["x"],
                "meta": {"k": 1},
            },
            {"q": "b", "label": 0, "when": None, "tags": [], "meta": [1, "two"]},
        ],
        features=features,
    )
    layout = plan_layout(features, columns=["q", "label"])
    builder = RowBuilder(layout, 2)
    arrow_batch = LazyBatch(seeds.data.table, PythonFormatter(features=features))
    python_batch = seeds[:]
    examples = make_examples(layout, python_batch, [0, 1])
    items = [
        {"original": examples[i], "generated": json.dumps({"q": f"{i}{k}", "label": "pos"})}
        for i in (1, 0)
        for k in range(2)
    ]
    rows, _ = builder.collect(examples, items)
    tables = [
        builder.to_arrow([(0, rows)], b, [3, 4], examples)[0] for b in (arrow_batch, python_batch)
    ]
    assert tables[0].schema == tables[1].schema == layout.features.arrow_schema
    assert tables[0].equals(tables[1])
    assert tables[0].column("q").to_pylist() == ["00", "01", "10", "11"]
    meta = seeds.data.table.column("meta").to_pylist()
    assert tables[0].column("meta").to_pylist() == [meta[i] for i in (0, 0, 1, 1)]


def test_a_large_batch_keeps_each_value_and_error_on_its_own_row():
    """Rows are read a slice at a time; across slice edges every value and error stays on its
    row, and the counts are the whole batch's."""
    features = {"n": Value("int8"), "m": _CONVERSATION}
    layout = plan_layout(Features(features), keep_original=False)
    builder = RowBuilder(layout, 1)
    n = 300
    examples = [{"n": i, "m": None} for i in range(n)]

    def text(i: int) -> str:
        if i % 97 == 0:
            return "not json"
        if i % 41 == 0:
            return json.dumps({"n": 1000 + i, "m": [{"role": "u", "content": str(i)}]})
        return json.dumps({"n": i % 100, "m": [{"role": "u", "content": str(i)}]})

    items = [{"original": e, "generated": text(i)} for i, e in enumerate(examples)]
    rows, _ = builder.collect(examples, items)
    table, counts = builder.to_arrow([(0, rows)], {"n": [None] * n, "m": [None] * n}, range(n), [])
    bad_parse = [i for i in range(n) if i % 97 == 0]
    bad_type = [i for i in range(n) if i % 41 == 0 and i % 97]
    assert counts == {"parse_errors": len(bad_parse), "cast_errors": len(bad_type)}
    errors = table.column("error").to_pylist()
    assert [i for i, e in enumerate(errors) if e and e.startswith("parse:")] == bad_parse
    assert [i for i, e in enumerate(errors) if e and e.startswith("type: n:")] == bad_type
    ok = [i for i in range(n) if i % 97 and i % 41]
    assert [table.column("n")[i].as_py() for i in ok] == [i % 100 for i in ok]
    assert table.column("m").to_pylist()[299] == [{"role": "u", "content": "299"}]
    assert table.column("m").to_pylist()[97] is None
