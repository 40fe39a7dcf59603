"""``expand_ray``: the same expansion on Ray Data, for work larger than one machine.

The engine is the one ``expand`` uses (a ``SynthMapper`` per actor: examples, request body, cache
key, retries, linking, parsing, typed rows and ``on_error``); Ray only moves the blocks. How a run
goes:

1. The seeds are executed once in their own order (``preserve_order``) and cut into new blocks
   that each hold whole requests: rows ``[j * C, (j + 1) * C)`` with ``C = request_size *
   requests_per_block``, plus a hidden column with every row's global index. So ``source_index``
   is the row's position in the input dataset (for ``from_huggingface(ds)``, its index in
   ``ds``), and requests are grouped exactly as ``expand`` groups them (``index //
   request_size``): the request bodies, hence the cache keys, are the same, so a cache filled by
   ``expand`` serves the Ray path and the other way round.
2. ``map_batches`` runs a callable class on ``concurrency`` actors, one block per call. Each actor
   holds one ``SynthClient`` (one connection pool), one ``RequestCache`` and a thread pool of
   ``max_concurrency`` threads, and sends the requests of a block concurrently.
3. The output blocks carry the Hugging Face features (and the generation config) in their Arrow
   schema, so ``to_huggingface`` (parquet in between) gives back a typed ``datasets.Dataset``.

The API token never enters the task graph: actors read ``COLLINEAR_API_KEY`` from their own
environment, which Ray fills from ``ray.init(runtime_env={"env_vars": {...}})`` (or, for a local
Ray started by this process, from the driver's environment).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import datasets
import pyarrow as pa
from datasets import Features

from .client import (
    DEFAULT_BASE_URL,
    DEFAULT_TIMEOUT,
    SynthClient,
    resolve_model_id,
    validate_base_url,
    validate_multiplier,
    validate_prompt,
)
from .errors import ConfigurationError
from .mapper import ON_ERROR, SynthMapper
from .provenance import attach_provenance, build_provenance, source_info
from .rows import Layout, plan_layout

if TYPE_CHECKING:
    import ray.data

__all__ = ["API_KEY_ENV", "INDEX_COLUMN", "expand_ray", "from_huggingface", "to_huggingface"]

logger = logging.getLogger("synth_datasets")

API_KEY_ENV = "COLLINEAR_API_KEY"
INDEX_COLUMN = "__synth_index"
"""The hidden column that carries each seed's global row index into the actors."""
PROVENANCE_KEY = b"synth_datasets"
"""Arrow schema metadata key of the generation config on every output block."""
INSTALL_HINT = "pip install 'synth-datasets[ray]'"

_NO_KEY = (
    "COLLINEAR_API_KEY is not set on the Ray worker{where}: give it to the workers through the "
    "environment, e.g. ray.init(runtime_env={{'env_vars': {{'COLLINEAR_API_KEY': "
    "os.environ['COLLINEAR_API_KEY']}}}}), or set it on every node before Ray starts"
)


def _import_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise ImportError(
            f"synth_datasets.ray needs Ray Data, which is not installed: {INSTALL_HINT}"
        ) from exc
    return ray


# -- configuration that crosses into the actors (no secret in here) ------------------------------


@dataclass(frozen=True)
class _ActorConfig:
    """Everything an actor needs; pickled into the task graph, so it never holds the token."""

    prompt: str
    multiplier: int
    model_id: str
    client_config: dict[str, Any]
    layout: Layout
    request_size: int
    max_concurrency: int
    on_error: str
    cache: bool
    cache_dir: str | None
    run_id: str | None
    num_rows: int
    provenance: str

    def __repr__(self) -> str:
        return (
            f"<synth_datasets ray config {self.client_config.get('base_url')} "
            f"model {self.model_id} x{self.multiplier}>"
        )


def _mapper(config: _ActorConfig) -> SynthMapper:
    """The engine ``expand`` uses, built through its public constructor on the worker.

    The client reads ``COLLINEAR_API_KEY`` from the worker's environment; the key stays in this
    process (actors are never pickled back).
    """
    options = config.client_config
    with SynthClient(
        None,
        options["base_url"],
        timeout=options["timeout"],
        max_retries=options["max_retries"],
        backoff_factor=options["backoff_factor"],
    ) as client:
        layout = config.layout
        mapper = SynthMapper(
            prompt=config.prompt,
            multiplier=config.multiplier,
            model_id=config.model_id,
            client=client,
            columns=list(layout.columns),
            generated_features=layout.generated_features,
            request_size=config.request_size,
            max_concurrency=config.max_concurrency,
            keep_original=layout.keep_original,
            on_error=config.on_error,
            cache=config.cache,
            cache_dir=config.cache_dir,
            run_id=config.run_id,
        )
    mapper.bind(layout.input_features)
    return mapper


class _ExpandBlocks:
    """The ``map_batches`` callable class: one engine (client, pool, cache, threads) per actor.

    Each call gets one block of whole requests (rows that share ``index // request_size``) and
    hands each request to the ``SynthMapper`` callable (the same one ``expand`` gives to
    ``Dataset.map``); they run at once on its ``max_concurrency`` threads. The rows of all of
    them come back as one Arrow table in the output schema.
    """

    def __init__(self, config: _ActorConfig) -> None:
        if not os.environ.get(API_KEY_ENV, "").strip():
            raise ConfigurationError(_NO_KEY.format(where=_node_hint()))
        self.config = config
        self.mapper = _mapper(config)
        self.features = config.layout.features
        self.input_features = config.layout.input_features
        self._formatter = datasets.formatting.PythonFormatter(features=self.input_features)
        self._warned = False

    def __repr__(self) -> str:
        return f"_ExpandBlocks({self.config!r})"

    def __call__(self, table: pa.Table) -> pa.Table:
        if table.num_rows == 0:
            return self._with_metadata(self.features.arrow_schema.empty_table())
        indices = [int(i) for i in table.column(INDEX_COLUMN).to_pylist()]
        # The rows as Dataset.map hands them to the mapper (datasets' own Python formatting).
        batch = self._formatter.format_batch(table.drop_columns([INDEX_COLUMN]))
        results = asyncio.run(self._requests(batch, indices))
        logger.debug("synth_datasets (ray actor): %s", self.mapper.stats.summary())
        return self._merge(results)

    async def _requests(
        self, batch: Mapping[str, list[Any]], indices: list[int]
    ) -> list[pa.Table | Mapping[str, list[Any]]]:
        """One mapper call per request; all awaited (so cached) before a failure is raised."""
        results = await asyncio.gather(
            *(
                self.mapper({name: values[a:b] for name, values in batch.items()}, indices[a:b])
                for a, b in self._groups(indices)
            ),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return results

    def _merge(self, results: Sequence[pa.Table | Mapping[str, list[Any]]]) -> pa.Table:
        """One table in the output schema from the requests' rows (dicts of lists or tables)."""
        parts: list[pa.Table] = []
        pending: dict[str, list[Any]] = {name: [] for name in self.features}
        for result in results:
            if isinstance(result, pa.Table):
                if pending["source_index"]:
                    parts.append(self._encode(pending))
                    pending = {name: [] for name in self.features}
                parts.append(result.cast(self.features.arrow_schema))
            else:
                for name, values in result.items():
                    pending[name].extend(values)
        if pending["source_index"] or not parts:
            parts.append(self._encode(pending))
        table = pa.concat_tables(parts) if len(parts) > 1 else parts[0]
        return self._with_metadata(table)

    def _groups(self, indices: Sequence[int]) -> list[tuple[int, int]]:
        """``(start, stop)`` of each run of rows with the same ``index // request_size``."""
        size = self.config.request_size
        groups: list[tuple[int, int]] = []
        start = 0
        for pos in range(1, len(indices) + 1):
            if pos == len(indices) or indices[pos] // size != indices[start] // size:
                groups.append((start, pos))
                start = pos
        last_group = (self.config.num_rows - 1) // size
        for start, stop in groups:
            group = indices[start] // size
            expected = size if group < last_group else self.config.num_rows - group * size
            if stop - start != expected and not self._warned:
                self._warned = True
                logger.warning(
                    "synth_datasets: a request group (rows %d-%d) reached an actor split across "
                    "blocks; its rows are right but its cache key differs from expand's",
                    group * size,
                    group * size + expected - 1,
                )
        return groups

    def _encode(self, rows: dict[str, list[Any]]) -> pa.Table:
        # datasets' own encoding (the one Dataset.map uses), so the Arrow types are the same.
        return datasets.Dataset.from_dict(rows, features=self.features).data.table

    def _with_metadata(self, table: pa.Table) -> pa.Table:
        metadata = dict(self.features.arrow_schema.metadata or {})
        metadata[PROVENANCE_KEY] = self.config.provenance.encode("utf-8")
        return table.replace_schema_metadata(metadata)


def _node_hint() -> str:
    try:
        import ray

        node = ray.get_runtime_context().get_node_id()
    except Exception:
        return ""
    return f" on node {node}"


# -- seeds → blocks of whole requests with a global index ----------------------------------------


def _remote_helpers(ray: Any) -> tuple[Any, Any]:
    """The two Ray tasks of the indexing pass.

    Defined in here so that cloudpickle ships them by value: the task workers then import only
    pyarrow, not this package (and datasets), which keeps the pass cheap on a fresh cluster.
    """

    def block_info(table: pa.Table) -> tuple[int, pa.Schema]:
        return table.num_rows, table.schema

    def make_block(first_index: int, pieces: Sequence[tuple[int, int]], *tables: pa.Table) -> Any:
        """Rows ``first_index ...`` cut from consecutive source blocks, plus the index column."""
        parts = [t.slice(o, n) for t, (o, n) in zip(tables, pieces, strict=True)]
        table = pa.concat_tables(parts, promote_options="default") if len(parts) > 1 else parts[0]
        index = pa.array(range(first_index, first_index + table.num_rows), type=pa.int64())
        return table.append_column(index_column, index)

    index_column = INDEX_COLUMN
    return ray.remote(block_info), ray.remote(make_block)


def _known_schema(dataset: ray.data.Dataset) -> pa.Schema | None:
    """The Arrow schema if Ray knows it without running the pipeline (else None)."""
    try:
        schema = dataset.schema(fetch_if_missing=False)
    except TypeError:  # older Ray: no fetch_if_missing
        return None
    schema = getattr(schema, "base_schema", schema)
    return schema if isinstance(schema, pa.Schema) else None


def _context(ray: Any, dataset: ray.data.Dataset) -> Any:
    """The ``DataContext`` a dataset executes with (older Ray: the current one)."""
    context = getattr(dataset, "context", None)
    return context if context is not None else ray.data.DataContext.get_current()


def _index_blocks(
    ray: Any,
    ray_dataset: ray.data.Dataset,
    rows_per_request: int,
    requests_per_block: int | None,
    concurrency: int,
    max_concurrency: int,
) -> tuple[ray.data.Dataset, int, pa.Schema]:
    """Execute the seeds in order once; re-cut them into blocks of whole requests."""
    options = _context(ray, ray_dataset).execution_options
    previous = options.preserve_order
    options.preserve_order = True  # the index is the row's place in the dataset's own order
    try:
        refs = ray_dataset.to_arrow_refs()
    finally:
        options.preserve_order = previous
    block_info, make_block = _remote_helpers(ray)
    infos = ray.get([block_info.remote(ref) for ref in refs])
    counts = [n for n, _ in infos]
    total = sum(counts)
    if total == 0:
        raise ConfigurationError("the dataset is empty: there is nothing to expand")
    schema = next(s for n, s in infos if n)
    n_requests = math.ceil(total / rows_per_request)
    if requests_per_block is None:
        # Enough requests per block to keep an actor's threads busy, and at least one block per
        # actor when the data is small.
        requests_per_block = max(1, min(4 * max_concurrency, math.ceil(n_requests / concurrency)))
    block_rows = rows_per_request * requests_per_block
    starts = [0]
    for n in counts:
        starts.append(starts[-1] + n)
    out_refs = []
    source = 0
    for first in range(0, total, block_rows):
        stop = min(first + block_rows, total)
        while starts[source + 1] <= first:
            source += 1
        pieces: list[tuple[int, int]] = []
        tables = []
        s = source
        while s < len(counts) and starts[s] < stop:
            lo = max(first, starts[s])
            hi = min(stop, starts[s + 1])
            if hi > lo:
                pieces.append((lo - starts[s], hi - lo))
                tables.append(refs[s])
            s += 1
        out_refs.append(make_block.remote(first, pieces, *tables))
    return ray.data.from_arrow_refs(out_refs), total, schema


# -- public API ------------------------------------------------------------------------------------


def expand_ray(
    ray_dataset: ray.data.Dataset,
    *,
    prompt: str,
    multiplier: int,
    model_id: str | None = None,
    api_key: str | None = None,
    base_url: str | None = None,
    columns: Sequence[str] | None = None,
    generated_features: Features | Mapping[str, Any] | None = None,
    request_size: int = 8,
    max_concurrency: int = 16,
    concurrency: int = 2,
    keep_original: bool = True,
    on_error: str = "raise",
    cache: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
    run_id: str | None = None,
    max_retries: int = 5,
    timeout: float | tuple[float, float] | None = None,
    backoff_factor: float = 0.5,
    requests_per_block: int | None = None,
    num_cpus: float = 0.5,
    features: Features | None = None,
    preserve_order: bool = False,
    source: Mapping[str, Any] | None = None,
) -> ray.data.Dataset:
    """Expand a Ray dataset on ``concurrency`` actors; returns a lazy ``ray.data.Dataset``.

    Same output columns, linking, parsing, ``on_error`` and request cache as ``expand``;
    ``source_index`` is the seed's position in ``ray_dataset``. The seeds are executed once,
    in order, when this is called; the expansion itself runs when the result is consumed
    (``write_parquet``, ``to_huggingface``, ``take_all``, ...).

    The token is read by every actor from ``COLLINEAR_API_KEY`` in its environment: pass it with
    ``ray.init(runtime_env={"env_vars": {"COLLINEAR_API_KEY": ...}})``. ``api_key=`` is refused,
    because arguments become part of Ray's task graph. ``base_url`` and ``model_id`` default to
    the driver's ``COLLINEAR_BASE_URL`` / ``COLLINEAR_MODEL_ID``.

    Ray-specific options: ``concurrency`` actors, each with ``max_concurrency`` requests in
    flight and ``num_cpus`` CPUs reserved (the work is waiting on HTTP); ``requests_per_block``
    requests per block (default: ``4 * max_concurrency``, fewer for small data);
    ``features``: the input's Hugging Face features when the Arrow schema does not carry them;
    ``preserve_order=True`` (or the current ``DataContext``'s ``preserve_order``) yields rows in
    ``expand``'s order (grouped by ``source_index``) at some cost in throughput; ``source``:
    what to record about the input in the provenance (name, split, fingerprint, ...).
    """
    if api_key is not None:
        raise ConfigurationError(
            "expand_ray does not take api_key=: arguments are serialised into Ray's task graph. "
            "Give the token to the workers through the environment instead: "
            "ray.init(runtime_env={'env_vars': {'COLLINEAR_API_KEY': ...}}) (or set "
            "COLLINEAR_API_KEY before a local Ray starts)"
        )
    ray = _import_ray()
    if isinstance(ray_dataset, (datasets.Dataset, datasets.IterableDataset)):
        raise ConfigurationError(
            "expand_ray takes a ray.data.Dataset: convert with "
            "synth_datasets.ray.from_huggingface(ds), or use synth_datasets.expand"
        )
    if not isinstance(ray_dataset, ray.data.Dataset):
        raise ConfigurationError(
            f"expand_ray takes a ray.data.Dataset, got {type(ray_dataset).__name__}"
        )
    validate_prompt(prompt)
    validate_multiplier(multiplier)
    for name, value in (
        ("request_size", request_size),
        ("max_concurrency", max_concurrency),
        ("concurrency", concurrency),
        ("requests_per_block", 1 if requests_per_block is None else requests_per_block),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigurationError(f"{name} must be an int >= 1, got {value!r}")
    if on_error not in ON_ERROR:
        raise ConfigurationError(f"on_error must be 'raise' or 'keep', got {on_error!r}")
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise ConfigurationError(f"max_retries must be an int >= 0, got {max_retries!r}")
    resolved_model = resolve_model_id(model_id)
    resolved_url = validate_base_url(
        base_url or os.environ.get("COLLINEAR_BASE_URL") or DEFAULT_BASE_URL
    )
    timeout = DEFAULT_TIMEOUT if timeout is None else timeout
    client_config: dict[str, Any] = {
        "base_url": resolved_url,
        "timeout": timeout if isinstance(timeout, tuple) else (min(timeout, 10.0), timeout),
        "max_retries": max_retries,
        "backoff_factor": backoff_factor,
    }

    def plan(schema: pa.Schema) -> Layout:
        if INDEX_COLUMN in schema.names:
            raise ConfigurationError(f"the dataset already has a column named {INDEX_COLUMN!r}")
        known = features if features is not None else Features.from_arrow_schema(schema)
        missing = [c for c in schema.names if c not in known]
        if missing:
            raise ConfigurationError(f"features= has no entry for column(s) {missing}")
        return plan_layout(
            Features({c: known[c] for c in schema.names}),
            columns=list(columns) if columns is not None else None,
            generated_features=generated_features,
            keep_original=keep_original,
        )

    # Column names are checked on the schema before the seeds are executed, when Ray knows it.
    schema = _known_schema(ray_dataset)
    layout = plan(schema) if schema is not None else None
    blocks, total, block_schema = _index_blocks(
        ray, ray_dataset, request_size, requests_per_block, concurrency, max_concurrency
    )
    if layout is None:
        layout = plan(block_schema)
    provenance = _provenance(
        ray,
        prompt=prompt,
        multiplier=multiplier,
        model_id=resolved_model,
        client_config=client_config,
        layout=layout,
        request_size=request_size,
        max_concurrency=max_concurrency,
        concurrency=concurrency,
        on_error=on_error,
        run_id=run_id,
        num_rows=total,
        source=source,
    )
    config = _ActorConfig(
        prompt=prompt,
        multiplier=multiplier,
        model_id=resolved_model,
        client_config=client_config,
        layout=layout,
        request_size=request_size,
        max_concurrency=max_concurrency,
        on_error=on_error,
        cache=cache,
        cache_dir=os.fspath(cache_dir) if cache_dir is not None else None,
        run_id=run_id,
        num_rows=total,
        provenance=provenance,
    )
    if preserve_order:  # our own dataset's context (a copy of the current one)
        _context(ray, blocks).execution_options.preserve_order = True
    return blocks.map_batches(
        _ExpandBlocks,
        fn_constructor_kwargs={"config": config},
        batch_size=None,  # one block = whole requests; never split a request across calls
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=concurrency),
        num_cpus=num_cpus,
    )


def _provenance(
    ray: Any,
    *,
    prompt: str,
    multiplier: int,
    model_id: str,
    client_config: dict[str, Any],
    layout: Layout,
    request_size: int,
    max_concurrency: int,
    concurrency: int,
    on_error: str,
    run_id: str | None,
    num_rows: int,
    source: Mapping[str, Any] | None,
) -> str:
    """The generation config ``expand`` records, built by the same function, plus Ray's part."""
    value = build_provenance(
        base_url=client_config["base_url"],
        model_id=model_id,
        prompt=prompt,
        multiplier=multiplier,
        request_size=request_size,
        max_concurrency=max_concurrency,
        on_error=on_error,
        run_id=run_id,
        layout=layout,
        source=source_info(None, {"num_rows": num_rows, **dict(source or {})}),
    )
    value["engine"] = {"name": "ray", "ray_version": ray.__version__, "actors": concurrency}
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def to_huggingface(
    ray_dataset: ray.data.Dataset,
    directory: str | os.PathLike[str] | None = None,
    *,
    sort: bool = True,
) -> datasets.Dataset:
    """A ``datasets.Dataset`` of an ``expand_ray`` result, through parquet files.

    The parquet files go to ``directory`` (which must be empty or absent), or to a temporary
    folder removed afterwards. The features and the generation config recorded by
    ``expand_ray`` come back with the data; ``sort=True`` orders the rows by ``source_index``
    (stable: server order within a seed; unlinked rows last).
    """
    import pyarrow.parquet as pq

    _import_ray()
    temporary = directory is None
    path = Path(tempfile.mkdtemp(prefix="synth-ray-")) if temporary else Path(directory)
    try:
        if path.exists() and any(path.iterdir()) and not temporary:
            raise ConfigurationError(f"{path} is not empty: give an empty or new folder")
        ray_dataset.write_parquet(str(path))
        files = sorted(str(f) for f in path.glob("*.parquet"))
        if not files:
            raise ConfigurationError("the Ray dataset wrote no parquet file (is it empty?)")
        out = datasets.Dataset.from_parquet(files)
        assert isinstance(out, datasets.Dataset)
        if sort and "source_index" in out.column_names:
            out = _sorted_by_source(out)
        metadata = pq.read_schema(files[0]).metadata or {}
        if PROVENANCE_KEY in metadata:
            attach_provenance(out, json.loads(metadata[PROVENANCE_KEY]))
        return out
    finally:
        if temporary:
            shutil.rmtree(path, ignore_errors=True)


def _sorted_by_source(dataset: datasets.Dataset) -> datasets.Dataset:
    """Rows by ``source_index``, stable (server order within a seed kept), nulls last."""
    import numpy as np
    import pyarrow.compute as pc

    column = dataset.data.column("source_index")
    keys = pc.fill_null(column, pa.scalar(2**63 - 1, pa.int64())).to_numpy()
    order = np.argsort(keys, kind="stable")
    if bool((order == np.arange(len(order))).all()):
        return dataset
    return dataset.select(order)


def from_huggingface(
    dataset: datasets.Dataset, *, override_num_blocks: int | None = None
) -> ray.data.Dataset:
    """A Ray dataset of the rows of ``dataset``, in its order (what ``expand_ray`` indexes).

    What ``ray.data.from_huggingface`` does for a local dataset, without its first step: that
    one tries to re-load the dataset by name (for a dataset loaded with a packaged builder such
    as ``"json"`` it re-reads files from the working directory) to find a Hub parquet export of
    it, whose rows need not be exactly those of ``dataset``.
    """
    ray = _import_ray()
    if not isinstance(dataset, datasets.Dataset):
        raise ConfigurationError(
            f"from_huggingface takes a datasets.Dataset, got {type(dataset).__name__}; for an "
            "IterableDataset use ray.data.from_huggingface"
        )
    table = dataset.with_format("arrow")[:]  # applies any indices mapping (select, shuffle)
    return ray.data.from_arrow(table, override_num_blocks=override_num_blocks)
