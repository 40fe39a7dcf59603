"""The bad-input matrix: each bad input gets one clear line before any request, or a documented
conversion (datetime → ISO text, nested None → null) that the output shows.

"Before any request" is checked on the reference server's own count. Issue 14's cases: seed files
that are empty, blank, `[]`, a header-only CSV, a JSONL line that is not JSON (or not an object),
not UTF-8 (the prompt file too), a broken parquet file; an `--output` that is a file, under a file,
not writable, or holding files synth-datasets did not write; a `--cache-dir` that is (or is under)
a file; a run above the generation limit. Issue 16's: a budget that could not send one request.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
from pathlib import Path
from typing import Any

import datasets
import pytest
from datasets import Dataset, Features, Image, Value
from helpers import MODEL_ID, cli, error_lines, qa, write_jsonl
from helpers import run_expand as run

from synth_datasets import ConfigurationError, SynthClient, SynthMapper
from synth_datasets.cli import main as cli_main
from synth_datasets.testing import ReferenceServer


def refused(call: Any, needle: str, server: ReferenceServer) -> str:
    """Run ``call``; it must raise one clear ConfigurationError line and send nothing."""
    with pytest.raises(ConfigurationError) as info:
        call()
    message = str(info.value)
    assert needle in message, message
    assert "\n" not in message and 10 < len(message) < 400
    assert server.stats()["requests"] == 0
    return message


# --------------------------------------------------------------------------------------------
# Arguments


def _bytes_struct() -> Dataset:
    return Dataset.from_list([{"q": "x", "meta": {"blob": b"\x00\x01", "n": 1}}])


def _image() -> Dataset:
    ds = Dataset.from_dict({"q": ["a photo"], "img": [{"bytes": b"\x89PNG fake", "path": None}]})
    return ds.cast_column("img", Image(decode=False))


@pytest.mark.parametrize(
    ("make", "kwargs", "needle"),
    [
        pytest.param(lambda: qa(0), {}, "empty", id="empty-dataset"),
        pytest.param(lambda: [{"q": "x"}], {}, "datasets.Dataset", id="a-list"),
        pytest.param(
            lambda: datasets.DatasetDict({"train": qa(2)}), {}, "dataset['train']", id="dict"
        ),
        pytest.param(lambda: qa(2), {"multiplier": 0}, "multiplier", id="multiplier-0"),
        pytest.param(lambda: qa(2), {"multiplier": -1}, "multiplier", id="multiplier-neg"),
        pytest.param(lambda: qa(2), {"multiplier": 1.5}, "multiplier", id="multiplier-float"),
        pytest.param(lambda: qa(2), {"multiplier": True}, "multiplier", id="multiplier-bool"),
        pytest.param(lambda: qa(2), {"multiplier": "4"}, "multiplier", id="multiplier-str"),
        pytest.param(lambda: qa(2), {"model_id": "nope"}, "model_id", id="uuid-invalid"),
        pytest.param(
            lambda: qa(2),
            {"model_id": "123e4567-e89b-12d3-a456-42661417400"},
            "model_id",
            id="uuid-short",
        ),
        pytest.param(lambda: qa(2), {"model_id": 12}, "model_id", id="uuid-int"),
        pytest.param(lambda: qa(2), {"prompt": ""}, "prompt", id="prompt-empty"),
        pytest.param(lambda: qa(2), {"prompt": " \n\t"}, "prompt", id="prompt-blank"),
        pytest.param(lambda: qa(2), {"prompt": None}, "prompt", id="prompt-none"),
        pytest.param(lambda: qa(2), {"columns": ["nope"]}, "unknown column", id="unknown-column"),
        pytest.param(lambda: qa(2), {"columns": ["q", "q"]}, "twice", id="column-twice"),
        pytest.param(lambda: qa(2), {"columns": []}, "empty", id="no-columns"),
        pytest.param(
            lambda: Dataset.from_list([{"q": "x", "error": "y"}]),
            {},
            "collide",
            id="collide-error",
        ),
        pytest.param(
            lambda: Dataset.from_list([{"q": "x", "source_index": 3}]),
            {"columns": ["q"]},
            "collide",
            id="collide-passthrough",
        ),
        pytest.param(
            lambda: qa(2),
            {"generated_features": Features({"original": Value("string")})},
            "collide",
            id="collide-generated",
        ),
        pytest.param(
            lambda: qa(2),
            {"columns": ["q"], "generated_features": Features({"a": Value("string")})},
            "passthrough",
            id="generated-is-passthrough",
        ),
        pytest.param(
            lambda: Dataset.from_list([{"q": "x", "blob": b"\x00\x01"}]),
            {},
            "bytes",
            id="bytes-cell",
        ),
        pytest.param(_bytes_struct, {}, "bytes", id="bytes-nested"),
        pytest.param(_image, {}, "Image", id="image-cell"),
        pytest.param(lambda: qa(2), {"on_error": "ignore"}, "on_error", id="on-error"),
        pytest.param(lambda: qa(2), {"request_size": 0}, "request_size", id="request-size-0"),
        pytest.param(lambda: qa(2), {"request_size": True}, "request_size", id="request-size-bool"),
        pytest.param(lambda: qa(2), {"max_concurrency": 0}, "max_concurrency", id="concurrency-0"),
    ],
)
def test_bad_argument_is_refused_before_any_request(
    ref_server: ReferenceServer,
    ref_client: SynthClient,
    cache_dir: Path,
    make: Any,
    kwargs: Any,
    needle: Any,
) -> None:
    refused(lambda: run(make(), ref_client, cache_dir, **kwargs), needle, ref_server)


def test_unsendable_columns_pass_through_when_not_sent(
    ref_server: ReferenceServer, ref_client: SynthClient, cache_dir: Path
) -> None:
    ds = Dataset.from_list([{"q": "question one", "blob": b"\x00\x01"}])
    out = run(ds, ref_client, cache_dir, columns=["q"])
    assert out["blob"] == [b"\x00\x01", b"\x00\x01"] and out.features["blob"] == Value("binary")
    img = run(_image(), ref_client, cache_dir, columns=["q"])
    assert img.features["img"] == Image(decode=False)
    assert img[0]["img"] == {"bytes": b"\x89PNG fake", "path": None}
    assert ref_server.stats()["requests"] == 2


# --------------------------------------------------------------------------------------------
# Token and base URL (from the arguments or the environment)


@pytest.mark.parametrize("token", [None, "", "   "], ids=["missing", "empty", "blank"])
def test_missing_or_empty_token(
    ref_server: ReferenceServer, cache_dir: Path, monkeypatch: pytest.MonkeyPatch, token: Any
) -> None:
    monkeypatch.setenv("COLLINEAR_BASE_URL", ref_server.url)
    if token is None:
        monkeypatch.delenv("COLLINEAR_API_KEY", raising=False)
    else:
        monkeypatch.setenv("COLLINEAR_API_KEY", token)
    refused(lambda: run(qa(2), None, cache_dir), "COLLINEAR_API_KEY", ref_server)
    refused(lambda: SynthClient(token, ref_server.url), "COLLINEAR_API_KEY", ref_server)


@pytest.mark.parametrize(
    "tail", ["ab\ncd", "ab\u2013cd", "ab\u00e9cd", "ab cd"], ids=["newline", "dash", "e", "space"]
)
def test_token_that_cannot_be_a_bearer_token_is_refused(
    ref_server: ReferenceServer, cache_dir: Path, tail: Any
) -> None:
    token = "sk-SECRET-" + tail
    client = None
    with pytest.raises(ConfigurationError) as info:
        client = SynthClient(token, ref_server.url, max_retries=0)
        run(qa(2), client, cache_dir)
    assert "api_key=" in str(info.value) and tail not in str(info.value)
    assert info.value.__context__ is None or tail not in str(info.value.__context__)
    assert ref_server.stats()["requests"] == 0


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("api.collinear.ai", "https://"),
        ("localhost:8080", "https://"),
        ("127.0.0.1:8080", "https://"),
        ("ftp://api.collinear.ai", "https://"),
        ("https://", "https://"),
        ("http://api.collinear.ai", "plain http"),
        ("http://10.0.0.5:8080", "plain http"),
        ("http://[2001:db8::1]:80", "plain http"),
        ("https://alice:pa55word@api.collinear.ai", "credentials"),
        ("https://alice@api.collinear.ai", "credentials"),
        ("http://alice:pa55word@127.0.0.1:8080", "credentials"),
        ("https://api.collinear.ai/v2?tenant=1", "query"),
        ("https://api.collinear.ai/?", "query"),
        ("https://api.collinear.ai/#pa55word", "fragment"),
        ("https://api.collinear.ai:99999", "port"),
        ("https://api.collinear.ai:0", "port"),
        ("https://api.collinear.ai:pa55word", "port"),
    ],
)
def test_bad_base_url_is_refused(
    ref_server: ReferenceServer,
    cache_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    url: Any,
    needle: Any,
) -> None:
    monkeypatch.setenv("COLLINEAR_API_KEY", ref_server.token)
    monkeypatch.setenv("COLLINEAR_BASE_URL", url)
    message = refused(lambda: run(qa(2), None, cache_dir), needle, ref_server)
    assert ref_server.token not in message and "pa55word" not in message
    assert "COLLINEAR_BASE_URL" in message  # where the URL came from
    message = refused(lambda: SynthClient(ref_server.token, url), needle, ref_server)
    assert "pa55word" not in message and "base_url" in message


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("https://alice:pa55word@api.collinear.ai", "credentials"),
        ("https://api.collinear.ai/v2?key=pa55word", "query"),
        ("https://api.collinear.ai:99999", "port"),
    ],
)
@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "run"])
def test_cli_bad_base_url_exits_2_naming_the_flag(
    ref_server: ReferenceServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    url: str,
    needle: str,
    dry_run: bool,
) -> None:
    """With -v (DEBUG logs, tracebacks) too: the refusal is one line and quotes no secret."""
    seeds = write_jsonl(tmp_path / "seeds.jsonl", qa(3).to_list())
    monkeypatch.setenv("COLLINEAR_API_KEY", ref_server.token)
    args = ["expand", str(seeds), "--prompt", "p", "--model-id", MODEL_ID, "--base-url", url]
    args += ["--cache-dir", str(tmp_path / "cache")] + (["--dry-run"] if dry_run else [])
    for verbose in ([], ["-v"]):
        assert cli_main([*verbose, *args]) == 2
        streams = capsys.readouterr()
        assert "pa55word" not in streams.out + streams.err
        last = streams.err.rstrip("\n").rsplit("\n", 1)[-1]
        assert last.startswith("synth-datasets: error: --base-url ") and needle in last
        assert "POST" not in streams.out  # no plan was printed
    assert ref_server.stats()["requests"] == 0


def test_cli_bad_inputs_exit_2_with_one_line_and_send_nothing(
    ref_server: ReferenceServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    seeds = write_jsonl(tmp_path / "seeds.jsonl", qa(3).to_list())
    monkeypatch.setenv("COLLINEAR_API_KEY", ref_server.token)
    base = ["expand", str(seeds), "--base-url", ref_server.url, "--cache-dir", str(tmp_path)]
    cases = [
        (["--prompt", "p", "--model-id", MODEL_ID, "--multiplier", "0"], "--multiplier"),
        (["--prompt", "p", "--model-id", "nope"], "--model-id must be a UUID"),
        (["--prompt", "", "--model-id", MODEL_ID], "--prompt"),
        (["--prompt", "p", "--model-id", MODEL_ID, "--columns", "nope"], "unknown column"),
        (["--prompt", "p", "--local"], "--local runs its own server: drop --base-url"),
    ]
    for extra, needle in cases:
        assert cli_main(base + extra) == 2
        err = capsys.readouterr().err  # may hold datasets' progress bars before the error
        last = err.rstrip("\n").rsplit("\n", 1)[-1]
        assert last.startswith("synth-datasets: error:") and needle in last
        assert err.count("synth-datasets") == 1
    assert ref_server.stats()["requests"] == 0


# --------------------------------------------------------------------------------------------
# Documented conversions


def test_datetime_cells_are_sent_as_iso_text(
    ref_server: ReferenceServer, ref_client: SynthClient, cache_dir: Path
) -> None:
    when = dt.datetime(2024, 5, 1, 12, 30)
    aware = dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.timezone.utc)
    ds = Dataset.from_list([{"q": "when?", "when": when, "aware": aware, "day": when.date()}])
    out = run(ds, ref_client, cache_dir)
    assert out[0]["original"] == {
        "q": "when?",
        "when": "2024-05-01T12:30:00",
        "aware": "2024-05-01T12:30:00+00:00",
        "day": "2024-05-01",
    }
    # The generated columns keep the seed's types: a value that is not an ISO date becomes
    # null with the reason (the reference engine rewrites every string, dates included).
    assert out.features["when"] == ds.features["when"]
    assert out.features["day"] == ds.features["day"]
    for row in out:
        assert row["when"] is None and "type: when: expected an ISO timestamp" in row["error"]
    assert ref_server.stats()["requests"] == 1


def test_nested_none_is_kept_as_null(
    ref_server: ReferenceServer, ref_client: SynthClient, cache_dir: Path
) -> None:
    ds = Dataset.from_list(
        [
            {"q": "question with gaps", "meta": {"a": None, "b": ["x y z", None]}},
            {"q": None, "meta": {"a": None, "b": None}},
        ]
    )
    out = run(ds, ref_client, cache_dir, request_size=2)
    assert out.features["meta"] == ds.features["meta"]
    assert out[0]["source_index"] == 0 and out[0]["original"] == {
        "q": "question with gaps",
        "meta": {"a": None, "b": ["x y z", None]},
    }
    for row in out:
        assert row["error"] is None
        sent = ds[row["source_index"]]
        assert row["original"] == sent
        assert row["meta"]["a"] is None
        assert json.loads(row["generated_raw"])["meta"]["a"] is None
        if sent["q"] is None:
            assert row["q"] is None and row["meta"]["b"] is None
        else:
            assert row["meta"]["b"][1] is None
    assert ref_server.stats()["requests"] == 1


@pytest.mark.parametrize(
    "value",
    [dt.time(12, 30), dt.timedelta(seconds=90), decimal.Decimal("1.25")],
    ids=["time", "timedelta", "decimal"],
)
def test_other_temporal_and_decimal_cells_never_crash_the_run(
    ref_server: ReferenceServer, ref_client: SynthClient, cache_dir: Path, value: Any
) -> None:
    ds = Dataset.from_list([{"q": "a question", "v": value}])
    out = run(ds, ref_client, cache_dir, on_error="keep")
    assert len(out) == 2 and out.features["v"] == ds.features["v"]
    for row in out:
        assert row["original"] is not None and row["original"]["v"] is not None
        if row["v"] is None:  # what came back does not fit: null, and the reason
            assert row["error"].startswith("type: v:")
        else:
            assert row["error"] is None


# --------------------------------------------------------------------------------------------
# Request size


def test_row_larger_than_the_request_size_limit_is_refused_up_front(
    ref_server: ReferenceServer, ref_client: SynthClient, cache_dir: Path
) -> None:
    rows = [{"q": f"question {i}", "a": "short"} for i in range(20)]
    rows[13]["a"] = "x" * 5000
    ds = Dataset.from_list(rows)
    message = refused(
        lambda: run(ds, ref_client, cache_dir, request_size=4, max_request_bytes=2000),
        "row 13",
        ref_server,
    )
    assert "2000" in message
    # Under the limit nothing changes, and the limit is checked on each example's own request.
    out = run(ds.select(range(13)), ref_client, cache_dir, request_size=4, max_request_bytes=2000)
    assert len(out) == 26
    with pytest.raises(ConfigurationError, match="max_request_bytes"):
        run(ds, ref_client, cache_dir, max_request_bytes=0)


# --------------------------------------------------------------------------------------------
# The command line's files: seeds, prompt, --output and --cache-dir (exit 2, one line, nothing
# sent, nothing written)


def cli_refused(
    argv: list[str], needles: list[str], server: ReferenceServer, capsys: pytest.CaptureFixture[str]
) -> str:
    """``main(argv)`` exits 2 with one error line holding every needle; nothing was sent."""
    assert cli_main(argv) == 2
    err = capsys.readouterr().err  # may hold datasets' progress bars before the error
    last = err.rstrip("\n").rsplit("\n", 1)[-1]
    assert last.startswith("synth-datasets: error:") and err.count("synth-datasets: error") == 1, (
        err
    )
    assert all(needle in last for needle in needles), last
    assert server.stats()["requests"] == 0
    return last


@pytest.fixture
def expand_argv(
    ref_server: ReferenceServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> list[str]:
    """Everything `expand` needs after SOURCE, pointed at the test's reference server."""
    monkeypatch.setenv("COLLINEAR_API_KEY", ref_server.token)
    return ["--prompt", "p", "--model-id", MODEL_ID, "--base-url", ref_server.url,
            "--cache-dir", str(tmp_path / "cache")]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [
        ("empty.jsonl", b"", "no rows"),
        ("blank.jsonl", b"  \n\n \n", "no rows"),
        ("empty-list.json", b"[]", "no rows"),
        ("header-only.csv", b"q,a\n", "no rows"),
        ("bad-line.jsonl", b'{"q": "a"}\n{"q": "b"\n{"q": "c"}\n', "line 2: not valid JSON"),
        ("not-an-object.jsonl", b'{"q": "a"}\n\n[1, 2]\n', "line 3: not a JSON object"),
        ("cut.json", b'[{"q": "a"},\n {"q": ', "line 2: not valid JSON"),
        ("latin-1.jsonl", b'{"q": "a"}\n{"q": "caf\xe9"}\n', "line 2: not UTF-8"),
        ("latin-1.csv", b"q,a\nx,y\nz,caf\xe9\n", "line 3: not UTF-8"),
        ("broken.parquet", b"PAR1 not really", "cannot be read as parquet"),
    ],
)
def test_a_bad_seed_file_is_refused_naming_the_file_and_line(
    ref_server: ReferenceServer,
    expand_argv: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    content: bytes,
    needle: str,
) -> None:
    seeds = tmp_path / name
    seeds.write_bytes(content)
    cli_refused(["expand", str(seeds), *expand_argv], [str(seeds), needle], ref_server, capsys)


def test_a_bad_seed_file_is_the_only_error_line_of_the_command(tmp_path: Path) -> None:
    """As a user runs it: datasets' own log lines about the file are not repeated."""
    for name, content in [("bad.jsonl", b'{"q": "a"}\n{"q": \n'), ("bad.parquet", b"PAR1")]:
        (tmp_path / name).write_bytes(content)
        proc = cli("expand", str(tmp_path / name), "--prompt", "p", "--local")
        assert proc.returncode == 2
        (line,) = error_lines(proc.stderr)
        assert line.startswith(f"synth-datasets: error: {tmp_path / name}")


def test_a_prompt_file_that_is_not_utf8_is_refused_naming_it(
    ref_server: ReferenceServer,
    expand_argv: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    seeds = write_jsonl(tmp_path / "seeds.jsonl", qa(2).to_list())
    prompt = tmp_path / "prompt.txt"
    prompt.write_bytes(b"Write more.\nNo caf\xe9.\n")
    argv = ["expand", str(seeds), *expand_argv, "--prompt-file", str(prompt)]
    argv.remove("--prompt")
    argv.remove("p")
    cli_refused(argv, ["--prompt-file", str(prompt), "line 2: not UTF-8"], ref_server, capsys)


def _not_ours(folder: Path) -> None:
    """A folder of someone else's: their own README.md and a data file of theirs."""
    (folder / "data").mkdir(parents=True)
    (folder / "README.md").write_text("# My notes\n")
    (folder / "data" / "train-00000-of-00002.parquet").write_bytes(b"their data")


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    ("where", "needles"),
    [
        (lambda tmp: tmp / "a-file" / "out", ["a-file", "which is a file"]),
        (lambda tmp: tmp / "a-file", ["a-file", "is a file, not a folder"]),
        (lambda tmp: Path("/proc/synth-out"), ["cannot write"]),
        (lambda tmp: tmp / "theirs", ["was not written by synth-datasets", "--overwrite"]),
        (lambda tmp: tmp / "manifest", ["synth_manifest.json was not written"]),
    ],
    ids=["under-a-file", "a-file", "unwritable", "their-files", "their-manifest"],
)
def test_a_bad_output_is_refused_before_any_request(
    ref_server: ReferenceServer,
    expand_argv: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    where: Any,
    needles: list[str],
) -> None:
    seeds = write_jsonl(tmp_path / "seeds.jsonl", qa(2).to_list())
    (tmp_path / "a-file").write_text("x")
    _not_ours(tmp_path / "theirs")
    (tmp_path / "manifest").mkdir()
    (tmp_path / "manifest" / "synth_manifest.json").write_text("not ours")
    before = _files(tmp_path)
    output = where(tmp_path)
    argv = ["expand", str(seeds), *expand_argv, "--output", str(output)]
    cli_refused(argv, ["--output", *needles], ref_server, capsys)
    assert _files(tmp_path) == before  # nothing written, nothing replaced


def test_their_files_are_replaced_with_overwrite_only(
    ref_server: ReferenceServer, expand_argv: list[str], tmp_path: Path
) -> None:
    seeds = write_jsonl(tmp_path / "seeds.jsonl", qa(2).to_list())
    _not_ours(tmp_path / "out")
    argv = ["expand", str(seeds), *expand_argv, "--output", str(tmp_path / "out")]
    assert cli_main([*argv, "--overwrite"]) == 0
    assert "# My notes" not in (tmp_path / "out" / "README.md").read_text()
    assert sorted(p.name for p in (tmp_path / "out" / "data").iterdir()) == [
        "train-00000-of-00001.parquet"
    ]
    assert len(datasets.load_dataset(str(tmp_path / "out"), split="train")) == 8
    # The folder is ours now: a second run replaces its files without being told.
    assert cli_main([*argv, "--run-id", "second"]) == 0
    assert ref_server.stats()["requests"] == 2


@pytest.mark.parametrize("inside", ["", "sub"], ids=["a-file", "under-a-file"])
def test_a_cache_dir_that_is_a_file_is_refused(
    ref_server: ReferenceServer,
    ref_client: SynthClient,
    expand_argv: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    inside: str,
) -> None:
    (tmp_path / "a-file").write_text("x")
    cache_dir = tmp_path / "a-file" / inside if inside else tmp_path / "a-file"
    seeds = write_jsonl(tmp_path / "seeds.jsonl", qa(2).to_list())
    argv = ["expand", str(seeds), *expand_argv, "--cache-dir", str(cache_dir)]
    cli_refused(argv, ["--cache-dir", str(cache_dir), "a file"], ref_server, capsys)
    refused(lambda: run(qa(2), ref_client, cache_dir), "cache_dir", ref_server)


# --------------------------------------------------------------------------------------------
# The generation limit: a typo in the multiplier is not sent


def test_a_run_above_the_generation_limit_is_refused(
    ref_server: ReferenceServer, ref_client: SynthClient, cache_dir: Path
) -> None:
    message = refused(
        lambda: run(qa(3), ref_client, cache_dir, multiplier=1_000_000_000),
        "generation_limit",
        ref_server,
    )
    assert "3,000,000,000 generations" in message and "1,000,000" in message
    refused(
        lambda: run(qa(3), ref_client, cache_dir, multiplier=2, generation_limit=5),
        "6 generations",
        ref_server,
    )
    mapper = SynthMapper(prompt="p", multiplier=2, model_id=MODEL_ID, client=ref_client,
                         generation_limit=5)  # fmt: skip
    refused(lambda: mapper.map_kwargs(qa(3)), "generation_limit", ref_server)
    # A dataset of unknown length: the multiplier alone is checked.
    iterable = qa(3).to_iterable_dataset()
    refused(
        lambda: run(iterable, ref_client, cache_dir, multiplier=6, generation_limit=5),
        "generation_limit",
        ref_server,
    )
    # At the limit, or with the limit raised, the run goes.
    assert len(run(qa(3), ref_client, cache_dir, multiplier=2, generation_limit=6)) == 6
    assert ref_server.stats()["requests"] == 1


def test_cli_refuses_a_run_above_the_generation_limit_naming_the_flag(
    ref_server: ReferenceServer,
    expand_argv: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    seeds = write_jsonl(tmp_path / "seeds.jsonl", qa(3).to_list())
    argv = ["expand", str(seeds), *expand_argv, "--multiplier", "1000000000"]
    needles = [
        "--generation-limit",
        "3,000,000,000 generations",
        "cap the run with --max-generations",
    ]
    last = cli_refused(argv, needles, ref_server, capsys)
    assert "generation_limit" not in last and "max_generations" not in last
    # The dry run shows the plan (generations and requests), then refuses the same way.
    cli_refused([*argv, "--dry-run"], ["--generation-limit"], ref_server, capsys)
    assert cli_main([*argv, "--dry-run", "--generation-limit", "3000000000"]) == 0
    plan = capsys.readouterr().out
    assert "3 seed rows -> 1 request of" in plan and "3000000000 generations targeted" in plan


# --------------------------------------------------------------------------------------------
# Budgets (issue 16): one that could never send a request is refused up front


@pytest.mark.parametrize(
    ("flags", "needles"),
    [
        (
            ["--max-generations", "3"],
            ["--max-generations is 3: one request of 3 seed rows", "lower --request-size"],
        ),
        (["--max-requests", "0"], ["--max-requests must be an int >= 1, got 0"]),
        (["--max-generations", "-4"], ["--max-generations must be an int >= 1"]),
    ],
)
def test_cli_refuses_a_budget_that_cannot_send_naming_the_flag(
    ref_server: ReferenceServer,
    expand_argv: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
    needles: list[str],
) -> None:
    seeds = write_jsonl(tmp_path / "seeds.jsonl", qa(3).to_list())
    last = cli_refused(["expand", str(seeds), *expand_argv, *flags], needles, ref_server, capsys)
    assert "max_generations" not in last and "max_requests" not in last
    assert "request_size" not in last
