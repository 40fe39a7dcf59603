"""The report's figures: PNG files of a known size, in the --output folder and in the Hub repo
beside the card whose links name them; without matplotlib, the card says how to get them."""

from __future__ import annotations

import hashlib
import io
import json
import re
import struct

import pytest
from datasets import Dataset
from fakehub import HUB_TOKEN, LFS_PUT_WARNING_FILTER
from helpers import (
    cli,
    error_lines,
    expand_sample,
    qa,
    run_expand,
    run_python,
)
from PIL import Image

import synth_datasets
from synth_datasets import build_card, quality_report
from synth_datasets.card import FIGURE_PATHS
from synth_datasets.figures import draw_figures
from synth_datasets.provenance import attach_provenance

pytestmark = pytest.mark.filterwarnings(LFS_PUT_WARNING_FILTER)

LINK = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)\)")
HINT = "(`pip install matplotlib`; then `synth-datasets card DIR` or `push`)"
# The command line as a user without matplotlib runs it: the import fails as if not installed.
WITHOUT_MATPLOTLIB = (
    "import sys; sys.modules['matplotlib'] = None; "
    "from synth_datasets.cli import main; sys.exit(main(sys.argv[1:]))"
)


def png_chunks(data: bytes) -> list[bytes]:
    """The chunk types of a PNG file, in order."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    kinds, at = [], 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kinds.append(data[at + 4 : at + 8])
        at += 12 + length
    return kinds


def size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        image.load()  # decodes the whole file: a truncated one fails here
        return image.size


def links(card_text: str) -> list[str]:
    return [target for _, target in LINK.findall(card_text)]


def two_columns() -> Dataset:
    """Two generated columns, one passthrough column, a seed with an error and a long row."""
    rows = []
    for seed in range(6):
        original = {"q": f"question {seed}?", "a": "an answer " * (seed + 1)}
        for k in range(3 if seed else 2):
            rows.append(
                {
                    "q": f"question {seed} variant {k}?",
                    "a": "an answer " * (seed + k + 1) + ("x" * 5000 if seed == k == 1 else ""),
                    "topic": "t",
                    "source_index": seed,
                    "original": original,
                    "generated_raw": "{}",
                    "error": None,
                }
            )
    rows[-1].update(q=None, a=None, error="parse: not JSON")
    ds = Dataset.from_list(rows)
    attach_provenance(
        ds, {"generated_columns": ["q", "a"], "multiplier": 3, "source": {"num_rows": 6}}
    )
    return ds


def test_each_figure_is_a_png_of_its_size_drawn_the_same_every_time():
    report = quality_report(two_columns())
    figures = draw_figures(report)
    assert [f.path for f in figures] == list(FIGURE_PATHS)
    # 100 dpi: 8 in wide; the lengths figure has one row of panels per generated column (q, a;
    # not the passthrough `topic`), the error figure one bar per kind (6 kinds and "other").
    assert [size(f.png) for f in figures] == [(800, 360), (800, 60 + 240 * 2), (800, 80 + 40 * 6)]
    assert [f.png for f in draw_figures(report)] == [f.png for f in figures]
    for f in figures:  # no time, software or other text stamp in the file
        assert set(png_chunks(f.png)) <= {b"IHDR", b"pHYs", b"IDAT", b"IEND"}
    assert figures[0].alt == "Rows per seed against the multiplier (3)"


def test_the_card_shows_the_figures_it_carries():
    card = build_card(two_columns(), figures=True)
    text = str(card)
    assert links(text) == [f.path for f in card.figures] == list(FIGURE_PATHS)
    assert text.index("## Statistics") < text.index("### Figures") < text.index("## Schema")
    assert HINT not in text
    hidden = str(build_card(two_columns(), figures=False))
    assert HINT in hidden and not links(hidden)


def test_expand_output_holds_the_figures_the_card_links(tmp_path):
    out = tmp_path / "out"
    proc = expand_sample(out, tmp_path / "c")
    assert proc.returncode == 0, proc.stderr
    targets = links((out / "README.md").read_text("utf-8"))
    assert targets == list(FIGURE_PATHS)
    for target in targets:
        data = (out / target).read_bytes()
        assert size(data)[0] == 800
    assert size((out / "figures/rows_per_seed.png").read_bytes()) == (800, 360)
    manifest = json.loads((out / "synth_manifest.json").read_text("utf-8"))
    assert manifest["figures"] == {
        t: hashlib.sha256((out / t).read_bytes()).hexdigest() for t in targets
    }
    # The figures are this library's: a rerun replaces them; a file of the user's is refused.
    proc = expand_sample(out, tmp_path / "c")
    assert proc.returncode == 0, proc.stderr
    (out / "figures/lengths.png").write_bytes(b"my own figure")
    proc = expand_sample(out, tmp_path / "c")
    assert proc.returncode == 2
    assert error_lines(proc.stderr) == [
        f"synth-datasets: error: --output {out}: figures/lengths.png was not written by "
        "synth-datasets (or was changed since): pass --overwrite to replace it, or choose "
        "another folder"
    ]
    assert (out / "figures/lengths.png").read_bytes() == b"my own figure"


def test_report_figures_draws_into_the_folder_and_records_them(tmp_path):
    folder = tmp_path / "saved"
    two_columns().save_to_disk(str(folder))
    proc = cli("report", str(folder), "--figures", "--json")
    assert proc.returncode == 0, proc.stderr
    json.loads(proc.stdout)  # still JSON alone: the files are named on stderr
    assert "wrote the figures" in proc.stderr
    assert [size((folder / p).read_bytes())[0] for p in FIGURE_PATHS] == [800, 800, 800]

    out = tmp_path / "out"
    assert expand_sample(out, tmp_path / "c").returncode == 0
    for path in FIGURE_PATHS:
        (out / path).unlink()
    proc = cli("report", str(out), "--figures")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "synth_manifest.json").read_text("utf-8"))
    assert manifest["figures"] == {  # recorded as ours: a later --output write replaces them
        p: hashlib.sha256((out / p).read_bytes()).hexdigest() for p in FIGURE_PATHS
    }


def test_without_matplotlib_the_card_says_how_to_get_the_figures(tmp_path):
    out = tmp_path / "out"
    assert expand_sample(out, tmp_path / "c").returncode == 0
    assert all((out / p).exists() for p in FIGURE_PATHS)
    proc = run_python(["-c", WITHOUT_MATPLOTLIB, "card", str(out)])
    assert proc.returncode == 0, proc.stderr
    card = (out / "README.md").read_text("utf-8")
    assert HINT in card and not links(card)
    # The figures the old card linked are gone with it, and no longer recorded.
    assert not any((out / p).exists() for p in FIGURE_PATHS)
    assert json.loads((out / "synth_manifest.json").read_text("utf-8"))["figures"] == {}

    proc = run_python(["-c", WITHOUT_MATPLOTLIB, "report", str(out), "--figures"])
    assert proc.returncode == 2
    assert error_lines(proc.stderr) == [
        "synth-datasets: error: the figures need matplotlib: pip install matplotlib"
    ]  # synth-datasets is not on PyPI: `pip install "synth-datasets[figures]"` would fail
    assert proc.stdout == ""  # refused before the report was computed


def test_verbose_figures_keep_matplotlib_debug_lines_out(tmp_path):
    out = tmp_path / "out"
    assert expand_sample(out, tmp_path / "c").returncode == 0
    proc = cli("-v", "report", str(out), "--no-near", "--figures")
    assert proc.returncode == 0, proc.stderr
    assert "DEBUG " in proc.stderr  # -v still logs the rest
    assert "matplotlib" not in proc.stderr


def test_matplotlib_is_imported_only_for_figures():
    proc = run_python(
        [
            "-c",
            "import sys, synth_datasets, synth_datasets.cli, synth_datasets.hub; "
            "print('matplotlib' in sys.modules)",
        ]
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_push_commits_the_figures_with_the_card(fake_hub, ref_client, cache_dir):
    expanded = run_expand(qa(4), ref_client, cache_dir)
    synth_datasets.push_to_hub(expanded, "me/figs", token=HUB_TOKEN, allow_offline_data=True)
    files = fake_hub.files("me/figs")
    targets = links(files["README.md"].decode())
    assert targets == list(FIGURE_PATHS)
    for target in targets:  # every link resolves to a PNG in the repo
        assert size(files[target])[0] == 800
    # In the card's own commit, not before: the data commit has none of them.
    data_commit, card_commit = fake_hub.commits("me/figs")[-2:]
    assert all(t in card_commit.files for t in targets)
    assert not any(t in data_commit.files for t in targets)
    assert files["figures/rows_per_seed.png"] == draw_figures(quality_report(expanded))[0].png


def test_a_kept_hand_written_card_gets_no_figures(fake_hub, ref_client, cache_dir):
    expanded = run_expand(qa(4), ref_client, cache_dir)
    fake_hub.add_repo("me/hand", {"README.md": b"# Mine\n\nWritten by hand.\n"})
    result = synth_datasets.push_to_hub(
        expanded, "me/hand", token=HUB_TOKEN, allow_offline_data=True
    )
    assert result.card == "kept"
    assert not any(path.startswith("figures/") for path in fake_hub.files("me/hand"))
