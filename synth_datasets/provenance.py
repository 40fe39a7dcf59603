"""Provenance: how a dataset was made, recorded with the data (never the token).

It travels in three places, because datasets keeps each only through some operations:

- a marker line in ``dataset.info.description``: kept by ``map``, ``filter``, ``select``,
  ``save_to_disk``/``load_from_disk``; unknown ``DatasetInfo`` fields are not;
- the Arrow schema metadata (key ``synth_datasets``) of the tables and of the parquet files this
  library writes (``--output`` folders, Ray's blocks), read back by ``load_result`` and
  ``to_huggingface``, and by any Arrow reader;
- the ``dataset_info.description`` of the cards this library writes (a folder's or a Hub
  repo's README.md), which ``load_dataset`` reads into ``info.description``.

datasets' own ``to_parquet`` writes only the features into the file's schema, and its parquet
reader keeps only those: a bare parquet file written that way and read with
``Dataset.from_parquet`` carries no provenance.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import datasets
import pyarrow as pa

from .config import OFFLINE_ENGINE, OFFLINE_NOTICE

__all__ = [
    "OFFLINE_NOTICE",
    "PROVENANCE_KEY",
    "PROVENANCE_MARKER",
    "attach_provenance",
    "describe",
    "from_schema",
    "get_provenance",
    "is_offline",
    "made_by",
    "schema_metadata",
    "source_info",
    "write_parquet",
]

PROVENANCE_MARKER = "synth_datasets-provenance: "
PROVENANCE_KEY = b"synth_datasets"
"""The Arrow schema metadata key of the generation record."""


def _encode(provenance: Mapping[str, Any]) -> str:
    return json.dumps(dict(provenance), ensure_ascii=False, sort_keys=True, default=str)


def _decode(text: str | bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def describe(provenance: Mapping[str, Any]) -> str:
    """The ``info.description`` text that records ``provenance`` (its last line is the record)."""
    return (
        "Synthetic rows generated with synth_datasets from a seed dataset; the line below "
        f"records how.\n{PROVENANCE_MARKER}{_encode(provenance)}"
    )


def from_description(description: str | None) -> dict[str, Any] | None:
    for line in reversed((description or "").splitlines()):
        if line.startswith(PROVENANCE_MARKER):
            return _decode(line[len(PROVENANCE_MARKER) :])
    return None


def schema_metadata(provenance: Mapping[str, Any]) -> dict[bytes, bytes]:
    """The Arrow schema metadata entry that records ``provenance``."""
    return {PROVENANCE_KEY: _encode(provenance).encode("utf-8")}


def from_schema(schema: pa.Schema | None) -> dict[str, Any] | None:
    """The record in an Arrow schema's metadata (a table's, a parquet file's), or None."""
    metadata = (schema.metadata if schema is not None else None) or {}
    return _decode(metadata[PROVENANCE_KEY]) if PROVENANCE_KEY in metadata else None


def get_provenance(dataset: datasets.Dataset | datasets.IterableDataset) -> dict[str, Any] | None:
    """The generation config recorded by ``expand``, or None for a dataset it did not make."""
    found = from_description(getattr(dataset.info, "description", None))
    if found is None and isinstance(dataset, datasets.Dataset):
        found = from_schema(dataset.data.schema)
    return found


def attach_provenance(
    dataset: datasets.Dataset | datasets.IterableDataset, provenance: Mapping[str, Any]
) -> None:
    """Record ``provenance`` in the dataset's info and, for a ``Dataset``, its Arrow schema."""
    dataset.info.description = describe(provenance)
    if isinstance(dataset, datasets.Dataset):
        table = dataset._data  # datasets' own Table: replace_schema_metadata keeps its kind
        metadata = {**(table.schema.metadata or {}), **schema_metadata(provenance)}
        dataset._data = table.replace_schema_metadata(metadata)


def write_parquet(
    dataset: datasets.Dataset,
    path: str | os.PathLike[str],
    provenance: Mapping[str, Any] | None = None,
    batch_size: int = 10_000,
) -> None:
    """``dataset`` as one parquet file whose schema holds the features (as datasets writes them)
    and the provenance (``provenance``, else the dataset's own), so the file carries its record
    wherever it is copied."""
    import pyarrow.parquet as pq

    recorded = provenance if provenance is not None else get_provenance(dataset)
    schema = dataset.features.arrow_schema
    if recorded is not None:
        schema = schema.with_metadata({**(schema.metadata or {}), **schema_metadata(recorded)})
    with pq.ParquetWriter(os.fspath(path), schema) as writer:
        for batch in dataset.with_format("arrow").iter(batch_size=batch_size):
            writer.write_table(batch.replace_schema_metadata(schema.metadata))


def is_offline(provenance: Mapping[str, Any] | None) -> bool:
    """Whether the rows came from the offline engine of the bundled reference server."""
    return str((provenance or {}).get("generator") or "").startswith(OFFLINE_ENGINE)


def made_by(provenance: Mapping[str, Any] | None) -> str:
    """What generated the rows, in words: the offline engine, your own model (and where it was
    served), Collinear, or the endpoint's host."""
    prov = provenance or {}
    if prov.get("model"):
        where = f" at {prov['model_host']}" if prov.get("model_host") else ""
        return f"your own model {prov['model']}{where} (an OpenAI-compatible server)"
    if is_offline(prov):
        return (
            "the offline rewriting engine bundled with synth_datasets (deterministic word "
            "substitution, not a language model)"
        )
    host = str(prov.get("endpoint_host") or "")
    if host == "collinear.ai" or host.endswith(".collinear.ai"):
        return "Collinear's synthetic-data endpoint"
    if host:
        return f"the synthetic-data endpoint at {host}"
    return "an unrecorded synthetic-data endpoint"


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
