"""The helpers every test module shares: one of each, imported through conftest.py.

Paths, the seed datasets, the client factory, the expand wrapper, the row checks, the subprocess
runners of the CLI and the scripts, the card parser and a small stand-in HTTP server for the
answers the reference server never gives. Test modules import them from here (tests/ is on
`sys.path` under pytest's default import mode); conftest.py builds its fixtures on them.
"""

from __future__ import annotations

import contextlib
import http.server
import importlib.util
import json
import os
import socketserver
import subprocess
import sys
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import yaml
from hypothesis import strategies as st

_S = TypeVar("_S", bound="Served")

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
SAMPLE = ROOT / "synth_datasets" / "data" / "sample_seeds.jsonl"
SAMPLE_PROMPT = ROOT / "synth_datasets" / "data" / "sample_prompt.txt"
SAMPLE_EVAL = ROOT / "synth_datasets" / "data" / "sample_eval.jsonl"

MODEL_ID = "123e4567-e89b-12d3-a456-426614174000"
PROMPT = "Write another question and answer like this one."


# -- seeds ----------------------------------------------------------------------------------------


def qa_rows(n: int, *, long_answers: bool = False) -> list[dict[str, str]]:
    """``n`` question/answer seed rows, each unlike the others."""
    tail = " It comes with a long explanation of every step." * 4 if long_answers else ""
    return [
        {"q": f"Question {i}: what is the value of item {i}?", "a": f"Item {i} is {i}.{tail}"}
        for i in range(n)
    ]


def qa(n: int, *, long_answers: bool = False) -> Any:
    """The same rows as a ``datasets.Dataset``."""
    from datasets import Dataset

    return Dataset.from_list(qa_rows(n, long_answers=long_answers))


def conversations(n: int) -> list[dict[str, Any]]:
    """Conversation seed rows: a user turn, the assistant's answer and a passthrough topic."""
    return [
        {
            "conv_prefix": [{"role": "user", "content": f"Question number {i} about topic {i}?"}],
            "response": {"role": "assistant", "content": f"Answer number {i}, with detail."},
            "topic": f"t{i}",
        }
        for i in range(n)
    ]


def write_jsonl(path: Path, rows: Iterable[Mapping[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(dict(row)) + "\n" for row in rows))
    return path


# -- client and expansion -------------------------------------------------------------------------


def make_client(server: Any, token: str | None = None, **kw: Any) -> Any:
    """A client of ``server`` (a ReferenceServer, or a base URL) that retries fast.

    The token is the server's own unless given (a URL needs one).
    """
    from synth_datasets import SynthClient

    kw.setdefault("backoff_factor", 0.01)
    kw.setdefault("max_retries", 3)
    kw.setdefault("timeout", 10.0)
    if isinstance(server, str):
        return SynthClient(token, server, **kw)
    return SynthClient(server.token if token is None else token, server.url, **kw)


def run_expand(ds: Any, client: Any, cache_dir: Path | None, **kw: Any) -> Any:
    """``expand`` with the tests' defaults (PROMPT, multiplier 2, MODEL_ID)."""
    from synth_datasets import expand

    kw.setdefault("prompt", PROMPT)
    kw.setdefault("multiplier", 2)
    kw.setdefault("model_id", MODEL_ID)
    return expand(ds, client=client, cache_dir=cache_dir, **kw)


def group_by_seed(rows: Iterable[Mapping[str, Any]]) -> dict[int | None, list[dict[str, Any]]]:
    """Rows grouped by ``source_index`` (``None`` for unlinked rows), in their order."""
    groups: dict[int | None, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[row["source_index"]].append(dict(row))
    return dict(groups)


def sorted_by_seed(ds: Any) -> list[dict[str, Any]]:
    """Rows sorted by source_index then generated_raw: equal for runs that differ in order only."""
    rows = ds.to_list()
    return sorted(rows, key=lambda r: (r["source_index"], r["generated_raw"] or ""))


def assert_complete(out: Any, seeds: Any, per_seed: int, columns: list[str] | None = None) -> None:
    """Every seed has exactly ``per_seed`` clean rows, linked to it, values from the raw text."""
    columns = columns or list(seeds.column_names)
    groups = group_by_seed(out)
    assert set(groups) == set(range(len(seeds)))
    for i, rows in groups.items():
        assert len(rows) == per_seed, (i, rows)
        for row in rows:
            assert row["error"] is None, row
            assert row["original"] == {c: seeds[i][c] for c in columns}
            generated = json.loads(row["generated_raw"])
            assert {c: row[c] for c in columns} == {c: generated[c] for c in columns}
    assert out["source_index"] == sorted(out["source_index"])


# -- the command line and the scripts, as a user runs them ----------------------------------------


def run_python(
    argv: list[str], env: Mapping[str, str] | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """``python ARGV...`` in this environment plus ``env``; output captured as text."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, *argv], capture_output=True, text=True, timeout=timeout, env=full_env
    )


def cli(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    """``synth-datasets ARGS...`` in a subprocess."""
    return run_python(["-m", "synth_datasets.cli", *args], **kw)


def script(name: str, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    """``python scripts/NAME ARGS...`` in a subprocess."""
    return run_python([str(SCRIPTS / name), *args], **kw)


def expand_sample(
    out: Path, cache: Path, *args: str, multiplier: int = 2, limit: int | None = 6, **kw: Any
) -> subprocess.CompletedProcess[str]:
    """``synth-datasets expand`` of the bundled sample seeds as ``make demo`` runs it (its
    columns and prompt file), on ``--local``, cut to ``limit`` rows."""
    cut = ["--limit", str(limit)] if limit is not None else []
    return cli(
        "expand",
        str(SAMPLE),
        "--local",
        "--columns",
        "conv_prefix,response",
        "--prompt-file",
        str(SAMPLE_PROMPT),
        "--multiplier",
        str(multiplier),
        *cut,
        "--output",
        str(out),
        "--cache-dir",
        str(cache),
        *args,
        **kw,
    )


def load_script(name: str) -> ModuleType:
    """scripts/NAME imported as a module (its functions, its ``main(argv)``)."""
    spec = importlib.util.spec_from_file_location(
        "_script_" + name.removesuffix(".py"), SCRIPTS / name
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def error_lines(stderr: str) -> list[str]:
    """The lines of ``stderr`` that report an error (progress bars, whose counts name error
    rows, may come before them)."""
    return [
        line
        for line in stderr.splitlines()
        if "error" in line.lower() and not line.startswith("synth_datasets:")
    ]


# -- races ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def gil_switching_often() -> Iterator[None]:
    """Threads handed the GIL as often as CPython allows while the block runs: a window of a few
    bytecodes between two steps that should be one becomes one a test can hit."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)


# -- the request cache's file, held by another process ----------------------------------------

_HOLD_LOCK = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()
"""


@contextlib.contextmanager
def lock_held_by_another_process(path: Path) -> Iterator[None]:
    """``path``'s write lock held by another process until the block ends."""
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        yield
    finally:
        holder.communicate("", timeout=30)


# -- cards ----------------------------------------------------------------------------------------


def card_yaml(text: str | bytes) -> tuple[dict[str, Any], str]:
    """A README's YAML header and its body."""
    if isinstance(text, bytes):
        text = text.decode()
    assert text.startswith("---\n"), text[:200]
    _, header, body = text.split("---\n", 2)
    meta = yaml.safe_load(header)
    assert isinstance(meta, dict)
    return meta, body


# -- a stand-in HTTP server -----------------------------------------------------------------------


@dataclass
class Answer:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    method: str = "POST"
    path: str = ""


class Served:
    """A ``socketserver`` server on loopback, served from a daemon thread while in ``with``."""

    def __init__(self, server: socketserver.BaseServer) -> None:
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)

    def __enter__(self: _S) -> _S:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


class StubServer(Served):
    """A plain HTTP server on loopback whose POST answers come from ``answer(received)``.

    For what the reference server never does (an HTML 200, a body quoting the credentials).
    Every request is kept in ``received``; a GET is answered 404. Use it as a context manager.
    """

    def __init__(self, answer: Callable[[Received], Answer]) -> None:
        stub = self
        self.answer = answer
        self.received: list[Received] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                stub.received.append(Received(dict(self.headers.items()), b"", "GET", self.path))
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                received = Received(dict(self.headers.items()), body, "POST", self.path)
                stub.received.append(received)
                answer = stub.answer(received)
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)

            def log_message(self, *args: Any) -> None:
                pass

        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        super().__init__(httpd)
        self.url = f"http://127.0.0.1:{httpd.server_port}"


class RecordingProxy(Served):
    """A forward proxy on loopback that records the raw bytes of each request it receives
    (CONNECT or a proxied plain-HTTP request, body included) and answers 502 to all of them.

    Point ``HTTP_PROXY``/``HTTPS_PROXY``/``ALL_PROXY`` at ``url`` to see what would have
    crossed a proxy. Use it as a context manager.
    """

    def __init__(self) -> None:
        proxy = self
        self.received: list[bytes] = []

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                self.request.settimeout(5)
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = self.request.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                head = data.split(b"\r\n\r\n", 1)[0].lower()
                for line in head.split(b"\r\n"):
                    if line.startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                        while len(data) - len(head) - 4 < length:
                            chunk = self.request.recv(65536)
                            if not chunk:
                                break
                            data += chunk
                proxy.received.append(data)
                self.request.sendall(
                    b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )

        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        super().__init__(server)
        self.url = f"http://127.0.0.1:{server.server_address[1]}"


# -- hypothesis strategies of JSON, shared by the parsing properties --------------------------------

_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
)
_json_values = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=8,
)
json_objects = st.dictionaries(st.text(max_size=10), _json_values, max_size=4).filter(
    lambda d: not (len(d) == 1 and "generated_data" in d)
)
JSONISH_TEXT = st.text(alphabet="{}[]\":,'`\\ \nabtrue0123-.eE", max_size=60)
