"""The dataset card: metadata, sections and statistics from the data; never a token."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import MODEL_ID
from datasets import Dataset
from huggingface_hub import DatasetCard

from synth_datasets import EvalSet, decontaminate, expand
from synth_datasets.card import build_card, card_splits, size_category
from synth_datasets.provenance import attach_provenance, describe, get_provenance
from synth_datasets.report import quality_report

LONG = "word " * 200


def expanded(ref_server, ref_client, cache_dir, **kw):
    seeds = Dataset.from_list(
        [
            {"q": f"question {i} {LONG if i == 0 else ''}", "a": f"answer {i}", "id": i}
            for i in range(6)
        ]
    )
    seeds.info.license = "apache-2.0"
    return expand(
        seeds,
        prompt="Write more Q&A pairs, secret sauce prompt.",
        multiplier=3,
        model_id=MODEL_ID,
        client=ref_client,
        cache_dir=cache_dir,
        columns=["q", "a"],
        on_error="keep",
        **kw,
    )


def split_card(text: str) -> tuple[dict, str]:
    _, header, body = text.split("---\n", 2)
    return yaml.safe_load(header), body


def test_card_metadata_and_sections(ref_server, ref_client, cache_dir):
    ref_server.set_faults(rate_malformed=0.3, seed=1)
    out = expanded(ref_server, ref_client, cache_dir)
    card = build_card(
        out, repo_id="me/synthetic-qa", language="en", task_categories=["question-answering"]
    )
    assert isinstance(card, DatasetCard)
    meta, body = split_card(str(card))
    assert meta["pretty_name"] == "synthetic-qa"
    assert meta["license"] == "apache-2.0"  # inherited from the source
    assert meta["language"] == "en" and meta["task_categories"] == ["question-answering"]
    assert meta["size_categories"] == ["n<1K"]
    assert {"synthetic", "synth_datasets"} <= set(meta["tags"])
    assert card.data.to_dict()["tags"] == meta["tags"]  # huggingface_hub parses it too
    for heading in (
        "## How it was made",
        "## Statistics",
        "## Schema",
        "## Samples",
        "## Usage",
        "## Limitations",
    ):
        assert heading in body
    assert MODEL_ID in body and "127.0.0.1" in body
    assert "secret sauce prompt" in body
    assert "| Multiplier | 3 generations" in body
    prov = get_provenance(out)
    assert prov["source"]["fingerprint"] in body
    assert 'load_dataset("me/synthetic-qa", split="train")' in body
    assert '"source_index", "original", "generated_raw", "error"' in body
    for name in ("source_index", "original", "generated_raw", "error", "id"):
        assert f"| `{name}` |" in body
    assert body.count("```json") == 3
    assert "word word" in body and LONG not in body  # long values cut
    assert ref_server.token not in str(card)


def test_stats_count_from_the_data(ref_server, ref_client, cache_dir):
    ref_server.set_faults(rate_malformed=0.5, rate_alter_original=0.2, seed=2)
    out = expanded(ref_server, ref_client, cache_dir)
    r = quality_report(out)
    errors = [e for e in out["error"] if e is not None]
    assert r.rows == len(out)
    assert r.error_rows == len(errors) > 0
    assert r.clean_rows == len(out) - len(errors)
    assert r.unlinked == sum(i is None for i in out["source_index"])
    assert r.targeted == 18 and r.source_rows == 6
    assert r.errors_by_kind.get("parse", 0) == sum(e.count("parse:") > 0 for e in errors)
    assert r.errors_by_kind.get("unlinked", 0) == r.unlinked


def test_identical_and_duplicate_rows_counted():
    rows = [
        {
            "q": "same",
            "source_index": 0,
            "original": {"q": "same"},
            "generated_raw": "{}",
            "error": None,
        },
        {
            "q": "new",
            "source_index": 0,
            "original": {"q": "same"},
            "generated_raw": "{}",
            "error": None,
        },
        {
            "q": "New ",
            "source_index": 1,
            "original": {"q": "x"},
            "generated_raw": "{}",
            "error": None,
        },
        {
            "q": None,
            "source_index": 1,
            "original": {"q": "x"},
            "generated_raw": "bad",
            "error": "parse: no",
        },
    ]
    ds = Dataset.from_list(rows)
    attach_provenance(ds, {"generated_columns": ["q"], "multiplier": 2, "source": {"num_rows": 2}})
    r = quality_report(ds)
    assert r.seed_copies == 1
    assert r.duplicates == 1  # "new" and "New " normalise to the same text
    assert r.errors_by_kind == {"parse": 1}
    assert r.targeted == 4 and r.returned == 4
    with pytest.raises(TypeError, match="licence"):  # a misspelt option is not ignored
        build_card(ds, licence="mit")


def test_prompt_opt_out_and_overrides(ref_server, ref_client, cache_dir):
    out = expanded(ref_server, ref_client, cache_dir)
    card = build_card(
        out,
        include_prompt=False,
        license="mit",
        pretty_name="QA",
        tags=["qa"],
        provenance={"model_id": "override-model"},
    )
    meta, body = split_card(str(card))
    assert "secret sauce" not in body and "not published" in body
    assert meta["license"] == "mit" and meta["pretty_name"] == "QA" and "qa" in meta["tags"]
    assert "override-model" in body


def test_size_categories():
    assert size_category(999) == "n<1K"
    assert size_category(1000) == "1K<n<10K"
    assert size_category(250_000) == "100K<n<1M"


def test_statistics_section_is_the_quality_report(ref_server, ref_client, cache_dir):
    ref_server.set_faults(rate_malformed=0.5, seed=2)
    out = expanded(ref_server, ref_client, cache_dir)
    report = quality_report(out)
    _, body = split_card(str(build_card(out, repo_id="me/x")))
    stats = body.split("## Statistics", 1)[1].split("## Schema", 1)[0]
    assert report.to_markdown().strip() in stats
    assert f"| Rows | {len(out)} |" in stats and "### Rows per seed" in stats
    assert "### Errors by kind" in stats and "### Lengths" in stats
    # A report computed once is reused as it is.
    assert str(build_card(out, repo_id="me/x", report=report)) == str(
        build_card(out, repo_id="me/x")
    )


def test_sft_card_tells_generation_and_preparation(ref_server, ref_client, cache_dir):
    from synth_datasets.card import build_sft_card

    ds = expanded(ref_server, ref_client, cache_dir)
    chat = Dataset.from_list([{"messages": [{"role": "user", "content": "hi"}]}] * 4)
    steps = [("rows of the expanded dataset", 18), ("error rows dropped", 0), ("rows kept", 4)]
    card = build_sft_card(
        {"train": chat.select(range(3)), "test": chat.select([3])},
        steps=steps,
        expanded_source="out/expanded",
        provenance=get_provenance(ds),
        repo_id="me/chat",
        split_note="Split by seed 1.",
    )
    meta, body = split_card(str(card))
    assert meta["license"] == "apache-2.0" and "sft" in meta["tags"]
    assert meta["size_categories"] == ["n<1K"] and meta["pretty_name"] == "chat"
    assert "4 chat rows in 2 split(s), made from out/expanded." in body
    assert f"`{MODEL_ID}`" in body and "secret sauce prompt" in body
    assert "| rows of the expanded dataset | 18 |" in body and "| rows kept | 4 |" in body
    assert "| `train` | 3 |" in body and "| `test` | 1 |" in body and "Split by seed 1." in body
    assert '"content": "hi"' in body and 'load_dataset("me/chat")' in body
    assert ref_server.token not in str(card)

    hidden = build_sft_card(
        {"train": chat},
        steps=steps,
        expanded_source="x",
        provenance=get_provenance(ds),
        include_prompt=False,
    )
    assert "secret sauce" not in str(hidden) and "is not published" in str(hidden)
    bare = build_sft_card({"train": chat}, steps=steps, expanded_source="x")
    assert "carried no record of how it was generated" in str(bare)
    assert "<namespace>/<dataset>" in str(bare)


def test_samples_come_from_seeds_across_the_set(ref_server, ref_client, cache_dir):
    out = expanded(ref_server, ref_client, cache_dir)  # 6 seeds x 3, grouped by seed
    _, body = split_card(str(build_card(out)))
    samples = [json.loads(block.split("```", 1)[0]) for block in body.split("```json\n")[1:]]
    assert [s["source_index"] for s in samples] == [0, 2, 5]  # first, middle, last seed
    assert all(s["error"] is None for s in samples)


def test_pretty_name_from_the_repo_else_the_seeds_else_given(ref_server, ref_client, cache_dir):
    out = expanded(ref_server, ref_client, cache_dir, source={"name": "data/my_seeds.jsonl"})
    assert split_card(str(build_card(out)))[0]["pretty_name"] == "Synthetic expansion of my_seeds"
    assert split_card(str(build_card(out, repo_id="me/qa-set")))[0]["pretty_name"] == "qa-set"
    card = build_card(out, repo_id="me/qa-set", pretty_name="QA, expanded")
    assert split_card(str(card))[0]["pretty_name"] == "QA, expanded"
    # A local folder is what the usage snippet loads, not what names the set.
    meta, body = split_card(str(build_card(out, folder="out/demo")))
    assert meta["pretty_name"] == "Synthetic expansion of my_seeds"
    assert 'load_dataset("out/demo", split="train")' in body


def test_the_card_is_marked_and_records_the_provenance(ref_server, ref_client, cache_dir):
    out = expanded(ref_server, ref_client, cache_dir)
    card = build_card(out, split="validation")
    assert card_splits(str(card)) == ["validation"]
    assert card_splits("# A card written by hand\n") is None
    recorded = card.data.to_dict()["dataset_info"]["description"]
    assert recorded == describe(get_provenance(out))
    hidden = build_card(out, include_prompt=False).data.to_dict()["dataset_info"]["description"]
    assert "secret sauce" not in hidden and '"multiplier": 3' in hidden


def test_what_made_the_rows_is_said(ref_server, ref_client, cache_dir):
    out = expanded(ref_server, ref_client, cache_dir)
    _, body = split_card(str(build_card(out)))
    assert "| Generated by | the offline rewriting engine bundled with synth_datasets" in body
    assert "Collinear's" not in body
    remote = {**get_provenance(out), "generator": None, "endpoint_host": "api.collinear.ai"}
    _, body = split_card(str(build_card(out, provenance=remote)))
    assert "every row was generated by Collinear's synthetic-data endpoint" in body
    assert "offline" not in body


def test_sft_card_of_offline_rows_has_no_training_snippet(ref_server, ref_client, cache_dir):
    from synth_datasets.card import build_sft_card

    prov = get_provenance(expanded(ref_server, ref_client, cache_dir))
    chat = Dataset.from_list([{"messages": [{"role": "user", "content": "hi"}]}] * 2)
    steps = [("rows kept", 2)]
    offline = str(
        build_sft_card({"train": chat}, steps=steps, expanded_source="x", provenance=prov)
    )
    assert "SFTTrainer(" not in offline and "from trl" not in offline
    assert "generated by the offline rewriting engine bundled with synth_datasets" in offline
    remote = {**prov, "generator": None, "endpoint_host": "api.collinear.ai"}
    online = str(
        build_sft_card({"train": chat}, steps=steps, expanded_source="x", provenance=remote)
    )
    assert "SFTTrainer(" in online and "offline" not in online
    assert "the 2 rows here are fewer than the 18 generations targeted" in online


def test_card_of_a_decontaminated_set_has_the_section(ref_server, ref_client, cache_dir):
    out = expanded(ref_server, ref_client, cache_dir)
    assert "Decontamination" not in str(build_card(out))  # none recorded: no section
    quoted = out[0]["q"]  # a generated question of 200+ words, quoted by an evaluation set
    evals = Dataset.from_dict({"question": [quoted, "an unrelated short item"]})
    clean = decontaminate(out, [EvalSet(evals, split="test", columns=["question"])], remove=True)
    body = str(build_card(clean))
    assert "## Decontamination" in body and "were removed" in body
    row = body.split("| `a Dataset in memory` |")[1].splitlines()[0]
    assert "| test | `question` | 2 | 1 |" in row  # split, columns, texts, under 13 words
    removed = get_provenance(clean)["decontamination"]["rows_removed"]
    assert removed >= 1 and f"rows removed: {removed}." in body
    assert len(clean) == len(out) - removed
