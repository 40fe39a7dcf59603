"""Training-data prep helpers: each returns a new Dataset with exactly the rows and columns meant."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import MODEL_ID
from datasets import Dataset

from synth_datasets import ConfigurationError, expand, get_provenance
from synth_datasets.prep import (
    MESSAGES_FEATURE,
    cross_split_duplicates,
    drop_duplicates,
    drop_errors,
    drop_lineage,
    duplicate_mask,
    mix_in_seeds,
    seed_groups,
    split_by_seed,
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


# -- the seed-group split -------------------------------------------------------------------------


def words(text: str) -> list[str]:
    return [w.strip(".,!?") for w in text.lower().split() if w.strip(".,!?")]


def brute_force_leaks(train: Dataset, test: Dataset, threshold: float = 0.85) -> int:
    """Pairs (train row, test row) at Jaccard >= threshold, by comparing every pair of word-triple
    sets: independent of the LSH search under test."""

    def sets(ds: Dataset) -> list[set[tuple[str, ...]] | None]:
        out = []
        for text, error in zip(ds["text"], ds["error"], strict=True):
            w = words(text or "")
            out.append(None if error else {tuple(w[i : i + 3]) for i in range(len(w) - 2)})
        return out

    pairs = 0
    for a in sets(train):
        for b in sets(test):
            if a is not None and b is not None and len(a & b) >= threshold * len(a | b):
                pairs += 1
    return pairs


def seeded_rows(seeds: int = 40, per_seed: int = 4, seed: int = 0) -> Dataset:
    """Generated rows of known structure: each seed's rows rewrite half of its words (far below
    the threshold of each other), with near and exact duplicates planted across seeds."""
    rng = np.random.default_rng(seed)
    serial = iter(range(1 << 40))

    def fresh(k: int) -> list[str]:
        return [f"w{next(serial)}" for _ in range(k)]

    rows: list[dict] = []
    for s in range(seeds):
        base = fresh(int(rng.integers(30, 60)))
        for _ in range(per_seed):
            w = [x if rng.random() < 0.5 else fresh(1)[0] for x in base]
            rows.append({"text": " ".join(w), "source_index": s, "error": None})

    def text_of(s: int, k: int = 0) -> str:
        return rows[s * per_seed + k]["text"]

    # Seed 5's last row is seed 17's first with a word appended (Jaccard about 0.95).
    rows[5 * per_seed + 3]["text"] = text_of(17) + " more"
    # A chain: 20 ~ 21 ~ 22, while 20 and 22 are below the threshold of each other.
    x = text_of(20)
    y = x + " " + " ".join(fresh(5))
    z = y + " " + " ".join(fresh(5))
    rows[21 * per_seed + 3]["text"], rows[22 * per_seed + 3]["text"] = y, z
    # An exact duplicate, up to case and punctuation, across seeds 30 and 31.
    rows[31 * per_seed + 3]["text"] = text_of(30).upper() + "!"
    # Error rows (no text: joined by seed only) and unlinked rows (joined by duplicates only).
    rows[8 * per_seed + 1].update(text=None, error="parse: no JSON")
    rows[9 * per_seed + 1].update(text=None, error="parse: no JSON")
    rows.append({"text": text_of(3, 2) + " tail", "source_index": None, "error": None})
    rows.append({"text": " ".join(fresh(40)), "source_index": None, "error": None})
    return Dataset.from_list(rows)


def test_seed_groups_join_seeds_through_duplicates():
    ds = seeded_rows()
    group = seed_groups(ds)
    of_seed = {s: group[i] for i, s in enumerate(ds["source_index"]) if s is not None}
    assert of_seed[5] == of_seed[17]
    assert of_seed[20] == of_seed[21] == of_seed[22]  # through the chain
    assert of_seed[30] == of_seed[31]
    assert of_seed[3] == group[-2] and group[-1] == len(ds) - 1  # the unlinked rows
    assert of_seed[8] != of_seed[9]  # error rows are not duplicates of each other
    joined = {(5, 17), (20, 21), (20, 22), (21, 22), (30, 31)}
    for a in range(40):
        for b in range(a + 1, 40):
            assert (of_seed[a] == of_seed[b]) == ((a, b) in joined), (a, b)


def test_seeds_whose_chinese_answers_are_near_duplicates_are_one_group():
    """Chinese has no spaces: a character is a word (dedup._words), so two seeds' answers with one
    character changed out of 41 join their seeds, and the split keeps them on one side."""
    zh = "请先关闭路由器的电源，等待大约三十秒后再重新打开，然后检查正面的所有指示灯是否变成绿色。"
    texts = [
        zh,
        "请先打开路由器的设置页面，输入管理员密码后选择无线网络，然后修改网络名称并保存设置。",
        zh.replace("三十", "四十"),
        "如果无法连接网络，请检查网线是否插好，并确认路由器的指示灯正常亮起。",
    ]
    ds = Dataset.from_dict({"text": texts, "source_index": [0, 1, 2, 3]})
    assert seed_groups(ds).tolist() == [0, 1, 0, 3]
    for seed in range(4):
        test = split_by_seed(ds, test_size=2, seed=seed)["test"]["source_index"]
        assert (0 in test) == (2 in test)


def test_split_by_seed_leaks_nothing_and_hits_the_size():
    ds = seeded_rows()
    splits = split_by_seed(ds, test_size=0.2, seed=7)
    train, test = splits["train"], splits["test"]
    assert len(train) + len(test) == len(ds)
    # No seed on both sides, and no pair of near duplicates across: counted by brute force.
    assert not {s for s in train["source_index"] if s is not None} & {
        s for s in test["source_index"] if s is not None
    }
    assert brute_force_leaks(train, test) == 0
    assert cross_split_duplicates(train, test) == 0
    # 162 rows, 20 % = 32: groups of 4 (most seeds), 8 and 12 (joined ones), 5 (seed 3 and the
    # unlinked row near it) and 1 (the other unlinked row) make 32 exactly.
    assert len(test) == round(0.2 * len(ds)) == 32
    # The same seed gives the same split; another seed another one.
    assert split_by_seed(ds, test_size=0.2, seed=7)["test"]["text"] == test["text"]
    assert split_by_seed(ds, test_size=0.2, seed=8)["test"]["text"] != test["text"]
    assert split_by_seed(ds, test_size=10, seed=7).num_rows == {"train": 152, "test": 10}
    # A row-wise split of the same rows leaks, and the measure agrees with brute force.
    rowwise = ds.train_test_split(test_size=0.2, seed=7)
    leaks = cross_split_duplicates(rowwise["train"], rowwise["test"])
    assert leaks == brute_force_leaks(rowwise["train"], rowwise["test"]) > 0


def test_split_by_seed_takes_whole_groups_as_close_as_they_allow():
    # Seeds of 4 rows each, and 1 row asked: the closest whole group is 4 rows, never 0.
    ds = Dataset.from_dict({"text": [f"text {i} of its own" for i in range(12)]}).add_column(
        "source_index", [i // 4 for i in range(12)]
    )
    assert split_by_seed(ds, test_size=1).num_rows == {"train": 8, "test": 4}
    assert split_by_seed(ds, test_size=6).num_rows == {"train": 8, "test": 4}  # 4 is below 8
    assert split_by_seed(ds, test_size=0.7).num_rows == {"train": 4, "test": 8}
    for bad, message in [
        (0, "test_size must be > 0"),
        (12, "leaves no training rows"),
        (2.5, "a fraction below 1 or a whole number"),
        (float("nan"), "a finite number, got nan"),
        (float("inf"), "a finite number, got inf"),
        ("0.1", "a fraction or a number of rows"),
    ]:
        with pytest.raises(ConfigurationError, match=message):
            split_by_seed(ds, test_size=bad)
    # numpy's numbers are sizes like Python's.
    assert split_by_seed(ds, test_size=np.int64(4)).num_rows == {"train": 8, "test": 4}
    assert split_by_seed(ds, test_size=np.float64(0.3)).num_rows == {"train": 8, "test": 4}
    with pytest.raises(ConfigurationError, match="the dataset has no rows to split"):
        split_by_seed(ds.select([]), test_size=0.5)
    one_seed = ds.map(lambda r: {"source_index": 0})
    with pytest.raises(ConfigurationError, match="form one group"):
        split_by_seed(one_seed, test_size=0.5)


def test_split_by_seed_size_is_the_closest_whole_groups_can_make():
    rng = np.random.default_rng(3)
    for case in range(25):
        sizes = rng.integers(1, 9, size=int(rng.integers(2, 9))).tolist()
        n = sum(sizes)
        source = [g for g, k in enumerate(sizes) for _ in range(k)]
        ds = Dataset.from_dict(
            {"text": [f"row {i} {case}" for i in range(n)], "source_index": source}
        )
        test_size = int(rng.integers(1, n))
        totals = {
            sum(k for g, k in enumerate(sizes) if mask >> g & 1) for mask in range(1 << len(sizes))
        }
        best = min((t for t in totals if 0 < t < n), key=lambda t: (abs(t - test_size), t))
        got = split_by_seed(ds, test_size=test_size, seed=case)
        assert len(got["test"]) == best, (sizes, test_size)
        assert not set(got["train"]["source_index"]) & set(got["test"]["source_index"])
