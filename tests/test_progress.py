"""The live progress bar: what it counts (rows, in flight, retries, 429s, error rows), that it
replaces datasets' own bar, keeps its totals on screen, and that -q (progress=False) or datasets'
own switch silence it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import datasets
import pytest
from helpers import PROMPT, SAMPLE, make_client, qa, run_expand

from synth_datasets.cli import main as cli_main
from synth_datasets.testing import ReferenceServer


@pytest.fixture(autouse=True)
def progress_bars_on() -> Iterator[None]:
    """datasets' bars on for the test (another test module turns them off for the session)."""
    was_on = datasets.utils.is_progress_bar_enabled()
    datasets.enable_progress_bars()
    yield
    if not was_on:
        datasets.disable_progress_bars()


def bar_lines(stderr: str) -> list[str]:
    """Each drawing of the expansion's bar (tqdm redraws after a carriage return)."""
    return [line for line in stderr.replace("\r", "\n").splitlines() if line.startswith("synth")]


def test_the_bar_counts_what_happens_and_keeps_the_totals(
    ref_server: ReferenceServer, cache_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two requests, one at a time: the first is refused (429), retried, fails (503) and gives
    4 error rows; the second fails once (503), is retried and gives 8 rows."""
    ds = qa(8)
    ref_server.set_faults(script=[429, 503, 503], retry_after=0.01)
    out = run_expand(
        ds,
        make_client(ref_server, max_retries=1),
        cache_dir,
        request_size=4,
        max_concurrency=1,
        on_error="keep",
    )
    assert len(out) == 12 and sum(e is not None for e in out["error"]) == 4
    err = capsys.readouterr().err
    lines = bar_lines(err)
    assert lines, err
    last = lines[-1]
    assert last.startswith("synth_datasets: ") and "| 12/16 [" in last, last
    assert "rows/s" in last and "<" in last  # the rate and the ETA
    assert "0 in flight, 2 retries, 1 429s, 4 error rows" in last, last
    assert not any("expanding" in line for line in err.splitlines())  # datasets' bar is off
    assert datasets.utils.is_progress_bar_enabled()  # and on again afterwards


def test_progress_false_and_datasets_switch_silence_it(
    ref_server: ReferenceServer, cache_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ds = qa(8)
    client = make_client(ref_server)
    run_expand(ds, client, cache_dir, progress=False)
    assert not bar_lines(capsys.readouterr().err)
    datasets.disable_progress_bars()
    try:
        run_expand(ds, client, cache_dir, run_id="again")
    finally:
        datasets.enable_progress_bars()
    assert not bar_lines(capsys.readouterr().err)
    assert ref_server.stats()["requests"] == 2  # both runs sent their request


def test_cli_shows_the_bar_and_quiet_silences_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["expand", str(SAMPLE), "--local", "--prompt", PROMPT, "--multiplier", "2"]
    args += ["--cache-dir", str(tmp_path / "cache"), "--show", "0"]
    assert cli_main(args) == 0
    captured = capsys.readouterr()
    last = bar_lines(captured.err)[-1]
    assert "| 24/24 [" in last, last
    # The default is adaptive: the bar shows the limit beside the requests in flight.
    assert re.search(r"0 of \d+ in flight, 0 retries, 0 429s, 0 error rows\]$", last), last
    assert "expanded 12 seed rows into 24 rows" in captured.out
    assert cli_main([*args, "-q", "--run-id", "quiet"]) == 0
    captured = capsys.readouterr()
    assert not bar_lines(captured.err) and "Map" not in captured.err
    assert "expanded 12 seed rows into 24 rows" in captured.out
