"""The `synth-datasets` command: as a subprocess (what a user runs), and through `main([...])`
against a reference server of the test's own where the test counts what reached the server."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import datasets
import pytest
from datasets import Dataset
from fakehub import HUB_TOKEN
from fakeopenai import FakeOpenAI
from helpers import (
    MODEL_ID,
    SAMPLE,
    RecordingProxy,
    card_yaml,
    cli,
    error_lines,
    lock_held_by_another_process,
    qa_rows,
    write_jsonl,
)

from synth_datasets import __version__
from synth_datasets.cli import main
from synth_datasets.testing import ReferenceServer


def expand_local(cache: Path, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    """``synth-datasets expand SAMPLE --local ARGS...`` with its own request cache."""
    return cli("expand", str(SAMPLE), "--local", *args, "--cache-dir", str(cache), **kw)


def test_expand_local_writes_output(tmp_path):
    out_dir = tmp_path / "out"
    proc = expand_local(
        tmp_path / "c",
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


def test_dry_run_needs_no_model_id(capsys: pytest.CaptureFixture[str]) -> None:
    """It sends nothing, so it runs with neither a model id nor a key, and says what is missing."""
    assert main(["expand", str(SAMPLE), "--dry-run", "--prompt", "p"]) == 0
    out = capsys.readouterr().out
    body = json.loads(out.split("first request body:\n", 1)[1].rsplit("dry run", 1)[0])
    assert body["model_id"] == "<not set: --model-id or COLLINEAR_MODEL_ID>"
    assert "(no key set: COLLINEAR_API_KEY)" in out
    # A model id that is given is still checked.
    assert main(["expand", str(SAMPLE), "--dry-run", "--prompt", "p", "--model-id", "x"]) == 2
    assert "--model-id must be a UUID" in capsys.readouterr().err


def test_a_bad_key_is_named_by_its_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COLLINEAR_API_KEY", "sk-with a space")
    assert main(["expand", str(SAMPLE), "--prompt", "p", "--model-id", MODEL_ID]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (
        "synth-datasets: error: the API key in COLLINEAR_API_KEY holds spaces, line breaks or "
        "non-ASCII characters"
    )


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
            "unknown column(s) in --columns: 'nope'",
        ),
        (
            ["expand", str(SAMPLE), "--local", "--prompt", "p", "--multiplier", "0"],
            "--multiplier must be an int >= 1, got 0",
        ),
        (
            ["expand", str(SAMPLE), "--local", "--prompt", "p", "--max-request-bytes", "50"],
            "over --max-request-bytes (50)",
        ),
        (
            ["expand", str(SAMPLE), "--prompt", "p", "--model-id", MODEL_ID],
            "no API key: set COLLINEAR_API_KEY or use --local (the offline reference server)",
        ),
        (
            ["expand", str(SAMPLE), "--prompt", "p"],
            "--model-id is not set: pass --model-id or set COLLINEAR_MODEL_ID",
        ),
    ],
)
def test_usage_errors_exit_2_with_one_line(args, needle, tmp_path):
    proc = cli(*args, "--cache-dir", str(tmp_path)) if args[0] == "expand" else cli(*args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    # One error line, last (a progress bar of the loading step may come before it).
    errors = error_lines(proc.stderr)
    assert len(errors) == 1 and needle in errors[0], proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == errors[0]
    assert "Traceback" not in proc.stderr
    # The flags and variables the user types, never a Python keyword (`model_id=`, `api_key=`).
    assert not re.search(r"\b[a-z_]+=", errors[0]), errors[0]


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
    errors = error_lines(proc.stderr)
    assert len(errors) == 1 and errors[0].startswith("synth-datasets: error: connection")
    assert "seed rows" in errors[0]
    assert "Traceback" not in proc.stderr and "Retrying" not in proc.stderr


def test_serve_help_says_not_a_language_model():
    proc = cli("serve", "--help")
    assert proc.returncode == 0
    assert "not a language model" in " ".join(proc.stdout.split()).lower()


def test_output_folder_has_card_and_loads(tmp_path):
    out_dir = tmp_path / "out"
    proc = expand_local(
        tmp_path / "c",
        "--prompt",
        "More like these.",
        "--limit",
        "4",
        "--multiplier",
        "2",
        "--output",
        str(out_dir),
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
    out_dir = tmp_path / "out"
    proc = expand_local(
        tmp_path / "c",
        "--prompt",
        "p",
        "--limit",
        "3",
        "--multiplier",
        "2",
        "--output",
        str(out_dir),
    )
    assert proc.returncode == 0, proc.stderr
    # Rows of the offline engine: refused, one line, exit 2, nothing reached the Hub.
    proc = cli("push", str(out_dir), "me/from-folder", env={"HF_TOKEN": HUB_TOKEN})
    assert proc.returncode == 2
    assert error_lines(proc.stderr) == [
        "synth-datasets: error: refusing to push rows generated by the offline rewriting engine "
        "bundled with synth_datasets, not by Collinear (word substitution, not a language "
        "model): pass --allow-offline-data to publish them anyway"
    ]
    assert fake_hub.requests == []
    proc = cli(
        "push",
        str(out_dir),
        "me/from-folder",
        "--allow-offline-data",
        env={"HF_TOKEN": HUB_TOKEN},
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(
        "note: these rows were generated by the offline rewriting engine bundled with "
        "synth_datasets, not by Collinear"
    )
    assert lines[-1].startswith("pushed 6 rows and the dataset card to ")
    assert fake_hub.repos["me/from-folder"].private is True
    files = fake_hub.files("me/from-folder")
    assert "README.md" in files and any(p.endswith(".parquet") for p in files)
    assert b"## How it was made" in files["README.md"]
    # Titled by the repo, not by the folder the rows were read from.
    assert card_yaml(files["README.md"])[0]["pretty_name"] == "from-folder"

    direct = ["--prompt", "p", "--limit", "3", "--multiplier", "2", "--push-to-hub", "me/direct"]
    proc = expand_local(tmp_path / "c", *direct, "--public", env={"HF_TOKEN": HUB_TOKEN})
    assert proc.returncode == 2 and "--allow-offline-data" in proc.stderr
    assert "expanded" not in proc.stdout  # refused before the run, not after it
    direct += ["--public", "--allow-offline-data"]
    proc = expand_local(tmp_path / "c", *direct, env={"HF_TOKEN": HUB_TOKEN})
    assert proc.returncode == 0, proc.stderr
    assert fake_hub.repos["me/direct"].private is False
    loaded = datasets.load_dataset("me/direct", split="train", token=HUB_TOKEN)
    assert len(loaded) == 6
    _, body = card_yaml(fake_hub.files("me/direct")["README.md"])
    assert "| Multiplier | 2 generations" in body and "| Seed rows in the source | 3 |" in body
    assert "Setting num_proc" not in proc.stderr


def test_push_keeps_a_hand_written_card_and_says_so(tmp_path, fake_hub):
    out_dir = tmp_path / "out"
    proc = expand_local(tmp_path / "c", "--prompt", "p", "--limit", "2", "--output", str(out_dir))
    assert proc.returncode == 0, proc.stderr
    hand = b"# Our set\n\nWritten by us.\n"
    fake_hub.add_repo("me/hand", {"README.md": hand}, private=True)
    args = ["push", str(out_dir), "me/hand", "--allow-offline-data"]
    proc = cli(*args, env={"HF_TOKEN": HUB_TOKEN})
    assert proc.returncode == 0, proc.stderr
    last = proc.stdout.splitlines()[-1]
    assert last.startswith("pushed 8 rows to ")
    assert last.endswith(
        "; kept the existing hand-written dataset card (pass --overwrite-card to replace it)"
    )
    assert "and the dataset card" not in proc.stdout
    assert card_yaml(fake_hub.files("me/hand")["README.md"])[1].endswith("Written by us.\n")
    proc = cli(*args, "--overwrite-card", env={"HF_TOKEN": HUB_TOKEN})
    assert proc.returncode == 0, proc.stderr
    assert "in place of the hand-written one" in proc.stdout
    assert b"## How it was made" in fake_hub.files("me/hand")["README.md"]


def test_push_to_hub_without_token_fails_before_any_request(tmp_path, fake_hub):
    proc = expand_local(
        tmp_path / "c", "--prompt", "p", "--push-to-hub", "me/x", env={"HF_TOKEN": ""}
    )
    assert proc.returncode == 2
    assert "HF_TOKEN" in proc.stderr and "expanded" not in proc.stdout
    assert fake_hub.requests == []


@pytest.mark.filterwarnings("ignore:Use 'content=:DeprecationWarning")
def test_expand_from_hub_id_with_split_and_config(tmp_path, fake_hub):
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


# --------------------------------------------------------------------------------------------
# Options, through main([...]) against a reference server of the test's own


@pytest.fixture
def endpoint(ref_server: ReferenceServer, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The options that point `expand` at the test's reference server (token in the env)."""
    monkeypatch.setenv("COLLINEAR_API_KEY", ref_server.token)
    return ["--base-url", ref_server.url, "--model-id", MODEL_ID]


@pytest.fixture
def seeds_file(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "seeds.jsonl", qa_rows(4))


def manifest(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "synth_manifest.json").read_text())  # type: ignore[no-any-return]


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"synth-datasets {__version__}"


def test_prompt_file_is_the_prompt_sent_and_recorded(
    ref_server: ReferenceServer, endpoint: list[str], seeds_file: Path, tmp_path: Path
) -> None:
    prompt = "Write a new pair like this one.\nKeep it short — and in English.\n"
    prompt_file = tmp_path / "prompt.txt"
    prompt_file.write_text(prompt, encoding="utf-8")
    out = tmp_path / "out"
    args = ["expand", str(seeds_file), "--prompt-file", str(prompt_file), *endpoint]
    assert main([*args, "--output", str(out), "--cache-dir", str(tmp_path / "c")]) == 0
    assert manifest(out)["provenance"]["prompt"] == prompt  # the file's text, exactly
    assert "Keep it short — and in English." in (out / "README.md").read_text()
    assert ref_server.stats()["requests"] == 1
    # A prompt file that is not there: a usage error, nothing sent.
    missing = ["expand", str(seeds_file), "--prompt-file", str(tmp_path / "nope.txt"), *endpoint]
    assert main(missing) == 2
    assert ref_server.stats()["requests"] == 1


def test_no_cache_sends_every_request_again_and_writes_no_cache(
    ref_server: ReferenceServer, endpoint: list[str], seeds_file: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    args = ["expand", str(seeds_file), "--prompt", "p", *endpoint, "--cache-dir", str(cache)]
    args += ["--request-size", "2"]
    assert main([*args, "--no-cache"]) == 0
    assert main([*args, "--no-cache"]) == 0
    assert ref_server.stats()["requests"] == 4  # 2 requests, sent by both runs
    assert not (cache / "requests.sqlite").exists()
    # Without it (a new run id, so that nothing earlier answers), the answers are cached.
    assert main([*args, "--run-id", "cached"]) == 0
    assert ref_server.stats()["requests"] == 6
    assert (cache / "requests.sqlite").exists()


def test_no_original_leaves_the_original_column_out(
    endpoint: list[str], seeds_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = ["expand", str(seeds_file), "--prompt", "p", *endpoint, "--no-original"]
    assert main([*args, "--output", str(out), "--cache-dir", str(tmp_path / "c")]) == 0
    loaded = datasets.load_dataset(str(out), split="train")
    assert "original" not in loaded.column_names
    assert {"q", "a", "source_index", "generated_raw", "error"} <= set(loaded.column_names)
    assert sorted(set(loaded["source_index"])) == [0, 1, 2, 3] and len(loaded) == 16


def test_max_request_bytes_splits_requests_and_refuses_a_row_too_large(
    ref_server: ReferenceServer, endpoint: list[str], tmp_path: Path
) -> None:
    seeds = write_jsonl(tmp_path / "long.jsonl", [{"q": f"q {i} " + "x" * 300} for i in range(8)])
    out = tmp_path / "out"
    args = ["expand", str(seeds), "--prompt", "p", *endpoint, "--multiplier", "1"]
    args += ["--request-size", "8", "--cache-dir", str(tmp_path / "c")]
    assert main([*args, "--max-request-bytes", "1000", "--output", str(out)]) == 0
    # ~330 bytes an example: at most two fit in 1000 bytes with the body around them.
    assert ref_server.stats()["requests"] == 4
    assert sorted(datasets.load_dataset(str(out), split="train")["source_index"]) == list(range(8))
    ref_server.reset_stats()
    assert main([*args, "--max-request-bytes", "200", "--run-id", "again"]) == 2
    assert ref_server.stats()["requests"] == 0  # refused up front


@pytest.mark.filterwarnings("ignore:Use 'content=:DeprecationWarning")
def test_revision_reads_the_seeds_of_that_branch(
    fake_hub: Any,
    endpoint: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    Dataset.from_list(qa_rows(2)).push_to_hub("me/seeds", token=HUB_TOKEN)
    Dataset.from_list(qa_rows(5)).push_to_hub("me/seeds", token=HUB_TOKEN, revision="dev")
    monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)
    out = tmp_path / "out"
    args = ["expand", "me/seeds", "--revision", "dev", "--prompt", "p", *endpoint]
    assert main([*args, "--output", str(out), "--cache-dir", str(tmp_path / "c")]) == 0
    assert "expanded 5 seed rows into 20 rows" in capsys.readouterr().out
    source = manifest(out)["provenance"]["source"]
    assert source["name"] == "me/seeds"
    assert source["revision"] == fake_hub.commits("me/seeds", "dev")[-1].sha
    assert source["revision"] != fake_hub.commits("me/seeds")[-1].sha


def test_rows_of_serve_on_its_own_port_are_labelled_offline(tmp_path):
    """No --local: the run asks the server what it is, and `serve` names its offline engine."""
    server = subprocess.Popen(
        [sys.executable, "-m", "synth_datasets.testing", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out_dir = tmp_path / "out"
    try:
        assert server.stdout is not None
        url, token = server.stdout.readline().split()[1:3]
        proc = cli(
            "expand",
            str(SAMPLE),
            "--base-url",
            url,
            "--model-id",
            MODEL_ID,
            "--prompt",
            "p",
            "--limit",
            "2",
            "--output",
            str(out_dir),
            "--cache-dir",
            str(tmp_path / "c"),
            env={"COLLINEAR_API_KEY": token.removeprefix("token=")},
        )
    finally:
        server.terminate()
        server.communicate(timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == (
        "note: these rows were generated by the offline rewriting engine bundled with "
        "synth_datasets, not by Collinear (word substitution, not a language model)"
    )
    manifest = json.loads((out_dir / "synth_manifest.json").read_text())
    assert manifest["notice"].startswith("rows generated by the offline rewriting engine")
    _, body = card_yaml((out_dir / "README.md").read_text())
    assert "| Generated by | the offline rewriting engine bundled with synth_datasets" in body


# --------------------------------------------------------------------------------------------
# The --output folder: checked before paying, swapped in whole, never someone else's files


def test_a_rerun_replaces_its_own_output_and_a_failed_write_leaves_the_old_one(
    endpoint: list[str], seeds_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = ["expand", str(seeds_file), "--prompt", "p", *endpoint, "--output", str(out)]
    args += ["--cache-dir", str(tmp_path / "c")]
    assert main(args) == 0
    first = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    # `card` rewrites README.md: still ours, so the next run may replace it.
    assert main(["card", str(out), "--no-prompt-in-card"]) == 0
    assert main([*args, "--run-id", "second"]) == 0
    assert len(datasets.load_dataset(str(out), split="train")) == 16
    # A write that fails half-way (here the manifest cannot be written) leaves the folder as
    # it was: the old data, card and manifest, complete, and no partial file.
    second = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert second.keys() == first.keys() and second != first
    (out / ".synth_manifest.json.partial").mkdir()
    assert main([*args, "--run-id", "third"]) == 1
    (out / ".synth_manifest.json.partial").rmdir()
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == second
    assert manifest(out)["provenance"]["run_id"] == "second"


def test_a_locked_or_damaged_cache_is_one_warning_line_and_the_run_succeeds(
    ref_server: ReferenceServer, tmp_path: Path
) -> None:
    seeds = write_jsonl(tmp_path / "seeds.jsonl", qa_rows(4))
    cache = tmp_path / "cache"
    args = ["expand", str(seeds), "--prompt", "p", "--base-url", ref_server.url]
    args += ["--model-id", MODEL_ID, "--cache-dir", str(cache), "--request-size", "2"]
    env = {"COLLINEAR_API_KEY": ref_server.token}
    cache.mkdir()
    (cache / "requests.sqlite").write_bytes(b"not a database at all" * 100)
    proc = cli(*args, "--output", str(tmp_path / "a"), env=env)
    assert proc.returncode == 0, proc.stderr
    (warning,) = [line for line in proc.stderr.splitlines() if "WARNING" in line]
    (aside,) = cache.glob("requests.sqlite.damaged-*")
    assert str(cache / "requests.sqlite") in warning and str(aside) in warning
    with lock_held_by_another_process(cache / "requests.sqlite"):
        proc = cli(*args, "--run-id", "locked", "--output", str(tmp_path / "b"), env=env)
    assert proc.returncode == 0, proc.stderr
    (warning,) = [line for line in proc.stderr.splitlines() if "WARNING" in line]
    assert "2 answers could not be stored" in warning and "database is locked" in warning
    assert len(datasets.load_dataset(str(tmp_path / "b"), split="train")) == 16
    assert ref_server.stats()["requests"] == 4


# --------------------------------------------------------------------------------------------
# --local --engine openai: your own model behind an OpenAI-compatible server (a fake one here)


def test_expand_local_against_your_own_model(tmp_path: Path, seeds_file: Path, fake_hub) -> None:
    """The command of issue 17's done-when, pushed too: rows, report and card name the model."""
    with FakeOpenAI(models=["M"]) as backend:
        out = tmp_path / "out"
        proc = cli(
            "expand", str(seeds_file), "--local", "--engine", "openai",
            "--engine-base-url", backend.url, "--engine-model", "M",
            "--prompt", "Write another pair.", "--output", str(out),
            "--cache-dir", str(tmp_path / "c"), "--push-to-hub", "me/own-model",
            env={"HF_TOKEN": HUB_TOKEN},
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    host = backend.url.removeprefix("http://").removesuffix("/v1")
    made_by = f"your own model M at {host} (an OpenAI-compatible server)"
    assert f"rows are generated by {made_by}" in proc.stdout and "note:" not in proc.stdout
    assert "keeping 2 requests in flight" in proc.stdout  # 8 completions at once, 32 a request
    assert "expanded 4 seed rows into 16 rows (4 seeds linked, 0 rows with an error)" in proc.stdout
    assert len(backend.calls) == 16 and {c["body"]["model"] for c in backend.calls} == {"M"}
    rows = datasets.load_dataset(str(out), split="train")
    assert sorted(_numbers(rows["q"])) == list(range(1, 17))  # each one completion's answer
    recorded = manifest(out)["provenance"]
    assert (recorded["model"], recorded["model_host"], recorded["model_id"]) == ("M", host, None)
    assert recorded["generator"].startswith("openai-compatible/") and "notice" not in manifest(out)
    for card in ((out / "README.md").read_bytes(), fake_hub.files("me/own-model")["README.md"]):
        _, body = card_yaml(card)
        assert f"| Generated by | {made_by} |" in body and "| Model | `M` |" in body
        assert "Offline test data" not in body and "Collinear's" not in body
    report = cli("report", str(out))
    assert report.returncode == 0 and "## " in report.stdout and "note:" not in report.stdout


def _numbers(texts: list[str]) -> list[int]:
    """The call numbers in the fake's answers ("schema text 7")."""
    assert all(t.startswith("schema text ") for t in texts), texts
    return [int(t.rsplit(" ", 1)[1]) for t in texts]


_OPENAI = ["--local", "--engine", "openai", "--engine-model", "M"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (_OPENAI, "needs --engine-base-url"),
        (["--engine", "openai"], "--engine chooses the bundled server's engine: add --local"),
        (["--local", "--engine-model", "M"], "--engine-model is not an option of --engine offline"),
        ([*_OPENAI, "--engine-base-url", "x"], "--engine-base-url must be an http(s) URL"),
        (
            [*_OPENAI, "--engine-base-url", "http://127.0.0.1:9/v1"],
            "the OpenAI-compatible server at http://127.0.0.1:9/v1 does not answer",
        ),
    ],
)
def test_engine_usage_errors(
    args: list[str], needle: str, seeds_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["expand", str(seeds_file), "--prompt", "p", *args]) == 2
    errors = error_lines(capsys.readouterr().err)
    assert len(errors) == 1 and needle in errors[0], errors


def test_a_local_seed_file_reaches_no_network_and_is_named_by_its_name(tmp_path: Path) -> None:
    """datasets would ping S3 to count a download of a local file; the card would show the
    path on this machine."""
    (tmp_path / "private").mkdir()
    seeds = write_jsonl(tmp_path / "private" / "seeds.jsonl", qa_rows(3))
    out = tmp_path / "out"
    with RecordingProxy() as proxy:
        env = {"HTTP_PROXY": proxy.url, "HTTPS_PROXY": proxy.url, "ALL_PROXY": proxy.url}
        env.update(NO_PROXY="", no_proxy="", HF_HUB_OFFLINE="0")
        proc = cli(
            "expand",
            str(seeds),
            "--local",
            "--prompt",
            "p",
            "--model-id",
            MODEL_ID,
            "--multiplier",
            "2",
            "--output",
            str(out),
            "--cache-dir",
            str(tmp_path / "c"),
            env=env,
        )
    assert proc.returncode == 0, proc.stderr
    assert proxy.received == []
    assert manifest(out)["provenance"]["source"]["name"] == "seeds.jsonl"
    assert str(tmp_path / "private") not in (out / "README.md").read_text()


@pytest.mark.filterwarnings("ignore:Use 'content=:DeprecationWarning")
def test_a_run_stopped_at_its_budget_exits_3_writes_what_it_received_and_a_rerun_completes(
    ref_server: ReferenceServer,
    endpoint: list[str],
    fake_hub: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    seeds = write_jsonl(tmp_path / "seeds.jsonl", qa_rows(8))
    out = tmp_path / "out"
    monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)
    args = ["expand", str(seeds), "--prompt", "p", *endpoint, "--request-size", "2"]
    args += ["--output", str(out), "--cache-dir", str(tmp_path / "c")]
    args += ["--push-to-hub", "me/budget", "--allow-offline-data"]
    assert main([*args, "--max-requests", "1"]) == 3
    assert ref_server.stats()["requests"] == 1
    captured = capsys.readouterr()
    assert error_lines(captured.err) == []
    assert [line for line in captured.err.splitlines() if "budget" in line] == [
        "synth-datasets: stopped at the budget (--max-requests 1): 3 requests for 6 seed rows "
        "were not sent (those seeds have no rows); what was answered is cached, so a rerun with "
        "a higher --max-requests continues from there without paying for it again"
    ]
    assert "not pushed to me/budget" in captured.out
    assert fake_hub.requests == []  # a partial run is not published
    loaded = datasets.load_dataset(str(out), split="train")
    assert len(loaded) == 2 * 4 and loaded["error"] == [None] * 8
    assert manifest(out)["provenance"]["partial"]["requests_not_sent"] == 3
    assert "**Partial run.**" in (out / "README.md").read_text()

    # A higher budget continues from the cache: 3 more requests, whole, written and pushed.
    assert main([*args, "--max-requests", "10"]) == 0
    assert ref_server.stats()["requests"] == 4
    assert len(datasets.load_dataset(str(out), split="train")) == 8 * 4
    assert manifest(out)["provenance"]["partial"] is None
    assert "Partial run" not in (out / "README.md").read_text()
    assert "me/budget" in fake_hub.repos


def _local_urls(out: str) -> list[str]:
    return re.findall(r"using the local reference server at (\S+):", out)


def test_a_local_run_stopped_at_its_budget_resumes_from_the_cache_on_its_new_port(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--local serves on a new port each run, yet a rerun pays only for what was not answered."""
    seeds = write_jsonl(tmp_path / "seeds.jsonl", qa_rows(8))
    out = tmp_path / "out"
    args = ["expand", str(seeds), "--local", "--prompt", "p", "--request-size", "2", "-q"]
    args += ["--output", str(out), "--cache-dir", str(tmp_path / "c")]  # 4 requests in all
    assert main([*args, "--max-requests", "1"]) == 3
    first = capsys.readouterr().out
    assert manifest(out)["provenance"]["partial"]["requests_sent"] == 1
    # The 3 requests left fit in a budget of 3 only if the one answered comes from the cache.
    assert main([*args, "--max-requests", "3"]) == 0
    assert manifest(out)["provenance"]["partial"] is None
    assert len(datasets.load_dataset(str(out), split="train")) == 8 * 4
    (url1,), (url2,) = _local_urls(first), _local_urls(capsys.readouterr().out)
    assert url1 != url2  # another port, the same answers


def test_local_engines_never_share_answers_in_the_cache(
    tmp_path: Path, seeds_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same request body (one --model-id for all) to the offline engine and to two model
    servers: each engine is asked, and each answers a rerun from the cache."""
    cache = ["--cache-dir", str(tmp_path / "c")]
    args = ["expand", str(seeds_file), "--prompt", "p", "--model-id", MODEL_ID, "--multiplier"]
    args += ["2", "--request-size", "2", "-q", "--local", *cache]  # 2 requests of 4 completions

    def rows(*more: str) -> list[str]:
        out = tmp_path / f"out{len(list(tmp_path.iterdir()))}"
        assert main([*args, *more, "--output", str(out)]) == 0, capsys.readouterr().err
        return list(datasets.load_dataset(str(out), split="train")["q"])

    offline = rows()
    assert not any("schema text" in q for q in offline)
    with FakeOpenAI(models=["M"]) as a, FakeOpenAI(models=["M"]) as b:
        own_a = [*(["--engine", "openai", "--engine-model", "M", "--engine-base-url"]), a.url]
        own_b = [*own_a[:-1], b.url]
        assert sorted(_numbers(rows(*own_a))) == list(range(1, 9)) and len(a.calls) == 8
        assert sorted(_numbers(rows(*own_a))) == list(range(1, 9)) and len(a.calls) == 8
        assert sorted(_numbers(rows(*own_b))) == list(range(1, 9)) and len(b.calls) == 8
    assert rows() == offline


def test_dry_run_shows_the_budget(endpoint: list[str], seeds_file: Path, tmp_path: Path, capsys):
    args = ["expand", str(seeds_file), "--prompt", "p", *endpoint, "--dry-run"]
    assert main([*args, "--request-size", "1", "--max-generations", "8"]) == 0
    out = capsys.readouterr().out
    assert (
        "budget: --max-requests none, --max-generations 8: the run stops sending there, writes "
        "what it received and exits 3"
    ) in out
    assert main(args) == 0
    assert "budget: --max-requests none, --max-generations none: the plan fits" in (
        capsys.readouterr().out
    )
    # One request (4 seed rows x 4) cannot fit: refused as the run would be.
    assert main([*args, "--max-generations", "8"]) == 2
    assert "--max-generations is 8: one request of 4 seed rows" in capsys.readouterr().err
