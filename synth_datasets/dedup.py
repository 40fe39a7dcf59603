"""Duplicate search over the rows of a dataset: exact (same normalised text) and near (MinHash).

``report`` counts and ``prep.drop_duplicates`` drops with this one search, so they agree. A row's
text is its generated columns (else every non-lineage column), NFKC, lower case, spacing collapsed.
Its words (shingles, n-grams) are what spaces separate, and each character of Chinese, Japanese,
Thai and the other scripts written without spaces (``_words``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
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
    "MAX_NGRAM",
    "SHINGLE_WORDS",
    "DuplicateFinder",
    "content_columns",
    "distinct",
    "jaccard",
    "lsh_bands",
    "ngram_hashes",
    "require_dataset",
    "row_texts",
    "text_batches",
]

DEFAULT_NEAR_THRESHOLD = 0.85
_NUM_PERM = 64  # MinHash permutations: they only propose candidates (see lsh_bands)
DEFAULT_BATCH_SIZE = 1000

# Separators of nested values: whitespace inside values is collapsed to " ", so they are unique.
_FIELD_SEP = pa.scalar("\t", pa.large_string())  # between the fields of a struct
_ITEM_SEP = pa.scalar("\n", pa.large_string())  # between the items of a list
_COLUMN_SEP = pa.scalar("\n\n", pa.large_string())  # between columns
# Trimmed from both ends of each word before shingling, so "blink," and "blink" are one word
# (and "、" or "。", which _SPACELESS makes words of their own, are no word). Zero-width spaces and
# joiners too: Thai, Khmer and Burmese writers put them between words, where they would otherwise
# be words of their own.
_PUNCTUATION = (
    "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~¡¿«»‘’‚“”„‹›–—…·"
    "、。〈〉《》「」『』【】〔〕〖〗〘〙〚〛〜〝〞〟〰・๏๚๛၊။។៕៖"
    "\u200b\u200c\u200d\u2060\ufeff"
)
# A character of a script written without spaces between words, with the marks on it (see _words):
# Han, kana and the scripts of South-East Asia (Thai, Lao, Khmer, Burmese, Tai Le, Tai Lue, Lanna);
# also CJK punctuation and symbols (U+3000-303F), the kana middle dot and the prolonged sound mark.
_SPACELESS = (
    r"[\p{Han}\p{Hiragana}\p{Katakana}\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}\p{Tai_Le}"
    r"\p{New_Tai_Lue}\p{Tai_Tham}\x{3000}-\x{303F}\x{30FB}\x{30FC}]\p{M}*"
)
SHINGLE_WORDS = 3  # words per shingle of the near-duplicate search
# How often LSH may fail to propose a pair exactly at the threshold (see lsh_bands).
_LSH_MISS = 1e-3


# -- text of a row, in Arrow ----------------------------------------------------------------------


def is_text(t: pa.DataType) -> bool:
    # string_view exists from pyarrow 16 on; datasets 4 allows older pyarrow.
    is_view = getattr(pa.types, "is_string_view", None)
    return pa.types.is_string(t) or pa.types.is_large_string(t) or bool(is_view and is_view(t))


def is_listlike(t: pa.DataType) -> bool:
    return bool(pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t))


def has_text(t: pa.DataType) -> bool:
    """Whether values of this type hold text (a string, or a list or struct with one inside)."""
    if pa.types.is_struct(t):
        return any(has_text(f.type) for f in t)
    return is_text(t) or (is_listlike(t) and has_text(t.value_type))


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


def _splitmix64(state: int) -> tuple[int, int]:
    state = (state + 0x9E3779B97F4A7C15) & _MASK64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return state, z ^ (z >> 31)


def _word_multipliers(count: int) -> list[int]:
    """Odd 64-bit constants that spread each word's hash before it is mixed: one per position."""
    out, state = [], 0x5EED
    for _ in range(count):
        state, value = _splitmix64(state)
        out.append(value | 1)
    return out


_MASK64 = (1 << 64) - 1
MAX_NGRAM = 64  # words per n-gram: one mixing constant per position
_MULTIPLIERS = _word_multipliers(MAX_NGRAM)


def _words(texts: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """The words of each normalised text (trimmed of punctuation, empty ones gone), flat, and the
    row of each word.

    Words are what spaces separate, except in scripts written without them (Chinese, Japanese,
    Thai, ...: ``_SPACELESS``), where each character is a word, so that a sentence is not one
    word and n-grams count characters. As BERT's tokenizer does for CJK and data-juicer's
    MinHash for Chinese ("character"), and as Unicode's default word boundaries (UAX #29) fall
    between ideographs: no dictionary (jieba, MeCab, PyThaiNLP) is needed, and a text without
    such characters gets exactly the words it had. Hangul is left alone: Korean has spaces.
    """
    spaced = pc.replace_substring_regex(texts, _SPACELESS, r" \0 ")
    split = pc.ascii_split_whitespace(spaced)  # normalised text: only ASCII whitespace is left
    flat = pc.utf8_trim(split.flatten(), characters=_PUNCTUATION)
    rows = np.repeat(np.arange(len(texts), dtype=np.int64), list_lengths(split))
    nonempty = np.asarray(pc.greater(pc.binary_length(flat), 0), dtype=bool)
    if not nonempty.all():  # "" splits into [""]: no word
        flat = flat.filter(pa.array(nonempty))
        rows = rows[nonempty]
    return flat, rows


def ngram_hashes(
    texts: pa.Array, n: int, *, whole_short: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of the ``n``-word n-grams of every normalised text, and the row of each.

    Each distinct word is hashed once. A text of fewer than ``n`` words has no n-gram, or with
    ``whole_short`` one of all its words.
    """
    if not 1 <= n <= MAX_NGRAM:
        raise ConfigurationError(f"n-grams of 1 to {MAX_NGRAM} words, got n={n!r}")
    flat, rows = _words(texts)
    if len(flat) == 0:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64)
    encoded = pc.dictionary_encode(flat)
    distinct = encoded.dictionary.cast(pa.large_binary()).to_pylist()
    word_hash = np.fromiter(
        (xxhash.xxh3_64_intdigest(w) for w in distinct), dtype=np.uint64, count=len(distinct)
    )
    h = word_hash[np.asarray(encoded.indices)]
    size = len(h)
    counts = np.bincount(rows, minlength=len(texts))
    starts = np.cumsum(counts) - counts
    end = (starts + counts)[rows]
    pos = np.arange(size, dtype=np.int64)
    padded = np.concatenate([h, np.zeros(n, np.uint64)])
    acc = np.zeros(size, np.uint64)
    with np.errstate(over="ignore"):
        for s, multiplier in enumerate(_MULTIPLIERS[:n]):
            word = np.where(pos + s < end, padded[np.minimum(pos + s, size)], np.uint64(0))
            acc = (acc ^ word) * np.uint64(multiplier)
        # A 64-bit finaliser, so that the hashes are spread over all bits.
        acc ^= acc >> np.uint64(33)
        acc *= np.uint64(0xFF51AFD7ED558CCD)
        acc ^= acc >> np.uint64(33)
        acc *= np.uint64(0xC4CEB9FE1A85EC53)
        acc ^= acc >> np.uint64(33)
    keep = pos + n <= end
    if whole_short:
        keep |= (pos == starts[rows]) & (counts[rows] < n)
    return acc[keep], rows[keep]


def distinct(values: np.ndarray, *, in_place: bool = False) -> np.ndarray:
    """The sorted distinct values of an integer array (``in_place``: sorting ``values`` itself,
    no copy). By sorting: numpy 2's ``np.unique`` hashes integers instead, 30 times slower on
    arrays of 64-bit hashes."""
    ordered = values if in_place else values.copy()
    ordered.sort(kind="stable")  # runs already sorted are merged, not sorted again
    if len(ordered) < 2:
        return ordered
    keep = np.empty(len(ordered), dtype=bool)
    keep[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return ordered[keep]


def lsh_bands(threshold: float, num_perm: int = _NUM_PERM) -> tuple[int, int]:
    """(bands, rows per band) of the LSH index for ``threshold``: the most rows per band (the
    fewest candidates to check) with which a pair exactly at the threshold fails to become a
    candidate at most once in 1000 (higher similarities fail far less often)."""
    best = (num_perm, 1)
    for r in range(1, num_perm + 1):
        b = num_perm // r
        if (1.0 - threshold**r) ** b <= _LSH_MISS:
            best = (b, r)
    return best


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard similarity of two shingle sets (sorted arrays of distinct hashes)."""
    common = np.intersect1d(a, b, assume_unique=True).size
    return common / (a.size + b.size - common)


class DuplicateFinder:
    """Flags rows that repeat an earlier row, exactly or (with ``near``) nearly.

    Exact: the same 64-bit hash of the normalised text. Near: a Jaccard similarity of the k-word
    shingle sets of at least ``threshold``. MinHash signatures, cut into bands for recall
    (``lsh_bands``), propose candidates: rows that share a band. Each candidate is then checked
    on the two shingle sets, so the decision is the true Jaccard similarity; the bands may only
    fail to propose a pair, about once in 1000 exactly at the threshold and less above it.
    ``check`` indexes only the first row of each group.

    The band index is a dict of 64-bit band keys to row keys: datasketch's ``MinHashLSH`` keeps a
    set per bucket and every band's bytes per key, several times the memory.
    """

    def __init__(self, *, near: bool = True, threshold: float = DEFAULT_NEAR_THRESHOLD) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ConfigurationError(f"threshold must be in (0, 1], got {threshold!r}")
        self.near = near
        self.threshold = float(threshold)
        self._seen: set[int] = set()
        self._sets: list[np.ndarray] = []
        self._buckets: dict[int, int | list[int]] = {}
        self._minhash: Any = None
        self.bands, self.rows_per_band = lsh_bands(self.threshold)
        # Per band: a multiplier per row and a salt, so equal values in two bands differ.
        mix = _word_multipliers(self.rows_per_band + self.bands)
        self._band_mix = np.array(mix[: self.rows_per_band], dtype=np.uint64)
        self._band_salt = np.array(mix[self.rows_per_band :], dtype=np.uint64)
        if near:
            from datasketch import MinHash

            # One MinHash reused for every row (clear + update): no per-row object set-up.
            self._minhash = MinHash(num_perm=_NUM_PERM, seed=1, hashfunc=int)

    @staticmethod
    def text_hashes(texts: pa.Array) -> list[int]:
        """A 64-bit hash of each text (null counts as empty)."""
        values = pc.fill_null(texts, "").cast(pa.large_binary()).to_pylist()
        return [xxhash.xxh3_64_intdigest(v) for v in values]

    @staticmethod
    def shingle_sets(texts: pa.Array) -> list[np.ndarray | None]:
        """The set of k-word shingles of each text, as sorted distinct 32-bit hashes; None for a
        text with no word (a text of fewer than k words is one shingle of them all)."""
        hashes, owner = ngram_hashes(texts, SHINGLE_WORDS, whole_short=True)
        low = (hashes & np.uint64(0xFFFFFFFF)).astype(np.uint32)  # MinHash takes 32-bit values
        bounds = np.searchsorted(owner, np.arange(len(texts) + 1)).tolist()
        return [distinct(low[a:b]) if a < b else None for a, b in pairwise(bounds)]

    def band_keys(self, shingles: np.ndarray) -> list[int]:
        """The LSH band keys of a shingle set (``near`` finders only): a hash of each band of
        its MinHash signature."""
        m = self._minhash
        m.clear()
        m.update_batch(shingles.tolist())
        bands = m.hashvalues[: self.bands * self.rows_per_band].reshape(self.bands, -1)
        with np.errstate(over="ignore"):
            keys = (bands * self._band_mix).sum(axis=1, dtype=np.uint64) ^ self._band_salt
        out: list[int] = keys.tolist()
        return out

    def similar(self, a: np.ndarray | None, b: np.ndarray | None) -> bool:
        """Whether two shingle sets have a Jaccard similarity of at least the threshold."""
        if a is None or b is None:
            return False
        small, large = sorted((a.size, b.size))
        if small < self.threshold * large:  # |A ∩ B| / |A ∪ B| <= |A| / |B|
            return False
        return jaccard(a, b) >= self.threshold - 1e-12

    def matches(
        self, shingles: np.ndarray, keys: list[int], skip: Callable[[int], bool] | None = None
    ) -> Iterator[int]:
        """Keys of the indexed sets similar to ``shingles`` (whose band keys are ``keys``), in
        the order added; candidates ``skip`` says yes to are not checked."""
        candidates: set[int] = set()
        for band_key in keys:
            found = self._buckets.get(band_key)
            if isinstance(found, int):
                candidates.add(found)
            elif found is not None:
                candidates.update(found)
        for key in sorted(candidates):
            if (skip is None or not skip(key)) and self.similar(shingles, self._sets[key]):
                yield key

    def add(self, shingles: np.ndarray, keys: list[int]) -> int:
        """Index a shingle set under its band keys; returns its key (0, 1, 2, ... as added)."""
        key = len(self._sets)
        self._sets.append(shingles)
        buckets = self._buckets
        for band_key in keys:
            found = buckets.get(band_key)
            if found is None:
                buckets[band_key] = key
            elif isinstance(found, int):
                buckets[band_key] = [found, key]
            else:
                found.append(key)
        return key

    def check(
        self, texts: pa.Array, mask: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray | None]]:
        """Flags for one batch: (exact, near, shingle sets); rows where ``mask`` is False are
        skipped (no shingle set either).

        ``near`` includes the exact duplicates (so it equals ``exact`` for an exact-only finder).
        """
        n = len(texts)
        rows = np.arange(n) if mask is None else np.flatnonzero(mask)
        exact, near = np.zeros((2, n), dtype=bool)
        sets: list[np.ndarray | None] = [None] * n
        sub = texts.take(pa.array(rows, pa.int64()))
        computed = self.shingle_sets(sub) if self.near else [None] * len(rows)
        for row, key, shingles in zip(rows.tolist(), self.text_hashes(sub), computed, strict=True):
            sets[row] = shingles
            if key in self._seen:
                exact[row] = near[row] = True
                continue
            self._seen.add(key)
            if shingles is None:
                continue
            keys = self.band_keys(shingles)
            if next(self.matches(shingles, keys), None) is not None:
                near[row] = True
            else:
                self.add(shingles, keys)
        return exact, near, sets


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


def text_batches(
    ds: datasets.Dataset, columns: Sequence[str] | None, extra: Sequence[str] = ()
) -> Iterator[tuple[pa.Array, np.ndarray | None, pa.RecordBatch]]:
    """Per Arrow batch: the normalised text of ``columns`` (default ``content_columns``) of each
    row, which rows have no ``error`` (None: no such column), and the batch (with the ``extra``
    columns the dataset has). The columns are checked at the call, not at the first batch."""
    cols = list(columns) if columns is not None else content_columns(ds)
    missing = [c for c in cols if c not in ds.column_names]
    if missing or not cols:
        raise ConfigurationError(
            f"columns to compare must be columns of the dataset; got {cols}, "
            f"the dataset has {ds.column_names}"
        )
    has_error = "error" in ds.column_names
    wanted = [*cols, *(["error"] if has_error else []), *(c for c in extra if c in ds.column_names)]
    read = list(dict.fromkeys(wanted))

    def batches() -> Iterator[tuple[pa.Array, np.ndarray | None, pa.RecordBatch]]:
        for batch in ds.select_columns(read).with_format("arrow").iter(DEFAULT_BATCH_SIZE):
            clean = np.asarray(batch.column("error").is_null(), bool) if has_error else None
            yield row_texts(batch, cols), clean, batch

    return batches()
