"""Requests in flight: the adaptive limit's rules on their own, then what a rate-limited reference
server sees of them (its request counts and in-flight peak), and the retry path that keeps a
quota in use (a retry's wait holds no place).

No timing asserts: outcomes and counts (429s, requests, places), bounded by what the rules allow.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from helpers import MODEL_ID, PROMPT, assert_complete, make_client, qa, run_expand

from synth_datasets import SynthMapper
from synth_datasets.testing import ReferenceServer
from synth_datasets.throttle import (
    DECREASE,
    START,
    ConcurrencyLimit,
    Throttle,
    shared_limit,
)

run = run_expand


class Requests:
    """Requests through a limit as the engine's threads send them: every free place is taken
    at once, and the oldest request is answered first."""

    def __init__(self, limit: ConcurrencyLimit) -> None:
        self.limit = limit
        self.held: list[int] = []  # the round each request in flight was sent in

    def fill(self) -> None:
        while self.limit.in_flight < int(self.limit.limit):
            self.held.append(self.limit.acquire())

    def answer(self, status: int, times: int = 1) -> None:
        for _ in range(times):
            self.fill()
            self.limit.release(self.held.pop(0), status)


# --------------------------------------------------------------------------------------------
# The rules


def test_a_fixed_limit_never_moves() -> None:
    limit = ConcurrencyLimit(3, 3)
    Requests(limit).answer(200, 10)
    Requests(limit).answer(429, 3)
    assert limit.limit == 3 and not limit.adaptive


def test_adaptive_doubles_until_the_first_refusal_then_keeps_nine_tenths() -> None:
    limit = ConcurrencyLimit(None, 64)
    requests = Requests(limit)
    assert limit.limit == START
    requests.answer(200, 6)  # one more per clean answer while used up
    assert limit.limit == START + 6
    requests.answer(429)
    assert limit.limit == pytest.approx((START + 6) * DECREASE)
    # The refusals of requests sent before that decrease say nothing new.
    for stale in requests.held[:5]:
        limit.release(stale, 429)
    del requests.held[:5]
    assert limit.limit == pytest.approx((START + 6) * DECREASE)
    limit.release(limit.acquire(), 503)  # sent since: a 503 counts as a refusal too
    assert limit.limit == pytest.approx((START + 6) * DECREASE**2)


def test_adaptive_grows_at_most_one_a_second_past_the_first_refusal() -> None:
    limit = ConcurrencyLimit(None, 64)
    requests = Requests(limit)
    requests.answer(200, 12)
    started = time.monotonic()
    requests.answer(429)
    before = limit.limit
    requests.answer(200, 200)
    assert limit.limit - before <= (time.monotonic() - started) * 1.0 + 1e-9


def test_adaptive_grows_only_while_used_up_and_within_its_bounds() -> None:
    limit = ConcurrencyLimit(None, 6)
    for _ in range(20):  # one request at a time: the limit is never used up
        limit.release(limit.acquire(), 200)
    assert limit.limit == START
    requests = Requests(limit)
    requests.answer(200, 50)
    assert limit.limit == 6  # the ceiling
    for stale in requests.held:
        limit.release(stale, 200)
    for _ in range(60):
        limit.release(limit.acquire(), 429)
    assert limit.limit == 1.0  # the floor
    limit.release(limit.acquire(), 500)  # neither clean nor a refusal
    assert limit.limit == 1.0


def test_a_retry_wait_holds_no_place() -> None:
    """One place: while its holder waits out a Retry-After, another thread takes it."""
    counts: Counter[str] = Counter()
    throttle = Throttle(ConcurrencyLimit(1, 1), count=lambda **kw: counts.update(kw))
    taken, other_done = threading.Event(), threading.Event()

    def first_request() -> None:  # refused, waits, then sends again
        throttle.acquire()
        taken.set()
        throttle.wait(429, 1.0)
        assert other_done.is_set()  # the other request went during the wait
        throttle.release(200)

    def second_request() -> None:
        throttle.acquire()
        throttle.release(200)
        other_done.set()

    waiter = threading.Thread(target=first_request)
    waiter.start()
    assert taken.wait(30)
    other = threading.Thread(target=second_request)
    other.start()
    other.join(timeout=30)
    assert not other.is_alive(), "the waiting request kept its place"
    waiter.join(timeout=30)
    assert throttle.in_flight == 0 and throttle.limit.in_flight == 0
    assert dict(counts) == {"retries": 1, "rate_limited": 1}


def test_one_adaptive_limit_per_process_endpoint_and_token() -> None:
    first = shared_limit("http://127.0.0.1:1", "token-a", 8)
    assert shared_limit("http://127.0.0.1:1", "token-a", 16) is first
    assert first.ceiling == 16
    assert shared_limit("http://127.0.0.1:1", "token-b", 8) is not first
    assert shared_limit("http://127.0.0.1:2", "token-a", 8) is not first
    assert "token-a" not in repr(first)


# --------------------------------------------------------------------------------------------
# Through the reference server


def test_auto_never_passes_its_ceiling(ref_server: ReferenceServer, cache_dir: Path) -> None:
    ds = qa(96)
    ref_server.set_faults(latency=0.05)
    out = run(
        ds,
        make_client(ref_server),
        cache_dir,
        request_size=2,
        max_concurrency="auto",
        concurrency_ceiling=3,
    )
    assert_complete(out, ds, 2)
    assert ref_server.stats()["max_in_flight"] <= 3
    assert ref_server.stats()["requests"] == 48


def test_auto_settles_under_a_concurrency_cap_with_few_refusals(
    ref_server: ReferenceServer, tmp_path: Path
) -> None:
    """A server refusing more than 3 requests in flight: fixed at 16, most attempts are refused
    (some requests run out of retries); adaptive, it soon sends about 3 at a time, few are
    refused and every request succeeds, paid for once."""
    ds = qa(192)
    ref_server.set_faults(max_concurrency=3, latency=0.05, retry_after=0.01)
    refused = {}
    for setting in (16, "auto"):
        ref_server.reset_stats()
        out = run(
            ds,
            make_client(ref_server, max_retries=30),
            tmp_path / str(setting),
            request_size=4,
            max_concurrency=setting,
            concurrency_ceiling=16,
            on_error="keep",
        )
        refused[setting] = ref_server.stats()["by_status"].get("429", 0)
    assert_complete(out, ds, 2)
    assert ref_server.stats()["by_status"]["200"] == 48
    assert refused["auto"] * 3 < refused[16], refused


def test_auto_waits_out_retry_after_when_one_at_a_time_is_refused(
    ref_server: ReferenceServer, cache_dir: Path
) -> None:
    """A bucket of one request refilled 5 times a second, answering at once, asking for 0.3 s:
    even one request at a time is too many. Once the limit is down to one, a refusal stops every
    send for its Retry-After, so there is about one refusal per success (plus those of the way
    down), where every waiting request would otherwise be refused once per wait (about 11 per
    success here)."""
    ds = qa(96)
    ref_server.set_faults(requests_per_second=5, limit_burst=0, retry_after=0.3)
    out = run(
        ds,
        make_client(ref_server, max_retries=30),
        cache_dir,
        request_size=4,
        max_concurrency="auto",
        concurrency_ceiling=24,
    )
    assert_complete(out, ds, 2)
    stats = ref_server.stats()
    assert stats["by_status"]["200"] == 24
    assert stats["rate_limited"] <= 4 * 24, stats


def test_threads_of_a_process_share_the_adaptive_limit(start_server: Any, tmp_path: Path) -> None:
    """Two expansions at once, same endpoint and token: together within one ceiling."""
    server = start_server()
    server.set_faults(latency=0.1)
    ds = qa(64)
    outs: dict[int, Any] = {}

    def expand_one(k: int) -> None:
        outs[k] = run(
            ds,
            make_client(server),
            tmp_path / str(k),
            request_size=2,
            max_concurrency="auto",
            concurrency_ceiling=3,
        )

    threads = [threading.Thread(target=expand_one, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for out in outs.values():
        assert_complete(out, ds, 2)
    stats = server.stats()
    assert stats["requests"] == 64 and stats["max_in_flight"] <= 3


def test_stats_count_retries_as_they_happen_and_429s(
    ref_server: ReferenceServer, cache_dir: Path
) -> None:
    ds = qa(8)
    ref_server.set_faults(script=[429, 503, 429], retry_after=0.01)
    mapper = SynthMapper(
        prompt=PROMPT,
        multiplier=2,
        model_id=MODEL_ID,
        client=make_client(ref_server, max_retries=5),
        cache_dir=cache_dir,
        request_size=4,
        max_concurrency="auto",
    )
    out = ds.map(mapper, **mapper.map_kwargs(ds))
    mapper.close()
    assert_complete(out, ds, 2)
    stats = mapper.stats
    assert (stats.retries, stats.rate_limited, stats.requests_sent) == (3, 2, 2)
    assert "3 retries (2 answered 429)" in stats.summary()
