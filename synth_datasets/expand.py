"""``expand``: the one-call entry point."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import datasets
from datasets import Features

from .cache import RequestCache
from .client import SynthClient
from .errors import ConfigurationError
from .mapper import SynthMapper
from .provenance import attach_provenance, build_provenance, source_info

__all__ = ["expand"]

logger = logging.getLogger("synth_datasets")


def expand(
    dataset: datasets.Dataset | datasets.IterableDataset,
    *,
    prompt: str,
    multiplier: int,
    model_id: str | None = None,
    client: SynthClient | None = None,
    columns: Sequence[str] | None = None,
    generated_features: Features | Mapping[str, Any] | None = None,
    request_size: int = 8,
    max_concurrency: int = 16,
    keep_original: bool = True,
    on_error: str = "raise",
    cache: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
    run_id: str | None = None,
    num_proc: int | None = None,
    source: Mapping[str, Any] | None = None,
    index_column: str | None = None,
    max_request_bytes: int | None = None,
) -> datasets.Dataset | datasets.IterableDataset:
    """Expand ``dataset`` into ``multiplier`` generations per row, every row linked to its seed.

    Returns a ``Dataset`` (or a lazy ``IterableDataset`` for one) with the generated columns,
    the passthrough columns and ``source_index``/``original``/``generated_raw``/``error``.
    For a shard of a larger dataset, ``index_column`` names a column of global row indices to
    use as ``source_index`` (it is neither sent nor kept). ``max_request_bytes`` caps a request
    body: requests end before it, and a row too large on its own is refused before any request.
    """
    if isinstance(dataset, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        raise ConfigurationError(
            f"expand takes one split, got a {type(dataset).__name__} with splits "
            f"{list(dataset)}: pass dataset['train'] (or the split you want)"
        )
    if not isinstance(dataset, (datasets.Dataset, datasets.IterableDataset)):
        raise ConfigurationError(
            f"expand takes a datasets.Dataset or IterableDataset, got {type(dataset).__name__}"
        )
    if isinstance(dataset, datasets.Dataset) and len(dataset) == 0:
        raise ConfigurationError("the dataset is empty: there is nothing to expand")
    if num_proc is not None and isinstance(dataset, datasets.IterableDataset):
        raise ConfigurationError("num_proc= works with a Dataset, not an IterableDataset")
    mapper = SynthMapper(
        prompt=prompt,
        multiplier=multiplier,
        model_id=model_id,
        client=client,
        columns=columns,
        generated_features=generated_features,
        request_size=request_size,
        max_concurrency=max_concurrency,
        keep_original=keep_original,
        on_error=on_error,
        cache=cache,
        cache_dir=cache_dir,
        run_id=run_id,
        index_column=index_column,
        max_request_bytes=max_request_bytes,
    )
    kwargs = mapper.map_kwargs(dataset)
    e = mapper.engine
    assert mapper.layout is not None
    provenance = build_provenance(
        base_url=e.client_config["base_url"],
        model_id=e.model_id,
        prompt=e.prompt,
        multiplier=e.multiplier,
        request_size=e.request_size,
        max_concurrency=e.max_concurrency,
        on_error=e.on_error,
        run_id=e.run_id,
        layout=mapper.layout,
        source=source_info(dataset, source),
    )
    if isinstance(dataset, datasets.IterableDataset):
        out = dataset.map(mapper, **kwargs)
        attach_provenance(out, provenance)
        return out
    if not dataset.cache_files:
        # An in-memory input would keep the whole output in memory too: write it to Arrow on
        # disk, next to the request cache (this also gives datasets' map cache a file to hit).
        folder = RequestCache.folder_for(cache_dir) / "maps"
        folder.mkdir(parents=True, exist_ok=True)
        kwargs["cache_file_name"] = str(folder / f"expand-{kwargs['new_fingerprint']}.arrow")
    try:
        result = dataset.map(mapper, num_proc=num_proc, **kwargs)
    finally:
        if num_proc is None:
            logger.info("synth_datasets: %s", mapper.stats.summary())
        mapper.close()
    attach_provenance(result, provenance)
    return result
