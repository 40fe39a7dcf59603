"""Tests for synth_datasets.generated: reading a `generated` text as one JSON object.

The table pins realistic model outputs; the properties check what the rest of the library leans
on (round-trips are exact, a failure is a value, never an exception).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from helpers import JSONISH_TEXT, json_objects
from hypothesis import given, settings
from hypothesis import strategies as st

from synth_datasets.generated import Parsed, parse_generated

CONV = {
    "conv_prefix": [{"role": "user", "content": "What is the capital of France?"}],
    "response": {"role": "assistant", "content": "Paris."},
}
CONV_TEXT = json.dumps(CONV, indent=2)
_FAST = settings(max_examples=200, deadline=None)


# --------------------------------------------------------------------------------------------
# parse_generated: table

GENERATED_OK: list[Any] = [
    pytest.param('{"a": 1, "b": "x"}', {"a": 1, "b": "x"}, "json", id="plain-object"),
    pytest.param(CONV_TEXT, CONV, "json", id="pretty-printed"),
    pytest.param(
        '{"text": "héllo wörld, 東京 🚀"}', {"text": "héllo wörld, 東京 🚀"}, "json", id="unicode"
    ),
    pytest.param(
        '{"text": "\\u00e9\\ud83d\\ude80"}', {"text": "é🚀"}, "json", id="unicode-escapes"
    ),
    pytest.param(f"```json\n{CONV_TEXT}\n```", CONV, "fenced", id="json-fence"),
    pytest.param(f"```\n{CONV_TEXT}\n```", CONV, "fenced", id="bare-fence"),
    pytest.param(
        f"Sure! Here is the conversation:\n\n```json\n{CONV_TEXT}\n```\n\nLet me know!",
        CONV,
        "fenced",
        id="fence-with-text-around",
    ),
    pytest.param('```json {"a": 1}```', {"a": 1}, "fenced", id="one-line-fence"),
    pytest.param(
        "```python\nprint('hi')\n```\nand the data:\n```json\n{\"a\": 1}\n```",
        {"a": 1},
        "fenced",
        id="second-fence-wins",
    ),
    pytest.param(
        'Sure:\n```json\n{"a": "use ```code``` here"}\n```',
        {"a": "use ```code``` here"},
        "fenced",
        id="backticks-inside-fenced-string",
    ),
    pytest.param(
        f"Here is the result: {json.dumps(CONV)} Hope this helps",
        CONV,
        "embedded",
        id="embedded-in-prose",
    ),
    pytest.param(
        'Output {"a": "a } brace", "b": "\\"quoted { too\\""} done.',
        {"a": "a } brace", "b": '"quoted { too"'},
        "embedded",
        id="braces-inside-strings",
    ),
    pytest.param(
        'Use {name} as placeholder. Result: {"a": 1}',
        {"a": 1},
        "embedded",
        id="prose-braces-before-object",
    ),
    pytest.param('It\'s done: {"a": "x"}', {"a": "x"}, "embedded", id="apostrophe-in-prose"),
    pytest.param('{"a": 1, "b": [1, 2,],}', {"a": 1, "b": [1, 2]}, "repaired", id="trailing-comma"),
    pytest.param("{'a': 'x', 'b': 2}", {"a": "x", "b": 2}, "repaired", id="single-quotes"),
    pytest.param('{a: 1, b: "x"}', {"a": 1, "b": "x"}, "repaired", id="unquoted-keys"),
    pytest.param(
        '{"response": {"role": "assistant", "content": "Paris."}',
        {"response": {"role": "assistant", "content": "Paris."}},
        "repaired",
        id="truncated-after-a-whole-object",
    ),
    pytest.param(
        '{"a": 1, "b": [1, 2]',
        {"a": 1, "b": [1, 2]},
        "repaired",
        id="truncated-after-a-whole-array",
    ),
    pytest.param(
        '{"ok": True, "missing": None, "no": False}',
        {"ok": True, "missing": None, "no": False},
        "repaired",
        id="python-literals",
    ),
    pytest.param(
        'Here you go: {"a": [1, 2,]} thanks', {"a": [1, 2]}, "repaired", id="repaired-in-prose"
    ),
    pytest.param(json.dumps({"generated_data": CONV}), CONV, "json", id="generated-data-wrapper"),
    pytest.param(
        json.dumps({"generated_data": json.dumps(CONV)}),
        CONV,
        "json",
        id="generated-data-wrapper-string",
    ),
    pytest.param(
        f"```json\n{json.dumps({'generated_data': CONV})}\n```",
        CONV,
        "fenced",
        id="generated-data-wrapper-fenced",
    ),
    pytest.param(
        json.dumps({"generated_data": CONV, "other": 1}),
        {"generated_data": CONV, "other": 1},
        "json",
        id="generated-data-with-siblings-kept",
    ),
    pytest.param(json.dumps(json.dumps(CONV)), CONV, "json", id="double-encoded"),
    pytest.param(
        json.dumps(
            {
                "conv_prefix": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello!"},
                    {"role": "user", "content": "Capital of Peru?"},
                ],
                "response": {"role": "assistant", "content": "Lima."},
                "context": {"source": "wiki", "scores": [0.5, 1, None]},
            }
        ),
        None,
        "json",
        id="nested-conversation",
    ),
    pytest.param("{}", {}, "json", id="empty-object-strict"),
]


@pytest.mark.parametrize(("text", "expected", "method"), GENERATED_OK)
def test_parse_generated_ok(text: str, expected: dict[str, Any] | None, method: str) -> None:
    parsed = parse_generated(text)
    assert isinstance(parsed, Parsed)
    assert parsed.error is None
    assert parsed.method == method
    assert parsed.value == (json.loads(text) if expected is None else expected)


GENERATED_FAIL: list[Any] = [
    pytest.param("[1, 2, 3]", "expected a JSON object, got list", id="list"),
    pytest.param('[{"a": 1}]', "expected a JSON object, got list", id="list-of-objects"),
    pytest.param("42", "expected a JSON object, got int", id="number"),
    pytest.param("3.5", "expected a JSON object, got float", id="float"),
    pytest.param('"just a string"', "expected a JSON object, got str", id="json-string"),
    pytest.param("null", "expected a JSON object, got None", id="null"),
    pytest.param("```json\n[1, 2]\n```", "expected a JSON object, got list", id="fenced-list"),
    pytest.param("", "empty string", id="empty-string"),
    pytest.param("   \n\t ", "empty string", id="whitespace"),
    pytest.param(
        "I'm sorry, I can't generate that conversation.", "no JSON object found", id="prose"
    ),
    pytest.param("I think {this is} fine", "not repairable", id="prose-with-braces"),
    pytest.param("{", "not repairable", id="lone-brace"),
    # Truncated output: a repair would close the cut value into a shorter, wrong one.
    pytest.param(
        '{"response": {"role": "assistant", "content": "Par',
        "truncated JSON object",
        id="truncated-missing-braces",
    ),
    pytest.param(
        '{"q": "x", "a": "a long answer cut mid-wo', "truncated", id="truncated-in-string"
    ),
    pytest.param('{"q": "x", "n": 12', "truncated", id="truncated-in-number"),
    pytest.param('{"q": "x", "ok": tr', "truncated", id="truncated-in-literal"),
    pytest.param('{"q": "x", "a"', "truncated", id="truncated-after-a-key"),
    pytest.param('{"q": "x", "a": ', "truncated", id="truncated-after-a-colon"),
    pytest.param('{"q": "x", "a": "y"', "truncated", id="truncated-before-the-brace"),
    pytest.param('{"q": "x", "a": "y",', "truncated", id="truncated-after-a-comma"),
    pytest.param('```json\n{"q": "x", "a": "cut', "truncated", id="truncated-in-an-unclosed-fence"),
    pytest.param(
        "Here is the result:\n{'q': 'x', 'a': 'cut", "truncated", id="truncated-single-quoted"
    ),
    pytest.param("Nothing here {:}", "not repairable", id="repair-yields-empty-dict"),
    pytest.param("Fill in {name: }", "not repairable", id="repair-yields-only-empty-values"),
    pytest.param("[" * 50_000, "nested too deeply", id="deep-list"),
    pytest.param('{"a":' * 50_000, "not repairable", id="deep-object-unclosed"),
    pytest.param('{"a":' * 5_000 + "1" + "}" * 5_000, "nested too deeply", id="deep-object"),
    pytest.param(None, "expected a string, got None", id="none"),
    pytest.param(b'{"a": 1}', "expected a string, got bytes", id="bytes"),
    pytest.param(12, "expected a string, got int", id="int-input"),
]


@pytest.mark.parametrize(("text", "reason"), GENERATED_FAIL)
def test_parse_generated_failure(text: Any, reason: str) -> None:
    parsed = parse_generated(text)
    assert parsed.value is None
    assert parsed.method == ""
    assert parsed.error is not None
    assert reason in parsed.error
    assert "\n" not in parsed.error
    assert len(parsed.error) < 200  # reason + an excerpt of at most 80 characters


def test_parse_generated_truncated_reason_quotes_the_end() -> None:
    parsed = parse_generated('{"q": "' + "word " * 40 + '", "a": "the cut is here')
    assert parsed.error is not None and parsed.error.startswith("truncated")
    assert parsed.error.endswith("the cut is here'")


def test_parse_generated_excerpt_is_short_and_marked() -> None:
    parsed = parse_generated("no json " * 100)
    assert parsed.error is not None
    excerpt = parsed.error.split(": ", 1)[1]
    assert len(excerpt) <= 80
    assert excerpt.endswith("…")


def test_parse_generated_str_subclass() -> None:
    class Text(str):
        pass

    assert parse_generated(Text('{"a": 1}')) == Parsed({"a": 1}, None, "json")


# Properties


@_FAST
@given(obj=json_objects, ascii_only=st.booleans())
def test_property_strict_roundtrip(obj: dict[str, Any], ascii_only: bool) -> None:
    assert parse_generated(json.dumps(obj, ensure_ascii=ascii_only)) == Parsed(obj, None, "json")


@_FAST
@given(obj=json_objects, ascii_only=st.booleans(), style=st.sampled_from(["json", "bare", "text"]))
def test_property_fenced_roundtrip(obj: dict[str, Any], ascii_only: bool, style: str) -> None:
    body = json.dumps(obj, ensure_ascii=ascii_only, indent=2)
    text = {
        "json": f"```json\n{body}\n```",
        "bare": f"```\n{body}\n```",
        "text": f"Here it is:\n```json\n{body}\n```\nAnything else?",
    }[style]
    parsed = parse_generated(text)
    assert parsed.value == obj
    assert parsed.method == "fenced"


@_FAST
@given(obj=json_objects, ascii_only=st.booleans())
def test_property_embedded_roundtrip(obj: dict[str, Any], ascii_only: bool) -> None:
    text = f"Here is the result: {json.dumps(obj, ensure_ascii=ascii_only)} Hope this helps"
    parsed = parse_generated(text)
    assert parsed.value == obj
    assert parsed.method == "embedded"


@_FAST
@given(text=st.one_of(st.text(), JSONISH_TEXT))
def test_property_parse_generated_never_raises(text: str) -> None:
    parsed = parse_generated(text)
    assert isinstance(parsed, Parsed)
    if parsed.value is None:
        assert parsed.method == ""
        assert parsed.error is not None
        assert "\n" not in parsed.error
    else:
        assert isinstance(parsed.value, dict)
        assert parsed.error is None
        assert parsed.method in {"json", "fenced", "embedded", "repaired"}
