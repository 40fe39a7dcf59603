"""Contamination: rows that share a run of words with a text of an evaluation set.

A model trained on a row that quotes a benchmark item scores on that item by memory. A row is
flagged when one of its word n-grams (13 words by default), after the normalisation of the
duplicate search (``dedup``: Unicode NFKC, case, spacing, punctuation at the ends of words; a
character of Chinese, Japanese or Thai is a word), is also an n-gram of a text of an evaluation
set. The evaluation sets are held as sorted arrays of 64-bit n-gram hashes, never as strings:
8 bytes per distinct n-gram, and a few times that while the array is merged; the rows are then
checked batch by batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from itertools import chain
from numbers import Integral
from pathlib import Path
from typing import Any

import datasets
import jinja2
import numpy as np
import pyarrow as pa

from .dedup import (
    DEFAULT_BATCH_SIZE,
    MAX_NGRAM,
    content_columns,
    distinct,
    has_text,
    ngram_hashes,
    require_dataset,
    row_texts,
    text_batches,
)
from .errors import ConfigurationError, UsageError
from .sources import Use, load_source

__all__ = [
    "DEFAULT_NGRAM",
    "Contamination",
    "EvalIndex",
    "EvalSet",
    "find_contamination",
    "index_eval_sets",
    "render_contamination",
]

DEFAULT_NGRAM = 13
_MERGE_AT = 1 << 22  # pending hashes merged into the sorted index past this many (bounds memory)
_SPEC = "PATH[:SPLIT] or HUB_ID[@REVISION][:CONFIG][:SPLIT]"


@dataclass(frozen=True)
class EvalSet:
    """An evaluation set to check against: a ``Dataset``, a local file or folder (``save_to_disk``
    or data files), or a Hub dataset id; ``split`` (of a folder or a Hub id: by default its only
    split, else ``test``; a file has none; of a ``Dataset``, the name the card gives it),
    ``config``, ``revision`` (a Hub branch, tag or commit) and ``columns`` (default: every column
    that holds text; one name alone is one column)."""

    source: str | datasets.Dataset
    split: str | None = None
    columns: Sequence[str] | None = None
    config: str | None = None
    revision: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.columns, str):  # a str is a sequence of its characters: one column
            object.__setattr__(self, "columns", (self.columns,))

    @classmethod
    def parse(cls, spec: str) -> EvalSet:
        """``PATH[:SPLIT]`` or ``HUB_ID[@REVISION][:CONFIG][:SPLIT]``, as the command line takes
        an evaluation set: ``evals/qa.jsonl``, ``openai/gsm8k:main:test``, ``me/evals@v1``."""
        spec = spec.strip()
        if not spec or Path(spec).exists():
            return cls(spec)
        head, colon, tail = spec.partition(":")
        parts = tail.split(":") if colon else []
        if Path(head).exists() and len(parts) == 1 and parts[0]:
            return cls(head, split=parts[0])
        repo, _, revision = head.partition("@")
        if len(parts) > 2 or not all(parts) or (revision == "" and "@" in head):
            raise UsageError(f"{spec}: an evaluation set is {_SPEC}")
        config = parts[0] if len(parts) == 2 else None
        split = parts[-1] if parts else None
        return cls(repo, split=split, config=config, revision=revision or None)

    @classmethod
    def of(cls, value: EvalSet | str | datasets.Dataset) -> EvalSet:
        if isinstance(value, EvalSet):
            return value
        if isinstance(value, str):
            return cls.parse(value)
        if isinstance(value, datasets.Dataset):
            return cls(value)
        raise ConfigurationError(
            f"an evaluation set is a datasets.Dataset, a path, a Hub id or an EvalSet, "
            f"got {type(value).__name__}"
        )

    def spec(self, split: str | None = None) -> str:
        """The command line's spelling of this set (``parse`` reads it back), with ``split``."""
        revision = f"@{self.revision}" if self.revision else ""
        config = f":{self.config}" if self.config else ""
        return f"{self.source}{revision}{config}" + (f":{split}" if split else "")

    def load(self) -> tuple[datasets.Dataset, dict[str, Any]]:
        """The split's rows and what the card says of them (name, revision or fingerprint)."""
        if isinstance(self.source, datasets.Dataset):
            ds, info = self.source, self.source.info
            name = info.dataset_name or info.builder_name or "a Dataset in memory"
            split = self.split or (str(ds.split) if ds.split is not None else None)
            meta = {"name": name, "config": info.config_name or None, "split": split}
        else:
            use = Use(
                rows="rows in this evaluation set",
                choose=f"choose one as {self.spec('SPLIT')}",
                drop=f"drop :{self.split}",
                default_split="test",
                only_split=True,
            )
            ds, meta = load_source(
                self.source, split=self.split, config=self.config, revision=self.revision, use=use
            )
        return ds, {
            "name": str(meta.get("name")),
            "revision": meta.get("revision"),
            "fingerprint": None if meta.get("revision") else getattr(ds, "_fingerprint", None),
            "config": meta.get("config"),
            "split": meta.get("split"),
        }


def _text_columns(ds: datasets.Dataset, columns: Sequence[str] | None, name: str) -> list[str]:
    schema = ds.features.arrow_schema
    if columns is None:
        found = [f.name for f in schema if has_text(f.type)]
        if not found:
            raise ConfigurationError(f"evaluation set {name}: no column holds text")
        return found
    missing = [c for c in columns if c not in schema.names]
    if missing or not columns:
        raise ConfigurationError(
            f"evaluation set {name}: no column(s) {missing or list(columns)}; it has {schema.names}"
        )
    return list(columns)


def _index(eval_set: EvalSet, n: int) -> tuple[np.ndarray, dict[str, Any]]:
    """The sorted distinct n-gram hashes of an evaluation set's texts, and what it was."""
    ds, meta = eval_set.load()
    columns = _text_columns(ds, eval_set.columns, meta["name"])
    index = np.zeros(0, np.uint64)
    pending: list[np.ndarray] = []
    waiting = texts = short = 0
    batches = ds.select_columns(columns).with_format("arrow").iter(DEFAULT_BATCH_SIZE)
    for batch in chain(batches, [None]):  # None: the end, where the last hashes are merged
        if batch is not None:
            hashes, owner = ngram_hashes(row_texts(batch, columns), n)
            texts += batch.num_rows
            with_ngrams = int(np.count_nonzero(np.diff(owner))) + 1 if len(owner) else 0
            short += batch.num_rows - with_ngrams  # owner is sorted: one run per text
            pending.append(distinct(hashes))
            waiting += len(pending[-1])
        # Merged at the end, and whenever the waiting hashes outgrow the index: a few merges in
        # all, each sorting in place what it joined once the parts are let go.
        if batch is None or waiting > max(_MERGE_AT, len(index)):
            joined = np.concatenate([index, *pending])
            index, pending, waiting = np.zeros(0, np.uint64), [], 0
            index = distinct(joined, in_place=True)
            del joined
    counts = {"texts": texts, "texts_too_short": short, "ngrams": len(index)}
    return index, {**meta, "columns": columns, **counts}


def _contains(index: np.ndarray, hashes: np.ndarray) -> np.ndarray:
    if len(index) == 0:
        return np.zeros(len(hashes), dtype=bool)
    at = np.minimum(np.searchsorted(index, hashes), len(index) - 1)
    found: np.ndarray = index[at] == hashes
    return found


@dataclass(frozen=True)
class Contamination:
    """Which rows share an n-gram with which evaluation set; ``record`` is what a card shows."""

    n: int
    columns: tuple[str, ...]
    rows_checked: int
    sets: tuple[dict[str, Any], ...]
    flagged: np.ndarray = field(repr=False)  # row numbers, ascending
    flagged_by_set: tuple[np.ndarray, ...] = field(repr=False)

    @property
    def rows_flagged(self) -> int:
        return len(self.flagged)

    def record(self, removed: int | None = None) -> dict[str, Any]:
        """Plain JSON values for a card and the provenance: the sets, ``n``, the rows flagged
        (per set and in all) and ``removed`` (None: only counted)."""
        return {
            "n": self.n,
            "columns": list(self.columns),
            "rows_checked": self.rows_checked,
            "rows_flagged": self.rows_flagged,
            "rows_removed": removed,
            "sets": [
                {**s, "rows_flagged": len(rows)}
                for s, rows in zip(self.sets, self.flagged_by_set, strict=True)
            ],
        }

    def to_dict(self) -> dict[str, Any]:
        """``record()`` plus the flagged row numbers."""
        return {**self.record(), "flagged_rows": self.flagged.tolist()}

    def to_markdown(self, heading_level: int = 3) -> str:
        return render_contamination(self.record(), heading_level)


def render_contamination(record: Mapping[str, Any] | None, heading_level: int = 2) -> str:
    """The card section of a decontamination ``record`` (None: none was requested), from the
    template ``cards/contamination.md``."""
    text = resources.files("synth_datasets.cards").joinpath("contamination.md").read_text("utf-8")
    template = jinja2.Environment(trim_blocks=True, lstrip_blocks=True).from_string(text)
    return template.render(c=record, h="#" * heading_level).strip() + "\n"


@dataclass(frozen=True)
class EvalIndex:
    """Evaluation sets read and hashed (``index_eval_sets``), ready to check rows against: built
    before the work on the rows, a set that cannot be read is refused before that work."""

    n: int
    sets: tuple[dict[str, Any], ...]  # what each set was (the card's record)
    hashes: tuple[np.ndarray, ...] = field(repr=False)  # per set, sorted distinct n-gram hashes


def index_eval_sets(
    against: Sequence[EvalSet | str | datasets.Dataset], *, n: int = DEFAULT_NGRAM
) -> EvalIndex:
    """Read each evaluation set and hash its ``n``-word n-grams (``EvalIndex``), for
    ``find_contamination`` and ``decontaminate`` to check rows against later."""
    _check_sets(against, n)
    n = int(n)
    built = [_index(EvalSet.of(x), n) for x in against]
    return EvalIndex(
        n=n, sets=tuple(meta for _, meta in built), hashes=tuple(index for index, _ in built)
    )


def _check_sets(against: Sequence[Any], n: Any) -> None:
    if isinstance(against, (str, datasets.Dataset, EvalSet)) or not against:
        raise ConfigurationError("against: give a list of one or more evaluation sets")
    if isinstance(n, bool) or not isinstance(n, Integral) or not 1 <= int(n) <= MAX_NGRAM:
        raise ConfigurationError(
            f"n must be a whole number of words from 1 to {MAX_NGRAM}, got {n!r}", option="n"
        )


def find_contamination(
    ds: datasets.Dataset,
    against: Sequence[EvalSet | str | datasets.Dataset] | EvalIndex,
    *,
    n: int | None = None,
    columns: Sequence[str] | None = None,
) -> Contamination:
    """The rows of ``ds`` that share an ``n``-word n-gram (13 by default) with a text of any set
    ``against``.

    ``columns``: the text compared (default: the generated columns ``expand`` recorded, else
    every non-lineage column), in rows without an ``error``. Each evaluation set is an
    ``EvalSet``, a ``Dataset``, or a string as ``EvalSet.parse`` reads it; or ``against`` is an
    ``EvalIndex`` of them, built beforehand (its ``n`` is the one used).
    """
    require_dataset(ds, "find_contamination")
    if isinstance(against, EvalIndex):
        if n is not None and n != against.n:
            raise ConfigurationError(
                f"n={n!r}, but the evaluation sets were indexed with n={against.n}", option="n"
            )
        index = against
        batches = text_batches(ds, columns)
    else:
        n = DEFAULT_NGRAM if n is None else n
        _check_sets(against, n)
        batches = text_batches(ds, columns)  # the columns are checked before any set is loaded
        index = index_eval_sets(against, n=n)
    flags = np.zeros((len(index.hashes), len(ds)), dtype=bool)
    offset = 0
    for texts, clean, _ in batches:
        rows = np.arange(len(texts)) if clean is None else np.flatnonzero(clean)
        hashes, owner = ngram_hashes(texts.take(pa.array(rows, pa.int64())), index.n)
        for k, hashed in enumerate(index.hashes):
            flags[k, offset + rows[owner[_contains(hashed, hashes)]]] = True
        offset += len(texts)
    return Contamination(
        n=index.n,
        columns=tuple(columns if columns is not None else content_columns(ds)),
        rows_checked=len(ds),
        sets=index.sets,
        flagged=np.flatnonzero(flags.any(axis=0)),
        flagged_by_set=tuple(np.flatnonzero(f) for f in flags),
    )
