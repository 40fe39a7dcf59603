"""Request cache: every answer is stored (SQLite, WAL, autocommit), so a rerun never pays twice.

One connection per process, shared under a lock: one per thread cost more CPU (each write emptied
the others' page caches; writers polled for the WAL lock). The key never hashes the token. Answers
are kept as received and parsed again on a hit, so a parser fix reaches answers already cached.
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

from .errors import ResponseFormatError
from .framing import parse_body

__all__ = ["CACHE_ENV", "RequestCache", "default_cache_dir", "request_key"]

CACHE_ENV = "SYNTH_DATASETS_CACHE"
_SCHEMA_VERSION = "2"


def default_cache_dir() -> Path:
    """``$SYNTH_DATASETS_CACHE``, else ``$XDG_CACHE_HOME/synth_datasets``, else ``~/.cache/...``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "synth_datasets"


def request_key(base_url: str, body: bytes, run_id: str | None = None) -> str:
    head = "\x00".join((_SCHEMA_VERSION, base_url, run_id or "", "")).encode("utf-8")
    return hashlib.sha256(head + body).hexdigest()


class RequestCache:
    """A key → answered items store that many threads and processes can share."""

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.directory = self.folder_for(directory)
        self.path = self.directory / "requests.sqlite"
        self._handle: tuple[int, threading.Lock, sqlite3.Connection] | None = None
        self.directory.mkdir(parents=True, exist_ok=True)
        self._connection()  # fail early on an unusable folder

    @staticmethod
    def folder_for(directory: str | os.PathLike[str] | None) -> Path:
        return Path(directory) if directory is not None else default_cache_dir()

    def __repr__(self) -> str:
        return f"RequestCache({str(self.path)!r})"

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_handle": None}  # the connection stays in its process

    def _connection(self) -> tuple[threading.Lock, sqlite3.Connection]:
        """This process's lock and connection, opened again after a fork (the parent's lock may
        have been held then); two threads racing here each use their own: harmless, and rare."""
        handle = self._handle
        if handle is None or handle[0] != os.getpid():
            handle = self._handle = (os.getpid(), threading.Lock(), self._connect())
        return handle[1], handle[2]

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, timeout=60.0, isolation_level=None, check_same_thread=False
        )
        for attempt in range(100):
            try:
                # Switching to WAL takes an exclusive lock and does not wait for it: workers
                # that open a new cache at the same moment (num_proc) retry instead of failing.
                if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                    conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY,"
                    " created REAL NOT NULL, content_type TEXT, body BLOB NOT NULL)"
                )
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == 99:
                    raise
                time.sleep(0.05)
        return conn

    def get(self, key: str) -> list[dict[str, Any]] | None:
        """The answer's items, parsed again from the stored body (None when not cached)."""
        lock, conn = self._connection()
        with lock:
            row = conn.execute(
                "SELECT body, content_type FROM answers WHERE key = ?", (key,)
            ).fetchone()
        if row is None:
            return None
        try:
            return parse_body(row[0], content_type=row[1])
        except ResponseFormatError:
            return None  # a damaged entry is a miss, not a crash

    def put(
        self,
        key: str,
        items: list[dict[str, Any]],
        *,
        body: bytes | None = None,
        content_type: str | None = None,
    ) -> None:
        """Store an answer: its body as received when given (no re-encoding), else the items."""
        if body is None:
            body = json.dumps(items, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
            content_type = "application/json"
        row = (key, time.time(), content_type, body)
        lock, conn = self._connection()
        with lock:
            conn.execute(
                "INSERT OR REPLACE INTO answers (key, created, content_type, body)"
                " VALUES (?, ?, ?, ?)",
                row,
            )

    def __len__(self) -> int:
        lock, conn = self._connection()
        with lock:
            return int(conn.execute("SELECT COUNT(*) FROM answers").fetchone()[0])
