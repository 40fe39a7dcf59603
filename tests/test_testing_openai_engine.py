"""``OpenAIEngine`` over real HTTP on both sides: a client asks the reference server, whose engine
asks a fake OpenAI-compatible server (tests/fakeopenai.py). Outcomes are checked where they land:
the items and rows, the endpoint's statuses, what reached the backend."""

from __future__ import annotations

import concurrent.futures
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
from fakeopenai import FakeOpenAI
from helpers import make_client, qa, run_expand
from refserver import CONVERSATION, MIXED, make_body, post, same_shape, wait_for

from synth_datasets import ConfigurationError, RateLimitError, __version__
from synth_datasets.errors import APIConnectionError, APIStatusError, ServerError
from synth_datasets.testing import Faults, OpenAIEngine, ReferenceServer
from synth_datasets.testing.openai_engine import example_schema

MODEL = "fake-model"
KEY_ENV = "SYNTH_TEST_BACKEND_KEY"


@pytest.fixture(autouse=True)
def _no_backend_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """No key unless a test sets one: the machine's OPENAI_API_KEY must not reach the fake."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv(KEY_ENV, raising=False)


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


def _host(fake: FakeOpenAI) -> str:
    return fake.url.removeprefix("http://").removesuffix("/v1")


def serve(fake: FakeOpenAI, **kw: Any) -> ReferenceServer:
    """A reference server whose engine asks ``fake`` (``with`` starts and stops it)."""
    return ReferenceServer(engine=OpenAIEngine(base_url=fake.url, model=MODEL, **kw))


def generate(server: ReferenceServer, examples: list[Any], multiplier: int, **kw: Any) -> Any:
    with make_client(server, **kw) as client:
        return client.generate(
            model_id=server.engine.model_id, prompt="p", examples=examples, multiplier=multiplier
        )


def test_structured_output_is_asked_for_and_honoured(fake: FakeOpenAI) -> None:
    examples = [CONVERSATION, MIXED]
    with serve(fake) as server:
        gens = generate(server, examples, multiplier=2)
    assert [g.original for g in gens] == [CONVERSATION, CONVERSATION, MIXED, MIXED]
    assert len(fake.calls) == 4 and fake.formats() == ["json_schema"] * 4
    for call in fake.calls:  # in the order they arrived, which is any order
        content = call["body"]["messages"][-1]["content"]
        (example,) = [e for e in examples if json.dumps(e) in content]
        schema = call["body"]["response_format"]["json_schema"]["schema"]
        assert schema == example_schema(example) and call["body"]["model"] == MODEL
        jsonschema.validate(example, schema)  # the example fits its own schema
        assert content.startswith("p\n")
    for gen in gens:  # what the model wrote is the generation, as is: the fake's instance
        value = json.loads(gen.generated)
        jsonschema.validate(value, example_schema(gen.original))
    assert json.loads(gens[0].generated)["response"]["content"].startswith("schema text")


def test_a_refused_schema_falls_back_to_json_object_then_to_instructions() -> None:
    with FakeOpenAI(refuse={"json_schema"}) as fake, serve(fake) as server:
        gens = generate(server, [MIXED], multiplier=1)
        assert fake.formats() == ["json_schema", "json_object"]
        generate(server, [MIXED], multiplier=1)  # the engine remembers what worked
        assert fake.formats()[2:] == ["json_object"]
    assert same_shape(MIXED, json.loads(gens[0].generated))
    with FakeOpenAI(refuse={"json_schema", "json_object"}) as fake, serve(fake) as server:
        gens = generate(server, [MIXED], multiplier=1)
    assert fake.formats() == ["json_schema", "json_object", "none"]
    assert "JSON object" in fake.calls[-1]["body"]["messages"][-1]["content"]
    assert json.loads(gens[0].generated)["question"].endswith("(fake 3)")


def test_malformed_json_becomes_a_parse_error_row(fake: FakeOpenAI, cache_dir) -> None:
    fake.script = ["ok", "malformed"]
    seeds = qa(2)
    with serve(fake, max_concurrency=1) as server, make_client(server) as client:
        out = run_expand(
            seeds, client, cache_dir, multiplier=1, model_id=server.engine.model_id
        ).to_list()
    assert [row["source_index"] for row in out] == [0, 1]
    assert out[0]["error"] is None and out[0]["q"] == "schema text 1"
    assert out[1]["q"] is None and out[1]["error"].startswith("parse: ")
    assert out[1]["generated_raw"].startswith("Sure! Here it is: {")


@pytest.mark.parametrize(("status", "error"), [(429, RateLimitError), (503, ServerError)])
def test_backend_429_and_503_are_the_endpoints_with_its_retry_after(
    status: int, error: type[Exception]
) -> None:
    with FakeOpenAI(script=[status], retry_after="0") as fake, serve(fake) as server:
        answer = post(server, make_body(examples=[MIXED], multiplier=1))
        assert answer.status_code == status
        assert answer.headers["Retry-After"] == "0"  # the backend's, not the faults' default 1
        assert answer.json()["detail"] == f"{_host(fake)} answered {status}: scripted {status}"
        fake.script = [status, status]
        gens = generate(server, [MIXED], multiplier=1)  # retried until the backend answers
        assert len(gens) == 1
        fake.script = [status] * 5
        with pytest.raises(error):
            generate(server, [MIXED], multiplier=1, max_retries=2)
        assert server.stats()["by_status"] == {str(status): 6, "200": 1}


def test_backend_5xx_and_timeouts_are_retried_and_other_4xx_are_not(fake: FakeOpenAI) -> None:
    with serve(fake, timeout=0.5) as server:
        fake.script = [500, 502, "slow"]  # the third call outlasts the engine's timeout: 504
        assert len(generate(server, [MIXED], multiplier=1)) == 1
        assert server.stats()["by_status"] == {"500": 1, "502": 1, "504": 1, "200": 1}
        server.reset_stats()
        fake.script = [404] * 3  # a 4xx other than 429: the request is refused, not retried
        with pytest.raises(APIStatusError, match="answered 404: scripted 404") as info:
            generate(server, [MIXED], multiplier=1)
        assert info.value.status_code == 400 and server.stats()["requests"] == 1


def test_a_failed_completion_fails_the_request_and_cancels_the_rest() -> None:
    with FakeOpenAI(script=[500], delay=0.2) as fake, serve(fake, max_concurrency=1) as server:
        answer = post(server, make_body(examples=[MIXED], multiplier=6))
        assert answer.status_code == 500
        assert len(fake.calls) <= 2  # the other completions were never sent


def test_concurrency_bound_holds_across_requests() -> None:
    with (
        FakeOpenAI(delay=0.1) as fake,
        serve(fake, max_concurrency=3) as server,
        concurrent.futures.ThreadPoolExecutor(4) as pool,
    ):
        futures = [pool.submit(generate, server, [MIXED, CONVERSATION], 3) for _ in range(4)]
        assert all(len(f.result()) == 6 for f in futures)
    assert len(fake.calls) == 24 and fake.max_in_flight == 3


def test_the_api_key_comes_from_the_environment_and_never_leaks(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    key = "sk-backend-5ecret-0123456789"
    monkeypatch.setenv(KEY_ENV, key)
    caplog.set_level(logging.DEBUG)
    # the 400 that quotes the key back comes at each of the three formats asked
    with FakeOpenAI(api_key=key, script=["ok", *["echo_key"] * 3]) as fake:
        engine = OpenAIEngine(base_url=fake.url, model=MODEL, api_key_env=KEY_ENV)
        with ReferenceServer(engine=engine) as server:
            assert len(generate(server, [MIXED], multiplier=1)) == 1
            answer = post(server, make_body(examples=[MIXED], multiplier=1))
    assert {c["headers"]["Authorization"] for c in fake.calls} == {f"Bearer {key}"}
    assert answer.status_code == 400 and "Bearer ***" in answer.json()["detail"]
    shown = [repr(engine), repr(server), str(engine), answer.text, caplog.text]
    assert not [text for text in shown if key in text]


def test_the_backend_is_checked_when_the_server_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeOpenAI(models=["other", "llama3.1:latest"]) as fake:
        with pytest.raises(ConfigurationError, match=r"does not serve model 'fake-model'.*other"):
            serve(fake).start()
        ReferenceServer(engine=OpenAIEngine(base_url=fake.url, model="llama3.1")).start().stop()
    with FakeOpenAI(models=None) as fake:  # no /models: taken at its word
        serve(fake).start().stop()
    with FakeOpenAI(api_key="sk-right") as fake:
        with pytest.raises(ConfigurationError, match=r"answered 401 .*no key: set \$OPENAI_API"):
            serve(fake).start()
        monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong")
        with pytest.raises(ConfigurationError, match=r"the key in \$OPENAI_API_KEY"):
            serve(fake).start()
    with pytest.raises(ConfigurationError, match="does not answer"):
        url = fake.url  # that server is gone: nothing listens there now
        ReferenceServer(engine=OpenAIEngine(base_url=url, model=MODEL)).start()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"base_url": "127.0.0.1:8000/v1"}, r"base_url must be an http\(s\) URL"),
        ({"model": " "}, "model must be a model name"),
        ({"max_concurrency": 0}, "max_concurrency must be an int >= 1"),
        ({"timeout": float("nan")}, "timeout must be a number of seconds > 0"),
        ({"api_key_env": ""}, "api_key_env must be the name"),
        ({"base_url": "http://u:sk-in-url@127.0.0.1/v1"}, r"base_url must not carry credentials"),
    ],
)
def test_bad_options_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as info:
        OpenAIEngine(**{"base_url": "http://127.0.0.1:1/v1", "model": MODEL, **options})
    assert "sk-in-url" not in str(info.value)


def test_no_key_over_plain_http_to_a_remote_host(monkeypatch: pytest.MonkeyPatch) -> None:
    OpenAIEngine(base_url="http://gpu-box:8000/v1", model=MODEL)  # no key: fine
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    with pytest.raises(ConfigurationError, match=r"not sending \$OPENAI_API_KEY over plain http"):
        OpenAIEngine(base_url="http://gpu-box:8000/v1", model=MODEL)
    OpenAIEngine(base_url="https://gpu-box/v1", model=MODEL)


def test_item_faults_are_the_offline_engines_own(fake: FakeOpenAI) -> None:
    engine = OpenAIEngine(base_url=fake.url, model=MODEL)
    with pytest.raises(ValueError, match="rate_malformed acts on the offline engine"):
        ReferenceServer(engine=engine, faults=Faults(rate_malformed=0.5))
    with serve(fake) as server:
        with pytest.raises(ValueError, match="shuffle"):
            server.set_faults(shuffle=True)
        server.set_faults(script=[429, "ok"], retry_after=0)  # request faults act on any engine
        assert len(generate(server, [MIXED], multiplier=1)) == 1
        assert server.stats()["by_status"] == {"429": 1, "200": 1}


def test_every_answer_names_the_engine(fake: FakeOpenAI) -> None:
    with serve(fake) as server:
        answer = post(server, make_body(examples=[MIXED], multiplier=1))
    assert answer.status_code == 200
    assert answer.headers["X-Synth-Engine"] == (
        f"openai-compatible/{__version__}; model={MODEL}; host={_host(fake)}"
    )


def test_a_request_the_client_gave_up_stops_asking_the_model() -> None:
    with FakeOpenAI(delay=0.5) as fake, serve(fake, max_concurrency=1) as server:
        with pytest.raises(APIConnectionError):  # five completions one at a time: 2.5 s
            generate(server, [MIXED], multiplier=5, timeout=0.3, max_retries=0)
        wait_for(lambda: server.stats()["in_flight"] == 0)
        time.sleep(1.0)  # two more completions' time, had the request gone on
    assert len(fake.calls) == 1
