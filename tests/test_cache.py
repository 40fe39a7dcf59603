"""The SQLite request cache: keys, durability, threads and processes; a locked or damaged file;
leases that keep runs sharing a folder from paying twice."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import datasets
import pytest
from helpers import (
    MODEL_ID,
    PROMPT,
    assert_complete,
    gil_switching_often,
    lock_held_by_another_process,
    qa,
    qa_rows,
    run_expand,
    write_jsonl,
)

from synth_datasets import SynthClient
from synth_datasets.cache import BUSY_TIMEOUT, RequestCache, default_cache_dir, request_key
from synth_datasets.testing import ReferenceServer

ITEMS = [{"original": {"q": "a"}, "generated": '{"q": "b"}'}]


def test_key_depends_on_url_body_and_run_id():
    k = request_key("https://a", b"{}")
    assert k == request_key("https://a", b"{}")
    assert (
        len(
            {
                k,
                request_key("https://b", b"{}"),
                request_key("https://a", b"{ }"),
                request_key("https://a", b"{}", "run2"),
            }
        )
        == 4
    )


def test_put_get_roundtrip_and_persist(tmp_path):
    cache = RequestCache(tmp_path)
    assert cache.get("k") is None
    cache.put("k", ITEMS)
    assert RequestCache(tmp_path).get("k") == ITEMS
    assert len(cache) == 1


def test_default_dir_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("SYNTH_DATASETS_CACHE", str(tmp_path / "x"))
    assert default_cache_dir() == tmp_path / "x"
    monkeypatch.delenv("SYNTH_DATASETS_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "synth_datasets"


def test_many_threads(tmp_path):
    cache = RequestCache(tmp_path)

    def work(i: int) -> None:
        cache.put(f"k{i}", ITEMS)
        assert cache.get(f"k{i}") == ITEMS

    with ThreadPoolExecutor(32) as pool:
        list(pool.map(work, range(500)))
    assert len(cache) == 500
    # Every answer is on disk for another connection.
    other = RequestCache(tmp_path)
    assert all(other.get(f"k{i}") == ITEMS for i in range(500))


def _put_in_child(cache: RequestCache) -> None:
    cache.put("child", ITEMS)


def test_fork_while_the_lock_is_held(tmp_path):
    cache = RequestCache(tmp_path)
    cache.put("parent", ITEMS)
    assert cache._handle is not None
    with cache._handle.lock:  # another thread is mid-request when the process forks
        child = multiprocessing.get_context("fork").Process(target=_put_in_child, args=(cache,))
        child.start()
        child.join(60)
    assert child.exitcode == 0
    assert cache.get("child") == ITEMS and cache.get("parent") == ITEMS


def _child(path: str, start: int) -> None:
    cache = RequestCache(path)
    for i in range(start, start + 100):
        cache.put(f"k{i}", ITEMS)


def test_many_processes(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_child, args=(str(tmp_path), n * 100)) for n in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert len(RequestCache(tmp_path)) == 400


# -- a cache that cannot be written, or is damaged, never costs an answer ---------------------


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_locked_cache_loses_no_answer_and_warns_once(
    ref_server: ReferenceServer,
    ref_client: SynthClient,
    cache_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    seeds = qa(8)
    path = RequestCache(cache_dir).path
    with lock_held_by_another_process(path):
        started = time.monotonic()
        out = run_expand(seeds, ref_client, cache_dir, request_size=2)
        elapsed = time.monotonic() - started
    assert_complete(out, seeds, 2)
    assert ref_server.stats()["requests"] == 4
    assert elapsed < 3 * BUSY_TIMEOUT  # one full wait, then short ones: not a minute
    (warning,) = warnings_of(caplog)
    assert "4 answers could not be stored" in warning
    assert str(path) in warning and "locked" in warning
    # Nothing was cached, so a rerun (the lock gone; "keep" skips datasets' own map cache) asks
    # again, and stores the answers.
    assert len(RequestCache(cache_dir)) == 0
    again = run_expand(seeds, ref_client, cache_dir, request_size=2, on_error="keep")
    assert again.to_list() == out.to_list()
    assert ref_server.stats()["requests"] == 8 and len(RequestCache(cache_dir)) == 4


def _fill(server: ReferenceServer, client: SynthClient, cache_dir: Path, seeds: Any) -> Path:
    """A cache of ``seeds``' answers, everything in the main file (no WAL left)."""
    run_expand(seeds, client, cache_dir, request_size=1)
    path = cache_dir / "requests.sqlite"
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT COUNT(*) FROM answers").fetchone()[0] == len(seeds)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert server.stats()["requests"] == len(seeds)
    return path


def set_aside(folder: Path) -> list[Path]:
    """The damaged cache files moved aside in ``folder`` (their WAL files left out)."""
    return [p for p in folder.glob("requests.sqlite.damaged-*") if not p.name.endswith("-wal")]


def _random_bytes(path: Path) -> None:
    path.write_bytes(os.urandom(path.stat().st_size))


def _cut(path: Path) -> None:
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size // 2)


def _overwritten(path: Path) -> None:
    with path.open("r+b") as f:  # every page but the first (the schema): garbage
        f.seek(4096)
        f.write(os.urandom(path.stat().st_size - 4096))


@pytest.mark.parametrize("damage", [_random_bytes, _cut, _overwritten], ids=lambda f: f.__name__)
def test_a_damaged_cache_is_set_aside_and_the_run_goes_on(
    ref_server: ReferenceServer,
    ref_client: SynthClient,
    cache_dir: Path,
    caplog: pytest.LogCaptureFixture,
    damage: Callable[[Path], None],
) -> None:
    seeds = qa(40, long_answers=True)  # several pages of answers
    path = _fill(ref_server, ref_client, cache_dir, seeds)
    damage(path)
    before = path.read_bytes()
    out = run_expand(seeds, ref_client, cache_dir, request_size=1, on_error="keep")  # no map cache
    assert_complete(out, seeds, 2)
    (aside,) = set_aside(cache_dir)
    assert aside.read_bytes() == before  # kept as it was, for whoever wants to look
    (warning,) = warnings_of(caplog)
    assert str(path) in warning and str(aside) in warning
    assert "file is not a database" in warning or "malformed" in warning
    # The fresh cache holds the answers asked for again.
    assert ref_server.stats()["requests"] == 80 and len(RequestCache(cache_dir)) == 40


def test_a_cache_damaged_after_it_was_opened_is_set_aside_on_the_next_read(
    ref_server: ReferenceServer,
    ref_client: SynthClient,
    cache_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = _fill(ref_server, ref_client, cache_dir, qa(40, long_answers=True))
    cache = RequestCache(cache_dir)  # open, as a run's cache is
    _overwritten(path)
    assert cache.get(request_key("https://a", b"{}")) is None  # "database disk image is malformed"
    (aside,) = set_aside(cache_dir)
    (warning,) = warnings_of(caplog)
    assert str(aside) in warning and "malformed" in warning
    cache.put("k", ITEMS)
    assert RequestCache(cache_dir).get("k") == ITEMS


def test_a_damaged_cache_set_aside_by_another_process_is_not_set_aside_twice(tmp_path):
    first, second = RequestCache(tmp_path), RequestCache(tmp_path)
    first.put("old", ITEMS)
    with contextlib.closing(sqlite3.connect(first.path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    _random_bytes(first.path)
    assert first.get("old") is None  # sets it aside, starts a fresh file
    first.put("new", ITEMS)
    assert second.get("new") == ITEMS  # reads the fresh file: it was not damaged
    assert len(set_aside(tmp_path)) == 1


# -- leases: runs sharing a cache folder pay for each request once ----------------------------


def test_a_lease_is_honoured_while_its_holder_lives(tmp_path):
    cache = RequestCache(tmp_path)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with sqlite3.connect(cache.path) as conn:  # the other process holds the lease
            conn.execute(
                "INSERT INTO leases VALUES ('k', ?, ?, ?)",
                (socket.gethostname(), other.pid, time.time() + 60),
            )
        assert not cache.claim("k", 60)
    finally:
        other.kill()
        other.wait()
    assert cache.claim("k", 60)  # its holder died: taken over at once
    assert not cache.claim("k", 60)  # this process is fetching it now
    cache.put("k", ITEMS)
    assert cache.get_or_claim("k", 60) == ITEMS


def test_an_expired_lease_is_taken_over(tmp_path):
    cache = RequestCache(tmp_path)
    with sqlite3.connect(cache.path) as conn:  # held on another host, expired a second ago
        conn.execute("INSERT INTO leases VALUES ('k', 'elsewhere', 1, ?)", (time.time() - 1,))
    assert cache.claim("k", 60)
    with sqlite3.connect(cache.path) as conn:
        conn.execute("UPDATE leases SET host = 'elsewhere', expires = ?", (time.time() + 60,))
    cache.release("k")  # not ours any more: left alone
    assert not cache.claim("k", 60)


def test_threads_of_one_process_fetch_a_request_once(tmp_path):
    cache = RequestCache(tmp_path)
    fetched = []

    def work(_: int) -> Any:
        items = cache.get_or_claim("k", 60)
        if items is None:
            fetched.append(1)
            time.sleep(0.2)
            cache.put("k", ITEMS)
            return ITEMS
        return items

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(work, range(8))) == [ITEMS] * 8
    assert fetched == [1]


def test_a_released_lease_never_takes_the_next_holders_lease_with_it(tmp_path: Path) -> None:
    """One thread claims and releases a key over and over while another does too, the GIL
    switched as often as it can be: whenever a thread holds the claim, the lease row that keeps
    other processes away is there (a release that dropped the claim before deleting its row let
    the other thread take over the row, then deleted it)."""
    cache = RequestCache(tmp_path)
    cache.put("other", ITEMS)  # the file and its tables exist
    stop = threading.Event()
    held = lost = 0

    def other_thread() -> None:
        while not stop.is_set():
            if cache.claim("k", 60):
                cache.release("k")

    thread = threading.Thread(target=other_thread)
    with gil_switching_often():
        thread.start()
        try:
            with contextlib.closing(sqlite3.connect(cache.path)) as conn:
                for _ in range(200_000):
                    if cache.claim("k", 60):
                        held += 1
                        rows = conn.execute("SELECT COUNT(*) FROM leases WHERE key = 'k'")
                        lost += rows.fetchone()[0] == 0
                        cache.release("k")
                        if held == 3000:
                            break
        finally:
            stop.set()
            thread.join()
    assert held == 3000 and lost == 0


def test_two_processes_expanding_into_one_cache_pay_once(
    ref_server: ReferenceServer, tmp_path: Path
) -> None:
    """Both runs start together against a slow server; every request reaches it once."""
    seeds = write_jsonl(tmp_path / "seeds.jsonl", qa_rows(48))
    ref_server.set_faults(latency=0.2)
    env = {**os.environ, "COLLINEAR_API_KEY": ref_server.token}
    runs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "synth_datasets.cli",
                "expand",
                str(seeds),
                "--prompt",
                PROMPT,
                "--model-id",
                MODEL_ID,
                "--multiplier",
                "2",
                "--request-size",
                "1",
                "--max-concurrency",
                "8",
                "--base-url",
                ref_server.url,
                "--cache-dir",
                str(tmp_path / "cache"),
                "--output",
                str(tmp_path / f"out{n}"),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(2)
    ]
    for run in runs:
        _, err = run.communicate(timeout=180)
        assert run.returncode == 0, err
    assert ref_server.stats()["requests"] == 48
    first, second = (
        datasets.load_dataset(str(tmp_path / f"out{n}"), split="train") for n in range(2)
    )
    assert len(first) == 96 and first.to_list() == second.to_list()
