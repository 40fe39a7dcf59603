"""Casting generated values to their features, and Arrow columns that keep the good values."""

from __future__ import annotations

import datetime as dt
import decimal
from typing import Any

import pyarrow as pa
import pytest
from datasets import ClassLabel, Json, List, Value
from hypothesis import given
from hypothesis import strategies as st

from synth_datasets.casting import CastError, arrow_column, compile_caster
from synth_datasets.generated import parse_generated


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
    generated = parse_generated(f'{{"c": {value}}}').value
    assert generated is not None
    cast = compile_caster(feature)
    if error is None:
        assert cast(generated["c"], "c") == expected
    else:
        with pytest.raises(CastError, match=r"^c") as raised:
            cast(generated["c"], "c")
        assert error in str(raised.value)


def test_a_list_or_struct_error_names_the_path():
    cast = compile_caster(List({"n": Value("int8")}))
    with pytest.raises(CastError, match=r"^m\[1\]\.n: 300 does not fit int8"):
        cast([{"n": 1}, {"n": 300}], "m")


def test_json_values_are_stored_as_datasets_encodes_them():
    cast = compile_caster(Json())
    assert cast({"k": [1]}, "j") == Json().encode_example({"k": [1]}) == '{"k":[1]}'
    assert cast(None, "j") is None
    with pytest.raises(CastError, match=r"^j: "):
        cast({"k": "\ud800"}, "j")


def test_arrow_column_nulls_a_value_arrow_refuses_and_says_why():
    errors: list[str | None] = ["missing: something", None]
    column = arrow_column([300, 5], pa.int8(), "a", errors)
    assert column.to_pylist() == [None, 5]
    assert errors[0] is not None and errors[0].startswith("missing: something; type: a: ")
    assert errors[1] is None


def test_arrow_column_keeps_the_good_values_of_a_column():
    errors: list[str | None] = [None] * 3
    column = arrow_column(["x", "\udcff", None], pa.string(), "a", errors)
    assert column.to_pylist() == ["x", None, None]
    assert errors[0::2] == [None, None]
    assert errors[1] is not None and errors[1].startswith("type: a: ") and "surrogates" in errors[1]


_TURN = {"role": Value("string"), "content": Value("string")}


@pytest.mark.parametrize(
    ("feature", "value", "expected", "error"),
    [
        ({"s": Value("string")}, {"s": "x"}, {"s": "x"}, None),
        ({"s": Value("string")}, {"s": ["x", "y"]}, None, "c.s: expected text, got list"),
        ({"s": Value("string")}, {"s": "x", "t": 1}, {"s": "x"}, None),
        (_TURN, {"role": "u", "content": None}, {"role": "u", "content": None}, None),
        (_TURN, {"role": "u", "content": "\udcff"}, None, "c.content: text that is not UTF-8"),
        (_TURN, ["u", "c"], None, "c: expected an object, got list"),
        (List(_TURN), [{"role": "u", "content": "é"}], [{"role": "u", "content": "é"}], None),
        (
            List(_TURN),
            [{"role": "u", "content": "c", "x": 1}],
            [{"role": "u", "content": "c"}],
            None,
        ),
        (
            List(_TURN),
            [{"role": "u", "content": "c"}, None],
            [{"role": "u", "content": "c"}, None],
            None,
        ),
        (List(_TURN), [{"role": "u"}], None, "c[0].content: missing"),
        (List(_TURN), ["u"], None, "c[0]: expected an object, got str"),
        (List(_TURN), {"role": "u", "content": "c"}, None, "c: expected a list, got dict"),
        (List({"s": Value("string")}), [{"s": ["x"]}], None, "c[0].s: expected text, got list"),
        (List(Value("string")), ["a", None], ["a", None], None),
        (List(Value("string")), ["a", 1], None, "c[1]: expected text, got int"),
        (List(Value("string")), "ab", None, "c: expected a list, got str"),
        (List(Value("string"), length=2), ["a"], None, "c: expected 2 items, got 1"),
        (List(List(Value("string"))), [["a"], ["b", "\ud800"]], None, "c[1][1]: text that is not"),
    ],
)
def test_text_values_are_kept_as_they_are_or_named_where_they_fail(feature, value, expected, error):
    """Lists and objects of text are checked as a whole first; whatever that check does not
    pass (nulls, extra keys, wrong types) gets the same result and message as item by item."""
    cast = compile_caster(feature)
    if error is None:
        assert cast(value, "c") == expected
    else:
        with pytest.raises(CastError) as raised:
            cast(value, "c")
        assert str(raised.value).startswith(error), str(raised.value)


_texty = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=3) | st.just("\ud800"),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["role", "content", "x"]), inner, max_size=3)
    ),
    max_leaves=8,
)


def _outcome(cast: Any, value: Any) -> tuple[str, Any]:
    try:
        return "kept", cast(value, "c")
    except CastError as exc:
        return "refused", str(exc)


@given(value=_texty)
def test_property_text_values_are_cast_as_their_parts_would_be(value: Any) -> None:
    """A list of text objects, an object of text and a list of text, each checked whole first,
    keep or refuse any value exactly as casting it part by part does."""
    text = compile_caster(Value("string"))

    def turn(v: Any, where: str) -> Any:
        if v is None:
            return None
        if not isinstance(v, dict):
            raise CastError(f"{where}: expected an object, got {type(v).__name__}")
        out = {}
        for k in _TURN:
            if k not in v:
                raise CastError(f"{where}.{k}: missing")
            out[k] = text(v[k], f"{where}.{k}")
        return out

    def listed(item: Any) -> Any:
        def cast(v: Any, where: str) -> Any:
            if v is None:
                return None
            if not isinstance(v, list):
                raise CastError(f"{where}: expected a list, got {type(v).__name__}")
            return [item(x, f"{where}[{i}]") for i, x in enumerate(v)]

        return cast

    for feature, by_parts in (
        (_TURN, turn),
        (List(_TURN), listed(turn)),
        (List(Value("string")), listed(text)),
    ):
        assert _outcome(compile_caster(feature), value) == _outcome(by_parts, value)
