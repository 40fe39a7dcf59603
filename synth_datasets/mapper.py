"""``SynthMapper``: the expansion engine as a batched async callable for ``ds.map``.

One map batch is several requests of at most ``request_size`` examples (about 1024 output rows
per call by default: datasets' own cost per call is then paid rarely). datasets runs async map
functions concurrently and keeps their order; each call hands its requests to a thread pool of
``max_concurrency`` workers (the default executor has only cpus+4 threads) that share one HTTP
connection pool of the same size, and returns its rows as one Arrow table.

``SynthMapper`` is a ``functools.partial`` of an ``async def`` function: that is what
``inspect.iscoroutinefunction`` recognises on every supported Python (3.11 does not see an
instance with an async ``__call__`` as a coroutine function, and datasets would then run nothing
concurrently).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import datasets
import pyarrow as pa
from datasets import Features

from ._version import __version__
from .cache import RequestCache, request_key
from .client import (
    CallInfo,
    SynthClient,
    resolve_model_id,
    validate_multiplier,
    validate_prompt,
)
from .errors import ConfigurationError, SynthError
from .layout import Layout, make_examples, plan_layout
from .rows import Collected, RowBuilder

__all__ = ["ExpansionStats", "SynthMapper"]

logger = logging.getLogger("synth_datasets")

ON_ERROR = ("raise", "keep")
_ROWS_PER_MAP_CALL = 1024


@dataclass
class ExpansionStats:
    """Counters of one process's run; ``summary()`` is the line logged at the end."""

    requests_sent: int = 0
    cache_hits: int = 0
    retries: int = 0
    failed_requests: int = 0
    seeds: int = 0
    targeted: int = 0
    returned: int = 0
    parse_errors: int = 0
    cast_errors: int = 0
    unlinked: int = 0
    empty_seeds: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    def as_dict(self) -> dict[str, int]:
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def summary(self) -> str:
        return (
            f"{self.requests_sent} requests sent, {self.cache_hits} answered from cache, "
            f"{self.retries} retried, {self.failed_requests} failed; "
            f"{self.returned}/{self.targeted} generations returned/targeted for {self.seeds} "
            f"seeds; {self.parse_errors} parse errors, {self.cast_errors} type errors, "
            f"{self.unlinked} unlinked, {self.empty_seeds} seeds without generations"
        )

    def __getstate__(self) -> dict[str, int]:
        return self.as_dict()

    def __setstate__(self, state: dict[str, int]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


def _open_ended(info: CallInfo) -> bool:
    """Whether the answer was a stream (SSE without its [DONE], or NDJSON) that may be cut."""
    body = info.body
    if b"[DONE]" in body[-64:]:
        return False
    content_type = (info.content_type or "").lower()
    if any(kind in content_type for kind in ("event-stream", "ndjson", "jsonl")):
        return True
    head = body.lstrip()[:1]
    return head not in (b"[", b"{") or (head == b"{" and b"\n{" in body)


def _format_indices(indices: Sequence[int]) -> str:
    if not indices:
        return "none"
    lo, hi = min(indices), max(indices)
    if len(indices) == hi - lo + 1:
        return f"{lo}-{hi}" if hi > lo else str(lo)
    shown = ", ".join(map(str, list(indices)[:10]))
    return shown + (", …" if len(indices) > 10 else "")


class _Engine:
    """Configuration plus the per-process resources (client, cache, threads), built lazily."""

    def __init__(
        self,
        *,
        prompt: str,
        multiplier: int,
        model_id: str,
        client_config: dict[str, Any],
        explicit_api_key: str | None,
        columns: Sequence[str] | None,
        generated_features: Features | Mapping[str, Any] | None,
        request_size: int,
        requests_per_map_batch: int,
        index_column: str | None,
        max_request_bytes: int | None,
        max_concurrency: int,
        keep_original: bool,
        on_error: str,
        cache: bool,
        cache_dir: str | None,
        run_id: str | None,
    ) -> None:
        self.prompt = prompt
        self.multiplier = multiplier
        self.model_id = model_id
        self.client_config = client_config
        self._api_key = explicit_api_key
        self.columns = list(columns) if columns is not None else None
        self.generated_features = (
            Features(dict(generated_features)) if generated_features is not None else None
        )
        self.request_size = request_size
        self.requests_per_map_batch = requests_per_map_batch
        self.index_column = index_column
        self.max_request_bytes = max_request_bytes
        self.max_concurrency = max_concurrency
        self.keep_original = keep_original
        self.on_error = on_error
        self.cache_enabled = cache
        self.cache_dir = cache_dir
        self.run_id = run_id
        self.layout: Layout | None = None
        self.stats = ExpansionStats()
        self._reset_resources()

    def _reset_resources(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._client: SynthClient | None = None
        self._cache: RequestCache | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._builder: RowBuilder | None = None
        self._window: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None

    # Only configuration crosses a pickle (num_proc workers); resources are rebuilt there.
    def __getstate__(self) -> dict[str, Any]:
        local = ("_lock", "_client", "_cache", "_executor", "_builder", "_pid", "_window")
        return {k: v for k, v in self.__dict__.items() if k not in local}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset_resources()

    def __repr__(self) -> str:
        return f"<synth_datasets engine {self.client_config.get('base_url')} model {self.model_id}>"

    # -- resources -------------------------------------------------------------------------------

    def _ensure(self) -> tuple[SynthClient, RequestCache | None, RowBuilder]:
        if self._pid != os.getpid():  # forked: never share sockets or sqlite handles
            self._reset_resources()
        if self._client is None or self._builder is None:
            with self._lock:
                if self._client is None:
                    self._client = SynthClient(
                        self._api_key, **self.client_config, pool_maxsize=self.max_concurrency
                    )
                if self.cache_enabled and self._cache is None:
                    self._cache = RequestCache(self.cache_dir)
                if self._builder is None:
                    if self.layout is None:
                        raise ConfigurationError(
                            "the mapper does not know the dataset's columns: use "
                            "ds.map(mapper, **mapper.map_kwargs(ds))"
                        )
                    self._builder = RowBuilder(self.layout, self.multiplier)
        return self._client, self._cache, self._builder

    def window(self, loop: asyncio.AbstractEventLoop) -> asyncio.Semaphore:
        """Map calls allowed past the start line at once (per event loop).

        datasets starts up to 1000 async map calls together; unbounded, the request threads run
        far ahead of the writer and parsed answers pile up in memory. Two rounds of the thread
        pool's worth of requests keep every thread busy.
        """
        window = self._window
        if window is None or window[0] is not loop:
            size = max(2, -(-2 * self.max_concurrency // self.requests_per_map_batch))
            window = self._window = (loop, asyncio.Semaphore(size))
        return window[1]

    def executor(self) -> ThreadPoolExecutor:
        if self._pid != os.getpid():
            self._reset_resources()
        if self._executor is None:
            with self._lock:
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(
                        max_workers=self.max_concurrency, thread_name_prefix="synth_datasets"
                    )
        return self._executor

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        if self._client is not None:
            self._client.close()
        self._reset_resources()

    # -- one request per request_size rows; several requests per map batch --------------------

    def examples(
        self, batch: Mapping[str, Sequence[Any]], indices: Sequence[int]
    ) -> list[dict[str, Any]]:
        _, _, builder = self._ensure()
        return make_examples(builder.layout, batch, indices)

    def seed_indices(self, batch: Mapping[str, Sequence[Any]], indices: Sequence[int]) -> list[int]:
        """Each row's index in the whole input: the map's, or the ``index_column``'s."""
        if self.index_column is None:
            return list(indices)
        values = list(batch[self.index_column])
        if any(v is None for v in values):
            raise ConfigurationError(f"index_column {self.index_column!r} has a null value")
        return values

    def chunks(self, examples: list[dict[str, Any]], indices: list[int]) -> list[tuple[int, int]]:
        """Where the requests of a map batch start and end.

        ``request_size`` examples each; with ``max_request_bytes`` a request also ends before
        its body would pass the limit, and an example too large on its own is refused.
        """
        n, size, limit = len(examples), self.request_size, self.max_request_bytes
        if limit is None:
            return [(start, min(start + size, n)) for start in range(0, n, size)]
        sizes = self.check_sizes(examples, indices)
        overhead = self._body_overhead()
        out: list[tuple[int, int]] = []
        start, total = 0, overhead
        for i, example_size in enumerate(sizes):
            grow = example_size + (2 if i > start else 0)  # ", " between examples
            if i > start and (i - start == size or total + grow > limit):
                out.append((start, i))
                start, total, grow = i, overhead, example_size
            total += grow
        if n:
            out.append((start, n))
        return out

    def _body_overhead(self) -> int:
        """Bytes of a request body around its examples."""
        client, _, _ = self._ensure()
        body = client.build_body(
            model_id=self.model_id, prompt=self.prompt, examples=[{}], multiplier=self.multiplier
        )
        return len(body) - 2

    def check_sizes(self, examples: list[dict[str, Any]], indices: Sequence[int]) -> list[int]:
        """Each example's encoded size; a row whose own request would pass the limit is refused."""
        limit = self.max_request_bytes
        overhead = self._body_overhead()
        sizes = []
        for example, index in zip(examples, indices, strict=True):
            try:
                n = len(json.dumps(example, ensure_ascii=False, allow_nan=False).encode("utf-8"))
            except (TypeError, ValueError) as exc:
                raise ConfigurationError(f"row {index} is not JSON-serialisable: {exc}") from None
            if limit is not None and overhead + n > limit:
                raise ConfigurationError(
                    f"row {index}: its request would be {overhead + n} bytes, over "
                    f"max_request_bytes={limit}: shorten it or drop it"
                )
            sizes.append(n)
        return sizes

    def request(self, examples: list[dict[str, Any]], indices: list[int]) -> Collected:
        """One request for these examples (from cache when answered before), as rows.

        Positions in the result are relative to ``examples``. With ``on_error="raise"`` a
        failure raises, naming the seed rows; with ``"keep"`` it becomes one error row per seed.
        """
        client, cache, builder = self._ensure()
        body = client.build_body(
            model_id=self.model_id,
            prompt=self.prompt,
            examples=examples,
            multiplier=self.multiplier,
        )
        key = request_key(client.base_url, body, self.run_id) if cache is not None else ""
        items = cache.get(key) if cache is not None else None
        self.stats.add(seeds=len(indices), targeted=len(indices) * self.multiplier)
        if items is not None:
            self.stats.add(cache_hits=1)
        else:
            try:
                items, info = client.post(body)
            except SynthError as exc:
                self.stats.add(failed_requests=1)
                exc.seed_indices = indices
                exc.message = f"{exc.message} [seed rows {_format_indices(indices)}]"
                if self.on_error == "raise":
                    raise
                return builder.collect_errors(len(indices), exc.message)
            # A stream cut at an item boundary looks like a short answer: keep such an answer
            # out of the cache, so that a rerun asks again instead of keeping the loss.
            short = len(items) < len(examples) * self.multiplier
            if cache is not None and not (short and _open_ended(info)):
                cache.put(key, items, body=info.body, content_type=info.content_type)
            self.stats.add(requests_sent=1, retries=info.attempts - 1)
        rows, counts = builder.collect(examples, items)
        self.stats.add(returned=len(items), **counts)
        return rows

    def emit(
        self,
        batch: Mapping[str, Sequence[Any]],
        indices: list[int],
        examples: list[dict[str, Any]],
        parts: Sequence[tuple[int, Collected]],
    ) -> pa.Table | dict[str, list[Any]]:
        """The map batch's rows, request after request, as an Arrow table of the output schema.

        ``IterableDataset.map`` takes no table from a batch of Python values: that one case gets
        the table's values as a dict of lists.
        """
        _, _, builder = self._ensure()
        table, counts = builder.to_arrow(parts, batch, indices, examples)
        self.stats.add(**counts)
        return table if hasattr(batch, "pa_table") else table.to_pydict()

    def fingerprint(self, input_fingerprint: str | None) -> str:
        """What datasets' map cache is keyed by: public config only, never the token."""
        assert self.layout is not None
        config = {
            "library": __version__,
            "base_url": self.client_config.get("base_url"),
            "model_id": self.model_id,
            "prompt": self.prompt,
            "multiplier": self.multiplier,
            "columns": list(self.layout.columns),
            "features": self.layout.features.to_dict(),
            "request_size": self.request_size,
            "on_error": self.on_error,
            "run_id": self.run_id,
            "index_column": self.index_column,
            "max_request_bytes": self.max_request_bytes,
            "input": input_fingerprint,
        }
        text = json.dumps(config, sort_keys=True, default=str)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


async def _map_batch(
    engine: _Engine, batch: Mapping[str, Sequence[Any]], indices: Sequence[int]
) -> pa.Table | dict[str, list[Any]]:
    """One map batch: its requests run at once on the engine's threads.

    Every request of the batch is awaited before a failure is raised, so each one that
    succeeded is in the cache for the rerun.
    """
    loop = asyncio.get_running_loop()
    async with engine.window(loop):
        indices = engine.seed_indices(batch, indices)
        examples = engine.examples(batch, indices)
        chunks = engine.chunks(examples, indices)
        results = await _run_all(
            loop,
            engine.executor(),
            [functools.partial(engine.request, examples[a:b], indices[a:b]) for a, b in chunks],
        )
    for result in results:
        if isinstance(result, BaseException):
            raise result
    parts = [(a, rows) for (a, _), rows in zip(chunks, results, strict=True)]
    return engine.emit(batch, indices, examples, parts)  # type: ignore[arg-type]


async def _run_all(
    loop: asyncio.AbstractEventLoop,
    executor: ThreadPoolExecutor,
    calls: Sequence[Callable[[], Any]],
) -> list[Any]:
    """Run the calls on the threads; their results (or exceptions) once all have returned.

    The loop is woken once, by the last call to return, not once per call as with
    ``run_in_executor`` and ``gather``, whose futures and callbacks cost about 50 us of CPU a
    request at thousands of requests. Cancelled, it cancels the calls not started yet.
    """
    results: list[Any] = [None] * len(calls)
    if not calls:
        return results
    done = loop.create_future()
    left = [len(calls)]
    lock = threading.Lock()

    def run(i: int, call: Callable[[], Any]) -> None:
        try:
            results[i] = call()
        except BaseException as exc:  # handed to the awaiting task, raised there
            results[i] = exc
        with lock:
            left[0] -= 1
            last = left[0] == 0
        if last:
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
                loop.call_soon_threadsafe(_finish, done)

    futures = []
    try:
        for i, call in enumerate(calls):
            futures.append(executor.submit(run, i, call))
        await done
    except BaseException:
        # Cancelled (datasets cancels every pending map call on a failure or Ctrl-C), or the
        # pool refused work: the requests not started yet are never sent.
        for future in futures:
            future.cancel()
        raise
    return results


def _finish(done: asyncio.Future[None]) -> None:
    if not done.done():  # not cancelled meanwhile
        done.set_result(None)


def _rebuild(engine: _Engine) -> SynthMapper:
    return functools.partial.__new__(SynthMapper, _map_batch, engine)


class SynthMapper(functools.partial):  # type: ignore[type-arg]
    """The expansion as a batched async callable for ``Dataset.map`` / ``IterableDataset.map``.

    ``ds.map(mapper, **mapper.map_kwargs(ds))`` is the whole recipe. The API key comes from
    ``api_key=``, ``client=`` or ``COLLINEAR_API_KEY``.
    """

    def __new__(
        cls,
        *,
        prompt: str,
        multiplier: int,
        model_id: str | None = None,
        client: SynthClient | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        columns: Sequence[str] | None = None,
        generated_features: Features | Mapping[str, Any] | None = None,
        request_size: int = 8,
        max_concurrency: int = 16,
        keep_original: bool = True,
        on_error: str = "raise",
        cache: bool = True,
        cache_dir: str | os.PathLike[str] | None = None,
        run_id: str | None = None,
        index_column: str | None = None,
        max_request_bytes: int | None = None,
        requests_per_map_batch: int | None = None,
        max_retries: int | None = None,
        timeout: float | tuple[float, float] | None = None,
    ) -> SynthMapper:
        validate_prompt(prompt)
        validate_multiplier(multiplier)
        if requests_per_map_batch is None:
            # About a thousand output rows per map call: datasets' own cost per call is paid
            # rarely, and far fewer calls than its 1000-task window (past which it keeps
            # finished outputs in memory, measured +370 MB at 100k examples x4).
            per_request = max(1, request_size * multiplier) if isinstance(request_size, int) else 1
            requests_per_map_batch = max(1, -(-_ROWS_PER_MAP_CALL // per_request))
        for name, value in (
            ("request_size", request_size),
            ("max_concurrency", max_concurrency),
            ("requests_per_map_batch", requests_per_map_batch),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"{name} must be an int >= 1, got {value!r}")
        if max_request_bytes is not None and (
            isinstance(max_request_bytes, bool)
            or not isinstance(max_request_bytes, int)
            or max_request_bytes < 1
        ):
            raise ConfigurationError(
                f"max_request_bytes must be an int >= 1 (or None), got {max_request_bytes!r}"
            )
        if on_error not in ON_ERROR:
            raise ConfigurationError(f"on_error must be 'raise' or 'keep', got {on_error!r}")
        if client is None:
            client = SynthClient(api_key, base_url)  # validates the key and URL now, not per batch
            explicit_key = api_key
        else:
            explicit_key = client._api_key
        client_config: dict[str, Any] = {
            "base_url": client.base_url,
            "timeout": timeout if timeout is not None else client.timeout,
            "max_retries": max_retries if max_retries is not None else client.max_retries,
            "backoff_factor": client.backoff_factor,
            "backoff_max": client.backoff_max,
            "retry_after_max": client.retry_after_max,
        }
        engine = _Engine(
            prompt=prompt,
            multiplier=multiplier,
            model_id=resolve_model_id(model_id),
            client_config=client_config,
            explicit_api_key=explicit_key,
            columns=columns,
            generated_features=generated_features,
            request_size=request_size,
            requests_per_map_batch=requests_per_map_batch,
            index_column=index_column,
            max_request_bytes=max_request_bytes,
            max_concurrency=max_concurrency,
            keep_original=keep_original,
            on_error=on_error,
            cache=cache,
            cache_dir=os.fspath(cache_dir) if cache_dir is not None else None,
            run_id=run_id,
        )
        self = super().__new__(cls, _map_batch, engine)
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self.engine,))

    def __repr__(self) -> str:
        e = self.engine
        return (
            f"SynthMapper(base_url={e.client_config.get('base_url')!r}, model_id={e.model_id!r}, "
            f"multiplier={e.multiplier}, request_size={e.request_size}, "
            f"max_concurrency={e.max_concurrency}, on_error={e.on_error!r})"
        )

    @property
    def engine(self) -> _Engine:
        return self.args[0]  # type: ignore[no-any-return]

    @property
    def stats(self) -> ExpansionStats:
        return self.engine.stats

    @property
    def layout(self) -> Layout | None:
        return self.engine.layout

    def bind(self, features: Features | None) -> Layout:
        """Plan the output columns for input ``features``; every name is checked here."""
        e = self.engine
        e.layout = plan_layout(
            features,
            columns=e.columns,
            generated_features=e.generated_features,
            keep_original=e.keep_original,
            index_column=e.index_column,
        )
        e._builder = None
        return e.layout

    def map_kwargs(self, ds: datasets.Dataset | datasets.IterableDataset) -> dict[str, Any]:
        """The keyword arguments that make ``ds.map(mapper, **kwargs)`` the whole expansion."""
        features = ds.features
        if features is None and isinstance(ds, datasets.IterableDataset):
            features = ds._resolve_features().features  # a first look at the data
        layout = self.bind(features)
        if self.engine.max_request_bytes is not None and isinstance(ds, datasets.Dataset):
            self._check_sizes(ds, layout)
        kwargs: dict[str, Any] = {
            "batched": True,
            # Several requests per map batch: datasets' own cost per batch (formatting, task,
            # write) is then paid once for all of them; the requests still run concurrently.
            "batch_size": self.engine.request_size * self.engine.requests_per_map_batch,
            "with_indices": True,
            "remove_columns": list(layout.input_features),
            "features": layout.features,
        }
        if isinstance(ds, datasets.Dataset):
            kwargs["new_fingerprint"] = self.engine.fingerprint(ds._fingerprint)
            # No cache means no cache, datasets' included; and with on_error="keep" a cached
            # map result could hold rows of failed requests that a rerun should retry (our
            # request cache still answers every request that succeeded).
            if not self.engine.cache_enabled or self.engine.on_error == "keep":
                kwargs["load_from_cache_file"] = False
            kwargs["desc"] = "synth_datasets: expanding"
        return kwargs

    def _check_sizes(self, ds: datasets.Dataset, layout: Layout) -> None:
        """Refuse, before any request, a row too large for ``max_request_bytes`` on its own."""
        e = self.engine
        start = 0
        for batch in ds.select_columns(list(layout.columns)).iter(batch_size=1000):
            n = len(batch[layout.columns[0]])
            indices = list(range(start, start + n))
            if e.index_column is not None:
                indices = list(ds[start : start + n][e.index_column])
            e.check_sizes(make_examples(layout, batch, indices), indices)
            start += n

    def close(self) -> None:
        """Stop the worker threads and close the connection pool."""
        self.engine.close()
