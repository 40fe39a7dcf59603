"""The output layout and the examples sent: which columns, which features, what is refused."""

from __future__ import annotations

import datetime as dt

import pytest
from datasets import Features, Value

from synth_datasets import ConfigurationError
from synth_datasets.layout import make_examples, plan_layout


def layout_for(features, **kw):
    return plan_layout(Features(features), **kw)


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


def test_examples_are_json_safe_and_only_the_chosen_columns():
    layout = layout_for(
        {"d": Value("duration[us]"), "t": Value("timestamp[s]"), "p": Value("string")},
        columns=["d", "t"],
    )
    batch = {"d": [dt.timedelta(seconds=1.5)], "t": [dt.datetime(2024, 1, 2)], "p": ["x"]}
    assert make_examples(layout, batch, [0]) == [{"d": 1.5, "t": "2024-01-02T00:00:00"}]


def test_an_example_that_cannot_be_sent_names_its_row_and_column():
    layout = layout_for({"j": {"v": Value("float64")}})
    with pytest.raises(ConfigurationError, match="row 4, column 'j'"):
        make_examples(layout, {"j": [{"v": object()}]}, [4])
