"""Budgets (max_requests, max_generations) through the reference server: what reached the
server, the rows written, what the run records about what it left out, and the rerun that
continues from the cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from datasets import Dataset
from helpers import MODEL_ID, PROMPT, make_client, qa, run_expand, sorted_by_seed

from synth_datasets import ConfigurationError, SynthMapper, expand, get_provenance
from synth_datasets.budget import partial_message
from synth_datasets.cache import RequestCache
from synth_datasets.testing import ReferenceServer

N_SEEDS = 20
REQUEST_SIZE = 2  # 10 requests of 2 seed rows, multiplier 2: 4 generations a request


def budget_run(server: ReferenceServer, cache_dir: Path, **kw: Any) -> Dataset:
    kw.setdefault("request_size", REQUEST_SIZE)
    kw.setdefault("max_concurrency", 4)
    with make_client(server) as client:
        out = run_expand(qa(N_SEEDS), client, cache_dir, **kw)
    assert isinstance(out, Dataset)
    return out


def partial(ds: Dataset) -> Any:
    return (get_provenance(ds) or {})["partial"]


def test_a_run_stops_at_max_requests_and_a_rerun_continues_from_the_cache(
    ref_server: ReferenceServer, cache_dir: Path, tmp_path: Path
) -> None:
    ref_server.set_faults(latency=0.05)  # several requests in flight when the budget is reached
    first = budget_run(ref_server, cache_dir, max_requests=3)
    assert ref_server.stats()["requests"] == 3
    # The rows of the 3 requests sent, none for the seeds never asked (no error rows for them).
    assert len(first) == 3 * REQUEST_SIZE * 2
    assert first["error"] == [None] * len(first)
    assert len(set(first["source_index"])) == 3 * REQUEST_SIZE
    assert partial(first) == {
        "stopped_by": "max_requests",
        "limit": 3,
        "requests_sent": 3,
        "generations_sent": 12,
        "requests_not_sent": 7,
        "seed_rows_not_sent": 14,
    }
    assert len(RequestCache(cache_dir)) == 3  # everything received is cached

    # A higher budget: the 3 answered come from the cache, free; 5 more are sent.
    second = budget_run(ref_server, cache_dir, max_requests=5)
    assert ref_server.stats()["requests"] == 8
    assert len(second) == 8 * REQUEST_SIZE * 2
    assert partial(second)["requests_not_sent"] == 2

    # The same budget again: the 2 left fit, the run is whole and equals an uninterrupted one.
    third = budget_run(ref_server, cache_dir, max_requests=5)
    assert ref_server.stats()["requests"] == 10
    assert partial(third) is None
    assert get_provenance(third)["max_requests"] == 5
    clean = budget_run(ref_server, tmp_path / "clean-cache")
    assert sorted_by_seed(third) == sorted_by_seed(clean)


def test_max_generations_sends_only_the_requests_that_fit(
    ref_server: ReferenceServer, cache_dir: Path
) -> None:
    out = budget_run(ref_server, cache_dir, max_generations=10, max_concurrency=1)
    # 4 generations a request: 2 requests (8) fit in 10, a third (12) would not.
    assert ref_server.stats()["requests"] == 2
    assert len(out) == 8
    assert partial(out)["stopped_by"] == "max_generations"
    assert partial(out)["generations_sent"] == 8
    assert partial(out)["seed_rows_not_sent"] == N_SEEDS - 4


def test_answers_from_the_cache_do_not_count_against_the_budget(
    ref_server: ReferenceServer, cache_dir: Path
) -> None:
    budget_run(ref_server, cache_dir)
    assert ref_server.stats()["requests"] == 10
    out = budget_run(ref_server, cache_dir, max_requests=1)
    assert ref_server.stats()["requests"] == 10
    assert len(out) == N_SEEDS * 2
    assert partial(out) is None


def test_a_failed_request_counts_against_the_budget(
    ref_server: ReferenceServer, cache_dir: Path
) -> None:
    ref_server.set_faults(script=[500])
    with make_client(ref_server, max_retries=0) as client:
        out = run_expand(
            qa(N_SEEDS),
            client,
            cache_dir,
            request_size=REQUEST_SIZE,
            max_concurrency=1,
            on_error="keep",
            max_requests=2,
        )
    assert ref_server.stats()["requests"] == 2
    errors = [e for e in out["error"] if e is not None]
    assert len(errors) == REQUEST_SIZE and errors[0].startswith("request: 500")
    assert len(out) == REQUEST_SIZE + REQUEST_SIZE * 2
    assert partial(out)["requests_not_sent"] == 8


def test_a_budget_lets_a_run_past_the_generation_limit_run_up_to_it(
    ref_server: ReferenceServer, cache_dir: Path
) -> None:
    # 20 seed rows x 2 = 40 generations: above the limit, refused before anything is sent ...
    with pytest.raises(ConfigurationError, match="generation_limit is 30"):
        budget_run(ref_server, cache_dir, generation_limit=30)
    assert ref_server.stats()["requests"] == 0
    # ... unless a budget caps what the run can ask for below it.
    out = budget_run(ref_server, cache_dir, generation_limit=30, max_generations=28)
    assert ref_server.stats()["requests"] == 7
    assert partial(out)["requests_not_sent"] == 3
    with pytest.raises(ConfigurationError, match="generation_limit is 30"):
        budget_run(ref_server, cache_dir, generation_limit=30, max_requests=8)


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"max_generations": 3}, "max_generations is 3: one request of 2 seed rows x multiplier 2"),
        ({"max_requests": 0}, "max_requests must be an int >= 1"),
        ({"max_generations": 2.5}, "max_generations must be an int >= 1"),
        ({"max_requests": 4, "num_proc": 2}, "max_requests is counted in one process"),
    ],
)
def test_a_budget_that_cannot_work_is_refused_before_any_request(
    ref_server: ReferenceServer, cache_dir: Path, kwargs: dict[str, Any], needle: str
) -> None:
    with pytest.raises(ConfigurationError, match=needle):
        budget_run(ref_server, cache_dir, **kwargs)
    assert ref_server.stats()["requests"] == 0


def test_the_budget_holds_on_an_iterable_dataset_and_in_a_users_own_map(
    ref_server: ReferenceServer, cache_dir: Path
) -> None:
    with make_client(ref_server) as client:
        common = {"prompt": PROMPT, "multiplier": 2, "model_id": MODEL_ID, "client": client}
        common["request_size"] = REQUEST_SIZE
        lazy = expand(
            qa(N_SEEDS).to_iterable_dataset(), cache_dir=cache_dir, max_requests=2, **common
        )
        assert len(list(lazy)) == 2 * REQUEST_SIZE * 2
        assert ref_server.stats()["requests"] == 2

        mapper = SynthMapper(cache=False, max_requests=3, **common)
        seeds = qa(N_SEEDS)
        out = seeds.map(mapper, **mapper.map_kwargs(seeds))
        mapper.close()
    assert ref_server.stats()["requests"] == 5
    assert len(out) == 3 * REQUEST_SIZE * 2
    assert mapper.stats.requests_sent == 3 and mapper.stats.requests_not_sent == 7
    assert "7 not sent (budget)" in mapper.stats.summary()


def test_the_line_on_what_was_left_out_counts_in_words(
    ref_server: ReferenceServer, cache_dir: Path
) -> None:
    one = budget_run(ref_server, cache_dir, max_requests=19, request_size=1, max_concurrency=1)
    assert partial_message(partial(one)).startswith(
        "stopped at the budget (max_requests=19): 1 request for 1 seed row was not sent"
    )
    more = budget_run(ref_server, cache_dir, max_requests=8, run_id="again", max_concurrency=1)
    assert "2 requests for 4 seed rows were not sent" in partial_message(partial(more))
