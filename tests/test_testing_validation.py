"""Request validation: derived from Collinear's OpenAPI document (shipped with the package), plus
the server's own rules, answered as FastAPI-style 422s that match the document's error schema."""

from __future__ import annotations

import importlib.resources
import json
from typing import Any

import jsonschema
import pytest
from refserver import ERROR_VALIDATOR, OPENAPI_PATH, REQUEST_VALIDATOR, make_body, post

from synth_datasets.testing import MAX_GENERATIONS_PER_REQUEST, ReferenceServer
from synth_datasets.testing.validation import OPENAPI_FILE, body_validator, validate_body

_DROP = object()


def _body_with(**changes: Any) -> bytes:
    body = make_body()
    for key, value in changes.items():
        if value is _DROP:
            del body[key]
        else:
            body[key] = value
    return json.dumps(body).encode()


def test_the_shipped_document_is_the_projects_copy() -> None:
    shipped = importlib.resources.files("synth_datasets.testing").joinpath(OPENAPI_FILE)
    assert shipped.read_bytes() == OPENAPI_PATH.read_bytes()


def test_the_document_alone_sets_no_bounds_the_server_rules_do() -> None:
    """Types, formats and required fields come from the document; the lower bounds on
    multiplier, examples and prompt are the server's own (SERVER_RULES)."""
    document_only = body_validator()
    for bounded in (_body_with(multiplier=0), _body_with(examples=[]), _body_with(prompt="")):
        assert validate_body(bounded, document_only)[1] == []
    body, detail = validate_body(_body_with(model_id="not-a-uuid"), document_only)
    assert body is None
    assert detail == [
        {"loc": ["body", "model_id"], "msg": "Input should be a valid UUID", "type": "uuid_parsing"}
    ]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"{not json", [(("body", 1), "json_invalid")]),
        (b"", [(("body",), "missing")]),
        (b"[1, 2]", [(("body",), "model_attributes_type")]),
        (
            b"{}",
            [
                (("body", "model_id"), "missing"),
                (("body", "multiplier"), "missing"),
                (("body", "examples"), "missing"),
                (("body", "prompt"), "missing"),
            ],
        ),
        (_body_with(model_id="not-a-uuid"), [(("body", "model_id"), "uuid_parsing")]),
        (_body_with(model_id=42), [(("body", "model_id"), "uuid_type")]),
        (_body_with(multiplier="3"), [(("body", "multiplier"), "int_type")]),
        (_body_with(multiplier=2.5), [(("body", "multiplier"), "int_type")]),
        (_body_with(multiplier=True), [(("body", "multiplier"), "int_type")]),
        (_body_with(multiplier=0), [(("body", "multiplier"), "greater_than_equal")]),
        (_body_with(examples={"a": "b"}), [(("body", "examples"), "list_type")]),
        (_body_with(examples=[]), [(("body", "examples"), "too_short")]),
        (
            _body_with(examples=[{"a": "b"}, "x", [1]]),
            [(("body", "examples", 1), "dict_type"), (("body", "examples", 2), "dict_type")],
        ),
        (_body_with(prompt=7), [(("body", "prompt"), "string_type")]),
        (_body_with(prompt=""), [(("body", "prompt"), "string_too_short")]),
        (
            _body_with(prompt=_DROP, multiplier=-1, model_id="x"),
            [
                (("body", "prompt"), "missing"),
                (("body", "model_id"), "uuid_parsing"),
                (("body", "multiplier"), "greater_than_equal"),
            ],
        ),
        (
            _body_with(examples=[{"a": "b"}] * 2, multiplier=MAX_GENERATIONS_PER_REQUEST // 2 + 1),
            [(("body",), "value_error")],
        ),
    ],
)
def test_validation_errors(
    ref_server: ReferenceServer, data: bytes, expected: list[tuple[tuple[Any, ...], str]]
) -> None:
    response = post(ref_server, data=data)
    assert response.status_code == 422
    assert "x-request-id" in response.headers
    payload = response.json()
    ERROR_VALIDATOR.validate(payload)
    found = sorted((tuple(entry["loc"]), entry["type"]) for entry in payload["detail"])
    assert found == sorted(expected)
    assert all(entry["msg"] for entry in payload["detail"])
    assert ref_server.stats()["by_status"] == {"422": 1}


def test_what_the_document_accepts_is_answered(ref_server: ReferenceServer) -> None:
    REQUEST_VALIDATOR.validate(make_body())
    with pytest.raises(jsonschema.ValidationError):
        REQUEST_VALIDATOR.validate({**make_body(), "model_id": "not-a-uuid"})
    assert post(ref_server).status_code == 200
    # JSON Schema's "integer" admits 3.0, as pydantic does: it is taken as 3.
    as_float = post(ref_server, {**make_body(), "multiplier": 3.0})
    assert as_float.status_code == 200 and len(as_float.json()) == 2 * 3
