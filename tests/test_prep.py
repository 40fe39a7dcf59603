"""Training-data prep helpers: each returns a new Dataset with exactly the rows and columns meant."""

from __future__ import annotations

import pytest
from conftest import MODEL_ID
from datasets import Dataset

from synth_datasets import ConfigurationError, expand, get_provenance
from synth_datasets.prep import (
    MESSAGES_FEATURE,
    drop_duplicates,
    drop_errors,
    drop_lineage,
    duplicate_mask,
    mix_in_seeds,
    to_messages,
)
from synth_datasets.provenance import attach_provenance
from synth_datasets.report import quality_report

STORY = (
    "the lighthouse keeper climbed the stairs every evening to light the lamp and watch the "
    "ships pass along the rocky coast until the morning came again"
)
SEEDS = [
    {
        "conv_prefix": [{"role": "user", "content": f"question {i}"}],
        "response": {"role": "assistant", "content": f"answer {i}"},
        "topic": f"topic {i}",
    }
    for i in range(3)
]


def gen(q: str, a: str, source: int | None, error: str | None = None) -> dict:
    return {
        "conv_prefix": None if error else [{"role": "user", "content": q}],
        "response": None if error else {"role": "assistant", "content": a},
        "topic": SEEDS[source]["topic"] if source is not None else None,
        "source_index": source,
        "original": (
            {k: SEEDS[source][k] for k in ("conv_prefix", "response")}
            if source is not None
            else None
        ),
        "generated_raw": "{}",
        "error": error,
    }


def expanded() -> Dataset:
    rows = [
        gen("how are you", STORY, 0),
        gen("How are  you", STORY, 0),  # exact duplicate of row 0
        gen("x", "y", 0, error="parse: no JSON"),
        gen("x", "y", 1, error="parse: no JSON"),  # same nulls as row 2: not a duplicate
        gen("how are you", STORY.replace("again", "back"), 1),  # near duplicate of row 0
        gen("something else", "entirely", 2),
        gen("question 2", "answer 2", 2),  # a copy of its seed
    ]
    ds = Dataset.from_list(rows)
    attach_provenance(
        ds,
        {
            "generated_columns": ["conv_prefix", "response"],
            "multiplier": 3,
            "columns": ["conv_prefix", "response"],
            "source": {"num_rows": 3},
        },
    )
    return ds


def test_drop_errors():
    ds = expanded()
    out = drop_errors(ds)
    assert len(out) == 5 and all(e is None for e in out["error"])
    assert out.column_names == ds.column_names
    assert get_provenance(out)["multiplier"] == 3  # provenance survives the filter
    plain = Dataset.from_dict({"a": [1]})
    assert drop_errors(plain) is plain


def test_drop_duplicates_exact_and_near_match_the_report():
    ds = expanded()
    exact = drop_duplicates(ds)
    assert len(exact) == 6
    assert exact["source_index"] == [0, 0, 1, 1, 2, 2]  # the first copy stays; error rows stay
    near = drop_duplicates(ds, near=True)
    assert len(near) == 5
    assert [r["content"] for r in near["response"] if r] == [STORY, "entirely", "answer 2"]
    report = quality_report(ds)
    assert report.duplicates == int(duplicate_mask(ds).sum()) == 1
    assert report.near_duplicates == int(duplicate_mask(ds, near=True).sum()) == 2
    assert len(drop_duplicates(ds, near=True, threshold=0.99)) == 6
    # Compared on chosen columns only: every prefix but two is "how are you".
    assert len(drop_duplicates(drop_errors(ds), columns=["conv_prefix"])) == 3
    with pytest.raises(ConfigurationError, match="columns to compare"):
        drop_duplicates(ds, columns=["nope"])


def test_drop_lineage():
    out = drop_lineage(expanded())
    assert out.column_names == ["conv_prefix", "response", "topic"]
    assert len(out) == 7


def test_mix_in_seeds_puts_seeds_first_with_lineage():
    ds = drop_errors(expanded())
    seeds = Dataset.from_list(SEEDS)
    out = mix_in_seeds(ds, seeds)
    assert len(out) == len(ds) + 3
    assert out.features == ds.features
    head = out.select(range(3))
    assert head["source_index"] == [0, 1, 2]
    assert head["generated_raw"] == [None] * 3 and head["error"] == [None] * 3
    assert head["topic"] == ["topic 0", "topic 1", "topic 2"]
    assert head["original"][1] == {
        "conv_prefix": SEEDS[1]["conv_prefix"],
        "response": SEEDS[1]["response"],
    }
    assert head["response"][2] == SEEDS[2]["response"]
    assert out.select(range(3, len(out)))["generated_raw"] == ds["generated_raw"]
    assert get_provenance(out)["mixed_in_seeds"] == 3
    # Seeds first: the generated copy of seed 2 is the duplicate that goes.
    deduped = drop_duplicates(out)
    assert len(deduped) == len(out) - 2
    assert deduped.filter(lambda r: r["response"]["content"] == "answer 2")["generated_raw"] == [
        None
    ]


def test_mix_in_seeds_partial_columns_and_refusals():
    ds = drop_lineage(drop_errors(expanded()))
    seeds = Dataset.from_list([{"conv_prefix": s["conv_prefix"], "extra": 1} for s in SEEDS])
    out = mix_in_seeds(ds, seeds)
    assert out.column_names == ds.column_names  # no lineage columns to fill
    assert out["response"][:3] == [None] * 3 and out["conv_prefix"][0] == SEEDS[0]["conv_prefix"]
    with pytest.raises(ConfigurationError, match="must be in both"):
        mix_in_seeds(ds, seeds, columns=["extra"])
    with pytest.raises(ConfigurationError, match="share no column"):
        mix_in_seeds(ds, Dataset.from_dict({"other": [1]}))


def test_to_messages():
    ds = drop_errors(expanded())
    out = to_messages(ds, keep_columns=["topic"])
    assert sorted(out.column_names) == ["messages", "topic"]
    assert out.features["messages"] == MESSAGES_FEATURE
    assert out[0]["messages"] == [
        {"role": "user", "content": "how are you"},
        {"role": "assistant", "content": STORY},
    ]
    text = Dataset.from_dict({"q": ["hi"], "a": ["hello"]})
    msgs = to_messages(text, prefix_column="q", response_column="a")
    assert msgs.column_names == ["messages"]
    assert msgs[0]["messages"] == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
    ]
    with pytest.raises(ConfigurationError, match="run drop_errors first"):
        to_messages(expanded())
    with pytest.raises(ConfigurationError, match="no column"):
        to_messages(ds, prefix_column="prompt")


def test_chain_on_a_real_expansion(ref_client, cache_dir):
    seeds = Dataset.from_list(SEEDS * 2)
    out = expand(
        seeds,
        prompt="More.",
        multiplier=2,
        model_id=MODEL_ID,
        client=ref_client,
        cache_dir=cache_dir,
        columns=["conv_prefix", "response"],
    )
    # Seeds 0-2 and 3-5 are the same rows, and the reference engine answers alike for them.
    assert quality_report(out).duplicates == 6
    mixed = mix_in_seeds(drop_errors(out), seeds)
    deduped = drop_duplicates(mixed, near=True)
    assert len(deduped) <= len(mixed) - 6 - 3
    assert not duplicate_mask(deduped, near=True).any()
    assert sum(raw is None for raw in deduped["generated_raw"]) == 3  # one of each seed stays
    sft = to_messages(deduped)
    assert len(sft) == len(deduped)
    assert all(m[-1]["role"] == "assistant" for m in sft["messages"])
