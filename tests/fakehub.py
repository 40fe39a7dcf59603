"""An HTTP-level fake of the Hugging Face Hub, for tests that run the real client libraries.

`FakeHub` is a small aiohttp server, in a background thread with its own event loop, listening
on the host and port of `HF_ENDPOINT` (tests/conftest.py sets `HF_ENDPOINT`,
`HF_HUB_DISABLE_XET=1` and a temporary `HF_HOME` before anything imports `datasets` or
`huggingface_hub`). Nothing is patched: `datasets.Dataset.push_to_hub`, `datasets.load_dataset`,
`huggingface_hub.DatasetCard.push_to_hub` / `DatasetCard.load` and `HfApi` talk plain HTTP to
it, through the legacy LFS upload path (Xet is disabled).

Usage
-----
In tests/conftest.py::

    from fakehub import fake_hub  # noqa: F401  (registers the fixture)

In a test module (tests/ is on `sys.path` under pytest's default `prepend` import mode,
because it has no `__init__.py`; checked with pytest 9.2). Import the fixture under its own name
with `as`: ruff then treats it as a deliberate re-export, and test parameters named `fake_hub`
raise neither F401 nor F811 (a plain `import fake_hub  # noqa: F401` still trips F811 on every
test that takes `fake_hub`)::

    import pytest
    from datasets import Dataset
    from fakehub import HUB_TOKEN, LFS_PUT_WARNING_FILTER, FakeHub
    from fakehub import fake_hub as fake_hub

    pytestmark = pytest.mark.filterwarnings(LFS_PUT_WARNING_FILTER)

    def test_push(fake_hub: FakeHub) -> None:
        Dataset.from_dict({"a": [1]}).push_to_hub("tester/demo", token=HUB_TOKEN)
        assert "README.md" in fake_hub.files("tester/demo")

Any test that uploads an LFS file (every parquet shard) needs `LFS_PUT_WARNING_FILTER` while
pytest turns warnings into errors: see that constant.

`fake_hub` is function-scoped: the server itself is started once per session (on first use,
stopped at the end of the session) and `hub.reset()` empties its state before every test. It also
drops the client-side caches of the previous test's remote state (fsspec's `HfFileSystem`
instances, and the hub and datasets caches under the temporary `HF_HOME`): `datasets` otherwise
falls back to a cached copy of a dataset that "couldn't be found on the Hub".

State and inspection
--------------------
- `hub.repos`: `{repo_id: Repo}`; `Repo.private`, `Repo.type` ("dataset"/"model"/"space"),
  `Repo.branches` (`{name: [Commit, ...]}`, oldest first, last = head), `Repo.pull_requests`
  (`{num: [Commit, ...]}`, the ref `refs/pr/<num>`), `Repo.tags`, `Repo.lfs_objects`
  (`{sha256 oid: bytes}`).
- `hub.files(repo_id, revision="main") -> {path: bytes}` (a full snapshot; revision may be a
  branch, `refs/pr/N`, a tag or a commit sha).
- `hub.commits(repo_id, revision="main") -> [Commit, ...]`, oldest first. A `Commit` has `sha`
  (40 hex), `message`, `description`, `parents`, `files` and `lfs_paths`.
- `hub.requests`: every request seen, as `(method, path, headers)` named tuples; `path` is the
  raw (still percent-encoded) path plus `?query` when there is one; `headers` is a dict whose
  lookups ignore case (`headers.get("authorization")`).
- `hub.unhandled`: `(method, path)` of requests that matched no route (they get a 404, and the
  `fake_hub` fixture fails the test at teardown, naming them).
- `hub.server_errors`: tracebacks of bugs in the fake itself (answered with a 400, never a 5xx,
  which the client would retry with backoff).
- `hub.add_repo(repo_id, files, ...)`: seed a repo directly, without HTTP.
- `hub.echo_credentials = True`: every request with an `Authorization` header gets a 401 whose
  message quotes that header (a careless server, for the secret-scrubbing tests).

Behaviour
---------
- Tokens are valid when they start with `hf_`; every valid token is user `tester` (no orgs) and
  may write to any namespace. A request with an invalid `Authorization` header gets 401
  `{"error": "Invalid credentials in Authorization header"}`, as does a write without a token.
  Reading a private repo without a valid token gets 401 with `X-Error-Code: RepoNotFound`
  (which the client reports as `RepositoryNotFoundError`, like the Hub).
- A new repo starts with an "initial commit" holding `.gitattributes`, like on the Hub.
- Preupload answers `"lfs"` for `*.parquet`, `*.arrow` and files over 1 MB (`LFS_THRESHOLD`),
  `"regular"` otherwise, and returns the `oid` of an existing file at that path so that the
  client skips unchanged files.
- LFS uploads go to `PUT /__lfs/<oid>?ticket=...` on this server (the ticket plays the part of a
  pre-signed URL: no Authorization header is sent there); the bytes are checked against the oid
  and size, then `POST /__lfs/verify/<ticket>` checks the object exists.
- `resolve` answers 200 directly (the Hub redirects LFS files to a CDN); LFS files carry
  `X-Linked-Etag` / `X-Linked-Size`. Range requests are honoured.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qs, quote, unquote, urlsplit

import pytest
import yaml
from aiohttp import web

__all__ = [
    "HUB_TOKEN",
    "HUB_USER",
    "INVALID_CREDENTIALS",
    "LFS_PUT_WARNING_FILTER",
    "Commit",
    "FakeHub",
    "RecordedRequest",
    "Repo",
    "fake_hub",
]

HUB_TOKEN = "hf_test_" + "x" * 24
"""A token the fake Hub accepts (any token starting with `hf_` is accepted)."""

HUB_USER = "tester"
"""The user every valid token belongs to."""

INVALID_CREDENTIALS = "Invalid credentials in Authorization header"

LFS_PUT_WARNING_FILTER = "ignore:Use 'content=:DeprecationWarning:httpx2"
"""A `filterwarnings` spec for the one warning the real clients emit against this fake.

huggingface_hub's legacy LFS upload (`lfs._upload_single_part`) PUTs a file object with
`data=`, which httpx2 deprecates with a DeprecationWarning. The production path uses Xet and never
gets there; every test that uploads an LFS file (any parquet shard) through the fake does. Use
`pytestmark = pytest.mark.filterwarnings(LFS_PUT_WARNING_FILTER)` in such test modules.
"""

_TYPE_PREFIXES = {"dataset": "datasets/", "space": "spaces/", "model": ""}
_API_TYPES = {"datasets": "dataset", "models": "model", "spaces": "space"}

_GITATTRIBUTES = b"""\
*.arrow filter=lfs diff=lfs merge=lfs -text
*.parquet filter=lfs diff=lfs merge=lfs -text
*.bin filter=lfs diff=lfs merge=lfs -text
*.safetensors filter=lfs diff=lfs merge=lfs -text
*.zip filter=lfs diff=lfs merge=lfs -text
*.gz filter=lfs diff=lfs merge=lfs -text
*.jsonl.gz filter=lfs diff=lfs merge=lfs -text
"""

_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(\r?\n|\Z)", re.DOTALL)
_SHA_PREFIX = re.compile(r"[0-9a-f]{7,40}")


# --------------------------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def _git_blob_sha(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _lfs_pointer(data: bytes) -> bytes:
    oid = hashlib.sha256(data).hexdigest()
    return (
        f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {len(data)}\n".encode()
    )


@dataclass(frozen=True)
class Commit:
    """One commit: a full snapshot of the repo."""

    sha: str
    message: str
    description: str
    parents: tuple[str, ...]
    files: Mapping[str, bytes]
    lfs_paths: frozenset[str]
    created_at: datetime

    def entry(self, path: str) -> dict[str, Any]:
        """The `/tree` / `/paths-info` JSON entry of a file of this commit."""
        data = self.files[path]
        if path in self.lfs_paths:
            pointer = _lfs_pointer(data)
            return {
                "type": "file",
                "oid": _git_blob_sha(pointer),
                "size": len(data),
                "path": path,
                "lfs": {
                    "oid": hashlib.sha256(data).hexdigest(),
                    "size": len(data),
                    "pointerSize": len(pointer),
                },
            }
        return {"type": "file", "oid": _git_blob_sha(data), "size": len(data), "path": path}


@dataclass
class Repo:
    """A repository and its refs. Every list of commits is oldest first."""

    repo_id: str
    type: str
    private: bool
    created_at: datetime = field(default_factory=_now)
    branches: dict[str, list[Commit]] = field(default_factory=dict)
    pull_requests: dict[int, list[Commit]] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    lfs_objects: dict[str, bytes] = field(default_factory=dict)

    def all_histories(self) -> Iterator[list[Commit]]:
        yield from self.branches.values()
        yield from self.pull_requests.values()

    def history(self, revision: str) -> list[Commit] | None:
        """The commits leading to `revision` (a branch, PR ref, tag or sha), oldest first."""
        rev = revision.removeprefix("refs/heads/")
        if rev in self.branches:
            return self.branches[rev]
        m = re.fullmatch(r"refs/pr/(\d+)", rev)
        if m:
            return self.pull_requests.get(int(m.group(1)))
        rev = self.tags.get(rev.removeprefix("refs/tags/"), rev)
        if _SHA_PREFIX.fullmatch(rev):
            for hist in self.all_histories():
                for i, commit in enumerate(hist):
                    if commit.sha.startswith(rev):
                        return hist[: i + 1]
        return None

    def resolve(self, revision: str) -> Commit | None:
        hist = self.history(revision)
        return hist[-1] if hist else None

    @property
    def url_prefix(self) -> str:
        return _TYPE_PREFIXES[self.type]


class RecordedRequest(NamedTuple):
    method: str
    path: str
    headers: dict[str, str]


class _Headers(dict[str, str]):
    """A dict of request headers with case-insensitive lookups (keys are stored lower-case)."""

    def __init__(self, items: Mapping[str, str]) -> None:
        super().__init__((k.lower(), v) for k, v in items.items())

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(key.lower(), default)


class _HttpError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.extra = extra
        self.headers: dict[str, str] = {}

    def response(self) -> web.Response:
        headers = {"X-Error-Message": self.message, **self.headers}
        if self.code:
            headers["X-Error-Code"] = self.code
        return web.json_response(
            {"error": self.message, **self.extra}, status=self.status, headers=headers
        )


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ("1", "true", "yes")


def _card_data(files: Mapping[str, bytes]) -> dict[str, Any] | None:
    readme = files.get("README.md")
    if readme is None:
        return None
    m = _FRONT_MATTER.match(readme.decode("utf-8", errors="replace"))
    if not m:
        return None
    try:
        data = yaml.safe_load(m.group(1))
    except yaml.YAMLError:
        return None
    return data if isinstance(data, dict) else None


# --------------------------------------------------------------------------------------------
# Server
# --------------------------------------------------------------------------------------------


class FakeHub:
    """In-memory Hub behind a real HTTP server on the `HF_ENDPOINT` address."""

    LFS_THRESHOLD = 1_000_000
    LFS_SUFFIXES = (".parquet", ".arrow")

    def __init__(self, endpoint: str | None = None) -> None:
        endpoint = endpoint or os.environ.get("HF_ENDPOINT")
        if not endpoint:
            raise RuntimeError("FakeHub needs HF_ENDPOINT (set by tests/conftest.py)")
        parts = urlsplit(endpoint)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise RuntimeError(f"FakeHub needs an http://host:port endpoint, got {endpoint!r}")
        self.endpoint = endpoint.rstrip("/")
        self.host: str = parts.hostname
        self.port: int = parts.port
        self._lock = threading.RLock()
        self._counter = itertools.count()
        self.repos: dict[str, Repo] = {}
        self.requests: list[RecordedRequest] = []
        self.unhandled: list[tuple[str, str]] = []
        self.server_errors: list[str] = []
        # A careless Hub: every request with credentials gets a 401 that quotes its header.
        self.echo_credentials = False
        self._tickets: dict[str, tuple[str, str, int]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> FakeHub:
        if self._thread is not None:
            return self
        loop = asyncio.new_event_loop()
        app = web.Application(client_max_size=1 << 36)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        try:
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
            loop.run_until_complete(site.start())
        except BaseException:
            loop.run_until_complete(runner.cleanup())
            loop.close()
            raise
        self._loop, self._runner = loop, runner
        self._thread = threading.Thread(target=loop.run_forever, name="fakehub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        loop, runner, thread = self._loop, self._runner, self._thread
        if loop is None or runner is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
        self._loop = self._runner = self._thread = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset(self) -> None:
        """Forget every repo, LFS object, upload ticket and recorded request."""
        with self._lock:
            self.repos.clear()
            self.requests.clear()
            self.unhandled.clear()
            self.server_errors.clear()
            self._tickets.clear()
            self.echo_credentials = False

    # ---- inspection and seeding ------------------------------------------------------------

    def _repo_or_raise(self, repo_id: str) -> Repo:
        try:
            return self.repos[repo_id]
        except KeyError:
            raise KeyError(
                f"no repo {repo_id!r} on the fake Hub (have {sorted(self.repos)})"
            ) from None

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """Snapshot `{path: bytes}` of `repo_id` at `revision`."""
        with self._lock:
            commit = self._repo_or_raise(repo_id).resolve(revision)
            if commit is None:
                raise KeyError(f"no revision {revision!r} in {repo_id!r}")
            return dict(commit.files)

    def commits(self, repo_id: str, revision: str = "main") -> list[Commit]:
        """Commits leading to `revision`, oldest first (the last one is the head)."""
        with self._lock:
            hist = self._repo_or_raise(repo_id).history(revision)
            if hist is None:
                raise KeyError(f"no revision {revision!r} in {repo_id!r}")
            return list(hist)

    def add_repo(
        self,
        repo_id: str,
        files: Mapping[str, bytes] | None = None,
        *,
        repo_type: str = "dataset",
        private: bool = False,
        message: str = "Seed files",
    ) -> Repo:
        """Create a repo directly (no HTTP), optionally with a commit of `files` on main."""
        with self._lock:
            if repo_id in self.repos:
                raise ValueError(f"{repo_id!r} already exists")
            repo = self._create_repo(repo_id, repo_type, private)
            if files:
                head = repo.branches["main"][-1]
                snapshot = {**head.files, **files}
                lfs = {p for p, d in files.items() if self._wants_lfs(p, len(d))}
                for path in lfs:
                    repo.lfs_objects[hashlib.sha256(files[path]).hexdigest()] = files[path]
                lfs_paths = (head.lfs_paths - set(files)) | lfs
                repo.branches["main"].append(
                    self._new_commit(snapshot, lfs_paths, message, "", (head.sha,))
                )
            return repo

    # ---- internals -------------------------------------------------------------------------

    def _wants_lfs(self, path: str, size: int) -> bool:
        return path.endswith(self.LFS_SUFFIXES) or size > self.LFS_THRESHOLD

    def _new_commit(
        self,
        files: Mapping[str, bytes],
        lfs_paths: set[str] | frozenset[str],
        message: str,
        description: str,
        parents: tuple[str, ...],
    ) -> Commit:
        seed = f"{next(self._counter)}:{os.getpid()}:{message}:{parents}".encode() + os.urandom(16)
        return Commit(
            sha=hashlib.sha1(seed).hexdigest(),
            message=message,
            description=description,
            parents=parents,
            files=dict(files),
            lfs_paths=frozenset(lfs_paths),
            created_at=_now(),
        )

    def _create_repo(self, repo_id: str, repo_type: str, private: bool) -> Repo:
        repo = Repo(repo_id=repo_id, type=repo_type, private=private)
        initial = self._new_commit(
            {".gitattributes": _GITATTRIBUTES}, set(), "initial commit", "", ()
        )
        repo.branches["main"] = [initial]
        self.repos[repo_id] = repo
        return repo

    # ---- HTTP plumbing ---------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        raw = request.raw_path
        with self._lock:
            self.requests.append(RecordedRequest(request.method, raw, _Headers(request.headers)))
        body = await request.read() if request.can_read_body else b""
        split = urlsplit(raw)
        segments = split.path.split("/")[1:]
        if segments and segments[-1] == "":
            segments.pop()
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        auth = request.headers.get("Authorization")
        if self.echo_credentials and auth:
            return _HttpError(401, f"{INVALID_CREDENTIALS}: {auth}").response()
        try:
            with self._lock:
                response = self._route(request, segments, query, body)
        except _HttpError as err:
            return err.response()
        except (ValueError, KeyError, TypeError) as exc:
            # A malformed payload. Answer 400, not 500: the client retries 5xx with backoff.
            return _HttpError(400, f"Malformed request: {exc!r}").response()
        except Exception:
            with self._lock:
                self.server_errors.append(traceback.format_exc())
            return _HttpError(400, "Fake Hub internal error (see hub.server_errors)").response()
        if response is None:
            with self._lock:
                self.unhandled.append((request.method, raw))
            return web.json_response(
                {"error": "Sorry, we can't find the page you are looking for."}, status=404
            )
        return response

    def _user(self, request: web.Request) -> str | None:
        """The user of the request's token; raises 401 for a malformed or invalid token."""
        auth = request.headers.get("Authorization")
        if auth is None:
            return None
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.startswith("hf_"):
            raise _HttpError(401, INVALID_CREDENTIALS)
        return HUB_USER

    def _writer(self, request: web.Request) -> str:
        user = self._user(request)
        if user is None:
            raise _HttpError(401, INVALID_CREDENTIALS)
        return user

    def _readable_repo(self, request: web.Request, repo_type: str, repo_id: str) -> Repo:
        user = self._user(request)
        repo = self.repos.get(repo_id)
        if repo is None or repo.type != repo_type:
            raise _HttpError(404, "Repository not found", "RepoNotFound")
        if repo.private and user is None:
            raise _HttpError(401, "Invalid username or password.", "RepoNotFound")
        return repo

    def _writable_repo(self, request: web.Request, repo_type: str, repo_id: str) -> Repo:
        self._writer(request)
        return self._readable_repo(request, repo_type, repo_id)

    @staticmethod
    def _split_revision(segments: list[str]) -> tuple[str, list[str]]:
        """Split `[rev, *path]` where rev is one %-encoded segment or a raw `refs/pr/N`."""
        if not segments:
            raise _HttpError(400, "Missing revision")
        if segments[0] == "refs" and len(segments) >= 3:
            n = 4 if segments[1] == "heads" and len(segments) >= 4 else 3
            return unquote("/".join(segments[:n])), segments[n:]
        return unquote(segments[0]), segments[1:]

    @staticmethod
    def _commit_of(repo: Repo, revision: str) -> Commit:
        commit = repo.resolve(revision)
        if commit is None:
            raise _HttpError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    def _repo_url(self, repo: Repo) -> str:
        return f"{self.endpoint}/{repo.url_prefix}{repo.repo_id}"

    def _route(
        self, request: web.Request, seg: list[str], query: dict[str, str], body: bytes
    ) -> web.StreamResponse | None:
        method = request.method
        n = len(seg)
        if n >= 2 and seg[0] == "api":
            if seg[1:] == ["whoami-v2"] and method == "GET":
                return self._whoami(request)
            if seg[1:] == ["validate-yaml"] and method == "POST":
                return self._validate_yaml(body)
            if seg[1:] == ["agent-harnesses"] and method == "GET":
                return web.json_response({"standardEnvVars": [], "harnesses": {}})
            if seg[1:] == ["repos", "create"] and method == "POST":
                return self._create(request, body)
            if seg[1:] == ["repos", "delete"] and method == "DELETE":
                return self._delete(request, body)
            if n >= 4 and seg[1] in _API_TYPES:
                repo_type = _API_TYPES[seg[1]]
                repo_id = f"{unquote(seg[2])}/{unquote(seg[3])}"
                return self._repo_api(request, repo_type, repo_id, seg[4:], query, body)
            return None
        if n >= 1 and seg[0] == "__lfs":
            return self._lfs_storage(request, seg[1:], query, body)
        # Git LFS batch: /{prefix}{ns}/{name}.git/info/lfs/objects/batch
        if n >= 6 and seg[-4:] == ["info", "lfs", "objects", "batch"]:
            head = seg[:-4]
            repo_type = "model"
            if len(head) == 3 and head[0] in ("datasets", "spaces"):
                repo_type = _API_TYPES[head[0]]
                head = head[1:]
            if len(head) == 2 and head[1].endswith(".git") and method == "POST":
                repo_id = f"{unquote(head[0])}/{unquote(head[1][: -len('.git')])}"
                return self._lfs_batch(request, repo_type, repo_id, body)
            return None
        # File download: /{prefix}{ns}/{name}/resolve/{rev}/{path}
        if n >= 5 and seg[0] in ("datasets", "spaces") and seg[3] == "resolve":
            repo_id = f"{unquote(seg[1])}/{unquote(seg[2])}"
            return self._resolve(request, _API_TYPES[seg[0]], repo_id, seg[4:])
        if n >= 4 and seg[2] == "resolve":
            repo_id = f"{unquote(seg[0])}/{unquote(seg[1])}"
            return self._resolve(request, "model", repo_id, seg[3:])
        return None

    def _repo_api(
        self,
        request: web.Request,
        repo_type: str,
        repo_id: str,
        rest: list[str],
        query: dict[str, str],
        body: bytes,
    ) -> web.StreamResponse | None:
        method = request.method
        action = rest[0] if rest else None
        if action is None and method == "GET":
            repo = self._readable_repo(request, repo_type, repo_id)
            return self._info(repo, "main", query)
        if action == "revision" and len(rest) >= 2 and method == "GET":
            repo = self._readable_repo(request, repo_type, repo_id)
            revision, _ = self._split_revision(rest[1:])
            return self._info(repo, revision, query)
        if action == "preupload" and len(rest) >= 2 and method == "POST":
            repo = self._writable_repo(request, repo_type, repo_id)
            revision, _ = self._split_revision(rest[1:])
            return self._preupload(repo, revision, query, body)
        if action == "commit" and len(rest) >= 2 and method == "POST":
            repo = self._writable_repo(request, repo_type, repo_id)
            revision, _ = self._split_revision(rest[1:])
            return self._commit(repo, revision, query, body)
        if action == "tree" and len(rest) >= 2 and method == "GET":
            repo = self._readable_repo(request, repo_type, repo_id)
            revision, path = self._split_revision(rest[1:])
            return self._tree(repo, revision, unquote("/".join(path)), query)
        if action == "paths-info" and len(rest) >= 2 and method == "POST":
            repo = self._readable_repo(request, repo_type, repo_id)
            revision, _ = self._split_revision(rest[1:])
            return self._paths_info(request, repo, revision, body)
        if action == "branch" and len(rest) >= 2 and method in ("POST", "DELETE"):
            repo = self._writable_repo(request, repo_type, repo_id)
            branch, _ = self._split_revision(rest[1:])
            return self._branch(repo, branch, method, body)
        if action == "tag" and len(rest) >= 2 and method in ("POST", "DELETE"):
            repo = self._writable_repo(request, repo_type, repo_id)
            revision, _ = self._split_revision(rest[1:])
            return self._tag(repo, revision, method, body)
        if action == "refs" and len(rest) == 1 and method == "GET":
            repo = self._readable_repo(request, repo_type, repo_id)
            return self._refs(repo, query)
        if action == "commits" and len(rest) >= 2 and method == "GET":
            repo = self._readable_repo(request, repo_type, repo_id)
            revision, _ = self._split_revision(rest[1:])
            return self._list_commits(repo, revision)
        if action == "settings" and len(rest) == 1 and method == "PUT":
            repo = self._writable_repo(request, repo_type, repo_id)
            return self._settings(repo, body)
        return None

    # ---- endpoints: account and repos ------------------------------------------------------

    def _whoami(self, request: web.Request) -> web.Response:
        user = self._user(request)
        if user is None:
            raise _HttpError(401, INVALID_CREDENTIALS)
        return web.json_response(
            {
                "type": "user",
                "name": user,
                "fullname": "Test User",
                "orgs": [],
                "auth": {"type": "access_token", "accessToken": {"role": "write"}},
            }
        )

    def _validate_yaml(self, body: bytes) -> web.Response:
        payload = json.loads(body or b"{}")
        content = payload.get("content") or ""
        m = _FRONT_MATTER.match(content)
        if m:
            try:
                data = yaml.safe_load(m.group(1))
            except yaml.YAMLError as exc:
                return web.json_response(
                    {"errors": [{"message": f"Invalid YAML: {exc}"}], "warnings": []}, status=400
                )
            if data is not None and not isinstance(data, dict):
                return web.json_response(
                    {"errors": [{"message": "Metadata must be a YAML mapping"}], "warnings": []},
                    status=400,
                )
        return web.json_response({"errors": [], "warnings": []})

    def _create(self, request: web.Request, body: bytes) -> web.Response:
        user = self._writer(request)
        payload = json.loads(body or b"{}")
        name = str(payload.get("name") or "")
        organization = payload.get("organization")
        if "/" in name:
            organization, name = name.split("/", 1)
        if not name or "/" in name:
            raise _HttpError(400, f"Invalid repo name: {payload.get('name')!r}")
        repo_type = payload.get("type") or "model"
        if repo_type not in _TYPE_PREFIXES:
            raise _HttpError(400, f"Invalid repo type: {repo_type!r}")
        repo_id = f"{organization or user}/{name}"
        private = bool(payload.get("private")) or payload.get("visibility") == "private"
        existing = self.repos.get(repo_id)
        if existing is not None:
            raise _HttpError(
                409,
                f"You already created this {repo_type} repo",
                url=self._repo_url(existing),
            )
        repo = self._create_repo(repo_id, repo_type, private)
        return web.json_response({"url": self._repo_url(repo), "name": repo_id, "id": repo_id})

    def _delete(self, request: web.Request, body: bytes) -> web.Response:
        user = self._writer(request)
        payload = json.loads(body or b"{}")
        name = str(payload.get("name") or "")
        organization = payload.get("organization")
        if "/" in name:
            organization, name = name.split("/", 1)
        repo_id = f"{organization or user}/{name}"
        repo = self.repos.get(repo_id)
        if repo is None or repo.type != (payload.get("type") or "model"):
            raise _HttpError(404, "Repository not found", "RepoNotFound")
        del self.repos[repo_id]
        return web.json_response({})

    def _settings(self, repo: Repo, body: bytes) -> web.Response:
        payload = json.loads(body or b"{}")
        if "private" in payload:
            repo.private = bool(payload["private"])
        if "visibility" in payload:
            repo.private = payload["visibility"] == "private"
        return web.json_response({})

    def _info(self, repo: Repo, revision: str, query: dict[str, str]) -> web.Response:
        commit = self._commit_of(repo, revision)
        blobs = _truthy(query.get("blobs"))
        siblings: list[dict[str, Any]] = []
        for path in sorted(commit.files):
            sibling: dict[str, Any] = {"rfilename": path}
            if blobs:
                entry = commit.entry(path)
                sibling.update(size=entry["size"], blobId=entry["oid"])
                if "lfs" in entry:
                    lfs = entry["lfs"]
                    sibling["lfs"] = {
                        "sha256": lfs["oid"],
                        "size": lfs["size"],
                        "pointerSize": lfs["pointerSize"],
                    }
            siblings.append(sibling)
        info: dict[str, Any] = {
            "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": commit.sha,
            "createdAt": _iso(repo.created_at),
            "lastModified": _iso(commit.created_at),
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
            "usedStorage": sum(len(d) for d in commit.files.values()),
        }
        if repo.type == "model":
            info["modelId"] = repo.repo_id
        card = _card_data(commit.files)
        if card is not None:
            info["cardData"] = card
        return web.json_response(info)

    def _branch(self, repo: Repo, branch: str, method: str, body: bytes) -> web.Response:
        if method == "DELETE":
            if branch not in repo.branches:
                raise _HttpError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
            if branch == "main":
                raise _HttpError(403, "Cannot delete the default branch")
            del repo.branches[branch]
            return web.json_response({})
        if branch.startswith("refs/"):
            raise _HttpError(400, f"Invalid branch name: {branch}")
        if branch in repo.branches:
            raise _HttpError(409, f"Reference already exists: refs/heads/{branch}")
        payload = json.loads(body or b"{}")
        start = payload.get("startingPoint") or "main"
        hist = repo.history(start)
        if not hist:
            raise _HttpError(404, f"Invalid rev id: {start}", "RevisionNotFound")
        repo.branches[branch] = list(hist)
        return web.json_response({})

    def _tag(self, repo: Repo, revision: str, method: str, body: bytes) -> web.Response:
        if method == "DELETE":
            if repo.tags.pop(revision, None) is None:
                raise _HttpError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
            return web.json_response({})
        payload = json.loads(body or b"{}")
        tag = str(payload.get("tag") or "")
        if not tag:
            raise _HttpError(400, "Missing tag name")
        if tag in repo.tags:
            raise _HttpError(409, f"Tag already exists: {tag}")
        repo.tags[tag] = self._commit_of(repo, revision).sha
        return web.json_response({})

    def _refs(self, repo: Repo, query: dict[str, str]) -> web.Response:
        def ref(name: str, full: str, sha: str) -> dict[str, str]:
            return {"name": name, "ref": full, "targetCommit": sha}

        data: dict[str, Any] = {
            "branches": [ref(b, f"refs/heads/{b}", h[-1].sha) for b, h in repo.branches.items()],
            "converts": [],
            "tags": [ref(t, f"refs/tags/{t}", sha) for t, sha in repo.tags.items()],
        }
        if _truthy(query.get("include_prs")):
            data["pullRequests"] = [
                ref(f"refs/pr/{num}", f"refs/pr/{num}", h[-1].sha)
                for num, h in repo.pull_requests.items()
            ]
        return web.json_response(data)

    def _list_commits(self, repo: Repo, revision: str) -> web.Response:
        hist = repo.history(revision)
        if hist is None:
            raise _HttpError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return web.json_response(
            [
                {
                    "id": c.sha,
                    "title": c.message,
                    "message": c.description,
                    "authors": [{"user": HUB_USER}],
                    "date": _iso(c.created_at),
                }
                for c in reversed(hist)
            ]
        )

    # ---- endpoints: listing ----------------------------------------------------------------

    @staticmethod
    def _last_commit(hist: list[Commit], path: str, is_dir: bool) -> dict[str, str]:
        """The newest commit of `hist` that changed `path` (a file, or anything under a dir)."""

        def view(c: Commit) -> Any:
            if not is_dir:
                return c.files.get(path)
            prefix = path + "/" if path else ""
            return sorted((p, d) for p, d in c.files.items() if p.startswith(prefix))

        found, previous = hist[0], None
        for i, commit in enumerate(hist):
            current = view(commit)
            if i == 0 or current != previous:
                found = commit
            previous = current
        return {"id": found.sha, "title": found.message, "date": _iso(found.created_at)}

    def _dir_entry(self, commit: Commit, path: str) -> dict[str, Any]:
        prefix = path + "/"
        listing = "".join(
            f"{p}:{_git_blob_sha(d)};"
            for p, d in sorted(commit.files.items())
            if p.startswith(prefix)
        )
        digest = hashlib.sha1(listing.encode()).hexdigest()
        return {"type": "directory", "oid": digest, "size": 0, "path": path}

    def _entries(
        self, commit: Commit, hist: list[Commit], paths: list[str], expand: bool
    ) -> list[dict[str, Any]]:
        dirs = {p.rsplit("/", 1)[0] for p in commit.files if "/" in p}
        all_dirs = {"/".join(d.split("/")[: i + 1]) for d in dirs for i in range(d.count("/") + 1)}
        out = []
        for path in paths:
            if path in commit.files:
                entry = commit.entry(path)
                is_dir = False
            elif path in all_dirs:
                entry = self._dir_entry(commit, path)
                is_dir = True
            else:
                continue
            if expand:
                entry["lastCommit"] = self._last_commit(hist, path, is_dir)
            out.append(entry)
        return out

    def _tree(self, repo: Repo, revision: str, path: str, query: dict[str, str]) -> web.Response:
        hist = repo.history(revision)
        if not hist:
            raise _HttpError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        commit = hist[-1]
        path = path.strip("/")
        prefix = path + "/" if path else ""
        under = [p for p in commit.files if p.startswith(prefix)]
        if path and not under:
            raise _HttpError(404, f"Entry not found: {path}", "EntryNotFound")
        recursive = _truthy(query.get("recursive"))
        names: set[str] = set()
        for p in under:
            rel = p[len(prefix) :].split("/")
            if recursive:
                names.update(prefix + "/".join(rel[: i + 1]) for i in range(len(rel)))
            else:
                names.add(prefix + rel[0])
        entries = self._entries(commit, hist, sorted(names), _truthy(query.get("expand")))
        entries.sort(key=lambda e: (e["type"] != "directory", e["path"]))
        return web.json_response(entries)

    def _paths_info(
        self, request: web.Request, repo: Repo, revision: str, body: bytes
    ) -> web.Response:
        hist = repo.history(revision)
        if not hist:
            raise _HttpError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        if "json" in (request.content_type or ""):
            payload = json.loads(body or b"{}")
            paths = payload.get("paths") or []
            expand = bool(payload.get("expand"))
        else:
            form = parse_qs(body.decode(), keep_blank_values=True)
            paths = form.get("paths", [])
            expand = _truthy((form.get("expand") or ["false"])[-1])
        if isinstance(paths, str):
            paths = [paths]
        paths = [str(p).strip("/") for p in paths]
        return web.json_response(self._entries(hist[-1], hist, paths, expand))

    # ---- endpoints: uploads and commits ----------------------------------------------------

    def _preupload(
        self, repo: Repo, revision: str, query: dict[str, str], body: bytes
    ) -> web.Response:
        commit = repo.resolve(revision)
        if commit is None:
            raise _HttpError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        payload = json.loads(body or b"{}")
        files = []
        for item in payload.get("files", []):
            path = str(item["path"])
            size = int(item.get("size") or 0)
            mode = "lfs" if self._wants_lfs(path, size) else "regular"
            info: dict[str, Any] = {"path": path, "uploadMode": mode, "shouldIgnore": False}
            if path in commit.files:
                data = commit.files[path]
                info["oid"] = (
                    hashlib.sha256(data).hexdigest() if mode == "lfs" else _git_blob_sha(data)
                )
            files.append(info)
        return web.json_response({"files": files, "commitOid": commit.sha})

    def _lfs_batch(
        self, request: web.Request, repo_type: str, repo_id: str, body: bytes
    ) -> web.Response:
        repo = self._writable_repo(request, repo_type, repo_id)
        payload = json.loads(body or b"{}")
        if payload.get("operation") != "upload":
            raise _HttpError(400, "Only the upload operation is supported by the fake Hub")
        objects = []
        for obj in payload.get("objects", []):
            oid, size = str(obj["oid"]), int(obj["size"])
            entry: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
            if oid not in repo.lfs_objects:
                ticket = hashlib.sha1(os.urandom(16)).hexdigest()
                self._tickets[ticket] = (repo.repo_id, oid, size)
                entry["actions"] = {
                    "upload": {
                        "href": f"{self.endpoint}/__lfs/{oid}?ticket={ticket}",
                        "expires_at": "2099-01-01T00:00:00.000Z",
                    },
                    "verify": {
                        "href": f"{self.endpoint}/__lfs/verify/{ticket}",
                        "header": {"X-Fake-Hub": "verify"},
                    },
                }
            objects.append(entry)
        return web.json_response(
            {"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
            content_type="application/vnd.git-lfs+json",
        )

    def _lfs_storage(
        self, request: web.Request, rest: list[str], query: dict[str, str], body: bytes
    ) -> web.Response | None:
        if len(rest) == 1 and request.method == "PUT":
            ticket = self._tickets.get(query.get("ticket", ""))
            if ticket is None or ticket[1] != rest[0]:
                raise _HttpError(403, "Invalid or expired upload signature")
            repo_id, oid, size = ticket
            if len(body) != size or hashlib.sha256(body).hexdigest() != oid:
                raise _HttpError(400, f"Uploaded content does not match oid {oid} / size {size}")
            repo = self.repos.get(repo_id)
            if repo is None:
                raise _HttpError(404, "Repository not found", "RepoNotFound")
            repo.lfs_objects[oid] = body
            return web.Response(status=200, headers={"ETag": f'"{oid[:32]}"'})
        if len(rest) == 2 and rest[0] == "verify" and request.method == "POST":
            self._writer(request)
            ticket = self._tickets.get(rest[1])
            if ticket is None:
                raise _HttpError(404, "Unknown upload")
            repo_id, oid, size = ticket
            payload = json.loads(body or b"{}")
            repo = self.repos.get(repo_id)
            stored = repo.lfs_objects.get(oid) if repo else None
            if payload.get("oid") != oid or payload.get("size") != size:
                raise _HttpError(422, "Verify payload does not match the upload")
            if stored is None or len(stored) != size:
                raise _HttpError(404, f"Object {oid} was not uploaded")
            del self._tickets[rest[1]]
            return web.json_response({"success": True})
        return None

    def _commit(
        self, repo: Repo, revision: str, query: dict[str, str], body: bytes
    ) -> web.Response:
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise _HttpError(400, "The first line of a commit must be its header")
        header = lines[0].get("value") or {}
        summary = str(header.get("summary") or "")
        if not summary:
            raise _HttpError(400, "Commit summary is required")
        parent = header.get("parentCommit")
        create_pr = _truthy(query.get("create_pr"))

        if create_pr:
            if revision not in repo.branches:
                raise _HttpError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
            base_hist = repo.branches[revision]
            if parent is not None:
                base_hist = repo.history(parent) or []
                if not base_hist:
                    raise _HttpError(404, f"Invalid rev id: {parent}", "RevisionNotFound")
        else:
            hist = repo.history(revision)
            if hist is None or (
                revision not in repo.branches and not revision.startswith("refs/pr/")
            ):
                raise _HttpError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
            base_hist = hist
            if parent is not None and not hist[-1].sha.startswith(str(parent)):
                raise _HttpError(412, "A commit has happened since. Please refresh and try again.")

        head = base_hist[-1]
        files = dict(head.files)
        lfs_paths = set(head.lfs_paths)
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value") or {}
            path = str(value.get("path") or "")
            if key in ("file", "lfsFile", "deletedFile") and (
                not path or path.startswith("/") or ".." in path.split("/")
            ):
                raise _HttpError(400, f"Invalid path: {path!r}")
            if key == "file":
                if value.get("encoding", "base64") != "base64":
                    files[path] = str(value.get("content", "")).encode()
                else:
                    files[path] = base64.b64decode(value.get("content", ""))
                lfs_paths.discard(path)
            elif key == "lfsFile":
                oid = str(value.get("oid"))
                data = repo.lfs_objects.get(oid)
                if data is None:
                    raise _HttpError(
                        400,
                        "Your push was rejected because an LFS pointer pointed to a file that"
                        f" does not exist. Offending file: - {path}",
                    )
                if "size" in value and int(value["size"]) != len(data):
                    raise _HttpError(400, f"Size mismatch for LFS file {path}")
                files[path] = data
                lfs_paths.add(path)
            elif key == "deletedFile":
                if path not in files:
                    raise _HttpError(
                        404, f"A file with this name doesn't exist: {path}", "EntryNotFound"
                    )
                del files[path]
                lfs_paths.discard(path)
            elif key == "deletedFolder":
                prefix = path.strip("/") + "/"
                doomed = [p for p in files if p.startswith(prefix)]
                if not doomed:
                    raise _HttpError(
                        404, f"A folder with this name doesn't exist: {path}", "EntryNotFound"
                    )
                for p in doomed:
                    del files[p]
                    lfs_paths.discard(p)
            else:
                raise _HttpError(400, f"Unknown commit operation: {key!r}")

        commit = self._new_commit(
            files, lfs_paths, summary, str(header.get("description") or ""), (head.sha,)
        )
        pr_url = None
        if create_pr:
            num = max([0, *repo.pull_requests]) + 1
            repo.pull_requests[num] = [*base_hist, commit]
            pr_url = f"{self._repo_url(repo)}/discussions/{num}"
        else:
            base_hist.append(commit)
        return web.json_response(
            {
                "success": True,
                "commitOid": commit.sha,
                "commitUrl": f"{self._repo_url(repo)}/commit/{commit.sha}",
                "pullRequestUrl": pr_url,
                "hookOutput": "",
            }
        )

    # ---- endpoints: downloads --------------------------------------------------------------

    def _resolve(
        self, request: web.Request, repo_type: str, repo_id: str, rest: list[str]
    ) -> web.StreamResponse | None:
        if request.method not in ("GET", "HEAD"):
            return None
        repo = self._readable_repo(request, repo_type, repo_id)
        revision, path_segments = self._split_revision(rest)
        commit = self._commit_of(repo, revision)
        path = unquote("/".join(path_segments))
        data = commit.files.get(path)
        if data is None:
            err = _HttpError(404, "Entry not found", "EntryNotFound")
            err.headers["X-Repo-Commit"] = commit.sha
            raise err
        headers = {
            "X-Repo-Commit": commit.sha,
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
            "Content-Disposition": f"inline; filename*=UTF-8''{quote(path.rsplit('/', 1)[-1])}",
        }
        if path in commit.lfs_paths:
            sha256 = hashlib.sha256(data).hexdigest()
            headers.update(
                {
                    "ETag": f'"{sha256}"',
                    "X-Linked-Etag": f'"{sha256}"',
                    "X-Linked-Size": str(len(data)),
                }
            )
        else:
            headers["ETag"] = f'"{_git_blob_sha(data)}"'
        return self._ranged(request, data, headers)

    @staticmethod
    def _ranged(request: web.Request, data: bytes, headers: dict[str, str]) -> web.Response:
        rng = request.headers.get("Range")
        size = len(data)
        if not rng:
            return web.Response(body=data, headers=headers)
        m = re.fullmatch(r"bytes=(\d*)-(\d*)", rng.strip())
        if not m or (not m.group(1) and not m.group(2)):
            return web.Response(body=data, headers=headers)
        if m.group(1):
            start = int(m.group(1))
            end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
        else:
            start, end = max(size - int(m.group(2)), 0), size - 1
        if start >= size or start > end:
            return web.Response(status=416, headers={**headers, "Content-Range": f"bytes */{size}"})
        return web.Response(
            status=206,
            body=data[start : end + 1],
            headers={**headers, "Content-Range": f"bytes {start}-{end}/{size}"},
        )


# --------------------------------------------------------------------------------------------
# pytest fixture
# --------------------------------------------------------------------------------------------

_SESSION_HUB: FakeHub | None = None


def _session_hub(config: pytest.Config) -> FakeHub:
    """Start the server once per session; it stops when the session ends."""
    global _SESSION_HUB
    if _SESSION_HUB is None:
        hub = FakeHub().start()
        _SESSION_HUB = hub

        def _stop() -> None:
            global _SESSION_HUB
            hub.stop()
            _SESSION_HUB = None

        config.add_cleanup(_stop)
    return _SESSION_HUB


def _drop_client_caches() -> None:
    """Forget client-side copies of the remote state that `reset()` just discarded.

    - fsspec keeps `HfFileSystem` instances (and their directory listings) per process;
    - `datasets` falls back to its cache when a repo "couldn't be found on the Hub", so a dataset
      pushed by an earlier test would load again after the reset; `huggingface_hub` keeps
      downloaded files and `refs/main` in its cache.

    The two cache directories are only emptied when they lie under a temporary `HF_HOME` (as
    set by conftest.py), never in a real user cache.
    """
    if "huggingface_hub" in sys.modules:
        from huggingface_hub import HfFileSystem, constants

        HfFileSystem.clear_instance_cache()
        caches = [constants.HF_HUB_CACHE]
        if "datasets" in sys.modules:
            from datasets import config

            caches.append(str(config.HF_DATASETS_CACHE))
        home = os.environ.get("HF_HOME")
        tmp = Path(tempfile.gettempdir()).resolve()
        if home and Path(home).resolve().is_relative_to(tmp):
            for cache in caches:
                path = Path(cache).resolve()
                if path.is_relative_to(Path(home).resolve()) and path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def fake_hub(request: pytest.FixtureRequest) -> Iterator[FakeHub]:
    """The running fake Hub, emptied for this test.

    Strict: a request that matched no route (answered with a catch-all 404 the real Hub might
    not give: hub.py reads a 404 as "no card yet") or that hit a bug of the fake fails the test
    that made it, at teardown, naming the route.
    """
    hub = _session_hub(request.config)
    hub.reset()
    _drop_client_caches()
    yield hub
    with hub._lock:
        unhandled, server_errors = list(hub.unhandled), list(hub.server_errors)
    if unhandled:
        routes = ", ".join(f"{method} {path}" for method, path in unhandled)
        pytest.fail(f"the fake Hub knows no route for: {routes}", pytrace=False)
    if server_errors:
        pytest.fail("the fake Hub failed on a request:\n" + server_errors[0], pytrace=False)
