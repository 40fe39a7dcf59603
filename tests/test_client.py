"""SynthClient through real HTTP against the reference server."""

from __future__ import annotations

import json
import logging
import pickle
import threading
import time
import uuid

import pytest
from helpers import MODEL_ID as MODEL
from helpers import Answer, StubServer, gil_switching_often
from helpers import make_client as fast_client

from synth_datasets import (
    APIConnectionError,
    AuthenticationError,
    ConfigurationError,
    RateLimitError,
    ResponseFormatError,
    ServerError,
    SynthClient,
    SynthError,
    ValidationError,
)
from synth_datasets.testing import ReferenceServer

EXAMPLES = [{"q": "What is 2+2?", "a": "4"}, {"q": "Capital of France?", "a": "Paris"}]
SECRET = "sk-SECRET-tok3n-do-not-leak-9f8e7d"


@pytest.fixture
def server(start_server) -> ReferenceServer:
    return start_server(token=SECRET)


def generate(client: SynthClient, **kw):
    args = {"model_id": MODEL, "prompt": "More like these.", "examples": EXAMPLES, "multiplier": 3}
    args.update(kw)
    return client.generate(**args)


def test_success_returns_generations_per_example(server):
    gens = generate(fast_client(server))
    assert len(gens) == 6
    for g in gens[:3]:
        assert g.original == EXAMPLES[0]
        obj = json.loads(g.generated)
        assert set(obj) == {"q", "a"} and obj != EXAMPLES[0]
    assert [g.original for g in gens[3:]] == [EXAMPLES[1]] * 3
    assert server.stats()["requests"] == 1


def test_model_id_accepts_uuid_object(server):
    gens = generate(fast_client(server), model_id=uuid.UUID(MODEL), multiplier=1)
    assert len(gens) == 2


def test_401_is_authentication_error(server):
    client = SynthClient("sk-wrong", server.url, backoff_factor=0.01)
    with pytest.raises(AuthenticationError) as info:
        generate(client)
    assert info.value.status_code == 401
    assert info.value.request_id
    assert "COLLINEAR_API_KEY" in str(info.value)
    assert server.stats()["requests"] == 1  # never retried


def test_422_carries_detail(server):
    # Bypass our own checks to see the server's answer: a body with a bad multiplier.
    client = fast_client(server)
    body = json.dumps(
        {"model_id": MODEL, "multiplier": "x", "examples": EXAMPLES, "prompt": "p"}
    ).encode()
    with pytest.raises(ValidationError) as info:
        client.post(body)
    err = info.value
    assert err.status_code == 422
    assert isinstance(err.detail, list) and err.detail[0]["loc"] == ["body", "multiplier"]
    assert "multiplier" in str(err)
    assert server.stats()["requests"] == 1


def test_429_then_success_honours_retry_after(server):
    server.set_faults(script=[429], retry_after=1.0)
    started = time.monotonic()
    gens = generate(fast_client(server))
    assert time.monotonic() - started >= 1.0
    assert len(gens) == 6
    assert server.stats()["requests"] == 2


def test_429_until_retries_run_out(server):
    server.set_faults(script=[429] * 10, retry_after=0.01)
    with pytest.raises(RateLimitError) as info:
        generate(fast_client(server, max_retries=2))
    assert info.value.status_code == 429
    assert server.stats()["requests"] == 3


def test_503_until_retries_run_out_is_server_error(server):
    server.set_faults(rate_503=1.0, retry_after=0.01)
    with pytest.raises(ServerError) as info:
        generate(fast_client(server, max_retries=2))
    assert info.value.status_code == 503
    assert server.stats()["requests"] == 3


@pytest.mark.parametrize("status", [500, 502])
def test_5xx_retried_then_success(server, status):
    server.set_faults(script=[status, status])
    assert len(generate(fast_client(server))) == 6
    assert server.stats()["requests"] == 3


def test_dropped_connection_is_retried(server):
    server.set_faults(script=["drop"])
    assert len(generate(fast_client(server))) == 6
    assert server.stats()["requests"] == 2


def test_truncated_body_is_retried(server):
    server.set_faults(script=["truncate"])
    assert len(generate(fast_client(server))) == 6
    assert server.stats()["requests"] == 2


@pytest.mark.parametrize(
    "script", [[429, "truncate"], ["truncate", 429], [503, "truncate", 429], ["drop", "truncate"]]
)
def test_attempts_are_what_the_server_received(server, script):
    """Status retries (urllib3's) and body retries (ours) share one Retry, whose history grows
    across both: the attempts reported are the requests the server got."""
    server.set_faults(script=script, retry_after=0.01)
    client = fast_client(server)
    body = client.build_body(model_id=MODEL, prompt="p", examples=EXAMPLES, multiplier=3)
    items, info = client.post(body)
    assert len(items) == 6
    assert info.attempts == server.stats()["requests"] == len(script) + 1


def test_dropped_every_time_is_connection_error(server):
    server.set_faults(rate_drop=1.0)
    with pytest.raises(APIConnectionError):
        generate(fast_client(server, max_retries=1))
    assert server.stats()["requests"] == 2


def test_read_timeout_is_retried_then_reported(server):
    server.set_faults(latency=30.0)
    with pytest.raises(APIConnectionError) as info:
        generate(fast_client(server, max_retries=1, timeout=(5.0, 2.0)))
    assert "timed out" in str(info.value)
    assert server.stats()["requests"] == 2


@pytest.mark.parametrize("framing", ["chunked", "sse", "ndjson"])
def test_framed_bodies_are_parsed(server, framing):
    server.set_faults(framing=framing)
    gens = generate(fast_client(server))
    assert len(gens) == 6
    assert gens[0].original == EXAMPLES[0]


def test_unparseable_body_is_response_format_error():
    # A server that answers 200 with HTML: a stand-in, since the reference server only ever
    # speaks the endpoint's formats.
    html = b"<html><body>Service temporarily unavailable</body></html>"
    headers = {"Content-Type": "text/html", "x-request-id": "req_html"}
    with StubServer(lambda _received: Answer(200, html, headers)) as stub:
        client = fast_client(stub.url, SECRET, max_retries=1)
        with pytest.raises(ResponseFormatError) as info:
            generate(client)
        assert "<html>" in str(info.value)
        assert info.value.request_id == "req_html"
        assert SECRET not in str(info.value)
        assert len(stub.received) == 2  # a 200 that does not parse is retried once


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("model_id", "not-a-uuid", "model_id"),
        ("model_id", 12, "model_id"),
        ("multiplier", 0, "multiplier"),
        ("multiplier", -1, "multiplier"),
        ("multiplier", 1.5, "multiplier"),
        ("multiplier", True, "multiplier"),
        ("multiplier", "4", "multiplier"),
        ("examples", [], "examples"),
        ("examples", {"q": 1}, "examples"),
        ("examples", ["text"], "examples[0]"),
        ("examples", [{"when": object()}], "examples[0]"),
        ("prompt", "", "prompt"),
        ("prompt", "   ", "prompt"),
        ("prompt", None, "prompt"),
    ],
)
def test_bad_arguments_are_refused_before_sending(server, field, value, needle):
    with pytest.raises(ConfigurationError) as info:
        generate(fast_client(server), **{field: value})
    assert needle in str(info.value)
    assert "\n" not in str(info.value)
    assert server.stats()["requests"] == 0


def test_missing_key_names_the_variable(monkeypatch):
    monkeypatch.delenv("COLLINEAR_API_KEY", raising=False)
    with pytest.raises(ConfigurationError, match="COLLINEAR_API_KEY"):
        SynthClient()


def test_config_from_environment(monkeypatch, server):
    monkeypatch.setenv("COLLINEAR_API_KEY", server.token)
    monkeypatch.setenv("COLLINEAR_BASE_URL", server.url)
    monkeypatch.setenv("COLLINEAR_MODEL_ID", MODEL)
    client = SynthClient(backoff_factor=0.01)
    assert client.base_url == server.url
    gens = client.generate(prompt="p", examples=EXAMPLES[:1], multiplier=2)
    assert len(gens) == 2


def test_default_base_url(monkeypatch):
    monkeypatch.delenv("COLLINEAR_BASE_URL", raising=False)
    assert SynthClient("k").base_url == "https://api.collinear.ai"


def test_missing_model_id_names_the_variable(server):
    with pytest.raises(ConfigurationError, match="COLLINEAR_MODEL_ID"):
        fast_client(server).generate(prompt="p", examples=EXAMPLES, multiplier=1)


@pytest.mark.parametrize(
    "url",
    [
        "api.collinear.ai",
        "ftp://api.collinear.ai",
        "http://api.collinear.ai",
        "http://10.0.0.5:8080",
    ],
)
def test_bad_or_insecure_base_url_refused(url):
    with pytest.raises(ConfigurationError) as info:
        SynthClient(SECRET, url)
    assert SECRET not in str(info.value)


@pytest.mark.parametrize("url", ["http://127.0.0.1:9", "http://localhost:9", "http://[::1]:9"])
def test_plain_http_allowed_on_loopback(url):
    assert SynthClient(SECRET, url).base_url == url


def test_unreachable_server_is_connection_error():
    client = SynthClient(SECRET, "http://127.0.0.1:9", max_retries=1, backoff_factor=0.01)
    with pytest.raises(APIConnectionError) as info:
        generate(client)
    assert SECRET not in str(info.value)


def test_client_pickles_and_rebuilds_its_session(server):
    client = pickle.loads(pickle.dumps(fast_client(server)))
    assert len(generate(client, multiplier=1)) == 2


def test_a_new_clients_first_calls_at_once_all_reach_the_endpoint(server):
    """Eight threads' first calls on a new client, the GIL switched as often as it can be: every
    call is answered (a client building its pool lazily let one thread send before the request
    URL was set, and the server answered 404 for the empty path)."""
    errors: list[BaseException] = []
    with gil_switching_often():
        for _ in range(60):
            client = fast_client(server)
            start = threading.Barrier(8)

            def call(client: SynthClient = client, start: threading.Barrier = start) -> None:
                start.wait()
                try:
                    generate(client, multiplier=1)
                except Exception as exc:  # collected, asserted below
                    errors.append(exc)

            threads = [threading.Thread(target=call) for _ in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            client.close()
    assert errors == []
    assert server.stats()["requests"] == 60 * 8


def test_token_never_leaks(server, caplog):
    """repr, every exception text and DEBUG logs of failing runs carry no trace of the token."""
    caplog.set_level(logging.DEBUG)
    client = fast_client(server, max_retries=1)
    texts = [repr(client), str(client.__dict__.get("timeout"))]
    scripts = [[401], [429, 429], [503, 503], ["drop", "drop"], ["truncate", "truncate"], [422]]
    for script in scripts:
        server.set_faults(script=script, retry_after=0.01)
        with pytest.raises(SynthError) as info:
            generate(client)
        texts += [str(info.value), repr(info.value), repr(info.value.body)]
    with pytest.raises(ConfigurationError) as info:
        SynthClient(SECRET, "http://example.com")
    texts.append(str(info.value))
    texts.append(caplog.text)
    blob = "\n".join(texts)
    assert "Bearer" not in caplog.text
    assert SECRET not in blob
    assert SECRET[:12] not in blob and SECRET[-8:] not in blob
