"""Provenance: how a dataset was made, recorded with the data (never the token).

It is a marker line in ``dataset.info.description``: that field survives ``map``, saving, loading
and the Hub round trip, while unknown ``DatasetInfo`` fields do not.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import datasets

__all__ = ["PROVENANCE_MARKER", "attach_provenance", "get_provenance", "source_info"]

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
    dataset.info.description = (
        "Synthetic rows generated with synth_datasets from a seed dataset; the line below "
        f"records how.\n{PROVENANCE_MARKER}{text}"
    )


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
