"""``ReferenceServer``: Collinear's synth-data endpoint on loopback (the only aiohttp module).

The documented request, response and error shapes (bearer auth, FastAPI-style 422s,
``x-request-id``) from its engine (the offline one unless told), misbehaving as its ``Faults``
say; an aiohttp application on its own event loop in a daemon thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hmac
import json
import math
import random
import secrets
import signal
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.typedefs import Handler

from ..config import ENGINE_HEADER, is_loopback
from .engine import Engine, EngineError, OfflineEngine, encode_items
from .faults import CONTENT_TYPES, Faults
from .validation import GENERATE_PATH, Detail, body_validator, validate_body

__all__ = ["ReferenceServer"]

_T = TypeVar("_T")
# Above this many items the body is encoded in a worker thread so the loop keeps serving.
_EXECUTOR_THRESHOLD = 2_000
_STATUS_DETAIL: dict[int, str | Detail] = {
    401: "Invalid token",
    422: [{"loc": ["body"], "msg": "Scripted validation error", "type": "value_error"}],
    429: "Rate limit exceeded",
}
_RANDOM_OUTCOMES: tuple[int | str, ...] = (429, 500, 502, 503, "drop", "truncate")


def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
    """The server thread: run ``loop`` until ``stop()``, then end what is still running."""
    asyncio.set_event_loop(loop)
    loop.run_forever()
    # Handlers still sleeping (latency, "hang", "stall") end here, not at exit.
    pending = asyncio.all_tasks(loop)
    for task in pending:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_default_executor())
    loop.close()


class ReferenceServer:
    """The synth-data endpoint on loopback, with a pluggable engine and fault injection.

    Use it as a context manager (``with ReferenceServer() as srv: ...``) and point a client at
    ``srv.url`` with ``srv.token``. The default engine is deterministic string rewriting, NOT a
    language model; ``engine=OpenAIEngine(...)`` answers with your own model instead. ``faults``
    can be changed at runtime with ``set_faults`` (or ``POST /__faults``).
    """

    def __init__(
        self,
        *,
        token: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: Faults | None = None,
        engine: Engine | None = None,
    ) -> None:
        self.token: str = token if token is not None else "sk-local-" + secrets.token_hex(12)
        self.host = host
        self.port = port
        self.engine: Engine = engine if engine is not None else OfflineEngine()
        self.faults: Faults = dataclasses.replace(faults) if faults is not None else Faults()
        self.engine.check_faults(self.faults)
        self._rng = random.Random(self.faults.seed)
        self._validator = body_validator()
        self._in_flight = 0
        self._zero_stats()
        self._url: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` of the running server (the real port when started with 0)."""
        if self._url is None:
            raise RuntimeError("ReferenceServer is not started; call start() or use `with`")
        return self._url

    @property
    def cache_endpoint(self) -> str:
        """What the request cache knows this server by (``cache_endpoint=``) instead of its URL,
        whose port changes every run: its engine as announced (name, version; an OpenAIEngine's
        model and host) and the model id a run sends it (an OpenAIEngine's backend URL and
        model), so a rerun resumes and no two engines share answers, whatever model id is sent."""
        return f"synth_datasets reference server: {self.engine.announce}; {self.engine.model_id}"

    def __repr__(self) -> str:
        return f"ReferenceServer(url={self._url or 'not started'!r}, engine={self.engine!r})"

    def start(self) -> ReferenceServer:
        """Bind and serve from a daemon thread with its own event loop; returns self."""
        if self._thread is not None:
            raise RuntimeError("ReferenceServer is already started")
        loop = self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=_run_loop, args=(loop,), name="synth-reference-server", daemon=True
        )
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._setup(), loop).result()
        except BaseException:
            self.stop()
            raise
        return self

    async def _setup(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=[_middleware])
        app.on_response_prepare.append(self._add_headers)
        app.on_cleanup.append(self._close_engine)
        app.router.add_post(GENERATE_PATH, self._handle_generate)
        app.router.add_get("/health", _handle_health)
        app.router.add_get("/__stats", self._handle_stats)
        app.router.add_post("/__reset", self._handle_reset)
        app.router.add_get("/__faults", self._handle_faults)
        app.router.add_post("/__faults", self._handle_faults)
        # A client that gives up (its timeout) cancels its request's handler, and with it the
        # engine's work for it: an abandoned request must not keep a model busy.
        runner = web.AppRunner(
            app, access_log=None, shutdown_timeout=0.5, handler_cancellation=True
        )
        await runner.setup()
        self._runner = runner  # from here on, stop() cleans up: the engine is closed with the app
        await self.engine.open()
        await web.TCPSite(runner, self.host, self.port, backlog=1024).start()
        host = f"[{self.host}]" if ":" in self.host else self.host
        self._url = f"http://{host}:{runner.addresses[0][1]}"

    def stop(self) -> None:
        """Close the listener, cancel in-flight requests and join the thread (idempotent)."""
        loop, thread, runner = self._loop, self._thread, self._runner
        if loop is None or thread is None:
            return
        if runner is not None:
            future = asyncio.run_coroutine_threadsafe(runner.cleanup(), loop)
            with contextlib.suppress(Exception):  # a slow cleanup must not block stop()
                future.result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        self._loop = self._thread = self._runner = self._url = None

    def __enter__(self) -> ReferenceServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def serve_forever(self) -> None:
        """Serve in the foreground until Ctrl-C or SIGTERM, then stop (for the CLI)."""
        if self._thread is None:
            self.start()
        in_main = threading.current_thread() is threading.main_thread()
        # SIGTERM raises KeyboardInterrupt, as Ctrl-C does.
        previous = signal.signal(signal.SIGTERM, signal.default_int_handler) if in_main else None
        try:
            with contextlib.suppress(KeyboardInterrupt):
                while self._thread is not None and self._thread.is_alive():
                    self._thread.join(0.2)
        finally:
            if in_main:
                signal.signal(signal.SIGTERM, previous)
            self.stop()

    def _on_loop(self, fn: Callable[[], _T]) -> _T:
        """Run ``fn`` on the server loop (where handlers run), so no lock is ever needed."""
        loop, thread = self._loop, self._thread
        if loop is None or not loop.is_running() or threading.current_thread() is thread:
            return fn()

        async def call() -> _T:
            return fn()

        return asyncio.run_coroutine_threadsafe(call(), loop).result(timeout=10)

    def _zero_stats(self) -> None:
        self._by_status: Counter[str] = Counter()
        self._stats = dict.fromkeys(("requests", "examples", "generations", "rate_limited"), 0)
        self._stats["max_in_flight"] = self._in_flight
        # The rate limits: full buckets, and the schedule's clock starts at the next request.
        self._tokens: dict[str, float] = {}
        self._limit_clock: tuple[float, float] | None = None  # (first request, last refill)

    def _snapshot(self) -> dict[str, Any]:
        return {**self._stats, "by_status": dict(self._by_status), "in_flight": self._in_flight}

    def stats(self) -> dict[str, Any]:
        """Counters since start or the last reset: ``requests`` (every generate POST), ``by_status``
        ("200", "401", ... and the faulty 200s "drop", "truncate", "hang", "stall"), ``examples``
        and ``generations`` (what complete 200 answers carried), ``rate_limited`` (the 429s of
        the rate limits), ``in_flight``, ``max_in_flight``.
        """
        return self._on_loop(self._snapshot)

    def reset_stats(self) -> None:
        """Zero the counters, refill the rate limits' buckets and restart their schedule's clock
        (the fault RNG and the script are left as they are)."""
        self._on_loop(self._zero_stats)

    def set_faults(self, faults: Faults | None = None, **changes: Any) -> None:
        """Replace the faults (or some fields) in one step; a new ``seed`` reseeds the RNG."""

        def apply() -> None:
            new = dataclasses.replace(faults or self.faults, **changes)  # validates
            self.engine.check_faults(new)
            self.faults = new
            if faults is not None or "seed" in changes:
                self._rng = random.Random(self.faults.seed)

        self._on_loop(apply)

    def _error(
        self,
        status: int,
        faults: Faults,
        detail: str | Detail | None = None,
        retry_after: str | None = None,
    ) -> web.Response:
        """An error answer; ``retry_after`` (an engine's backend's, or the rate limits') replaces
        the faults' own."""
        self._by_status[str(status)] += 1
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
        if retry_after is not None:
            headers["Retry-After"] = retry_after
        elif status in (429, 503):
            headers["Retry-After"] = _seconds(faults.retry_after)
        if detail is None:
            detail = _STATUS_DETAIL.get(status) or HTTPStatus(status).phrase
        return web.json_response({"detail": detail}, status=status, headers=headers)

    def _limit_wait(self, faults: Faults, generations: int) -> float | None:
        """Take a request from the rate limits' buckets: None when they hold enough (it is
        taken), else the seconds until they would (nothing is taken)."""
        now = asyncio.get_running_loop().time()
        start, last = self._limit_clock or (now, now)
        self._limit_clock = (start, now)
        factor = 1.0
        for at, step in faults.limit_schedule:
            if now - start >= at:
                factor = step
        buckets = []  # (name, tokens per second, capacity, tokens this request takes)
        if faults.requests_per_second is not None:
            rate = faults.requests_per_second * factor
            buckets.append(("requests", rate, max(1.0, rate * faults.limit_burst), 1.0))
        if faults.generations_per_minute is not None:
            rate = faults.generations_per_minute * factor / 60
            capacity = max(1.0, rate * 60 * faults.limit_burst)
            buckets.append(("generations", rate, capacity, float(generations)))
        waits = []
        for name, rate, capacity, need in buckets:
            level = min(capacity, self._tokens.get(name, capacity) + (now - last) * rate)
            self._tokens[name] = level
            # A request larger than the whole bucket goes once it is full, leaving it in debt.
            if level < min(need, capacity):
                waits.append((min(need, capacity) - level) / rate)
        if waits:
            return max(waits)
        for name, _, _, need in buckets:
            self._tokens[name] -= need
        return None

    def _decide(self, faults: Faults) -> int | str:
        """The request-level outcome: the next script entry, else one draw of the fault RNG."""
        if faults.script:
            outcome = faults.script.pop(0)
            return "ok" if outcome == 200 else outcome
        draw = self._rng.random()
        for outcome in _RANDOM_OUTCOMES:
            rate: float = getattr(faults, f"rate_{outcome}")
            if draw < rate:
                return outcome
            draw -= rate
        return "ok"

    async def _admit(
        self, request: web.Request, outcome: int | str, faults: Faults
    ) -> dict[str, Any] | web.Response:
        """The checked body, or the error answer: scripted status, auth, size, validation."""
        if isinstance(outcome, int):
            return self._error(outcome, faults)
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            return self._error(401, faults, "Not authenticated")
        # aiohttp decodes headers as UTF-8 with surrogateescape: a latin-1 token gets a 401.
        received = credentials.strip().encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(received, self.token.encode()):
            return self._error(401, faults, "Invalid token")
        try:
            body, detail = validate_body(await request.read(), self._validator)
        except web.HTTPRequestEntityTooLarge:
            return self._error(413, faults, "Request body too large")
        return self._error(422, faults, detail) if body is None else body

    async def _handle_generate(self, request: web.Request) -> web.StreamResponse:
        """Answer one request; ``latency`` is the whole time to answer, work included: the answer
        is built first and the rest of the latency slept after, so the server's own CPU does not
        add to the latency a benchmark sets (a fixed sleep plus the work would)."""
        faults = self.faults
        self._stats["requests"] += 1
        if faults.requests_per_second is not None or faults.generations_per_minute is not None:
            counted = await _generations(request) if faults.generations_per_minute else 0
            wait = self._limit_wait(faults, counted)
            if wait is not None:
                self._stats["rate_limited"] += 1
                # Whole milliseconds, rounded up: never earlier than the buckets allow.
                seconds = max(faults.retry_after, math.ceil(wait * 1000) / 1000)
                return self._error(429, faults, "Rate limit exceeded", _seconds(seconds))
        if faults.max_concurrency is not None and self._in_flight >= faults.max_concurrency:
            return self._error(429, faults, "Too many concurrent requests")
        self._in_flight += 1
        self._stats["max_in_flight"] = max(self._stats["max_in_flight"], self._in_flight)
        try:
            loop = asyncio.get_running_loop()
            started = loop.time()
            outcome = self._decide(faults)
            delay = faults.latency
            if faults.latency_jitter > 0:
                delay += self._rng.uniform(0, faults.latency_jitter)
            if outcome == "hang":
                self._by_status["hang"] += 1  # now: the client may give up long before the answer
                delay += faults.hang
                await request.read()  # before the client gives up and closes the connection
            body = await self._admit(request, outcome, faults)
            if not isinstance(body, web.Response):
                try:
                    items = await self.engine.generate(body, faults)
                except EngineError as exc:
                    body = self._error(exc.status, faults, exc.detail, exc.retry_after)
                else:
                    work = functools.partial(encode_items, items, faults.framing)
                    big = len(items) > _EXECUTOR_THRESHOLD
                    payload = await loop.run_in_executor(None, work) if big else work()
            await asyncio.sleep(max(0.0, delay - (loop.time() - started)))
            if isinstance(body, web.Response):
                return body
            if outcome != "hang":  # counted above
                self._by_status["200" if outcome == "ok" else str(outcome)] += 1
            if outcome == "ok":
                self._stats["examples"] += len(body["examples"])
                self._stats["generations"] += len(items)
                if faults.framing == "json":
                    return web.Response(body=payload, content_type=CONTENT_TYPES["json"])
            return await _send(
                request, payload, CONTENT_TYPES[faults.framing], str(outcome), faults.hang
            )
        finally:
            self._in_flight -= 1

    async def _add_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        """Every response carries ``x-request-id``, as the real service's do, and names the
        engine (``X-Synth-Engine``)."""
        if "x-request-id" not in response.headers:
            response.headers["x-request-id"] = "req_" + uuid.uuid4().hex
        response.headers[ENGINE_HEADER] = self.engine.announce

    async def _close_engine(self, app: web.Application) -> None:
        await self.engine.close()

    async def _handle_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self._snapshot())

    async def _handle_reset(self, request: web.Request) -> web.Response:
        self.reset_stats()
        return web.json_response({"ok": True})

    async def _handle_faults(self, request: web.Request) -> web.Response:
        """GET the faults, or POST a JSON object of fields to change (400 if refused)."""
        if request.method == "POST":
            try:
                self.set_faults(**json.loads(await request.read() or b"{}"))
            except (TypeError, ValueError) as exc:
                return web.json_response({"detail": str(exc)}, status=400)
        return web.json_response(dataclasses.asdict(self.faults))


def _seconds(value: float) -> str:
    """A ``Retry-After`` value: whole seconds as an integer, else the fraction."""
    return str(int(value)) if value.is_integer() else repr(value)


async def _generations(request: web.Request) -> int:
    """The generations a request asks for (examples x multiplier); 0 when its body is not the
    documented shape (validation answers it later)."""
    try:
        body = json.loads(await request.read())
        return max(0, len(body["examples"]) * int(body["multiplier"]))
    except (web.HTTPException, ValueError, TypeError, KeyError):
        return 0


async def _send(
    request: web.Request, payload: bytes, content_type: str, outcome: str, pause: float
) -> web.StreamResponse:
    """Stream a 200 as ``outcome`` says, giving up quietly once the client has gone: ``drop``
    and ``stall`` declare the whole length and send half, then close the connection or pause
    ``pause`` seconds and send the rest; otherwise the body goes chunked in about eight pieces
    (at most 16 KiB each), and ``truncate`` ends it cleanly after its first half."""
    response = web.StreamResponse(status=200)
    response.content_type = content_type
    half = len(payload) // 2
    if outcome in ("drop", "stall"):
        response.content_length = len(payload)
        pieces = [payload[:half], payload[half:]]
    else:
        response.enable_chunked_encoding()
        payload = payload[:half] if outcome == "truncate" else payload
        size = min(max(1, -(-len(payload) // 8)), 16 * 1024)
        pieces = [payload[start : start + size] for start in range(0, len(payload), size)]
    with contextlib.suppress(ConnectionError):
        await response.prepare(request)
        for index, piece in enumerate(pieces):
            if index and outcome == "drop":
                if request.transport is not None:
                    request.transport.close()
                return response
            if index and outcome == "stall":
                await asyncio.sleep(pause)
                if request.transport is None or request.transport.is_closing():
                    return response
            await response.write(piece)
            await asyncio.sleep(0)
        await response.write_eof()
    return response


async def _handle_health(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


@web.middleware
async def _middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Admin endpoints (``/__*``) have no auth, so only loopback peers may use them; errors
    (403, 404, 405, ...) are answered as FastAPI does: ``{"detail": "..."}``."""
    try:
        if request.path.startswith("/__") and not is_loopback(request.remote or ""):
            raise web.HTTPForbidden(reason="admin endpoints are loopback only")
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        skip = ("content-type", "content-length")
        headers = {k: v for k, v in exc.headers.items() if k.lower() not in skip}
        return web.json_response({"detail": exc.reason}, status=exc.status, headers=headers)
