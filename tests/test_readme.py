"""Every shell and Python block of README.md runs as written.

The blocks run in README order, in one working folder laid out like a clone: `synth_datasets/`
and `scripts/` link to this tree (so the sample data's paths resolve), the reader's own seed file
and prompt are `seeds.jsonl` and `prompt.txt` (copies of the sample's), and what a block writes
(`out/...`) is there for the blocks after it. The environment stands in for the reader's
credentials: `COLLINEAR_API_KEY`, `COLLINEAR_BASE_URL` and `COLLINEAR_MODEL_ID` point at a
reference server on loopback, `HF_TOKEN` and `HF_ENDPOINT` at the fake Hub. Shell blocks run with
`sh -e`, Python blocks in a fresh interpreter, `python` and `synth-datasets` being this
environment's.

Collinear's stand-in answers through its OpenAI-compatible engine from the fake model server of
tests/fakeopenai.py, not with the offline engine: its rows are labelled "your own model", honestly
publishable, so the examples that stand for a real run publish as written (no
`--allow-offline-data`). The blocks about the offline engine (`--local`) start their own.

A block that cannot run here follows a `<!-- not run: reason -->` line. The counts below fail when
a block is added, dropped or marked without updating them, so nothing is skipped silently.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fakehub import HUB_TOKEN, FakeHub
from fakeopenai import FakeOpenAI
from helpers import MODEL_ID, ROOT, SAMPLE, SAMPLE_PROMPT, load_script

from synth_datasets import cli
from synth_datasets.testing import OpenAIEngine, ReferenceServer

RUN = 11  # blocks run
NOT_RUN = 10  # blocks after a `<!-- not run: reason -->` line
BACKEND_KEY_ENV = "SYNTH_README_BACKEND_KEY"  # the fake model server's key, in this process only

_FENCE = re.compile(r"^```(\w*)\s*$")
_NOT_RUN = re.compile(r"^<!-- not run: (.+) -->$")
_LANGUAGES = {"sh": "sh", "bash": "sh", "shell": "sh", "python": "python", "py": "python"}


@dataclass(frozen=True)
class Block:
    line: int  # of the opening fence, 1-based
    language: str  # "sh" or "python"
    code: str
    not_run: str | None  # the reason, when marked

    @property
    def id(self) -> str:
        return f"L{self.line}-{self.language}"


def readme_blocks(text: str) -> list[Block]:
    """The shell and Python blocks, each with the `not run` reason on the line before it."""
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        before = next((line for line in reversed(lines[:i]) if line.strip()), "")
        marked = _NOT_RUN.match(before.strip())
        language = _LANGUAGES.get(fence.group(1))
        if language is None:
            raise AssertionError(f"README.md:{i + 1}: a ``` block without sh or python")
        code = "\n".join(lines[i + 1 : end]) + "\n"
        blocks.append(Block(i + 1, language, code, marked.group(1) if marked else None))
        i = end + 1
    return blocks


BLOCKS = readme_blocks((ROOT / "README.md").read_text(encoding="utf-8"))
RUNNABLE = [b for b in BLOCKS if b.not_run is None]


def test_every_block_is_run_or_marked_with_a_reason() -> None:
    skipped = [b for b in BLOCKS if b.not_run is not None]
    assert (len(RUNNABLE), len(skipped)) == (RUN, NOT_RUN), [b.id for b in BLOCKS]
    assert all(len(b.not_run or "") > 5 for b in skipped)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A reader's clone: the package and scripts of this tree, their own seeds and prompt."""
    root = tmp_path_factory.mktemp("reader")
    for name in ("synth_datasets", "scripts"):
        (root / name).symlink_to(ROOT / name, target_is_directory=True)
    shutil.copy(SAMPLE, root / "seeds.jsonl")
    shutil.copy(SAMPLE_PROMPT, root / "prompt.txt")
    return root


@pytest.fixture(scope="module")
def endpoint() -> Iterator[ReferenceServer]:
    """The stand-in for Collinear's endpoint that the reader's environment points at: a
    reference server answering from a (fake) model of its own, so its rows are not the offline
    engine's and a push of them needs no --allow-offline-data, as a real run's would not."""
    key = "sk-readme-backend"
    with FakeOpenAI(models=["readme-model"], api_key=key) as backend:
        with pytest.MonkeyPatch.context() as env:  # read when the engine is made, then gone
            env.setenv(BACKEND_KEY_ENV, key)
            engine = OpenAIEngine(
                base_url=backend.url, model="readme-model", api_key_env=BACKEND_KEY_ENV
            )
        with ReferenceServer(engine=engine) as server:
            yield server


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("block", RUNNABLE, ids=[b.id for b in RUNNABLE])
def test_readme_block_runs(
    block: Block, workspace: Path, endpoint: ReferenceServer, fake_hub: FakeHub
) -> None:
    needs_ray = "ray_expand.py" in block.code or "synth_datasets.ray" in block.code
    if needs_ray and importlib.util.find_spec("ray") is None:
        pytest.skip(f"README.md:{block.line} needs Ray (the ray or dev extra)")
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "COLLINEAR_API_KEY": endpoint.token,
        "COLLINEAR_BASE_URL": endpoint.url,
        "COLLINEAR_MODEL_ID": MODEL_ID,
        "HF_TOKEN": HUB_TOKEN,
        "SYNTH_DATASETS_CACHE": str(workspace / "cache"),
    }
    argv = ["sh", "-e", "-c", block.code] if block.language == "sh" else [sys.executable, "-"]
    stdin = block.code if block.language == "python" else None
    proc = subprocess.run(
        argv, input=stdin, cwd=workspace, env=env, capture_output=True, text=True, timeout=840
    )
    assert proc.returncode == 0, (
        f"README.md:{block.line}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    # What a block publishes is private and carries this library's card, which names the model
    # that made the rows (the stand-in's), not the offline engine.
    for repo_id, repo in fake_hub.repos.items():
        card = fake_hub.files(repo_id).get("README.md", b"").decode()
        assert repo.private and "## How it was made" in card, (block.line, repo_id)
        assert "your own model readme-model" in card and "Offline" not in card, block.line
    # Outputs go under out/ (and the cache): nothing lands in the reader's root.
    expected = {"synth_datasets", "scripts", "seeds.jsonl", "prompt.txt", "out", "cache"}
    assert set(os.listdir(workspace)) <= expected, block.line


def _option_strings(parser: argparse.ArgumentParser) -> set[str]:
    """Every flag of ``parser`` and of its subcommands."""
    found: set[str] = set()
    for action in parser._actions:
        found.update(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found |= _option_strings(sub)
    return found


def test_every_flag_the_readme_names_exists() -> None:
    """A flag in the prose or the examples is one of the command line's or a script's."""
    known = _option_strings(cli._build_parser())
    for name in ("expand_and_push.py", "to_sft.py", "ray_expand.py", "split_by_node.py"):
        known |= _option_strings(load_script(name).build_parser())
    bench = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    known |= set(re.findall(r"--[a-z][a-z0-9-]*", bench.stdout))
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", text)) - {"--no-deps"}  # pip's
    assert named - known == set()
