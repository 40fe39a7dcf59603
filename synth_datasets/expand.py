"""``expand``: the one-call entry point, and the provenance that travels with its result.

Provenance (endpoint host, model, prompt, multiplier, columns, library version, source dataset
and fingerprint; never the token) is stored in ``dataset.info.description`` under a marker line,
because that field survives ``map``, ``save_to_disk``/``load_from_disk`` and the Hub round trip
while unknown ``DatasetInfo`` fields do not.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import datasets
from datasets import Features

from ._version import __version__
from .cache import RequestCache
from .client import SynthClient
from .errors import ConfigurationError
from .mapper import SynthMapper
from .rows import Layout

__all__ = [
    "PROVENANCE_MARKER",
    "attach_provenance",
    "build_provenance",
    "expand",
    "get_provenance",
    "source_info",
]

logger = logging.getLogger("synth_datasets")

PROVENANCE_MARKER = "synth_datasets-provenance: "


def get_provenance(dataset: datasets.Dataset | datasets.IterableDataset) -> dict[str, Any] | None:
    """The generation config recorded by ``expand``, or None for a dataset it did not make."""
    description = getattr(dataset.info, "description", None) or ""
    for line in reversed(description.splitlines()):
        if line.startswith(PROVENANCE_MARKER):
            try:
                value = json.loads(line[len(PROVENANCE_MARKER) :])
            except ValueError:
                return None
            return value if isinstance(value, dict) else None
    return None


def attach_provenance(
    dataset: datasets.Dataset | datasets.IterableDataset, provenance: Mapping[str, Any]
) -> None:
    text = json.dumps(dict(provenance), ensure_ascii=False, sort_keys=True, default=str)
    head = (
        "Synthetic rows generated with synth_datasets from a seed dataset; the line below "
        "records how."
    )
    dataset.info.description = f"{head}\n{PROVENANCE_MARKER}{text}"


def source_info(
    dataset: datasets.Dataset | datasets.IterableDataset | None,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """What the card says about the seeds: from the dataset, then the caller's overrides."""
    out: dict[str, Any] = dict.fromkeys(
        ("name", "config", "split", "fingerprint", "revision", "license", "num_rows")
    )
    if dataset is not None:
        info = dataset.info
        out.update(
            name=info.dataset_name or info.builder_name or None,
            config=info.config_name or None,
            split=str(dataset.split) if dataset.split is not None else None,
            fingerprint=getattr(dataset, "_fingerprint", None),
            license=info.license or None,
            num_rows=len(dataset) if isinstance(dataset, datasets.Dataset) else None,
        )
    if overrides:
        out.update({k: v for k, v in overrides.items() if v is not None})
    return out


def build_provenance(
    *,
    base_url: str,
    model_id: str,
    prompt: str,
    multiplier: int,
    request_size: int,
    max_concurrency: int,
    on_error: str,
    run_id: str | None,
    layout: Layout,
    source: Mapping[str, Any],
) -> dict[str, Any]:
    """The generation config recorded with the data (never the token)."""
    parts = urlsplit(base_url)
    return {
        "library": "synth_datasets",
        "version": __version__,
        "endpoint": f"{parts.scheme}://{parts.hostname}"
        + (f":{parts.port}" if parts.port else "")
        + "/api/v1/synth_data/generate",
        "endpoint_host": parts.hostname,
        "model_id": model_id,
        "prompt": prompt,
        "multiplier": multiplier,
        "request_size": request_size,
        "max_concurrency": max_concurrency,
        "columns": list(layout.columns),
        "generated_columns": list(layout.generated_features),
        "passthrough_columns": list(layout.passthrough),
        "keep_original": layout.keep_original,
        "index_column": layout.index_column,
        "on_error": on_error,
        "run_id": run_id,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "source": dict(source),
    }


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
