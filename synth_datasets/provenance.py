"""Provenance: how a dataset was made, recorded with the data (never the token).

It is stored in ``dataset.info.description`` under a marker line, because that field survives
``map``, ``save_to_disk``/``load_from_disk`` and the Hub round trip while unknown ``DatasetInfo``
fields do not. This module imports nothing upward: the card, the report, prep and Ray read it.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import datasets

from ._version import __version__

if TYPE_CHECKING:
    from .layout import Layout

__all__ = [
    "PROVENANCE_MARKER",
    "attach_provenance",
    "build_provenance",
    "get_provenance",
    "source_info",
]

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
