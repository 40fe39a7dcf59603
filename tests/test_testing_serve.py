"""The ``serve`` command: flags derived from ``Faults``, a parser that imports no aiohttp, and a
server process that answers until terminated."""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import subprocess
import sys

import pytest
import requests
from fakeopenai import FakeOpenAI
from refserver import TIMEOUT, make_body

from synth_datasets.testing import GENERATE_PATH, PARSER_DESCRIPTION, Faults, main
from synth_datasets.testing.serve import add_serve_arguments


def test_every_fault_has_a_flag_with_its_default() -> None:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    defaults = vars(parser.parse_args([]))
    assert {f.name: defaults[f.name] for f in dataclasses.fields(Faults)} == dataclasses.asdict(
        Faults()
    )
    args = parser.parse_args(["--rate-429", "0.5", "--shuffle", "--script", "429,drop"])
    assert (args.rate_429, args.shuffle, args.script) == (0.5, True, [429, "drop"])
    assert "NOT a language model" in PARSER_DESCRIPTION


def test_the_cli_parser_imports_no_aiohttp() -> None:
    code = (
        "import contextlib, io, sys\n"
        "from synth_datasets import cli\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    cli.main(['serve', '--port', '0', '--help'])\n"
        "print(sorted(m for m in ('aiohttp', 'jsonschema') if m in sys.modules))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert proc.stdout.strip() == "[]"


def test_cli_serves_until_terminated() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "synth_datasets.testing", "--port", "0", "--script", "429"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.fullmatch(r"serving (http://127\.0\.0\.1:\d+) token=(\S+)\n", line)
        assert match, line
        url, token = match.groups()
        headers = {"Authorization": f"Bearer {token}"}
        first = requests.post(
            url + GENERATE_PATH, json=make_body(), headers=headers, timeout=TIMEOUT
        )
        assert first.status_code == 429
        second = requests.post(
            url + GENERATE_PATH, json=make_body(), headers=headers, timeout=TIMEOUT
        )
        assert second.status_code == 200 and len(second.json()) == 6
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr


def test_cli_refuses_remote_host_and_bad_faults(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--host", "0.0.0.0", "--port", "0"]) == 2
    assert "--allow-remote" in capsys.readouterr().err
    assert main(["--port", "0", "--rate-500", "2"]) == 2
    assert "rate_500" in capsys.readouterr().err


def test_cli_serves_your_own_model_with_the_key_from_the_environment() -> None:
    key = "sk-backend-serve-5ecret"
    with FakeOpenAI(models=["M"], api_key=key) as backend:
        process = subprocess.Popen(
            [sys.executable, "-m", "synth_datasets.testing", "--port", "0", "--engine", "openai",
             "--engine-base-url", backend.url, "--engine-model", "M",
             "--engine-api-key-env", "MY_BACKEND_KEY", "--engine-max-concurrency", "2"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "MY_BACKEND_KEY": key},
        )  # fmt: skip
        try:
            assert process.stdout is not None
            url, token = re.fullmatch(
                r"serving (\S+) token=(\S+)\n", process.stdout.readline()
            ).groups()  # type: ignore[union-attr]
            host = backend.url.removeprefix("http://").removesuffix("/v1")
            assert process.stdout.readline() == f"engine: your own model M at {host} " + (
                "(an OpenAI-compatible server)\n"
            )
            answer = requests.post(
                url + GENERATE_PATH,
                json=make_body(multiplier=2),
                headers={"Authorization": f"Bearer {token}"},
                timeout=TIMEOUT,
            )
            assert answer.status_code == 200 and len(answer.json()) == 4
            assert "model=M" in answer.headers["X-Synth-Engine"]
        finally:
            process.terminate()
            stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert backend.max_in_flight <= 2 and len(backend.calls) == 4
    assert {c["headers"]["Authorization"] for c in backend.calls} == {f"Bearer {key}"}
    assert key not in stdout + stderr


def test_cli_refuses_bad_engine_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--port", "0", "--engine", "openai", "--engine-base-url", "http://h/v1"]) == 2
    assert "--engine openai needs --engine-model" in capsys.readouterr().err
    assert main(["--port", "0", "--engine-timeout", "5"]) == 2
    assert "--engine-timeout is not an option of --engine offline" in capsys.readouterr().err
    openai = ["--engine", "openai", "--engine-model", "M", "--engine-base-url"]
    assert main(["--port", "0", *openai, "http://127.0.0.1:9/v1", "--engine-timeout", "0"]) == 2
    assert "--engine-timeout must be a number of seconds > 0" in capsys.readouterr().err
    assert main(["--port", "0", *openai, "http://127.0.0.1:9/v1"]) == 2
    assert "does not answer" in capsys.readouterr().err
    with FakeOpenAI() as backend:
        assert main(["--port", "0", *openai, backend.url, "--rate-malformed", "0.1"]) == 2
    assert "rate_malformed acts on the offline engine's items" in capsys.readouterr().err
