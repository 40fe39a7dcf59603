"""A reference server of Collinear's synth-data endpoint, on loopback, for tests and demos.

``ReferenceServer`` implements ``POST /api/v1/synth_data/generate`` with the documented request,
response and error shapes (bearer auth, FastAPI-style 422s, ``x-request-id``), so the client, the
``ds.map`` adapter and whole pipelines can be exercised over real HTTP without an account.

Its engine is **not a language model**: it copies each example's structure and rewrites its string
leaves deterministically (a few words swapped from a small vocabulary plus a variant marker), so
the same request always gets the same answer. ``Faults`` injects the failures a real service
produces (status codes with ``Retry-After``, dropped or truncated bodies, other framings, malformed
or wrapped ``generated`` text, short or extra answers, altered ``original`` objects, a concurrency
cap, latency), randomly with a seeded RNG or in a fixed order through ``Faults.script``.

The server is an aiohttp application running its own event loop in a daemon thread; latency is
``asyncio.sleep``, so it holds hundreds of concurrent connections without becoming the bottleneck.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import dataclasses
import hashlib
import hmac
import ipaddress
import json
import math
import random
import re
import secrets
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from http import HTTPStatus
from types import FrameType, TracebackType
from typing import Any, TypeVar

from aiohttp import web

__all__ = [
    "GENERATE_PATH",
    "MAX_GENERATIONS_PER_REQUEST",
    "PARSER_DESCRIPTION",
    "Faults",
    "ReferenceServer",
    "add_serve_arguments",
    "main",
    "run_serve",
]

GENERATE_PATH = "/api/v1/synth_data/generate"
# A request may target at most this many generations (examples × multiplier); beyond it: 422.
MAX_GENERATIONS_PER_REQUEST = 100_000

PARSER_DESCRIPTION = """\
Serve an offline reference implementation of Collinear's synth-data endpoint
(POST /api/v1/synth_data/generate) on loopback, for tests, demos and benchmarks.

Its engine rewrites the string fields of each example deterministically (same
request, same answer): it is NOT a language model and its output is not
training data. Fault flags make it misbehave the way a real service can (rate
limits, 5xx, dropped or truncated bodies, other framings, malformed output).
"""

_T = TypeVar("_T")

_FRAMINGS = ("json", "chunked", "sse", "ndjson")
_SCRIPT_WORDS = ("drop", "truncate", "hang", "stall", "ok")
_RATE_FIELDS = (
    "rate_429",
    "rate_500",
    "rate_502",
    "rate_503",
    "rate_drop",
    "rate_truncate",
    "rate_malformed",
    "rate_fenced",
    "rate_wrapped",
    "rate_shortfall",
    "rate_extra",
    "rate_alter_original",
)
# Above this many generations the engine runs in a worker thread so the loop keeps serving.
_EXECUTOR_THRESHOLD = 2_000
_CLIENT_MAX_SIZE = 64 * 1024 * 1024
# Typed request-storage key where aiohttp has them (3.12+); a plain string on older versions.
_REQUEST_ID_KEY: Any = (
    web.RequestKey("synth_request_id", str) if hasattr(web, "RequestKey") else "synth_request_id"
)


# --------------------------------------------------------------------------------------------
# Faults


@dataclasses.dataclass
class Faults:
    """What the server does wrong, per instance; everything is off by default.

    Rates are fractions in [0, 1]. Status, drop and truncate outcomes are drawn once per generate
    request from ``random.Random(seed)``; per-item faults (malformed, fenced, wrapped, shortfall,
    extra, alter_original, shuffle) are derived from the request content and ``seed``, so they are
    deterministic per item. ``script`` is consumed first, one entry per generate request
    (a request refused by ``max_concurrency`` consumes nothing). Latency applies to every
    admitted request and is its whole time to answer, the server's own work included; scripted and random statuses are answered before auth and validation.

    Script words: ``"drop"`` (the connection closes mid-body), ``"truncate"`` (the body ends early
    but cleanly), ``"hang"`` (nothing is sent for ``hang`` seconds, then the whole answer,
    streamed: a read timeout before the headers), ``"stall"`` (headers and half the body, a pause
    of ``hang`` seconds, then the rest: a read timeout mid-body) and ``"ok"``. Each counts under
    its own key in ``stats()["by_status"]`` instead of ``"200"``.
    """

    latency: float = 0.0
    latency_jitter: float = 0.0
    rate_429: float = 0.0
    rate_500: float = 0.0
    rate_502: float = 0.0
    rate_503: float = 0.0
    retry_after: float = 1.0
    hang: float = 5.0
    rate_drop: float = 0.0
    rate_truncate: float = 0.0
    framing: str = "json"
    rate_malformed: float = 0.0
    rate_fenced: float = 0.0
    rate_wrapped: float = 0.0
    shuffle: bool = False
    rate_shortfall: float = 0.0
    rate_extra: float = 0.0
    rate_alter_original: float = 0.0
    max_concurrency: int | None = None
    script: list[int | str] = dataclasses.field(default_factory=list)
    seed: int = 0

    def __post_init__(self) -> None:
        """Refuse bad values up front: a typo'd fault must not silently mean "no fault"."""
        for name in ("latency", "latency_jitter", "retry_after", "hang", *_RATE_FIELDS):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"Faults.{name} must be a number, got {value!r}")
            value = float(value)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"Faults.{name} must be a finite number >= 0, got {value!r}")
            if name in _RATE_FIELDS and value > 1:
                raise ValueError(f"Faults.{name} is a fraction in [0, 1], got {value!r}")
            setattr(self, name, value)
        if self.framing not in _FRAMINGS:
            raise ValueError(f"Faults.framing must be one of {_FRAMINGS}, got {self.framing!r}")
        if not isinstance(self.shuffle, bool):
            raise ValueError(f"Faults.shuffle must be a bool, got {self.shuffle!r}")
        if self.max_concurrency is not None and (
            isinstance(self.max_concurrency, bool)
            or not isinstance(self.max_concurrency, int)
            or self.max_concurrency < 1
        ):
            raise ValueError(
                f"Faults.max_concurrency must be None or an int >= 1, got {self.max_concurrency!r}"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"Faults.seed must be an int, got {self.seed!r}")
        if isinstance(self.script, (str, bytes)) or not isinstance(self.script, Sequence):
            raise ValueError(f"Faults.script must be a list, got {self.script!r}")
        script: list[int | str] = []
        for entry in self.script:
            if isinstance(entry, bool):
                raise ValueError(f"Faults.script entry {entry!r} is not a status or word")
            if isinstance(entry, int):
                if entry != 200 and not 400 <= entry <= 599:
                    raise ValueError(f"Faults.script status must be 200 or 4xx/5xx, got {entry}")
            elif entry not in _SCRIPT_WORDS:
                raise ValueError(
                    f"Faults.script entry must be an int status or one of {_SCRIPT_WORDS}, "
                    f"got {entry!r}"
                )
            script.append(entry)
        # Our own copy: the server consumes it, the caller's list stays as it was.
        self.script = script


# --------------------------------------------------------------------------------------------
# Offline engine (deterministic string rewriting; NOT a language model)

_VOCAB = (
    "answer", "budget", "bridge", "change", "city", "context", "detail", "doctor", "engineer",
    "evening", "example", "family", "feature", "field", "friend", "garden", "group", "idea",
    "issue", "journey", "level", "library", "market", "message", "method", "model", "morning",
    "note", "option", "order", "pattern", "plan", "point", "process", "question", "range",
    "reason", "recipe", "record", "report", "request", "result", "review", "river", "sample",
    "school", "signal", "source", "step", "student", "summary", "target", "task", "teacher",
    "topic", "update", "value", "weekend", "window",
)  # fmt: skip
# Short identifier-like strings ("user", "assistant", "system", "tool") are kept: roles stay valid.
_KEEP_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]{0,11}\Z")
_TRAILING_PUNCT = ".,;:!?)\"'"


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _rewrite_text(text: str, rng: random.Random, marker: str) -> str:
    """Swap a few words for vocabulary words and append the variant marker.

    The marker makes every generation differ from the seed and from its siblings; the swaps
    make the text look a little less like a copy. Cost is linear in the text, with at most
    32 swaps, so the engine runs at many thousands of rows per second.
    """
    if not text or _KEEP_RE.match(text):
        return text
    words = text.split(" ")
    n = len(words)
    for _ in range(min(1 + n // 6, 32)):
        i = rng.randrange(n)
        word = words[i]
        core = word.rstrip(_TRAILING_PUNCT)
        if not core.isalpha():
            continue
        new = _VOCAB[rng.randrange(len(_VOCAB))]
        if core[0].isupper():
            new = new.capitalize()
        words[i] = new + word[len(core) :]
    return " ".join(words) + marker


def _rewrite(value: Any, rng: random.Random, marker: str) -> Any:
    """Same keys, nesting, list lengths and non-string leaves; string leaves rewritten.

    Keys are visited in sorted order (the output keeps the received order), so the result
    depends on the example's content, not on how its keys happened to be ordered.
    """
    if isinstance(value, str):
        return _rewrite_text(value, rng, marker)
    if isinstance(value, dict):
        out: dict[str, Any] = dict.fromkeys(value)
        for key in sorted(value):
            out[key] = _rewrite(value[key], rng, marker)
        return out
    if isinstance(value, list):
        return [_rewrite(item, rng, marker) for item in value]
    return value


def _malform(text: str, rng: random.Random) -> str:
    """Break JSON text in one of the ways model output breaks; the result never parses."""
    kind = rng.randrange(4)
    if kind == 0 and text.endswith("}"):
        return text[:-1] + ",}"  # trailing comma
    if kind == 1 and '"' in text:
        return text.replace('"', "'")  # single quotes
    if kind == 2 and len(text) > 1:
        return text[:-1]  # missing closing brace
    return text[: max(1, len(text) // 2)]  # cut mid-way


def _fence(text: str, rng: random.Random) -> str:
    if rng.random() < 0.5:
        return f"```json\n{text}\n```"
    return f"Here is the result:\n{text}"


def _alter(original: dict[str, Any]) -> dict[str, Any]:
    """Return a copy that matches no sent example: first string leaf gets " (edited)"."""
    altered = json.loads(json.dumps(original))
    stack: list[Any] = [altered]
    while stack:
        node = stack.pop()
        items = list(node.items()) if isinstance(node, dict) else list(enumerate(node))
        for key, child in items:
            if isinstance(child, str):
                node[key] = child + " (edited)"
                return altered
        stack.extend(reversed([c for _, c in items if isinstance(c, (dict, list))]))
    key = "_edited"
    while key in altered:
        key += "_"
    altered[key] = True
    return altered


def _seed_int(digest: bytes, salt: int = 0) -> int:
    return int.from_bytes(digest[:16], "big") + (salt << 128)


def _generate_items(
    *,
    model_id: str,
    multiplier: int,
    prompt: str,
    examples: list[dict[str, Any]],
    faults: Faults,
) -> list[dict[str, Any]]:
    """Build the 200 answer's items: ``multiplier`` rewrites per example, plus item faults.

    Seeds come from sha256 of (canonical prompt/model_id/multiplier) + example canonical JSON +
    generation index, so the same request always yields the same items.
    """
    base = hashlib.sha256(
        _canonical({"model_id": model_id, "multiplier": multiplier, "prompt": prompt}).encode()
    ).digest()
    item_faults = any(
        getattr(faults, name) > 0
        for name in (
            "rate_malformed",
            "rate_fenced",
            "rate_wrapped",
            "rate_shortfall",
            "rate_alter_original",
        )
    )
    salt = faults.seed & ((1 << 64) - 1)
    items: list[dict[str, Any]] = []
    for example in examples:
        ex_digest = hashlib.sha256(base + _canonical(example).encode()).digest()
        count = multiplier
        if faults.rate_extra > 0:
            ex_rng = random.Random(_seed_int(hashlib.sha256(ex_digest + b"extra").digest(), salt))
            if ex_rng.random() < faults.rate_extra:
                count += 1
        for index in range(count):
            digest = hashlib.sha256(ex_digest + index.to_bytes(8, "big")).digest()
            generated: Any = _rewrite(
                example, random.Random(_seed_int(digest)), f" (variant {index + 1})"
            )
            original: dict[str, Any] = example
            if item_faults:
                rng = random.Random(_seed_int(digest[16:], salt))
                short, wrap, mal, fence, alter = (rng.random() for _ in range(5))
                if short < faults.rate_shortfall:
                    continue
                if wrap < faults.rate_wrapped:
                    generated = {"generated_data": generated}
                text = json.dumps(generated, ensure_ascii=False)
                if mal < faults.rate_malformed:
                    text = _malform(text, rng)
                if fence < faults.rate_fenced:
                    text = _fence(text, rng)
                if alter < faults.rate_alter_original:
                    original = _alter(example)
            else:
                text = json.dumps(generated, ensure_ascii=False)
            items.append({"original": original, "generated": text})
    if faults.shuffle:
        random.Random(_seed_int(hashlib.sha256(base + b"shuffle").digest(), salt)).shuffle(items)
    return items


def _encode(items: list[dict[str, Any]], framing: str) -> bytes:
    if framing == "sse":
        events = [f"data: {json.dumps(item, ensure_ascii=False)}\n\n" for item in items]
        events.append("data: [DONE]\n\n")
        return "".join(events).encode()
    if framing == "ndjson":
        return "".join(json.dumps(item, ensure_ascii=False) + "\n" for item in items).encode()
    return json.dumps(items, ensure_ascii=False).encode()


def _build_payload(
    model_id: str, multiplier: int, prompt: str, examples: list[dict[str, Any]], faults: Faults
) -> tuple[bytes, int]:
    items = _generate_items(
        model_id=model_id, multiplier=multiplier, prompt=prompt, examples=examples, faults=faults
    )
    return _encode(items, faults.framing), len(items)


# --------------------------------------------------------------------------------------------
# Request validation (FastAPI / pydantic v2 shaped 422 details)


def _err(loc: list[str | int], msg: str, type_: str, **extra: Any) -> dict[str, Any]:
    return {"loc": loc, "msg": msg, "type": type_, **extra}


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _validate_body(raw: bytes) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """Parse and check the body; return (body, []) or (None, every problem found)."""
    if not raw.strip():
        return None, [_err(["body"], "Field required", "missing")]
    try:
        body = json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        pos = exc.pos if isinstance(exc, json.JSONDecodeError) else 0
        return None, [
            _err(["body", pos], "JSON decode error", "json_invalid", ctx={"error": str(exc)})
        ]
    if not isinstance(body, dict):
        return None, [
            _err(
                ["body"],
                "Input should be a valid dictionary or object to extract fields from",
                "model_attributes_type",
                input=body,
            )
        ]
    errors: list[dict[str, Any]] = []
    for name in ("model_id", "multiplier", "examples", "prompt"):
        if name not in body:
            errors.append(_err(["body", name], "Field required", "missing"))

    model_id = body.get("model_id")
    if "model_id" in body:
        if not isinstance(model_id, str):
            errors.append(
                _err(
                    ["body", "model_id"],
                    "UUID input should be a string, bytes or UUID object",
                    "uuid_type",
                    input=model_id,
                )
            )
        else:
            try:
                uuid.UUID(model_id)
            except ValueError:
                errors.append(
                    _err(
                        ["body", "model_id"],
                        "Input should be a valid UUID",
                        "uuid_parsing",
                        input=model_id,
                    )
                )

    multiplier = body.get("multiplier")
    if "multiplier" in body:
        if isinstance(multiplier, bool) or not isinstance(multiplier, int):
            errors.append(
                _err(
                    ["body", "multiplier"],
                    "Input should be a valid integer",
                    "int_type",
                    input=multiplier,
                )
            )
        elif multiplier < 1:
            errors.append(
                _err(
                    ["body", "multiplier"],
                    "Input should be greater than or equal to 1",
                    "greater_than_equal",
                    input=multiplier,
                    ctx={"ge": 1},
                )
            )

    examples = body.get("examples")
    if "examples" in body:
        if not isinstance(examples, list):
            errors.append(
                _err(
                    ["body", "examples"],
                    "Input should be a valid list",
                    "list_type",
                    input=examples,
                )
            )
        elif not examples:
            errors.append(
                _err(
                    ["body", "examples"],
                    "List should have at least 1 item after validation, not 0",
                    "too_short",
                    input=examples,
                    ctx={"field_type": "List", "min_length": 1, "actual_length": 0},
                )
            )
        else:
            for i, example in enumerate(examples):
                if not isinstance(example, dict):
                    errors.append(
                        _err(
                            ["body", "examples", i],
                            "Input should be a valid dictionary",
                            "dict_type",
                            input=example,
                        )
                    )

    prompt = body.get("prompt")
    if "prompt" in body:
        if not isinstance(prompt, str):
            errors.append(
                _err(
                    ["body", "prompt"],
                    "Input should be a valid string",
                    "string_type",
                    input=prompt,
                )
            )
        elif not prompt:
            errors.append(
                _err(
                    ["body", "prompt"],
                    "String should have at least 1 character",
                    "string_too_short",
                    input=prompt,
                    ctx={"min_length": 1},
                )
            )

    if errors:
        return None, errors
    total = len(examples) * multiplier
    if total > MAX_GENERATIONS_PER_REQUEST:
        return None, [
            _err(
                ["body"],
                f"Value error, {len(examples)} examples × multiplier {multiplier} = {total} "
                f"generations exceeds the limit of {MAX_GENERATIONS_PER_REQUEST} per request",
                "value_error",
            )
        ]
    return body, []


# --------------------------------------------------------------------------------------------
# Server


def _format_retry_after(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else repr(float(seconds))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _chunks(data: bytes) -> list[bytes]:
    """Split into about eight pieces (at most 16 KiB each) so framing is really chunked."""
    if not data:
        return []
    size = min(max(1, -(-len(data) // 8)), 16 * 1024)
    return [data[i : i + size] for i in range(0, len(data), size)]


_CONTENT_TYPES = {
    "json": "application/json",
    "chunked": "application/json",
    "sse": "text/event-stream",
    "ndjson": "application/x-ndjson",
}

_STATUS_DETAIL = {
    401: "Invalid token",
    429: "Rate limit exceeded",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


class ReferenceServer:
    """The synth-data endpoint on loopback, with an offline engine and fault injection.

    Use it as a context manager (``with ReferenceServer() as srv: ...``) and point a client at
    ``srv.url`` with ``srv.token``. Its engine is deterministic string rewriting, NOT a language
    model. ``faults`` can be changed at runtime with ``set_faults`` (or ``POST /__faults``).
    """

    def __init__(
        self,
        *,
        token: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: Faults | None = None,
    ) -> None:
        self.token: str = token if token is not None else "sk-local-" + secrets.token_hex(12)
        self.host = host
        self.port = port
        self.faults: Faults = dataclasses.replace(faults) if faults is not None else Faults()
        self._rng = random.Random(self.faults.seed)
        self._stats = self._empty_stats()
        self._in_flight = 0
        self._url: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    # ---- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` of the running server (the real port when started with 0)."""
        if self._url is None:
            raise RuntimeError("ReferenceServer is not started; call start() or use `with`")
        return self._url

    def __repr__(self) -> str:
        return f"ReferenceServer(url={self._url or 'not started'!r})"

    def start(self) -> ReferenceServer:
        """Bind and serve from a daemon thread with its own event loop; returns self."""
        if self._thread is not None:
            raise RuntimeError("ReferenceServer is already started")
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._setup())
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                # Handlers still sleeping (latency, "hang", "stall") end here, not at exit.
                pending = asyncio.all_tasks(loop)
                for task in pending:
                    task.cancel()
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_default_executor())
                loop.close()

        thread = threading.Thread(target=run, name="synth-reference-server", daemon=True)
        self._loop = loop
        self._thread = thread
        thread.start()
        ready.wait()
        if failure:
            thread.join()
            self._loop = None
            self._thread = None
            raise failure[0]
        return self

    async def _setup(self) -> None:
        app = web.Application(client_max_size=_CLIENT_MAX_SIZE, middlewares=[_json_errors])
        app.on_response_prepare.append(_add_request_id)
        app.router.add_post(GENERATE_PATH, self._handle_generate)
        app.router.add_get("/health", self._handle_health)
        app.router.add_get("/__stats", self._handle_stats)
        app.router.add_post("/__reset", self._handle_reset)
        app.router.add_get("/__faults", self._handle_get_faults)
        app.router.add_post("/__faults", self._handle_post_faults)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, backlog=1024)
        await site.start()
        self._runner = runner
        port = int(runner.addresses[0][1])
        host = f"[{self.host}]" if ":" in self.host else self.host
        self._url = f"http://{host}:{port}"

    def stop(self) -> None:
        """Close the listener, cancel in-flight requests and join the thread (idempotent)."""
        loop, thread, runner = self._loop, self._thread, self._runner
        if loop is None or thread is None:
            return
        if runner is not None and loop.is_running():
            future = asyncio.run_coroutine_threadsafe(runner.cleanup(), loop)
            with contextlib.suppress(Exception):  # a slow cleanup must not block stop()
                future.result(timeout=10)
        if loop.is_running():
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        self._loop = self._thread = self._runner = None
        self._url = None

    def __enter__(self) -> ReferenceServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def serve_forever(self) -> None:
        """Serve in the foreground until KeyboardInterrupt or SIGTERM, then stop (for the CLI)."""
        if self._thread is None:
            self.start()
        stopping = False

        def on_term(signum: int, frame: FrameType | None) -> None:
            nonlocal stopping
            stopping = True

        previous: Any = None
        in_main = threading.current_thread() is threading.main_thread()
        if in_main:
            previous = signal.signal(signal.SIGTERM, on_term)
        try:
            while not stopping and self._thread is not None and self._thread.is_alive():
                time.sleep(0.2)
        except KeyboardInterrupt:
            pass
        finally:
            if in_main:
                signal.signal(signal.SIGTERM, previous)
            self.stop()

    # ---- state shared with the loop thread -------------------------------------------------

    def _on_loop(self, fn: Callable[[], _T]) -> _T:
        """Run ``fn`` on the server loop (where handlers run), so no lock is ever needed."""
        loop, thread = self._loop, self._thread
        if loop is None or not loop.is_running() or threading.current_thread() is thread:
            return fn()
        future: concurrent.futures.Future[_T] = concurrent.futures.Future()

        def call() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)

        loop.call_soon_threadsafe(call)
        return future.result(timeout=10)

    @staticmethod
    def _empty_stats() -> dict[str, Any]:
        return {"requests": 0, "by_status": {}, "examples": 0, "generations": 0, "max_in_flight": 0}

    def _snapshot(self) -> dict[str, Any]:
        stats = self._stats
        return {
            "requests": stats["requests"],
            "by_status": dict(stats["by_status"]),
            "examples": stats["examples"],
            "generations": stats["generations"],
            "in_flight": self._in_flight,
            "max_in_flight": stats["max_in_flight"],
        }

    def stats(self) -> dict[str, Any]:
        """Counters since start or the last reset.

        ``requests`` counts every generate POST (whatever its answer); ``by_status`` maps "200",
        "401", "429", ... and "drop"/"truncate"/"hang"/"stall" (faulty 200s) to counts;
        ``examples`` and ``generations`` count what complete 200 answers carried.
        """
        return self._on_loop(self._snapshot)

    def reset_stats(self) -> None:
        """Zero the counters (the fault RNG and the script are left as they are)."""

        def reset() -> None:
            self._stats = self._empty_stats()
            self._stats["max_in_flight"] = self._in_flight

        self._on_loop(reset)

    def set_faults(self, faults: Faults | None = None, **changes: Any) -> None:
        """Replace the faults (or some fields) in one step; a new ``seed`` reseeds the RNG."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(Faults)}
        if unknown:
            raise TypeError(f"unknown Faults field(s): {', '.join(sorted(unknown))}")
        base = faults if faults is not None else None

        def apply() -> None:
            current = base if base is not None else self.faults
            new = dataclasses.replace(current, **changes)  # validates in __post_init__
            if base is not None or "seed" in changes or new.seed != self.faults.seed:
                self._rng = random.Random(new.seed)
            self.faults = new

        self._on_loop(apply)

    # ---- handlers ----------------------------------------------------------------------------

    def _count(self, key: str) -> None:
        by_status = self._stats["by_status"]
        by_status[key] = by_status.get(key, 0) + 1

    def _error(self, status: int, faults: Faults, detail: Any = None) -> web.Response:
        self._count(str(status))
        headers: dict[str, str] = {}
        if status in (429, 503):
            headers["Retry-After"] = _format_retry_after(faults.retry_after)
        if status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        if detail is None:
            if status == 422:
                detail = [_err(["body"], "Scripted validation error", "value_error")]
            else:
                detail = _STATUS_DETAIL.get(status) or HTTPStatus(status).phrase
        return web.json_response({"detail": detail}, status=status, headers=headers)

    def _decide(self, faults: Faults) -> int | str:
        """The request-level outcome: the next script entry, else one draw of the fault RNG."""
        if faults.script:
            outcome = faults.script.pop(0)
            return "ok" if outcome == 200 else outcome
        draw = self._rng.random()
        for outcome, rate in (
            (429, faults.rate_429),
            (500, faults.rate_500),
            (502, faults.rate_502),
            (503, faults.rate_503),
            ("drop", faults.rate_drop),
            ("truncate", faults.rate_truncate),
        ):
            if draw < rate:
                return outcome
            draw -= rate
        return "ok"

    def _auth_error(self, request: web.Request) -> str | None:
        header = request.headers.get("Authorization", "")
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            return "Not authenticated"
        # aiohttp decodes header bytes as UTF-8 with surrogateescape: a latin-1 token must get a
        # 401, not crash the handler.
        received = credentials.strip().encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(received, self.token.encode()):
            return "Invalid token"
        return None

    async def _handle_generate(self, request: web.Request) -> web.StreamResponse:
        request[_REQUEST_ID_KEY] = "req_" + uuid.uuid4().hex
        faults = self.faults
        self._stats["requests"] += 1
        if faults.max_concurrency is not None and self._in_flight >= faults.max_concurrency:
            return self._error(429, faults, "Too many concurrent requests")
        self._in_flight += 1
        self._stats["max_in_flight"] = max(self._stats["max_in_flight"], self._in_flight)
        try:
            return await self._generate(request, faults)
        finally:
            self._in_flight -= 1

    async def _generate(self, request: web.Request, faults: Faults) -> web.StreamResponse:
        """Answer one request; ``latency`` is the whole time to answer, work included.

        The answer is built first and the rest of the latency slept after, so the server's own
        CPU does not add to the latency a benchmark sets (a fixed sleep plus the work would).
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        outcome = self._decide(faults)
        delay = faults.latency
        if faults.latency_jitter > 0:
            delay += self._rng.uniform(0, faults.latency_jitter)
        raw: bytes | None = None
        if outcome == "hang":
            self._count("hang")  # now: the client may give up long before the answer
            delay += faults.hang
            raw = await request.read()  # before the client gives up and closes the connection

        async def wait_rest() -> None:
            rest = delay - (loop.time() - started)
            if rest > 0:
                await asyncio.sleep(rest)

        if isinstance(outcome, int):
            await wait_rest()
            return self._error(outcome, faults)

        auth_error = self._auth_error(request)
        if auth_error is not None:
            await wait_rest()
            return self._error(401, faults, auth_error)
        try:
            if raw is None:
                raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            await wait_rest()
            return self._error(413, faults, "Request body too large")
        body, errors = _validate_body(raw)
        if body is None:
            await wait_rest()
            return self._error(422, faults, errors)

        args = (body["model_id"], body["multiplier"], body["prompt"], body["examples"], faults)
        if len(body["examples"]) * body["multiplier"] > _EXECUTOR_THRESHOLD:
            loop = asyncio.get_running_loop()
            payload, n_items = await loop.run_in_executor(None, _build_payload, *args)
        else:
            payload, n_items = _build_payload(*args)
        await wait_rest()

        content_type = _CONTENT_TYPES[faults.framing]
        if outcome == "drop":
            self._count("drop")
            response = web.StreamResponse(status=200)
            response.content_type = content_type
            response.content_length = len(payload)
            await response.prepare(request)
            await response.write(payload[: len(payload) // 2])
            if request.transport is not None:
                request.transport.close()
            return response
        if outcome == "truncate":
            self._count("truncate")
            return await self._stream(request, payload[: len(payload) // 2], content_type)
        if outcome == "stall":
            self._count("stall")
            return await self._stall(request, payload, content_type, faults.hang)
        if outcome == "hang":  # the client has most likely given up and gone
            with contextlib.suppress(ConnectionError):
                return await self._stream(request, payload, content_type)
            return web.Response(status=200)

        self._count("200")
        self._stats["examples"] += len(body["examples"])
        self._stats["generations"] += n_items
        if faults.framing == "json":
            return web.Response(body=payload, status=200, content_type=content_type)
        return await self._stream(request, payload, content_type)

    @staticmethod
    async def _stall(
        request: web.Request, payload: bytes, content_type: str, pause: float
    ) -> web.StreamResponse:
        """Headers and half the body, a pause, then the rest (if the client is still there)."""
        response = web.StreamResponse(status=200)
        response.content_type = content_type
        response.content_length = len(payload)
        await response.prepare(request)
        half = len(payload) // 2
        with contextlib.suppress(ConnectionError):
            await response.write(payload[:half])
            await asyncio.sleep(pause)
            if request.transport is None or request.transport.is_closing():
                return response
            await response.write(payload[half:])
            await response.write_eof()
        return response

    @staticmethod
    async def _stream(
        request: web.Request, payload: bytes, content_type: str
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=200)
        response.content_type = content_type
        response.enable_chunked_encoding()
        await response.prepare(request)
        for piece in _chunks(payload):
            await response.write(piece)
            await asyncio.sleep(0)
        await response.write_eof()
        return response

    async def _handle_health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def _handle_stats(self, request: web.Request) -> web.Response:
        _require_loopback(request)
        return web.json_response(self._snapshot())

    async def _handle_reset(self, request: web.Request) -> web.Response:
        _require_loopback(request)
        self.reset_stats()
        return web.json_response({"ok": True})

    async def _handle_get_faults(self, request: web.Request) -> web.Response:
        _require_loopback(request)
        return web.json_response(dataclasses.asdict(self.faults))

    async def _handle_post_faults(self, request: web.Request) -> web.Response:
        _require_loopback(request)
        try:
            changes = json.loads(await request.read() or b"{}")
        except ValueError as exc:
            return web.json_response({"detail": f"body is not JSON: {exc}"}, status=400)
        if not isinstance(changes, dict):
            return web.json_response({"detail": "body must be a JSON object"}, status=400)
        try:
            self.set_faults(**changes)
        except (TypeError, ValueError) as exc:
            return web.json_response({"detail": str(exc)}, status=400)
        return web.json_response(dataclasses.asdict(self.faults))


def _require_loopback(request: web.Request) -> None:
    """Admin endpoints have no auth, so only loopback peers may use them."""
    if request.remote is None or not _is_loopback(request.remote):
        raise web.HTTPForbidden(reason="admin endpoints are loopback only")


@web.middleware
async def _json_errors(
    request: web.Request, handler: Callable[[web.Request], Any]
) -> web.StreamResponse:
    """Answer router errors (404, 405, ...) as FastAPI does: ``{"detail": "..."}``."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() not in ("content-type",)}
        headers.pop("Content-Length", None)
        return web.json_response({"detail": exc.reason}, status=exc.status, headers=headers)


async def _add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """Every response carries ``x-request-id``, as the real service's do."""
    if "x-request-id" not in response.headers:
        request_id = request.get(_REQUEST_ID_KEY) or "req_" + uuid.uuid4().hex
        response.headers["x-request-id"] = request_id


# --------------------------------------------------------------------------------------------
# CLI


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``serve`` options (address, token, every fault) to ``parser``."""
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8787, help="port (0 = any free port)")
    parser.add_argument("--token", default=None, help="bearer token (default: a random one)")
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a non-loopback --host (the admin endpoints stay loopback only)",
    )
    faults = parser.add_argument_group("fault injection (all off by default)")
    faults.add_argument(
        "--latency",
        type=float,
        default=0.0,
        help="seconds each answer takes in all (work included)",
    )
    faults.add_argument(
        "--latency-jitter", type=float, default=0.0, help="extra uniform [0, J] seconds"
    )
    for code in (429, 500, 502, 503):
        faults.add_argument(
            f"--rate-{code}", type=float, default=0.0, help=f"fraction answered {code}"
        )
    faults.add_argument(
        "--retry-after", type=float, default=1.0, help="Retry-After seconds on 429/503"
    )
    faults.add_argument(
        "--hang",
        type=float,
        default=5.0,
        help="seconds a scripted 'hang' or 'stall' request waits (default 5)",
    )
    faults.add_argument(
        "--rate-drop", type=float, default=0.0, help="fraction whose connection drops mid-body"
    )
    faults.add_argument(
        "--rate-truncate", type=float, default=0.0, help="fraction whose body ends early"
    )
    faults.add_argument("--framing", choices=_FRAMINGS, default="json", help="body framing")
    faults.add_argument(
        "--rate-malformed", type=float, default=0.0, help="fraction of malformed generations"
    )
    faults.add_argument(
        "--rate-fenced", type=float, default=0.0, help="fraction wrapped in prose or fences"
    )
    faults.add_argument(
        "--rate-wrapped", type=float, default=0.0, help='fraction wrapped as {"generated_data"}'
    )
    faults.add_argument("--shuffle", action="store_true", help="shuffle item order")
    faults.add_argument(
        "--rate-shortfall", type=float, default=0.0, help="fraction of generations omitted"
    )
    faults.add_argument(
        "--rate-extra", type=float, default=0.0, help="fraction of examples given one extra"
    )
    faults.add_argument(
        "--rate-alter-original",
        type=float,
        default=0.0,
        help="fraction of items whose original is altered",
    )
    faults.add_argument(
        "--max-concurrency", type=int, default=None, help="answer 429 beyond N in-flight requests"
    )
    faults.add_argument(
        "--script",
        default="",
        help="comma-separated forced outcomes for the first requests, e.g. 429,429,drop,ok "
        "(words: drop, truncate, hang, stall, ok)",
    )
    faults.add_argument("--seed", type=int, default=0, help="seed of the fault RNG")


def _parse_script(text: str) -> list[int | str]:
    script: list[int | str] = []
    for entry in filter(None, (part.strip() for part in text.split(","))):
        script.append(int(entry) if entry.isdigit() else entry)
    return script


def run_serve(args: argparse.Namespace) -> int:
    """Start a server from parsed ``serve`` options and block; 0 on clean exit, 2 on bad input."""
    if not _is_loopback(args.host) and not args.allow_remote:
        print(
            f"error: refusing to serve on non-loopback host {args.host!r}; "
            "pass --allow-remote if you really mean it",
            file=sys.stderr,
        )
        return 2
    try:
        faults = Faults(
            latency=args.latency,
            latency_jitter=args.latency_jitter,
            rate_429=args.rate_429,
            rate_500=args.rate_500,
            rate_502=args.rate_502,
            rate_503=args.rate_503,
            retry_after=args.retry_after,
            hang=args.hang,
            rate_drop=args.rate_drop,
            rate_truncate=args.rate_truncate,
            framing=args.framing,
            rate_malformed=args.rate_malformed,
            rate_fenced=args.rate_fenced,
            rate_wrapped=args.rate_wrapped,
            shuffle=args.shuffle,
            rate_shortfall=args.rate_shortfall,
            rate_extra=args.rate_extra,
            rate_alter_original=args.rate_alter_original,
            max_concurrency=args.max_concurrency,
            script=_parse_script(args.script),
            seed=args.seed,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    server = ReferenceServer(token=args.token, host=args.host, port=args.port, faults=faults)
    try:
        server.start()
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    # The token is printed only here, for the person who started the server.
    print(f"serving {server.url} token={server.token}", flush=True)
    server.serve_forever()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m synth_datasets.testing``: the same as ``synth-datasets serve``."""
    parser = argparse.ArgumentParser(
        prog="python -m synth_datasets.testing", description=PARSER_DESCRIPTION
    )
    add_serve_arguments(parser)
    return run_serve(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
