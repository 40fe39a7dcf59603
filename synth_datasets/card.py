"""The dataset card: how the data was made and what is in it, computed from the data itself.

Rendered from ``cards/dataset_card.md`` (shipped as ``synth_datasets.cards``) through
``huggingface_hub.DatasetCard.from_template``, so the YAML header is what the Hub expects.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

import datasets
from huggingface_hub import DatasetCard, DatasetCardData

from ._version import __version__
from .expand import get_provenance
from .rows import LINEAGE_COLUMNS

__all__ = ["build_card", "dataset_stats", "size_category"]

ERROR_KINDS = {
    "request": "the request failed after retries; one row per seed of that request",
    "parse": "the generated text could not be read as a JSON object",
    "missing": "the generated object lacks a column",
    "type": "a generated value does not fit the column's type",
    "unlinked": "the returned original matched no seed row sent",
    "shortfall": "the endpoint returned no generation for this seed",
}
LINEAGE_MEANING = {
    "source_index": "row index of the seed in the source dataset (null only if unlinkable)",
    "original": "the seed example exactly as it was sent to the endpoint",
    "generated_raw": "the text the endpoint returned for this row, unparsed",
    "error": "why this row's generated columns are (partly) null; null when all is well",
}
_SIZES = [
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
    (100_000_000, "10M<n<100M"),
    (1_000_000_000, "100M<n<1B"),
    (10_000_000_000, "1B<n<10B"),
]
_SAMPLE_CHARS = 300
_SPACES = re.compile(r"\s+")


def size_category(n: int) -> str:
    for bound, name in _SIZES:
        if n < bound:
            return name
    return "n>10B" if n >= 10_000_000_000 else "1B<n<10B"


def _normalise(value: Any) -> Any:
    """Case and spacing do not make a row new."""
    if isinstance(value, str):
        return " ".join(value.lower().split())
    if isinstance(value, dict):
        return {k: _normalise(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    return value


def _normalised_text(values: Sequence[Any]) -> str:
    return json.dumps(_normalise(list(values)), ensure_ascii=False, sort_keys=True, default=str)


def dataset_stats(
    dataset: datasets.Dataset, provenance: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Counts a reader needs to judge the data, from the rows themselves."""
    provenance = provenance or get_provenance(dataset) or {}
    generated = [c for c in provenance.get("generated_columns") or [] if c in dataset.column_names]
    has_original = "original" in dataset.column_names
    needed = [c for c in (*generated, *LINEAGE_COLUMNS) if c in dataset.column_names]
    kinds: Counter[str] = Counter()
    seeds: set[int] = set()
    seen: set[str] = set()
    error_rows = unlinked = returned = identical = duplicates = 0
    for batch in dataset.select_columns(needed).iter(batch_size=1000):
        n = len(batch[needed[0]]) if needed else 0
        for i in range(n):
            error = batch["error"][i] if "error" in batch else None
            source = batch["source_index"][i] if "source_index" in batch else None
            if source is None:
                unlinked += 1
            else:
                seeds.add(source)
            if "generated_raw" in batch and batch["generated_raw"][i] is not None:
                returned += 1
            if error is not None:
                error_rows += 1
                kinds.update({part.split(":", 1)[0].strip() for part in error.split("; ")})
                continue
            values = [batch[c][i] for c in generated]
            if has_original and batch["original"][i] is not None:
                original = batch["original"][i]
                if all(c in original and original[c] == batch[c][i] for c in generated):
                    identical += 1
            key = _normalised_text(values)
            if key in seen:
                duplicates += 1
            else:
                seen.add(key)
    source = provenance.get("source") or {}
    source_rows = source.get("num_rows")
    multiplier = provenance.get("multiplier")
    targeted = (source_rows * multiplier) if source_rows and multiplier else None
    return {
        "rows": len(dataset),
        "source_rows": source_rows if source_rows is not None else "unknown",
        "linked_seeds": len(seeds),
        "targeted": targeted if targeted is not None else "unknown",
        "returned": returned,
        "clean_rows": len(dataset) - error_rows,
        "error_rows": error_rows,
        "errors_by_kind": [(k, c, ERROR_KINDS.get(k, "other")) for k, c in kinds.most_common()],
        "unlinked": unlinked,
        "identical_to_seed": identical if has_original else "unknown (no `original` column)",
        "duplicates": duplicates,
    }


def _cut(value: Any) -> Any:
    if isinstance(value, str) and len(value) > _SAMPLE_CHARS:
        return value[:_SAMPLE_CHARS] + "…"
    if isinstance(value, dict):
        return {k: _cut(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_cut(v) for v in value[:10]] + (["…"] if len(value) > 10 else [])
    return value


def _samples(dataset: datasets.Dataset, k: int = 3) -> list[str]:
    clean = (
        [i for i, e in enumerate(dataset["error"][: 50 * k]) if e is None]
        if ("error" in dataset.column_names)
        else list(range(min(k, len(dataset))))
    )
    picks = (clean or list(range(len(dataset))))[:k]
    return [json.dumps(_cut(dataset[i]), ensure_ascii=False, indent=2, default=str) for i in picks]


def _schema(dataset: datasets.Dataset, provenance: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    generated = set(provenance.get("generated_columns") or [])
    out = []
    for name, feature in dataset.features.items():
        dtype = _SPACES.sub(" ", repr(feature))
        if len(dtype) > 120:
            dtype = dtype[:117] + "..."
        if name in LINEAGE_MEANING:
            meaning = LINEAGE_MEANING[name]
        elif name in generated:
            meaning = "generated"
        else:
            meaning = "copied from the seed row (not sent)"
        out.append((name, dtype.replace("|", "\\|"), meaning))
    return out


def build_card(
    dataset: datasets.Dataset,
    *,
    repo_id: str | None = None,
    split: str = "train",
    pretty_name: str | None = None,
    license: str | None = None,
    language: str | list[str] | None = None,
    task_categories: str | list[str] | None = None,
    tags: Sequence[str] = (),
    include_prompt: bool = True,
    provenance: Mapping[str, Any] | None = None,
) -> DatasetCard:
    """A card for an expanded dataset; explicit arguments override what ``expand`` recorded."""
    recorded = dict(get_provenance(dataset) or {})
    recorded.update(provenance or {})
    prov = recorded
    source = dict(prov.get("source") or {})
    source_name = source.get("name") or "an unnamed dataset"
    is_hub_id = bool(source.get("hub")) or (
        bool(re.fullmatch(r"[\w.-]+/[\w.-]+", str(source_name)))
        and not str(source_name).endswith((".jsonl", ".json", ".csv", ".parquet"))
    )
    repo = repo_id or "<namespace>/<dataset>"
    name = pretty_name or (repo.split("/")[-1] if repo_id else "Synthetic dataset")
    stats = dataset_stats(dataset, prov)
    card_data = DatasetCardData(
        pretty_name=name,
        license=license or source.get("license") or None,
        language=language,
        task_categories=task_categories,
        size_categories=[size_category(len(dataset))],
        source_datasets=[source_name] if is_hub_id else None,
        tags=sorted({"synthetic", "synth_datasets", *tags}),
    )
    template = (
        resources.files("synth_datasets.cards")
        .joinpath("dataset_card.md")
        .read_text(encoding="utf-8")
    )
    lineage = [c for c in LINEAGE_COLUMNS if c in dataset.column_names]
    return DatasetCard.from_template(
        card_data,
        template_str=template,
        pretty_name=name,
        summary=(
            f"{stats['rows']} synthetic rows generated from {stats['linked_seeds']} seed rows "
            f"(multiplier {prov.get('multiplier', 'unknown')})."
        ),
        source_link=(
            f"[{source_name}](https://huggingface.co/datasets/{source_name})"
            if is_hub_id
            else f"`{source_name}`"
        ),
        version=prov.get("version") or __version__,
        endpoint=prov.get("endpoint") or "unknown",
        model_id=prov.get("model_id") or "unknown",
        multiplier=prov.get("multiplier", "unknown"),
        request_size=prov.get("request_size", "unknown"),
        columns=", ".join(f"`{c}`" for c in prov.get("columns") or []) or "unknown",
        passthrough=", ".join(f"`{c}`" for c in prov.get("passthrough_columns") or []) or "none",
        on_error=prov.get("on_error", "raise"),
        created=prov.get("created") or "unknown",
        source_name=source_name,
        source_split=source.get("split") or "train",
        source_config=f", config `{source['config']}`" if source.get("config") else "",
        source_revision=source.get("revision") or source.get("fingerprint") or "unknown",
        prompt=prov.get("prompt") if include_prompt else None,
        stats=stats,
        schema=_schema(dataset, prov),
        samples=_samples(dataset),
        repo_id=repo,
        split=split,
        lineage_columns=json.dumps(lineage),
    )
