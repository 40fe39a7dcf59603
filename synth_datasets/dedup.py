"""Duplicate search over the rows of a dataset: exact (same normalised text) and near (MinHash).

``report`` counts and ``prep.drop_duplicates`` drops with this one search, so they agree. A row's
text is its generated columns (else every non-lineage column), NFKC, lower case, spacing collapsed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from itertools import pairwise
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash  # a dependency of `datasets`

from .errors import ConfigurationError
from .lineage import LINEAGE_COLUMNS
from .provenance import get_provenance

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_NEAR_THRESHOLD",
    "SHINGLE_WORDS",
    "DuplicateFinder",
    "content_columns",
    "require_dataset",
    "row_texts",
]

DEFAULT_NEAR_THRESHOLD = 0.85
_NUM_PERM = 128  # MinHash permutations
DEFAULT_BATCH_SIZE = 1000

# Separators of nested values: whitespace inside values is collapsed to " ", so they are unique.
_FIELD_SEP = pa.scalar("\t", pa.large_string())  # between the fields of a struct
_ITEM_SEP = pa.scalar("\n", pa.large_string())  # between the items of a list
_COLUMN_SEP = pa.scalar("\n\n", pa.large_string())  # between columns
# Trimmed from both ends of each word before shingling, so "blink," and "blink" are one word.
_PUNCTUATION = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~¡¿«»‘’‚“”„‹›–—…·"
# Odd 64-bit constants that spread each word's hash before the shingle is mixed: one per word.
_SHINGLE_MULTIPLIERS = (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9)
SHINGLE_WORDS = len(_SHINGLE_MULTIPLIERS)


# -- text of a row, in Arrow ----------------------------------------------------------------------


def is_text(t: pa.DataType) -> bool:
    # string_view exists from pyarrow 16 on; datasets 4 allows older pyarrow.
    is_view = getattr(pa.types, "is_string_view", None)
    return pa.types.is_string(t) or pa.types.is_large_string(t) or bool(is_view and is_view(t))


def is_listlike(t: pa.DataType) -> bool:
    return bool(pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t))


def list_lengths(arr: pa.Array) -> np.ndarray:
    return np.asarray(pc.fill_null(pc.list_value_length(arr), 0), dtype=np.int64)


def as_array(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


def _text(arr: pa.Array) -> pa.Array:
    """Normalised text of each value (large_string, null for null); structure kept by separators."""
    t = arr.type
    if pa.types.is_dictionary(t):
        return _text(arr.dictionary_decode())
    if is_text(t):
        lower = pc.utf8_lower(pc.utf8_normalize(arr.cast(pa.large_string()), "NFKC"))
        # RE2's \s is ASCII whitespace; NFKC already turned most Unicode spaces into " ". Only runs
        # and non-space whitespace are rewritten (a regex hit per ordinary space is slow).
        return pc.utf8_trim_whitespace(pc.replace_substring_regex(lower, r"\s\s+|[^\S ]", " "))
    if pa.types.is_struct(t):
        if t.num_fields == 0:
            return pa.array([""] * len(arr), pa.large_string())
        parts = [_text(pc.struct_field(arr, [i])) for i in range(t.num_fields)]
        joined = pc.binary_join_element_wise(
            *parts, _FIELD_SEP, null_handling="replace", null_replacement=""
        )
        return pc.if_else(arr.is_null(), pa.scalar(None, pa.large_string()), joined)
    if is_listlike(t):
        offsets = np.concatenate([[0], np.cumsum(list_lengths(arr))])
        items = pc.fill_null(_text(arr.flatten()), "")
        lists = pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), items)
        joined = pc.binary_join(lists, _ITEM_SEP)
        return pc.if_else(arr.is_null(), pa.scalar(None, pa.large_string()), joined)
    try:
        return arr.cast(pa.large_string())
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
        return pa.array([None if v is None else str(v) for v in arr.to_pylist()], pa.large_string())


def row_texts(table: pa.Table | pa.RecordBatch, columns: Sequence[str]) -> pa.Array:
    """The normalised text of ``columns`` for each row of an Arrow batch (what duplicates share)."""
    parts = [pc.fill_null(_text(as_array(table.column(c))), "") for c in columns]
    return pc.binary_join_element_wise(*parts, _COLUMN_SEP)


# -- duplicates -----------------------------------------------------------------------------------


def _shingle_hashes(texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """32-bit hashes of the k-word shingles of every text, and the row of each shingle.

    Each distinct word is hashed once; a text of fewer than k words is one shingle of them all.
    """
    k = SHINGLE_WORDS
    words = pc.ascii_split_whitespace(texts)  # normalised text: only ASCII whitespace is left
    lengths = list_lengths(words)
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
    starts = np.cumsum(counts) - counts
    end = (starts + counts)[rows]
    pos = np.arange(n, dtype=np.int64)
    padded = np.concatenate([h, np.zeros(k, np.uint64)])
    acc = np.zeros(n, np.uint64)
    with np.errstate(over="ignore"):
        for s, multiplier in enumerate(_SHINGLE_MULTIPLIERS):
            word = np.where(pos + s < end, padded[np.minimum(pos + s, n)], np.uint64(0))
            acc = (acc ^ word) * np.uint64(multiplier)
        # A 64-bit finaliser, so that shingle hashes are spread over all bits.
        acc ^= acc >> np.uint64(33)
        acc *= np.uint64(0xFF51AFD7ED558CCD)
        acc ^= acc >> np.uint64(33)
        acc *= np.uint64(0xC4CEB9FE1A85EC53)
        acc ^= acc >> np.uint64(33)
        acc &= np.uint64(0xFFFFFFFF)
    first = pos == starts[rows]
    keep = (pos + k <= end) | (first & (counts[rows] < k))
    return acc[keep], rows[keep]


class DuplicateFinder:
    """Flags rows that repeat an earlier row, exactly or (with ``near``) nearly.

    Exact: the same 64-bit hash of the normalised text. Near: MinHash-estimated Jaccard similarity
    of k-word shingle sets at least ``threshold``; LSH candidates are checked against the stored
    signature, so its false positives are not counted. Only the first row of a group is indexed.
    """

    def __init__(self, *, near: bool = True, threshold: float = DEFAULT_NEAR_THRESHOLD) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ConfigurationError(f"threshold must be in (0, 1], got {threshold!r}")
        self.near = near
        self.threshold = float(threshold)
        self._seen: set[int] = set()
        self._signatures: list[np.ndarray] = []
        self._minhash: Any = None
        self._lsh: Any = None
        if near:
            from datasketch import MinHash, MinHashLSH

            # One MinHash reused for every row (clear + update): no per-row object set-up.
            self._minhash = MinHash(num_perm=_NUM_PERM, seed=1, hashfunc=int)
            # LSH only proposes candidates; each is then checked at the real threshold. Above 0.9
            # datasketch finds no banding with 2+ bands, so propose at 0.9 there (more candidates).
            self._lsh = MinHashLSH(threshold=min(self.threshold, 0.9), num_perm=_NUM_PERM)
        self._min_equal = math.ceil(self.threshold * _NUM_PERM - 1e-9)

    @staticmethod
    def text_hashes(texts: pa.Array) -> list[int]:
        """A 64-bit hash of each text (null counts as empty)."""
        values = pc.fill_null(texts, "").cast(pa.large_binary()).to_pylist()
        return [xxhash.xxh3_64_intdigest(v) for v in values]

    def signatures(self, texts: pa.Array) -> list[np.ndarray | None]:
        """MinHash signatures of ``texts`` (``near`` finders only); None for a text with no word."""
        hashes, owner = _shingle_hashes(texts)
        bounds = np.searchsorted(owner, np.arange(len(texts) + 1)).tolist()
        values, m = hashes.tolist(), self._minhash

        def signature(words: list[int]) -> np.ndarray:
            m.clear()
            m.update_batch(words)
            sig: np.ndarray = m.hashvalues.copy()
            return sig

        return [signature(values[a:b]) if a < b else None for a, b in pairwise(bounds)]

    def similar(self, a: np.ndarray | None, b: np.ndarray | None) -> bool:
        """Whether two signatures estimate a Jaccard similarity of at least the threshold."""
        if a is None or b is None:
            return False
        return int(np.count_nonzero(a == b)) >= self._min_equal

    def check(
        self, texts: pa.Array, mask: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray | None]]:
        """Flags for one batch: (exact, near, signatures); rows where ``mask`` is False are skipped.

        ``near`` includes the exact duplicates (so it equals ``exact`` for an exact-only finder).
        """
        n = len(texts)
        rows = np.arange(n) if mask is None else np.flatnonzero(mask)
        exact, near = np.zeros((2, n), dtype=bool)
        sigs: list[np.ndarray | None] = [None] * n
        sub = texts.take(pa.array(rows, pa.int64()))
        computed = self.signatures(sub) if self.near else [None] * len(rows)
        for row, key, sig in zip(rows.tolist(), self.text_hashes(sub), computed, strict=True):
            sigs[row] = sig
            if key in self._seen:
                exact[row] = near[row] = True
                continue
            self._seen.add(key)
            if sig is None or self._lsh is None:
                continue
            self._minhash.hashvalues = sig  # LSH reads only the hash values: one MinHash serves
            if any(self.similar(sig, self._signatures[c]) for c in self._lsh.query(self._minhash)):
                near[row] = True
            else:
                self._lsh.insert(len(self._signatures), self._minhash, check_duplication=False)
                self._signatures.append(sig)
        return exact, near, sigs


# -- reading a dataset ----------------------------------------------------------------------------


def require_dataset(ds: Any, what: str) -> None:
    if not isinstance(ds, datasets.Dataset):
        raise ConfigurationError(f"{what} takes a datasets.Dataset, got {type(ds).__name__}")


def content_columns(
    dataset: datasets.Dataset, provenance: Mapping[str, Any] | None = None
) -> list[str]:
    """The columns whose text makes a row what it is: the generated ones, else all but lineage."""
    prov = provenance if provenance is not None else (get_provenance(dataset) or {})
    names = dataset.column_names
    generated = [c for c in prov.get("generated_columns") or [] if c in names]
    return generated or [c for c in names if c not in LINEAGE_COLUMNS]
