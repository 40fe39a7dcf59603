"""Training-data prep on an expanded ``datasets.Dataset`` with datasets' own steps (no pandas).

For supervised fine-tuning: ``drop_errors``, ``mix_in_seeds`` (optional: the real rows back,
first), ``drop_duplicates(near=True)`` (a generated copy of a seed goes, the seed stays),
``decontaminate`` (optional: rows quoting an evaluation set go), ``split_by_seed`` (no seed on
both sides of train/test), then ``to_messages`` (a ``messages`` column for TRL's SFTTrainer).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from numbers import Real
from typing import TYPE_CHECKING, Any, TypedDict

import datasets
import numpy as np
import pyarrow as pa
from datasets import Features, List, Value

from .contamination import EvalIndex, EvalSet, find_contamination, index_eval_sets
from .dedup import (
    DEFAULT_NEAR_THRESHOLD,
    DuplicateFinder,
    require_dataset,
    text_batches,
)
from .errors import ConfigurationError
from .layout import make_examples, plan_layout
from .lineage import LINEAGE_COLUMNS
from .provenance import attach_provenance, get_provenance

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack from Python 3.11 on

__all__ = [
    "MESSAGES_FEATURE",
    "DuplicateOptions",
    "EvalIndex",
    "EvalSet",
    "check_test_size",
    "cross_split_duplicates",
    "decontaminate",
    "drop_duplicates",
    "drop_errors",
    "drop_lineage",
    "duplicate_mask",
    "find_contamination",
    "held_out_rows",
    "index_eval_sets",
    "mix_in_seeds",
    "seed_groups",
    "split_by_seed",
    "to_messages",
]

MESSAGES_FEATURE = List({"role": Value("string"), "content": Value("string")})


class DuplicateOptions(TypedDict, total=False):  # what drop_duplicates passes to duplicate_mask
    near: bool
    threshold: float
    columns: Sequence[str] | None


def drop_errors(ds: datasets.Dataset) -> datasets.Dataset:
    """Only the rows whose ``error`` is null (all of a dataset without that column)."""
    require_dataset(ds, "drop_errors")
    if "error" not in ds.column_names:
        return ds
    return ds.filter(
        lambda errors: [e is None for e in errors],
        input_columns=["error"],
        batched=True,
        desc="Dropping error rows",
    )


def duplicate_mask(
    ds: datasets.Dataset,
    *,
    near: bool = False,
    threshold: float = DEFAULT_NEAR_THRESHOLD,
    columns: Sequence[str] | None = None,
) -> np.ndarray:
    """True for each row that repeats an earlier one (what ``drop_duplicates`` drops); the quality
    report's search. Rows with an ``error`` are never flagged: that is ``drop_errors``' job."""
    require_dataset(ds, "duplicate_mask")
    finder = DuplicateFinder(near=near, threshold=threshold)
    flags: list[np.ndarray] = []
    for texts, clean, _ in text_batches(ds, columns):
        exact, near_flags, _ = finder.check(texts, clean)
        flags.append(near_flags if near else exact)
    return np.concatenate(flags) if flags else np.zeros(0, dtype=bool)


def drop_duplicates(ds: datasets.Dataset, **options: Unpack[DuplicateOptions]) -> datasets.Dataset:
    """Keep the first of each group of rows with the same normalised text (``near``: similar).

    ``columns`` default to the generated columns ``expand`` recorded (else all non-lineage
    columns); the quality report counts the same rows.
    """
    drop = duplicate_mask(ds, **options)
    return ds.select(np.flatnonzero(~drop)) if drop.any() else ds


# -- a split without leakage ----------------------------------------------------------------------


class _Groups:
    """Union-find over row numbers; the smallest row of a group is its root."""

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        parent, root = self.parent, i
        while parent[root] != root:
            root = parent[root]
        while parent[i] != root:
            parent[i], i = root, parent[i]
        return root

    def join(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def seed_groups(
    ds: datasets.Dataset,
    *,
    threshold: float = DEFAULT_NEAR_THRESHOLD,
    columns: Sequence[str] | None = None,
) -> np.ndarray:
    """The group of each row (its first row's number): the rows of one ``source_index`` (a seed
    row put back by ``mix_in_seeds`` has its seed's), joined with every group they share an
    exact or near duplicate (Jaccard >= ``threshold``) with, through any chain of such pairs.

    Rows with an ``error`` join by seed only; unlinked rows (null ``source_index``) by duplicates.
    Every near pair is joined, not only pairs with the first row of a group: each row's text is
    indexed and every similar earlier text found.
    """
    require_dataset(ds, "seed_groups")
    groups = _Groups(len(ds))
    finder = DuplicateFinder(near=True, threshold=threshold)
    first_of_seed: dict[int, int] = {}
    first_of_text: dict[int, int] = {}
    row_of_key: list[int] = []
    offset = 0
    for texts, clean, batch in text_batches(ds, columns, extra=["source_index"]):
        if "source_index" in batch.schema.names:
            for i, source in enumerate(batch.column("source_index").to_pylist()):
                if source is not None:
                    groups.join(offset + i, first_of_seed.setdefault(source, offset + i))
        rows = np.arange(batch.num_rows) if clean is None else np.flatnonzero(clean)
        sub = texts.take(pa.array(rows, pa.int64()))
        found = zip(rows.tolist(), finder.text_hashes(sub), finder.shingle_sets(sub), strict=True)
        for i, text_hash, shingles in found:
            row = offset + i
            first = first_of_text.setdefault(text_hash, row)
            if first != row:  # the same text: whatever is near it is near the first one
                groups.join(row, first)
                continue
            if shingles is None:
                continue
            keys = finder.band_keys(shingles)

            def joined(key: int, row: int = row) -> bool:
                return groups.find(row_of_key[key]) == groups.find(row)

            for key in finder.matches(shingles, keys, skip=joined):
                groups.join(row, row_of_key[key])
            finder.add(shingles, keys)
            row_of_key.append(row)
        offset += batch.num_rows
    return np.array([groups.find(i) for i in range(len(ds))], dtype=np.int64)


def check_test_size(test_size: float) -> None:
    """Refuse a ``test_size`` that is neither a fraction in (0, 1) nor a whole number of rows
    >= 1, before any work (the number of rows is checked by ``held_out_rows``)."""
    if isinstance(test_size, bool) or not isinstance(test_size, Real):
        raise ConfigurationError(
            f"test_size must be a fraction or a number of rows, got {test_size!r}",
            option="test_size",
        )
    if not math.isfinite(test_size):
        raise ConfigurationError(
            f"test_size must be a finite number, got {test_size}", option="test_size"
        )
    if test_size <= 0:
        raise ConfigurationError(f"test_size must be > 0, got {test_size}", option="test_size")
    if test_size >= 1 and test_size != int(test_size):
        raise ConfigurationError(
            f"test_size is a fraction below 1 or a whole number, got {test_size}",
            option="test_size",
        )


def held_out_rows(test_size: float, n: int) -> int:
    """Rows asked for in the test split, as ``train_test_split`` reads ``test_size``."""
    check_test_size(test_size)
    if n == 0:
        raise ConfigurationError("the dataset has no rows to split into train and test")
    rows = int(test_size) if test_size >= 1 else max(1, round(float(test_size) * n))
    if rows >= n:
        raise ConfigurationError(
            f"test_size {test_size:g} leaves no training rows out of {n}", option="test_size"
        )
    return rows


def _closest_total(sizes: np.ndarray, target: int) -> np.ndarray:
    """Which groups to take (a mask over ``sizes``) so that their rows come as close to
    ``target`` as whole groups allow (ties: fewer rows), between 1 row and all but one; of the
    groups of one size, the first ones in the order given.

    Exact, as a bounded knapsack over the distinct sizes: for each size, the fewest groups of it
    that reach each total from the totals reachable with the sizes before it.
    """
    total = int(sizes.sum())
    limit = min(target + int(sizes.max()), total - 1)  # the closest total above is below this
    values, counts = np.unique(sizes, return_counts=True)
    reach = np.zeros(limit + 1, dtype=bool)
    reach[0] = True
    used: list[np.ndarray] = []
    for value, count in zip(values.tolist(), counts.tolist(), strict=True):
        width = -(-(limit + 1) // value) * value
        grid = np.zeros(width, dtype=bool)
        grid[: limit + 1] = reach
        grid = grid.reshape(-1, value)  # grid[q, r]: total q * value + r
        q = np.arange(grid.shape[0])[:, None]
        last = np.maximum.accumulate(np.where(grid, q, -1), axis=0)  # the last reachable q' <= q
        steps = np.where(last >= 0, q - last, count + 1).reshape(-1)[: limit + 1]
        used.append(steps.astype(np.int64))
        reach = steps <= count
    totals = np.flatnonzero(reach[1:]) + 1
    if totals.size == 0:
        raise ConfigurationError("no group is small enough to leave rows for training")
    best = int(totals[np.argmin(np.abs(totals - target) * 2 + (totals > target))])
    take = np.zeros(len(sizes), dtype=bool)
    for value, steps in zip(values.tolist()[::-1], used[::-1], strict=True):
        k = int(steps[best])
        take[np.flatnonzero(sizes == value)[:k]] = True
        best -= k * value
    return take


def split_by_seed(
    ds: datasets.Dataset,
    test_size: float = 0.1,
    *,
    seed: int = 42,
    threshold: float = DEFAULT_NEAR_THRESHOLD,
    columns: Sequence[str] | None = None,
) -> datasets.DatasetDict:
    """``train`` and ``test`` with no seed on both sides: whole ``seed_groups`` go to one side.

    A row-wise split puts a seed's generations (paraphrases of each other), or a seed and its
    paraphrase, on both sides, and the test score then measures memorisation. Groups are drawn
    in a random order fixed by ``seed``, and the test split gets as close to ``test_size`` (a
    fraction of the rows, or a number of rows) as whole groups allow. Rows keep their order.
    """
    require_dataset(ds, "split_by_seed")
    target = held_out_rows(test_size, len(ds))
    labels = seed_groups(ds, threshold=threshold, columns=columns)
    roots, group_of_row, sizes = np.unique(labels, return_inverse=True, return_counts=True)
    if len(roots) < 2:
        raise ConfigurationError(
            f"split_by_seed: the {len(ds)} rows form one group (one seed, or joined by "
            "duplicates): nothing can be held out without leakage"
        )
    order = np.random.default_rng(seed).permutation(len(roots))
    in_test = np.zeros(len(roots), dtype=bool)
    in_test[order[_closest_total(sizes[order], target)]] = True
    test = in_test[group_of_row.reshape(-1)]
    return datasets.DatasetDict(
        {"train": ds.select(np.flatnonzero(~test)), "test": ds.select(np.flatnonzero(test))}
    )


def cross_split_duplicates(
    train: datasets.Dataset,
    test: datasets.Dataset,
    *,
    threshold: float = DEFAULT_NEAR_THRESHOLD,
    columns: Sequence[str] | None = None,
) -> int:
    """Pairs of a ``train`` row and a ``test`` row that are exact or near duplicates (Jaccard >=
    ``threshold``), among rows without an ``error``: what a split leaks, measured after it."""
    require_dataset(train, "cross_split_duplicates")
    require_dataset(test, "cross_split_duplicates")
    finder = DuplicateFinder(near=True, threshold=threshold)
    copies: dict[int, int] = {}  # text hash -> train rows with that text
    copies_of_key: list[int] = []  # indexed text -> its text hash
    for texts, clean, _ in text_batches(train, columns):
        sub = texts if clean is None else texts.filter(pa.array(clean))
        for text_hash, shingles in zip(
            finder.text_hashes(sub), finder.shingle_sets(sub), strict=True
        ):
            copies[text_hash] = copies.get(text_hash, 0) + 1
            if copies[text_hash] == 1 and shingles is not None:
                finder.add(shingles, finder.band_keys(shingles))
                copies_of_key.append(text_hash)
    pairs = 0
    for texts, clean, _ in text_batches(test, columns):
        sub = texts if clean is None else texts.filter(pa.array(clean))
        for text_hash, shingles in zip(
            finder.text_hashes(sub), finder.shingle_sets(sub), strict=True
        ):
            if shingles is None:  # no word: only an exact copy can match
                pairs += copies.get(text_hash, 0)
                continue
            matched = finder.matches(shingles, finder.band_keys(shingles))
            pairs += sum(copies[copies_of_key[key]] for key in matched)
    return pairs


# -- decontamination ------------------------------------------------------------------------------


def decontaminate(
    ds: datasets.Dataset,
    against: Sequence[EvalSet | str | datasets.Dataset] | EvalIndex,
    *,
    n: int | None = None,
    remove: bool = False,
    columns: Sequence[str] | None = None,
) -> datasets.Dataset:
    """Check ``ds`` against evaluation sets (``find_contamination``: a list of them, or their
    ``EvalIndex``) and, with ``remove``, drop the rows that share an ``n``-word n-gram (13 by
    default) with one of them.

    The result records what was checked and found (the sets with their revision or fingerprint,
    split and columns, ``n``, the rows flagged and removed) in its provenance, under
    ``"decontamination"``, where the cards read it; ``find_contamination`` gives the rows.
    """
    found = find_contamination(ds, against, n=n, columns=columns)
    drop = np.zeros(len(ds), dtype=bool)
    if remove:
        drop[found.flagged] = True
    out = ds.select(np.flatnonzero(~drop))  # a new dataset either way: ``ds`` is not changed
    record = found.record(removed=int(drop.sum()))
    attach_provenance(out, {**(get_provenance(ds) or {}), "decontamination": record})
    return out


def drop_lineage(ds: datasets.Dataset) -> datasets.Dataset:
    """Only the training columns: ``source_index``, ``original``, ``generated_raw``, ``error`` go."""
    require_dataset(ds, "drop_lineage")
    present = [c for c in LINEAGE_COLUMNS if c in ds.column_names]
    return ds.remove_columns(present) if present else ds


def mix_in_seeds(
    ds: datasets.Dataset, seeds: datasets.Dataset, columns: Sequence[str] | None = None
) -> datasets.Dataset:
    """The seed rows, then ``ds``: real examples back among the synthetic ones.

    ``columns``: copied from each seed (default: the non-lineage columns of ``ds`` the seeds have;
    the others are null). A seed row's ``source_index`` is its index in ``seeds``, ``original``
    the seed as ``expand`` would send it (null if the seeds lack a field of it); it is the one kind
    of row with both ``generated_raw`` and ``error`` null. Seeds come first so that a later
    ``drop_duplicates`` keeps a seed and drops a generated copy of it.
    """
    require_dataset(ds, "mix_in_seeds")
    require_dataset(seeds, "mix_in_seeds (seeds)")
    data_columns = [c for c in ds.column_names if c not in LINEAGE_COLUMNS]
    shared = [c for c in data_columns if c in seeds.column_names]
    copy = shared if columns is None else list(columns)
    bad = [c for c in copy if c not in shared]
    if bad:
        raise ConfigurationError(
            f"mix_in_seeds: column(s) {bad} must be in both the dataset {data_columns} "
            f"and the seeds {seeds.column_names}"
        )
    if not copy:
        raise ConfigurationError(
            f"mix_in_seeds: the seeds {seeds.column_names} share no column with the dataset "
            f"{data_columns}"
        )
    lineage = [c for c in LINEAGE_COLUMNS if c in ds.column_names]
    nulls = [c for c in data_columns if c not in copy] + lineage
    original_layout = None
    if "original" in lineage:
        sent = list(ds.features["original"]) if isinstance(ds.features["original"], dict) else []
        if sent and all(c in seeds.column_names for c in sent):
            original_layout = plan_layout(seeds.features, columns=sent, keep_original=True)

    def seed_rows(batch: Mapping[str, list[Any]], indices: list[int]) -> dict[str, list[Any]]:
        out = {c: list(batch[c]) for c in copy} | {c: [None] * len(indices) for c in nulls}
        if "source_index" in lineage:
            out["source_index"] = list(indices)
        if original_layout is not None:
            out["original"] = make_examples(original_layout, batch, indices)
        return out

    rows = seeds.map(
        seed_rows,
        batched=True,
        with_indices=True,
        remove_columns=seeds.column_names,
        features=ds.features,
        desc="Preparing seed rows",
    )
    out = datasets.concatenate_datasets([rows, ds], info=ds.info.copy())
    provenance = get_provenance(ds)
    if provenance is not None:
        attach_provenance(out, {**provenance, "mixed_in_seeds": len(seeds)})
    return out


def _turns(value: Any, role: str, where: str) -> list[dict[str, str]]:
    if value is None:
        raise ConfigurationError(f"{where} is null: run drop_errors first")
    turns = []
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, str):
            item = {"role": role, "content": item}
        elif not isinstance(item, Mapping):
            raise ConfigurationError(
                f"{where}: expected text or {{role, content}} turns, got {type(item).__name__}"
            )
        r, c = item.get("role"), item.get("content")
        if not isinstance(r, str) or not isinstance(c, str):
            raise ConfigurationError(
                f"{where}: a turn needs text `role` and `content`: {item!r:.80}"
            )
        turns.append({"role": r, "content": c})
    return turns


def to_messages(
    ds: datasets.Dataset,
    *,
    prefix_column: str = "conv_prefix",
    response_column: str = "response",
    keep_columns: Sequence[str] = (),
) -> datasets.Dataset:
    """A ``messages`` column (list of {role, content}): prefix turns, then the response turns.

    The conversational format of TRL's ``SFTTrainer``. Each side may be text (a user, resp.
    assistant turn), one {role, content} turn or a list of them. Only ``messages`` and
    ``keep_columns`` remain; a null side (an error row) is refused: run ``drop_errors`` first.
    """
    require_dataset(ds, "to_messages")
    missing = [
        c for c in (prefix_column, response_column, *keep_columns) if c not in ds.column_names
    ]
    if missing:
        raise ConfigurationError(
            f"to_messages: no column(s) {missing}; the dataset has {ds.column_names}"
        )
    if "messages" in keep_columns:
        raise ConfigurationError("to_messages: `messages` is the output column; do not keep it")
    features = Features({"messages": MESSAGES_FEATURE, **{c: ds.features[c] for c in keep_columns}})

    def messages(batch: Mapping[str, list[Any]], indices: list[int]) -> dict[str, list[Any]]:
        sides = zip(batch[prefix_column], batch[response_column], indices, strict=True)
        return {
            "messages": [
                _turns(p, "user", f"row {i}, {prefix_column!r}")
                + _turns(r, "assistant", f"row {i}, {response_column!r}")
                for p, r, i in sides
            ]
        }

    return ds.map(
        messages,
        batched=True,
        with_indices=True,
        remove_columns=[c for c in ds.column_names if c not in keep_columns],
        features=features,
        desc="Building messages",
    )
