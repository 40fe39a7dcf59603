"""The quality report: every figure checked against rows whose answer is known."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import pyarrow as pa
import pytest
from conftest import MODEL_ID
from datasets import Dataset

from synth_datasets import expand, get_provenance
from synth_datasets.cli import main
from synth_datasets.dedup import DuplicateFinder, row_texts
from synth_datasets.lineage import error_kinds
from synth_datasets.provenance import attach_provenance
from synth_datasets.report import Histogram, QualityReport, quality_report

STORY = (
    "once upon a time a small robot lived in a quiet town by the sea and every morning it "
    "walked to the harbour to count the boats that came in with fish and salt and news"
)


def conv(*contents: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": c} for c in contents]


SEEDS = [
    {"conv": conv("How do I reset my router?"), "answer": "Hold the button."},
    {"conv": conv("Tell me a story"), "answer": "No."},
    {"conv": conv("Why?"), "answer": "Because."},
]


def row(conv_, answer, source, error=None, raw="{}"):
    return {
        "conv": conv_,
        "answer": answer,
        "topic": "t",
        "source_index": source,
        "original": SEEDS[source] if source is not None else None,
        "generated_raw": raw,
        "error": error,
    }


def known_rows() -> Dataset:
    """Ten rows whose every figure is worked out by hand in the tests below."""
    rows = [
        row(conv("What is a router?"), "A box that routes.", 0),
        row(conv("how do I RESET my router?"), "HOLD  the button.", 0),  # a seed copy
        row(None, None, 0, "parse: bad json; missing: no 'answer' in the object"),
        row(conv("Tell me a story", "please"), STORY, 1),
        row(conv("Tell me a story", "please"), STORY.replace("news", "bread"), 1),  # near dup
        row(conv("  what IS a router? "), "a box that routes.", 1),  # exact dup of row 0
        row(conv("orphan"), "x", None, "unlinked: the returned original matches no example"),
        row(None, None, 2, "request: HTTP 500 after 5 retries", raw=None),
        row(None, None, 2, "type: answer: expected text; see above"),
        row(None, None, 2, "something new"),
    ]
    ds = Dataset.from_list(rows)
    attach_provenance(
        ds, {"generated_columns": ["conv", "answer"], "multiplier": 3, "source": {"num_rows": 4}}
    )
    return ds


def test_error_kinds():
    assert error_kinds(None) == set()
    assert error_kinds("parse: x; missing: y") == {"parse", "missing"}
    assert error_kinds("type: a; b; c: d") == {"type"}  # message tails are not kinds
    assert error_kinds("kaput") == {"other"}


def test_report_counts_known_rows():
    r = quality_report(known_rows())
    assert isinstance(r, QualityReport)
    assert (r.rows, r.error_rows, r.clean_rows, r.unlinked, r.returned) == (10, 5, 5, 1, 9)
    assert r.error_rate == 0.5
    assert r.errors_by_kind == {
        "missing": 1,
        "other": 1,
        "parse": 1,
        "request": 1,
        "type": 1,
        "unlinked": 1,
    }
    assert (r.multiplier, r.source_rows, r.targeted) == (3, 4, 12)
    assert (r.linked_seeds, r.seeds_without_rows) == (3, 1)
    assert (r.rows_per_seed.min, r.rows_per_seed.max) == (3, 3)
    assert (r.clean_rows_per_seed.min, r.clean_rows_per_seed.max) == (0, 3)
    assert r.clean_rows_per_seed.mean == pytest.approx(5 / 3, abs=0.01)
    assert r.seeds_below_target == 2  # seed 0 has 2 clean rows, seed 2 none
    assert r.seed_copies == 1 and r.near_seed_copies == 1
    assert r.duplicates == 1  # row 5 repeats row 0 up to case and spacing
    assert r.near_duplicates == 2  # row 5, and row 4 (one word of 34 changed)
    assert r.generated_columns == ("conv", "answer")


def test_near_threshold_is_respected():
    assert quality_report(known_rows(), near_threshold=0.99).near_duplicates == 1
    exact_only = quality_report(known_rows(), near=False)
    assert exact_only.near_duplicates is None and exact_only.duplicates == 1
    assert "Near-duplicates" not in exact_only.to_markdown()


def test_lengths_of_text_and_conversations():
    r = quality_report(known_rows())
    by = {(x.column, x.of): x for x in r.lengths}
    conv_rows = by[("conv", "rows")]
    assert conv_rows.kind == "conversation"
    assert conv_rows.chars.count == 6  # non-null values only
    assert (conv_rows.turns.min, conv_rows.turns.max) == (1, 2)
    ds = known_rows()
    chars = [sum(len(t["content"]) for t in c) for c in ds["conv"] if c is not None]
    assert (conv_rows.chars.min, conv_rows.chars.max) == (min(chars), max(chars))
    assert conv_rows.chars.mean == pytest.approx(sum(chars) / len(chars), abs=0.01)
    answer = by[("answer", "rows")]
    assert answer.kind == "text" and answer.turns is None
    assert (answer.chars.min, answer.chars.max) == (1, len(STORY.replace("news", "bread")))
    seeds = by[("answer", "seeds")]
    assert seeds.chars.count == 3  # once per seed, from `original`
    assert seeds.chars.max == len("Hold the button.")
    assert ("topic", "seeds") not in by  # passthrough: not sent, no seed value


def test_batches_do_not_change_the_report():
    ds = known_rows()
    assert quality_report(ds, batch_size=2).to_dict() == quality_report(ds).to_dict()
    shuffled = ds.shuffle(seed=0)
    one = quality_report(shuffled, batch_size=3).to_dict()
    assert one["rows_per_seed"] == quality_report(ds).to_dict()["rows_per_seed"]
    assert one["seed_copies"] == one["near_seed_copies"] == 1 and one["duplicates"] == 1


def test_histograms_hold_every_value_on_bins_shared_by_what_is_drawn_together():
    r = quality_report(known_rows())
    # Rows per seed: 3, 3, 3; without error: 2 (seed 0), 3 (seed 1), 0 (seed 2).
    assert r.rows_per_seed.histogram == Histogram((0, 1, 2, 3, 4), (0, 0, 0, 3))
    assert r.clean_rows_per_seed.histogram == Histogram((0, 1, 2, 3, 4), (1, 0, 1, 1))
    by = {(x.column, x.of): x for x in r.lengths}
    assert by["conv", "rows"].turns.histogram == Histogram((1, 2, 3), (4, 2))
    assert by["conv", "seeds"].turns.histogram == Histogram((1, 2, 3), (3, 0))
    for column in ("conv", "answer"):
        assert by[column, "rows"].chars.histogram.edges == by[column, "seeds"].chars.histogram.edges
    for x in r.lengths:
        for d in (x.chars, x.turns):
            if d is not None:
                assert sum(d.histogram.counts) == d.count

    # A long tail: the bins reach the 99th percentile, the last one holds the rest.
    ds = Dataset.from_dict({"text": ["x" * n for n in [*range(1, 400), 100_000]]})
    chars = quality_report(ds, near=False).lengths[0].chars
    assert chars.histogram.edges[0] == 0 and chars.histogram.edges[-1] == 400
    assert len(chars.histogram.counts) == 40 and chars.histogram.counts[-1] == 10 + 1


def test_to_dict_and_markdown():
    r = quality_report(known_rows())
    d = json.loads(json.dumps(r.to_dict()))
    assert d["error_rows"] == 5 and d["clean_rows"] == 5 and d["targeted"] == 12
    assert d["errors_by_kind"]["parse"] == 1
    assert d["lengths"][0]["column"] == "conv"
    md = r.to_markdown()
    assert "| Rows | 10 |" in md
    assert "| Rows with an error | 5 (50.0%) |" in md
    assert "| Exact duplicates within the set | 1 |" in md
    assert "| `parse` | 1 | 10.0% |" in md
    assert "### Rows per seed" in md and "| rows without error | 0 |" in md
    assert "| `conv` | conversation | rows | turns | 6 | 1 |" in md
    assert md.startswith("| | |") and md.endswith("\n")
    assert r.to_markdown(heading_level=2).count("\n## ") == 3


def test_plain_dataset_without_lineage():
    ds = Dataset.from_dict({"text": ["a b c", "A  b c", "d e f"], "n": [1, 2, 3]})
    r = quality_report(ds)
    assert r.generated_columns == ("text", "n")  # everything is content
    assert r.duplicates == 0  # "n" differs
    r = quality_report(ds.remove_columns("n"))
    assert (r.duplicates, r.error_rows, r.linked_seeds, r.rows_per_seed) == (1, 0, 0, None)
    assert r.seed_copies is None and "unknown (no `original` column)" in r.to_markdown()


def test_row_texts_normalise_but_keep_structure():
    table = pa.table(
        {
            "c": [conv("Hi  There"), conv("hi there"), conv("hi", "there"), None],
            "n": [1, 1, 1, None],
        }
    )
    texts = row_texts(table, ["c", "n"]).to_pylist()
    assert texts[0] == texts[1]
    assert texts[0] != texts[2]  # two turns are not one
    assert texts[3] == "\n\n"


def test_finder_flags_first_copy_only_and_skips_masked_rows():
    finder = DuplicateFinder(near=True, threshold=0.85)
    texts = pa.array(["x y z", "x y z", STORY, STORY + " indeed", "x y z"], pa.large_string())
    mask = [True, True, True, True, False]
    exact, near, sigs = finder.check(texts, pa.array(mask).to_numpy(zero_copy_only=False))
    assert exact.tolist() == [False, True, False, False, False]
    assert near.tolist() == [False, True, False, True, False]
    assert sigs[4] is None
    # State carries across batches.
    exact, near, _ = finder.check(pa.array(["X  Y z"], pa.large_string()))
    assert exact.tolist() == [False]  # row_texts normalises; check() compares as given
    exact, near, _ = finder.check(pa.array(["x y z"], pa.large_string()))
    assert exact.tolist() == [True]


def test_report_matches_the_rows_of_a_faulty_expansion(ref_server, ref_client, cache_dir):
    ref_server.set_faults(rate_malformed=0.3, rate_shortfall=0.2, rate_alter_original=0.1, seed=3)
    seeds = Dataset.from_list(
        [{"q": f"question number {i}", "a": f"answer {i}"} for i in range(12)]
    )
    out = expand(
        seeds,
        prompt="More.",
        multiplier=3,
        model_id=MODEL_ID,
        client=ref_client,
        cache_dir=cache_dir,
        on_error="keep",
    )
    r = quality_report(out, batch_size=5)
    errors = [e for e in out["error"] if e is not None]
    assert r.error_rows == len(errors) > 0
    kinds = Counter(k for e in errors for k in error_kinds(e))
    assert r.errors_by_kind == dict(kinds)
    assert len(kinds) >= 2 and "unlinked" in kinds
    per_seed = Counter(i for i in out["source_index"] if i is not None)
    assert r.linked_seeds == len(per_seed) == 12
    assert (r.rows_per_seed.min, r.rows_per_seed.max) == (
        min(per_seed.values()),
        max(per_seed.values()),
    )
    assert r.unlinked == sum(i is None for i in out["source_index"])
    assert r.returned == sum(g is not None for g in out["generated_raw"])
    assert r.seed_copies == 0  # the reference engine always rewrites


def test_report_command(tmp_path, capsys):
    ds = known_rows()
    ds.save_to_disk(str(tmp_path / "saved"))
    proc = subprocess.run(
        [sys.executable, "-m", "synth_datasets.cli", "report", str(tmp_path / "saved"), "--json"],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data == json.loads(json.dumps(quality_report(ds).to_dict()))
    assert main(["report", str(tmp_path / "saved"), "--no-near"]) == 0
    out = capsys.readouterr().out
    assert "| Rows with an error | 5 (50.0%) |" in out and "Near-duplicates" not in out
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "saved"), "--near-threshold", "2"]) == 2


def test_report_command_of_offline_rows_says_so_first(tmp_path, capsys):
    ds = known_rows()
    attach_provenance(ds, {**get_provenance(ds), "generator": "synth_datasets-offline/0"})
    ds.save_to_disk(str(tmp_path / "saved"))
    assert main(["report", str(tmp_path / "saved"), "--no-near"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("note: these rows were generated by the offline rewriting engine")
