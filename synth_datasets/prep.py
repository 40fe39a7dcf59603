"""Training-data prep on an expanded ``datasets.Dataset`` with datasets' own steps (no pandas).

For supervised fine-tuning: ``drop_errors``, ``mix_in_seeds`` (optional: the real rows back,
first), ``drop_duplicates(near=True)`` (a generated copy of a seed goes, the seed stays), then
``to_messages`` (a ``messages`` column for TRL's SFTTrainer).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypedDict

import datasets
import numpy as np
from datasets import Features, List, Value

from .dedup import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_NEAR_THRESHOLD,
    DuplicateFinder,
    content_columns,
    require_dataset,
    row_texts,
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
    "drop_duplicates",
    "drop_errors",
    "drop_lineage",
    "duplicate_mask",
    "mix_in_seeds",
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
    cols = list(columns) if columns is not None else content_columns(ds)
    missing = [c for c in cols if c not in ds.column_names]
    if missing or not cols:
        raise ConfigurationError(
            f"columns to compare must be columns of the dataset; got {cols}, "
            f"the dataset has {ds.column_names}"
        )
    has_error = "error" in ds.column_names
    finder = DuplicateFinder(near=near, threshold=threshold)
    flags: list[np.ndarray] = []
    read = [*cols, "error"] if has_error and "error" not in cols else cols
    for batch in ds.select_columns(read).with_format("arrow").iter(DEFAULT_BATCH_SIZE):
        clean = np.asarray(batch.column("error").is_null(), bool) if has_error else None
        exact, near_flags, _ = finder.check(row_texts(batch, cols), clean)
        flags.append(near_flags if near else exact)
    return np.concatenate(flags) if flags else np.zeros(0, dtype=bool)


def drop_duplicates(ds: datasets.Dataset, **options: Unpack[DuplicateOptions]) -> datasets.Dataset:
    """Keep the first of each group of rows with the same normalised text (``near``: similar).

    ``columns`` default to the generated columns ``expand`` recorded (else all non-lineage
    columns); the quality report counts the same rows.
    """
    drop = duplicate_mask(ds, **options)
    return ds.select(np.flatnonzero(~drop)) if drop.any() else ds


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
