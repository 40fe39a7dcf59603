"""Where the generation record goes and which reloads it survives, through real files.

The Hub round trip is in test_hub.py, Ray's parquet in test_ray.py and test_scripts.py.
"""

from __future__ import annotations

import json
from argparse import Namespace

import datasets
import pyarrow.parquet as pq
import pytest
from helpers import MODEL_ID, PROMPT, Answer, StubServer, make_client, qa, run_expand

from synth_datasets import get_provenance, quality_report
from synth_datasets.cli import write_card
from synth_datasets.folder import load_result, write_output
from synth_datasets.provenance import (
    PROVENANCE_KEY,
    from_schema,
    is_offline,
    made_by,
    write_parquet,
)


@pytest.fixture
def expanded(ref_client, cache_dir):
    return run_expand(qa(4), ref_client, cache_dir, multiplier=3)


def write_folder(ds, folder):
    """What `expand --output` writes: data, manifest, card."""
    options = dict(pretty_name=None, license=None, language=None, task_categories=None)
    target = write_output(ds, folder, "parquet")
    write_card(ds, folder, Namespace(**options, no_prompt_in_card=False), None)
    return target


def assert_found(ds, recorded):
    """get_provenance finds the record, and quality_report its seed count and target."""
    assert get_provenance(ds) == recorded
    report = quality_report(ds, near=False)
    assert report.source_rows == 4 and report.targeted == 12 and report.multiplier == 3


def test_the_record_names_what_made_the_rows(expanded, ref_server):
    recorded = get_provenance(expanded)
    assert recorded["model_id"] == MODEL_ID and recorded["prompt"] == PROMPT
    # The reference server names its engine; the run asked it before sending anything.
    assert recorded["generator"].startswith("synth_datasets-offline/")
    assert is_offline(recorded) and made_by(recorded).startswith("the offline rewriting engine")
    assert ref_server.stats()["requests"] == 1  # 4 seeds, one request; GET /health is apart
    assert not is_offline({**recorded, "generator": None})
    assert made_by({"endpoint_host": "api.collinear.ai"}) == "Collinear's synthetic-data endpoint"
    assert made_by({"endpoint_host": "127.0.0.1"}) == "the synthetic-data endpoint at 127.0.0.1"


def test_a_server_that_does_not_name_itself_is_not_taken_for_the_offline_engine(cache_dir):
    def answer(received):
        body = json.loads(received.body)
        items = [{"original": e, "generated": json.dumps(e)} for e in body["examples"]]
        return Answer(body=json.dumps(items).encode())

    with StubServer(answer) as stub, make_client(stub.url, token="sk-test") as client:
        out = run_expand(qa(2), client, cache_dir, multiplier=1)
    asked, sent = stub.received
    assert (asked.method, asked.path, sent.method) == ("GET", "/health", "POST")
    assert "Authorization" not in asked.headers  # the question carries no token
    recorded = get_provenance(out)
    assert recorded["generator"] is None and not is_offline(recorded)
    assert made_by(recorded) == "the synthetic-data endpoint at 127.0.0.1"


@pytest.mark.parametrize(
    "operation",
    [
        lambda ds: ds.map(lambda row: {"q": row["q"].upper()}),
        lambda ds: ds.map(lambda batch: batch, batched=True, num_proc=2),
        lambda ds: ds.filter(lambda row: row["error"] is None),
        lambda ds: ds.select([0, 2, 4]),
        lambda ds: ds.shuffle(seed=1).flatten_indices(),
        lambda ds: ds.select(range(len(ds) - 1, -1, -1)),
        lambda ds: ds.rename_column("a", "answer"),
        lambda ds: ds.remove_columns(["generated_raw"]),
        lambda ds: ds.train_test_split(test_size=0.25, seed=0)["train"],
    ],
    ids=[
        "map",
        "map-num_proc",
        "filter",
        "select",
        "shuffle",
        "reverse",
        "rename",
        "remove",
        "split",
    ],
)
def test_datasets_own_operations_keep_the_record(expanded, operation):
    assert get_provenance(operation(expanded)) == get_provenance(expanded)


def test_save_to_disk_and_load_from_disk(expanded, tmp_path):
    expanded.save_to_disk(str(tmp_path / "saved"))
    assert_found(datasets.load_from_disk(str(tmp_path / "saved")), get_provenance(expanded))


def test_an_output_folder_through_load_dataset(expanded, tmp_path):
    """`load_dataset(folder)` reads the card's dataset_info.description into info."""
    folder = tmp_path / "out"
    write_folder(expanded, folder)
    loaded = datasets.load_dataset(str(folder), split="train")
    assert_found(loaded, get_provenance(expanded))
    # The card's YAML leaves datasets' own reading of the folder as it was.
    assert loaded.features == expanded.features and len(loaded) == len(expanded)


def test_the_parquet_files_carry_the_record_in_their_schema(expanded, tmp_path):
    folder = tmp_path / "out"
    target = write_output(expanded, folder, "parquet")
    schema = pq.read_schema(target)
    assert from_schema(schema) == get_provenance(expanded)
    assert b"huggingface" in schema.metadata  # the features, as datasets writes them
    # The folder without its manifest is still read with its record: the file holds it.
    (folder / "synth_manifest.json").write_text(
        json.dumps({"format": "parquet", "files": [str(target.relative_to(folder))]})
    )
    assert_found(load_result(folder), get_provenance(expanded))
    assert datasets.Dataset.from_parquet(str(target)).features == expanded.features


def test_write_parquet_then_from_parquet_keeps_rows_and_features(expanded, tmp_path):
    path = tmp_path / "x.parquet"
    write_parquet(expanded, path)
    back = datasets.Dataset.from_parquet(str(path))
    assert back.to_list() == expanded.to_list() and back.features == expanded.features
    # datasets' parquet reader keeps only the features of a schema: the record stays in the file.
    assert from_schema(pq.read_schema(path)) == get_provenance(expanded)


def test_arrow_tables_handed_out_keep_the_record(expanded, tmp_path):
    table = expanded.with_format("arrow")[:]
    assert table.schema.metadata[PROVENANCE_KEY]
    pq.write_table(table, tmp_path / "t.parquet")
    assert from_schema(pq.read_schema(tmp_path / "t.parquet")) == get_provenance(expanded)


def test_the_folder_card_and_manifest_label_offline_rows_first(expanded, tmp_path):
    folder = tmp_path / "out"
    write_folder(expanded, folder)
    manifest = (folder / "synth_manifest.json").read_text()
    assert next(iter(json.loads(manifest))) == "notice"
    assert manifest.splitlines()[1].startswith(
        '  "notice": "rows generated by the offline rewriting engine bundled with synth_datasets, '
        'not by Collinear"'
    )
    body = (folder / "README.md").read_text().split("---\n", 2)[2]
    lines = [line for line in body.splitlines() if line.strip()]
    assert lines[0].startswith("<!-- synth_datasets card ") and lines[1].startswith("# ")
    assert "generated by the offline rewriting engine bundled with synth_datasets" in lines[2]
    assert f'load_dataset("{folder}", split="train")' in body
