"""The wheel carries what an installed user needs: the card template, the sample data, py.typed."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> tuple[Path, str]:
    """The wheel, and pip's verbose log of building it (where setuptools' warnings show)."""
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-v",
            "-w",
            str(out),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return next(out.glob("synth_datasets-*.whl")), proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def wheel(build) -> Path:
    return build[0]


def test_build_prints_no_setuptools_warning(build):
    """pyproject.toml in the form setuptools wants: no deprecated license table, no package data
    outside a listed package."""
    assert re.findall(r"\w*Warning: .*", build[1]) == []


def test_wheel_contains_templates_and_data(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "synth_datasets/cards/dataset_card.md",
        "synth_datasets/cards/sft_card.md",
        "synth_datasets/cards/report.md",
        "synth_datasets/cards/__init__.py",
        "synth_datasets/py.typed",
        "synth_datasets/data/sample_seeds.jsonl",
        "synth_datasets/data/sample_prompt.txt",
    ):
        assert needed in names
    assert not any(n.startswith("tests/") for n in names)


def test_non_editable_install_renders_a_card(wheel, tmp_path):
    """Installed (not editable) into a folder of its own, the package renders a card from the
    template inside the wheel, run from a directory where the source tree is not importable."""
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    script = tmp_path / "render.py"
    script.write_text(
        "import sys\n"
        "target, site = sys.argv[1], sys.argv[2]\n"
        "sys.path[:0] = [target, site]\n"
        "import datasets, synth_datasets\n"
        "from synth_datasets.card import build_card, build_sft_card\n"
        "from synth_datasets.provenance import attach_provenance\n"
        "assert synth_datasets.__file__.startswith(target), synth_datasets.__file__\n"
        "ds = datasets.Dataset.from_list(\n"
        "    [{'q': 'x', 'source_index': 0, 'generated_raw': '{}', 'error': None}])\n"
        "attach_provenance(ds, {'multiplier': 2, 'generated_columns': ['q']})\n"
        "print(build_card(ds, repo_id='me/x'))\n"
        "chat = datasets.Dataset.from_list([{'messages': [{'role': 'user', 'content': 'hi'}]}])\n"
        "print(build_sft_card({'train': chat}, steps=[('rows kept', 1)], expanded_source='x'))\n"
    )
    # -I: no user site, no .pth processing, so the editable install of the source tree is unseen.
    proc = subprocess.run(
        [sys.executable, "-I", str(script), str(target), datasets_site()],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "## How it was made" in proc.stdout and "synthetic" in proc.stdout
    assert "| rows kept | 1 |" in proc.stdout  # the chat card's template is in the wheel too
    # The package is on no index: neither card links to a package page.
    assert "pypi.org" not in proc.stdout


def datasets_site() -> str:
    import datasets

    return str(Path(datasets.__file__).resolve().parents[1])
