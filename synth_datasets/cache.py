"""Request cache: every answer is stored (SQLite, WAL, autocommit), so a rerun never pays twice.

One connection per process, shared under a lock: one per thread cost more CPU (each write emptied
the others' page caches; writers polled for the WAL lock). The key never hashes the token. Answers
are kept as received and parsed again on a hit, so a parser fix reaches answers already cached.

The cache never costs an answer: a write that fails (the file locked by another program, a full
disk) is counted and reported once, and the answer still becomes rows. A damaged file is moved
aside and a fresh one started. Processes sharing the folder take a lease on a request before
sending it, so a request that one of them is fetching is awaited by the others, not paid twice.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from .config import check_folder
from .errors import ResponseFormatError
from .framing import parse_body

__all__ = ["CACHE_ENV", "RequestCache", "default_cache_dir", "request_key"]

logger = logging.getLogger("synth_datasets")

CACHE_ENV = "SYNTH_DATASETS_CACHE"
_SCHEMA_VERSION = "2"
# A statement waits this long for another writer (each write holds the lock for milliseconds);
# after a failure, later ones wait only _SHORT_WAIT, so a lock held for minutes by another program
# does not add the full wait to every request.
BUSY_TIMEOUT = 5.0
_SHORT_WAIT = 0.1
_DAMAGED = ("file is not a database", "database disk image is malformed")
_HOST = socket.gethostname()

_T = TypeVar("_T")


def default_cache_dir() -> Path:
    """``$SYNTH_DATASETS_CACHE``, else ``$XDG_CACHE_HOME/synth_datasets``, else ``~/.cache/...``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "synth_datasets"


def request_key(endpoint: str, body: bytes, run_id: str | None = None) -> str:
    """The key of a request: the endpoint (its base URL, or the ``cache_endpoint`` a server
    on a changing port is known by), the body and ``run_id``; never the token."""
    head = "\x00".join((_SCHEMA_VERSION, endpoint, run_id or "", "")).encode("utf-8")
    return hashlib.sha256(head + body).hexdigest()


def _damaged(exc: sqlite3.DatabaseError) -> bool:
    name = getattr(exc, "sqlite_errorname", "")  # Python >= 3.11
    return name in ("SQLITE_CORRUPT", "SQLITE_NOTADB") or any(m in str(exc) for m in _DAMAGED)


def _alive(host: str, pid: int) -> bool:
    """Whether a lease holder may still be fetching: a process of another host is assumed alive
    (its lease expires instead)."""
    if host != _HOST:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


class _Link:
    """This process's lock and connection: never crosses a fork or a pickle."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.conn: sqlite3.Connection | None = None
        self.inode: int | None = None  # of the file the connection opened
        self.short_wait = False  # a statement failed: wait _SHORT_WAIT until one succeeds
        self.fetching: set[str] = set()  # keys whose lease this process holds


class RequestCache:
    """A key → answered items store that many threads and processes can share."""

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.directory = check_folder("cache_dir", self.folder_for(directory), create=True)
        self.path = self.directory / "requests.sqlite"
        self.not_written = 0  # answers that could not be stored
        self.problem: str | None = None  # why the last statement failed
        self._reported = 0
        self._handle: _Link | None = None
        self._run(lambda conn: None, None)  # a damaged file is set aside now, not mid-run

    @staticmethod
    def folder_for(directory: str | os.PathLike[str] | None) -> Path:
        return Path(directory) if directory is not None else default_cache_dir()

    def __repr__(self) -> str:
        return f"RequestCache({str(self.path)!r})"

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_handle": None}  # the connection stays in its process

    def _link(self) -> _Link:
        """This process's link, made again after a fork (the parent's lock may have been held
        then); two threads racing here each use their own: harmless, and rare."""
        handle = self._handle
        if handle is None or handle.pid != os.getpid():
            handle = self._handle = _Link()
        return handle

    def _connect(self, link: _Link) -> sqlite3.Connection:
        try:
            link.inode = self.path.stat().st_ino
        except FileNotFoundError:
            link.inode = None
        conn = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
        )
        deadline = time.monotonic() + BUSY_TIMEOUT
        try:
            while True:
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
                    conn.execute(
                        "CREATE TABLE IF NOT EXISTS leases (key TEXT PRIMARY KEY,"
                        " host TEXT NOT NULL, pid INTEGER NOT NULL, expires REAL NOT NULL)"
                    )
                    break
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) or time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            if link.inode is None:
                link.inode = self.path.stat().st_ino
        except BaseException:
            conn.close()
            raise
        return conn

    def _run(
        self, work: Callable[[sqlite3.Connection], _T], fallback: _T, write: bool = False
    ) -> _T:
        """``work`` on this process's connection, under its lock.

        A damaged file is set aside and the work done again on a fresh one. A cache that cannot
        be used now (locked past the wait, read-only, full disk) gives ``fallback``; a failed
        write is counted in ``not_written``.
        """
        link = self._link()
        with link.lock:
            for attempt in range(2):
                try:
                    if link.conn is None:
                        link.conn = self._connect(link)
                    if link.short_wait:
                        link.conn.execute(f"PRAGMA busy_timeout = {int(_SHORT_WAIT * 1000)}")
                    result = work(link.conn)
                    if link.short_wait and write:  # writes go through again: wait in full
                        link.conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")
                        link.short_wait = False
                    return result
                except sqlite3.DatabaseError as exc:
                    if attempt == 0 and _damaged(exc):
                        self._set_aside(link, exc)
                        continue
                    if not isinstance(exc, sqlite3.OperationalError):
                        raise
                    self.problem = " ".join(str(exc).split())
                    link.short_wait = True
                    if write:
                        self.not_written += 1
                    logger.debug("synth_datasets: request cache %s: %s", self.path, exc)
                    return fallback
        return fallback  # pragma: no cover (the loop always returns)

    def _set_aside(self, link: _Link, exc: sqlite3.DatabaseError) -> None:
        """Move a damaged file (and its WAL) aside, under a name that says so; the next
        statement starts a fresh cache. Another process may have done it already: its fresh file
        is left alone."""
        if link.conn is not None:
            link.conn.close()
            link.conn = None
        try:
            inode = self.path.stat().st_ino
        except FileNotFoundError:
            return
        if link.inode is not None and inode != link.inode:
            return
        stamp = time.strftime("%Y%m%d-%H%M%S")
        aside = self.path.with_name(f"{self.path.name}.damaged-{stamp}-{os.getpid()}")
        os.replace(self.path, aside)
        wal = self.path.with_name(self.path.name + "-wal")
        if wal.exists():
            os.replace(wal, aside.with_name(aside.name + "-wal"))
        self.path.with_name(self.path.name + "-shm").unlink(missing_ok=True)
        logger.warning(
            "synth_datasets: the request cache %s is damaged (%s): moved it to %s and started "
            "a fresh cache (the answers in it will be asked for again)",
            self.path,
            " ".join(str(exc).split()),
            aside,
        )

    def get(self, key: str) -> list[dict[str, Any]] | None:
        """The answer's items, parsed again from the stored body (None when not cached)."""
        row = self._run(
            lambda conn: conn.execute(
                "SELECT body, content_type FROM answers WHERE key = ?", (key,)
            ).fetchone(),
            None,
        )
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
        """Store an answer: its body as received when given (no re-encoding), else the items.
        The lease of fetching it ends with it."""
        if body is None:
            body = json.dumps(items, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
            content_type = "application/json"
        row = (key, time.time(), content_type, body)

        def write(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                conn.execute(
                    "INSERT OR REPLACE INTO answers (key, created, content_type, body)"
                    " VALUES (?, ?, ?, ?)",
                    row,
                )
                conn.execute("DELETE FROM leases WHERE key = ?", (key,))

        self._run(write, None, write=True)
        self._link().fetching.discard(key)

    def claim(self, key: str, seconds: float) -> bool:
        """Take the lease of fetching ``key`` for ``seconds``: False while another process (or
        thread) holds a live one. A cache that cannot be written gives True (nobody to wait
        for)."""
        link = self._link()

        def take(conn: sqlite3.Connection) -> bool:
            if key in link.fetching:  # another thread of this process is fetching it
                return False
            now = time.time()
            with _transaction(conn):
                held = conn.execute(
                    "SELECT host, pid, expires FROM leases WHERE key = ?", (key,)
                ).fetchone()
                # A live lease of this process's own that no thread holds is a leftover.
                mine = held is not None and (held[0], held[1]) == (_HOST, os.getpid())
                if held is not None and held[2] > now and not mine and _alive(held[0], held[1]):
                    return False
                conn.execute(
                    "INSERT OR REPLACE INTO leases (key, host, pid, expires) VALUES (?, ?, ?, ?)",
                    (key, _HOST, os.getpid(), now + seconds),
                )
            link.fetching.add(key)
            return True

        return self._run(take, True)

    def release(self, key: str) -> None:
        """End this process's lease of fetching ``key`` (not answered: another may ask)."""
        link = self._link()

        def drop(conn: sqlite3.Connection) -> bool:
            # Under the link's lock, as claims are: a thread claiming between the discard and the
            # DELETE would take this lease over and then lose it to the DELETE.
            if key not in link.fetching:
                return True
            try:
                conn.execute(
                    "DELETE FROM leases WHERE key = ? AND host = ? AND pid = ?",
                    (key, _HOST, os.getpid()),
                )
            finally:
                link.fetching.discard(key)  # a lease row left behind is a leftover, taken over
            return True

        if not self._run(drop, False):  # the cache could not be opened: the claim ends anyway
            with link.lock:
                link.fetching.discard(key)

    def get_or_claim(self, key: str, seconds: float) -> list[dict[str, Any]] | None:
        """The cached answer, or None once this process holds the lease of fetching it.

        While another process (or thread) holds the lease, wait for its answer: a request is
        paid for once however many runs share the folder. A holder that died (on this host) or
        outlived its lease is replaced.
        """
        delay = 0.02
        while True:
            items = self.get(key)
            if items is not None:
                return items
            if self.claim(key, seconds):
                items = self.get(key)  # answered between the look and the lease
                if items is not None:
                    self.release(key)
                return items
            if delay == 0.02:
                logger.debug("synth_datasets: request %s is being fetched elsewhere: waiting", key)
            time.sleep(delay)
            delay = min(2 * delay, 0.5)

    def warn_not_written(self) -> None:
        """One warning for the answers not stored since the last one (none: no warning)."""
        count = self.not_written - self._reported
        if count > 0:
            self._reported = self.not_written
            logger.warning(
                "synth_datasets: %d answer%s could not be stored in the request cache %s (%s): "
                "%s in the result, but a rerun would pay for %s again",
                count,
                "s" if count > 1 else "",
                self.path,
                self.problem,
                "they are" if count > 1 else "it is",
                "them" if count > 1 else "it",
            )

    def close(self) -> None:
        """End the leases this process still holds and close its connection."""
        link = self._handle
        if link is None or link.pid != os.getpid():
            return
        for key in list(link.fetching):
            self.release(key)
        with link.lock:
            if link.conn is not None:
                link.conn.close()
                link.conn = None

    def __len__(self) -> int:
        return self._run(
            lambda conn: int(conn.execute("SELECT COUNT(*) FROM answers").fetchone()[0]), 0
        )


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on an error) on an autocommit connection."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
