"""A data-quality report of an expanded dataset, computed from the rows alone.

Used by the dataset card and by ``synth-datasets report DIR``. One pass over the data in Arrow
batches feeds one accumulator per group of figures (errors, rows per seed, duplicates, copies of
a seed, lengths), counted with Arrow compute kernels. Duplicates are found by
``synth_datasets.dedup``, the search ``prep.drop_duplicates`` uses, among the rows without an
``error`` (a failed row's generated columns are null, so failures would all look alike).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from itertools import product
from typing import Any, Protocol

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .dedup import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_NEAR_THRESHOLD,
    DEFAULT_NUM_PERM,
    DEFAULT_SHINGLE_WORDS,
    DuplicateFinder,
    as_array,
    content_columns,
    is_listlike,
    is_text,
    iter_arrow_batches,
    list_lengths,
    row_texts,
)
from .errors import ConfigurationError
from .lineage import ERROR_KINDS, LINEAGE_COLUMNS, error_kinds
from .provenance import get_provenance

__all__ = [
    "DEFAULT_NEAR_THRESHOLD",
    "ColumnLengths",
    "Distribution",
    "QualityReport",
    "quality_report",
]

_NO_SEED = "unknown (no `original` column)"


# -- the report -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Distribution:
    """Summary of a list of counts (rows per seed, characters, turns)."""

    count: int
    min: float
    p50: float
    mean: float
    p95: float
    max: float

    @classmethod
    def of(cls, values: np.ndarray | Sequence[float]) -> Distribution | None:
        arr = np.asarray(values, dtype=np.float64)
        if arr.size == 0:
            return None
        p50, p95 = np.percentile(arr, [50, 95])
        return cls(
            count=int(arr.size),
            min=_num(arr.min()),
            p50=_num(p50),
            mean=round(float(arr.mean()), 2),
            p95=_num(p95),
            max=_num(arr.max()),
        )


def _num(x: Any) -> float:
    value = float(x)
    return int(value) if value.is_integer() else round(value, 2)


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
    linked_seeds: int
    rows_per_seed: Distribution | None
    clean_rows_per_seed: Distribution | None
    seeds_below_target: int | None
    returned: int
    error_rows: int
    errors_by_kind: dict[str, int]
    unlinked: int
    seed_copies: int | None
    near_seed_copies: int | None
    duplicates: int
    near_duplicates: int | None
    near_threshold: float | None
    lengths: tuple[ColumnLengths, ...] = field(default_factory=tuple)

    @property
    def clean_rows(self) -> int:
        return self.rows - self.error_rows

    @property
    def error_rate(self) -> float:
        return self.error_rows / self.rows if self.rows else 0.0

    @property
    def targeted(self) -> int | None:
        if self.source_rows is None or self.multiplier is None:
            return None
        return self.source_rows * self.multiplier

    @property
    def seeds_without_rows(self) -> int | None:
        if self.source_rows is None:
            return None
        return max(self.source_rows - self.linked_seeds, 0)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (derived figures included)."""
        out = asdict(self)
        out["generated_columns"] = list(self.generated_columns)
        out["lengths"] = [asdict(x) for x in self.lengths]
        out.update(
            clean_rows=self.clean_rows,
            error_rate=round(self.error_rate, 6),
            targeted=self.targeted,
            seeds_without_rows=self.seeds_without_rows,
        )
        return out

    def to_markdown(self, heading_level: int = 3) -> str:
        """Tables for a card or a terminal: overview, rows per seed, errors, lengths."""
        h = "#" * heading_level
        sections = (
            _overview(self),
            _compared(self),
            _rows_per_seed(self, h),
            _errors(self, h),
            _lengths(self, h),
        )
        return "\n\n".join(s for s in sections if s) + "\n"


# -- markdown sections ----------------------------------------------------------------------------


def _or(value: Any, why: str = "unknown") -> str:
    return why if value is None else str(value)


def _share(n: int, total: int) -> str:
    return f"{n} ({100 * n / total:.1f}%)" if total else str(n)


def _overview(r: QualityReport) -> str:
    without = f" ({r.seeds_without_rows} without any)" if r.seeds_without_rows else ""
    thr = f"{r.near_threshold:g}" if r.near_threshold is not None else None
    near_seed = f"Near-copies of their own seed (Jaccard ≥ {thr})"
    near_dups = f"Near-duplicates within the set (Jaccard ≥ {thr}, exact ones included)"
    rows = [
        ("Rows", r.rows),
        ("Seed rows in the source", _or(r.source_rows)),
        ("Seed rows with generated rows", f"{r.linked_seeds}{without}"),
        ("Generations targeted / returned", f"{_or(r.targeted)} / {r.returned}"),
        ("Rows without error", _share(r.clean_rows, r.rows)),
        ("Rows with an error", _share(r.error_rows, r.rows)),
        ("Unlinked rows (`source_index` null)", r.unlinked),
        ("Exact copies of a seed", _or(r.seed_copies, _NO_SEED)),
        *([(near_seed, _or(r.near_seed_copies, _NO_SEED))] if thr else []),
        ("Exact duplicates within the set", r.duplicates),
        *([(near_dups, _or(r.near_duplicates))] if thr else []),
    ]
    return "\n".join(["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)])


def _compared(r: QualityReport) -> str:
    compared = ", ".join(f"`{c}`" for c in r.generated_columns) or "none"
    return (
        f"Duplicates compare the normalised text (case, Unicode form and spacing ignored) of "
        f"{compared} in rows without an error; near-duplicates use MinHash over "
        f"{DEFAULT_SHINGLE_WORDS}-word shingles. A duplicate is counted once per extra copy."
    )


def _section(h: str, title: str, intro: str, head: str, rows: list[str]) -> str:
    rule = "|" + "---|" * (head.count("|") - 1)
    return "\n".join([f"{h} {title}", "", intro, "", head, rule, *rows])


def _rows_per_seed(r: QualityReport, h: str) -> str | None:
    if r.rows_per_seed is None:
        return None
    rows = [_dist_row("all rows", r.rows_per_seed)]
    if r.clean_rows_per_seed is not None:
        rows.append(_dist_row("rows without error", r.clean_rows_per_seed))
    target = f", target {r.multiplier} (the multiplier)" if r.multiplier else ""
    intro = f"Over the {r.linked_seeds} seed rows that have rows{target}."
    text = _section(h, "Rows per seed", intro, "| | min | median | mean | max |", rows)
    if r.seeds_below_target is not None:
        text += (
            "\n\nSeed rows with fewer rows without error than the multiplier: "
            f"{r.seeds_below_target}."
        )
    return text


def _errors(r: QualityReport, h: str) -> str:
    if not r.errors_by_kind:
        return "No row has an error."
    rows = [
        f"| `{kind}` | {count} | {100 * count / r.rows:.1f}% | {ERROR_KINDS.get(kind, 'other')} |"
        for kind, count in r.errors_by_kind.items()
    ]
    intro = "A row can have more than one kind."
    return _section(h, "Errors by kind", intro, "| kind | rows | share of rows | meaning |", rows)


def _lengths(r: QualityReport, h: str) -> str | None:
    rows = []
    for x in r.lengths:
        rows.append(_length_row(x, "characters", x.chars))
        if x.turns is not None:
            rows.append(_length_row(x, "turns", x.turns))
    intro = (
        "Characters of text (of `content` for messages); turns of conversations. "
        "Seed lengths are taken once per seed row from `original`."
    )
    head = "| column | kind | of | measure | values | min | median | mean | p95 | max |"
    return _section(h, "Lengths", intro, head, rows) if rows else None


def _dist_row(label: str, d: Distribution) -> str:
    return f"| {label} | {d.min} | {d.p50} | {d.mean} | {d.max} |"


def _length_row(x: ColumnLengths, measure: str, d: Distribution) -> str:
    return (
        f"| `{x.column}` | {x.kind} | {x.of} | {measure} | {d.count} | {d.min} | {d.p50} | "
        f"{d.mean} | {d.p95} | {d.max} |"
    )


# -- lengths --------------------------------------------------------------------------------------


def _is_message(t: pa.DataType) -> bool:
    return bool(pa.types.is_struct(t) and t.get_field_index("content") >= 0)


def _has_text(t: pa.DataType) -> bool:
    if is_text(t):
        return True
    if pa.types.is_struct(t):
        return any(_has_text(t.field(i).type) for i in range(t.num_fields))
    if is_listlike(t):
        return _has_text(t.value_type)
    return False


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
        names = ["content"] if _is_message(t) else [t.field(i).name for i in range(t.num_fields)]
        total = np.zeros(len(arr), dtype=np.int64)
        for name in names:
            if _has_text(t.field(name).type):
                total += _chars(pc.struct_field(arr, [t.get_field_index(name)]))
        return total
    if is_listlike(t):
        lengths = list_lengths(arr)
        inner = _chars(arr.flatten())
        rows = np.repeat(np.arange(len(arr)), lengths)
        return np.bincount(rows, weights=inner, minlength=len(arr)).astype(np.int64)
    return np.zeros(len(arr), dtype=np.int64)


# -- the pass -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Batch:
    """One Arrow batch and what more than one accumulator reads from it."""

    table: pa.Table
    clean: np.ndarray  # the row has no error
    source: np.ndarray  # the row's seed, -1 where unlinked
    linked: np.ndarray
    texts: pa.Array | None  # the compared text; None when no column is compared
    exact: np.ndarray  # DuplicateFinder flags
    near: np.ndarray
    sigs: list[np.ndarray | None]
    seeds: list[int]  # seeds met here for the first time whose `original` is present
    seed_fields: dict[str, pa.Array]  # the fields of those seeds' `original`


class _Reader:
    """Makes ``_Batch``es; holds the duplicate search and the seeds met, which span batches."""

    def __init__(
        self, finder: DuplicateFinder, generated: Sequence[str], original_fields: Sequence[str]
    ) -> None:
        self.finder, self.generated, self.original_fields = finder, generated, original_fields
        self._seen: set[int] = set()

    def read(self, table: pa.Table) -> _Batch:
        n, names = table.num_rows, table.column_names
        clean = np.ones(n, dtype=bool)
        if "error" in names:
            clean = np.asarray(as_array(table.column("error")).is_null(), dtype=bool)
        source, linked = np.full(n, -1, dtype=np.int64), np.zeros(n, dtype=bool)
        if "source_index" in names:
            source_arr = as_array(table.column("source_index"))
            linked = np.asarray(source_arr.is_valid(), dtype=bool)
            source = np.asarray(pc.fill_null(source_arr, -1), dtype=np.int64)
        texts = row_texts(table, self.generated) if self.generated else None
        exact = near = np.zeros(n, dtype=bool)
        sigs: list[np.ndarray | None] = [None] * n
        if texts is not None:
            exact, near, sigs = self.finder.check(texts, clean)
        seeds, fields = self._new_seeds(table, source, linked)
        return _Batch(table, clean, source, linked, texts, exact, near, sigs, seeds, fields)

    def _new_seeds(
        self, table: pa.Table, source: np.ndarray, linked: np.ndarray
    ) -> tuple[list[int], dict[str, pa.Array]]:
        """Each seed once, at its first row (rows are grouped by seed, so this is cheap)."""
        if not self.original_fields:
            return [], {}
        starts_run = (np.arange(len(source)) == 0) | (source != np.roll(source, 1))
        first: list[int] = []
        for i in np.flatnonzero(linked & starts_run).tolist():
            if (s := int(source[i])) not in self._seen:
                self._seen.add(s)
                first.append(i)
        originals = as_array(table.column("original")).take(pa.array(first, pa.int64()))
        present = pc.fill_null(originals.is_valid(), False)
        originals = originals.filter(present)
        seeds = [int(source[i]) for i, ok in zip(first, present.to_pylist(), strict=True) if ok]
        if not seeds:
            return [], {}
        return seeds, {
            name: pc.struct_field(originals, [originals.type.get_field_index(name)])
            for name in self.original_fields
        }


class _Accumulator(Protocol):
    def add(self, batch: _Batch) -> None: ...

    def result(self) -> dict[str, Any]: ...  # its fields of the QualityReport


class _Errors:
    """Rows with an error, and rows per error kind (a row can have several)."""

    def __init__(self) -> None:
        self.rows = 0
        self.kinds: Counter[str] = Counter()

    def add(self, batch: _Batch) -> None:
        self.rows += int(len(batch.clean) - batch.clean.sum())
        if "error" in batch.table.column_names:
            for message in as_array(batch.table.column("error")).drop_null().to_pylist():
                self.kinds.update(error_kinds(message))

    def result(self) -> dict[str, Any]:
        kinds = dict(sorted(self.kinds.items(), key=lambda kv: (-kv[1], kv[0])))
        return {"error_rows": self.rows, "errors_by_kind": kinds}


class _PerSeed:
    """Rows per seed (all, and without error), unlinked rows, seeds short of the multiplier."""

    def __init__(self, multiplier: Any) -> None:
        self.multiplier = multiplier if isinstance(multiplier, int) and multiplier > 0 else None
        self.unlinked = 0
        self.sources: list[np.ndarray] = []
        self.clean_sources: list[np.ndarray] = []

    def add(self, batch: _Batch) -> None:
        if "source_index" in batch.table.column_names:
            self.unlinked += int(len(batch.linked) - batch.linked.sum())
            self.sources.append(batch.source[batch.linked])
            self.clean_sources.append(batch.source[batch.linked & batch.clean])

    def result(self) -> dict[str, Any]:
        seeds, counts = np.unique(_concat(self.sources, np.int64), return_counts=True)
        rows_per_seed = Distribution.of(counts)
        clean_per_seed = below = None
        if rows_per_seed is not None:
            clean = np.searchsorted(seeds, _concat(self.clean_sources, np.int64))
            per_seed = np.bincount(clean, minlength=len(seeds))
            clean_per_seed = Distribution.of(per_seed)
            if self.multiplier is not None:
                below = int((per_seed < self.multiplier).sum())
        return {
            "linked_seeds": len(seeds),
            "rows_per_seed": rows_per_seed,
            "clean_rows_per_seed": clean_per_seed,
            "seeds_below_target": below,
            "unlinked": self.unlinked,
        }


class _Sum:
    """One count over all batches (None in the report when it is not ``computed``)."""

    def __init__(self, name: str, count: Callable[[_Batch], int], computed: bool = True) -> None:
        self.name, self.count, self.computed = name, count, computed
        self.total = 0

    def add(self, batch: _Batch) -> None:
        self.total += self.count(batch)

    def result(self) -> dict[str, Any]:
        return {self.name: self.total if self.computed else None}


def _returned(batch: _Batch) -> int:
    """Rows the endpoint returned text for (``generated_raw`` not null)."""
    if "generated_raw" not in batch.table.column_names:
        return 0
    return int(batch.table.num_rows - batch.table.column("generated_raw").null_count)


class _SeedCopies:
    """Rows identical to any seed, and rows near their own seed.

    Counted only when ``comparable``: every compared column was sent, so the seed has it too.
    """

    def __init__(
        self, finder: DuplicateFinder, generated: Sequence[str], *, comparable: bool, near: bool
    ) -> None:
        self.finder, self.generated = finder, list(generated)
        self.comparable, self.near = comparable, near and comparable
        self.row_hashes: list[np.ndarray] = []
        self.seed_hashes: set[int] = set()
        self.seed_sigs: dict[int, np.ndarray | None] = {}
        self.near_copies = 0

    def add(self, batch: _Batch) -> None:
        if not self.comparable or batch.texts is None:
            return
        clean_texts = batch.texts.filter(pa.array(batch.clean))
        self.row_hashes.append(np.array(self.finder.text_hashes(clean_texts), dtype=np.uint64))
        if batch.seeds:
            seed_table = pa.table({c: batch.seed_fields[c] for c in self.generated})
            seed_texts = row_texts(seed_table, self.generated)
            self.seed_hashes.update(self.finder.text_hashes(seed_texts))
            if self.near:
                sigs = self.finder.signatures(seed_texts)
                self.seed_sigs.update(zip(batch.seeds, sigs, strict=True))
        if self.near:
            # A seed's signature is known from its first row on: every linked row carries it.
            for i in np.flatnonzero(batch.clean & batch.linked).tolist():
                seed_sig = self.seed_sigs.get(int(batch.source[i]))
                self.near_copies += self.finder.similar(batch.sigs[i], seed_sig)

    def result(self) -> dict[str, Any]:
        if not self.comparable:
            return {"seed_copies": None, "near_seed_copies": None}
        pool = np.fromiter(self.seed_hashes, dtype=np.uint64, count=len(self.seed_hashes))
        copies = int(np.isin(_concat(self.row_hashes, np.uint64), pool).sum())
        return {"seed_copies": copies, "near_seed_copies": self.near_copies if self.near else None}


class _LengthStats:
    """Characters, and turns of conversations, per text column: of rows and of seeds (`original`).

    Kept as int32 arrays: small even at 10M rows.
    """

    def __init__(
        self,
        schema: pa.Schema,
        data_columns: Sequence[str],
        generated: Sequence[str],
        original_fields: Sequence[str],
    ) -> None:
        self.kinds = {c: k for c in data_columns if (k := _kind(schema.field(c).type)) is not None}
        self.seed_columns = [c for c in self.kinds if c in original_fields and c in generated]
        self.chars: dict[tuple[str, str], list[np.ndarray]] = defaultdict(list)
        self.turns: dict[tuple[str, str], list[np.ndarray]] = defaultdict(list)

    def add(self, batch: _Batch) -> None:
        for c in self.kinds:
            self._add(c, "rows", as_array(batch.table.column(c)))
        if batch.seeds:
            for c in self.seed_columns:
                self._add(c, "seeds", batch.seed_fields[c])

    def _add(self, column: str, of: str, arr: pa.Array) -> None:
        valid = np.asarray(arr.is_valid(), dtype=bool)
        self.chars[column, of].append(_chars(arr)[valid].astype(np.int32))
        if self.kinds[column] == "conversation":
            self.turns[column, of].append(list_lengths(arr)[valid].astype(np.int32))

    def result(self) -> dict[str, Any]:
        found = []
        for (c, k), of in product(self.kinds.items(), ("rows", "seeds")):
            chars = Distribution.of(_concat(self.chars[c, of], np.int32))
            if chars is not None:
                turns = Distribution.of(_concat(self.turns[c, of], np.int32))
                found.append(ColumnLengths(c, k, of, chars, turns))
        return {"lengths": tuple(found)}


def _concat(arrays: list[np.ndarray], dtype: type[np.generic]) -> np.ndarray:
    return np.concatenate(arrays) if arrays else np.zeros(0, dtype)


def _original_fields(schema: pa.Schema) -> list[str]:
    """The columns sent to the endpoint, as the ``original`` struct holds them."""
    if "original" not in schema.names or not pa.types.is_struct(schema.field("original").type):
        return []
    t = schema.field("original").type
    return [t.field(i).name for i in range(t.num_fields)]


def quality_report(
    dataset: datasets.Dataset,
    provenance: Mapping[str, Any] | None = None,
    *,
    near: bool = True,
    near_threshold: float = DEFAULT_NEAR_THRESHOLD,
    num_perm: int = DEFAULT_NUM_PERM,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> QualityReport:
    """Compute the report from ``dataset`` in one pass of Arrow batches.

    ``provenance`` defaults to what ``expand`` recorded (for the multiplier, the number of source
    rows and the generated columns); without it, every non-lineage column is compared.
    """
    if not isinstance(dataset, datasets.Dataset):
        raise ConfigurationError(
            f"quality_report takes a datasets.Dataset, got {type(dataset).__name__}"
        )
    prov = {**(get_provenance(dataset) or {}), **(provenance or {})}
    names = dataset.column_names
    schema = dataset.features.arrow_schema
    generated = content_columns(dataset, prov)
    data_columns = [c for c in names if c not in LINEAGE_COLUMNS]
    original_fields = _original_fields(schema)
    finder = DuplicateFinder(near=near, threshold=near_threshold, num_perm=num_perm)
    comparable = bool(generated) and all(c in original_fields for c in generated)
    accumulators: list[_Accumulator] = [
        _Errors(),
        _Sum("returned", _returned),
        _PerSeed(prov.get("multiplier")),
        _Sum("duplicates", lambda b: int(b.exact.sum())),
        _Sum("near_duplicates", lambda b: int(b.near.sum()), computed=near and bool(generated)),
        _SeedCopies(finder, generated, comparable=comparable, near=near),
        _LengthStats(schema, data_columns, generated, original_fields),
    ]
    reader = _Reader(finder, generated, original_fields)
    for table in iter_arrow_batches(dataset, names, batch_size):
        batch = reader.read(table)
        for acc in accumulators:
            acc.add(batch)
    figures = {k: v for acc in accumulators for k, v in acc.result().items()}
    multiplier, source_rows = prov.get("multiplier"), (prov.get("source") or {}).get("num_rows")
    return QualityReport(
        rows=len(dataset),
        generated_columns=tuple(generated),
        multiplier=multiplier if isinstance(multiplier, int) else None,
        source_rows=source_rows if isinstance(source_rows, int) else None,
        near_threshold=near_threshold if near else None,
        **figures,
    )
