"""The fault matrix: every fault the reference server injects, through real HTTP, with its outcome.

Each test asserts what the user gets (rows, errors) and what the server saw (its request count),
so that a fault is never "handled" by silently losing rows or by paying for a request twice.
Clients use a tiny backoff and the server tiny ``Retry-After`` values to keep the suite fast.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import datasets
import pytest
import requests
from datasets import Dataset
from helpers import MODEL_ID, PROMPT, assert_complete, make_client, qa, run_expand
from helpers import group_by_seed as by_seed

from synth_datasets import ResponseFormatError, SynthError, SynthMapper
from synth_datasets.testing import GENERATE_PATH, ReferenceServer

seeds = qa
client_for = make_client
run = partial(run_expand, request_size=4)


def statuses(server: ReferenceServer) -> dict[str, int]:
    return dict(server.stats()["by_status"])


def n_requests(ds: Dataset, request_size: int) -> int:
    return -(-len(ds) // request_size)


# --------------------------------------------------------------------------------------------
# Status faults: 429 with Retry-After, 5xx, non-retryable 4xx


def test_429_burst_waits_retry_after_then_completes(
    ref_server: ReferenceServer, cache_dir: Path
) -> None:
    ds = seeds(4)
    ref_server.set_faults(script=[429, 429, 429, 429], retry_after=0.15)
    mapper = SynthMapper(
        prompt=PROMPT,
        multiplier=2,
        model_id=MODEL_ID,
        client=client_for(ref_server, max_retries=5),
        cache_dir=cache_dir,
    )
    started = time.monotonic()
    out = ds.map(mapper, **mapper.map_kwargs(ds))
    elapsed = time.monotonic() - started
    assert_complete(out, ds, 2)
    assert statuses(ref_server) == {"429": 4, "200": 1}
    assert ref_server.stats()["requests"] == 5
    assert elapsed >= 4 * 0.15  # each Retry-After was honoured, not the 10 ms backoff
    assert mapper.stats.retries == 4 and mapper.stats.requests_sent == 1


def test_retry_after_is_capped(ref_server: ReferenceServer, cache_dir: Path) -> None:
    ds = seeds(4)
    ref_server.set_faults(script=[429, 503], retry_after=120)
    client = client_for(ref_server, retry_after_max=0.05)
    started = time.monotonic()
    out = run(ds, client, cache_dir)
    assert time.monotonic() - started < 10
    assert_complete(out, ds, 2)
    assert ref_server.stats()["requests"] == 3


def test_random_5xx_are_retried_until_every_request_succeeds(
    ref_server: ReferenceServer, cache_dir: Path
) -> None:
    ds = seeds(48)
    ref_server.set_faults(rate_500=0.1, rate_502=0.1, rate_503=0.1, retry_after=0.01, seed=7)
    out = run(ds, client_for(ref_server, max_retries=10), cache_dir, max_concurrency=4)
    assert_complete(out, ds, 2)
    seen = statuses(ref_server)
    failures = seen.get("500", 0) + seen.get("502", 0) + seen.get("503", 0)
    assert failures > 0
    assert seen["200"] == n_requests(ds, 4)  # every request paid for exactly once
    assert ref_server.stats()["requests"] == seen["200"] + failures


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_persistent_status_gives_error_rows_after_the_retry_budget(
    ref_server: ReferenceServer, cache_dir: Path, status: Any
) -> None:
    ds = seeds(8)
    ref_server.set_faults(script=[status] * 3, retry_after=0.01)
    out = run(
        ds,
        client_for(ref_server, max_retries=2),
        cache_dir,
        max_concurrency=1,
        on_error="keep",
    )
    failed = [r for r in out if r["error"] is not None]
    assert [r["source_index"] for r in failed] == [0, 1, 2, 3]  # the first request's seeds
    for row in failed:
        assert row["error"].startswith(f"request: {status} from 127.0.0.1")
        assert "seed rows 0-3" in row["error"]
        assert row["q"] is None and row["a"] is None and row["generated_raw"] is None
        assert row["original"] == ds[row["source_index"]]
    assert len(out) == 4 + 4 * 2
    assert ref_server.stats()["requests"] == 3 + 1  # 1 try + 2 retries, then the second request


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 422])
def test_other_4xx_are_never_retried(
    ref_server: ReferenceServer, cache_dir: Path, status: Any
) -> None:
    ds = seeds(8)
    ref_server.set_faults(script=[status])
    out = run(
        ds, client_for(ref_server, max_retries=5), cache_dir, max_concurrency=1, on_error="keep"
    )
    errors = [r["error"] for r in out if r["error"] is not None]
    assert len(errors) == 4 and all(e.startswith(f"request: {status} ") for e in errors)
    assert ref_server.stats()["requests"] == 2  # one per request, the failing one not retried


def test_413_says_which_limit_to_lower(
    ref_server: ReferenceServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from synth_datasets import SynthClient
    from synth_datasets.cli import main as cli_main

    examples = [{"q": "x" * 100}]
    size = len(
        SynthClient.build_body(model_id=MODEL_ID, prompt=PROMPT, examples=examples, multiplier=2)
    )
    ref_server.set_faults(script=[413, 413])
    with pytest.raises(SynthError) as info:
        client_for(ref_server).generate(
            model_id=MODEL_ID, prompt=PROMPT, examples=examples, multiplier=2
        )
    assert info.value.status_code == 413
    assert f"set max_request_bytes below this body's {size} bytes" in str(info.value)
    monkeypatch.setenv("COLLINEAR_API_KEY", ref_server.token)
    source = tmp_path / "seeds.jsonl"
    source.write_text(json.dumps(examples[0]) + "\n")
    args = ["expand", str(source), "--prompt", PROMPT, "--model-id", MODEL_ID, "--multiplier"]
    args += ["2", "--base-url", ref_server.url, "--cache-dir", str(tmp_path / "cache")]
    assert cli_main(args) == 1
    last = capsys.readouterr().err.rstrip("\n").rsplit("\n", 1)[-1]
    assert f"set --max-request-bytes below this body's {size} bytes" in last, last
    assert ref_server.stats()["by_status"] == {"413": 2}  # each sent once


# --------------------------------------------------------------------------------------------
# Broken bodies and timeouts


def test_connection_dropped_mid_body_is_retried(
    ref_server: ReferenceServer, cache_dir: Path
) -> None:
    ds = seeds(4)
    ref_server.set_faults(script=["drop", "drop"])
    out = run(ds, client_for(ref_server), cache_dir)
    assert_complete(out, ds, 2)
    assert statuses(ref_server) == {"drop": 2, "200": 1}


def test_connection_dropped_every_time_gives_error_rows(
    ref_server: ReferenceServer, cache_dir: Path
) -> None:
    ds = seeds(4)
    ref_server.set_faults(rate_drop=1.0)
    out = run(ds, client_for(ref_server, max_retries=2), cache_dir, on_error="keep")
    assert len(out) == 4
    for row in out:
        assert row["error"].startswith("request: the answer from 127.0.0.1")
        assert "broke off" in row["error"] and row["generated_raw"] is None
    assert statuses(ref_server) == {"drop": 3}
    # Nothing failed was cached: once the server behaves, a rerun completes.
    ref_server.set_faults(rate_drop=0.0)
    assert_complete(run(ds, client_for(ref_server), cache_dir, on_error="keep"), ds, 2)
    assert ref_server.stats()["requests"] == 4


@pytest.mark.parametrize("word", ["hang", "stall"])
def test_read_timeout_is_retried(ref_server: ReferenceServer, cache_dir: Path, word: Any) -> None:
    """``hang``: nothing for 30 s (timeout before the headers); ``stall``: half the body, then
    nothing (timeout mid-body, past the adapter's retries). The client gives up after 2 s."""
    ds = seeds(4)
    ref_server.set_faults(script=[word], hang=30.0)
    client = client_for(ref_server, timeout=(5.0, 2.0))
    started = time.monotonic()
    out = run(ds, client, cache_dir)
    assert time.monotonic() - started < 20  # retried after the read timeout, not after the hang
    assert_complete(out, ds, 2)
    assert statuses(ref_server) == {word: 1, "200": 1}


def test_read_timeout_every_time_gives_error_rows(
    ref_server: ReferenceServer, cache_dir: Path
) -> None:
    ds = seeds(4)
    ref_server.set_faults(latency=30.0)
    client = client_for(ref_server, max_retries=1, timeout=(5.0, 2.0))
    out = run(ds, client, cache_dir, on_error="keep")
    assert len(out) == 4
    assert all("timed out" in r["error"] for r in out)
    assert ref_server.stats()["requests"] == 2


@pytest.mark.parametrize("framing", ["json", "chunked"])
def test_truncated_body_is_retried(
    ref_server: ReferenceServer, cache_dir: Path, framing: Any
) -> None:
    ds = seeds(4)
    ref_server.set_faults(script=["truncate", "truncate"], framing=framing)
    out = run(ds, client_for(ref_server), cache_dir)
    assert_complete(out, ds, 2)
    assert statuses(ref_server) == {"truncate": 2, "200": 1}


def test_truncated_every_time_is_a_response_format_error(
    ref_server: ReferenceServer, cache_dir: Path
) -> None:
    ds = seeds(4)
    ref_server.set_faults(rate_truncate=1.0)
    with pytest.raises(SynthError) as info:
        run(ds, client_for(ref_server, max_retries=2), cache_dir)
    assert isinstance(info.value, ResponseFormatError)
    assert "truncated" in str(info.value) and info.value.seed_indices == [0, 1, 2, 3]
    assert statuses(ref_server) == {"truncate": 3}


def _is_json(text: bytes) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _truncated_stream(server: ReferenceServer, example: dict[str, Any]) -> bytes:
    """What the server sends for one example when it truncates the answer (plain requests)."""
    server.set_faults(script=["truncate"])
    answer = requests.post(
        server.url + GENERATE_PATH,
        headers={"Authorization": f"Bearer {server.token}"},
        json={"model_id": MODEL_ID, "multiplier": 2, "examples": [example], "prompt": PROMPT},
        timeout=10,
    )
    server.reset_stats()
    return answer.content


def _inside_an_item(body: bytes) -> bool:
    last = body.rsplit(b"\n", 1)[-1]
    return b"{" in last and not _is_json(last.removeprefix(b"data: "))


def _inside_a_field_line(body: bytes) -> bool:
    """An event stream cut in "data: " or a field name: mid-event, yet no JSON is cut."""
    last = body.rsplit(b"\n", 1)[-1]
    return bool(last) and b"{" not in last


def _at_a_line_boundary(body: bytes) -> bool:
    """An NDJSON answer cut to exactly its first whole line (of two)."""
    return body.count(b"\n") == 1 and body.endswith(b"\n")


def _seed_cut(
    server: ReferenceServer, framing: str, where: Callable[[bytes], bool]
) -> dict[str, Any] | None:
    """A one-row seed whose truncated answer (``framing``) is cut ``where`` wanted."""
    server.set_faults(framing=framing)
    for n in range(1, 80):
        candidate = {"q": "word " * n}
        if where(_truncated_stream(server, candidate)):
            return candidate
    return None


@pytest.mark.parametrize(
    ("framing", "where"),
    [
        ("sse", _inside_an_item),
        ("ndjson", _inside_an_item),
        ("sse", _inside_a_field_line),
        ("ndjson", _at_a_line_boundary),
    ],
)
def test_the_server_cuts_streams_everywhere(
    ref_server: ReferenceServer, framing: Any, where: Any
) -> None:
    # The premise of the truncation tests below: each kind of cut happens.
    assert _seed_cut(ref_server, framing, where) is not None


@pytest.mark.parametrize("framing", ["sse", "ndjson"])
def test_truncated_stream_ending_inside_an_item_is_retried(
    ref_server: ReferenceServer, cache_dir: Path, framing: Any
) -> None:
    example = _seed_cut(ref_server, framing, _inside_an_item)
    assert example is not None
    ref_server.set_faults(script=["truncate"], framing=framing)
    out = run(Dataset.from_list([example]), client_for(ref_server), cache_dir, request_size=1)
    assert len(out) == 2 and all(r["error"] is None for r in out)
    assert statuses(ref_server) == {"truncate": 1, "200": 1}


def test_truncated_event_stream_ending_mid_event_is_retried(
    ref_server: ReferenceServer, cache_dir: Path
) -> None:
    example = _seed_cut(ref_server, "sse", _inside_a_field_line)
    assert example is not None
    ref_server.set_faults(script=["truncate"], framing="sse")
    out = run(Dataset.from_list([example]), client_for(ref_server), cache_dir, request_size=1)
    assert len(out) == 2 and all(r["error"] is None for r in out)
    assert statuses(ref_server) == {"truncate": 1, "200": 1}


def test_stream_cut_at_an_item_boundary_is_not_cached_as_final(
    ref_server: ReferenceServer, cache_dir: Path
) -> None:
    example = _seed_cut(ref_server, "ndjson", _at_a_line_boundary)
    assert example is not None
    ds = Dataset.from_list([example])
    ref_server.set_faults(script=["truncate"], framing="ndjson")
    first = run(ds, client_for(ref_server), cache_dir, request_size=1, on_error="keep")
    assert 1 <= len(first) <= 2  # one generation seen, unless the client asked again at once
    ref_server.set_faults(script=[])
    again = run(ds, client_for(ref_server), cache_dir, request_size=1, on_error="keep")
    assert len(again) == 2 and all(r["error"] is None for r in again)


def test_statuses_and_broken_bodies_share_one_retry_budget(
    ref_server: ReferenceServer, cache_dir: Path
) -> None:
    ds = seeds(4)
    ref_server.set_faults(script=[500, "drop", 500, "drop", 500, "drop"], retry_after=0.01)
    with pytest.raises(SynthError):
        run(ds, client_for(ref_server, max_retries=1), cache_dir)
    assert ref_server.stats()["requests"] <= 2


# --------------------------------------------------------------------------------------------
# Framing and item faults


@pytest.mark.parametrize("framing", ["chunked", "sse", "ndjson"])
def test_framings_give_the_same_dataset(
    ref_server: ReferenceServer, tmp_path: Path, framing: Any
) -> None:
    ds = seeds(12)
    client = client_for(ref_server)
    plain = run(ds, client, tmp_path / "plain")
    ref_server.set_faults(framing=framing)
    framed = run(ds, client, tmp_path / framing)
    assert_complete(framed, ds, 2)
    assert framed.to_list() == plain.to_list()
    assert ref_server.stats()["requests"] == 2 * n_requests(ds, 4)


def test_fenced_and_wrapped_generated_are_recovered_exactly(
    ref_server: ReferenceServer, tmp_path: Path
) -> None:
    ds = seeds(24)
    client = client_for(ref_server)
    clean = run(ds, client, tmp_path / "clean", multiplier=3)
    ref_server.set_faults(rate_fenced=0.4, rate_wrapped=0.4, seed=11)
    faulty = run(ds, client, tmp_path / "faulty", multiplier=3)
    raws = faulty["generated_raw"]
    assert any("```" in r for r in raws) and any("Here is the result" in r for r in raws)
    assert any('"generated_data"' in r for r in raws)
    columns = ["q", "a", "source_index", "original", "error"]
    assert faulty.select_columns(columns).to_list() == clean.select_columns(columns).to_list()


def malformed_run(
    server: ReferenceServer, tmp_path: Path, *, long_answers: bool
) -> tuple[Dataset, Dataset]:
    """A clean run and one where half the `generated` texts are broken."""
    ds = seeds(40, long_answers=long_answers)
    client = client_for(server)
    clean = run(ds, client, tmp_path / "clean")
    server.set_faults(rate_malformed=0.5, seed=3)
    faulty = run(ds, client, tmp_path / "faulty", on_error="keep")
    return clean, faulty


def test_malformed_generated_rows_keep_their_text_and_reason(
    ref_server: ReferenceServer, tmp_path: Path
) -> None:
    clean, faulty = malformed_run(ref_server, tmp_path, long_answers=False)
    assert len(faulty) == len(clean)  # one row per item, broken or not
    for good, row in zip(clean, faulty, strict=True):
        assert row["source_index"] == good["source_index"]
        assert row["original"] == good["original"] and row["generated_raw"]
        if row["error"] is not None:
            assert row["error"].startswith(("parse:", "missing:")), row["error"]
            assert row["q"] is None or row["a"] is None
    repaired = sum(r["error"] is None for r in faulty)
    assert len(faulty) // 2 <= repaired < len(faulty)  # most are repaired, not all
    # A broken `generated` text is the row's problem, not the request's: nothing was retried.
    assert ref_server.stats()["requests"] == 2 * 10


def test_malformed_generated_never_yields_a_wrong_value(
    ref_server: ReferenceServer, tmp_path: Path
) -> None:
    """A row is either exactly what a clean run gives, or null with a ``parse``/``missing``
    error; never a different value with no error."""
    # Long last values: a text cut in half usually ends inside one.
    clean, faulty = malformed_run(ref_server, tmp_path, long_answers=True)
    wrong = [
        row["generated_raw"]
        for good, row in zip(clean, faulty, strict=True)
        if row["error"] is None and (row["q"], row["a"]) != (good["q"], good["a"])
    ]
    assert wrong == []


def test_shuffled_items_are_linked_to_their_seeds(
    ref_server: ReferenceServer, tmp_path: Path
) -> None:
    ds = seeds(16)
    client = client_for(ref_server)
    clean = by_seed(run(ds, client, tmp_path / "clean", request_size=8, multiplier=3))
    ref_server.set_faults(shuffle=True, seed=5)
    out = run(ds, client, tmp_path / "shuffled", request_size=8, multiplier=3)
    assert_complete(out, ds, 3)
    shuffled = by_seed(out)
    assert {i: sorted(r["generated_raw"] for r in rows) for i, rows in shuffled.items()} == {
        i: sorted(r["generated_raw"] for r in rows) for i, rows in clean.items()
    }
    # Server order within a seed: the shuffle shows through somewhere.
    assert any(
        [r["generated_raw"] for r in shuffled[i]] != [r["generated_raw"] for r in clean[i]]
        for i in clean
    )


def test_fewer_items_than_targeted(ref_server: ReferenceServer, cache_dir: Path) -> None:
    ds = seeds(32)
    ref_server.set_faults(rate_shortfall=0.6, seed=2)
    out = run(ds, client_for(ref_server), cache_dir, multiplier=2)
    groups = by_seed(out)
    assert set(groups) == set(range(32))  # every seed accounted for
    short = [i for i, rows in groups.items() if rows[0]["error"] is not None]
    assert short  # some seeds got nothing back
    for i, rows in groups.items():
        if i in short:
            assert len(rows) == 1 and rows[0]["error"].startswith("shortfall:")
            assert rows[0]["generated_raw"] is None and rows[0]["q"] is None
            assert rows[0]["original"] == ds[i]
        else:
            assert 1 <= len(rows) <= 2 and all(r["error"] is None for r in rows)
    returned = sum(r is not None for r in out["generated_raw"])
    assert returned == ref_server.stats()["generations"] < 64  # each item is one row
    assert ref_server.stats()["requests"] == n_requests(ds, 4)


def test_more_items_than_targeted(ref_server: ReferenceServer, cache_dir: Path) -> None:
    ds = seeds(16)
    ref_server.set_faults(rate_extra=0.5, seed=4)
    out = run(ds, client_for(ref_server), cache_dir, multiplier=2)
    counts = Counter(out["source_index"])
    assert set(counts) == set(range(16)) and set(counts.values()) == {2, 3}
    assert all(r["error"] is None and r["original"] == ds[r["source_index"]] for r in out)
    assert len(out) == ref_server.stats()["generations"]


def test_altered_original_is_never_linked(ref_server: ReferenceServer, cache_dir: Path) -> None:
    ds = seeds(24)
    ref_server.set_faults(rate_alter_original=0.4, seed=9)
    out = run(ds, client_for(ref_server), cache_dir, multiplier=2)
    unlinked = [r for r in out if r["source_index"] is None]
    assert unlinked
    for row in unlinked:
        assert row["error"].startswith("unlinked:") and row["original"] is None
        assert row["generated_raw"]  # what the server said is kept
    groups = by_seed(out)
    assert set(groups) - {None} == set(range(24))
    for i in range(24):
        for row in groups[i]:
            assert row["original"] == ds[i]
            if row["generated_raw"] is None:
                assert row["error"].startswith("shortfall:")
    assert sum(r is not None for r in out["generated_raw"]) == ref_server.stats()["generations"]


def test_server_concurrency_cap(ref_server: ReferenceServer, cache_dir: Path) -> None:
    ds = seeds(64)
    ref_server.set_faults(max_concurrency=2, latency=0.02, retry_after=0.02)
    out = run(ds, client_for(ref_server, max_retries=20), cache_dir, max_concurrency=8)
    assert_complete(out, ds, 2)
    stats = ref_server.stats()
    assert stats["max_in_flight"] <= 2
    assert stats["by_status"]["200"] == n_requests(ds, 4)
    assert stats["by_status"]["429"] > 0
    assert stats["requests"] == stats["by_status"]["200"] + stats["by_status"]["429"]


# --------------------------------------------------------------------------------------------
# Everything at once: a 20 % mixed fault rate over 500 seeds

MIXED = {
    "rate_429": 0.04,
    "rate_500": 0.03,
    "rate_502": 0.03,
    "rate_503": 0.03,
    "rate_drop": 0.035,
    "rate_truncate": 0.035,
    "retry_after": 0.01,
    "latency_jitter": 0.01,
}
ITEM_FAULTS = {
    "rate_malformed": 0.05,
    "rate_fenced": 0.05,
    "rate_wrapped": 0.05,
    "rate_shortfall": 0.05,
    "rate_extra": 0.05,
    "rate_alter_original": 0.05,
    "shuffle": True,
}


@pytest.mark.slow
def test_mixed_faults_keep_accounts_for_every_seed(
    ref_server: ReferenceServer, cache_dir: Path
) -> None:
    ds = seeds(500)
    ref_server.set_faults(seed=13, **MIXED, **ITEM_FAULTS)
    out = run(
        ds,
        client_for(ref_server, max_retries=1),
        cache_dir,
        request_size=8,
        max_concurrency=16,
        on_error="keep",
    )
    groups = by_seed(out)
    assert set(groups) - {None} == set(range(500))  # every seed: its rows or its error row
    failed_seeds = set()
    for i in range(500):
        rows = groups[i]
        assert all(r["original"] == ds[i] for r in rows)
        if any(r["error"] and r["error"].startswith("request:") for r in rows):
            assert len(rows) == 1 and rows[0]["generated_raw"] is None
            failed_seeds.add(i)
        elif rows[0]["generated_raw"] is None:
            assert len(rows) == 1 and rows[0]["error"].startswith("shortfall:")
        else:
            assert all(r["generated_raw"] is not None for r in rows)
    stats = ref_server.stats()
    # Every returned item is exactly one row; every answered request was sent once.
    assert sum(r is not None for r in out["generated_raw"]) == stats["generations"]
    failed_requests = {i // 8 for i in failed_seeds}
    assert stats["by_status"]["200"] + len(failed_requests) == n_requests(ds, 8)
    faults = stats["requests"] - stats["by_status"]["200"]
    assert faults >= 0.05 * stats["requests"]  # the faults really happened (about 20 %)


@pytest.mark.slow
def test_mixed_faults_raise_then_reruns_complete_without_paying_twice(
    ref_server: ReferenceServer, tmp_path: Path
) -> None:
    ds = seeds(500)
    client = client_for(ref_server, max_retries=1)
    clean = run(ds, client, tmp_path / "clean", request_size=8, max_concurrency=16)
    ref_server.reset_stats()
    ref_server.set_faults(seed=21, **MIXED)
    cache = tmp_path / "faulty"
    # The first run without retries: one of its 63 requests fails for sure (1 - 0.8 ** 63).
    impatient = client_for(ref_server, max_retries=0)
    reruns = 0
    while True:
        try:
            out = run(ds, impatient if reruns == 0 else client, cache, request_size=8)
            break
        except SynthError as exc:
            assert exc.seed_indices and "seed rows" in str(exc)
            reruns += 1
            assert reruns <= 25, "the reruns do not converge"
    assert reruns >= 1  # the faults did stop a run
    assert out.to_list() == clean.to_list()
    stats = ref_server.stats()
    # No request that succeeded was ever sent again: one 200 per request, across every rerun.
    assert stats["by_status"]["200"] == n_requests(ds, 8)
    assert stats["requests"] == n_requests(ds, 8) + sum(
        n for key, n in stats["by_status"].items() if key != "200"
    )
    # And one more run is served from the cache alone.
    ref_server.reset_stats()
    datasets.disable_caching()
    try:
        assert run(ds, client, cache, request_size=8).to_list() == clean.to_list()
    finally:
        datasets.enable_caching()
    assert ref_server.stats()["requests"] == 0
