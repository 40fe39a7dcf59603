"""expand / SynthMapper through real HTTP against the reference server."""

from __future__ import annotations

import datetime as dt
import json
from functools import partial

import datasets
import pytest
from datasets import Dataset, Features, Value
from helpers import MODEL_ID, assert_complete, conversations, make_client, qa, run_expand

from synth_datasets import (
    ConfigurationError,
    ServerError,
    SynthClient,
    SynthMapper,
    expand,
    get_provenance,
)

run = partial(run_expand, prompt="More like these.", multiplier=4)


def assert_linked(out: Dataset, seeds: Dataset, multiplier: int, columns: list[str]) -> None:
    assert_complete(out, seeds, multiplier, columns)


def test_three_examples_times_four(ref_server, ref_client, cache_dir):
    seeds = qa(3)
    out = run(seeds, ref_client, cache_dir)
    assert len(out) == 12
    assert out.column_names == ["q", "a", "source_index", "original", "generated_raw", "error"]
    assert_linked(out, seeds, 4, ["q", "a"])
    assert all(row["q"] != seeds[row["source_index"]]["q"] for row in out)
    assert ref_server.stats()["requests"] == 1


def test_shuffled_items_still_linked(ref_server, ref_client, cache_dir):
    ref_server.set_faults(shuffle=True)
    seeds = qa(8)
    out = run(seeds, ref_client, cache_dir, request_size=8)
    assert_linked(out, seeds, 4, ["q", "a"])


def test_duplicate_examples_share_items(ref_client, cache_dir, ref_server):
    ref_server.set_faults(shuffle=True)
    seeds = Dataset.from_list([{"q": "same"}, {"q": "other"}, {"q": "same"}])
    out = run(seeds, ref_client, cache_dir, multiplier=2)
    assert sorted(out["source_index"]) == [0, 0, 1, 1, 2, 2]
    assert all(r["error"] is None for r in out)


def test_malformed_and_fenced_generated(ref_server, ref_client, cache_dir):
    ref_server.set_faults(rate_malformed=0.5, rate_fenced=0.5, seed=3)
    seeds = qa(16)
    out = run(seeds, ref_client, cache_dir)
    assert len(out) == 64
    for row in out:
        assert row["generated_raw"]
        if row["error"] is None:
            assert isinstance(row["q"], str) and isinstance(row["a"], str)
        else:
            assert row["error"].startswith(("parse:", "missing:", "type:"))
            assert row["q"] is None or row["a"] is None
    # Repair and unfencing recover most of them.
    assert sum(r["error"] is None for r in out) >= 48
    assert sum("```" in r["generated_raw"] for r in out) > 0


@pytest.mark.parametrize("iterable", [False, True])
def test_mapper_counts_the_parse_and_type_errors_its_rows_carry(ref_server, ref_client, iterable):
    # Small map batches, most answers clean, some malformed or altered.
    ref_server.set_faults(rate_malformed=0.05, rate_alter_original=0.03, seed=4)
    seeds = qa(64)
    source = seeds.to_iterable_dataset() if iterable else seeds
    mapper = SynthMapper(
        prompt="p",
        multiplier=4,
        model_id=MODEL_ID,
        client=ref_client,
        cache=False,
        request_size=4,
        requests_per_map_batch=1,
    )
    out = list(source.map(mapper, **mapper.map_kwargs(source)))
    errors = [r["error"] or "" for r in out]
    stats = mapper.stats
    assert stats.parse_errors == sum("parse:" in e for e in errors) > 0
    assert stats.cast_errors == sum(("missing:" in e or "type:" in e) for e in errors)
    assert stats.unlinked == sum(e.startswith("unlinked:") for e in errors) > 0
    assert stats.returned == len(out) - stats.empty_seeds
    clean = [r for r in out if r["error"] is None]
    assert len(clean) > 200 and all(isinstance(r["q"], str) and r["a"] for r in clean)


def test_nested_conversation_keeps_features(ref_client, cache_dir):
    seeds = Dataset.from_list(conversations(3))
    out = run(seeds, ref_client, cache_dir, columns=["conv_prefix", "response"])
    assert out.features["conv_prefix"] == seeds.features["conv_prefix"]
    assert out.features["response"] == seeds.features["response"]
    assert out.features["topic"] == Value("string")
    assert out.column_names[:3] == ["conv_prefix", "response", "topic"]
    for row in out:
        assert row["topic"] == seeds[row["source_index"]]["topic"]
        assert row["conv_prefix"][0]["role"] == "user"
        assert row["response"]["role"] == "assistant"
        assert row["error"] is None


def test_type_mismatch_becomes_null_with_reason(ref_client, cache_dir):
    seeds = qa(2)
    feats = Features({"q": Value("string"), "a": Value("int64")})
    out = run(seeds, ref_client, cache_dir, generated_features=feats, multiplier=1)
    assert out.features["a"] == Value("int64")
    for row in out:
        assert row["a"] is None and isinstance(row["q"], str)
        assert row["error"].startswith("type: a: expected an integer")


def test_missing_key_and_extra_keys(ref_client, cache_dir):
    seeds = qa(2)
    feats = Features({"q": Value("string"), "z": Value("string")})
    out = run(seeds, ref_client, cache_dir, generated_features=feats, multiplier=1)
    assert out.column_names[:2] == ["q", "z"]
    for row in out:
        assert row["z"] is None and isinstance(row["q"], str)
        assert "missing: no 'z'" in row["error"]
        assert "a" in json.loads(row["generated_raw"])  # the extra key stays in the raw text


def test_iterable_dataset_path(ref_server, ref_client, cache_dir):
    seeds = qa(10)
    out = run(seeds.to_iterable_dataset(), ref_client, cache_dir, request_size=4)
    assert isinstance(out, datasets.IterableDataset)
    assert ref_server.stats()["requests"] == 0  # lazy
    rows = list(out)
    assert len(rows) == 40
    assert sorted({r["source_index"] for r in rows}) == list(range(10))
    assert ref_server.stats()["requests"] == 3
    assert get_provenance(out)["multiplier"] == 4


def test_iterable_dataset_without_features(ref_client, cache_dir):
    def rows():
        for i in range(5):
            yield {"q": f"q{i} here", "n": i}

    stream = datasets.IterableDataset.from_generator(rows)
    assert stream.features is None
    out = run(stream, ref_client, cache_dir, columns=["q"], multiplier=2)
    rows = list(out)
    assert len(rows) == 10
    assert {r["n"] for r in rows} == set(range(5))


def test_num_proc_two_with_explicit_key(ref_server, ref_client, cache_dir, monkeypatch):
    monkeypatch.delenv("COLLINEAR_API_KEY", raising=False)
    seeds = qa(16)
    out = run(seeds, ref_client, cache_dir, request_size=4, num_proc=2)
    assert_linked(out, seeds, 4, ["q", "a"])
    assert ref_server.stats()["requests"] == 4


def test_num_proc_two_with_env_key(ref_server, cache_dir, monkeypatch):
    monkeypatch.setenv("COLLINEAR_API_KEY", ref_server.token)
    monkeypatch.setenv("COLLINEAR_BASE_URL", ref_server.url)
    seeds = qa(12)
    out = expand(
        seeds,
        prompt="p",
        multiplier=2,
        model_id=MODEL_ID,
        request_size=3,
        num_proc=2,
        cache_dir=cache_dir,
    )
    assert_linked(out, seeds, 2, ["q", "a"])
    assert ref_server.stats()["requests"] == 4


def test_rerun_sends_nothing_even_after_token_change(ref_server, cache_dir, tmp_path):
    seeds = qa(10)
    seeds.save_to_disk(str(tmp_path / "seeds"))
    on_disk = datasets.load_from_disk(str(tmp_path / "seeds"))
    c1 = SynthClient(ref_server.token, ref_server.url)
    first = run(on_disk, c1, cache_dir, request_size=3)
    assert ref_server.stats()["requests"] == 4
    # Same config, rotated token: the server would refuse it, so any request would fail.
    c2 = SynthClient("sk-rotated-token", ref_server.url, max_retries=0)
    again = run(on_disk, c2, cache_dir, request_size=3)
    assert again.to_list() == first.to_list()
    assert ref_server.stats()["requests"] == 4
    # And with datasets' own map cache out of the picture (in-memory input): our cache answers.
    mapper = SynthMapper(
        prompt="More like these.",
        multiplier=4,
        model_id=MODEL_ID,
        client=c2,
        cache_dir=cache_dir,
        request_size=3,
    )
    out = seeds.map(mapper, **mapper.map_kwargs(seeds))
    assert out.to_list() == first.to_list()
    assert mapper.stats.cache_hits == 4 and mapper.stats.requests_sent == 0
    assert ref_server.stats()["requests"] == 4


def test_map_fingerprint_ignores_token(ref_server, cache_dir):
    seeds = qa(4)
    m1 = SynthMapper(
        prompt="p",
        multiplier=2,
        model_id=MODEL_ID,
        client=SynthClient("sk-one", ref_server.url),
        cache_dir=cache_dir,
    )
    m2 = SynthMapper(
        prompt="p",
        multiplier=2,
        model_id=MODEL_ID,
        client=SynthClient("sk-two", ref_server.url),
        cache_dir=cache_dir,
    )
    k1, k2 = m1.map_kwargs(seeds), m2.map_kwargs(seeds)
    assert k1["new_fingerprint"] == k2["new_fingerprint"]
    m3 = SynthMapper(
        prompt="q",
        multiplier=2,
        model_id=MODEL_ID,
        client=SynthClient("sk-one", ref_server.url),
        cache_dir=cache_dir,
    )
    assert m3.map_kwargs(seeds)["new_fingerprint"] != k1["new_fingerprint"]
    assert "sk-one" not in repr(m1)


def test_cache_off_and_run_id(ref_server, ref_client, cache_dir):
    seeds = qa(4)
    run(seeds, ref_client, cache_dir)
    run(seeds, ref_client, cache_dir, cache=False)
    assert ref_server.stats()["requests"] == 2
    run(seeds, ref_client, cache_dir, run_id="fresh")
    assert ref_server.stats()["requests"] == 3
    run(seeds, ref_client, cache_dir, run_id="fresh")
    assert ref_server.stats()["requests"] == 3


def test_map_recipe_runs_requests_concurrently(ref_server, ref_client, cache_dir):
    ref_server.set_faults(latency=0.2)
    seeds = qa(64)
    mapper = SynthMapper(
        prompt="p",
        multiplier=1,
        model_id=MODEL_ID,
        client=ref_client,
        request_size=2,
        max_concurrency=16,
        cache_dir=cache_dir,
    )
    out = seeds.map(mapper, **mapper.map_kwargs(seeds))
    assert len(out) == 64
    # 32 requests of 0.2 s: sequential would take 6.4 s; 16 at a time about 0.4 s.
    assert ref_server.stats()["max_in_flight"] >= 8


def test_on_error_raise_names_seeds_and_keeps_successes(ref_server, ref_client, cache_dir):
    seeds = qa(12)
    ref_server.set_faults(rate_503=1.0, retry_after=0.01)
    client = SynthClient(ref_server.token, ref_server.url, max_retries=1, backoff_factor=0.01)
    with pytest.raises(ServerError) as info:
        run(seeds, client, cache_dir, request_size=4, max_concurrency=1)
    assert info.value.seed_indices == [0, 1, 2, 3]
    assert "seed rows 0-3" in str(info.value)
    # Half the requests succeed now; the rerun only sends what is missing.
    ref_server.set_faults(rate_503=0.0)
    ref_server.reset_stats()
    out = run(seeds, client, cache_dir, request_size=4)
    assert len(out) == 48 and ref_server.stats()["requests"] == 3
    ref_server.reset_stats()
    run(seeds.select(range(12)), client, cache_dir, request_size=4)
    assert ref_server.stats()["requests"] == 0


def test_on_error_keep_gives_error_rows(ref_server, cache_dir):
    seeds = qa(8)
    ref_server.set_faults(script=[500, 500])
    client = SynthClient(ref_server.token, ref_server.url, max_retries=1, backoff_factor=0.01)
    out = run(seeds, client, cache_dir, request_size=4, max_concurrency=1, on_error="keep")
    errors = [r for r in out if r["error"] is not None]
    assert [r["source_index"] for r in errors] == [0, 1, 2, 3]
    for r in errors:
        assert r["q"] is None and r["generated_raw"] is None
        assert r["error"].startswith("request: 500")
        assert r["original"] == seeds[r["source_index"]]
    assert sum(r["error"] is None for r in out) == 16
    # Failed requests are not cached: a rerun retries them.
    ref_server.reset_stats()
    again = run(seeds, client, cache_dir, request_size=4, on_error="keep")
    assert ref_server.stats()["requests"] == 1
    assert all(r["error"] is None for r in again) and len(again) == 32


def test_unlinked_and_shortfall(ref_server, ref_client, cache_dir):
    ref_server.set_faults(rate_alter_original=0.3, rate_shortfall=0.3, seed=5)
    seeds = qa(16)
    out = run(seeds, ref_client, cache_dir, on_error="keep")
    unlinked = [r for r in out if r["source_index"] is None]
    assert unlinked and all(r["error"].startswith("unlinked:") for r in unlinked)
    assert all(r["original"] is None for r in unlinked)
    linked = [r for r in out if r["source_index"] is not None]
    assert all(r["original"] == seeds[r["source_index"]] for r in linked)
    # Every seed accounted for: rows of its own, or a shortfall row.
    assert {r["source_index"] for r in linked} == set(range(16))


def test_json_safe_examples(ref_client, cache_dir):
    seeds = Dataset.from_list(
        [{"q": "when?", "when": dt.datetime(2024, 5, 1, 12, 30), "day": dt.date(2024, 5, 1)}]
    )
    out = run(seeds, ref_client, cache_dir, multiplier=2)
    assert out[0]["original"] == {"q": "when?", "when": "2024-05-01T12:30:00", "day": "2024-05-01"}
    assert out.features["when"] == seeds.features["when"]


def test_provenance_recorded_and_survives_disk(ref_server, ref_client, cache_dir, tmp_path):
    seeds = qa(3)
    before = seeds.info.description
    out = run(seeds, ref_client, cache_dir, columns=["q"])
    assert seeds.info.description == before
    prov = get_provenance(out)
    assert prov["model_id"] == MODEL_ID and prov["multiplier"] == 4
    assert prov["prompt"] == "More like these." and prov["columns"] == ["q"]
    assert prov["passthrough_columns"] == ["a"] and prov["endpoint_host"] == "127.0.0.1"
    assert prov["source"]["fingerprint"] == seeds._fingerprint
    out.save_to_disk(str(tmp_path / "out"))
    assert get_provenance(datasets.load_from_disk(str(tmp_path / "out"))) == prov
    assert ref_server.token not in json.dumps(prov)


def test_stats_summary(ref_server, ref_client, cache_dir):
    seeds = qa(5)
    mapper = SynthMapper(
        prompt="p",
        multiplier=3,
        model_id=MODEL_ID,
        client=ref_client,
        cache_dir=cache_dir,
        request_size=2,
    )
    seeds.map(mapper, **mapper.map_kwargs(seeds))
    s = mapper.stats
    assert (s.requests_sent, s.cache_hits, s.seeds, s.targeted, s.returned) == (3, 0, 5, 15, 15)
    assert "3 requests sent" in s.summary()


def test_index_column_gives_global_source_index(ref_server, ref_client, cache_dir):
    from datasets.distributed import split_dataset_by_node

    seeds = qa(16)
    whole = run(seeds, ref_client, cache_dir, request_size=4)
    indexed = seeds.add_column("row", list(range(16)))
    shards = [
        run(
            split_dataset_by_node(indexed, rank=r, world_size=2),
            ref_client,
            cache_dir,
            request_size=4,
            index_column="row",
        )
        for r in range(2)
    ]
    merged = datasets.concatenate_datasets(shards)
    assert merged.column_names == whole.column_names  # the index column is neither sent nor kept
    assert merged.to_list() == whole.to_list()
    assert ref_server.stats()["requests"] == 4  # the shards' requests were the whole run's


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"index_column": "nope"}, "not a column"),
        ({"index_column": "q"}, "integers"),
        ({"index_column": "row", "columns": ["q", "row"]}, "never sent"),
    ],
)
def test_index_column_refusals(ref_server, ref_client, cache_dir, kwargs, needle):
    seeds = qa(2).add_column("row", [0, 1])
    with pytest.raises(ConfigurationError, match=needle):
        run(seeds, ref_client, cache_dir, **kwargs)
    assert ref_server.stats()["requests"] == 0


def test_a_null_index_is_refused_before_any_request(ref_server, ref_client, cache_dir):
    seeds = qa(3000).add_column("row", [*range(2500), None, *range(2501, 3000)])
    with pytest.raises(ConfigurationError, match="null at row 2500") as bad:
        run(seeds, ref_client, cache_dir, request_size=4, index_column="row")
    assert bad.value.option == "index_column"
    assert ref_server.stats()["requests"] == 0


@pytest.mark.parametrize("fmt", ["numpy", "pandas", "arrow"])
def test_a_formatted_dataset_is_expanded_and_keeps_its_format(ref_client, cache_dir, fmt):
    seeds = Dataset.from_dict(
        {"q": ["one two", "three four"], "n": [1, 2], "s": [{"a": 1}, {"a": 2}], "l": [[1], [2, 3]]}
    )
    out = run(seeds.with_format(fmt), ref_client, cache_dir, multiplier=2)
    assert out.format["type"] == fmt
    plain = out.with_format(None)
    assert sorted(plain["source_index"]) == [0, 0, 1, 1]
    assert plain["error"] == [None] * 4
    assert [o["n"] for o in plain["original"]] == [1, 1, 2, 2]


def test_the_mapper_refuses_a_formatted_or_empty_dataset(ref_server, ref_client):
    mapper = SynthMapper(client=ref_client, prompt="p", multiplier=2, model_id=MODEL_ID)
    with pytest.raises(ConfigurationError, match=r"formatted as 'numpy'.*with_format"):
        mapper.map_kwargs(qa(2).with_format("numpy"))
    with pytest.raises(ConfigurationError, match="empty"):
        mapper.map_kwargs(qa(2).select([]))
    assert ref_server.stats()["requests"] == 0


def test_json_columns_are_objects_on_both_dataset_kinds(ref_client, cache_dir):
    seeds = Dataset.from_dict({"q": ["x y", "z w"], "meta": [{"a": "hello"}, {"a": "there"}]})
    features = {"q": Value("string"), "meta": datasets.Json()}
    on_disk = run(seeds, ref_client, cache_dir, generated_features=features, multiplier=1)
    stream = run(
        seeds.to_iterable_dataset(),
        ref_client,
        cache_dir,
        generated_features=features,
        multiplier=1,
    )
    rows = list(stream)
    assert [r["meta"] for r in rows] == on_disk["meta"]
    assert all(isinstance(r["meta"], dict) and r["meta"]["a"] for r in rows)


def test_max_request_bytes_splits_requests_under_the_limit(ref_server, ref_client, cache_dir):
    rows = [{"q": f"question {i} " + "x" * 300} for i in range(8)]
    out = run(
        Dataset.from_list(rows),
        ref_client,
        cache_dir,
        multiplier=1,
        request_size=8,
        max_request_bytes=1000,
    )
    assert sorted(out["source_index"]) == list(range(8))
    # ~330 bytes an example: at most two fit with the body around them, so 4 requests, not 1.
    assert ref_server.stats()["requests"] == 4


def test_a_map_batch_raises_only_once_all_its_requests_have_returned(ref_server, cache_dir):
    # One request of the map batch fails at once; the five others answer two seconds later. The
    # failure waits for them, so they are all cached: the rerun sends only the failed request.
    seeds = qa(6)
    options = dict(prompt="p", multiplier=2, model_id=MODEL_ID, cache_dir=cache_dir)
    options |= dict(request_size=1, requests_per_map_batch=6, max_concurrency=6)
    ref_server.set_faults(script=[500] + ["hang"] * 5, hang=2.0)
    with (
        make_client(ref_server, max_retries=0) as failing_client,
        make_client(ref_server) as client,
    ):
        failing = SynthMapper(client=failing_client, **options)  # the clients give options only
        rerun = SynthMapper(client=client, **options)
    with pytest.raises(ServerError, match="500") as raised:
        seeds.map(failing, **failing.map_kwargs(seeds))
    assert len(raised.value.seed_indices) == 1
    ref_server.set_faults(script=[])
    out = seeds.map(rerun, **rerun.map_kwargs(seeds))
    assert (rerun.stats.requests_sent, rerun.stats.cache_hits) == (1, 5)
    failing.close()
    rerun.close()
    assert_complete(out, seeds, 2)


def test_a_cancelled_map_batch_sends_no_request_it_had_not_started(ref_server, ref_client):
    # Map batch 0 fails before it sends anything (a null index: an IterableDataset's is found only
    # there); datasets then cancels batch 1, whose ten requests wait for two threads, each busy
    # with a request answered a second later.
    seeds = qa(20).add_column("idx", [None, *range(1, 20)]).to_iterable_dataset()
    ref_server.set_faults(latency=1.0)
    mapper = SynthMapper(
        prompt="p",
        multiplier=2,
        model_id=MODEL_ID,
        client=ref_client,
        cache=False,
        index_column="idx",
        request_size=1,
        requests_per_map_batch=10,
        max_concurrency=2,
    )
    with pytest.raises(ConfigurationError, match="null at row 0"):
        list(seeds.map(mapper, **mapper.map_kwargs(seeds)))
    mapper.close()  # waits for what its threads still run or have queued
    assert ref_server.stats()["requests"] == 2  # the two started; the eight queued never went
