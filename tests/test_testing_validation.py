"""Request validation: derived from Collinear's OpenAPI document (shipped with the package) as a
FastAPI/pydantic v2 service built from it would check it, answered as FastAPI-style 422s that
match the document's error schema."""

from __future__ import annotations

import importlib.resources
import json
from typing import Any

import jsonschema
import pytest
from refserver import (
    ERROR_VALIDATOR,
    MODEL_ID,
    OPENAPI_PATH,
    REQUEST_VALIDATOR,
    make_body,
    post,
)

from synth_datasets.testing import MAX_GENERATIONS_PER_REQUEST, ReferenceServer
from synth_datasets.testing.validation import OPENAPI_FILE

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


@pytest.mark.parametrize(
    ("changes", "same_as", "items"),
    [
        pytest.param({"multiplier": 0}, {}, 0, id="multiplier-0"),
        pytest.param({"multiplier": -1}, {}, 0, id="multiplier-negative"),
        pytest.param({"examples": []}, {}, 0, id="no-examples"),
        pytest.param({"prompt": ""}, {}, 2 * 3, id="empty-prompt"),
        pytest.param({"multiplier": 2.0}, {"multiplier": 2}, 2 * 2, id="multiplier-2.0"),
        pytest.param({"multiplier": "3"}, {"multiplier": 3}, 2 * 3, id="multiplier-text"),
        pytest.param({"multiplier": " +3.00 "}, {"multiplier": 3}, 2 * 3, id="multiplier-spaced"),
        pytest.param({"multiplier": "1_0"}, {"multiplier": 10}, 2 * 10, id="multiplier-underscore"),
        pytest.param({"multiplier": True}, {"multiplier": 1}, 2 * 1, id="multiplier-true"),
        pytest.param({"multiplier": False}, {}, 0, id="multiplier-false"),
        pytest.param({"model_id": MODEL_ID.upper()}, {}, 2 * 3, id="uuid-upper"),
        pytest.param({"model_id": MODEL_ID.replace("-", "")}, {}, 2 * 3, id="uuid-32-digits"),
        pytest.param({"model_id": "{" + MODEL_ID + "}"}, {}, 2 * 3, id="uuid-braced"),
        pytest.param({"model_id": "urn:uuid:" + MODEL_ID}, {}, 2 * 3, id="uuid-urn"),
        pytest.param({"unknown_field": 1}, {}, 2 * 3, id="extra-field"),
    ],
)
def test_what_pydantic_would_accept_is_answered(
    ref_server: ReferenceServer, changes: dict[str, Any], same_as: dict[str, Any], items: int
) -> None:
    """The document sets no bounds and the service is FastAPI: pydantic v2's lax mode (checked
    with pydantic 2.14, FastAPI 0.165) answers each of these 200, so the server does too, with
    the answer of the value pydantic converts it to."""
    response = post(ref_server, data=_body_with(**changes))
    assert response.status_code == 200, response.text
    assert len(response.json()) == items
    if same_as:
        assert post(ref_server, data=_body_with(**same_as)).json() == response.json()
    if "model_id" in changes:
        assert post(ref_server, data=_body_with()).json() == response.json()


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
        (_body_with(multiplier=None), [(("body", "multiplier"), "int_type")]),
        (_body_with(multiplier=[3]), [(("body", "multiplier"), "int_type")]),
        (_body_with(multiplier="x"), [(("body", "multiplier"), "int_parsing")]),
        (_body_with(multiplier="3.5"), [(("body", "multiplier"), "int_parsing")]),
        (_body_with(multiplier="0x10"), [(("body", "multiplier"), "int_parsing")]),
        (_body_with(multiplier=2.5), [(("body", "multiplier"), "int_from_float")]),
        (_body_with(multiplier=1e20), [(("body", "multiplier"), "int_parsing_size")]),
        (_body_with(model_id=MODEL_ID[:-1] + "g"), [(("body", "model_id"), "uuid_parsing")]),
        (_body_with(model_id=" " + MODEL_ID), [(("body", "model_id"), "uuid_parsing")]),
        (_body_with(examples={"a": "b"}), [(("body", "examples"), "list_type")]),
        (
            _body_with(examples=[{"a": "b"}, "x", [1]]),
            [(("body", "examples", 1), "dict_type"), (("body", "examples", 2), "dict_type")],
        ),
        (_body_with(prompt=7), [(("body", "prompt"), "string_type")]),
        (_body_with(prompt=None), [(("body", "prompt"), "string_type")]),
        (
            _body_with(prompt=_DROP, multiplier=1.5, model_id="x"),
            [
                (("body", "prompt"), "missing"),
                (("body", "model_id"), "uuid_parsing"),
                (("body", "multiplier"), "int_from_float"),
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
