"""``SynthMapper``: the expansion engine as a batched async callable for ``ds.map``.

datasets runs async map functions concurrently and keeps their order; each call hands its
requests to threads of our own (the default executor has only cpus+4), one per request that may be
in flight (``max_concurrency``, or its ceiling when adaptive); a throttle gates their attempts.
``SynthMapper`` is a ``functools.partial`` of an ``async def`` function because that is what
``inspect.iscoroutinefunction`` recognises on every supported Python (not, on 3.11, an instance
with an async ``__call__``: datasets would then run nothing concurrently).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from typing import Any, ClassVar, NamedTuple

import datasets
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Features, Json, LargeList, List

from .budget import Budget
from .cache import RequestCache, request_key
from .client import CallInfo, SynthClient, check_api_key
from .config import ClientConfig, ExpandConfig, takes_options
from .errors import ConfigurationError, SynthError
from .layout import Layout, make_examples, plan_layout
from .progress import Progress
from .rows import Collected, RowBuilder
from .throttle import ConcurrencyLimit, Throttle, shared_limit

__all__ = ["ExpansionStats", "SynthMapper", "configure", "plan_for"]

WINDOW_ROUNDS = 8  # map calls admitted at once: this many rounds of the threads' requests


@dataclass
class ExpansionStats:
    """Counters of one process's run; ``summary()`` is the line logged at the end."""

    # One lock for every instance, held for a few additions: the counters alone pickle.
    _lock: ClassVar[threading.Lock] = threading.Lock()
    requests_sent: int = 0
    cache_hits: int = 0
    retries: int = 0
    rate_limited: int = 0
    failed_requests: int = 0
    seeds: int = 0
    targeted: int = 0
    returned: int = 0
    parse_errors: int = 0
    cast_errors: int = 0
    unlinked: int = 0
    empty_seeds: int = 0
    error_rows: int = 0
    requests_not_sent: int = 0  # left out by the budget (max_requests, max_generations)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    def summary(self) -> str:
        return (
            f"{self.requests_sent} requests sent, {self.cache_hits} answered from cache, "
            f"{self.retries} retries ({self.rate_limited} answered 429), "
            f"{self.failed_requests} failed; {self.error_rows} rows with an error; "
            f"{self.returned}/{self.targeted} generations returned/targeted for {self.seeds} "
            f"seeds; {self.parse_errors} parse errors, {self.cast_errors} type errors, "
            f"{self.unlinked} unlinked, {self.empty_seeds} seeds without generations"
            + (f"; {self.requests_not_sent} not sent (budget)" if self.requests_not_sent else "")
        )


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


def _null_index(column: str | None, row: int) -> ConfigurationError:
    return ConfigurationError(
        f"index_column {column!r} is null at row {row}", option="index_column"
    )


def _format_indices(indices: list[int]) -> str:
    lo, hi = min(indices), max(indices)
    if len(indices) == hi - lo + 1:
        return f"{lo}-{hi}" if hi > lo else str(lo)
    return ", ".join(map(str, indices[:10])) + (", …" if len(indices) > 10 else "")


class _Local(NamedTuple):  # what each process builds for itself: never crosses a fork or pickle
    client: SynthClient
    cache: RequestCache | None
    executor: ThreadPoolExecutor
    progress: Progress | None


class _Engine:
    """The config and layout, plus the per-process resources (built lazily)."""

    def __init__(
        self,
        config: ExpandConfig,
        api_key: str | None,  # None: each process reads COLLINEAR_API_KEY itself
        layout: Layout | None = None,
        stats: ExpansionStats | None = None,
    ) -> None:
        self.config = config
        self._api_key = api_key
        self.stats = ExpansionStats() if stats is None else stats
        self.layout = layout
        self._builder = RowBuilder(layout, config.multiplier) if layout is not None else None
        self.progress_seeds: int | None = None  # set by map_kwargs when a bar is wanted
        self._creator = os.getpid()  # a fork or an unpickled copy shows no bar
        # The run's budget, spent by every thread (on Ray, replaced by one shared by the actors).
        self.budget: Budget | None = None
        if config.max_requests is not None or config.max_generations is not None:
            self.budget = Budget(config.max_requests, config.max_generations)
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._local: _Local | None = None
        self._window: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None

    # Only configuration crosses a pickle (num_proc workers); resources are rebuilt there.
    def __reduce__(self) -> tuple[Any, ...]:
        return (_Engine, (self.config, self._api_key, self.layout, self.stats))

    def __repr__(self) -> str:
        return f"<synth_datasets engine {self.config.base_url} model {self.config.model_id}>"

    def bind(self, features: Features | None) -> Layout:
        self.layout = plan_for(self.config, features)
        self._builder = RowBuilder(self.layout, self.config.multiplier)
        return self.layout

    @property
    def builder(self) -> RowBuilder:
        if self._builder is None:
            raise ConfigurationError(
                "the mapper does not know the dataset's columns: use "
                "ds.map(mapper, **mapper.map_kwargs(ds))"
            )
        return self._builder

    def local(self) -> _Local:
        if self._pid != os.getpid():  # forked: never share sockets, sqlite handles or threads
            self._reset()
        if self._local is None:
            with self._lock:
                if self._local is None:
                    self._local = self._build()
        return self._local

    def _build(self) -> _Local:
        c = self.config
        if c.max_concurrency == "auto":  # the process's limit for this endpoint and token
            assert c.base_url is not None
            limit = shared_limit(c.base_url, check_api_key(self._api_key), c.threads)
        else:
            limit = ConcurrencyLimit(c.threads, c.threads)
        throttle = Throttle(limit, count=self.stats.add)
        client = SynthClient(
            self._api_key, **c.client.as_dict(), pool_maxsize=c.threads, throttle=throttle
        )
        # The bar is the creating process's: num_proc workers and Ray actors get no total.
        seeds = self.progress_seeds if self._pid == self._creator else None
        return _Local(
            client,
            RequestCache(c.cache_dir) if c.cache else None,
            ThreadPoolExecutor(c.threads, thread_name_prefix="synth_datasets"),
            Progress(seeds, c.multiplier, self.stats, throttle) if seeds else None,
        )

    def window(self, loop: asyncio.AbstractEventLoop) -> asyncio.Semaphore:
        """Map calls allowed past the start line at once (per event loop).

        datasets starts up to 1000 async map calls together; unbounded, the request threads run
        far ahead of the writer and parsed answers pile up in memory. A map call ends with its
        slowest request, and under a rate limit a few requests of each call wait out their
        Retry-After: with only two rounds of the threads' worth of requests admitted, threads
        then sat idle while the quota went unused. ``WINDOW_ROUNDS`` rounds keep them busy.
        """
        window = self._window
        if window is None or window[0] is not loop:
            per_call = self.config.requests_per_call
            size = max(2, -(-WINDOW_ROUNDS * self.config.threads // per_call))
            window = self._window = (loop, asyncio.Semaphore(size))
        return window[1]

    def _lease_seconds(self) -> float:
        """How long one request may take, every retry included: the lease other processes
        honour before they ask themselves."""
        c = self.config
        timeout = c.timeout if isinstance(c.timeout, tuple) else (c.timeout, c.timeout)
        per_try = sum(timeout) + max(c.backoff_max, c.retry_after_max + c.backoff_factor)
        return per_try * (c.max_retries + 1)

    def warn_not_cached(self) -> None:
        """One warning for the answers the cache could not store since the last one."""
        if self._local is not None and self._local.cache is not None:
            self._local.cache.warn_not_written()

    def close(self) -> None:
        if self._local is not None:
            self._local.executor.shutdown(wait=True)
            if self._local.progress is not None:
                self._local.progress.close()
            self._local.client.close()
            self.warn_not_cached()
            if self._local.cache is not None:
                self._local.cache.close()
        self._reset()

    def _body(self, examples: list[dict[str, Any]]) -> bytes:
        c = self.config
        return SynthClient.build_body(
            model_id=c.model_id, prompt=c.prompt, examples=examples, multiplier=c.multiplier
        )

    def prepare(
        self, batch: Mapping[str, Sequence[Any]], indices: Sequence[int]
    ) -> tuple[list[int], list[dict[str, Any]], list[tuple[int, int]]]:
        """A map batch's seed indices (the map's, or ``index_column``'s), examples and requests.

        A request holds ``request_size`` examples; with ``max_request_bytes`` it also ends before
        its body would pass the limit, and a row whose own request would pass it is refused.
        """
        c = self.config
        seeds = list(indices if c.index_column is None else batch[c.index_column])
        if None in seeds:
            raise _null_index(c.index_column, indices[seeds.index(None)])
        examples = make_examples(self.builder.layout, batch, seeds)
        n, size, limit = len(examples), c.request_size, c.max_request_bytes
        if limit is None:
            return seeds, examples, [(start, min(start + size, n)) for start in range(0, n, size)]
        overhead = len(self._body([{}])) - 2  # the body around its examples
        chunks: list[tuple[int, int]] = []
        start, total = 0, overhead
        for i, (example, index) in enumerate(zip(examples, seeds, strict=True)):
            try:
                own = len(json.dumps(example, ensure_ascii=False, allow_nan=False).encode("utf-8"))
            except (TypeError, ValueError) as exc:
                raise ConfigurationError(f"row {index} is not JSON-serialisable: {exc}") from None
            if overhead + own > limit:
                raise ConfigurationError(
                    f"row {index}: its request would be {overhead + own} bytes, over "
                    f"max_request_bytes ({limit}): shorten it or drop it",
                    option="max_request_bytes",
                )
            grow = own + (2 if i > start else 0)  # ", " between examples
            if i > start and (i - start == size or total + grow > limit):
                chunks.append((start, i))
                start, total, grow = i, overhead, own
            total += grow
        if n:
            chunks.append((start, n))
        return seeds, examples, chunks

    def _may_send(self, seed_rows: int) -> bool:
        """Whether the budget (if any) has room for one more request of ``seed_rows``."""
        budget = self.budget
        if budget is None or budget.take(seed_rows, seed_rows * self.config.multiplier):
            return True
        self.stats.add(requests_not_sent=1)
        return False

    def request(self, examples: list[dict[str, Any]], indices: list[int]) -> Collected:
        """One request for these examples (from cache when answered before), as rows.

        Positions in the result are relative to ``examples``. With ``on_error="raise"`` a
        failure raises, naming the seed rows; with ``"keep"`` it becomes one error row per seed.
        """
        client, cache, _, progress = self.local()
        c = self.config
        body = self._body(examples)
        endpoint = c.cache_endpoint or client.base_url
        key = request_key(endpoint, body, c.run_id) if cache is not None else ""
        # Another process (or thread) fetching the same request is waited for, not paid twice.
        items = cache.get_or_claim(key, self._lease_seconds()) if cache is not None else None
        if items is None and not self._may_send(len(indices)):
            if cache is not None:
                cache.release(key)
            return Collected([], [], [])  # never asked: no row, not an error
        self.stats.add(seeds=len(indices), targeted=len(indices) * c.multiplier)
        if items is not None:
            self.stats.add(cache_hits=1)
        else:
            try:
                items, info = client.post(body)
            except SynthError as exc:
                self.stats.add(failed_requests=1)
                exc.seed_indices = indices
                exc.message = f"{exc.message} [seed rows {_format_indices(indices)}]"
                if c.on_error == "raise":
                    raise
                if progress is not None:
                    progress.add_rows(len(indices))
                return self.builder.collect_errors(len(indices), exc.message)
            finally:
                if cache is not None and items is None:
                    cache.release(key)
            # A stream cut at an item boundary looks like a short answer: keep such an answer
            # out of the cache, so that a rerun asks again instead of keeping the loss.
            short = len(items) < len(examples) * c.multiplier
            if cache is not None:
                if short and _open_ended(info):
                    cache.release(key)
                else:  # a failed write is counted by the cache, never raised: the rows matter
                    cache.put(key, items, body=info.body, content_type=info.content_type)
            self.stats.add(requests_sent=1)
        rows, counts = self.builder.collect(examples, items)
        self.stats.add(returned=len(items), **counts)
        if progress is not None:
            progress.add_rows(len(rows.positions))
        return rows


async def _map_batch(
    engine: _Engine, batch: Mapping[str, Sequence[Any]], indices: Sequence[int]
) -> pa.Table | dict[str, list[Any]]:
    """One map batch: its requests run at once on the engine's threads; one Arrow table back.

    Every request of the batch is awaited before a failure is raised, so each one that
    succeeded is in the cache for the rerun.
    """
    loop = asyncio.get_running_loop()
    async with engine.window(loop):
        seeds, examples, chunks = engine.prepare(batch, indices)
        calls = [functools.partial(engine.request, examples[a:b], seeds[a:b]) for a, b in chunks]
        results = await _run_all(loop, engine.local().executor, calls)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    parts = [(a, rows) for (a, _), rows in zip(chunks, results, strict=True)]
    table, counts = engine.builder.to_arrow(parts, batch, seeds, examples)
    engine.stats.add(error_rows=table.num_rows - table.column("error").null_count, **counts)
    progress = engine.local().progress
    if progress is not None:
        progress.account(len(seeds))
    if hasattr(batch, "pa_table"):
        return table
    # IterableDataset.map takes no table from a batch of Python values: it gets a dict of lists,
    # which it encodes again, so a Json column goes back as objects (its text would be encoded
    # a second time and read back as a string).
    data = table.to_pydict()
    held = Features({c: f for c, f in engine.builder.layout.features.items() if _holds_json(f)})
    data.update(held.decode_batch({c: data[c] for c in held}) if held else {})
    return data


def _holds_json(feature: Any) -> bool:
    if isinstance(feature, Json):
        return True
    if isinstance(feature, dict):
        return any(_holds_json(f) for f in feature.values())
    return isinstance(feature, (List, LargeList)) and _holds_json(feature.feature)


async def _run_all(
    loop: asyncio.AbstractEventLoop,
    executor: ThreadPoolExecutor,
    calls: Sequence[Callable[[], Any]],
) -> list[Any]:
    """Run the calls on the threads; their results (or exceptions) once all have returned.

    The loop is woken once, by the last call to return, not once per call as with
    ``run_in_executor`` and ``gather``. Cancelled, it cancels the calls not started yet.
    """
    results: list[Any] = [None] * len(calls)
    if not calls:
        return results
    done = loop.create_future()
    left = [len(calls)]
    lock = threading.Lock()

    def finish() -> None:
        if not done.done():  # not cancelled meanwhile
            done.set_result(None)

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
                loop.call_soon_threadsafe(finish)

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


def plan_for(config: ExpandConfig, features: Features | None) -> Layout:
    """The output columns of an expansion with ``config`` of a dataset with ``features``."""
    return plan_layout(
        features,
        columns=list(config.columns) if config.columns is not None else None,
        generated_features=config.generated_features,
        keep_original=config.keep_original,
        index_column=config.index_column,
    )


def configure(
    options: dict[str, Any], *, client: SynthClient | None, api_key: str | None
) -> tuple[ExpandConfig, str | None]:
    """The checked config of an entry point's keywords, and the token it was given (if any).

    A ``client=`` brings its own connection options (base URL, timeout, retries); naming one
    of them beside it is refused rather than silently preferring one.
    """
    if client is not None:
        if api_key is not None:
            raise ConfigurationError("pass api_key= or client=, not both")
        both = sorted(set(options) & {f.name for f in fields(ClientConfig)})
        if both:
            raise ConfigurationError(
                f"{', '.join(both)} and client= are both given: set them on the SynthClient"
            )
        options = {**client.config.as_dict(), **options}
        api_key = client._api_key
    config = ExpandConfig(**options)
    if client is None:
        check_api_key(api_key)  # a missing token fails now, not in the first map batch
    return config, api_key


@takes_options(ExpandConfig)
class SynthMapper(functools.partial):  # type: ignore[type-arg]
    """The expansion as a batched async callable for ``Dataset.map`` / ``IterableDataset.map``.

    ``ds.map(mapper, **mapper.map_kwargs(ds))`` is the whole recipe. The API key comes from
    ``api_key=``, ``client=`` or ``COLLINEAR_API_KEY``.
    """

    def __new__(
        cls, *, client: SynthClient | None = None, api_key: str | None = None, **options: Any
    ) -> SynthMapper:
        config, api_key = configure(options, client=client, api_key=api_key)
        return super().__new__(cls, _map_batch, _Engine(config, api_key))

    def __reduce__(self) -> tuple[Any, ...]:  # the engine as it is, not through __new__'s checks
        return (functools.partial.__new__, (SynthMapper, _map_batch, self.engine))

    def __repr__(self) -> str:
        shown = (
            "base_url",
            "model_id",
            "multiplier",
            "request_size",
            "max_concurrency",
            "on_error",
        )
        values = ", ".join(f"{name}={getattr(self.engine.config, name)!r}" for name in shown)
        return f"SynthMapper({values})"

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
        return self.engine.bind(features)

    def map_kwargs(self, ds: datasets.Dataset | datasets.IterableDataset) -> dict[str, Any]:
        """The keyword arguments that make ``ds.map(mapper, **kwargs)`` the whole expansion."""
        if isinstance(ds, datasets.Dataset) and ds.format["type"] is not None:
            raise ConfigurationError(
                f"the dataset is formatted as {ds.format['type']!r}: map ds.with_format(None) "
                "(expand does this itself)"
            )
        if isinstance(ds, datasets.Dataset) and len(ds) == 0:
            raise ConfigurationError("the dataset is empty: there is nothing to expand")
        features = ds.features
        if features is None and isinstance(ds, datasets.IterableDataset):
            features = ds._resolve_features().features  # a first look at the data
        layout = self.bind(features)
        config = self.engine.config
        kwargs: dict[str, Any] = {
            "batched": True,
            "batch_size": config.map_batch_size,  # datasets' cost per batch paid once for many
            "with_indices": True,
            "remove_columns": list(layout.input_features),
            "features": layout.features,
        }
        # A dataset of unknown length: what one row asks for is checked.
        config.check_generations(len(ds) if isinstance(ds, datasets.Dataset) else 1)
        if not isinstance(ds, datasets.Dataset):
            return kwargs
        # A bar with an end; shown when datasets shows its own (HF_DATASETS_DISABLE_PROGRESS_BARS).
        if config.progress and not datasets.utils.are_progress_bars_disabled():
            self.engine.progress_seeds = len(ds)
        index = [config.index_column] if config.index_column is not None else []
        if index:  # a null index is refused before any request
            values = ds.select_columns(index).with_format("arrow")[:][index[0]]
            if values.null_count:
                raise _null_index(index[0], pc.index(values.is_null(), True).as_py())
        if config.max_request_bytes is not None:  # a row too large is refused before any request
            start = 0
            for batch in ds.select_columns([*layout.columns, *index]).iter(batch_size=1000):
                n = len(batch[layout.columns[0]])
                self.engine.prepare(batch, range(start, start + n))
                start += n
        kwargs["new_fingerprint"] = config.fingerprint(
            columns=list(layout.columns), features=layout.features.to_dict(), input=ds._fingerprint
        )
        # No cache means no cache, datasets' included; with on_error="keep" a cached map result
        # could hold rows of failed requests that a rerun should retry, and with a budget the
        # rows of a partial run, which a rerun continues (its own budget, cache hits free).
        if not config.cache or config.on_error == "keep" or self.engine.budget is not None:
            kwargs["load_from_cache_file"] = False
        kwargs["desc"] = "synth_datasets: expanding"
        return kwargs

    def close(self) -> None:
        """Stop the worker threads and close the connection pool."""
        self.engine.close()
