"""``expand``: the one-call entry point."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import datasets

from .budget import BUDGET_OPTIONS, partial_message
from .budget import logger as budget_logger
from .cache import RequestCache
from .client import SynthClient, identify_engine
from .config import ExpandConfig, check_folder, takes_options
from .errors import ConfigurationError
from .mapper import SynthMapper
from .provenance import attach_provenance, source_info

__all__ = ["expand"]

logger = logging.getLogger("synth_datasets")


@takes_options(ExpandConfig)
def expand(
    dataset: datasets.Dataset | datasets.IterableDataset,
    *,
    client: SynthClient | None = None,
    api_key: str | None = None,
    num_proc: int | None = None,
    source: Mapping[str, Any] | None = None,
    **options: Any,
) -> datasets.Dataset | datasets.IterableDataset:
    """Expand ``dataset`` into ``multiplier`` generations per row, every row linked to its seed.

    Returns a ``Dataset`` (a lazy ``IterableDataset`` for one) of the generated, passthrough and
    lineage columns. The token comes from ``api_key=``, ``client=`` or ``COLLINEAR_API_KEY``;
    ``source`` overrides what the provenance records about the input (name, split, ...).
    A run that stops at its budget (``max_requests``, ``max_generations``) returns the rows it
    received; ``get_provenance(result)["partial"]`` says what it left out.
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
    recorded_source = source_info(dataset, source)
    # The mapper reads plain Python batches; the result is formatted as the input was.
    format_type = dataset.format["type"] if isinstance(dataset, datasets.Dataset) else None
    if format_type is not None or isinstance(dataset, datasets.IterableDataset):
        dataset = dataset.with_format(None)
    if num_proc is not None and isinstance(dataset, datasets.IterableDataset):
        raise ConfigurationError("num_proc= works with a Dataset, not an IterableDataset")
    mapper = SynthMapper(client=client, api_key=api_key, **options)
    config = mapper.engine.config
    if num_proc is not None and mapper.engine.budget is not None:
        name = next(n for n in BUDGET_OPTIONS if getattr(config, n) is not None)
        raise ConfigurationError(
            f"{name} is counted in one process, and num_proc= would give each worker its own: "
            f"drop num_proc (the requests already run on max_concurrency threads)",
            option=name,
        )
    kwargs = mapper.map_kwargs(dataset)
    assert mapper.layout is not None
    assert config.base_url is not None
    provenance = config.provenance(mapper.layout, recorded_source, identify_engine(config.base_url))
    if isinstance(dataset, datasets.IterableDataset):
        result: datasets.Dataset | datasets.IterableDataset = dataset.map(mapper, **kwargs)
    else:
        if not dataset.cache_files:
            # An in-memory input would keep the whole output in memory too: write it to Arrow on
            # disk, next to the request cache (this also gives datasets' map cache a file to hit).
            folder = RequestCache.folder_for(config.cache_dir) / "maps"
            check_folder("cache_dir", folder, create=True)
            kwargs["cache_file_name"] = str(folder / f"expand-{kwargs['new_fingerprint']}.arrow")
        # One bar: ours (rows, in flight, retries, 429s, error rows) in place of datasets' own,
        # none with progress=False. num_proc workers show none: datasets' bar sums theirs.
        ours = num_proc is None and mapper.engine.progress_seeds is not None
        hide = (ours or not config.progress) and datasets.utils.is_progress_bar_enabled()
        if hide:
            datasets.disable_progress_bars()
        try:
            result = dataset.map(mapper, num_proc=num_proc, **kwargs)
        finally:
            if hide:
                datasets.enable_progress_bars()
            if num_proc is None:
                logger.info("synth_datasets: %s", mapper.stats.summary())
            mapper.close()
        partial = mapper.engine.budget.partial() if mapper.engine.budget is not None else None
        if partial is not None:  # the rows received are kept; the record says what is missing
            provenance["partial"] = partial
            budget_logger.warning("synth_datasets: %s", partial_message(partial))
    if format_type is not None:
        result = result.with_format(format_type)
    attach_provenance(result, provenance)
    return result
