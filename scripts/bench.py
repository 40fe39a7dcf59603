#!/usr/bin/env python
"""Benchmark of the expansion: throughput, CPU per row, memory, resume cost, server capacity.

    .venv/bin/python scripts/bench.py [--quick] [--json out.json] [--only NAMES]

The reference server (``python -m synth_datasets.testing``) runs in its own process; its latency
is changed at run time through ``POST /__faults`` and its request counts are read from
``GET /__stats``. Every client measurement runs in a fresh subprocess of this script
(``--worker``), so CPU time (``getrusage(RUSAGE_SELF)``) and peak RSS (``VmHWM``) are the
client's alone. Measurements (see docs/benchmarks.md for the figures and the targets):

1. ``efficiency``: 8192 examples, request_size 8, multiplier 4, 100 ms latency,
   max_concurrency 32; bound = requests x latency / concurrency; efficiency = bound / wall.
   Once on a dataset written to disk (save_to_disk + load_from_disk), once in memory.
2. ``naive``: the same job as a sequential ``ds.map`` calling ``SynthClient.generate`` once per
   batch, run on a subset and extrapolated linearly.
3. ``cpu``: client CPU seconds (user + sys) per generated row at zero latency.
4. ``memory``: peak RSS of the client for 10k and 100k examples x 4 (fresh subprocess each).
5. ``resume``: requests re-sent after ``kill -9`` at about half of a run, then a rerun.
6. ``server``: the reference server's own capacity (zero latency, 32 and 64 connections).
7. ``ray``: ``expand_ray`` on a local Ray with 1, 2 and 4 actors, the same seeds, 100 ms latency,
   ``max_concurrency`` 8 per actor: throughput against 1 actor, efficiency against the bound
   (requests x latency / (actors x 8)), end to end and between the first and the last request;
   the CPU of the server and of every process of the Ray session, sampled from /proc.
8. ``limits``: against a server limited to R = 100 requests/s (a token bucket holding 0.1 s of
   them, 429 with ``Retry-After: 1``) at 100 ms latency: ``max_concurrency="auto"`` beside fixed
   4 and fixed 64 (throughput / R over the whole run, share of the server's answers that are
   429s), auto again against a bucket holding a whole second, and auto while the limit halves
   8 s into the run (seconds until every following second is back within 85 % of the new limit
   with at most 10 % 429s, read from the server's counters polled every 0.1 s).
9. ``recall``: the near-duplicate search (no server): recall and false positives on generated
   pairs at known Jaccard similarity around the default threshold, and the cost per 100k rows
   (CPU and peak RSS of ``quality_report`` with and without it, and of ``split_by_seed``).
10. ``contamination``: ``find_contamination`` against an evaluation set of a million texts (no
   server): CPU, the size of its n-gram index, peak anonymous and file-backed RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from itertools import pairwise
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MODEL_ID = "00000000-0000-4000-8000-000000000000"
PROMPT = "Write a new support conversation like this one. Answer with the JSON object only."
COLUMNS = ["conv_prefix", "response"]
TOKEN_ENV = "SYNTH_BENCH_TOKEN"

# Full-size parameters (the figures) and the --quick smoke-test ones.
FULL = {
    "eff_examples": 8192,
    "naive_examples": 512,
    "cpu_examples": 20_000,
    "mem_examples": (10_000, 100_000),
    "resume_examples": 8192,
    "server_seconds": 5.0,
    "limit_requests": 2048,
    "halving_requests": 1536,
    "ray_examples": 16_384,
}
QUICK = {
    "eff_examples": 2048,
    "naive_examples": 64,
    "cpu_examples": 2_000,
    "mem_examples": (1_000, 10_000),
    "resume_examples": 1024,
    "server_seconds": 1.0,
    "limit_requests": 256,
    "halving_requests": 1024,
    "ray_examples": 2048,
}
REQUEST_SIZE = 8
MULTIPLIER = 4
LATENCY = 0.1
CONCURRENCY = 32
RAY_ACTORS = (1, 2, 4)
RAY_CONCURRENCY = 8  # per actor: 4 actors keep 32 requests in flight, as measure 1 does

TARGETS = {
    "efficiency": 0.90,
    "speedup": 25.0,
    "cpu_us_per_row": 40.0,  # issue 12: one parse-and-cast path
    "memory_delta_mb": 150.0,
    "ray_scaling": 0.8,  # issue 16: throughput with N actors >= 0.8 x N x one actor's
}

# 8. the rate-limited server: R requests/s, a bucket of LIMIT_BURST seconds, Retry-After 1 s.
LIMIT_R = 100.0
LIMIT_BURST = 0.1
HALVING_AT = 8.0  # seconds after the first request

ALL = (
    "efficiency",
    "naive",
    "cpu",
    "memory",
    "resume",
    "server",
    "ray",
    "limits",
    "recall",
    "contamination",
)
NEEDS_SERVER = set(ALL) - {"recall", "contamination"}

# The near-duplicate search: pairs per Jaccard level, rows of the cost measurement.
RECALL = {"pairs_per_level": 1000, "cost_rows": 100_000, "eval_texts": 1_000_000}
RECALL_QUICK = {"pairs_per_level": 200, "cost_rows": 10_000, "eval_texts": 50_000}
NEAR_THRESHOLD = 0.85
# True Jaccard similarities the pairs are built at, around the threshold, and the bins reported.
RECALL_LEVELS = (0.6, 0.7, 0.75, 0.8, 0.83, 0.85, 0.87, 0.9, 0.95, 0.99)
RECALL_EDGES = (0.7, 0.8, 0.83, 0.85, 0.87, 0.9, 0.95)


# ------------------------------------------------------------------------------------------------
# Seeds


def seed_columns(n: int) -> dict[str, list[Any]]:
    """``n`` seed conversations: the bundled samples cycled, each made unique by its number."""
    path = ROOT / "synth_datasets" / "data" / "sample_seeds.jsonl"
    samples = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    cols: dict[str, list[Any]] = {"conv_prefix": [], "response": [], "topic": [], "id": []}
    for i in range(n):
        s = samples[i % len(samples)]
        prefix = [dict(turn) for turn in s["conv_prefix"]]
        prefix[-1]["content"] = f"{prefix[-1]['content']} (case {i})"
        cols["conv_prefix"].append(prefix)
        cols["response"].append(dict(s["response"]))
        cols["topic"].append(s["topic"])
        cols["id"].append(f"seed-{i:07d}")
    return cols


def write_seeds(n: int, directory: Path) -> Path:
    import datasets

    datasets.disable_progress_bars()
    datasets.Dataset.from_dict(seed_columns(n)).save_to_disk(str(directory))
    return directory


# ------------------------------------------------------------------------------------------------
# The server process


class Server:
    """``python -m synth_datasets.testing --port 0`` in a subprocess, driven over HTTP."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = str(tmp)  # where workers put their files
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "synth_datasets.testing", "--port", "0", "--latency", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=ROOT,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith("serving "):
            self.proc.kill()
            raise RuntimeError(f"reference server did not start: {line!r}")
        url, _, token = line[len("serving ") :].partition(" token=")
        self.url, self.token = url, token
        self._tick = os.sysconf("SC_CLK_TCK")

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())

    def set_latency(self, latency: float) -> None:
        self._call("POST", "/__faults", {"latency": latency})

    def reset(self) -> None:
        self._call("POST", "/__reset", {})

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "/__stats")

    def cpu_seconds(self) -> float:
        """User + system CPU of the server process so far (Linux /proc)."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return float("nan")
        return (int(fields[11]) + int(fields[12])) / self._tick

    def close(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def run_worker(server: Server, spec: dict[str, Any], *, timeout: float = 1800) -> dict[str, Any]:
    """Run one measurement in a fresh subprocess; returns its JSON result plus server figures."""
    server.reset()
    cpu0 = server.cpu_seconds()
    proc = start_worker(server, spec)
    out, err = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {spec['kind']} failed ({proc.returncode}):\n{err[-3000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    result["server_requests"] = server.stats()["requests"]
    result["server_cpu_s"] = round(server.cpu_seconds() - cpu0, 3)
    return result


def start_worker(server: Server, spec: dict[str, Any]) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env[TOKEN_ENV] = server.token  # not on the command line
    env["HF_DATASETS_DISABLE_PROGRESS_BARS"] = "1"
    spec = {"tmp": server.tmp, **spec, "url": server.url}
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )


# ------------------------------------------------------------------------------------------------
# Worker side (runs in its own process)


def _status_kb(*keys: str) -> dict[str, int]:
    """Fields of /proc/self/status in kB (Linux); zeros elsewhere."""
    out = dict.fromkeys(keys, 0)
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in out:
            out[key] = int(value.split()[0])
    return out


def _rss_kb() -> int:
    return _status_kb("VmRSS")["VmRSS"]


def _peak_rss_kb() -> int:
    """This process's peak RSS since it started (``VmHWM``).

    Not ``ru_maxrss``: Linux carries that across fork and exec, so a worker started by a parent
    that once held 340 MB reports 340 MB, whatever the worker itself used.
    """
    peak = _status_kb("VmHWM")["VmHWM"]
    return peak or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


class _RssSampler(threading.Thread):
    """Peak anonymous and file-backed RSS, sampled every 50 ms (VmHWM counts both)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = {"RssAnon": 0, "RssFile": 0}
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.05):
            now = _status_kb(*self.peak)
            for key, value in now.items():
                self.peak[key] = max(self.peak[key], value)


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    import datasets

    datasets.disable_progress_bars()
    kind = spec["kind"]
    if kind == "recall":
        return worker_recall(spec)
    if kind == "dedup_cost":
        return worker_dedup_cost(spec)
    if kind == "contamination":
        return worker_contamination(spec)
    from synth_datasets import SynthClient

    client = SynthClient(os.environ[TOKEN_ENV], spec["url"], max_retries=spec.get("retries", 2))
    if kind == "expand":
        return worker_expand(spec, client)
    if kind == "naive":
        return worker_naive(spec, client)
    if kind == "load":
        return worker_load(spec, client)
    if kind == "ray":
        return worker_ray(spec)
    raise ValueError(f"unknown worker kind {kind!r}")


def _load_seeds(spec: dict[str, Any]) -> Any:
    import datasets

    if spec.get("seed_dir"):
        return datasets.load_from_disk(spec["seed_dir"])
    cols = seed_columns(spec["examples"])
    if spec.get("storage") == "memory":
        return datasets.Dataset.from_dict(cols)
    tmp = tempfile.mkdtemp(prefix="seeds-", dir=spec.get("tmp"))  # the parent removes it
    datasets.Dataset.from_dict(cols).save_to_disk(tmp)
    del cols
    return datasets.load_from_disk(tmp)


def worker_expand(spec: dict[str, Any], client: Any) -> dict[str, Any]:
    from synth_datasets import expand

    ds = _load_seeds(spec)
    cache_dir = spec.get("cache_dir")
    rss_before = _rss_kb()
    sampler = _RssSampler()
    sampler.start()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    out = expand(
        ds,
        prompt=PROMPT,
        multiplier=spec.get("multiplier", MULTIPLIER),
        model_id=MODEL_ID,
        client=client,
        columns=COLUMNS,
        request_size=spec.get("request_size", REQUEST_SIZE),
        max_concurrency=spec.get("concurrency", CONCURRENCY),
        on_error=spec.get("on_error", "raise"),
        cache=cache_dir is not None,
        cache_dir=cache_dir,
    )
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    sampler.stopped.set()
    sampler.join()
    maxrss_kb = _peak_rss_kb()
    table = out.data
    return {
        "examples": len(ds),
        "rows": len(out),
        "errors": table.column("error").length() - table.column("error").null_count,
        "wall_s": wall,
        "cpu_user_s": r1.ru_utime - r0.ru_utime,
        "cpu_sys_s": r1.ru_stime - r0.ru_stime,
        "maxrss_mb": maxrss_kb / 1024,
        "ru_maxrss_mb": r1.ru_maxrss / 1024,  # inherited from the parent too: see _peak_rss_kb
        "rss_before_mb": rss_before / 1024,
        "peak_anon_mb": sampler.peak["RssAnon"] / 1024,
        "peak_file_mb": sampler.peak["RssFile"] / 1024,
        "record_batches": len(table.table.to_batches()),
        "on_disk": bool(ds.cache_files),
    }


def worker_ray(spec: dict[str, Any]) -> dict[str, Any]:
    """``expand_ray`` on a local Ray started here; the rows are streamed back to this driver."""
    import ray

    from synth_datasets.ray import expand_ray, from_huggingface

    ds = _load_seeds(spec)
    started = time.time()
    ray.init(
        num_cpus=spec.get("ray_cpus"),
        include_dashboard=False,
        log_to_driver=False,
        logging_level="ERROR",
        runtime_env={"env_vars": {"COLLINEAR_API_KEY": os.environ[TOKEN_ENV]}},
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    t0 = time.time()
    out = expand_ray(
        from_huggingface(ds),
        prompt=PROMPT,
        multiplier=MULTIPLIER,
        model_id=MODEL_ID,
        base_url=spec["url"],
        columns=COLUMNS,
        request_size=REQUEST_SIZE,
        max_concurrency=spec["concurrency"],
        concurrency=spec["actors"],
        cache=False,
        max_retries=2,
    )
    t_planned = time.time()
    rows = errors = 0
    for batch in out.iter_batches(batch_format="pyarrow", batch_size=None):
        rows += batch.num_rows
        errors += batch.column("error").length() - batch.column("error").null_count
    t1 = time.time()
    ray.shutdown()
    return {
        "examples": len(ds),
        "rows": rows,
        "errors": errors,
        "ray_init_s": t0 - started,
        "plan_s": t_planned - t0,  # the seeds executed once, in order, and cut into blocks
        "t0": t0,
        "t1": t1,
        "wall_s": t1 - t0,
    }


def worker_naive(spec: dict[str, Any], client: Any) -> dict[str, Any]:
    """What a user writes by hand: one blocking ``generate`` per batch inside ``ds.map``."""
    ds = _load_seeds(spec)

    def naive(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        examples = [
            {"conv_prefix": c, "response": r}
            for c, r in zip(batch["conv_prefix"], batch["response"], strict=True)
        ]
        gens = client.generate(
            model_id=MODEL_ID, prompt=PROMPT, examples=examples, multiplier=MULTIPLIER
        )
        rows = [json.loads(g.generated) for g in gens]
        return {
            "conv_prefix": [row["conv_prefix"] for row in rows],
            "response": [row["response"] for row in rows],
        }

    t0 = time.perf_counter()
    out = ds.map(naive, batched=True, batch_size=REQUEST_SIZE, remove_columns=ds.column_names)
    wall = time.perf_counter() - t0
    return {"examples": len(ds), "rows": len(out), "wall_s": wall}


def worker_load(spec: dict[str, Any], client: Any) -> dict[str, Any]:
    """Threaded load generator: ``connections`` threads, each one keep-alive connection."""
    import http.client
    from urllib.parse import urlsplit

    examples = [
        {"conv_prefix": c, "response": r}
        for c, r in zip(
            *(seed_columns(REQUEST_SIZE)[k] for k in ("conv_prefix", "response")), strict=True
        )
    ]
    body = client.build_body(
        model_id=MODEL_ID, prompt=PROMPT, examples=examples, multiplier=MULTIPLIER
    )
    parts = urlsplit(spec["url"])
    headers = {
        "Authorization": f"Bearer {os.environ[TOKEN_ENV]}",
        "Content-Type": "application/json",
    }
    stop = time.perf_counter() + spec["seconds"]
    counts = [0] * spec["connections"]
    failures = [0] * spec["connections"]
    go = threading.Barrier(spec["connections"] + 1)

    def run(k: int) -> None:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        go.wait()
        while time.perf_counter() < stop:
            conn.request("POST", "/api/v1/synth_data/generate", body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
            if resp.status == 200:
                counts[k] += 1
            else:
                failures[k] += 1
        conn.close()

    threads = [threading.Thread(target=run, args=(k,)) for k in range(spec["connections"])]
    for t in threads:
        t.start()
    go.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {
        "requests": sum(counts),
        "failures": sum(failures),
        "rows": sum(counts) * REQUEST_SIZE * MULTIPLIER,
        "wall_s": wall,
    }


# ------------------------------------------------------------------------------------------------
# The near-duplicate search (no server; public API only, so older code can be measured alike)


def shingle_set(text: str) -> set[tuple[str, ...]]:
    """3-word shingles of a text of plain lower-case words: the reference the search is held to."""
    w = text.split()
    return {tuple(w[i : i + 3]) for i in range(len(w) - 2)} if len(w) >= 3 else {tuple(w)}


def true_jaccard(a: str, b: str) -> float:
    sa, sb = shingle_set(a), shingle_set(b)
    return len(sa & sb) / len(sa | sb)


def recall_pairs(
    levels: tuple[float, ...], per_level: int, seed: int
) -> list[tuple[float, str, str]]:
    """``per_level`` pairs at each Jaccard level: a text of 40-160 distinct words, and the same
    text with words appended (half the pairs) or with words replaced 3+ apart (the other half),
    as many as the level asks. Words are unique tokens, so pairs share no shingle with each
    other and the similarity is known from the counts (measured again by ``true_jaccard``)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    counter = iter(range(1 << 62))

    def fresh(k: int) -> list[str]:
        return [f"w{next(counter):x}" for _ in range(k)]

    pairs = []
    for level in levels:
        for i in range(per_level):
            words = fresh(int(rng.integers(40, 161)))
            shingles = len(words) - 2
            other = list(words)
            if i % 2 == 0:  # J = S / (S + m)
                other += fresh(round(shingles * (1 - level) / level))
            else:  # each replacement 3+ apart: 3 shingles out, 3 in; J = (S - 3k) / (S + 3k)
                k = round(shingles * (1 - level) / (3 * (1 + level)))
                slots = np.arange(1, len(words) - 1, 3)
                for pos in rng.choice(slots, size=min(k, len(slots)), replace=False):
                    other[pos] = fresh(1)[0]
            pairs.append((level, " ".join(words), " ".join(other)))
    order = rng.permutation(len(pairs))  # levels interleaved in the dataset
    return [pairs[i] for i in order]


def worker_recall(spec: dict[str, Any]) -> dict[str, Any]:
    import datasets
    import numpy as np

    from synth_datasets.prep import duplicate_mask

    threshold = spec["threshold"]
    pairs = recall_pairs(RECALL_LEVELS, spec["pairs_per_level"], seed=spec.get("seed", 15))
    truth = np.array([true_jaccard(a, b) for _, a, b in pairs])
    ds = datasets.Dataset.from_dict({"text": [t for _, a, b in pairs for t in (a, b)]})
    t0 = time.perf_counter()
    found = duplicate_mask(ds, near=True, threshold=threshold)[1::2]
    wall = time.perf_counter() - t0
    buckets = []
    edges = [0.0, *(e for e in RECALL_EDGES if 0 < e < 1), 1.0 + 1e-9]
    for low, high in pairwise(edges):
        inside = (truth >= low) & (truth < high)
        if inside.any():
            buckets.append(
                {
                    "jaccard_from": low,
                    "jaccard_below": min(high, 1.0),
                    "pairs": int(inside.sum()),
                    "flagged": int(found[inside].sum()),
                    "share_flagged": float(found[inside].mean()),
                }
            )
    above = truth >= threshold + 0.02
    below = truth <= threshold - 0.05
    return {
        "threshold": threshold,
        "pairs": len(pairs),
        "wall_s": wall,
        "buckets": buckets,
        "recall_above": float(found[above].mean()),
        "pairs_above": int(above.sum()),
        "false_positives_below": float(found[below].mean()),
        "pairs_below": int(below.sum()),
        "recall_at_or_above": float(found[truth >= threshold].mean()),
        "flagged_below": int(found[truth < threshold].sum()),
    }


def dedup_corpus(rows: int, seed: int) -> list[str]:
    """``rows`` texts of 60-100 words shaped like a generated set: four rows per seed text,
    each rewriting a third of the seed's words, from a Zipf-like vocabulary of 20 000 words (so
    common shingles recur across the set); one row in 20 repeats an earlier row with one word
    changed (a near duplicate at Jaccard about 0.9)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    vocab = np.array([f"v{i}" for i in range(20_000)])
    weights = 1.0 / np.arange(1, len(vocab) + 1)
    weights /= weights.sum()
    texts: list[str] = []
    while len(texts) < rows:
        base = rng.choice(vocab, size=int(rng.integers(60, 101)), p=weights)
        for _ in range(4):
            if len(texts) >= 20 and rng.random() < 0.05:
                words = texts[int(rng.integers(len(texts)))].split()
                words[len(words) // 2] = "changed"
            else:
                words = base.copy()
                swap = rng.random(len(words)) < 1 / 3
                words[swap] = rng.choice(vocab, size=int(swap.sum()), p=weights)
                words = words.tolist()
            texts.append(" ".join(words))
    return texts[:rows]


def worker_dedup_cost(spec: dict[str, Any]) -> dict[str, Any]:
    """CPU and peak RSS over the saved corpus of ``quality_report`` (``task`` "report", with or
    without ``near``) or of ``split_by_seed`` plus ``cross_split_duplicates`` ("split")."""
    import datasets

    from synth_datasets import quality_report

    ds = datasets.load_from_disk(spec["corpus_dir"])
    rss_before = _rss_kb()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    if spec["task"] == "split":
        from synth_datasets.prep import cross_split_duplicates, split_by_seed

        splits = split_by_seed(ds, 0.1, threshold=spec["threshold"])
        crossing = cross_split_duplicates(splits["train"], splits["test"])
        figures = {"test_rows": len(splits["test"]), "cross_split_pairs": crossing}
    else:
        report = quality_report(ds, near=spec["near"], near_threshold=spec["threshold"])
        figures = {"duplicates": report.duplicates, "near_duplicates": report.near_duplicates}
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "rows": len(ds),
        **spec,
        **figures,
        "wall_s": wall,
        "cpu_s": (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime),
        "rss_before_mb": rss_before / 1024,
        "maxrss_mb": _peak_rss_kb() / 1024,
    }


def zipf_texts(count: int, low: int, high: int, seed: int) -> list[str]:
    """``count`` texts of ``low`` to ``high`` words from a Zipf-like vocabulary of 20 000."""
    import numpy as np

    rng = np.random.default_rng(seed)
    vocab = np.array([f"v{i}" for i in range(20_000)])
    weights = 1.0 / np.arange(1, len(vocab) + 1)
    weights /= weights.sum()
    out: list[str] = []
    for start in range(0, count, 10_000):
        lengths = rng.integers(low, high + 1, min(10_000, count - start))
        flat = rng.choice(vocab, size=int(lengths.sum()), p=weights)
        bounds = np.concatenate([[0], np.cumsum(lengths)])
        out += [" ".join(flat[a:b]) for a, b in pairwise(bounds.tolist())]
    return out


def worker_contamination(spec: dict[str, Any]) -> dict[str, Any]:
    """``find_contamination`` of 1000 rows (100 quoting an evaluation text) against the saved
    evaluation set: CPU, index size, peak RSS (anonymous and file-backed, sampled)."""
    import datasets

    from synth_datasets.prep import find_contamination

    evals = datasets.load_from_disk(spec["eval_dir"])
    quoted = [evals[i]["question"] + " and more words" for i in range(0, 1000, 10)]
    rows = datasets.Dataset.from_dict({"text": quoted + zipf_texts(900, 30, 70, seed=99)})
    anon_before = _status_kb("RssAnon")["RssAnon"]
    sampler = _RssSampler()
    sampler.start()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    found = find_contamination(rows, [evals])
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    sampler.stopped.set()
    sampler.join()
    checked = found.record()["sets"][0]
    return {
        "eval_texts": checked["texts"],
        "ngrams": checked["ngrams"],
        "index_mb": checked["ngrams"] * 8 / 2**20,
        "rows": len(rows),
        "rows_flagged": found.rows_flagged,
        "wall_s": wall,
        "cpu_s": (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime),
        "anon_before_mb": anon_before / 1024,
        "peak_anon_mb": sampler.peak["RssAnon"] / 1024,
        "peak_file_mb": sampler.peak["RssFile"] / 1024,
    }


# ------------------------------------------------------------------------------------------------
# Measurements (parent side)


def measure_efficiency(server: Server, p: dict[str, Any]) -> dict[str, Any]:
    server.set_latency(LATENCY)
    out: dict[str, Any] = {}
    for storage in ("disk", "memory"):
        r = run_worker(
            server, {"kind": "expand", "examples": p["eff_examples"], "storage": storage}
        )
        bound = r["server_requests"] * LATENCY / CONCURRENCY
        r["bound_s"] = bound
        r["efficiency"] = bound / r["wall_s"]
        out[storage] = r
    return out


def measure_naive(server: Server, p: dict[str, Any], ours_wall: float | None) -> dict[str, Any]:
    server.set_latency(LATENCY)
    r = run_worker(server, {"kind": "naive", "examples": p["naive_examples"], "storage": "disk"})
    scale = p["eff_examples"] / r["examples"]
    r["extrapolated_to_examples"] = p["eff_examples"]
    r["extrapolated_wall_s"] = r["wall_s"] * scale
    r["speedup"] = r["extrapolated_wall_s"] / ours_wall if ours_wall else None
    return r


def measure_cpu(server: Server, p: dict[str, Any], tmp: Path) -> dict[str, Any]:
    server.set_latency(0.0)
    out: dict[str, Any] = {}
    for label, cache_dir in (("no_cache", None), ("with_cache", str(tmp / "cpu-cache"))):
        spec: dict[str, Any] = {"kind": "expand", "examples": p["cpu_examples"], "storage": "disk"}
        if cache_dir:
            spec["cache_dir"] = cache_dir
        r = run_worker(server, spec)
        cpu = r["cpu_user_s"] + r["cpu_sys_s"]
        r["cpu_us_per_row"] = cpu / r["rows"] * 1e6
        r["rows_per_s"] = r["rows"] / r["wall_s"]
        r["server_cpu_us_per_row"] = r["server_cpu_s"] / r["rows"] * 1e6
        out[label] = r
    return out


def measure_memory(server: Server, p: dict[str, Any], tmp: Path) -> dict[str, Any]:
    server.set_latency(0.0)
    out: dict[str, Any] = {}
    for n in p["mem_examples"]:
        seed_dir = write_seeds(n, tmp / f"mem-seeds-{n}")
        r = run_worker(server, {"kind": "expand", "seed_dir": str(seed_dir), "examples": n})
        out[str(n)] = r
        shutil.rmtree(seed_dir, ignore_errors=True)
    small, large = (out[str(n)] for n in p["mem_examples"])
    out["delta_mb"] = large["maxrss_mb"] - small["maxrss_mb"]
    return out


def measure_resume(server: Server, p: dict[str, Any], tmp: Path) -> dict[str, Any]:
    server.set_latency(LATENCY)
    n = p["resume_examples"]
    # A clean run (its own seeds folder and cache, so no datasets cache file is shared).
    clean = run_worker(
        server,
        {
            "kind": "expand",
            "seed_dir": str(write_seeds(n, tmp / "resume-clean-seeds")),
            "examples": n,
            "cache_dir": str(tmp / "resume-clean-cache"),
        },
    )
    clean_requests = clean["server_requests"]
    # The same run killed with SIGKILL at about half of its requests, then rerun.
    seed_dir = write_seeds(n, tmp / "resume-seeds")
    cache_dir = tmp / "resume-cache"
    spec = {"kind": "expand", "seed_dir": str(seed_dir), "examples": n, "cache_dir": str(cache_dir)}
    server.reset()
    proc = start_worker(server, spec)
    half = clean_requests // 2
    deadline = time.monotonic() + 600
    while server.stats()["requests"] < half and proc.poll() is None:
        if time.monotonic() > deadline:
            break
        time.sleep(0.01)
    at_kill = server.stats()["requests"]
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    time.sleep(0.3)  # let the server finish counting what was in flight
    killed_requests = server.stats()["requests"]
    from synth_datasets.cache import RequestCache

    cached = len(RequestCache(cache_dir))
    rerun = run_worker(server, spec)
    resent = killed_requests + rerun["server_requests"] - clean_requests
    return {
        "examples": n,
        "clean_requests": clean_requests,
        "killed_at_requests": at_kill,
        "killed_run_requests": killed_requests,
        "cached_at_kill": cached,
        "rerun_requests": rerun["server_requests"],
        "rerun_rows": rerun["rows"],
        "resent": resent,
        "max_concurrency": CONCURRENCY,
    }


def measure_server(server: Server, p: dict[str, Any]) -> dict[str, Any]:
    server.set_latency(0.0)
    out: dict[str, Any] = {}
    for connections in (32, 64):
        r = run_worker(
            server, {"kind": "load", "connections": connections, "seconds": p["server_seconds"]}
        )
        r["requests_per_s"] = r["requests"] / r["wall_s"]
        r["rows_per_s"] = r["rows"] / r["wall_s"]
        r["server_cpu_share"] = r["server_cpu_s"] / r["wall_s"]
        out[str(connections)] = r
    # The best any client can do against this server at the efficiency job's latency: a bare
    # http.client load generator, same request size, 32 connections, 100 ms latency.
    server.set_latency(LATENCY)
    r = run_worker(
        server, {"kind": "load", "connections": CONCURRENCY, "seconds": p["server_seconds"]}
    )
    r["requests_per_s"] = r["requests"] / r["wall_s"]
    r["rows_per_s"] = r["rows"] / r["wall_s"]
    r["server_cpu_share"] = r["server_cpu_s"] / r["wall_s"]
    r["efficiency_ceiling"] = r["requests_per_s"] / (CONCURRENCY / LATENCY)
    out["latency_100ms_32"] = r
    return out


def _limited(server: Server, burst: float = LIMIT_BURST, halve_at: float | None = None) -> None:
    server._call(
        "POST",
        "/__faults",
        {
            "latency": LATENCY,
            "requests_per_second": LIMIT_R,
            "limit_burst": burst,
            "retry_after": 1.0,
            "limit_schedule": [] if halve_at is None else [[halve_at, 0.5]],
        },
    )


def run_polled(server: Server, spec: dict[str, Any]) -> dict[str, Any]:
    """``run_worker`` while the server's counters are read every 0.1 s: ``samples`` of
    (seconds since the first request reached it, 200s, 429s)."""
    server.reset()
    raw: list[tuple[float, int, int, int]] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(0.1):
            s = server.stats()
            raw.append(
                (
                    time.monotonic(),
                    s["requests"],
                    s["by_status"].get("200", 0),
                    s["by_status"].get("429", 0),
                )
            )

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        r = run_worker(server, spec)
    finally:
        stop.set()
        poller.join()
    start = next((t for t, n, _, _ in raw if n), raw[0][0] if raw else 0.0)
    r["samples"] = [(round(t - start, 2), ok, refused) for t, n, ok, refused in raw if n]
    r["ok"] = server.stats()["by_status"].get("200", 0)
    r["refused"] = server.stats()["by_status"].get("429", 0)
    r["share_429"] = r["refused"] / max(1, r["server_requests"])
    r["throughput_R"] = r["ok"] / r["wall_s"] / LIMIT_R
    return r


def settle_seconds(samples: list[tuple[float, int, int]], at: float, limit: float) -> int | None:
    """Whole seconds after ``at`` until every full second that follows has >= 85 % of ``limit``
    answered and at most 10 % of its answers 429s; None if never. The run's last two seconds'
    worth of requests are left out: there the requests run out, not the quota."""

    def counts(t: float) -> tuple[int, int]:  # the last sample at or before t
        before = [(ok, refused) for s, ok, refused in samples if s <= t]
        return before[-1] if before else (0, 0)

    total = samples[-1][1] if samples else 0
    end = next((s for s, ok, _ in samples if ok >= total - 2 * limit), at)
    bins = []
    k = 0
    while at + k + 1 <= end:
        (ok0, r0), (ok1, r1) = counts(at + k), counts(at + k + 1)
        ok, refused = ok1 - ok0, r1 - r0
        bins.append(ok >= 0.85 * limit and refused <= 0.1 * max(1, ok + refused))
        k += 1
    for first in range(len(bins)):
        if all(bins[first:]):
            return first
    return None


def measure_limits(server: Server, p: dict[str, Any]) -> dict[str, Any]:
    n = p["limit_requests"]
    out: dict[str, Any] = {}
    cases: list[tuple[str, Any, int, float]] = [
        ("auto", "auto", n, LIMIT_BURST),
        ("fixed_4", 4, n // 2, LIMIT_BURST),  # a quarter of the pace: half the requests
        ("fixed_64", 64, n, LIMIT_BURST),
        ("auto_burst_1s", "auto", n, 1.0),
    ]
    for label, concurrency, requests, burst in cases:
        _limited(server, burst)
        spec = {
            "kind": "expand",
            "examples": requests * REQUEST_SIZE,
            "storage": "memory",
            "concurrency": concurrency,
            "on_error": "keep",  # a request out of retries is an error row, counted
            "retries": 5,  # the library's default
        }
        r = run_polled(server, spec)
        r.update(label=label, requests=requests, burst_s=burst)
        out[label] = r
    _limited(server, LIMIT_BURST, halve_at=HALVING_AT)
    spec = {
        "kind": "expand",
        "examples": p["halving_requests"] * REQUEST_SIZE,
        "storage": "memory",
        "concurrency": "auto",
        "on_error": "keep",
        "retries": 5,
    }
    r = run_polled(server, spec)
    r["settle_s"] = settle_seconds(r["samples"], HALVING_AT, LIMIT_R / 2)
    out["halving"] = r
    server._call(  # the burst back to its default: without a rate it would be refused
        "POST", "/__faults", {"requests_per_second": None, "limit_schedule": [], "limit_burst": 1.0}
    )
    return out


def run_local_worker(spec: dict[str, Any], tmp: Path, *, timeout: float = 1800) -> dict[str, Any]:
    """A measurement that needs no server, in a fresh subprocess of its own."""
    env = dict(os.environ, HF_DATASETS_DISABLE_PROGRESS_BARS="1")
    proc = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--worker",
            json.dumps({"tmp": str(tmp), **spec}),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"worker {spec['kind']} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
        )
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def measure_recall(p: dict[str, Any], tmp: Path) -> dict[str, Any]:
    out: dict[str, Any] = {
        "pairs": run_local_worker(
            {
                "kind": "recall",
                "threshold": NEAR_THRESHOLD,
                "pairs_per_level": p["pairs_per_level"],
            },
            tmp,
        )
    }
    import datasets

    datasets.disable_progress_bars()
    corpus = tmp / "dedup-corpus"  # written here: the workers' peak RSS is the report's alone
    texts = dedup_corpus(p["cost_rows"], seed=15)
    seeds = [i // 4 for i in range(len(texts))]  # four rows per seed text, as built
    datasets.Dataset.from_dict({"text": texts, "source_index": seeds}).save_to_disk(str(corpus))
    spec = {"kind": "dedup_cost", "corpus_dir": str(corpus), "threshold": NEAR_THRESHOLD}
    for near in (False, True):
        key = "near" if near else "exact_only"
        out[key] = run_local_worker({**spec, "task": "report", "near": near}, tmp)
    try:
        out["split"] = run_local_worker({**spec, "task": "split"}, tmp)
    except RuntimeError as exc:  # code from before issue 15 has no split_by_seed
        print(f"split not measured: {str(exc).splitlines()[-1]}", file=sys.stderr)
    scale = 100_000 / p["cost_rows"]
    out["near_cpu_s_per_100k"] = (out["near"]["cpu_s"] - out["exact_only"]["cpu_s"]) * scale
    out["near_rss_mb"] = out["near"]["maxrss_mb"] - out["exact_only"]["maxrss_mb"]
    if "split" in out:
        out["split_cpu_s_per_100k"] = out["split"]["cpu_s"] * scale
    return out


def measure_contamination(p: dict[str, Any], tmp: Path) -> dict[str, Any]:
    import datasets

    datasets.disable_progress_bars()
    eval_dir = tmp / "eval-set"  # written here: the worker's memory is the check's alone
    texts = zipf_texts(p["eval_texts"], 30, 70, seed=16)
    datasets.Dataset.from_dict({"question": texts}).save_to_disk(str(eval_dir))
    del texts
    return run_local_worker({"kind": "contamination", "eval_dir": str(eval_dir)}, tmp)


def _process_cpu(root: int) -> dict[int, tuple[str, float]]:
    """``root`` and every process under it: name and CPU seconds so far (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    found: dict[int, tuple[int, str, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        name, rest = text[text.index("(") + 1 : text.rindex(")")], text.rsplit(")", 1)[1].split()
        found[int(entry)] = (int(rest[1]), name, (int(rest[11]) + int(rest[12])) / tick)
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in found.items():
        children.setdefault(ppid, []).append(pid)
    out: dict[int, tuple[str, float]] = {}
    todo = [root]
    while todo:
        pid = todo.pop()
        if pid in found:
            out[pid] = found[pid][1:]
            todo += children.get(pid, [])
    return out


def _kind_of(pid: int, name: str, root: int) -> str:
    if pid == root:
        return "driver"
    if "MapWorker" in name or "ExpandBlocks" in name:
        return "actors"
    return "ray_other"  # raylet, GCS, idle and task workers, the log monitor ...


def run_ray_worker(server: Server, spec: dict[str, Any]) -> dict[str, Any]:
    """``run_worker`` for the Ray measurement, sampling as it runs: the server's request count
    (when the first request came and the last was answered) and the CPU of every process of the
    Ray session (each process's last reading counts: actors exit before the worker does)."""
    server.reset()
    cpu0 = server.cpu_seconds()
    proc = start_worker(server, spec)
    first = last = None
    seen = (0, 0)  # requests, in flight at the last poll
    series: list[tuple[float, int]] = []  # (time, requests received)
    cpu: dict[int, tuple[str, float]] = {}
    while proc.poll() is None:
        now = time.time()
        stats = server.stats()
        series.append((now, stats["requests"]))
        if first is None and stats["requests"] > 0:
            first = now
        if stats["in_flight"] == 0 and (seen[1] > 0 or stats["requests"] != seen[0]):
            last = now  # the first poll to find nothing in flight after the last request
        seen = (stats["requests"], stats["in_flight"])
        cpu.update(_process_cpu(proc.pid))
        time.sleep(0.1)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"worker ray failed ({proc.returncode}):\n{err[-3000:]}")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    result["server_requests"] = server.stats()["requests"]
    result["server_cpu_s"] = round(server.cpu_seconds() - cpu0, 3)
    by_kind: dict[str, float] = {}
    for pid, (name, seconds) in cpu.items():
        kind = _kind_of(pid, name, proc.pid)
        by_kind[kind] = by_kind.get(kind, 0.0) + seconds
    result["client_cpu_s"] = {k: round(v, 2) for k, v in sorted(by_kind.items())}
    result["first_request_after_s"] = None if first is None else first - result["t0"]
    if first is not None and last is not None:
        result["sending_s"] = last - first
    result["max_in_flight"] = server.stats()["max_in_flight"]
    # The steady rate: from a quarter to three quarters of the requests, when every actor is up
    # and none has run out of blocks.
    total = result["server_requests"]
    quarter = next((t for t, n in series if n >= total / 4), None)
    three = next((t for t, n in series if n >= 3 * total / 4), None)
    if quarter is not None and three is not None and three > quarter:
        result["steady_requests_per_s"] = (total / 2) / (three - quarter)
    return result


def measure_ray(server: Server, p: dict[str, Any], tmp: Path) -> dict[str, Any]:
    """The same seeds on 1, 2 and 4 actors: throughput against 1 actor, efficiency against the
    bound, end to end (from expand_ray to the last row) and while sending (first request to last
    answer, the actors' start-up left out)."""
    server.set_latency(LATENCY)
    n = p["ray_examples"]
    seed_dir = write_seeds(n, tmp / "ray-seeds")
    out: dict[str, Any] = {"examples": n, "concurrency_per_actor": RAY_CONCURRENCY, "runs": {}}
    for actors in RAY_ACTORS:
        spec = {
            "kind": "ray",
            "seed_dir": str(seed_dir),
            "examples": n,
            "actors": actors,
            "concurrency": RAY_CONCURRENCY,
        }
        r = run_ray_worker(server, spec)
        if r["first_request_after_s"] is not None:
            r["actors_start_s"] = r["first_request_after_s"] - r["plan_s"]
        bound = r["server_requests"] * LATENCY / (actors * RAY_CONCURRENCY)
        r["bound_s"] = bound
        r["efficiency"] = bound / r["wall_s"]
        r["rows_per_s"] = r["rows"] / r["wall_s"]
        if r.get("steady_requests_per_s"):
            # Against the bound's rate: actors x max_concurrency requests every 100 ms.
            r["steady_efficiency"] = (
                r["steady_requests_per_s"] * LATENCY / (actors * RAY_CONCURRENCY)
            )
        cpu_total = sum(r["client_cpu_s"].values()) + r["server_cpu_s"]
        r["cpu_share_of_machine"] = cpu_total / r["wall_s"] / (os.cpu_count() or 1)
        out["runs"][str(actors)] = r
    one = out["runs"]["1"]
    for actors in RAY_ACTORS:
        r = out["runs"][str(actors)]
        r["speedup"] = r["rows_per_s"] / one["rows_per_s"]
        r["scaling"] = r["speedup"] / actors  # 1.0 = linear
        if r.get("steady_requests_per_s") and one.get("steady_requests_per_s"):
            r["steady_speedup"] = r["steady_requests_per_s"] / one["steady_requests_per_s"]
            r["steady_scaling"] = r["steady_speedup"] / actors
            # The run's fixed part (Ray, the seeds' indexing, actors starting, the tail), and the
            # number of requests from which end-to-end scaling reaches the target despite it.
            for run in (one, r):
                run["fixed_s"] = (
                    run["wall_s"] - run["server_requests"] / run["steady_requests_per_s"]
                )
            want = TARGETS["ray_scaling"] * actors
            per_request = 1 / one["steady_requests_per_s"] - want / r["steady_requests_per_s"]
            if actors > 1 and per_request > 0:
                r["requests_for_target_end_to_end"] = round(
                    max(0.0, want * r["fixed_s"] - one["fixed_s"]) / per_request
                )
    shutil.rmtree(seed_dir, ignore_errors=True)
    return out


# ------------------------------------------------------------------------------------------------
# Report


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import datasets
    import pyarrow

    from synth_datasets import __version__

    return {
        "nproc": os.cpu_count(),
        "cpu_model": model or platform.processor(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "datasets": datasets.__version__,
        "pyarrow": pyarrow.__version__,
        "synth_datasets": __version__,
    }


def tree_state() -> dict[str, Any]:
    """Which code was measured: the commit and the files changed since (several people edit)."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30
            ).stdout.rstrip("\n")
        except (OSError, subprocess.SubprocessError):
            return ""

    dirty = [line[3:] for line in git("status", "--porcelain", "synth_datasets").splitlines()]
    return {"commit": git("rev-parse", "--short", "HEAD"), "changed_library_files": dirty}


def verdict(ok: bool | None) -> str:
    return "—" if ok is None else ("PASS" if ok else "MISS")


def table(results: dict[str, Any], quick: bool) -> str:
    rows: list[tuple[str, str, str, str]] = []
    eff = results.get("efficiency")
    if eff:
        for storage in ("disk", "memory"):
            r = eff[storage]
            rows.append(
                (
                    f"1. efficiency, {r['examples']} ex, 100 ms, c=32 ({storage})",
                    f"{r['efficiency']:.3f}  ({r['wall_s']:.2f} s vs bound {r['bound_s']:.2f} s)",
                    f">= {TARGETS['efficiency']}",
                    verdict(r["efficiency"] >= TARGETS["efficiency"]),
                )
            )
    naive = results.get("naive")
    if naive:
        sp = naive.get("speedup")
        rows.append(
            (
                f"2. vs naive sequential map ({naive['examples']} ex, x{naive['extrapolated_to_examples'] // naive['examples']} extrapolated)",
                (f"{sp:.1f}x" if sp else "n/a")
                + f"  (naive {naive['extrapolated_wall_s']:.1f} s est.)",
                f">= {TARGETS['speedup']:.0f}x",
                verdict(sp >= TARGETS["speedup"] if sp else None),
            )
        )
    cpu = results.get("cpu")
    if cpu:
        for label in ("no_cache", "with_cache"):
            r = cpu[label]
            rows.append(
                (
                    f"3. client CPU per row, {r['examples']} ex x4, 0 ms ({label.replace('_', ' ')})",
                    f"{r['cpu_us_per_row']:.1f} µs  ({r['rows_per_s']:,.0f} rows/s; server {r['server_cpu_us_per_row']:.1f} µs/row)",
                    f"<= {TARGETS['cpu_us_per_row']:.0f} µs",
                    # The target is about parsing, linking, casting and writing: the cache's
                    # SQLite writes (nothing paid twice) are shown beside it, not judged.
                    verdict(r["cpu_us_per_row"] <= TARGETS["cpu_us_per_row"])
                    if label == "no_cache"
                    else "—",
                )
            )
    mem = results.get("memory")
    if mem:
        sizes = [k for k in mem if k != "delta_mb"]
        peaks = ", ".join(
            f"{int(k):,} ex: {mem[k]['maxrss_mb']:.0f} MB (anon {mem[k]['peak_anon_mb']:.0f})"
            for k in sizes
        )
        rows.append(
            (
                "4. peak client RSS",
                f"{peaks}; delta {mem['delta_mb']:.0f} MB",
                f"delta < {TARGETS['memory_delta_mb']:.0f} MB",
                verdict(mem["delta_mb"] < TARGETS["memory_delta_mb"]),
            )
        )
    res = results.get("resume")
    if res:
        rows.append(
            (
                f"5. resume after kill -9 ({res['examples']} ex, killed at {res['killed_run_requests']}/{res['clean_requests']} req)",
                f"{res['resent']} requests re-sent ({res['cached_at_kill']} cached at kill)",
                f"<= {res['max_concurrency']}",
                verdict(res["resent"] <= res["max_concurrency"]),
            )
        )
    srv = results.get("server")
    if srv:
        for c in ("32", "64"):
            r = srv[c]
            rows.append(
                (
                    f"   server capacity, 0 ms, {c} connections",
                    f"{r['requests_per_s']:,.0f} req/s = {r['rows_per_s']:,.0f} rows/s (server CPU {r['server_cpu_share']:.0%} of a core)",
                    "> 320 req/s",
                    verdict(r["requests_per_s"] > 320),
                )
            )
    if srv and "latency_100ms_32" in srv:
        r = srv["latency_100ms_32"]
        rows.append(
            (
                "   server-only ceiling, 100 ms, 32 connections",
                f"{r['requests_per_s']:,.0f} req/s of {CONCURRENCY / LATENCY:.0f} = efficiency "
                f"ceiling {r['efficiency_ceiling']:.2f} (server CPU {r['server_cpu_share']:.0%})",
                f">= {TARGETS['efficiency']}",
                verdict(r["efficiency_ceiling"] >= TARGETS["efficiency"]),
            )
        )
    ray_runs = (results.get("ray") or {}).get("runs", {})
    for actors, r in ray_runs.items():
        steady = r.get("steady_speedup")
        rows.append(
            (
                f"7. Ray, {r['examples']} ex, 100 ms, {actors} actor(s) x c={RAY_CONCURRENCY}",
                (
                    f"steady x{steady:.2f} of 1 actor, eff. {r['steady_efficiency']:.2f}; "
                    if steady is not None
                    else "steady: n/a; "
                )
                + f"end to end x{r['speedup']:.2f}, eff. {r['efficiency']:.2f} ({r['wall_s']:.1f} s"
                f" vs bound {r['bound_s']:.1f} s, first request after "
                f"{r['first_request_after_s'] or 0:.1f} s)",
                f">= {TARGETS['ray_scaling'] * int(actors):.1f}x",
                verdict(steady >= TARGETS["ray_scaling"] * int(actors) if steady else None)
                if actors != "1"
                else "—",
            )
        )
    lim = results.get("limits")
    if lim:
        for label in ("auto", "fixed_4", "fixed_64", "auto_burst_1s"):
            r = lim[label]
            target, ok = {
                "auto": (
                    ">= 0.90 R, <= 5 % 429",
                    r["throughput_R"] >= 0.90 and r["share_429"] <= 0.05,
                ),
                "fixed_64": (">= 0.85 R", r["throughput_R"] >= 0.85),
            }.get(label, ("—", None))
            rows.append(
                (
                    f"8. {label.replace('_', ' ')}, R = 100/s, bucket {r['burst_s']:g} s ({r['requests']} req)",
                    f"{r['throughput_R']:.2f} R, {r['share_429']:.1%} 429 ({r['refused']} of "
                    f"{r['server_requests']}), {r['errors']} error rows, {r['wall_s']:.1f} s",
                    target,
                    verdict(ok),
                )
            )
        h = lim["halving"]
        rows.append(
            (
                f"8. auto, limit halved at {HALVING_AT:g} s ({h['examples'] // REQUEST_SIZE} req)",
                f"settled in {h['settle_s']} s; {h['share_429']:.1%} 429 overall"
                if h["settle_s"] is not None
                else "never settled",
                "<= 10 s",
                verdict(h["settle_s"] is not None and h["settle_s"] <= 10),
            )
        )
    rec = results.get("recall")
    if rec:
        pr = rec["pairs"]
        rows.append(
            (
                f"9. near-dup recall, Jaccard >= {pr['threshold'] + 0.02:.2f} ({pr['pairs_above']} pairs)",
                f"{pr['recall_above']:.4f}",
                ">= 0.99",
                verdict(pr["recall_above"] >= 0.99),
            )
        )
        rows.append(
            (
                f"   near-dup false positives, Jaccard <= {pr['threshold'] - 0.05:.2f} ({pr['pairs_below']} pairs)",
                f"{pr['false_positives_below']:.4f}",
                "<= 0.01",
                verdict(pr["false_positives_below"] <= 0.01),
            )
        )
        rows.append(
            (
                f"   recall at Jaccard >= {pr['threshold']}; flagged below it",
                f"{pr['recall_at_or_above']:.4f}; {pr['flagged_below']} pairs",
                "",
                "",
            )
        )
        for b in pr["buckets"]:
            rows.append(
                (
                    f"   flagged at Jaccard [{b['jaccard_from']:.2f}, {b['jaccard_below']:.2f}) ({b['pairs']} pairs)",
                    f"{b['share_flagged']:.4f}",
                    "",
                    "",
                )
            )
        rows.append(
            (
                f"   near-dup search cost, {rec['near']['rows']:,} rows of 60-100 words",
                f"{rec['near_cpu_s_per_100k']:.1f} s CPU per 100k rows; peak RSS "
                f"{rec['exact_only']['maxrss_mb']:.0f} -> {rec['near']['maxrss_mb']:.0f} MB",
                "",
                "—",
            )
        )
        split = rec.get("split")
    if rec and split:
        rows.append(
            (
                "   split_by_seed + cross_split_duplicates, same rows",
                f"{rec['split_cpu_s_per_100k']:.1f} s CPU per 100k rows; peak RSS "
                f"{split['maxrss_mb']:.0f} MB; {split['cross_split_pairs']} pairs across",
                "0 pairs",
                verdict(split["cross_split_pairs"] == 0),
            )
        )
    con = results.get("contamination")
    if con:
        rows.append(
            (
                f"10. decontamination, {con['eval_texts']:,} eval texts of 30-70 words",
                f"{con['cpu_s']:.1f} s CPU; {con['ngrams']:,} 13-grams = {con['index_mb']:.0f} MB "
                f"index; peak anon {con['anon_before_mb']:.0f} -> {con['peak_anon_mb']:.0f} MB "
                f"(+ {con['peak_file_mb']:.0f} MB file-backed); {con['rows_flagged']}/100 planted",
                "100/100",
                verdict(con["rows_flagged"] == 100),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(4)] if rows else [0] * 4
    head = ("measure", "result", "target", "")
    lines = [
        "  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)),
        "  ".join("-" * w for w in widths),
    ]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    ceiling = (srv or {}).get("latency_100ms_32", {}).get("efficiency_ceiling")
    if ceiling is not None and ceiling < TARGETS["efficiency"]:
        lines.append(
            f"note: a bare load generator reaches only {ceiling:.2f} of the 100 ms bound against "
            "this server (its generation runs after the latency sleep): see docs/benchmarks.md"
        )
    if quick:
        lines.append("(--quick: scaled-down sizes, figures are a smoke test, not the targets)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="scaled-down smoke test (< 60 s)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    parser.add_argument(
        "--only", default=",".join(ALL), help=f"comma-separated subset of {','.join(ALL)}"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0

    only = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = only - set(ALL)
    if unknown:
        parser.error(f"unknown measurement(s): {', '.join(sorted(unknown))}")
    p = QUICK if args.quick else FULL
    recall_sizes = RECALL_QUICK if args.quick else RECALL
    load_before = os.getloadavg()
    if load_before[0] > (os.cpu_count() or 1) / 2:
        print(
            f"warning: load average {load_before[0]:.1f} on {os.cpu_count()} CPUs: other "
            "processes compete for the CPU, wall-clock figures will be pessimistic",
            file=sys.stderr,
        )
    started = time.perf_counter()
    results: dict[str, Any] = {}
    tmp = Path(tempfile.mkdtemp(prefix="synth-bench-"))
    server = Server(tmp) if only & NEEDS_SERVER else None
    try:
        if "efficiency" in only:
            print("1. efficiency ...", file=sys.stderr, flush=True)
            results["efficiency"] = measure_efficiency(server, p)
        if "naive" in only:
            print("2. naive sequential map ...", file=sys.stderr, flush=True)
            ours = results.get("efficiency", {}).get("disk", {}).get("wall_s")
            results["naive"] = measure_naive(server, p, ours)
        if "cpu" in only:
            print("3. CPU per row ...", file=sys.stderr, flush=True)
            results["cpu"] = measure_cpu(server, p, tmp)
        if "memory" in only:
            print("4. memory ...", file=sys.stderr, flush=True)
            results["memory"] = measure_memory(server, p, tmp)
        if "resume" in only:
            print("5. resume after kill -9 ...", file=sys.stderr, flush=True)
            results["resume"] = measure_resume(server, p, tmp)
        if "server" in only:
            print("6. server capacity ...", file=sys.stderr, flush=True)
            results["server"] = measure_server(server, p)
        if "ray" in only:
            print("7. Ray actors ...", file=sys.stderr, flush=True)
            results["ray"] = measure_ray(server, p, tmp)
        if "limits" in only:
            print("8. under a rate limit ...", file=sys.stderr, flush=True)
            results["limits"] = measure_limits(server, p)
        if "recall" in only:
            print("9. near-duplicate recall and cost ...", file=sys.stderr, flush=True)
            results["recall"] = measure_recall(recall_sizes, tmp)
        if "contamination" in only:
            print(
                "10. decontamination against a large evaluation set ...",
                file=sys.stderr,
                flush=True,
            )
            results["contamination"] = measure_contamination(recall_sizes, tmp)
    finally:
        if server is not None:
            server.close()
        shutil.rmtree(tmp, ignore_errors=True)
    report = {
        "command": " ".join([".venv/bin/python", "scripts/bench.py", *sys.argv[1:]]),
        "quick": args.quick,
        "machine": machine(),
        "tree": tree_state(),
        "parameters": {
            **p,
            **({"recall": recall_sizes} if only & {"recall", "contamination"} else {}),
            "request_size": REQUEST_SIZE,
            "multiplier": MULTIPLIER,
            "latency_s": LATENCY,
            "max_concurrency": CONCURRENCY,
        },
        "targets": TARGETS,
        "results": results,
        "total_s": time.perf_counter() - started,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
    }
    print(table(results, args.quick))
    print(
        f"load average before/after: {load_before[0]:.1f} / {os.getloadavg()[0]:.1f} "
        f"on {os.cpu_count()} CPUs",
        file=sys.stderr,
    )
    print(f"total {report['total_s']:.0f} s", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
