"""The reference server, driven over real HTTP with `requests`.

It is the stand-in for Collinear's endpoint in every other test, so its contract is checked
against the published OpenAPI document, and each fault is checked to do exactly what it says.
"""

from __future__ import annotations

import concurrent.futures
import json
import pathlib
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
import requests

from synth_datasets.testing import (
    GENERATE_PATH,
    PARSER_DESCRIPTION,
    Faults,
    ReferenceServer,
    main,
)

OPENAPI = json.loads(
    (pathlib.Path(__file__).parent / "data" / "collinear-openapi.json").read_text("utf-8")
)
OPERATION = OPENAPI["paths"][GENERATE_PATH]["post"]
MODEL_ID = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
CONVERSATION = {
    "conv_prefix": [
        {"role": "user", "content": "What is the capital of France, and why is it famous?"},
        {"role": "assistant", "content": "Paris. It is known for art, food and history."},
        {"role": "user", "content": "Name one museum there."},
    ],
    "response": {"role": "assistant", "content": "The Louvre, home of the Mona Lisa."},
}
MIXED = {
    "question": "How many legs does a spider have?",
    "answer": "Eight legs, all attached to the front body part.",
    "meta": {"difficulty": 2, "score": 0.75, "verified": True, "note": None, "tags": ["a b", 3]},
    "empty": "",
}
TIMEOUT = 10


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
    **kwargs: Any,
) -> requests.Response:
    headers = {"Authorization": f"Bearer {server.token if token is None else token}"}
    if data is None:
        data = json.dumps(make_body() if body is None else body).encode()
    headers["Content-Type"] = "application/json"
    return requests.post(
        server.url + GENERATE_PATH, data=data, headers=headers, timeout=TIMEOUT, **kwargs
    )


def same_shape(a: Any, b: Any) -> bool:
    """Same keys, nesting, list lengths and non-string leaves (value and type)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(same_shape(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(same_shape, a, b))
    if isinstance(a, str):
        return isinstance(b, str)
    return type(a) is type(b) and a == b


@pytest.fixture
def server() -> Iterator[ReferenceServer]:
    with ReferenceServer() as srv:
        yield srv


# ---- basics ------------------------------------------------------------------------------


def test_url_health_repr_and_request_id(server: ReferenceServer) -> None:
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", server.url)
    assert server.token.startswith("sk-local-")
    assert server.token not in repr(server) and server.url in repr(server)
    health = requests.get(server.url + "/health", timeout=TIMEOUT)
    assert health.json() == {"ok": True}
    assert health.headers["x-request-id"].startswith("req_")
    missing = requests.get(server.url + "/nope", timeout=TIMEOUT)
    assert missing.status_code == 404 and missing.json() == {"detail": "Not Found"}
    assert "x-request-id" in missing.headers
    assert ReferenceServer(token="t").token == "t"
    with pytest.raises(RuntimeError):
        _ = ReferenceServer().url


def test_auth_missing_and_wrong(server: ReferenceServer) -> None:
    url = server.url + GENERATE_PATH
    missing = requests.post(url, json=make_body(), timeout=TIMEOUT)
    assert missing.status_code == 401
    assert missing.json() == {"detail": "Not authenticated"}
    assert missing.headers["x-request-id"].startswith("req_")
    basic = requests.post(url, json=make_body(), headers={"Authorization": "Basic x"}, timeout=5)
    assert basic.json() == {"detail": "Not authenticated"}
    wrong = post(server, token="sk-wrong")
    assert wrong.status_code == 401 and wrong.json() == {"detail": "Invalid token"}
    # Auth is checked before the body.
    assert post(server, token="sk-wrong", data=b"not json").status_code == 401
    assert server.stats()["by_status"] == {"401": 4}


def test_ok_answer_and_request_match_the_openapi_contract(server: ReferenceServer) -> None:
    body = make_body()
    REQUEST_VALIDATOR.validate(body)
    response = post(server, body)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert int(response.headers["Content-Length"]) == len(response.content)
    assert re.fullmatch(r"req_[0-9a-f]{32}", response.headers["x-request-id"])
    items = response.json()
    RESPONSE_VALIDATOR.validate(items)
    assert len(items) == 2 * 3
    # Example order, then generation order; originals exactly as sent.
    assert [item["original"] for item in items] == [CONVERSATION] * 3 + [MIXED] * 3
    for item in items:
        generated = json.loads(item["generated"])
        assert same_shape(item["original"], generated)
        assert generated != item["original"]


def test_conversation_keeps_structure_and_roles(server: ReferenceServer) -> None:
    items = post(server, make_body([CONVERSATION], multiplier=4)).json()
    generated = [json.loads(item["generated"]) for item in items]
    for gen in generated:
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


def test_non_string_leaves_keep_value_and_type(server: ReferenceServer) -> None:
    items = post(server, make_body([MIXED], multiplier=2)).json()
    for item in items:
        gen = json.loads(item["generated"])
        assert gen["meta"]["difficulty"] == 2 and type(gen["meta"]["difficulty"]) is int
        assert gen["meta"]["score"] == 0.75 and gen["meta"]["verified"] is True
        assert gen["meta"]["note"] is None and gen["meta"]["tags"][1] == 3
        assert gen["empty"] == ""
        assert gen["question"] != MIXED["question"]


def test_deterministic_answers(server: ReferenceServer) -> None:
    body = make_body(multiplier=5)
    first, second = post(server, body), post(server, body)
    assert first.content == second.content
    with ReferenceServer() as other:  # another instance, same request: same answer
        assert post(other, body).content == first.content
    different = post(server, make_body(multiplier=5, prompt="Something else entirely."))
    assert different.json() != first.json()
    # Key order of an example does not change what is generated, only the output key order.
    reordered = {k: MIXED[k] for k in reversed(list(MIXED))}
    a = [json.loads(i["generated"]) for i in post(server, make_body([MIXED])).json()]
    b = [json.loads(i["generated"]) for i in post(server, make_body([reordered])).json()]
    assert a == b


def test_large_request_is_fast(server: ReferenceServer) -> None:
    started = time.perf_counter()
    items = post(server, make_body([CONVERSATION, MIXED], multiplier=1500)).json()
    assert len(items) == 3000
    assert time.perf_counter() - started < 5


# ---- validation ----------------------------------------------------------------------------


def _body_with(**changes: Any) -> bytes:
    body = make_body()
    for key, value in changes.items():
        if value is _DROP:
            del body[key]
        else:
            body[key] = value
    return json.dumps(body).encode()


_DROP = object()


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
            _body_with(examples=[{"a": "b"}] * 2, multiplier=50_001),
            [(("body",), "value_error")],
        ),
    ],
)
def test_validation_errors(
    server: ReferenceServer, data: bytes, expected: list[tuple[tuple[Any, ...], str]]
) -> None:
    response = post(server, data=data)
    assert response.status_code == 422
    assert "x-request-id" in response.headers
    payload = response.json()
    ERROR_VALIDATOR.validate(payload)
    found = sorted((tuple(entry["loc"]), entry["type"]) for entry in payload["detail"])
    assert found == sorted(expected)
    assert all(entry["msg"] for entry in payload["detail"])


def test_the_request_schema_accepts_what_the_server_accepts() -> None:
    REQUEST_VALIDATOR.validate(make_body())
    with pytest.raises(jsonschema.ValidationError):
        REQUEST_VALIDATOR.validate({**make_body(), "model_id": "not-a-uuid"})


# ---- faults ------------------------------------------------------------------------------


def test_script_statuses_with_retry_after() -> None:
    faults = Faults(script=[429, 503, 500, 502, 401, "ok", 429], retry_after=2.5)
    with ReferenceServer(faults=faults) as srv:
        responses = [post(srv) for _ in range(8)]
        statuses = [r.status_code for r in responses]
        assert statuses == [429, 503, 500, 502, 401, 200, 429, 200]
        for r in responses:
            assert "x-request-id" in r.headers
            if r.status_code in (429, 503):
                assert r.headers["Retry-After"] == "2.5"
            else:
                assert "Retry-After" not in r.headers
            if r.status_code != 200:
                assert isinstance(r.json()["detail"], str)
        assert faults.script == [429, 503, 500, 502, 401, "ok", 429]  # caller's list untouched
        srv.set_faults(script=[429], retry_after=1.0)
        assert post(srv).headers["Retry-After"] == "1"
        assert srv.stats()["by_status"] == {
            "429": 3,
            "503": 1,
            "500": 1,
            "502": 1,
            "401": 1,
            "200": 2,
        }


def test_drop_breaks_the_connection_mid_body() -> None:
    with ReferenceServer(faults=Faults(script=["drop", "drop"])) as srv:
        with pytest.raises((requests.ConnectionError, requests.exceptions.ChunkedEncodingError)):
            post(srv)
        srv.set_faults(framing="ndjson")
        with pytest.raises((requests.ConnectionError, requests.exceptions.ChunkedEncodingError)):
            post(srv)
        assert post(srv).status_code == 200  # the server itself is fine
        stats = srv.stats()
        assert stats["requests"] == 3
        assert stats["by_status"] == {"drop": 2, "200": 1}
        assert stats["generations"] == 6


def test_truncate_ends_the_body_early_but_cleanly() -> None:
    with ReferenceServer(faults=Faults(script=["truncate"])) as srv:
        response = post(srv)
        assert response.status_code == 200
        assert response.text.startswith("[")
        with pytest.raises(ValueError):
            json.loads(response.text)
        full = post(srv)
        assert full.text.startswith(response.text) and len(full.text) > len(response.text)
        assert srv.stats()["by_status"] == {"truncate": 1, "200": 1}


def test_random_status_faults_are_seeded() -> None:
    def run(seed: int) -> list[int]:
        with ReferenceServer(faults=Faults(rate_500=0.3, rate_429=0.2, seed=seed)) as srv:
            return [post(srv).status_code for _ in range(30)]

    first = run(7)
    assert first == run(7)
    counts = Counter(first)
    assert counts[200] > 0 and counts[500] > 0 and counts[429] > 0
    assert set(counts) == {200, 429, 500}


def test_chunked_framing() -> None:
    with ReferenceServer() as srv:
        expected = post(srv).json()
        srv.set_faults(framing="chunked")
        with post(srv, stream=True) as response:
            assert response.headers["Transfer-Encoding"] == "chunked"
            assert "Content-Length" not in response.headers
            chunks = list(response.raw.read_chunked())
        assert len(chunks) > 1
        assert json.loads(b"".join(chunks)) == expected


def test_sse_framing() -> None:
    with ReferenceServer() as srv:
        expected = post(srv).json()
        srv.set_faults(framing="sse")
        response = post(srv)
        assert response.headers["Content-Type"].startswith("text/event-stream")
        events = [e for e in response.text.split("\n\n") if e]
        assert all(e.startswith("data: ") for e in events)
        assert events[-1] == "data: [DONE]"
        assert [json.loads(e[len("data: ") :]) for e in events[:-1]] == expected


def test_ndjson_framing() -> None:
    with ReferenceServer() as srv:
        expected = post(srv).json()
        srv.set_faults(framing="ndjson")
        response = post(srv)
        assert response.headers["Content-Type"].startswith("application/x-ndjson")
        lines = response.text.splitlines()
        assert [json.loads(line) for line in lines] == expected


def _generated(server: ReferenceServer, multiplier: int = 4) -> list[dict[str, Any]]:
    response = post(server, make_body(multiplier=multiplier))
    assert response.status_code == 200
    items: list[dict[str, Any]] = response.json()
    RESPONSE_VALIDATOR.validate(items)
    return items


def test_malformed_generations() -> None:
    with ReferenceServer(faults=Faults(rate_malformed=1.0)) as srv:
        items = _generated(srv)
        assert len(items) == 8
        for item in items:
            with pytest.raises(ValueError):
                json.loads(item["generated"])
        assert post(srv, make_body(multiplier=4)).json() == items  # deterministic per item
        srv.set_faults(rate_malformed=0.5)
        broken = 0
        for item in _generated(srv, multiplier=20):
            try:
                json.loads(item["generated"])
            except ValueError:
                broken += 1
        assert 0 < broken < 40


def test_fenced_generations() -> None:
    with ReferenceServer(faults=Faults(rate_fenced=1.0)) as srv:
        styles = Counter()
        for item in _generated(srv, multiplier=6):
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


def test_wrapped_generations() -> None:
    with ReferenceServer(faults=Faults(rate_wrapped=1.0)) as srv:
        for item in _generated(srv):
            wrapped = json.loads(item["generated"])
            assert list(wrapped) == ["generated_data"]
            assert same_shape(item["original"], wrapped["generated_data"])


def test_shuffle() -> None:
    with ReferenceServer() as srv:
        ordered = post(srv, make_body(multiplier=6)).json()
        srv.set_faults(shuffle=True)
        shuffled = post(srv, make_body(multiplier=6)).json()
        assert shuffled != ordered
        key = json.dumps
        assert sorted(map(key, shuffled)) == sorted(map(key, ordered))
        assert post(srv, make_body(multiplier=6)).json() == shuffled


def test_shortfall_and_extra() -> None:
    with ReferenceServer(faults=Faults(rate_shortfall=1.0)) as srv:
        assert post(srv).json() == []
        srv.set_faults(rate_shortfall=0.5)
        some = post(srv, make_body(multiplier=10)).json()
        assert 0 < len(some) < 20
        srv.set_faults(rate_shortfall=0.0, rate_extra=1.0)
        items = post(srv, make_body(multiplier=3)).json()
        assert len(items) == 2 * 4
        assert [i["original"] for i in items] == [CONVERSATION] * 4 + [MIXED] * 4
        texts = [i["generated"] for i in items[:4]]
        assert len(set(texts)) == 4
        assert srv.stats()["generations"] == 0 + len(some) + 8


def test_alter_original() -> None:
    no_strings = {"n": 1, "xs": [1, 2]}
    examples = [CONVERSATION, MIXED, no_strings]
    with ReferenceServer(faults=Faults(rate_alter_original=1.0)) as srv:
        items = post(srv, make_body(examples, multiplier=2)).json()
        assert len(items) == 6
        for item in items:
            assert item["original"] not in examples
        assert "(edited)" in json.dumps(items[0]["original"])
        assert items[-1]["original"] == {**no_strings, "_edited": True}
        # The generation itself still follows the real example.
        assert same_shape(CONVERSATION, json.loads(items[0]["generated"]))


def test_max_concurrency_answers_429() -> None:
    faults = Faults(max_concurrency=2, latency=0.5, retry_after=3)
    with ReferenceServer(faults=faults) as srv:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(lambda _: post(srv), range(8)))
        statuses = Counter(r.status_code for r in responses)
        assert statuses[429] >= 1 and statuses[200] >= 2
        assert set(statuses) == {200, 429}
        assert all(r.headers["Retry-After"] == "3" for r in responses if r.status_code == 429)
        stats = srv.stats()
        assert stats["max_in_flight"] == 2 and stats["in_flight"] == 0
        assert stats["requests"] == 8


def test_latency() -> None:
    with ReferenceServer(faults=Faults(latency=0.3)) as srv:
        started = time.perf_counter()
        assert post(srv).status_code == 200
        assert time.perf_counter() - started >= 0.3
        srv.set_faults(latency=0.0, latency_jitter=0.05)
        started = time.perf_counter()
        assert post(srv).status_code == 200
        assert time.perf_counter() - started < 1


def test_64_concurrent_requests_overlap() -> None:
    with ReferenceServer(faults=Faults(latency=0.2)) as srv:
        body = make_body([CONVERSATION], multiplier=2)
        started = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(64) as pool:
            responses = list(pool.map(lambda _: post(srv, body), range(64)))
        elapsed = time.perf_counter() - started
        assert [r.status_code for r in responses] == [200] * 64
        assert elapsed < 2, elapsed
        stats = srv.stats()
        assert stats["max_in_flight"] > 8
        assert stats["examples"] == 64 and stats["generations"] == 128


# ---- stats and admin endpoints ----------------------------------------------------------------


def test_stats_and_reset(server: ReferenceServer) -> None:
    post(server)
    post(server, token="bad")
    post(server, data=b"{}")
    server.set_faults(script=[503])
    post(server)
    stats = server.stats()
    assert stats == {
        "requests": 4,
        "by_status": {"200": 1, "401": 1, "422": 1, "503": 1},
        "examples": 2,
        "generations": 6,
        "in_flight": 0,
        "max_in_flight": 1,
    }
    assert requests.get(server.url + "/__stats", timeout=TIMEOUT).json() == stats
    server.reset_stats()
    assert server.stats()["requests"] == 0
    post(server)
    assert requests.post(server.url + "/__reset", timeout=TIMEOUT).json() == {"ok": True}
    assert server.stats() == {
        "requests": 0,
        "by_status": {},
        "examples": 0,
        "generations": 0,
        "in_flight": 0,
        "max_in_flight": 0,
    }


def test_faults_over_http(server: ReferenceServer) -> None:
    url = server.url + "/__faults"
    answer = requests.post(url, json={"script": [503], "retry_after": 4}, timeout=TIMEOUT)
    assert answer.status_code == 200
    assert answer.json()["script"] == [503] and answer.json()["retry_after"] == 4.0
    response = post(server)
    assert response.status_code == 503 and response.headers["Retry-After"] == "4"
    assert post(server).status_code == 200
    assert requests.get(url, timeout=TIMEOUT).json()["script"] == []
    assert requests.post(url, json={"nope": 1}, timeout=TIMEOUT).status_code == 400
    assert requests.post(url, json={"rate_500": 2}, timeout=TIMEOUT).status_code == 400
    assert requests.post(url, json={"framing": "xml"}, timeout=TIMEOUT).status_code == 400
    assert requests.post(url, json=[1], timeout=TIMEOUT).status_code == 400
    assert requests.post(url, json={"framing": "ndjson"}, timeout=TIMEOUT).status_code == 200
    assert server.faults.framing == "ndjson"


def test_faults_validation_and_set_faults(server: ReferenceServer) -> None:
    for bad in (
        {"rate_429": 1.5},
        {"rate_500": -0.1},
        {"latency": float("nan")},
        {"framing": "xml"},
        {"max_concurrency": 0},
        {"script": [200, "explode"]},
        {"script": [302]},
        {"shuffle": "yes"},
    ):
        with pytest.raises(ValueError):
            Faults(**bad)
    with pytest.raises(TypeError):
        server.set_faults(not_a_field=1)
    with pytest.raises(ValueError):
        server.set_faults(rate_500=3)
    server.set_faults(Faults(script=[502]))
    assert post(server).status_code == 502
    server.set_faults(rate_wrapped=1.0)
    assert server.faults.rate_wrapped == 1.0 and server.faults.script == []


# ---- CLI ---------------------------------------------------------------------------------------


def test_cli_serves_until_terminated() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "synth_datasets.testing", "--port", "0", "--script", "429"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.fullmatch(r"serving (http://127\.0\.0\.1:\d+) token=(\S+)\n", line)
        assert match, line
        url, token = match.groups()
        headers = {"Authorization": f"Bearer {token}"}
        first = requests.post(url + GENERATE_PATH, json=make_body(), headers=headers, timeout=10)
        assert first.status_code == 429
        second = requests.post(url + GENERATE_PATH, json=make_body(), headers=headers, timeout=10)
        assert second.status_code == 200 and len(second.json()) == 6
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0, stderr


def test_cli_refuses_remote_host_and_bad_faults(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--host", "0.0.0.0", "--port", "0"]) == 2
    assert "--allow-remote" in capsys.readouterr().err
    assert main(["--port", "0", "--rate-500", "2"]) == 2
    assert "rate_500" in capsys.readouterr().err
    assert "NOT a language model" in PARSER_DESCRIPTION
