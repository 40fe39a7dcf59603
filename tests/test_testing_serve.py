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
from helpers import MODEL_ID, SAMPLE
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
        # The export line it prints, pasted into a shell, points the command line at it.
        export = [process.stdout.readline() for _ in range(2)][-1].strip()
        assert export == f"export COLLINEAR_BASE_URL={url} COLLINEAR_API_KEY={token}"
        expand = f"{sys.executable} -m synth_datasets.cli expand {SAMPLE} --prompt p --limit 2"
        run = subprocess.run(
            ["sh", "-c", f"{export}; {expand} --model-id {MODEL_ID} --no-cache"],
            capture_output=True,
            text=True,
            timeout=180,
            env={k: v for k, v in os.environ.items() if not k.startswith("COLLINEAR_")},
        )
        assert "expanded 2 seed rows into 8 rows" in run.stdout, run.stderr
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr


def test_cli_refuses_remote_host_and_bad_faults(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--host", "0.0.0.0", "--port", "0"]) == 2
    assert "--allow-remote" in capsys.readouterr().err
    assert main(["--port", "0", "--rate-500", "2"]) == 2
    assert "rate_500" in capsys.readouterr().err
