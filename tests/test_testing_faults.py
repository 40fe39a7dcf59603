"""``Faults``: bad values refused up front, and each request-level fault (scripted and random
statuses, dropped and truncated bodies, framings, latency, a concurrency cap) doing what it says
over real HTTP."""

from __future__ import annotations

import concurrent.futures
import json
import time
from collections import Counter
from typing import Any

import pytest
import requests
from refserver import TIMEOUT, make_body, post, wait_for

from synth_datasets.testing import Faults, ReferenceServer
from synth_datasets.testing.faults import parse_schedule, parse_script


@pytest.mark.parametrize(
    "bad",
    [
        {"rate_429": 1.5},
        {"rate_500": -0.1},
        {"latency": float("nan")},
        {"hang": "5"},
        {"framing": "xml"},
        {"max_concurrency": 0},
        {"seed": 1.5},
        {"script": [200, "explode"]},
        {"script": [302]},
        {"script": "429"},
        {"shuffle": "yes"},
        {"requests_per_second": 0},
        {"requests_per_second": "100"},
        {"generations_per_minute": -5.0},
        {"limit_burst": -1.0},
        {"limit_schedule": "10:0.5"},
        {"limit_schedule": [(10,)]},
        {"limit_schedule": [(10, 0)]},
        {"limit_schedule": [(-1, 0.5)]},
        {"limit_schedule": [(10, 0.5)]},  # no rate limit to change
        {"limit_burst": 0.1},  # no rate limit to size
    ],
)
def test_bad_values_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        Faults(**bad)


def test_values_are_normalised_and_the_script_copied() -> None:
    script: list[int | str] = [429, "ok"]
    faults = Faults(latency=1, script=script)
    assert faults.latency == 1.0 and type(faults.latency) is float
    assert faults.script == script and faults.script is not script
    assert parse_script(" 429, drop,,ok ") == [429, "drop", "ok"]
    assert parse_schedule("30:1, 10:0.5") == [(30.0, 1.0), (10.0, 0.5)]
    scheduled = Faults(requests_per_second=10, limit_schedule=[[30, 1], (10, 0.5)])
    assert scheduled.limit_schedule == [(10.0, 0.5), (30.0, 1.0)]
    assert Faults(generations_per_minute=60, limit_burst=0.1).limit_burst == 0.1


def test_script_statuses_with_retry_after() -> None:
    faults = Faults(script=[429, 503, 500, 502, 401, "ok", 429], retry_after=2.5)
    with ReferenceServer(faults=faults) as srv:
        responses = [post(srv) for _ in range(8)]
        assert [r.status_code for r in responses] == [429, 503, 500, 502, 401, 200, 429, 200]
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


def test_drop_breaks_the_connection_mid_body(ref_server: ReferenceServer) -> None:
    ref_server.set_faults(script=["drop", "drop"])
    with pytest.raises((requests.ConnectionError, requests.exceptions.ChunkedEncodingError)):
        post(ref_server)
    ref_server.set_faults(framing="ndjson")
    with pytest.raises((requests.ConnectionError, requests.exceptions.ChunkedEncodingError)):
        post(ref_server)
    assert post(ref_server).status_code == 200  # the server itself is fine
    stats = ref_server.stats()
    assert stats["requests"] == 3
    assert stats["by_status"] == {"drop": 2, "200": 1}
    assert stats["generations"] == 6


def test_truncate_ends_the_body_early_but_cleanly(ref_server: ReferenceServer) -> None:
    ref_server.set_faults(script=["truncate"])
    response = post(ref_server)
    assert response.status_code == 200
    assert response.text.startswith("[")
    with pytest.raises(ValueError):
        json.loads(response.text)
    full = post(ref_server)
    assert full.text.startswith(response.text) and len(full.text) > len(response.text)
    assert ref_server.stats()["by_status"] == {"truncate": 1, "200": 1}


def test_random_status_faults_are_seeded(ref_server: ReferenceServer) -> None:
    def run(seed: int) -> list[int]:
        ref_server.set_faults(rate_500=0.3, rate_429=0.2, seed=seed)  # a new seed reseeds
        return [post(ref_server).status_code for _ in range(30)]

    first = run(7)
    assert first == run(7)
    assert first != run(8)
    counts = Counter(first)
    assert counts[200] > 0 and counts[500] > 0 and counts[429] > 0
    assert set(counts) == {200, 429, 500}


def test_chunked_framing(ref_server: ReferenceServer) -> None:
    expected = post(ref_server).json()
    ref_server.set_faults(framing="chunked")
    with post(ref_server, stream=True) as response:
        assert response.headers["Transfer-Encoding"] == "chunked"
        assert "Content-Length" not in response.headers
        chunks = list(response.raw.read_chunked())
    assert len(chunks) > 1
    assert json.loads(b"".join(chunks)) == expected


def test_sse_framing(ref_server: ReferenceServer) -> None:
    expected = post(ref_server).json()
    ref_server.set_faults(framing="sse")
    response = post(ref_server)
    assert response.headers["Content-Type"].startswith("text/event-stream")
    events = [e for e in response.text.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    assert [json.loads(e[len("data: ") :]) for e in events[:-1]] == expected


def test_ndjson_framing(ref_server: ReferenceServer) -> None:
    expected = post(ref_server).json()
    ref_server.set_faults(framing="ndjson")
    response = post(ref_server)
    assert response.headers["Content-Type"].startswith("application/x-ndjson")
    assert [json.loads(line) for line in response.text.splitlines()] == expected


def test_latency_is_the_least_time_to_answer(ref_server: ReferenceServer) -> None:
    ref_server.set_faults(latency=0.3)
    started = time.monotonic()
    assert post(ref_server).status_code == 200
    assert time.monotonic() - started >= 0.3
    ref_server.set_faults(latency=0.0, latency_jitter=0.05)
    assert post(ref_server).status_code == 200


def test_max_concurrency_answers_429(ref_server: ReferenceServer) -> None:
    """Two requests held by a long latency fill the cap; the next ones are refused at once."""
    ref_server.set_faults(max_concurrency=2, latency=600, retry_after=3)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        held = [pool.submit(post, ref_server, timeout=600) for _ in range(2)]
        wait_for(lambda: ref_server.stats()["in_flight"] == 2)
        refused = [post(ref_server) for _ in range(3)]
        ref_server.stop()  # cancels the held requests: their connections close
        for future in held:
            assert isinstance(future.exception(), requests.ConnectionError)
    assert [r.status_code for r in refused] == [429] * 3
    assert all(r.headers["Retry-After"] == "3" for r in refused)
    assert all(r.json() == {"detail": "Too many concurrent requests"} for r in refused)
    stats = ref_server.stats()
    assert stats["max_in_flight"] == 2 and stats["in_flight"] == 0
    assert stats["requests"] == 5 and stats["by_status"] == {"429": 3}


def test_requests_per_second_is_a_token_bucket(ref_server: ReferenceServer) -> None:
    """A bucket of one request, refilled every 10 s: the first request goes, the next ones are
    refused at once, before auth, taking nothing, with the time until the bucket refills."""
    ref_server.set_faults(requests_per_second=0.1, retry_after=0.5, script=[503])
    first = post(ref_server)
    refused = [post(ref_server), post(ref_server, token="wrong")]
    assert first.status_code == 503  # admitted: the script's entry is its outcome
    assert [r.status_code for r in refused] == [429, 429]
    assert all(r.json() == {"detail": "Rate limit exceeded"} for r in refused)
    assert all(5 < float(r.headers["Retry-After"]) <= 10 for r in refused)
    assert ref_server.stats()["rate_limited"] == 2
    ref_server.set_faults(requests_per_second=0.1, limit_burst=30)  # a bucket of 3, still empty
    assert post(ref_server).status_code == 429
    ref_server.reset_stats()  # full buckets again
    assert [post(ref_server).status_code for _ in range(4)] == [200, 200, 200, 429]
    stats = ref_server.stats()
    assert stats["by_status"] == {"200": 3, "429": 1} and stats["rate_limited"] == 1


def test_generations_per_minute_counts_examples_times_multiplier(
    ref_server: ReferenceServer,
) -> None:
    ref_server.set_faults(generations_per_minute=6, retry_after=0)
    body = make_body(multiplier=3)  # two examples: 6 generations, the whole bucket
    assert post(ref_server, body).status_code == 200
    refused = post(ref_server, make_body(multiplier=1))
    assert refused.status_code == 429
    assert 10 < float(refused.headers["Retry-After"]) <= 20  # 2 generations at 6 a minute
    # A request larger than the whole bucket goes once it is full (else it never could).
    ref_server.reset_stats()
    assert post(ref_server, make_body(multiplier=50)).status_code == 200
    assert post(ref_server, make_body(multiplier=1)).status_code == 429
    assert ref_server.stats()["generations"] == 100


def test_limit_schedule_changes_the_limit_during_the_run(ref_server: ReferenceServer) -> None:
    """One request per 10 s at first; from 0.2 s after the first request, 100 times more."""
    ref_server.set_faults(requests_per_second=0.1, limit_schedule=[(0.2, 100.0)], retry_after=0)
    assert [post(ref_server).status_code for _ in range(2)] == [200, 429]
    time.sleep(0.5)  # past the step: the bucket holds 10 and refills at 10 a second
    statuses = [post(ref_server).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    assert ref_server.faults.limit_schedule == [(0.2, 100.0)]


def test_limits_are_set_over_http(ref_server: ReferenceServer) -> None:
    response = requests.post(
        ref_server.url + "/__faults",
        json={"requests_per_second": 50, "limit_schedule": [[10, 0.5]]},
        timeout=TIMEOUT,
    )
    assert response.json()["requests_per_second"] == 50.0
    assert response.json()["limit_schedule"] == [[10.0, 0.5]]
