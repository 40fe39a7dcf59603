"""A fake OpenAI-compatible server on loopback (``GET /v1/models``, ``POST /v1/chat/completions``)
for the tests of ``synth_datasets.testing.OpenAIEngine``: no model, answers in milliseconds.

Its "model" answers with an instance of the request's ``response_format`` JSON schema when it
has one, else with the example found in the message, its strings marked. It keeps every call
(headers and body) and the most calls it had in flight at once, and misbehaves as told: a
``script`` of outcomes for the next calls (a status, ``"malformed"``, ``"slow"``, ``"echo_key"``:
a 400 that quotes the Authorization header back), ``refuse`` (``response_format`` types it
answers 400), a ``delay`` on every call, an ``api_key`` it requires.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterable
from typing import Any

from helpers import Served


def instance(schema: dict[str, Any], n: int) -> Any:
    """A value of ``schema`` (the subset ``example_schema`` writes), numbered ``n``."""
    if "anyOf" in schema:
        return instance(schema["anyOf"][0], n)
    kind = schema.get("type")
    if kind == "object":
        return {key: instance(sub, n) for key, sub in schema["properties"].items()}
    if kind == "array":
        return [instance(schema["items"], n)] * 2 if "items" in schema else []
    values = {"string": f"schema text {n}", "integer": n, "number": n + 0.5, "boolean": True}
    return values.get(str(kind))


def _example(text: str) -> dict[str, Any]:
    """The first JSON object in a message."""
    decoder = json.JSONDecoder()
    for start in (i for i, c in enumerate(text) if c == "{"):
        try:
            value, _ = decoder.raw_decode(text, start)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    raise AssertionError(f"no JSON object in the message: {text!r}")


def _marked(value: Any, n: int) -> Any:
    if isinstance(value, str):
        return f"{value} (fake {n})"
    if isinstance(value, dict):
        return {key: _marked(item, n) for key, item in value.items()}
    if isinstance(value, list):
        return [_marked(item, n) for item in value]
    return value


class FakeOpenAI(Served):
    """Use it as a context manager; ``url`` is its base URL (``http://127.0.0.1:PORT/v1``)."""

    def __init__(
        self,
        *,
        models: Iterable[str] | None = ("fake-model",),
        api_key: str | None = None,
        script: Iterable[int | str] = (),
        refuse: Iterable[str] = (),
        delay: float = 0.0,
        slow: float = 2.0,
        retry_after: str | None = None,
    ) -> None:
        self.models = None if models is None else list(models)
        self.api_key = api_key
        self.script = list(script)
        self.refuse = set(refuse)
        self.delay, self.slow, self.retry_after = delay, slow, retry_after
        self.calls: list[dict[str, Any]] = []  # {"headers": ..., "body": ..., "status": ...}
        self.in_flight = self.max_in_flight = 0
        self._lock = threading.Lock()
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real servers
            disable_nagle_algorithm = True  # headers and body go out at once, as real servers

            def do_GET(self) -> None:
                if self.path != "/v1/models" or fake.models is None:
                    return self._send(404, {"error": {"message": "Not Found"}})
                if not fake._authorized(self.headers.get("Authorization")):
                    return self._send(401, {"error": {"message": "Incorrect API key provided"}})
                self._send(200, {"object": "list", "data": [{"id": m} for m in fake.models]})

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": {"message": "Not Found"}})
                with fake._lock:
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                try:
                    status, body, headers = fake._answer(dict(self.headers.items()), raw)
                finally:
                    with fake._lock:
                        fake.in_flight -= 1
                self._send(status, body, headers)

            def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    for name, value in (headers or {}).items():
                        self.send_header(name, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the engine gave up first (its timeout)

            def log_message(self, *args: Any) -> None:
                pass

        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        httpd.daemon_threads = True
        super().__init__(httpd)
        self.url = f"http://127.0.0.1:{httpd.server_port}/v1"

    def _authorized(self, header: str | None) -> bool:
        return self.api_key is None or header == f"Bearer {self.api_key}"

    def formats(self) -> list[str]:
        """The ``response_format`` type of each call, in order (``"none"`` without one)."""
        return [(c["body"].get("response_format") or {}).get("type", "none") for c in self.calls]

    def _answer(self, headers: dict[str, str], raw: bytes) -> tuple[int, Any, dict[str, str]]:
        body = json.loads(raw)
        with self._lock:
            self.calls.append({"headers": headers, "body": body})
            n = len(self.calls)
            outcome = self.script.pop(0) if self.script else "ok"
        time.sleep(self.delay + (self.slow if outcome == "slow" else 0.0))
        if not self._authorized(headers.get("Authorization")):
            return 401, {"error": {"message": "Incorrect API key provided"}}, {}
        if body.get("model") not in (self.models or [body.get("model")]):
            return (
                404,
                {"error": {"message": f"The model `{body.get('model')}` does not exist"}},
                {},
            )
        if outcome == "echo_key":
            message = f"bad request from {headers.get('Authorization')}"
            return 400, {"object": "error", "message": message}, {}
        if isinstance(outcome, int):
            retry = {"Retry-After": self.retry_after} if self.retry_after else {}
            return outcome, {"error": {"message": f"scripted {outcome}"}}, retry
        response_format = body.get("response_format") or {}
        if response_format.get("type") in self.refuse:
            message = f"response_format {response_format['type']} is not supported"
            return 400, {"error": {"message": message, "type": "BadRequestError"}}, {}
        if response_format.get("type") == "json_schema":
            value = instance(response_format["json_schema"]["schema"], n)
        else:
            value = _marked(_example(body["messages"][-1]["content"]), n)
        text = json.dumps(value)
        if outcome == "malformed":
            text = "Sure! Here it is: " + text[: len(text) // 2]
        choice = {"index": 0, "message": {"role": "assistant", "content": text}}
        return 200, {"object": "chat.completion", "model": body["model"], "choices": [choice]}, {}
