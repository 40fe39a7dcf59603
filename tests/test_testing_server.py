"""``ReferenceServer``: lifecycle, auth, the documented 200 contract, concurrency, counters and
the loopback admin endpoints, driven over real HTTP with `requests`."""

from __future__ import annotations

import concurrent.futures
import json
import re

import pytest
import requests
from refserver import CONVERSATION, RESPONSE_VALIDATOR, TIMEOUT, make_body, post, same_shape

from synth_datasets.testing import GENERATE_PATH, Faults, ReferenceServer


def test_url_health_repr_and_request_id(ref_server: ReferenceServer) -> None:
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", ref_server.url)
    assert ref_server.token.startswith("sk-local-")
    assert ref_server.token not in repr(ref_server) and ref_server.url in repr(ref_server)
    health = requests.get(ref_server.url + "/health", timeout=TIMEOUT)
    assert health.json() == {"ok": True}
    assert health.headers["x-request-id"].startswith("req_")
    missing = requests.get(ref_server.url + "/nope", timeout=TIMEOUT)
    assert missing.status_code == 404 and missing.json() == {"detail": "Not Found"}
    assert "x-request-id" in missing.headers
    assert ReferenceServer(token="t").token == "t"
    with pytest.raises(RuntimeError):
        _ = ReferenceServer().url
    with pytest.raises(RuntimeError, match="already started"):
        ref_server.start()


def test_auth_missing_and_wrong(ref_server: ReferenceServer) -> None:
    url = ref_server.url + GENERATE_PATH
    missing = requests.post(url, json=make_body(), timeout=TIMEOUT)
    assert missing.status_code == 401
    assert missing.json() == {"detail": "Not authenticated"}
    assert missing.headers["x-request-id"].startswith("req_")
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    basic = requests.post(
        url, json=make_body(), headers={"Authorization": "Basic x"}, timeout=TIMEOUT
    )
    assert basic.json() == {"detail": "Not authenticated"}
    wrong = post(ref_server, token="sk-wrong")
    assert wrong.status_code == 401 and wrong.json() == {"detail": "Invalid token"}
    # Auth is checked before the body.
    assert post(ref_server, token="sk-wrong", data=b"not json").status_code == 401
    assert ref_server.stats()["by_status"] == {"401": 4}


def test_ok_answer_matches_the_openapi_contract(ref_server: ReferenceServer) -> None:
    response = post(ref_server)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert int(response.headers["Content-Length"]) == len(response.content)
    assert re.fullmatch(r"req_[0-9a-f]{32}", response.headers["x-request-id"])
    RESPONSE_VALIDATOR.validate(response.json())


def test_64_concurrent_requests_overlap_and_are_all_answered() -> None:
    """Each answer takes 2 s: only a server holding the requests together has many in flight."""
    with ReferenceServer(faults=Faults(latency=2.0)) as srv:
        body = make_body([CONVERSATION], multiplier=2)
        with concurrent.futures.ThreadPoolExecutor(64) as pool:
            responses = list(pool.map(lambda _: post(srv, body), range(64)))
        assert [r.status_code for r in responses] == [200] * 64
        for response in responses:
            items = response.json()
            assert [i["original"] for i in items] == [CONVERSATION] * 2
            assert all(same_shape(CONVERSATION, json.loads(i["generated"])) for i in items)
        stats = srv.stats()
        assert stats["max_in_flight"] > 8
        assert stats["examples"] == 64 and stats["generations"] == 128


def test_stats_and_reset(ref_server: ReferenceServer) -> None:
    post(ref_server)
    post(ref_server, token="bad")
    post(ref_server, data=b"{}")
    ref_server.set_faults(script=[503])
    post(ref_server)
    stats = ref_server.stats()
    assert stats == {
        "requests": 4,
        "by_status": {"200": 1, "401": 1, "422": 1, "503": 1},
        "examples": 2,
        "generations": 6,
        "rate_limited": 0,
        "in_flight": 0,
        "max_in_flight": 1,
    }
    assert requests.get(ref_server.url + "/__stats", timeout=TIMEOUT).json() == stats
    ref_server.reset_stats()
    assert ref_server.stats()["requests"] == 0
    post(ref_server)
    assert requests.post(ref_server.url + "/__reset", timeout=TIMEOUT).json() == {"ok": True}
    assert ref_server.stats() == {
        "requests": 0,
        "by_status": {},
        "examples": 0,
        "generations": 0,
        "rate_limited": 0,
        "in_flight": 0,
        "max_in_flight": 0,
    }


def test_faults_over_http(ref_server: ReferenceServer) -> None:
    url = ref_server.url + "/__faults"
    answer = requests.post(url, json={"script": [503], "retry_after": 4}, timeout=TIMEOUT)
    assert answer.status_code == 200
    assert answer.json()["script"] == [503] and answer.json()["retry_after"] == 4.0
    response = post(ref_server)
    assert response.status_code == 503 and response.headers["Retry-After"] == "4"
    assert post(ref_server).status_code == 200
    assert requests.get(url, timeout=TIMEOUT).json()["script"] == []
    for bad in ({"nope": 1}, {"rate_500": 2}, {"framing": "xml"}, [1]):
        assert requests.post(url, json=bad, timeout=TIMEOUT).status_code == 400
    assert requests.post(url, data=b"{nope", timeout=TIMEOUT).status_code == 400
    assert requests.post(url, json={"framing": "ndjson"}, timeout=TIMEOUT).status_code == 200
    assert ref_server.faults.framing == "ndjson"


def test_set_faults(ref_server: ReferenceServer) -> None:
    with pytest.raises(TypeError):
        ref_server.set_faults(not_a_field=1)
    with pytest.raises(ValueError):
        ref_server.set_faults(rate_500=3)
    ref_server.set_faults(Faults(script=[502]))
    assert post(ref_server).status_code == 502
    ref_server.set_faults(rate_wrapped=1.0)
    assert ref_server.faults.rate_wrapped == 1.0 and ref_server.faults.script == []
