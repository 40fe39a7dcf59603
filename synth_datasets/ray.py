"""``expand_ray``: the same expansion on Ray Data, for work larger than one machine.

Each actor runs the ``SynthMapper`` that ``expand`` gives to ``Dataset.map``; Ray only moves the
blocks. The seeds are executed once, in order, and re-cut into blocks of whole requests with a
hidden column of global indices, so requests are grouped as ``expand`` groups them: the same
request bodies, hence the same cache keys. Output blocks carry the features and the generation
config in their Arrow schema, for ``to_huggingface``.

The API token never enters the task graph: actors read ``COLLINEAR_API_KEY`` from their own
environment, which Ray fills from ``ray.init(runtime_env={"env_vars": {...}})`` (or, for a local
Ray started by this process, from the driver's environment).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import os
import shutil
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import datasets
import pyarrow as pa
from datasets import Features
from datasets.formatting.formatting import LazyBatch

from .budget import Budget, partial_message
from .budget import logger as budget_logger
from .client import identify_engine
from .config import ExpandConfig, takes_options
from .errors import ConfigurationError
from .layout import Layout
from .mapper import SynthMapper, plan_for
from .provenance import attach_provenance, from_schema, schema_metadata, source_info

if TYPE_CHECKING:
    import ray.data

__all__ = ["API_KEY_ENV", "INDEX_COLUMN", "expand_ray", "from_huggingface", "to_huggingface"]

logger = logging.getLogger("synth_datasets")

API_KEY_ENV = "COLLINEAR_API_KEY"
INDEX_COLUMN = "__synth_index"
"""The hidden column that carries each seed's global row index into the actors."""
# Schema metadata of the output blocks: the name of the run's budget actor, for to_huggingface.
_BUDGET_KEY = b"synth_datasets_budget"
# Options of expand that Ray does not take: it numbers the rows itself.
_NOT_ON_RAY = ("index_column",)
_GIVE_TOKEN = (
    "give it to the workers through their environment, e.g. ray.init(runtime_env={'env_vars': "
    "{'COLLINEAR_API_KEY': os.environ['COLLINEAR_API_KEY']}}), or set it on every node (or "
    "before a local Ray starts)"
)


def _import_ray() -> Any:
    try:
        import ray.data
    except ImportError as exc:
        raise ImportError(
            "synth_datasets.ray needs Ray Data, which is not installed: "
            "pip install 'ray[data]>=2.9' (the package's ray extra)"
        ) from exc
    return ray


class _ExpandBlocks:
    """The ``map_batches`` callable class: one ``SynthMapper`` (client, cache, threads) per actor.

    Each call hands one block of whole requests to the mapper as one Arrow-backed map batch. The
    config and layout are pickled into the task graph: neither holds the token.
    """

    def __init__(
        self,
        config: ExpandConfig,
        layout: Layout,
        provenance: Mapping[str, Any],
        budget: tuple[str, Any] | None = None,
    ) -> None:
        if not os.environ.get(API_KEY_ENV, "").strip():
            try:
                where = f" on node {_import_ray().get_runtime_context().get_node_id()}"
            except Exception:  # not in a Ray worker
                where = ""
            raise ConfigurationError(
                f"COLLINEAR_API_KEY is not set on the Ray worker{where}: {_GIVE_TOKEN}"
            )
        self.mapper = SynthMapper(**config.as_dict())
        self.mapper.bind(layout.input_features)
        self.features = layout.features
        self._formatter = datasets.formatting.PythonFormatter(features=layout.input_features)
        self._metadata = {
            **(self.features.arrow_schema.metadata or {}),
            **schema_metadata(provenance),
        }
        if budget is not None:  # one budget for the run, not one per actor
            name, actor = budget
            self.mapper.engine.budget = _SharedBudget(actor)
            self._metadata[_BUDGET_KEY] = name.encode("utf-8")

    def __repr__(self) -> str:
        return f"_ExpandBlocks({self.mapper!r})"

    def __call__(self, table: pa.Table) -> pa.Table:
        if table.num_rows == 0:
            return self.features.arrow_schema.empty_table().replace_schema_metadata(self._metadata)
        indices = [int(i) for i in table.column(INDEX_COLUMN).to_pylist()]
        # The block as Dataset.map hands a batch over: Arrow-backed, formatted on access.
        batch = LazyBatch(table.drop_columns([INDEX_COLUMN]), self._formatter)
        rows = asyncio.run(self.mapper(batch, indices))
        logger.debug("synth_datasets (ray actor): %s", self.mapper.stats.summary())
        self.mapper.engine.warn_not_cached()  # an actor has no end of run to wait for
        return rows.replace_schema_metadata(self._metadata)


class _SharedBudget(Budget):
    """The run's budget on Ray: one ``Budget`` actor that every expanding actor spends from."""

    def __init__(self, actor: Any) -> None:
        super().__init__()
        self.actor = actor

    def take(self, seed_rows: int, generations: int) -> bool:
        return bool(_import_ray().get(self.actor.take.remote(seed_rows, generations)))

    def partial(self) -> dict[str, Any] | None:
        return _import_ray().get(self.actor.partial.remote())  # type: ignore[no-any-return]


def _remote_helpers(ray: Any) -> tuple[Any, Any]:
    """The two Ray tasks of the indexing pass, defined in here so that cloudpickle ships them by
    value: the task workers import only pyarrow, not this package and datasets."""

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


def _context(ray: Any, dataset: ray.data.Dataset) -> Any:
    """The ``DataContext`` a dataset executes with (older Ray: the current one)."""
    return getattr(dataset, "context", None) or ray.data.DataContext.get_current()


def _index_blocks(
    ray: Any,
    ray_dataset: ray.data.Dataset,
    config: ExpandConfig,
    per_block: int | None,
    actors: int,
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
    total = sum(n for n, _ in infos)
    if total == 0:
        raise ConfigurationError("the dataset is empty: there is nothing to expand")
    config.check_generations(total)
    if per_block is None:
        # Enough requests per block to keep an actor's threads busy, and at least one block per
        # actor when the data is small.
        n_requests = math.ceil(total / config.request_size)
        per_block = max(1, min(4 * config.threads, math.ceil(n_requests / actors)))
    block_rows = config.request_size * per_block
    blocks: list[Any] = []
    pieces: list[tuple[int, int]] = []  # (offset, rows) of each source block in the next block
    tables: list[Any] = []
    filled = 0
    for ref, (n, _) in zip(refs, infos, strict=True):
        offset = 0
        while offset < n:
            take = min(n - offset, block_rows - filled)
            pieces.append((offset, take))
            tables.append(ref)
            offset += take
            filled += take
            if filled == block_rows or len(blocks) * block_rows + filled == total:
                blocks.append(make_block.remote(len(blocks) * block_rows, pieces, *tables))
                pieces, tables, filled = [], [], 0
    schema = next(s for n, s in infos if n)
    return ray.data.from_arrow_refs(blocks), total, schema


@takes_options(ExpandConfig, exclude=_NOT_ON_RAY)
def expand_ray(
    ray_dataset: ray.data.Dataset,
    *,
    api_key: None = None,
    concurrency: int = 2,
    num_cpus: float = 0.5,
    split_ceiling: bool = True,
    features: Features | None = None,
    preserve_order: bool = False,
    source: Mapping[str, Any] | None = None,
    **options: Any,
) -> ray.data.Dataset:
    """Expand a Ray dataset on ``concurrency`` actors; returns a lazy ``ray.data.Dataset``.

    Same options, columns, ``on_error`` and request cache as ``expand``; ``source_index`` is
    the seed's position in ``ray_dataset``. The seeds are executed once, in order, now; the
    expansion runs when the result is consumed (``write_parquet``, ``to_huggingface``, ...).
    Every actor reads the token from ``COLLINEAR_API_KEY`` in its environment (``api_key=`` is
    refused: arguments become part of Ray's task graph); ``base_url`` and ``model_id`` default
    to the driver's ``COLLINEAR_BASE_URL`` / ``COLLINEAR_MODEL_ID``.

    Ray's own options: ``concurrency`` actors, each with ``max_concurrency`` requests in flight
    and ``num_cpus`` CPUs reserved (it waits on HTTP); with ``max_concurrency="auto"`` each actor
    adapts its own, up to ``concurrency_ceiling`` divided among the actors (more actors than the
    ceiling are refused; ``split_ceiling=False``: up to all of it each); a block holds
    ``requests_per_map_batch`` requests (default: ``4 * max_concurrency``, fewer for small
    data); ``features``: the input's Hugging Face features when its Arrow schema lacks them;
    ``preserve_order=True`` (or the current ``DataContext``'s) yields rows in ``expand``'s order
    at some cost in throughput;
    ``source``: what the provenance records about the input (name, split, fingerprint, ...).
    A budget (``max_requests``, ``max_generations``) is the run's, shared by the actors through
    one small actor; ``to_huggingface`` records whether the run stopped at it.
    """
    ray = _import_ray()
    _refuse(ray, ray_dataset, api_key, options)
    config = ExpandConfig(**options)
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ConfigurationError(
            f"concurrency must be an int >= 1, got {concurrency!r}", option="concurrency"
        )
    if config.max_concurrency == "auto" and split_ceiling:  # the quota is the actors' together
        most = config.concurrency_ceiling
        if concurrency > most:  # each actor keeps one in flight: together they would pass it
            raise ConfigurationError(
                f"concurrency is {concurrency}: {concurrency} actors keep at least one request "
                f"in flight each, more than concurrency_ceiling ({most}) allows; use at most "
                f"{most} actors or raise concurrency_ceiling",
                option="concurrency",
                also=("concurrency_ceiling",),
            )
        config = dataclasses.replace(config, concurrency_ceiling=most // concurrency)

    def plan(schema: pa.Schema) -> Layout:
        if INDEX_COLUMN in schema.names:
            raise ConfigurationError(f"the dataset already has a column named {INDEX_COLUMN!r}")
        known = features if features is not None else Features.from_arrow_schema(schema)
        missing = [c for c in schema.names if c not in known]
        if missing:
            raise ConfigurationError(f"features= has no entry for column(s) {missing}")
        return plan_for(config, Features({c: known[c] for c in schema.names}))

    # Column names are checked before the seeds are executed when Ray knows the schema already.
    try:
        schema = ray_dataset.schema(fetch_if_missing=False)
    except TypeError:  # older Ray: no fetch_if_missing
        schema = None
    schema = getattr(schema, "base_schema", schema)
    layout = plan(schema) if isinstance(schema, pa.Schema) else None
    per_block = config.requests_per_map_batch  # None: Ray's default, not expand's
    blocks, total, block_schema = _index_blocks(ray, ray_dataset, config, per_block, concurrency)
    if layout is None:
        layout = plan(block_schema)
    assert config.base_url is not None
    recorded = config.provenance(
        layout,
        source_info(None, {"num_rows": total, **(source or {})}),
        identify_engine(config.base_url),
    )
    recorded["engine"] = {"name": "ray", "ray_version": ray.__version__, "actors": concurrency}
    if preserve_order:  # our own dataset's context (a copy of the current one)
        _context(ray, blocks).execution_options.preserve_order = True
    budget: tuple[str, Any] | None = None
    if config.max_requests is not None or config.max_generations is not None:
        # One actor spent from by every expanding actor; named so that to_huggingface finds it
        # from the blocks. It lives as long as the returned dataset, which holds its handle.
        name = f"synth_datasets-budget-{uuid.uuid4().hex}"
        actor = ray.remote(num_cpus=0)(Budget).options(name=name)
        budget = (name, actor.remote(config.max_requests, config.max_generations))
    return blocks.map_batches(
        _ExpandBlocks,
        fn_constructor_kwargs={
            "config": config,
            "layout": layout,
            "provenance": recorded,
            "budget": budget,
        },
        batch_size=None,  # one block = whole requests; never split a request across calls
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=concurrency),
        num_cpus=num_cpus,
    )


def _refuse(ray: Any, ray_dataset: Any, api_key: object, options: Mapping[str, Any]) -> None:
    """What expand_ray cannot take, refused before the seeds are touched."""
    if api_key is not None:
        raise ConfigurationError(
            "expand_ray does not take api_key=: arguments are serialised into Ray's task graph. "
            f"Set COLLINEAR_API_KEY instead: {_GIVE_TOKEN}"
        )
    refused = sorted(set(options) & set(_NOT_ON_RAY))
    if refused:
        raise ConfigurationError(
            f"expand_ray does not take {', '.join(refused)}=: source_index is the row's place "
            "in the Ray dataset"
        )
    if not isinstance(ray_dataset, ray.data.Dataset):
        hint = ""
        if isinstance(ray_dataset, (datasets.Dataset, datasets.IterableDataset)):
            hint = ": convert with synth_datasets.ray.from_huggingface(ds), or use expand"
        raise ConfigurationError(
            f"expand_ray takes a ray.data.Dataset, got {type(ray_dataset).__name__}{hint}"
        )


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
    import numpy as np
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    ray = _import_ray()
    temporary = directory is None
    path = Path(tempfile.mkdtemp(prefix="synth-ray-") if directory is None else directory)
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
            last = pa.scalar(2**63 - 1, pa.int64())  # unlinked rows (no source_index) last
            keys = pc.fill_null(out.data.column("source_index"), last).to_numpy()
            order = np.argsort(keys, kind="stable")
            if not bool((order == np.arange(len(order))).all()):
                out = out.select(order)
        schema = pq.read_schema(files[0])
        recorded = from_schema(schema)
        if recorded is not None:
            budget = (schema.metadata or {}).get(_BUDGET_KEY)
            if budget is not None:  # the run had a budget: did it stop there?
                try:
                    recorded["partial"] = _SharedBudget(ray.get_actor(budget.decode())).partial()
                except ValueError:  # another job's, or this one's after its dataset was dropped
                    logger.warning(
                        "synth_datasets: the run's budget actor is gone, so whether the run "
                        "stopped at its budget (max_requests, max_generations) is not recorded"
                    )
            if recorded.get("partial"):
                budget_logger.warning("synth_datasets: %s", partial_message(recorded["partial"]))
            attach_provenance(out, recorded)
        return out
    finally:
        if temporary:
            shutil.rmtree(path, ignore_errors=True)


def from_huggingface(
    dataset: datasets.Dataset, *, override_num_blocks: int | None = None
) -> ray.data.Dataset:
    """A Ray dataset of the rows of ``dataset``, in its order (what ``expand_ray`` indexes).

    Unlike ``ray.data.from_huggingface``, it never tries to re-load the dataset by name to read a
    Hub parquet export (whose rows need not be exactly those of ``dataset``).
    """
    ray = _import_ray()
    if not isinstance(dataset, datasets.Dataset):
        raise ConfigurationError(
            f"from_huggingface takes a datasets.Dataset, got {type(dataset).__name__}; for an "
            "IterableDataset use ray.data.from_huggingface"
        )
    table = dataset.with_format("arrow")[:]  # applies any indices mapping (select, shuffle)
    return ray.data.from_arrow(table, override_num_blocks=override_num_blocks)  # type: ignore[no-any-return]
