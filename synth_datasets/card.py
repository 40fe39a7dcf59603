"""The dataset card: how the data was made and what is in it, computed from the data itself.

Rendered from ``cards/dataset_card.md`` (shipped as ``synth_datasets.cards``) through
``huggingface_hub.DatasetCard.from_template``, so the YAML header is what the Hub expects.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any, TypedDict

import datasets
from huggingface_hub import DatasetCard, DatasetCardData

from ._version import __version__
from .lineage import LINEAGE_COLUMNS, LINEAGE_MEANING
from .provenance import get_provenance
from .report import QualityReport, quality_report

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack from Python 3.11 on

__all__ = ["CardOptions", "build_card", "build_sft_card", "size_category"]

_SIZES = ["1K", "10K", "100K", "1M", "10M", "100M", "1B", "10B"]  # bounds 10**3 ... 10**10
_SAMPLE_CHARS = 300
_SPACES = re.compile(r"\s+")


class CardOptions(TypedDict, total=False):
    """The options both cards take: Hub metadata, and whether the prompt is published."""

    pretty_name: str | None
    license: str | None
    language: str | list[str] | None
    task_categories: str | list[str] | None
    tags: Sequence[str]
    include_prompt: bool


def size_category(n: int) -> str:
    """The Hub's ``size_categories`` value for ``n`` rows."""
    for i, bound in enumerate(_SIZES):
        if n < 10 ** (i + 3):
            return f"{_SIZES[i - 1]}<n<{bound}" if i else f"n<{bound}"
    return "n>10B"


def _cut(value: Any) -> Any:
    if isinstance(value, str) and len(value) > _SAMPLE_CHARS:
        return value[:_SAMPLE_CHARS] + "…"
    if isinstance(value, dict):
        return {k: _cut(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_cut(v) for v in value[:10]] + (["…"] if len(value) > 10 else [])
    return value


def _samples(dataset: datasets.Dataset, k: int = 3) -> list[str]:
    errors = dataset["error"][: 50 * k] if "error" in dataset.column_names else [None] * k
    picks = [i for i, e in enumerate(errors) if e is None] or list(range(k))
    return [
        json.dumps(_cut(dataset[i]), ensure_ascii=False, indent=2, default=str)
        for i in picks[: min(k, len(dataset))]
    ]


def _dtype(feature: Any) -> str:
    dtype = _SPACES.sub(" ", repr(feature))
    return dtype if len(dtype) <= 120 else dtype[:117] + "..."


def _render(
    template: str,
    options: CardOptions,
    prov: Mapping[str, Any],
    *,
    rows: int,
    repo_id: str | None,
    default_name: str,
    metadata: Mapping[str, Any],
    **values: Any,
) -> DatasetCard:
    """What both cards share; ``metadata``: the card's own YAML fields, ``values``: its template's
    (which also reads ``prov`` and its ``source`` directly)."""
    unknown = options.keys() - CardOptions.__annotations__.keys()
    if unknown:
        raise TypeError(f"unexpected keyword argument(s) {sorted(unknown)}")
    repo = repo_id or "<namespace>/<dataset>"
    name = options.get("pretty_name") or (repo.split("/")[-1] if repo_id else default_name)
    source = prov.get("source") or {}
    card_data = DatasetCardData(
        pretty_name=name,
        license=options.get("license") or source.get("license") or None,
        language=options.get("language"),
        size_categories=[size_category(rows)],
        **metadata,
    )
    card: DatasetCard = DatasetCard.from_template(
        card_data,
        template_str=resources.files("synth_datasets.cards").joinpath(template).read_text("utf-8"),
        pretty_name=name,
        repo_id=repo,
        version=prov.get("version") or __version__,
        prov=prov,
        source=source,
        **values,
    )
    return card


def _tags(options: CardOptions, *kinds: str) -> list[str]:
    return sorted({"synthetic", "synth_datasets", *kinds, *options.get("tags", ())})


def build_card(
    dataset: datasets.Dataset,
    *,
    repo_id: str | None = None,
    split: str = "train",
    provenance: Mapping[str, Any] | None = None,
    report: QualityReport | None = None,
    **options: Unpack[CardOptions],
) -> DatasetCard:
    """A card for an expanded dataset; explicit arguments override what ``expand`` recorded.

    ``report`` reuses a ``quality_report`` already computed (it is one pass over the data).
    """
    prov = {**(get_provenance(dataset) or {}), **(provenance or {})}
    source = prov.get("source") or {}
    source_name = source.get("name") or "an unnamed dataset"
    is_hub_id = bool(source.get("hub")) or (
        bool(re.fullmatch(r"[\w.-]+/[\w.-]+", str(source_name)))
        and not str(source_name).endswith((".jsonl", ".json", ".csv", ".parquet"))
    )
    if report is None:
        report = quality_report(dataset, prov)
    lineage = [c for c in LINEAGE_COLUMNS if c in dataset.column_names]
    return _render(
        "dataset_card.md",
        options,
        prov,
        rows=len(dataset),
        repo_id=repo_id,
        default_name="Synthetic dataset",
        metadata={
            "task_categories": options.get("task_categories"),
            "source_datasets": [source_name] if is_hub_id else None,
            "tags": _tags(options),
        },
        report=report,
        is_hub_id=is_hub_id,
        source_name=source_name,
        prompt=prov.get("prompt") if options.get("include_prompt", True) else None,
        schema=[(c, _dtype(f)) for c, f in dataset.features.items()],
        meanings=dict.fromkeys(prov.get("generated_columns") or [], "generated") | LINEAGE_MEANING,
        samples=_samples(dataset),
        split=split,
        lineage_columns=json.dumps(lineage),
    )


def build_sft_card(
    splits: Mapping[str, datasets.Dataset],
    *,
    steps: Sequence[tuple[str, int]],
    expanded_source: str,
    provenance: Mapping[str, Any] | None = None,
    repo_id: str | None = None,
    near: str = "not dropped",
    prefix_column: str = "conv_prefix",
    response_column: str = "response",
    split_note: str = "",
    **options: Unpack[CardOptions],
) -> DatasetCard:
    """A card for a chat dataset made from an expanded one (``scripts/to_sft.py``).

    The generation is told from the expanded dataset's provenance, the preparation from
    ``steps`` (what each step left or removed, in order): the lineage columns are gone by then,
    so the card is the only record of how these rows were made.
    """
    if not splits:
        raise ValueError("build_sft_card needs at least one split")
    prov = dict(provenance or {})
    rows = sum(len(d) for d in splits.values())
    first = next(iter(splits.values()))
    return _render(
        "sft_card.md",
        options,
        prov,
        rows=rows,
        repo_id=repo_id,
        default_name="Synthetic chat dataset",
        metadata={
            "task_categories": options.get("task_categories") or ["text-generation"],
            "tags": _tags(options, "sft"),
        },
        summary=f"{rows} chat rows in {len(splits)} split(s), made from {expanded_source}.",
        prompt=(prov.get("prompt") or None) if options.get("include_prompt", True) else None,
        expanded_source=expanded_source,
        steps=list(steps),
        near=near,
        prefix_column=prefix_column,
        response_column=response_column,
        splits=[(k, len(d)) for k, d in splits.items()],
        split_note=split_note,
        schema=[(c, _dtype(f)) for c, f in first.features.items()],
        sample=_samples(first, k=1)[0] if len(first) else "{}",
    )
