"""The offline engine, through the reference server: what a 200 answer carries, and the per-item
faults (malformed, fenced, wrapped, shuffled, short, extra, altered originals)."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from refserver import (
    CONVERSATION,
    MIXED,
    RESPONSE_VALIDATOR,
    generated,
    make_body,
    post,
    same_shape,
)

from synth_datasets.testing import ReferenceServer


def test_generations_keep_each_example_shape(ref_server: ReferenceServer) -> None:
    items = generated(ref_server, multiplier=3)
    assert len(items) == 2 * 3
    # Example order, then generation order; originals exactly as sent.
    assert [item["original"] for item in items] == [CONVERSATION] * 3 + [MIXED] * 3
    for item in items:
        gen = json.loads(item["generated"])
        assert same_shape(item["original"], gen)
        assert gen != item["original"]


def test_conversation_keeps_structure_and_roles(ref_server: ReferenceServer) -> None:
    items = post(ref_server, make_body([CONVERSATION], multiplier=4)).json()
    for gen in (json.loads(item["generated"]) for item in items):
        assert same_shape(CONVERSATION, gen)
        assert [turn["role"] for turn in gen["conv_prefix"]] == ["user", "assistant", "user"]
        assert gen["response"]["role"] == "assistant"
        assert gen["response"]["content"] != CONVERSATION["response"]["content"]
        assert all(
            turn["content"] != seed["content"]
            for turn, seed in zip(gen["conv_prefix"], CONVERSATION["conv_prefix"], strict=True)
        )
    texts = [item["generated"] for item in items]
    assert len(set(texts)) == len(texts)  # generations of one example all differ


def test_non_string_leaves_keep_value_and_type(ref_server: ReferenceServer) -> None:
    for item in post(ref_server, make_body([MIXED], multiplier=2)).json():
        gen = json.loads(item["generated"])
        assert gen["meta"]["difficulty"] == 2 and type(gen["meta"]["difficulty"]) is int
        assert gen["meta"]["score"] == 0.75 and gen["meta"]["verified"] is True
        assert gen["meta"]["note"] is None and gen["meta"]["tags"][1] == 3
        assert gen["empty"] == ""
        assert gen["question"] != MIXED["question"]


def test_deterministic_answers(ref_server: ReferenceServer) -> None:
    body = make_body(multiplier=5)
    first, second = post(ref_server, body), post(ref_server, body)
    assert first.content == second.content
    with ReferenceServer() as other:  # another instance, same request: same answer
        assert post(other, body).content == first.content
    different = post(ref_server, make_body(multiplier=5, prompt="Something else entirely."))
    assert different.json() != first.json()
    # Key order of an example does not change what is generated, only the output key order.
    reordered = {k: MIXED[k] for k in reversed(list(MIXED))}
    a = [json.loads(i["generated"]) for i in post(ref_server, make_body([MIXED])).json()]
    b = [json.loads(i["generated"]) for i in post(ref_server, make_body([reordered])).json()]
    assert a == b


def test_large_request_is_answered_in_full(ref_server: ReferenceServer) -> None:
    """3000 generations: above the size the server builds in a worker thread."""
    items = post(ref_server, make_body([CONVERSATION, MIXED], multiplier=1500)).json()
    RESPONSE_VALIDATOR.validate(items)
    assert len(items) == 3000
    assert Counter(json.dumps(i["original"]) for i in items) == {
        json.dumps(CONVERSATION): 1500,
        json.dumps(MIXED): 1500,
    }
    assert ref_server.stats()["generations"] == 3000


def test_malformed_generations(ref_server: ReferenceServer) -> None:
    ref_server.set_faults(rate_malformed=1.0)
    items = generated(ref_server)
    assert len(items) == 8
    for item in items:
        with pytest.raises(ValueError):
            json.loads(item["generated"])
    assert post(ref_server, make_body(multiplier=4)).json() == items  # deterministic per item
    ref_server.set_faults(rate_malformed=0.5)
    broken = 0
    for item in generated(ref_server, multiplier=20):
        try:
            json.loads(item["generated"])
        except ValueError:
            broken += 1
    assert 0 < broken < 40


def test_fenced_generations(ref_server: ReferenceServer) -> None:
    ref_server.set_faults(rate_fenced=1.0)
    styles: Counter[str] = Counter()
    for item in generated(ref_server, multiplier=6):
        text = item["generated"]
        if text.startswith("```json\n"):
            assert text.endswith("\n```")
            inner = text[len("```json\n") : -len("\n```")]
            styles["fence"] += 1
        else:
            assert text.startswith("Here is the result:\n")
            inner = text[len("Here is the result:\n") :]
            styles["prose"] += 1
        assert same_shape(item["original"], json.loads(inner))
    assert styles["fence"] > 0 and styles["prose"] > 0


def test_wrapped_generations(ref_server: ReferenceServer) -> None:
    ref_server.set_faults(rate_wrapped=1.0)
    for item in generated(ref_server):
        wrapped = json.loads(item["generated"])
        assert list(wrapped) == ["generated_data"]
        assert same_shape(item["original"], wrapped["generated_data"])


def test_shuffle(ref_server: ReferenceServer) -> None:
    ordered = post(ref_server, make_body(multiplier=6)).json()
    ref_server.set_faults(shuffle=True)
    shuffled = post(ref_server, make_body(multiplier=6)).json()
    assert shuffled != ordered
    assert sorted(map(json.dumps, shuffled)) == sorted(map(json.dumps, ordered))
    assert post(ref_server, make_body(multiplier=6)).json() == shuffled


def test_shortfall_and_extra(ref_server: ReferenceServer) -> None:
    ref_server.set_faults(rate_shortfall=1.0)
    assert post(ref_server).json() == []
    ref_server.set_faults(rate_shortfall=0.5)
    some = post(ref_server, make_body(multiplier=10)).json()
    assert 0 < len(some) < 20
    ref_server.set_faults(rate_shortfall=0.0, rate_extra=1.0)
    items = post(ref_server, make_body(multiplier=3)).json()
    assert len(items) == 2 * 4
    assert [i["original"] for i in items] == [CONVERSATION] * 4 + [MIXED] * 4
    assert len({i["generated"] for i in items[:4]}) == 4
    assert ref_server.stats()["generations"] == 0 + len(some) + 8


def test_alter_original(ref_server: ReferenceServer) -> None:
    no_strings = {"n": 1, "xs": [1, 2]}
    examples = [CONVERSATION, MIXED, no_strings]
    ref_server.set_faults(rate_alter_original=1.0)
    items = post(ref_server, make_body(examples, multiplier=2)).json()
    assert len(items) == 6
    for item in items:
        assert item["original"] not in examples
    assert "(edited)" in json.dumps(items[0]["original"])
    assert items[-1]["original"] == {**no_strings, "_edited": True}
    # The generation itself still follows the real example.
    assert same_shape(CONVERSATION, json.loads(items[0]["generated"]))
