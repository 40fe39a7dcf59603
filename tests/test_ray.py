"""expand_ray on a local Ray (2 CPUs) against the reference server; split_dataset_by_node.

Ray starts once for the module (about 10 s); every expansion starts its actors anew (a few
seconds each), so the Ray tests keep to few expansions. The token reaches the workers the
documented way only: ``ray.init(runtime_env={"env_vars": {"COLLINEAR_API_KEY": ...}})``; the
reference servers here use that fixed token (conftest's ``ref_server`` draws a random one, which
a module-wide Ray cannot know).
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pyarrow.parquet as pq
import pytest
from datasets import ClassLabel, Dataset, Features, List, Value, concatenate_datasets
from fakehub import HUB_TOKEN, LFS_PUT_WARNING_FILTER
from helpers import MODEL_ID, conversations, load_script, make_client
from helpers import sorted_by_seed as by_seed

from synth_datasets import ConfigurationError, SynthClient, expand, get_provenance, push_to_hub
from synth_datasets.guard import in_cli_words
from synth_datasets.provenance import from_schema
from synth_datasets.ray import (
    expand_ray,
    from_huggingface,
    to_huggingface,
)
from synth_datasets.testing import Faults, ReferenceServer

# Ray Data's DataContext warns about its own deprecated `use_push_based_shuffle` field each time
# one is built (ray/data/context.py, a DeprecationWarning from module ray.data.context), and the
# suite turns warnings into errors. Only DeprecationWarnings raised from Ray's modules are ignored.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*")

TOKEN = "sk-local-ray-tests-0123456789"
PROMPT = "Write a new conversation like this one."
COLUMNS = ["conv_prefix", "response"]
NOT_RAY: Any = object()  # for checks that refuse before touching the dataset


def seeds(n: int) -> Dataset:
    """Conversations with a passthrough string and a ClassLabel (features must survive Ray)."""
    features = Features(
        {
            "conv_prefix": List({"role": Value("string"), "content": Value("string")}),
            "response": {"role": Value("string"), "content": Value("string")},
            "topic": Value("string"),
            "label": ClassLabel(names=["easy", "hard"]),
        }
    )
    rows = [{**row, "label": i % 2} for i, row in enumerate(conversations(n))]
    return Dataset.from_list(rows, features=features)


@pytest.fixture(scope="module")
def local_ray() -> Iterator[Any]:
    ray = pytest.importorskip("ray", reason="needs the ray extra (part of the dev extra)")
    if ray.is_initialized():
        ray.shutdown()
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="WARNING",
        runtime_env={"env_vars": {"COLLINEAR_API_KEY": TOKEN}},
    )
    context = ray.data.DataContext.get_current()
    bars = context.enable_progress_bars
    context.enable_progress_bars = False
    yield ray
    context.enable_progress_bars = bars
    ray.shutdown()


@pytest.fixture
def server(start_server: Any) -> ReferenceServer:
    return start_server(token=TOKEN)  # type: ignore[no-any-return]


def ray_kwargs(srv: ReferenceServer, cache_dir: Path, **kw: Any) -> dict[str, Any]:
    kw.setdefault("prompt", PROMPT)
    kw.setdefault("multiplier", 3)
    kw.setdefault("model_id", MODEL_ID)
    kw.setdefault("columns", COLUMNS)
    kw.setdefault("request_size", 4)
    kw.setdefault("requests_per_map_batch", 2)  # several blocks, so both actors get work
    kw.setdefault("max_retries", 1)
    kw.setdefault("concurrency", 2)  # actors; reruns use one (each actor is a new process)
    kw.setdefault("backoff_factor", 0.01)
    return {"base_url": srv.url, "cache_dir": cache_dir, **kw}


# -- Ray ------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.filterwarnings(LFS_PUT_WARNING_FILTER)
def test_same_rows_as_expand_and_reruns_from_cache(local_ray, server, tmp_path, fake_hub):
    ds = seeds(22)  # 6 requests of 4, the last one short
    with make_client(server, max_retries=1) as client:
        single = expand(
            ds,
            prompt=PROMPT,
            multiplier=3,
            model_id=MODEL_ID,
            client=client,
            columns=COLUMNS,
            request_size=4,
            cache_dir=tmp_path / "expand-cache",
        )
    assert server.stats()["requests"] == 6

    server.set_faults(latency=0.2)  # long enough for the requests of a block to overlap
    lazy = expand_ray(from_huggingface(ds), **ray_kwargs(server, tmp_path / "ray-cache"))
    # The token is nowhere in what Ray ships to the workers, nor in reprs.
    assert TOKEN.encode() not in local_ray.cloudpickle.dumps(lazy)
    assert TOKEN not in repr(lazy)
    out = to_huggingface(lazy, tmp_path / "ray-parquet")
    stats = server.stats()
    assert stats["requests"] == 12  # the same 6 requests, sent by the actors
    assert stats["max_in_flight"] >= 2  # several requests in flight at once
    server.set_faults(latency=0.0)

    assert out.column_names == single.column_names
    assert out.features == single.features  # ClassLabel, nested lists/structs come back
    assert by_seed(out) == by_seed(single)
    assert out["source_index"] == sorted(out["source_index"])
    assert set(out["source_index"]) == set(range(22))
    assert all(row["error"] is None for row in out)
    provenance = get_provenance(out)
    assert provenance is not None
    assert provenance["engine"]["name"] == "ray"
    assert provenance["multiplier"] == 3 and provenance["request_size"] == 4
    assert provenance["source"]["num_rows"] == 22
    assert provenance["generator"].startswith("synth_datasets-offline/")
    assert TOKEN not in json.dumps(provenance)
    # Ray's parquet files hold the record in their schema; a push of the result has the card.
    for path in (tmp_path / "ray-parquet").glob("*.parquet"):
        assert from_schema(pq.read_schema(path)) == provenance
    push_to_hub(out, "me/ray", token=HUB_TOKEN, allow_offline_data=True)
    body = fake_hub.files("me/ray")["README.md"].decode()
    assert f"| Model | `{MODEL_ID}` |" in body and "| Seed rows in the source | 22 |" in body
    assert "| Generations targeted / returned | 66 / 66 |" in body

    # A rerun of the same seeds is answered from the cache: no request reaches the server.
    again = to_huggingface(
        expand_ray(
            from_huggingface(ds), **ray_kwargs(server, tmp_path / "ray-cache", concurrency=1)
        )
    )
    assert server.stats()["requests"] == 12
    assert by_seed(again) == by_seed(out)

    # Requests are grouped as expand groups them, so expand's cache serves the Ray path too.
    shared = to_huggingface(
        expand_ray(
            from_huggingface(ds), **ray_kwargs(server, tmp_path / "expand-cache", concurrency=1)
        )
    )
    assert server.stats()["requests"] == 12
    assert by_seed(shared) == by_seed(single)


@pytest.mark.slow
def test_on_error_keep_gives_error_rows_and_rerun_fills_them(local_ray, server, tmp_path):
    ds = seeds(16)  # 4 requests of 4
    server.set_faults(script=[500, 500])  # without retries: exactly two requests fail
    kwargs = ray_kwargs(server, tmp_path / "cache", on_error="keep", max_retries=0, concurrency=1)
    out = to_huggingface(expand_ray(from_huggingface(ds), **kwargs))
    assert server.stats()["requests"] == 4

    errors = [row for row in out if row["error"] is not None]
    failed = sorted(row["source_index"] for row in errors)
    assert len(failed) == 8 and len({i // 4 for i in failed}) == 2  # two whole requests
    for row in errors:
        assert row["error"].startswith("request: 500 ")
        assert "seed rows" in row["error"]
        assert row["conv_prefix"] is None and row["response"] is None
        assert row["generated_raw"] is None
        assert row["topic"] == f"t{row['source_index']}"  # passthrough still there
    good = [row for row in out if row["error"] is None]
    assert len(good) == 8 * 3
    assert sorted({row["source_index"] for row in good}) == sorted(set(range(16)) - set(failed))

    # The answered requests were cached: the rerun sends only the two that failed.
    server.set_faults(script=[])
    rerun = to_huggingface(expand_ray(from_huggingface(ds), **kwargs))
    assert server.stats()["requests"] == 6
    assert all(row["error"] is None for row in rerun)
    assert len(rerun) == 16 * 3


@pytest.mark.slow
def test_one_budget_for_all_actors_and_to_huggingface_records_the_partial_run(
    local_ray, server, tmp_path
):
    ds = seeds(40)  # 10 requests of 4, in 5 blocks of 2 requests, on 2 actors
    kwargs = ray_kwargs(server, tmp_path / "cache")
    server.set_faults(latency=0.05)
    out = to_huggingface(expand_ray(from_huggingface(ds), max_requests=3, **kwargs))
    assert server.stats()["requests"] == 3  # the run's budget, not 3 per actor
    assert len(out) == 3 * 4 * 3 and all(row["error"] is None for row in out)
    partial = get_provenance(out)["partial"]
    assert partial["stopped_by"] == "max_requests" and partial["requests_not_sent"] == 7
    assert partial["seed_rows_not_sent"] == 28

    # Without a budget the rerun sends only the 7 requests left; the rows are whole.
    rerun = to_huggingface(expand_ray(from_huggingface(ds), **{**kwargs, "concurrency": 1}))
    assert server.stats()["requests"] == 10
    assert len(rerun) == 40 * 3 and get_provenance(rerun)["partial"] is None


@pytest.mark.slow
def test_on_error_raise_names_the_seed_rows(local_ray, server, tmp_path):
    server.set_faults(script=[500] * 8)
    kwargs = ray_kwargs(
        server, tmp_path / "cache", max_retries=0, requests_per_map_batch=1, concurrency=1
    )
    lazy = expand_ray(from_huggingface(seeds(8)), **kwargs)
    # Ray wraps the worker's ServerError in its own UserCodeException; the message is ours.
    with pytest.raises(Exception, match=r"500 from 127\.0\.0\.1.*\[seed rows \d+-\d+\]"):
        lazy.take_all()


def test_missing_ray_gives_the_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` sees without the extra
    with pytest.raises(ImportError, match=re.escape("pip install 'ray[data]>=2.9'")):
        expand_ray(NOT_RAY, prompt=PROMPT, multiplier=2, model_id=MODEL_ID)


def test_unknown_column_refused_before_the_seeds_run(local_ray):
    with pytest.raises(ConfigurationError, match="unknown column"):
        expand_ray(
            from_huggingface(seeds(3)),
            prompt=PROMPT,
            multiplier=2,
            model_id=MODEL_ID,
            columns=["conv_prefix", "nope"],
        )


def test_a_run_above_the_generation_limit_is_refused_before_any_request(
    local_ray, server, tmp_path
):
    with pytest.raises(
        ConfigurationError, match=r"generation_limit is 10: 4 seed rows x multiplier 3"
    ):
        expand_ray(from_huggingface(seeds(4)), **ray_kwargs(server, tmp_path, generation_limit=10))
    assert server.stats()["requests"] == 0


def test_more_actors_than_the_ceiling_are_refused_before_any_request(local_ray, server, tmp_path):
    """One request in flight each at least: 3 actors would pass a ceiling of 2 together."""
    kwargs = ray_kwargs(server, tmp_path, concurrency=3, concurrency_ceiling=2)
    with pytest.raises(ConfigurationError) as caught:
        expand_ray(from_huggingface(seeds(4)), **kwargs)
    exc = caught.value
    assert str(exc) == (
        "concurrency is 3: 3 actors keep at least one request in flight each, more than "
        "concurrency_ceiling (2) allows; use at most 2 actors or raise concurrency_ceiling"
    )
    # scripts/ray_expand.py's words: its --actors are expand_ray's concurrency.
    assert in_cli_words(str(exc), exc.option, *exc.also) == (
        "--actors is 3: 3 actors keep at least one request in flight each, more than "
        "--concurrency-ceiling (2) allows; use at most 2 actors or raise --concurrency-ceiling"
    )
    assert server.stats()["requests"] == 0


def test_api_key_argument_refused():
    with pytest.raises(ConfigurationError, match="runtime_env"):
        expand_ray(NOT_RAY, prompt=PROMPT, multiplier=2, model_id=MODEL_ID, api_key=TOKEN)


def test_hf_dataset_refused_with_the_conversion_named():
    with pytest.raises(ConfigurationError, match="from_huggingface"):
        expand_ray(cast(Any, seeds(2)), prompt=PROMPT, multiplier=2, model_id=MODEL_ID)


@pytest.mark.slow
def test_actor_without_token_says_how_to_give_it(local_ray, server, tmp_path):
    kwargs = ray_kwargs(server, tmp_path / "cache", concurrency=1)

    # Ray work started from a task inherits its runtime_env: here, one without the token.
    @local_ray.remote(num_cpus=0, runtime_env={"env_vars": {"COLLINEAR_API_KEY": ""}})
    def expand_without_token(ds: Dataset) -> int:
        return len(to_huggingface(expand_ray(from_huggingface(ds), **kwargs)))

    # Ray wraps the actor's ConfigurationError in its own errors; the message is ours.
    message = r"COLLINEAR_API_KEY is not set on the Ray worker on node \w+: give it .*runtime_env"
    with pytest.raises(Exception, match=message):
        local_ray.get(expand_without_token.remote(seeds(2)))
    assert server.stats()["requests"] == 0


def test_to_huggingface_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "old.parquet").write_bytes(b"")
    with pytest.raises(ConfigurationError, match="not empty"):
        to_huggingface(NOT_RAY, tmp_path)


# -- datasets.distributed.split_dataset_by_node ---------------------------------------------------


def expand_on_node(
    ds: Dataset, rank: int, world_size: int, client: SynthClient, cache_dir: Path, **kw: Any
) -> Dataset:
    """What one node runs (scripts/split_by_node.py's recipe): its shard, global index kept.

    A global index column is added before ``split_dataset_by_node`` and named as
    ``index_column``: it becomes ``source_index`` and is neither sent nor kept.
    """
    return load_script("split_by_node.py").expand_shard(
        ds,
        rank=rank,
        world_size=world_size,
        prompt=PROMPT,
        multiplier=3,
        model_id=MODEL_ID,
        client=client,
        columns=COLUMNS,
        cache_dir=cache_dir,
        **kw,
    )


def test_split_dataset_by_node_shards_merge_to_the_same_rows(ref_server, ref_client, tmp_path):
    request_size = 4
    ds = seeds(12)
    single = expand(
        ds,
        prompt=PROMPT,
        multiplier=3,
        model_id=MODEL_ID,
        client=ref_client,
        columns=COLUMNS,
        request_size=request_size,
        cache_dir=tmp_path / "single",
    )
    sent = ref_server.stats()["requests"]

    shards = [
        expand_on_node(
            ds, rank, 2, ref_client, tmp_path / f"node-{rank}", request_size=request_size
        )
        for rank in range(2)
    ]
    assert shards[1]["source_index"][0] == 6  # global, not the shard's own 0
    merged = concatenate_datasets(shards)  # in rank order: still grouped by source_index

    assert merged.column_names == single.column_names
    assert merged.features == single.features
    assert merged["source_index"] == sorted(merged["source_index"])
    assert by_seed(merged) == by_seed(single)
    # Shards of 6 rows are cut into requests [0-3], [4-5] | [6-9], [10-11], not the single
    # run's [0-3], [4-7], [8-11]: other request bodies, so nothing came from a shared cache.
    assert sent == 3
    assert ref_server.stats()["requests"] - sent == 4


def test_split_shards_aligned_to_request_size_reuse_the_single_run_cache(
    ref_server, ref_client, tmp_path
):
    ds = seeds(12)
    cache = tmp_path / "cache"
    expand(
        ds,
        prompt=PROMPT,
        multiplier=3,
        model_id=MODEL_ID,
        client=ref_client,
        columns=COLUMNS,
        request_size=3,
        cache_dir=cache,
    )
    sent = ref_server.stats()["requests"]
    for rank in range(2):
        expand_on_node(ds, rank, 2, ref_client, cache, request_size=3)
    assert ref_server.stats()["requests"] == sent  # same request bodies, all from the cache


@pytest.mark.slow
def test_actors_honour_every_client_option(local_ray, tmp_path):
    """A Ray run waits a server's Retry-After capped by retry_after_max: the actors build their
    client from the same config as expand (they used to drop backoff_max/retry_after_max)."""
    with ReferenceServer(token=TOKEN, faults=Faults(script=[429], retry_after=600)) as srv:
        out = expand_ray(
            from_huggingface(seeds(4)),
            **ray_kwargs(
                srv, tmp_path / "cache", concurrency=1, max_retries=1, retry_after_max=0.2
            ),
        )
        started = time.monotonic()
        result = to_huggingface(out)
        elapsed = time.monotonic() - started
        stats = srv.stats()
    assert stats["by_status"] == {"429": 1, "200": 1}  # one wait, then the answer
    assert result["error"] == [None] * 12
    assert elapsed < 300  # the uncapped wait alone would be 600 s


@pytest.mark.slow
def test_auto_divides_the_ceiling_among_the_actors(local_ray, server, tmp_path):
    """max_concurrency='auto' with a ceiling of 2 on two actors: one request in flight each, so
    never more than 2 at the server, though each actor alone could reach the whole ceiling."""
    server.set_faults(latency=0.2)  # long enough for the actors' requests to overlap
    kwargs = ray_kwargs(
        server, tmp_path / "cache", max_concurrency="auto", concurrency_ceiling=2, concurrency=2
    )
    out = to_huggingface(expand_ray(from_huggingface(seeds(32)), **kwargs))
    assert out["error"] == [None] * 96
    stats = server.stats()
    assert stats["requests"] == 8 and stats["max_in_flight"] <= 2
