"""Request checks: the generate operation's schema in the shipped OpenAPI document, checked with
``jsonschema``, plus the server's own rules; failures answered as FastAPI's 422 ``detail`` list,
each entry typed as pydantic v2 types it."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from importlib import resources
from typing import Any

import jsonschema
from jsonschema.protocols import Validator

__all__ = [
    "GENERATE_PATH",
    "MAX_GENERATIONS_PER_REQUEST",
    "OPENAPI_FILE",
    "SERVER_RULES",
    "body_validator",
    "openapi_document",
    "validate_body",
]

GENERATE_PATH = "/api/v1/synth_data/generate"
OPENAPI_FILE = "collinear-openapi.json"
# The server's own rules, which the document does not state (it gives no bounds): the server
# checks them on top of the document's schema and answers them as 422s like the document's own.
SERVER_RULES = {
    "properties": {
        "multiplier": {"minimum": 1},
        "examples": {"minItems": 1},
        "prompt": {"minLength": 1},
    }
}
MAX_GENERATIONS_PER_REQUEST = 100_000  # examples × multiplier; beyond it, 422

# pydantic v2's error type and message (what FastAPI answers) per failed JSON Schema rule: the
# keyword, or for "type" what was expected ("model": an object with properties, "format": a
# string with a format). {limit} is the keyword's value, {format} the schema's format.
_ERRORS = {
    "required": ("missing", "Field required"),
    "minimum": ("greater_than_equal", "Input should be greater than or equal to {limit}"),
    "minItems": ("too_short", "List should have at least {limit} item(s) after validation"),
    "minLength": ("string_too_short", "String should have at least {limit} character(s)"),
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


def body_validator(extra_rules: Mapping[str, Any] | None = None) -> Validator:
    """A validator of the operation's request schema; ``extra_rules`` must hold as well. Its
    ``$ref``s point into ``components``, so the root carries those (OpenAPI 3.1 is 2020-12)."""
    schema = dict(_request_body()["content"]["application/json"]["schema"])
    if extra_rules:
        schema = {"allOf": [schema, dict(extra_rules)]}
    root = {**schema, "components": openapi_document()["components"]}
    cls = jsonschema.Draft202012Validator
    return cls(root, format_checker=cls.FORMAT_CHECKER)


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
    # jsonschema reports each missing field apart, and _detail lists all of them: keep one each.
    detail = {
        (tuple(entry["loc"]), entry["type"]): entry
        for error in validator.iter_errors(body)
        for entry in _detail(error)
    }
    if detail:
        return None, list(detail.values())
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
