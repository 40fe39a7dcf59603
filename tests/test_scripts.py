"""scripts/expand_and_push.py and scripts/to_sft.py, run as a user runs them: subprocesses."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import datasets
import pytest
from conftest import HUB_TOKEN
from fakehub import LFS_PUT_WARNING_FILTER
from test_prep import SEEDS, expanded

from synth_datasets.prep import drop_duplicates, drop_errors, mix_in_seeds, to_messages

# huggingface_hub's own LFS upload warns about its use of httpx; not ours to fix.
pytestmark = pytest.mark.filterwarnings(LFS_PUT_WARNING_FILTER)

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
SAMPLE = ROOT / "synth_datasets" / "data" / "sample_seeds.jsonl"


def script(name: str, *args: str, env: dict[str, str] | None = None):
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, str(SCRIPTS / name), *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=full_env,
    )


def load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name.removesuffix(".py"), SCRIPTS / name)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("expand_and_push.py", ["--push-to-hub", "--output", "--local", "--report-json"]),
        ("to_sft.py", ["--mix-in-seeds", "--test-size", "--seed", "--push-to-hub", "--output"]),
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
        str(tmp_path / "report.json"),
    )
    assert proc.returncode == 0, proc.stderr
    assert "expanded 4 seed rows into 8 rows" in proc.stdout
    assert "| Rows | 8 |" in proc.stdout and "### Rows per seed" in proc.stdout
    report = json.loads((tmp_path / "report.json").read_text())
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
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text("".join(json.dumps(s) + "\n" for s in SEEDS))
    return folder, seeds


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
