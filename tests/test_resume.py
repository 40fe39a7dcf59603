"""Crash-resume: an expansion killed with SIGKILL, or stopped by a failed request, resumes.

The expansion runs in a subprocess (a small script written into ``tmp_path``) against a reference
server started here, so the test can kill it mid-run and count what the server saw. The server
is deterministic per request, so the resumed dataset must equal an uninterrupted run's, and the
only requests paid twice are the ones in flight when the process died.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import MODEL_ID, PROMPT, group_by_seed, make_client, qa, qa_rows, run_expand

from synth_datasets.testing import ReferenceServer

N_SEEDS = 96
REQUEST_SIZE = 2
MAX_CONCURRENCY = 4
N_REQUESTS = N_SEEDS // REQUEST_SIZE

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path

    import datasets
    from datasets import Dataset

    from synth_datasets import SynthClient, SynthError, expand

    datasets.disable_progress_bars()
    seeds = Dataset.from_list(json.loads(Path(os.environ["SEEDS"]).read_text()))
    # COLLINEAR_API_KEY and COLLINEAR_BASE_URL come from the environment.
    client = SynthClient(backoff_factor=0.01, max_retries=int(os.environ["MAX_RETRIES"]))
    try:
        out = expand(
            seeds,
            prompt=os.environ["PROMPT"],
            multiplier=2,
            model_id=os.environ["MODEL_ID"],
            client=client,
            request_size=int(os.environ["REQUEST_SIZE"]),
            max_concurrency=int(os.environ["MAX_CONCURRENCY"]),
            cache_dir=os.environ["CACHE_DIR"],
            on_error="raise",
        )
    except SynthError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        sys.exit(3)
    Path(os.environ["RESULT"]).write_text(json.dumps(out.to_list()))
    """
)


def seed_rows() -> list[dict[str, Any]]:
    return qa_rows(N_SEEDS)


class Job:
    """The expansion script, its inputs and its environment."""

    def __init__(self, tmp_path: Path, server: ReferenceServer, max_retries: int = 3) -> None:
        self.script = tmp_path / "run_expand.py"
        self.script.write_text(SCRIPT)
        seeds = tmp_path / "seeds.json"
        seeds.write_text(json.dumps(seed_rows()))
        self.result = tmp_path / "result.json"
        self.env = {
            **os.environ,
            "COLLINEAR_API_KEY": server.token,
            "COLLINEAR_BASE_URL": server.url,
            "SEEDS": str(seeds),
            "RESULT": str(self.result),
            "PROMPT": PROMPT,
            "MODEL_ID": MODEL_ID,
            "MAX_RETRIES": str(max_retries),
            "REQUEST_SIZE": str(REQUEST_SIZE),
            "MAX_CONCURRENCY": str(MAX_CONCURRENCY),
            "CACHE_DIR": str(tmp_path / "synth-cache"),
        }

    def start(self) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, str(self.script)],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def run(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(self.script)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def rows(self) -> list[dict[str, Any]]:
        return json.loads(self.result.read_text())  # type: ignore[no-any-return]


def uninterrupted(server: ReferenceServer, cache_dir: Path) -> tuple[list[dict[str, Any]], int]:
    """The reference result and its request count, from a clean in-process run."""
    server.reset_stats()
    client = make_client(server)
    out = run_expand(
        qa(N_SEEDS),
        client,
        cache_dir,
        request_size=REQUEST_SIZE,
        max_concurrency=MAX_CONCURRENCY,
    )
    requests = server.stats()["requests"]
    server.reset_stats()
    return out.to_list(), requests


def wait_for_requests(server: ReferenceServer, count: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while server.stats()["requests"] < count:
        if proc.poll() is not None:
            pytest.fail(f"the run ended before it could be killed: {proc.communicate()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the run made no progress")
        time.sleep(0.005)


@pytest.mark.slow
def test_kill_9_at_half_then_rerun_equals_an_uninterrupted_run(
    ref_server: ReferenceServer, tmp_path: Path
) -> None:
    expected, clean_requests = uninterrupted(ref_server, tmp_path / "clean-cache")
    assert clean_requests == N_REQUESTS

    job = Job(tmp_path, ref_server)
    ref_server.set_faults(latency=0.15)  # 48 requests, 4 at a time: about 2 s
    proc = job.start()
    wait_for_requests(ref_server, N_REQUESTS // 2, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not job.result.exists()
    killed_requests = ref_server.stats()["requests"]
    assert N_REQUESTS // 2 <= killed_requests < N_REQUESTS

    ref_server.reset_stats()
    ref_server.set_faults(latency=0.0)
    done = job.run()
    assert done.returncode == 0, done.stderr
    resumed_requests = ref_server.stats()["requests"]

    rows = job.rows()
    assert group_by_seed(rows) == group_by_seed(expected)
    assert rows == expected
    # Only what was in flight at the kill was paid twice.
    assert killed_requests + resumed_requests <= clean_requests + MAX_CONCURRENCY
    assert resumed_requests <= clean_requests - killed_requests + MAX_CONCURRENCY


@pytest.mark.slow
def test_rerun_after_an_on_error_raise_failure_equals_an_uninterrupted_run(
    ref_server: ReferenceServer, tmp_path: Path
) -> None:
    expected, clean_requests = uninterrupted(ref_server, tmp_path / "clean-cache")

    job = Job(tmp_path, ref_server, max_retries=0)
    ref_server.set_faults(script=["ok"] * 12 + [500], latency=0.02)
    failed = job.run()
    assert failed.returncode == 3
    message = failed.stderr.strip()
    assert message.startswith("FAILED: 500 from 127.0.0.1") and "seed rows" in message
    assert "\n" not in message
    assert ref_server.token not in failed.stderr + failed.stdout
    first = ref_server.stats()
    assert first["by_status"]["500"] == 1
    assert not job.result.exists()

    ref_server.reset_stats()
    ref_server.set_faults(script=[], latency=0.0)
    done = job.run()
    assert done.returncode == 0, done.stderr
    second = ref_server.stats()

    rows = job.rows()
    assert group_by_seed(rows) == group_by_seed(expected)
    assert rows == expected
    # Every answered request of the failed run came from the cache on the rerun.
    assert first["by_status"]["200"] + second["by_status"]["200"] == clean_requests
    assert first["requests"] + second["requests"] == clean_requests + 1
    assert first["requests"] + second["requests"] <= clean_requests + MAX_CONCURRENCY
