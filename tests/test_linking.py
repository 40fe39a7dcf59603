"""Linking items to the examples they came from: pure functions, no server."""

from __future__ import annotations

import random

import pytest
from datasets import ClassLabel, Features, Json, List, Value

from synth_datasets.layout import plan_layout
from synth_datasets.linking import bools_may_differ, canonical_json, link_items
from synth_datasets.rows import RowBuilder

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
    layout = plan_layout(Features({"q": Value("string"), **features}))
    check = bools_may_differ(layout.original_features)
    example, echoed = {"q": "x", **example}, {"q": "x", **echoed}
    assert link_items([example], items([echoed]), 1, check_bools=check) == [0 if linked else None]
    _, counts = RowBuilder(layout, 1).collect([example], items([echoed]))
    assert (counts["unlinked"] == 0) is linked


def test_text_only_features_need_no_bool_check():
    conversation = List({"role": Value("string"), "content": Value("string")})
    assert not bools_may_differ({"m": conversation, "t": Value("large_string")})
    assert bools_may_differ({"m": conversation, "n": Value("int32")})
    assert bools_may_differ({"j": Json()}) and bools_may_differ(ClassLabel(names=["a"]))


def test_canonical_json_sorts_keys():
    assert canonical_json({"b": 1, "a": [1.0]}) == '{"a":[1],"b":1}'
