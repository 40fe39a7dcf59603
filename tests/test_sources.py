"""Sources as the user names them: a split a source lacks, an empty or unreadable folder, a path
typo taken for a Hub id; each one line naming the source, in the words the user chooses with."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from datasets import Dataset, DatasetDict
from fakehub import HUB_TOKEN, LFS_PUT_WARNING_FILTER
from helpers import cli, error_lines, write_jsonl

from synth_datasets.errors import UsageError
from synth_datasets.sources import Use, load_source

pytestmark = pytest.mark.filterwarnings(LFS_PUT_WARNING_FILTER)

EVAL_USE = Use(
    rows="rows in this evaluation set",
    choose="choose one as evals:SPLIT",
    drop="drop :SPLIT",
    default_split="test",
    only_split=True,
)


def data_folder(folder: Path, **splits: int) -> Path:
    """A folder of data files, one JSON lines file per split (``load_dataset(folder)``)."""
    (folder / "data").mkdir(parents=True, exist_ok=True)
    for name, rows in splits.items():
        write_jsonl(folder / "data" / f"{name}.jsonl", [{"q": f"{name} {i}"} for i in range(rows)])
    return folder


def refused(source: Path | str, *needles: str, **kw: object) -> str:
    with pytest.raises(UsageError) as info:
        load_source(str(source), split=kw.pop("split", None), config=None, **kw)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message and all(n in message for n in needles), message
    return message


def test_a_split_the_source_lacks_names_those_it_has_and_how_to_choose(tmp_path):
    folder = data_folder(tmp_path / "evals", test=3)
    refused(
        folder, "has no split 'validation', only test: choose one with --split", split="validation"
    )
    # The seeds' default (train) is named as the default it is.
    refused(folder, "no split 'train' (read when none is named), only test", "--split")
    saved = tmp_path / "saved"
    DatasetDict(
        {"a": Dataset.from_dict({"q": ["x"]}), "b": Dataset.from_dict({"q": ["y"]})}
    ).save_to_disk(str(saved))
    refused(
        saved,
        "only a, b: choose one with --seeds-split",
        use=Use(choose="choose one with --seeds-split"),
    )


def test_an_evaluation_folder_reads_its_only_split_or_test(tmp_path):
    only = data_folder(tmp_path / "only", validation=2)
    ds, meta = load_source(str(only), split=None, config=None, use=EVAL_USE)
    assert (len(ds), meta["split"]) == (2, "validation")
    both = data_folder(tmp_path / "both", train=4, test=3)
    ds, meta = load_source(str(both), split=None, config=None, use=EVAL_USE)
    assert (len(ds), meta["split"]) == (3, "test")
    other = data_folder(tmp_path / "other", train=4, validation=3)
    refused(other, "only train, validation: choose one as evals:SPLIT", use=EVAL_USE)


def test_a_split_of_a_file_or_a_single_saved_dataset_is_refused_not_ignored(tmp_path):
    path = write_jsonl(tmp_path / "e.jsonl", [{"q": "x"}])
    refused(path, "one file, with no splits", "drop --split", split="train")
    ds, meta = load_source(str(path), split=None, config=None)
    assert (len(ds), meta["split"]) == (1, None)
    saved = tmp_path / "one"
    Dataset.from_dict({"q": ["x"]}).save_to_disk(str(saved))
    refused(saved, "a saved Dataset of one split: drop :SPLIT", split="test", use=EVAL_USE)


@pytest.mark.parametrize("content", [b"", b" \n\n", b"[]"])
def test_an_empty_file_says_what_it_was_for(tmp_path, content):
    path = tmp_path / ("e.json" if content == b"[]" else "e.jsonl")
    path.write_bytes(content)
    refused(path, "no rows to expand")
    refused(path, f"{path}: no rows in this evaluation set", use=EVAL_USE)
    csv = tmp_path / "h.csv"
    csv.write_text("q,a\n")
    refused(csv, "no seed rows to mix in", use=Use(rows="seed rows to mix in"))


def test_an_empty_or_mixed_folder_is_one_line_naming_it(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    refused(empty, f"{empty}: no data files", "no rows in this evaluation set", use=EVAL_USE)
    mixed = data_folder(tmp_path / "mixed", train=2)
    write_jsonl(mixed / "data" / "train-b.jsonl", [{"other": 1}])
    refused(mixed, f"{mixed}: its data files cannot be read as one dataset", "CastError")
    # As a user runs it: one line, exit 2.
    for folder in (empty, mixed):
        proc = cli("expand", str(folder), "--prompt", "p", "--dry-run")
        assert proc.returncode == 2, proc.stderr
        (line,) = error_lines(proc.stderr)
        assert line.startswith(f"synth-datasets: error: {folder}: ")


def test_a_local_typo_taken_for_a_hub_id_names_the_source_when_no_hub_answers():
    """As a user runs it offline: the Hub's address answers nothing (a port nobody listens on)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        nobody = f"http://127.0.0.1:{s.getsockname()[1]}"
    proc = cli(
        "expand", "evals/missingdir", "--prompt", "p", "--dry-run", env={"HF_ENDPOINT": nobody}
    )
    assert proc.returncode == 2, proc.stderr
    (line,) = error_lines(proc.stderr)
    assert line.startswith(
        "synth-datasets: error: evals/missingdir: no such file or folder, and the Hub could not "
        "be reached: ConnectError"
    )


def test_a_hub_dataset_split_and_a_missing_hub_dataset(fake_hub):
    Dataset.from_dict({"q": ["a", "b"]}).push_to_hub(
        "me/evals", split="validation", token=HUB_TOKEN
    )
    refused("me/evals", "me/evals has no split 'train' (read when none is named), only validation")
    ds, meta = load_source("me/evals", split=None, config=None, use=EVAL_USE)
    assert (len(ds), meta["split"], meta["revision"]) == (
        2,
        "validation",
        fake_hub.commits("me/evals")[-1].sha,
    )
    refused(
        "me/nothing", "me/nothing: no such file or folder, nor a Hub dataset your token can read"
    )
