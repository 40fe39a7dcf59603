"""The `synth-datasets` command, run as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
from conftest import MODEL_ID

SAMPLE = Path(__file__).resolve().parents[1] / "synth_datasets" / "data" / "sample_seeds.jsonl"


def cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "synth_datasets.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )


def test_expand_local_writes_output(tmp_path):
    out_dir = tmp_path / "out"
    proc = cli(
        "expand",
        str(SAMPLE),
        "--local",
        "--prompt",
        "More like these.",
        "--columns",
        "conv_prefix,response",
        "--multiplier",
        "3",
        "--limit",
        "5",
        "--output",
        str(out_dir),
        "--cache-dir",
        str(tmp_path / "c"),
    )
    assert proc.returncode == 0, proc.stderr
    assert "not a language model" in proc.stdout
    assert "expanded 5 seed rows into 15 rows" in proc.stdout
    loaded = datasets.load_dataset(str(out_dir), split="train")
    assert len(loaded) == 15
    assert sorted(set(loaded["source_index"])) == list(range(5))
    assert set(loaded.column_names) >= {"conv_prefix", "response", "topic", "id", "source_index"}
    manifest = json.loads((out_dir / "synth_manifest.json").read_text())
    assert manifest["provenance"]["multiplier"] == 3
    assert manifest["provenance"]["columns"] == ["conv_prefix", "response"]
    assert manifest["num_rows"] == 15


def test_expand_jsonl_output_and_csv_source(tmp_path):
    src = tmp_path / "seeds.csv"
    src.write_text("q,a\nwhat is up?,the sky\nhow are you?,fine thanks\n")
    proc = cli(
        "expand",
        str(src),
        "--local",
        "--prompt",
        "p",
        "--multiplier",
        "2",
        "--format",
        "jsonl",
        "--output",
        str(tmp_path / "o"),
        "--cache-dir",
        str(tmp_path / "c"),
    )
    assert proc.returncode == 0, proc.stderr
    lines = (tmp_path / "o" / "data" / "train-00000-of-00001.jsonl").read_text().splitlines()
    assert len(lines) == 4 and json.loads(lines[0])["source_index"] == 0


def test_dry_run_sends_nothing_and_masks_token(tmp_path):
    secret = "sk-dry-run-secret-123456"
    proc = cli(
        "expand",
        str(SAMPLE),
        "--dry-run",
        "--prompt",
        "p",
        "--model-id",
        MODEL_ID,
        "--request-size",
        "5",
        env={"COLLINEAR_API_KEY": secret, "COLLINEAR_BASE_URL": "http://127.0.0.1:9"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "12 seed rows -> 3 requests" in proc.stdout
    assert "48 generations targeted" in proc.stdout
    assert "Bearer ***" in proc.stdout
    assert secret not in proc.stdout + proc.stderr
    body = proc.stdout.split("first request body:\n", 1)[1].rsplit("dry run", 1)[0]
    assert len(json.loads(body)["examples"]) == 5


def test_save_to_disk_source(tmp_path):
    datasets.Dataset.from_list([{"q": "one question"}, {"q": "two question"}]).save_to_disk(
        str(tmp_path / "saved")
    )
    proc = cli(
        "expand",
        str(tmp_path / "saved"),
        "--local",
        "--prompt",
        "p",
        "--multiplier",
        "2",
        "--cache-dir",
        str(tmp_path / "c"),
    )
    assert proc.returncode == 0, proc.stderr
    assert "expanded 2 seed rows into 4 rows" in proc.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["expand", "missing.jsonl", "--prompt", "p", "--local"], "no such file"),
        (["expand", str(SAMPLE), "--local"], "--prompt"),
        (
            ["expand", str(SAMPLE), "--local", "--prompt", "p", "--columns", "nope"],
            "unknown column",
        ),
        (["expand", str(SAMPLE), "--local", "--prompt", "p", "--multiplier", "0"], "multiplier"),
        (["expand", str(SAMPLE), "--prompt", "p", "--model-id", MODEL_ID], "COLLINEAR_API_KEY"),
    ],
)
def test_usage_errors_exit_2_with_one_line(args, needle, tmp_path):
    proc = cli(*args, "--cache-dir", str(tmp_path)) if args[0] == "expand" else cli(*args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    # One error line, last (a progress bar of the loading step may come before it).
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and needle in errors[0], proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == errors[0]
    assert "Traceback" not in proc.stderr


def test_failure_exits_1(tmp_path):
    proc = cli(
        "expand",
        str(SAMPLE),
        "--prompt",
        "p",
        "--model-id",
        MODEL_ID,
        "--cache-dir",
        str(tmp_path),
        "--max-retries",
        "1",
        env={"COLLINEAR_API_KEY": "k", "COLLINEAR_BASE_URL": "http://127.0.0.1:9"},
        timeout=180,
    )
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("synth-datasets: error: connection")
    assert "seed rows" in errors[0]
    assert "Traceback" not in proc.stderr and "Retrying" not in proc.stderr


def test_serve_help_says_not_a_language_model():
    proc = cli("serve", "--help")
    assert proc.returncode == 0
    assert "not a language model" in " ".join(proc.stdout.split()).lower()


def test_output_folder_has_card_and_loads(tmp_path):
    out_dir = tmp_path / "out"
    proc = cli(
        "expand",
        str(SAMPLE),
        "--local",
        "--prompt",
        "More like these.",
        "--limit",
        "4",
        "--multiplier",
        "2",
        "--output",
        str(out_dir),
        "--cache-dir",
        str(tmp_path / "c"),
        "--license",
        "cc-by-4.0",
    )
    assert proc.returncode == 0, proc.stderr
    readme = (out_dir / "README.md").read_text()
    assert "license: cc-by-4.0" in readme and "## How it was made" in readme
    assert "More like these." in readme
    assert len(datasets.load_dataset(str(out_dir), split="train")) == 8
    # `card` rewrites it from the folder alone, prompt withheld on request.
    (out_dir / "README.md").unlink()
    proc = cli("card", str(out_dir), "--no-prompt-in-card")
    assert proc.returncode == 0, proc.stderr
    readme = (out_dir / "README.md").read_text()
    assert "More like these." not in readme and "## Statistics" in readme


def test_push_folder_and_expand_push_to_hub(tmp_path, fake_hub):
    from conftest import HUB_TOKEN

    out_dir = tmp_path / "out"
    proc = cli(
        "expand",
        str(SAMPLE),
        "--local",
        "--prompt",
        "p",
        "--limit",
        "3",
        "--multiplier",
        "2",
        "--output",
        str(out_dir),
        "--cache-dir",
        str(tmp_path / "c"),
    )
    assert proc.returncode == 0, proc.stderr
    proc = cli("push", str(out_dir), "me/from-folder", env={"HF_TOKEN": HUB_TOKEN})
    assert proc.returncode == 0, proc.stderr
    assert fake_hub.repos["me/from-folder"].private is True
    files = fake_hub.files("me/from-folder")
    assert "README.md" in files and any(p.endswith(".parquet") for p in files)
    assert b"## How it was made" in files["README.md"]

    proc = cli(
        "expand",
        str(SAMPLE),
        "--local",
        "--prompt",
        "p",
        "--limit",
        "3",
        "--multiplier",
        "2",
        "--cache-dir",
        str(tmp_path / "c"),
        "--push-to-hub",
        "me/direct",
        "--public",
        env={"HF_TOKEN": HUB_TOKEN},
    )
    assert proc.returncode == 0, proc.stderr
    assert fake_hub.repos["me/direct"].private is False
    loaded = datasets.load_dataset("me/direct", split="train", token=HUB_TOKEN)
    assert len(loaded) == 6


def test_push_to_hub_without_token_fails_before_any_request(tmp_path, fake_hub):
    proc = cli(
        "expand",
        str(SAMPLE),
        "--local",
        "--prompt",
        "p",
        "--push-to-hub",
        "me/x",
        "--cache-dir",
        str(tmp_path / "c"),
        env={"HF_TOKEN": ""},
    )
    assert proc.returncode == 2
    assert "HF_TOKEN" in proc.stderr and "expanded" not in proc.stdout
    assert fake_hub.requests == []


@pytest.mark.filterwarnings("ignore:Use 'content=:DeprecationWarning")
def test_expand_from_hub_id_with_split_and_config(tmp_path, fake_hub):
    from conftest import HUB_TOKEN

    seeds = datasets.Dataset.from_list([{"q": f"hub question {i}"} for i in range(3)])
    seeds.push_to_hub("me/seeds", config_name="qa", split="validation", token=HUB_TOKEN)
    proc = cli(
        "expand",
        "me/seeds",
        "--config",
        "qa",
        "--split",
        "validation",
        "--local",
        "--prompt",
        "p",
        "--multiplier",
        "2",
        "--cache-dir",
        str(tmp_path / "c"),
        "--output",
        str(tmp_path / "o"),
        env={"HF_TOKEN": HUB_TOKEN},
    )
    assert proc.returncode == 0, proc.stderr
    assert "expanded 3 seed rows into 6 rows" in proc.stdout
    manifest = json.loads((tmp_path / "o" / "synth_manifest.json").read_text())
    assert manifest["provenance"]["source"]["name"] == "me/seeds"
    assert manifest["provenance"]["source"]["config"] == "qa"
    head = fake_hub.commits("me/seeds")[-1].sha
    assert manifest["provenance"]["source"]["revision"] == head
    assert (
        "[me/seeds](https://huggingface.co/datasets/me/seeds)"
        in (tmp_path / "o" / "README.md").read_text()
    )
