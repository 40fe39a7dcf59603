"""scripts/expand_and_push.py and scripts/to_sft.py, run as a user runs them: subprocesses."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest
from fakehub import HUB_TOKEN, LFS_PUT_WARNING_FILTER
from helpers import SAMPLE, SAMPLE_PROMPT, card_yaml, load_script, script, write_jsonl
from test_prep import SEEDS, expanded

from synth_datasets import get_provenance
from synth_datasets.cli import load_result
from synth_datasets.prep import drop_duplicates, drop_errors, mix_in_seeds, to_messages

# huggingface_hub's own LFS upload warns about its use of httpx; not ours to fix.
pytestmark = pytest.mark.filterwarnings(LFS_PUT_WARNING_FILTER)


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("expand_and_push.py", ["--push-to-hub", "--output", "--local", "--report-json"]),
        ("to_sft.py", ["--mix-in-seeds", "--test-size", "--seed", "--push-to-hub", "--output"]),
        ("ray_expand.py", ["--local", "--address", "--actors", "--max-concurrency", "--output"]),
        ("split_by_node.py", ["expand", "merge"]),
    ],
)
def test_help(name, options):
    proc = script(name, "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: {name}")
    for option in options:
        assert option in proc.stdout


def test_expand_and_push_writes_folder_with_report(tmp_path):
    out = tmp_path / "out"
    proc = script(
        "expand_and_push.py",
        str(SAMPLE),
        "--local",
        "--prompt",
        "More like these.",
        "--columns",
        "conv_prefix,response",
        "--limit",
        "4",
        "--multiplier",
        "2",
        "--output",
        str(out),
        "--cache-dir",
        str(tmp_path / "c"),
        "--report-json",
        str(out / "report.json"),  # into the output folder, which does not exist yet
    )
    assert proc.returncode == 0, proc.stderr
    assert "expanded 4 seed rows into 8 rows" in proc.stdout
    assert "| Rows | 8 |" in proc.stdout and "### Rows per seed" in proc.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["rows"] == 8 and report["linked_seeds"] == 4 and report["multiplier"] == 2
    loaded = datasets.load_dataset(str(out), split="train")
    assert len(loaded) == 8 and sorted(set(loaded["source_index"])) == [0, 1, 2, 3]
    card = (out / "README.md").read_text()
    assert "## Statistics" in card and "| Rows | 8 |" in card and "More like these." in card
    assert json.loads((out / "synth_manifest.json").read_text())["num_rows"] == 8
    # No destination: a usage error before anything is sent.
    proc = script("expand_and_push.py", str(SAMPLE), "--local", "--prompt", "p")
    assert proc.returncode == 2 and "--output DIR and/or --push-to-hub" in proc.stderr
    assert "expanded" not in proc.stdout


def test_expand_and_push_to_the_hub(tmp_path, fake_hub):
    proc = script(
        "expand_and_push.py",
        str(SAMPLE),
        "--local",
        "--prompt",
        "p",
        "--limit",
        "3",
        "--multiplier",
        "2",
        "--push-to-hub",
        "me/synthetic",
        "--license",
        "mit",
        "--cache-dir",
        str(tmp_path / "c"),
        env={"HF_TOKEN": HUB_TOKEN},
    )
    assert proc.returncode == 0, proc.stderr
    assert "pushed 6 rows and the dataset card" in proc.stdout
    assert fake_hub.repos["me/synthetic"].private is True
    readme = fake_hub.files("me/synthetic")["README.md"].decode()
    assert "license: mit" in readme and "| Rows | 6 |" in readme
    assert 'load_dataset("me/synthetic", split="train")' in readme
    loaded = datasets.load_dataset("me/synthetic", split="train", token=HUB_TOKEN)
    assert len(loaded) == 6 and "error" in loaded.column_names


@pytest.fixture
def expanded_dir(tmp_path) -> tuple[Path, Path]:
    """A save_to_disk folder of a known expansion, and its seeds as a jsonl file."""
    folder = tmp_path / "expanded"
    expanded().save_to_disk(str(folder))
    return folder, write_jsonl(tmp_path / "seeds.jsonl", SEEDS)


def test_to_sft_writes_splits(tmp_path, expanded_dir):
    folder, seeds = expanded_dir
    out = tmp_path / "sft"
    proc = script(
        "to_sft.py",
        str(folder),
        "--mix-in-seeds",
        str(seeds),
        "--keep-columns",
        "topic",
        "--test-size",
        "2",
        "--seed",
        "7",
        "--format",
        "jsonl",
        "--output",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    # 7 rows - 2 errors + 3 seeds - 3 duplicates (exact, near, a seed's copy) = 5.
    assert (
        "rows: 7; error rows dropped: 2; seed rows mixed in: 3; duplicates dropped: 3 "
        "-> train 3, test 2" in proc.stdout
    )
    splits = datasets.load_dataset(str(out))
    assert {k: len(v) for k, v in splits.items()} == {"train": 3, "test": 2}
    # The card is the record of what the steps removed and of how the rows were generated.
    card = (out / "README.md").read_text()
    for line in (
        "| rows of the expanded dataset | 7 |",
        "| error rows dropped | 2 |",
        "| seed rows mixed in | 3 |",
        "| duplicates dropped | 3 |",
        "| rows kept | 5 |",
        "| `train` | 3 |",
        "| `test` | 2 |",
        "3 generations were asked for each seed row",
        "`train_test_split(test_size=2, seed=7)`",
        "near (MinHash, Jaccard >= 0.",
        "| `messages` |",
    ):
        assert line in card, line
    assert sorted(splits["train"].column_names) == ["messages", "topic"]
    for m in [*splits["train"]["messages"], *splits["test"]["messages"]]:
        assert [t["role"] for t in m] == ["user", "assistant"]
    # The same split as the library steps with the same seed: the script adds nothing of its own.
    ds = drop_duplicates(
        mix_in_seeds(drop_errors(expanded()), datasets.Dataset.from_list(SEEDS)), near=True
    )
    expected = load_script("to_sft.py").split(to_messages(ds, keep_columns=["topic"]), 2, 7)
    assert list(splits["test"]["messages"]) == list(expected["test"]["messages"])


def test_to_sft_pushes_and_refuses_bad_input(tmp_path, expanded_dir, fake_hub):
    folder, _ = expanded_dir
    proc = script(
        "to_sft.py",
        str(folder),
        "--test-size",
        "0.25",
        "--no-near",
        "--push-to-hub",
        "me/sft",
        env={"HF_TOKEN": HUB_TOKEN},
    )
    assert proc.returncode == 0, proc.stderr
    assert "duplicates dropped: 1 -> train 3, test 1" in proc.stdout  # exact only
    loaded = datasets.load_dataset("me/sft", token=HUB_TOKEN)
    assert {k: len(v) for k, v in loaded.items()} == {"train": 3, "test": 1}
    readme = fake_hub.files("me/sft")["README.md"].decode()
    assert "## How it was made" in readme and "| duplicates dropped | 1 |" in readme
    assert "exact duplicates only" in readme and 'load_dataset("me/sft")' in readme
    assert "dataset_info:" in readme  # datasets merged its YAML into the card, not over it
    assert loaded["train"].column_names == ["messages"]
    target = tmp_path / "never"
    proc = script("to_sft.py", str(folder), "--prefix-column", "prompt", "--output", str(target))
    assert proc.returncode == 2 and "no column(s) ['prompt']" in proc.stderr
    assert not target.exists()


def test_bench_quick_runs_and_reports_what_it_measured(tmp_path):
    """The benchmark itself (figures are not asserted: machines are noisy). What is asserted is
    what holds by construction: every row made, and a kill -9 re-sends at most the requests in
    flight, one per thread."""
    out = tmp_path / "bench.json"
    proc = script("bench.py", "--quick", "--only", "cpu,resume", "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "3. client CPU per row" in proc.stdout and "5. resume after kill -9" in proc.stdout
    results = json.loads(out.read_text())["results"]
    for run in results["cpu"].values():
        assert run["rows"] == run["examples"] * 4 and run["errors"] == 0
        assert run["server_requests"] == run["examples"] // 8  # request_size 8, none retried
        assert run["cpu_us_per_row"] > 0
    resume = results["resume"]
    assert resume["rerun_rows"] == resume["examples"] * 4
    # Killed mid-run as a rule; on a starved machine the kill may come late, which is no failure.
    assert 0 < resume["cached_at_kill"] <= resume["clean_requests"]
    assert resume["resent"] <= resume["max_concurrency"]


# --------------------------------------------------------------------------------------------
# Card options, and the cluster scripts run for real


def test_expand_and_push_language_and_task_category_land_in_the_card(tmp_path):
    out = tmp_path / "out"
    code = load_script("expand_and_push.py").main(
        [
            str(SAMPLE),
            "--local",
            "--prompt",
            "p",
            "--limit",
            "2",
            "--multiplier",
            "2",
            "--language",
            "en",
            "--language",
            "fr",
            "--task-category",
            "text-generation",
            "--task-category",
            "question-answering",
            "--output",
            str(out),
            "--cache-dir",
            str(tmp_path / "c"),
        ]
    )
    assert code == 0
    meta, _ = card_yaml((out / "README.md").read_text())
    assert meta["language"] == ["en", "fr"]
    assert meta["task_categories"] == ["text-generation", "question-answering"]


def test_to_sft_language_and_task_category_land_in_the_card(tmp_path, expanded_dir):
    folder, _ = expanded_dir
    out = tmp_path / "sft"
    args = [str(folder), "--test-size", "0", "--output", str(out), "--language", "de"]
    assert load_script("to_sft.py").main([*args, "--task-category", "text-generation"]) == 0
    meta, _ = card_yaml((out / "README.md").read_text())
    assert meta["language"] == ["de"]
    assert meta["task_categories"] == ["text-generation"]


@pytest.mark.slow
def test_ray_expand_local_run(tmp_path):
    """A real run on a local Ray (2 actors) against the bundled reference server."""
    out = tmp_path / "out"
    proc = script(
        "ray_expand.py",
        str(SAMPLE),
        "--local",
        "--num-cpus",
        "2",
        "--prompt-file",
        str(SAMPLE_PROMPT),
        "--columns",
        "conv_prefix,response",
        "--limit",
        "6",
        "--multiplier",
        "2",
        "--request-size",
        "2",
        "--actors",
        "2",
        "--max-concurrency",
        "2",
        "--output",
        str(out),
        "--cache-dir",
        str(tmp_path / "c"),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = load_result(out)
    assert len(result) == 12 and result["source_index"] == sorted(result["source_index"])
    assert set(result["source_index"]) == set(range(6))
    assert all(error is None for error in result["error"])
    provenance = get_provenance(result)
    assert provenance is not None and provenance["engine"]["name"] == "ray"
    assert provenance["prompt"] == SAMPLE_PROMPT.read_text()
    assert json.loads((out / "synth_manifest.json").read_text())["num_rows"] == 12


def test_split_by_node_expand_then_merge(tmp_path):
    split_by_node = load_script("split_by_node.py")
    common = [str(SAMPLE), "--local", "--prompt", "p", "--multiplier", "2", "--world-size", "2"]
    common += ["--request-size", "3", "--cache-dir", str(tmp_path / "c")]
    nodes = [tmp_path / f"node-{rank}" for rank in range(2)]
    for rank, node in enumerate(nodes):
        assert (
            split_by_node.main(["expand", *common, "--rank", str(rank), "--output", str(node)]) == 0
        )
    merged_dir = tmp_path / "merged"
    assert split_by_node.main(["merge", *map(str, nodes), "--output", str(merged_dir)]) == 0
    parts = [load_result(node) for node in nodes]
    merged = load_result(merged_dir)
    assert len(merged) == 24 == sum(len(p) for p in parts)  # the 12 sample seeds, 2 rows each
    assert merged["source_index"] == sorted(merged["source_index"])
    assert set(merged["source_index"]) == set(range(12))  # global indices, not each shard's own
    assert merged.to_list() == parts[0].to_list() + parts[1].to_list()
    provenance = get_provenance(merged)
    assert provenance is not None and provenance["nodes"] == 2
    assert provenance["source"]["num_rows"] == 12
