"""Helpers of the reference server's tests (tests/test_testing_*.py): bodies, a POST over real
HTTP, and validators from the project's copy of Collinear's OpenAPI document, which is read here
independently of the copy the package ships."""

from __future__ import annotations

import json
import pathlib
import time
from collections.abc import Callable
from typing import Any

import jsonschema
import requests

from synth_datasets.testing import GENERATE_PATH, ReferenceServer

OPENAPI_PATH = pathlib.Path(__file__).parent / "data" / "collinear-openapi.json"
OPENAPI = json.loads(OPENAPI_PATH.read_text("utf-8"))
OPERATION = OPENAPI["paths"][GENERATE_PATH]["post"]
MODEL_ID = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
CONVERSATION: dict[str, Any] = {
    "conv_prefix": [
        {"role": "user", "content": "What is the capital of France, and why is it famous?"},
        {"role": "assistant", "content": "Paris. It is known for art, food and history."},
        {"role": "user", "content": "Name one museum there."},
    ],
    "response": {"role": "assistant", "content": "The Louvre, home of the Mona Lisa."},
}
MIXED: dict[str, Any] = {
    "question": "How many legs does a spider have?",
    "answer": "Eight legs, all attached to the front body part.",
    "meta": {"difficulty": 2, "score": 0.75, "verified": True, "note": None, "tags": ["a b", 3]},
    "empty": "",
}
# A bound on hangs only: every request here is answered in milliseconds.
TIMEOUT = 30.0


def _validator(schema: dict[str, Any]) -> jsonschema.protocols.Validator:
    """A validator whose $refs resolve through the OpenAPI document's components."""
    root = {**schema, "components": OPENAPI["components"]}
    cls = jsonschema.validators.validator_for(root, default=jsonschema.Draft202012Validator)
    return cls(root, format_checker=cls.FORMAT_CHECKER)


REQUEST_VALIDATOR = _validator(OPERATION["requestBody"]["content"]["application/json"]["schema"])
RESPONSE_VALIDATOR = _validator(
    OPERATION["responses"]["200"]["content"]["application/json"]["schema"]
)
ERROR_VALIDATOR = _validator(OPERATION["responses"]["422"]["content"]["application/json"]["schema"])


def make_body(
    examples: list[Any] | None = None, multiplier: int = 3, prompt: str = "Write more like these."
) -> dict[str, Any]:
    return {
        "model_id": MODEL_ID,
        "multiplier": multiplier,
        "examples": [CONVERSATION, MIXED] if examples is None else examples,
        "prompt": prompt,
    }


def post(
    server: ReferenceServer,
    body: Any = None,
    *,
    token: str | None = None,
    data: bytes | None = None,
    timeout: float = TIMEOUT,
    **kwargs: Any,
) -> requests.Response:
    """POST a body (``make_body()`` by default, or raw ``data``) with the server's token."""
    headers = {
        "Authorization": f"Bearer {server.token if token is None else token}",
        "Content-Type": "application/json",
    }
    if data is None:
        data = json.dumps(make_body() if body is None else body).encode()
    return requests.post(
        server.url + GENERATE_PATH, data=data, headers=headers, timeout=timeout, **kwargs
    )


def generated(server: ReferenceServer, multiplier: int = 4) -> list[dict[str, Any]]:
    """The items of a 200 answer to ``make_body(multiplier=...)``, checked against the document."""
    response = post(server, make_body(multiplier=multiplier))
    assert response.status_code == 200
    items: list[dict[str, Any]] = response.json()
    RESPONSE_VALIDATOR.validate(items)
    return items


def same_shape(a: Any, b: Any) -> bool:
    """Same keys, nesting, list lengths and non-string leaves (value and type)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(same_shape(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(same_shape, a, b))
    if isinstance(a, str):
        return isinstance(b, str)
    return type(a) is type(b) and a == b


def wait_for(condition: Callable[[], bool], bound: float = TIMEOUT) -> None:
    """Poll until ``condition()`` holds; fail only after ``bound`` seconds (a hang guard)."""
    deadline = time.monotonic() + bound
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)
