"""Request cache: every answered request is stored, so a rerun never pays for it twice.

SQLite in WAL mode, one connection per thread and per process, autocommit: a row is durable as
soon as its request returned, which is what makes a crashed run resumable at request granularity.
The key is a hash of the endpoint, the request body (model, prompt, multiplier, examples) and an
optional run id; the token is never part of it, and nothing of the request but the hash is stored.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["CACHE_ENV", "RequestCache", "default_cache_dir", "request_key"]

CACHE_ENV = "SYNTH_DATASETS_CACHE"
_SCHEMA_VERSION = "1"


def default_cache_dir() -> Path:
    """``$SYNTH_DATASETS_CACHE``, else ``$XDG_CACHE_HOME/synth_datasets``, else ``~/.cache/...``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "synth_datasets"


def request_key(base_url: str, body: bytes, run_id: str | None = None) -> str:
    h = hashlib.sha256()
    for part in (_SCHEMA_VERSION, base_url, run_id or ""):
        h.update(part.encode("utf-8"))
        h.update(b"\x00")
    h.update(body)
    return h.hexdigest()


class RequestCache:
    """A key → answered items store that many threads and processes can share."""

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.directory = self.folder_for(directory)
        self.path = self.directory / "requests.sqlite"
        self._local = threading.local()
        self._pid = os.getpid()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._connect()  # fail early on an unusable folder

    @staticmethod
    def folder_for(directory: str | os.PathLike[str] | None) -> Path:
        return Path(directory) if directory is not None else default_cache_dir()

    def __repr__(self) -> str:
        return f"RequestCache({str(self.path)!r})"

    def __getstate__(self) -> dict[str, Any]:
        return {"directory": self.directory, "path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.directory = state["directory"]
        self.path = state["path"]
        self._local = threading.local()
        self._pid = os.getpid()

    def _connect(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and self._pid == os.getpid():
            return conn
        conn = sqlite3.connect(
            self.path, timeout=60.0, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS responses ("
            " key TEXT PRIMARY KEY, created REAL NOT NULL, items TEXT NOT NULL)"
        )
        self._local.conn = conn
        self._pid = os.getpid()
        return conn

    def get(self, key: str) -> list[dict[str, Any]] | None:
        row = (
            self._connect().execute("SELECT items FROM responses WHERE key = ?", (key,)).fetchone()
        )
        if row is None:
            return None
        try:
            items = json.loads(row[0])
        except ValueError:
            return None  # a damaged entry is a miss, not a crash
        return items if isinstance(items, list) else None

    def put(self, key: str, items: list[dict[str, Any]]) -> None:
        text = json.dumps(items, ensure_ascii=False, separators=(",", ":"))
        self._connect().execute(
            "INSERT OR REPLACE INTO responses (key, created, items) VALUES (?, ?, ?)",
            (key, time.time(), text),
        )

    def __len__(self) -> int:
        return int(self._connect().execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def clear(self) -> None:
        self._connect().execute("DELETE FROM responses")
