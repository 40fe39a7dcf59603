"""A data-quality report of an expanded dataset, computed from the rows alone.

Used by the dataset card and by ``synth-datasets report DIR``. One pass over the data in Arrow
batches: errors, lineage and lengths are counted with Arrow compute kernels; only the duplicate
search does a little Python per row (one hash lookup, and for near-duplicates one MinHash of
pre-hashed word shingles and one LSH lookup, via ``datasketch``). The same duplicate search backs
``synth_datasets.prep.drop_duplicates``, so the report counts exactly what that helper drops.

Text is compared after normalisation: NFKC, lower case, runs of whitespace collapsed. The rows
compared are those without an ``error`` (a failed row's generated columns are null, so failures
would all look alike); the text of a row is its generated columns (from the provenance ``expand``
recorded, else every non-lineage column).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash  # a dependency of `datasets`

from .errors import ConfigurationError
from .lineage import ERROR_KINDS, LINEAGE_COLUMNS, error_kinds
from .provenance import get_provenance

if TYPE_CHECKING:
    from datasketch import MinHash

__all__ = [
    "DEFAULT_NEAR_THRESHOLD",
    "ERROR_KINDS",
    "ColumnLengths",
    "Distribution",
    "DuplicateFinder",
    "QualityReport",
    "content_columns",
    "error_kinds",
    "iter_arrow_batches",
    "quality_report",
    "row_texts",
]

DEFAULT_NEAR_THRESHOLD = 0.85
DEFAULT_NUM_PERM = 128
DEFAULT_SHINGLE_WORDS = 3
DEFAULT_BATCH_SIZE = 1000

# Separators of nested values: whitespace inside values is collapsed to " ", so they are unique.
_FIELD_SEP = pa.scalar("\t", pa.large_string())  # between the fields of a struct
_ITEM_SEP = pa.scalar("\n", pa.large_string())  # between the items of a list
_COLUMN_SEP = pa.scalar("\n\n", pa.large_string())  # between columns
# Trimmed from both ends of each word before shingling, so "blink," and "blink" are one word.
_PUNCTUATION = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~¡¿«»‘’‚“”„‹›–—…·"
_MASK32 = np.uint64(0xFFFFFFFF)
# Odd 64-bit constants that spread each word's hash before the shingle is mixed.
_SHINGLE_MULTIPLIERS = (
    0x9E3779B97F4A7C15,
    0xC2B2AE3D27D4EB4F,
    0x165667B19E3779F9,
    0xD6E8FEB86659FD93,
    0xFF51AFD7ED558CCD,
    0xC4CEB9FE1A85EC53,
    0x94D049BB133111EB,
    0xBF58476D1CE4E5B9,
)


# -- text of a row, in Arrow ----------------------------------------------------------------------


def _is_text(t: pa.DataType) -> bool:
    # string_view exists from pyarrow 16 on; datasets 4 allows older pyarrow.
    is_view = getattr(pa.types, "is_string_view", None)
    return pa.types.is_string(t) or pa.types.is_large_string(t) or bool(is_view and is_view(t))


def _normalise_strings(arr: pa.Array) -> pa.Array:
    arr = pc.utf8_normalize(arr.cast(pa.large_string()), "NFKC")
    arr = pc.utf8_lower(arr)
    # RE2's \s is ASCII whitespace; NFKC already turned most Unicode spaces into " ". Only runs
    # and non-space whitespace are rewritten (a regex hit per ordinary space is slow).
    arr = pc.replace_substring_regex(arr, r"\s\s+|[^\S ]", " ")
    return pc.utf8_trim_whitespace(arr)


def _list_lengths(arr: pa.Array) -> np.ndarray:
    return np.asarray(pc.fill_null(pc.list_value_length(arr), 0), dtype=np.int64)


def _as_array(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


def _text(arr: pa.Array) -> pa.Array:
    """Normalised text of each value (large_string, null for null); structure kept by separators."""
    t = arr.type
    if pa.types.is_dictionary(t):
        return _text(arr.dictionary_decode())
    if pa.types.is_null(t):
        return pa.nulls(len(arr), pa.large_string())
    if _is_text(t):
        return _normalise_strings(arr)
    if pa.types.is_struct(t):
        if t.num_fields == 0:
            return pa.array([""] * len(arr), pa.large_string())
        parts = [_text(pc.struct_field(arr, [i])) for i in range(t.num_fields)]
        joined = pc.binary_join_element_wise(
            *parts, _FIELD_SEP, null_handling="replace", null_replacement=""
        )
        return pc.if_else(arr.is_null(), pa.scalar(None, pa.large_string()), joined)
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        lengths = _list_lengths(arr)
        items = pc.fill_null(_text(arr.flatten()), "")
        offsets = np.zeros(len(arr) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        lists = pa.LargeListArray.from_arrays(pa.array(offsets), items)
        joined = pc.binary_join(lists, _ITEM_SEP)
        return pc.if_else(arr.is_null(), pa.scalar(None, pa.large_string()), joined)
    try:
        return arr.cast(pa.large_string())
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
        return pa.array([None if v is None else str(v) for v in arr.to_pylist()], pa.large_string())


def row_texts(table: pa.Table | pa.RecordBatch, columns: Sequence[str]) -> pa.Array:
    """The normalised text of ``columns`` for each row of an Arrow batch (what duplicates share).

    Case, Unicode form and spacing do not make a row new; the structure of nested values does.
    """
    if not columns:
        raise ConfigurationError("row_texts needs at least one column")
    parts = [pc.fill_null(_text(_as_array(table.column(c))), "") for c in columns]
    if len(parts) == 1:
        return parts[0]
    return pc.binary_join_element_wise(*parts, _COLUMN_SEP)


# -- duplicates -----------------------------------------------------------------------------------


def _mix64(x: np.ndarray) -> np.ndarray:
    """A 64-bit finaliser, so that shingle hashes are spread over all bits."""
    x = x ^ (x >> np.uint64(33))
    x = x * np.uint64(0xFF51AFD7ED558CCD)
    x = x ^ (x >> np.uint64(33))
    x = x * np.uint64(0xC4CEB9FE1A85EC53)
    return x ^ (x >> np.uint64(33))


def _shingle_hashes(texts: pa.Array, k: int) -> tuple[np.ndarray, np.ndarray]:
    """32-bit hashes of the k-word shingles of every text, and the row of each shingle.

    Words are hashed once per distinct word in the batch; shingles are combined in numpy. A text
    of fewer than k words is one shingle of all its words.
    """
    words = pc.ascii_split_whitespace(texts)  # normalised text: only ASCII whitespace is left
    lengths = _list_lengths(words)
    flat = pc.utf8_trim(words.flatten(), characters=_PUNCTUATION)
    rows = np.repeat(np.arange(len(texts), dtype=np.int64), lengths)
    nonempty = np.asarray(pc.greater(pc.binary_length(flat), 0), dtype=bool)
    if not nonempty.all():  # "" splits into [""]: no word
        flat = flat.filter(pa.array(nonempty))
        rows = rows[nonempty]
    if len(flat) == 0:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64)
    encoded = pc.dictionary_encode(flat)
    distinct = encoded.dictionary.cast(pa.large_binary()).to_pylist()
    word_hash = np.fromiter(
        (xxhash.xxh3_64_intdigest(w) for w in distinct), dtype=np.uint64, count=len(distinct)
    )
    h = word_hash[np.asarray(encoded.indices)]
    n = len(h)
    counts = np.bincount(rows, minlength=len(texts))
    starts = np.zeros(len(texts), dtype=np.int64)
    np.cumsum(counts[:-1], out=starts[1:])
    end = (starts + counts)[rows]
    pos = np.arange(n, dtype=np.int64)
    padded = np.concatenate([h, np.zeros(k, np.uint64)])
    acc = np.zeros(n, np.uint64)
    with np.errstate(over="ignore"):
        for s in range(k):
            word = np.where(pos + s < end, padded[np.minimum(pos + s, n)], np.uint64(0))
            acc = (acc ^ word) * np.uint64(_SHINGLE_MULTIPLIERS[s % len(_SHINGLE_MULTIPLIERS)])
        acc = _mix64(acc) & _MASK32
    first = pos == starts[rows]
    keep = (pos + k <= end) | (first & (counts[rows] < k))
    return acc[keep], rows[keep]


class DuplicateFinder:
    """Flags rows that repeat an earlier row, exactly or (with ``near``) nearly.

    Exact: the same normalised text (a 64-bit hash of it). Near: estimated Jaccard similarity of
    the k-word shingle sets at least ``threshold``, found with a MinHash LSH index (datasketch)
    and checked against the stored signature, so LSH's false positives are not counted. The first
    row of each group is kept; only kept rows are indexed.
    """

    def __init__(
        self,
        *,
        near: bool = True,
        threshold: float = DEFAULT_NEAR_THRESHOLD,
        num_perm: int = DEFAULT_NUM_PERM,
        shingle_words: int = DEFAULT_SHINGLE_WORDS,
        seed: int = 1,
    ) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ConfigurationError(f"threshold must be in (0, 1], got {threshold!r}")
        if shingle_words < 1:
            raise ConfigurationError(f"shingle_words must be >= 1, got {shingle_words!r}")
        self.near = near
        self.threshold = float(threshold)
        self.num_perm = num_perm
        self.shingle_words = shingle_words
        self._seen: set[int] = set()
        self._signatures: list[np.ndarray] = []
        self._minhash: MinHash | None = None
        self._lsh: Any = None
        if near:
            from datasketch import MinHash, MinHashLSH

            # One MinHash reused for every row (clear + update): no per-row object set-up.
            self._minhash = MinHash(num_perm=num_perm, seed=seed, hashfunc=int)
            # LSH only proposes candidates; each is then checked at the real threshold. Above 0.9
            # datasketch finds no banding with 2+ bands, so propose at 0.9 there (more candidates).
            self._lsh = MinHashLSH(threshold=min(self.threshold, 0.9), num_perm=num_perm)
        self._min_equal = math.ceil(self.threshold * num_perm - 1e-9)

    @staticmethod
    def text_hashes(texts: pa.Array) -> list[int]:
        """A 64-bit hash of each text (null counts as empty)."""
        values = pc.fill_null(texts, "").cast(pa.large_binary()).to_pylist()
        return [xxhash.xxh3_64_intdigest(v) for v in values]

    def signatures(self, texts: pa.Array) -> list[np.ndarray | None]:
        """MinHash signatures of ``texts``; None for a text with no word."""
        if self._minhash is None:
            raise ConfigurationError("signatures need a DuplicateFinder made with near=True")
        hashes, owner = _shingle_hashes(texts, self.shingle_words)
        bounds = np.searchsorted(owner, np.arange(len(texts) + 1))
        values = hashes.tolist()
        m = self._minhash
        out: list[np.ndarray | None] = []
        for i in range(len(texts)):
            a, b = bounds[i], bounds[i + 1]
            if a == b:
                out.append(None)
                continue
            m.clear()
            m.update_batch(values[a:b])
            out.append(m.hashvalues.copy())
        return out

    def similar(self, a: np.ndarray | None, b: np.ndarray | None) -> bool:
        """Whether two signatures estimate a Jaccard similarity of at least the threshold."""
        if a is None or b is None:
            return False
        return int(np.count_nonzero(a == b)) >= self._min_equal

    def check(
        self, texts: pa.Array, mask: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray | None]]:
        """Flags for one batch, in order: (exact, near, signatures).

        Rows where ``mask`` is False are neither flagged nor indexed. ``near`` includes the exact
        duplicates (so it equals ``exact``, and signatures are all None, for an exact-only finder).
        """
        n = len(texts)
        rows = np.arange(n) if mask is None else np.flatnonzero(mask)
        exact = np.zeros(n, dtype=bool)
        near = np.zeros(n, dtype=bool)
        sigs: list[np.ndarray | None] = [None] * n
        if len(rows) == 0:
            return exact, near, sigs
        sub = texts.take(pa.array(rows, pa.int64()))
        hashes = self.text_hashes(sub)
        computed = self.signatures(sub) if self.near else [None] * len(rows)
        seen = self._seen
        for j, row in enumerate(rows):
            key = hashes[j]
            sig = computed[j]
            sigs[row] = sig
            if key in seen:
                exact[row] = near[row] = True
                continue
            seen.add(key)
            if sig is None or self._lsh is None:
                continue
            if any(
                self.similar(sig, self._signatures[c])
                for c in self._lsh.query(self._minhash_of(sig))
            ):
                near[row] = True
                continue
            index = len(self._signatures)
            self._signatures.append(sig)
            self._lsh.insert(index, self._minhash_of(sig), check_duplication=False)
        return exact, near, sigs

    def _minhash_of(self, sig: np.ndarray) -> Any:
        # LSH reads only the hash values (and their length); reuse the one MinHash object.
        assert self._minhash is not None
        self._minhash.hashvalues = sig
        return self._minhash


# -- statistics -----------------------------------------------------------------------------------


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
        unknown = "unknown"
        thr = f"{self.near_threshold:g}" if self.near_threshold is not None else None

        def share(n: int) -> str:
            return f"{n} ({100 * n / self.rows:.1f}%)" if self.rows else str(n)

        def opt(v: Any, why: str = unknown) -> str:
            return why if v is None else str(v)

        lines = [
            "| | |",
            "|---|---|",
            f"| Rows | {self.rows} |",
            f"| Seed rows in the source | {opt(self.source_rows)} |",
            f"| Seed rows with generated rows | {self.linked_seeds}"
            + (f" ({self.seeds_without_rows} without any)" if self.seeds_without_rows else "")
            + " |",
            f"| Generations targeted / returned | {opt(self.targeted)} / {self.returned} |",
            f"| Rows without error | {share(self.clean_rows)} |",
            f"| Rows with an error | {share(self.error_rows)} |",
            f"| Unlinked rows (`source_index` null) | {self.unlinked} |",
            f"| Exact copies of a seed | "
            f"{opt(self.seed_copies, 'unknown (no `original` column)')} |",
        ]
        if thr is not None:
            lines.append(
                f"| Near-copies of their own seed (Jaccard ≥ {thr}) | "
                f"{opt(self.near_seed_copies, 'unknown (no `original` column)')} |"
            )
        lines.append(f"| Exact duplicates within the set | {self.duplicates} |")
        if thr is not None:
            lines.append(
                f"| Near-duplicates within the set (Jaccard ≥ {thr}, exact ones included) | "
                f"{opt(self.near_duplicates)} |"
            )
        parts = ["\n".join(lines)]
        compared = ", ".join(f"`{c}`" for c in self.generated_columns) or "none"
        parts.append(
            f"Duplicates compare the normalised text (case, Unicode form and spacing ignored) of "
            f"{compared} in rows without an error; near-duplicates use MinHash over "
            f"{DEFAULT_SHINGLE_WORDS}-word shingles. A duplicate is counted once per extra copy."
        )
        if self.rows_per_seed is not None:
            target = f", target {self.multiplier} (the multiplier)" if self.multiplier else ""
            table = [
                f"{h} Rows per seed",
                "",
                f"Over the {self.linked_seeds} seed rows that have rows{target}.",
                "",
                "| | min | median | mean | max |",
                "|---|---|---|---|---|",
                _dist_row("all rows", self.rows_per_seed),
            ]
            if self.clean_rows_per_seed is not None:
                table.append(_dist_row("rows without error", self.clean_rows_per_seed))
            if self.seeds_below_target is not None:
                table += [
                    "",
                    f"Seed rows with fewer rows without error than the multiplier: "
                    f"{self.seeds_below_target}.",
                ]
            parts.append("\n".join(table))
        if self.errors_by_kind:
            table = [
                f"{h} Errors by kind",
                "",
                "A row can have more than one kind.",
                "",
                "| kind | rows | share of rows | meaning |",
                "|---|---|---|---|",
            ]
            for kind, count in self.errors_by_kind.items():
                meaning = ERROR_KINDS.get(kind, "other")
                table.append(f"| `{kind}` | {count} | {100 * count / self.rows:.1f}% | {meaning} |")
            parts.append("\n".join(table))
        else:
            parts.append("No row has an error.")
        if self.lengths:
            table = [
                f"{h} Lengths",
                "",
                "Characters of text (of `content` for messages); turns of conversations. "
                "Seed lengths are taken once per seed row from `original`.",
                "",
                "| column | kind | of | measure | values | min | median | mean | p95 | max |",
                "|---|---|---|---|---|---|---|---|---|---|",
            ]
            for x in self.lengths:
                table.append(_length_row(x, "characters", x.chars))
                if x.turns is not None:
                    table.append(_length_row(x, "turns", x.turns))
            parts.append("\n".join(table))
        return "\n\n".join(parts) + "\n"


def _dist_row(label: str, d: Distribution) -> str:
    return f"| {label} | {d.min} | {d.p50} | {d.mean} | {d.max} |"


def _length_row(x: ColumnLengths, measure: str, d: Distribution) -> str:
    return (
        f"| `{x.column}` | {x.kind} | {x.of} | {measure} | {d.count} | {d.min} | {d.p50} | "
        f"{d.mean} | {d.p95} | {d.max} |"
    )


# -- lengths --------------------------------------------------------------------------------------


def _is_message(t: pa.DataType) -> bool:
    return pa.types.is_struct(t) and t.get_field_index("content") >= 0


def _is_listlike(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def _has_text(t: pa.DataType) -> bool:
    if _is_text(t):
        return True
    if pa.types.is_struct(t):
        return any(_has_text(t.field(i).type) for i in range(t.num_fields))
    if _is_listlike(t):
        return _has_text(t.value_type)
    return False


def _kind(t: pa.DataType) -> str | None:
    if _is_text(t):
        return "text"
    if _is_listlike(t) and _is_message(t.value_type):
        return "conversation"
    if _is_message(t):
        return "message"
    return "nested" if _has_text(t) else None


def _chars(arr: pa.Array) -> np.ndarray:
    """Characters of the text in each value (message structs: their `content` only)."""
    t = arr.type
    if _is_text(t):
        return np.asarray(pc.fill_null(pc.utf8_length(arr), 0), dtype=np.int64)
    if pa.types.is_struct(t):
        names = ["content"] if _is_message(t) else [t.field(i).name for i in range(t.num_fields)]
        total = np.zeros(len(arr), dtype=np.int64)
        for name in names:
            if _has_text(t.field(name).type):
                total += _chars(pc.struct_field(arr, [t.get_field_index(name)]))
        return total
    if _is_listlike(t):
        lengths = _list_lengths(arr)
        inner = _chars(arr.flatten())
        rows = np.repeat(np.arange(len(arr)), lengths)
        return np.bincount(rows, weights=inner, minlength=len(arr)).astype(np.int64)
    return np.zeros(len(arr), dtype=np.int64)


class _Lengths:
    """Per-column length values gathered batch by batch (int32 arrays: small even at 10M rows)."""

    def __init__(self, column: str, kind: str, of: str) -> None:
        self.column, self.kind, self.of = column, kind, of
        self.chars: list[np.ndarray] = []
        self.turns: list[np.ndarray] = []

    def add(self, arr: pa.Array) -> None:
        if len(arr) == 0:
            return
        valid = np.asarray(arr.is_valid(), dtype=bool)
        self.chars.append(_chars(arr)[valid].astype(np.int32))
        if self.kind == "conversation":
            self.turns.append(_list_lengths(arr)[valid].astype(np.int32))

    def result(self) -> ColumnLengths | None:
        chars = Distribution.of(np.concatenate(self.chars)) if self.chars else None
        if chars is None:
            return None
        turns = Distribution.of(np.concatenate(self.turns)) if self.turns else None
        return ColumnLengths(self.column, self.kind, self.of, chars, turns)


# -- the pass -------------------------------------------------------------------------------------


def content_columns(
    dataset: datasets.Dataset, provenance: Mapping[str, Any] | None = None
) -> list[str]:
    """The columns whose text makes a row what it is: the generated ones, else all but lineage."""
    prov = provenance if provenance is not None else (get_provenance(dataset) or {})
    names = dataset.column_names
    generated = [c for c in prov.get("generated_columns") or [] if c in names]
    return generated or [c for c in names if c not in LINEAGE_COLUMNS]


def iter_arrow_batches(
    dataset: datasets.Dataset, columns: Sequence[str], batch_size: int = DEFAULT_BATCH_SIZE
) -> Iterator[pa.Table]:
    """``columns`` of ``dataset`` as Arrow tables of at most ``batch_size`` rows (no Python rows)."""
    view = dataset.select_columns(list(columns)).with_format("arrow")
    yield from view.iter(batch_size=batch_size)


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
    prov = dict(get_provenance(dataset) or {})
    prov.update(provenance or {})
    names = dataset.column_names
    generated = content_columns(dataset, prov)
    has = {c: c in names for c in LINEAGE_COLUMNS}
    original_fields: list[str] = []
    if has["original"]:
        original_type = dataset.features.arrow_schema.field("original").type
        if pa.types.is_struct(original_type):
            original_fields = [original_type.field(i).name for i in range(original_type.num_fields)]
    # The seed is comparable only when every generated column was also sent.
    seed_comparable = bool(generated) and all(c in original_fields for c in generated)
    data_columns = [c for c in names if c not in LINEAGE_COLUMNS]
    length_columns = [
        (c, k)
        for c in data_columns
        if (k := _kind(dataset.features.arrow_schema.field(c).type)) is not None
    ]
    seed_length_columns = [
        (c, k) for c, k in length_columns if c in original_fields and c in generated
    ]
    lengths = {c: _Lengths(c, k, "rows") for c, k in length_columns}
    seed_lengths = {c: _Lengths(c, k, "seeds") for c, k in seed_length_columns}

    finder = DuplicateFinder(near=near, threshold=near_threshold, num_perm=num_perm)
    kinds: dict[str, int] = {}
    sources: list[np.ndarray] = []
    clean_sources: list[np.ndarray] = []
    row_hashes: list[np.ndarray] = []
    seed_hashes: set[int] = set()
    seed_sigs: dict[int, np.ndarray | None] = {}
    seen_seeds: set[int] = set()
    error_rows = unlinked = returned = duplicates = near_duplicates = near_seed = 0

    needed = list(
        dict.fromkeys([*generated, *data_columns, *(c for c in LINEAGE_COLUMNS if has[c])])
    )
    for batch in iter_arrow_batches(dataset, needed, batch_size):
        n = batch.num_rows
        if has["error"]:
            error = _as_array(batch.column("error"))
            clean = np.asarray(error.is_null(), dtype=bool)
            failed = error.filter(pc.invert(error.is_null()))
            for message in failed.to_pylist():
                for kind in error_kinds(message):
                    kinds[kind] = kinds.get(kind, 0) + 1
        else:
            clean = np.ones(n, dtype=bool)
        error_rows += int(n - clean.sum())
        if has["generated_raw"]:
            returned += n - batch.column("generated_raw").null_count
        if has["source_index"]:
            source_arr = _as_array(batch.column("source_index"))
            linked = np.asarray(source_arr.is_valid(), dtype=bool)
            unlinked += int(n - linked.sum())
            source = np.asarray(pc.fill_null(source_arr, -1), dtype=np.int64)
            sources.append(source[linked])
            clean_sources.append(source[linked & clean])
        else:
            source = np.full(n, -1, dtype=np.int64)
            linked = np.zeros(n, dtype=bool)
        for c, acc in lengths.items():
            acc.add(_as_array(batch.column(c)))

        texts = row_texts(batch, generated) if generated else None
        if texts is not None:
            exact, near_flags, sigs = finder.check(texts, clean)
            duplicates += int(exact.sum())
            near_duplicates += int(near_flags.sum())
            row_hashes.append(
                np.array(finder.text_hashes(texts.filter(pa.array(clean))), dtype=np.uint64)
            )
        # Each seed once: its first row in this pass (rows are grouped by seed, so this is cheap).
        if has["original"] and original_fields:
            starts_run = (np.arange(n) == 0) | (source != np.roll(source, 1))
            first: list[int] = []
            for i in np.flatnonzero(linked & starts_run).tolist():
                if (s := int(source[i])) not in seen_seeds:
                    seen_seeds.add(s)
                    first.append(i)
            if first:
                originals = _as_array(batch.column("original")).take(pa.array(first, pa.int64()))
                present = pc.fill_null(originals.is_valid(), False)
                originals = originals.filter(present)
                first = [i for i, ok in zip(first, present.to_pylist(), strict=True) if ok]
                fields = {
                    name: pc.struct_field(originals, [originals.type.get_field_index(name)])
                    for name in original_fields
                }
                for c, acc in seed_lengths.items():
                    acc.add(fields[c])
                if seed_comparable and first:
                    seed_table = pa.table({c: fields[c] for c in generated})
                    seed_texts = row_texts(seed_table, generated)
                    seed_hashes.update(finder.text_hashes(seed_texts))
                    if near:
                        for i, sig in zip(first, finder.signatures(seed_texts), strict=True):
                            seed_sigs[int(source[i])] = sig
            if seed_comparable and near and texts is not None:
                # A seed's signature is known from its first row on: every linked row carries it.
                for i in np.flatnonzero(clean & linked).tolist():
                    near_seed += finder.similar(sigs[i], seed_sigs.get(int(source[i])))

    seed_copies: int | None = None
    if seed_comparable:
        hashes = np.concatenate(row_hashes) if row_hashes else np.zeros(0, np.uint64)
        pool = np.fromiter(seed_hashes, dtype=np.uint64, count=len(seed_hashes))
        seed_copies = int(np.isin(hashes, pool).sum())

    rows_per_seed = clean_per_seed = None
    below: int | None = None
    linked_seeds = 0
    if has["source_index"]:
        all_sources = np.concatenate(sources) if sources else np.zeros(0, np.int64)
        seeds, counts = np.unique(all_sources, return_counts=True)
        linked_seeds = len(seeds)
        rows_per_seed = Distribution.of(counts)
        if rows_per_seed is not None:
            clean_all = np.concatenate(clean_sources) if clean_sources else np.zeros(0, np.int64)
            clean_seeds, clean_counts = np.unique(clean_all, return_counts=True)
            per_seed = np.zeros(len(seeds), dtype=np.int64)
            per_seed[np.searchsorted(seeds, clean_seeds)] = clean_counts
            clean_per_seed = Distribution.of(per_seed)
            multiplier = prov.get("multiplier")
            if isinstance(multiplier, int) and multiplier > 0:
                below = int((per_seed < multiplier).sum())

    source_rows = (prov.get("source") or {}).get("num_rows")
    multiplier = prov.get("multiplier")
    ordered_kinds = dict(sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0])))
    length_results = [
        r for acc in (*lengths.values(), *seed_lengths.values()) if (r := acc.result()) is not None
    ]
    length_results.sort(key=lambda x: (data_columns.index(x.column), x.of != "rows"))
    return QualityReport(
        rows=len(dataset),
        generated_columns=tuple(generated),
        multiplier=multiplier if isinstance(multiplier, int) else None,
        source_rows=source_rows if isinstance(source_rows, int) else None,
        linked_seeds=linked_seeds,
        rows_per_seed=rows_per_seed,
        clean_rows_per_seed=clean_per_seed,
        seeds_below_target=below,
        returned=returned,
        error_rows=error_rows,
        errors_by_kind=ordered_kinds,
        unlinked=unlinked,
        seed_copies=seed_copies,
        near_seed_copies=near_seed if (seed_comparable and near) else None,
        duplicates=duplicates,
        near_duplicates=near_duplicates if near and generated else None,
        near_threshold=near_threshold if near else None,
        lengths=tuple(length_results),
    )
