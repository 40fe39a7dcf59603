"""Request checks: the generate operation's schema in the shipped OpenAPI document, checked with
``jsonschema`` after the conversions pydantic v2's lax mode (FastAPI's default) makes where the
document's types leave room; failures answered as FastAPI's 422 ``detail`` list, each entry
typed as pydantic v2 types it. The document sets no bounds (a multiplier of 0, no examples and
an empty prompt are valid), so neither does the server; its one rule of its own is a cap on the
generations of one request (``MAX_GENERATIONS_PER_REQUEST``), which keeps its memory bounded."""

from __future__ import annotations

import functools
import json
import re
import uuid
from collections.abc import Mapping
from importlib import resources
from typing import Any

import jsonschema
from jsonschema.protocols import Validator

__all__ = [
    "GENERATE_PATH",
    "MAX_GENERATIONS_PER_REQUEST",
    "OPENAPI_FILE",
    "body_validator",
    "openapi_document",
    "validate_body",
]

GENERATE_PATH = "/api/v1/synth_data/generate"
OPENAPI_FILE = "collinear-openapi.json"
MAX_GENERATIONS_PER_REQUEST = 100_000  # examples × multiplier; beyond it, 422

# What pydantic v2's lax mode takes for an int besides an int: a bool, a float with no fraction
# within int64, or text of an integer (signs, underscores, ".0" and outer spaces allowed); and
# for a UUID the hyphenated, braced, URN and 32-digit spellings (checked with pydantic 2.14).
_INT_TEXT = re.compile(r"\s*[+-]?[0-9]+(?:_[0-9]+)*(?:\.0+)?\s*", re.ASCII)
_UUID = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_UUID_TEXT = re.compile(rf"{_UUID}|\{{{_UUID}\}}|urn:uuid:{_UUID}|[0-9a-fA-F]{{32}}")
_INT64 = 2**63

# pydantic v2's error type and message (what FastAPI answers) per failed JSON Schema rule: the
# keyword, or for "type" what was expected ("model": an object with properties, "format": a
# string with a format). {limit} is the keyword's value, {format} the schema's format.
_ERRORS = {
    "required": ("missing", "Field required"),
    "format": ("{format}_parsing", "Input should be a valid {FORMAT}"),
    "type format": ("{format}_type", "{FORMAT} input should be a string"),
    "type model": ("model_attributes_type", "Input should be a valid dictionary or object"),
    "type": ("{name}_type", "Input should be a valid {word}"),
}
# JSON Schema's types as pydantic names them: in the error type, and in the message.
_TYPE_NAMES = {
    "integer": ("int", "integer"), "number": ("float", "number"), "string": ("string", "string"),
    "boolean": ("bool", "boolean"), "array": ("list", "list"), "object": ("dict", "dictionary"),
}  # fmt: skip

Detail = list[dict[str, Any]]


@functools.cache
def openapi_document() -> Any:
    """The shipped OpenAPI document (read once; do not modify it)."""
    return json.loads(resources.files(__package__).joinpath(OPENAPI_FILE).read_text("utf-8"))


def _request_body() -> Any:
    return openapi_document()["paths"][GENERATE_PATH]["post"]["requestBody"]


def _request_schema() -> Mapping[str, Any]:
    schema: Mapping[str, Any] = _request_body()["content"]["application/json"]["schema"]
    return schema


def body_validator() -> Validator:
    """A validator of the operation's request schema. Its ``$ref``s point into ``components``,
    so the root carries those (OpenAPI 3.1 is 2020-12)."""
    root = {**_request_schema(), "components": openapi_document()["components"]}
    cls = jsonschema.Draft202012Validator
    return cls(root, format_checker=cls.FORMAT_CHECKER)


def _properties() -> Mapping[str, Any]:
    """The request object's fields (its ``$ref`` followed into ``components``)."""
    schema = _request_schema()
    ref = str(schema.get("$ref", ""))
    if ref.startswith("#/components/schemas/"):
        schema = openapi_document()["components"]["schemas"][ref.rsplit("/", 1)[1]]
    properties: Mapping[str, Any] = schema.get("properties", {})
    return properties


def _lax(value: Any, schema: Mapping[str, Any]) -> tuple[Any, tuple[str, str] | None]:
    """``value`` as pydantic v2's lax mode converts it for ``schema`` (integer, uuid), or the
    error type and message it answers; anything else is left to the schema check."""
    if schema.get("type") == "integer":
        if isinstance(value, float):
            if not value.is_integer():
                fraction = "Input should be a valid integer, got a number with a fractional part"
                return value, ("int_from_float", fraction)
            if abs(value) >= _INT64:
                size = "Unable to parse input string as an integer, exceeded maximum size"
                return value, ("int_parsing_size", size)
            return int(value), None
        if isinstance(value, str):
            if not _INT_TEXT.fullmatch(value):
                text = "Input should be a valid integer, unable to parse string as an integer"
                return value, ("int_parsing", text)
            return int(value.strip().split(".")[0]), None
        return (int(value), None) if isinstance(value, bool) else (value, None)
    if schema.get("format") == "uuid" and isinstance(value, str) and _UUID_TEXT.fullmatch(value):
        return str(uuid.UUID(value)), None
    return value, None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def validate_body(raw: bytes, validator: Validator) -> tuple[dict[str, Any] | None, Detail]:
    """Parse and check the body: ``(body, [])`` or ``(None, every problem found)``; a body the
    schema accepts must also stay within ``MAX_GENERATIONS_PER_REQUEST``."""
    if not raw.strip():
        if _request_body().get("required"):
            return None, [{"loc": ["body"], "msg": "Field required", "type": "missing"}]
        raw = b"{}"
    try:
        body = json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        pos = exc.pos if isinstance(exc, json.JSONDecodeError) else 0
        return None, [{"loc": ["body", pos], "msg": "JSON decode error", "type": "json_invalid"}]
    refused: dict[str, dict[str, Any]] = {}
    if isinstance(body, dict):
        for name, schema in _properties().items():
            if name in body:
                body[name], error = _lax(body[name], schema)
                if error is not None:
                    refused[name] = {"loc": ["body", name], "msg": error[1], "type": error[0]}
    # jsonschema reports each missing field apart, and _detail lists all of them: keep one each.
    detail = {
        (tuple(entry["loc"]), entry["type"]): entry
        for error in validator.iter_errors(body)
        for entry in _detail(error)
        if not (error.absolute_path and error.absolute_path[0] in refused)  # answered above
    }
    if detail or refused:
        return None, [*refused.values(), *detail.values()]
    total = len(body["examples"]) * body["multiplier"]
    if total <= MAX_GENERATIONS_PER_REQUEST:
        return body, []
    msg = (
        f"Value error, {len(body['examples'])} examples × multiplier {body['multiplier']} = "
        f"{total} generations exceeds the limit of {MAX_GENERATIONS_PER_REQUEST} per request"
    )
    return None, [{"loc": ["body"], "msg": msg, "type": "value_error"}]


def _detail(error: jsonschema.ValidationError) -> Detail:
    """The FastAPI ``detail`` entries of one jsonschema error (one per missing field)."""
    loc: list[str | int] = ["body", *error.absolute_path]
    # Typed Any: jsonschema types these for any keyword; here each is the failed keyword's.
    schema: Any = error.schema
    limit: Any = error.validator_value
    instance: Any = error.instance
    rule = str(error.validator)
    if rule == "required":
        missing = [name for name in limit if name not in instance]
        return [
            {"loc": [*loc, name], "msg": "Field required", "type": "missing"} for name in missing
        ]
    expected = ""
    if rule == "type":
        expected = limit if isinstance(limit, str) else limit[0]
        if "format" in schema or "properties" in schema:
            rule = "type format" if "format" in schema else "type model"
    if rule not in _ERRORS:
        return [{"loc": loc, "msg": error.message, "type": rule}]
    fmt = str(schema.get("format", ""))
    name, word = _TYPE_NAMES.get(expected, (expected, expected))
    values = {"limit": limit, "format": fmt, "FORMAT": fmt.upper(), "name": name, "word": word}
    kind, msg = _ERRORS[rule]
    return [{"loc": loc, "msg": msg.format(**values), "type": kind.format(**values)}]
