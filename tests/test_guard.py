"""How every command ends (``synth_datasets.guard``): its exit code, one error line in the
command line's words, the tokens of the process masked in what it prints."""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from collections.abc import Callable

import pytest

from synth_datasets.errors import ConfigurationError, RateLimitError, UsageError
from synth_datasets.guard import in_cli_words, run_guarded

TOKEN = "sk-guard-0123456789abcdef"


def raising(exc: BaseException) -> Callable[[argparse.Namespace], int]:
    def command(args: argparse.Namespace) -> int:
        raise exc

    return command


def test_cli_errors_name_the_flag(tmp_path):
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text('{"q": "a"}\n', encoding="utf-8")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "synth_datasets.cli",
            "expand",
            str(seeds),
            "--local",
            "--prompt",
            "p",
            "--request-size",
            "0",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "--request-size must be an int >= 1" in proc.stderr


def test_a_library_error_reads_in_the_command_line_words() -> None:
    assert in_cli_words("pass model_id=", "model_id") == "pass --model-id"
    assert in_cli_words("progress must be a bool", "progress") == "--quiet must be a bool"
    refused = "pass allow_offline_data=True to push them"
    assert in_cli_words(refused, "allow_offline_data") == "pass --allow-offline-data to push them"
    assert in_cli_words("no API key: pass api_key=", "api_key") == (
        "no API key: use --local (the offline reference server)"
    )
    # A column may be named like an option: quoted, it is the column.
    quoted = "unknown column(s) in columns: 'columns'"
    assert in_cli_words(quoted, "columns") == "unknown column(s) in --columns: 'columns'"
    assert in_cli_words("model_id is wrong", None) == "model_id is wrong"
    # Every option the message names, each as its flag; a library keyword as the CLI spells it.
    told = "max_generations is 5: raise it or lower request_size"
    assert in_cli_words(told, "max_generations", "request_size") == (
        "--max-generations is 5: raise it or lower --request-size"
    )
    assert in_cli_words("n must be from 1 to 64 words per n-gram", "n") == (
        "--ngram must be from 1 to 64 words per n-gram"
    )


@pytest.mark.parametrize(
    ("exc", "code", "line"),
    [
        (UsageError("--limit must be >= 1"), 2, "prog: error: --limit must be >= 1"),
        (
            ConfigurationError("request_size must be an int >= 1", option="request_size"),
            2,
            "prog: error: --request-size must be an int >= 1",
        ),
        (
            ConfigurationError(
                "limit_schedule changes the rate limits, and none is set: set requests_per_second",
                option="limit_schedule",
                also=("requests_per_second",),
            ),
            2,
            "prog: error: --limit-schedule changes the rate limits, and none is set: set "
            "--requests-per-second",
        ),
        (
            RateLimitError("429 from h; " + RateLimitError.next_step, status_code=429),
            1,
            "prog: error: 429 from h; still rate limited after retries: lower --max-concurrency "
            "or retry later",
        ),
        (OSError("disk\n  full"), 1, "prog: error: OSError: disk full"),
        (
            KeyboardInterrupt(),
            130,
            "prog: interrupted; answered requests are cached, rerun to resume",
        ),
    ],
)
def test_a_command_ends_with_its_exit_code_and_one_line(
    exc: BaseException, code: int, line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_guarded("prog", raising(exc), argparse.Namespace()) == code
    assert capsys.readouterr().err.splitlines() == [line]


def test_describe_words_the_errors_that_are_not_ours(capsys: pytest.CaptureFixture[str]) -> None:
    def describe(exc: BaseException) -> str:
        return f"the cluster said: {exc}"

    args = argparse.Namespace()
    assert run_guarded("prog", raising(RuntimeError("lost")), args, describe=describe) == 1
    assert run_guarded("prog", raising(UsageError("bad")), args, describe=describe) == 2
    assert capsys.readouterr().err.splitlines() == [
        "prog: error: the cluster said: lost",
        "prog: error: bad",
    ]
    assert run_guarded("prog", lambda args: 0, args, describe=describe) == 0


def test_the_tokens_of_the_process_are_masked_in_logs_and_errors(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A server may quote the token back: in a log record or in its error."""
    monkeypatch.setenv("COLLINEAR_API_KEY", TOKEN)
    hub_token = "hf_guard_0123456789abcdef"

    def command(args: argparse.Namespace) -> int:
        logging.getLogger("synth_datasets.test").warning("sent Bearer %s", TOKEN)
        raise RuntimeError(f"401: Bearer {hub_token} refused")

    args = argparse.Namespace(hf_token=hub_token)
    with caplog.at_level(logging.WARNING):
        assert run_guarded("prog", command, args) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == ["prog: error: RuntimeError: 401: Bearer *** refused"]
    assert "sent Bearer ***" in caplog.text
    assert TOKEN not in caplog.text and hub_token not in err
