"""The SQLite request cache: keys, durability, threads and processes."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ThreadPoolExecutor

from synth_datasets.cache import RequestCache, default_cache_dir, request_key

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
    with cache._handle[1]:  # another thread is mid-request when the process forks
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
