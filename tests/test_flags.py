"""The command line's flags: one per option of the config, the same in the CLI and the scripts,
each typed and explained where it is defined (``synth_datasets.flags``)."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import cli

from synth_datasets.cli import main
from synth_datasets.config import ExpandConfig, flag, option_fields
from synth_datasets.flags import add_expand_arguments

ROOT = Path(__file__).resolve().parents[1]
OPTIONS = {f.name: f for f in option_fields(ExpandConfig)}


def test_cli_has_a_flag_per_option(capsys):
    with pytest.raises(SystemExit):
        main(["expand", "--help"])
    flags = set(re.findall(r"--[a-z][a-z0-9-]*", capsys.readouterr().out))
    wanted = {flag(name) for name, f in OPTIONS.items() if f.metadata["cli"]}
    assert wanted <= flags, sorted(wanted - flags)


@pytest.mark.parametrize(
    "script, skip",
    [
        ("expand_and_push.py", set()),
        ("ray_expand.py", {"index_column"}),
        ("split_by_node.py", {"index_column"}),
    ],
)
def test_scripts_have_a_flag_per_option(script, skip):
    args = [sys.executable, str(ROOT / "scripts" / script)]
    if script == "split_by_node.py":
        args.append("expand")
    text = subprocess.run([*args, "--help"], capture_output=True, text=True, check=True).stdout
    for name, f in OPTIONS.items():
        if f.metadata["cli"] and name not in skip:
            spelled = f.metadata["flag"] or "--" + name.replace("_", "-")
            assert spelled in text, f"{script} lacks {spelled}"


def test_cli_takes_max_concurrency_auto_and_names_the_flag(tmp_path):
    parser = argparse.ArgumentParser()
    add_expand_arguments(parser)
    args = parser.parse_args(["s.jsonl", "--max-concurrency", "auto", "-q"])
    assert (args.max_concurrency, args.progress) == ("auto", False)
    assert parser.parse_args(["s.jsonl", "--max-concurrency", "8"]).max_concurrency == 8
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text('{"q": "a"}\n', encoding="utf-8")
    args = ["expand", str(seeds), "--local", "--prompt", "p", "--max-concurrency", "fast"]
    proc = subprocess.run(
        [sys.executable, "-m", "synth_datasets.cli", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "synth-datasets: error: --max-concurrency must be an int >= 1 or 'auto', got 'fast'"
    )


def test_card_offers_no_hub_options() -> None:
    """`card` writes a local README.md: no --public or --hf-token that would do nothing."""
    proc = cli("card", "--help")
    assert proc.returncode == 0
    assert "--license" in proc.stdout and "--no-prompt-in-card" in proc.stdout
    assert "--public" not in proc.stdout and "--hf-token" not in proc.stdout
