"""Linking and casting, without a server: pure functions over small tables."""

from __future__ import annotations

import random

import pytest
from datasets import ClassLabel, Features, List, Value

from synth_datasets import ConfigurationError
from synth_datasets.rows import RowBuilder, canonical_json, link_items, plan_layout

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
