"""A data-quality report of an expanded dataset, computed from the rows alone (card and CLI).

Duplicates are the search ``prep.drop_duplicates`` uses, among the rows without an ``error`` (a
failed row's generated columns are null, so failures would all look alike).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from itertools import product
from typing import Any

import datasets
import jinja2
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .dedup import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_NEAR_THRESHOLD,
    SHINGLE_WORDS,
    DuplicateFinder,
    as_array,
    content_columns,
    is_listlike,
    is_text,
    list_lengths,
    require_dataset,
    row_texts,
)
from .dedup import has_text as _has_text
from .lineage import ERROR_KINDS, LINEAGE_COLUMNS, error_kinds
from .provenance import get_provenance

__all__ = [
    "DEFAULT_NEAR_THRESHOLD",
    "ColumnLengths",
    "Distribution",
    "Histogram",
    "QualityReport",
    "quality_report",
]

# -- the report -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Histogram:
    """How many values fall in each bin ``[edges[i], edges[i + 1])``, what a figure draws; the
    last bin also holds the values beyond it (the top 1 % of a long tail)."""

    edges: tuple[int, ...]
    counts: tuple[int, ...]


_BINS = 40


def _edges(*arrays: np.ndarray) -> np.ndarray:
    """Bins of one whole width from the least of the values in ``arrays`` to their 99th
    percentile, shared by the arrays so they can be drawn over each other."""
    values = np.concatenate([np.asarray(a, dtype=np.int64) for a in arrays])
    if values.size == 0:
        return np.zeros(0, dtype=np.int64)
    low, high = int(values.min()), int(np.percentile(values, 99, method="higher"))
    width = -(-(high - low + 1) // _BINS)  # ceil
    low -= low % width
    bins = -(-(high + 1 - low) // width)
    return low + width * np.arange(bins + 1, dtype=np.int64)


@dataclass(frozen=True)
class Distribution:
    """Summary of a list of counts (rows per seed, characters, turns), and their histogram."""

    count: int
    min: float
    p50: float
    mean: float
    p95: float
    max: float
    histogram: Histogram | None = None

    @classmethod
    def of(
        cls, values: np.ndarray | Sequence[int], edges: np.ndarray | None = None
    ) -> Distribution | None:
        """``edges`` (from ``_edges``, over every array drawn with this one): its histogram."""
        arr = np.asarray(values, dtype=np.float64)
        if arr.size == 0:
            return None
        quantiles = np.percentile(arr, [0, 50, 95, 100]).tolist()
        low, p50, p95, high = (int(x) if x.is_integer() else round(x, 2) for x in quantiles)
        histogram = None
        if edges is not None and edges.size:
            width, bins = int(edges[1] - edges[0]), edges.size - 1
            at = np.minimum((arr.astype(np.int64) - edges[0]) // width, bins - 1)
            counts = np.bincount(at, minlength=bins)
            histogram = Histogram(tuple(edges.tolist()), tuple(counts.tolist()))
        return cls(int(arr.size), low, p50, round(float(arr.mean()), 2), p95, high, histogram)


@dataclass(frozen=True)
class ColumnLengths:
    """Lengths of one column's values: characters, and turns for a conversation."""

    column: str
    kind: str  # "text", "conversation" (list of {role, content}), "message", "nested"
    of: str  # "rows" (this dataset) or "seeds" (the `original` column, once per seed)
    chars: Distribution
    turns: Distribution | None = None


@dataclass(frozen=True)
class QualityReport:
    """What a reader needs to judge the data before training on it; see ``to_markdown``."""

    rows: int
    generated_columns: tuple[str, ...]
    multiplier: int | None
    source_rows: int | None
    targeted: int | None
    linked_seeds: int
    seeds_without_rows: int | None
    rows_per_seed: Distribution | None
    clean_rows_per_seed: Distribution | None
    seeds_below_target: int | None
    returned: int
    clean_rows: int
    error_rows: int
    error_rate: float
    errors_by_kind: dict[str, int]
    unlinked: int
    seed_copies: int | None
    near_seed_copies: int | None
    duplicates: int
    near_duplicates: int | None
    near_threshold: float | None
    lengths: tuple[ColumnLengths, ...] = ()
    # What a run that stopped at its budget left out (the provenance's record), else None.
    partial: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values."""
        return asdict(self)

    def to_markdown(self, heading_level: int = 3) -> str:
        """Tables for a card or a terminal, from the template ``cards/report.md``."""
        text = resources.files("synth_datasets.cards").joinpath("report.md").read_text("utf-8")
        template = jinja2.Environment(trim_blocks=True, lstrip_blocks=True).from_string(text)
        h = "#" * heading_level
        return template.render(r=self, h=h, meanings=ERROR_KINDS, shingle_words=SHINGLE_WORDS)


# -- lengths --------------------------------------------------------------------------------------


def _is_message(t: pa.DataType) -> bool:
    return bool(pa.types.is_struct(t) and t.get_field_index("content") >= 0)


def _kind(t: pa.DataType) -> str | None:
    if is_text(t):
        return "text"
    if is_listlike(t) and _is_message(t.value_type):
        return "conversation"
    if _is_message(t):
        return "message"
    return "nested" if _has_text(t) else None


def _chars(arr: pa.Array) -> np.ndarray:
    """Characters of the text in each value (message structs: their `content` only)."""
    t = arr.type
    if is_text(t):
        return np.asarray(pc.fill_null(pc.utf8_length(arr), 0), dtype=np.int64)
    if pa.types.is_struct(t):
        total = np.zeros(len(arr), dtype=np.int64)
        for i, f in enumerate(t):
            if (f.name == "content" or not _is_message(t)) and _has_text(f.type):
                total += _chars(pc.struct_field(arr, [i]))
        return total
    if is_listlike(t):
        rows = np.repeat(np.arange(len(arr)), list_lengths(arr))
        return np.bincount(rows, weights=_chars(arr.flatten()), minlength=len(arr)).astype(np.int64)
    return np.zeros(len(arr), dtype=np.int64)


# -- the pass -------------------------------------------------------------------------------------


def _new_seeds(
    table: pa.Table, source: np.ndarray, linked: np.ndarray, seen: set[int], fields: Sequence[str]
) -> tuple[list[int], dict[str, pa.Array]]:
    """Seeds met for the first time (at their first row) with an `original`, and its fields."""
    if not fields:
        return [], {}
    found, at = np.unique(source[linked], return_index=True)
    rows = np.flatnonzero(linked)[at].tolist()
    first = [i for s, i in zip(found.tolist(), rows, strict=True) if s not in seen]
    seen.update(found.tolist())
    originals = as_array(table.column("original")).take(pa.array(first, pa.int64()))
    present = pc.fill_null(originals.is_valid(), False)
    originals = originals.filter(present)
    seeds = [int(source[i]) for i, ok in zip(first, present.to_pylist(), strict=True) if ok]
    return seeds, {
        name: pc.struct_field(originals, [originals.type.get_field_index(name)]) for name in fields
    }


_Key = str | tuple[str, str, str]


class _Pass:
    """What one pass over the Arrow batches collects, per row or per seed; figures come after.

    Seed copies are counted only when ``comparable``: every compared column was sent, so the seed
    has it too.
    """

    def __init__(self, finder: DuplicateFinder, generated: list[str], schema: pa.Schema) -> None:
        self.finder, self.generated = finder, generated
        original = schema.field("original").type if "original" in schema.names else pa.null()
        sent = [f.name for f in original] if pa.types.is_struct(original) else []
        names = [c for c in schema.names if c not in LINEAGE_COLUMNS]
        self.kinds = {c: k for c in names if (k := _kind(schema.field(c).type))}
        self.original_fields = sent
        self.seed_columns = [c for c in self.kinds if c in sent and c in generated]
        self.comparable = bool(generated) and all(c in sent for c in generated)
        # Per-row arrays by name; lengths by (column, "rows"/"seeds", "chars"/"turns"), as int32.
        self.arrays: dict[_Key, list[np.ndarray]] = defaultdict(list)
        self.errors: Counter[str] = Counter()
        self.returned = self.near_seed_copies = 0
        self.seen: set[int] = set()
        self.seed_hashes: set[int] = set()
        self.seed_sets: dict[int, np.ndarray | None] = {}

    def add(self, table: pa.Table) -> None:
        n, names, keep = table.num_rows, table.column_names, self.arrays
        clean = np.ones(n, dtype=bool)
        if "error" in names:
            errors = as_array(table.column("error"))
            clean = np.asarray(errors.is_null(), dtype=bool)
            for message in errors.drop_null().to_pylist():
                self.errors.update(error_kinds(message))
        if "generated_raw" in names:
            self.returned += n - table.column("generated_raw").null_count
        source, linked = np.full(n, -1, dtype=np.int64), np.zeros(n, dtype=bool)
        if "source_index" in names:
            source_arr = as_array(table.column("source_index"))
            linked = np.asarray(source_arr.is_valid(), dtype=bool)
            source = np.asarray(pc.fill_null(source_arr, -1), dtype=np.int64)
            keep["linked"].append(linked)
            keep["source"].append(source)
        keep["clean"].append(clean)
        seeds, fields = _new_seeds(table, source, linked, self.seen, self.original_fields)
        if self.generated:
            texts = row_texts(table, self.generated)
            exact, near, sets = self.finder.check(texts, clean)
            keep["exact"].append(exact)
            keep["near"].append(near)
            if self.comparable:
                hashes = self.finder.text_hashes(texts.filter(pa.array(clean)))
                keep["row_hashes"].append(np.array(hashes, dtype=np.uint64))
                if seeds:
                    seed_texts = row_texts(pa.table(fields), self.generated)
                    self.seed_hashes.update(self.finder.text_hashes(seed_texts))
                    if self.finder.near:
                        by_seed = zip(seeds, self.finder.shingle_sets(seed_texts), strict=True)
                        self.seed_sets.update(by_seed)
                if self.finder.near:
                    # A seed's shingles are known from its first row on: every linked row has them.
                    for i in np.flatnonzero(clean & linked).tolist():
                        seed_set = self.seed_sets.get(int(source[i]))
                        self.near_seed_copies += self.finder.similar(sets[i], seed_set)
        for c in self.kinds:
            self._lengths(c, "rows", as_array(table.column(c)))
        for c in self.seed_columns if seeds else ():
            self._lengths(c, "seeds", fields[c])

    def _lengths(self, column: str, of: str, arr: pa.Array) -> None:
        valid = np.asarray(arr.is_valid(), dtype=bool)
        self.arrays[column, of, "chars"].append(_chars(arr)[valid].astype(np.int32))
        if self.kinds[column] == "conversation":
            self.arrays[column, of, "turns"].append(list_lengths(arr)[valid].astype(np.int32))

    def array(self, name: _Key, dtype: type[np.generic] = np.bool_) -> np.ndarray:
        found = self.arrays.get(name)
        return np.concatenate(found) if found else np.zeros(0, dtype)

    def lengths(self) -> tuple[ColumnLengths, ...]:
        """Per column, rows then seeds; the histograms of a column's rows and seeds share bins."""
        out = []
        for (c, k), of in product(self.kinds.items(), ("rows", "seeds")):
            found = {}
            for measure in ("chars", "turns"):
                both = [self.array((c, side, measure), np.int32) for side in ("rows", "seeds")]
                values = both[0] if of == "rows" else both[1]
                found[measure] = Distribution.of(values, _edges(*both))
            if found["chars"] is not None:
                out.append(ColumnLengths(c, k, of, found["chars"], found["turns"]))
        return tuple(out)


def quality_report(
    dataset: datasets.Dataset,
    provenance: Mapping[str, Any] | None = None,
    *,
    near: bool = True,
    near_threshold: float = DEFAULT_NEAR_THRESHOLD,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> QualityReport:
    """Compute the report from ``dataset`` in one pass of Arrow batches.

    ``provenance`` defaults to what ``expand`` recorded (for the multiplier, the number of source
    rows and the generated columns); without it, every non-lineage column is compared.
    """
    require_dataset(dataset, "quality_report")
    prov = {**(get_provenance(dataset) or {}), **(provenance or {})}
    generated = content_columns(dataset, prov)
    finder = DuplicateFinder(near=near, threshold=near_threshold)
    p = _Pass(finder, generated, dataset.features.arrow_schema)
    for table in dataset.with_format("arrow").iter(batch_size):  # Arrow, no Python rows
        p.add(table)
    multiplier, source_rows = prov.get("multiplier"), (prov.get("source") or {}).get("num_rows")
    multiplier = multiplier if isinstance(multiplier, int) else None
    source_rows = source_rows if isinstance(source_rows, int) else None
    seed_pool = np.fromiter(p.seed_hashes, dtype=np.uint64, count=len(p.seed_hashes))
    seed_copies = int(np.isin(p.array("row_hashes", np.uint64), seed_pool).sum())
    rows, error_rows = len(dataset), int((~p.array("clean")).sum())
    # Rows per seed, all and without error (seeds without rows are not in `seeds`).
    linked, source = p.array("linked"), p.array("source", np.int64)
    clean = p.array("clean") if len(linked) else linked
    seeds, counts = np.unique(source[linked], return_counts=True)
    clean_counts = np.bincount(np.searchsorted(seeds, source[linked & clean]), minlength=len(seeds))
    target = multiplier if multiplier and multiplier > 0 and len(seeds) else None
    per_seed = _edges(counts, clean_counts)
    return QualityReport(
        rows=rows,
        generated_columns=tuple(generated),
        multiplier=multiplier,
        source_rows=source_rows,
        targeted=None if source_rows is None or multiplier is None else source_rows * multiplier,
        linked_seeds=len(seeds),
        seeds_without_rows=None if source_rows is None else max(source_rows - len(seeds), 0),
        rows_per_seed=Distribution.of(counts, per_seed),
        clean_rows_per_seed=Distribution.of(clean_counts, per_seed),
        seeds_below_target=None if target is None else int((clean_counts < target).sum()),
        unlinked=int((~linked).sum()),
        returned=p.returned,
        clean_rows=rows - error_rows,
        error_rows=error_rows,
        error_rate=round(error_rows / rows, 6) if rows else 0.0,
        errors_by_kind=dict(sorted(p.errors.items(), key=lambda kv: (-kv[1], kv[0]))),
        seed_copies=seed_copies if p.comparable else None,
        near_seed_copies=p.near_seed_copies if p.comparable and near else None,
        duplicates=int(p.array("exact").sum()),
        near_duplicates=int(p.array("near").sum()) if near and generated else None,
        near_threshold=near_threshold if near else None,
        lengths=p.lengths(),
        partial=prov.get("partial") or None,
    )
