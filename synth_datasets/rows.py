"""The rows of one map batch: items linked to their seeds, their text parsed and cast, and the
whole batch emitted as one Arrow table of exactly the output schema; what went wrong with a row
(a value that does not fit, a failed request, a seed without generations) is in ``error``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from datasets import Features
from datasets.arrow_writer import TypedSequence

from .casting import ARROW_ERRORS, CastError, arrow_column, compile_caster
from .generated import parse_generated
from .layout import Layout
from .lineage import error_cell, join_errors
from .linking import bools_may_differ, link_items

__all__ = ["Collected", "RowBuilder"]

_SLICE = 128  # rows parsed and turned into Arrow at a time (see RowBuilder._generated)


@dataclass
class Collected:
    """One request's rows: which example each belongs to, its text and its errors so far."""

    positions: list[int | None]  # the example each row belongs to (None: unlinked)
    raw: list[str | None]
    errors: list[str | None]


class RowBuilder:
    """Turns a request's items into rows, and a map batch's rows into a table; one per layout."""

    def __init__(self, layout: Layout, multiplier: int) -> None:
        self.layout = layout
        self.multiplier = multiplier
        self.schema = layout.features.arrow_schema
        self._casters = [
            (c, compile_caster(f), self.schema.field(c).type)
            for c, f in layout.generated_features.items()
        ]
        self._check_bools = bools_may_differ(layout.original_features)
        # `original` is cut straight from the input batch when no column was converted to send.
        self._original_is_input = all(
            layout.original_features[c] == layout.input_features[c] for c in layout.columns
        )
        taken = list(layout.passthrough)
        if layout.keep_original and self._original_is_input:
            taken += layout.columns
        self._taken = Features({c: layout.input_features[c] for c in taken})

    # -- one request -----------------------------------------------------------------------------

    def collect(
        self, examples: Sequence[dict[str, Any]], items: Sequence[Mapping[str, Any]]
    ) -> tuple[Collected, dict[str, int]]:
        """Rows for a successful answer: grouped by seed, server order within a seed. Only linked:
        on a request thread more Python work would contend for the GIL; ``to_arrow`` parses."""
        links = link_items(examples, items, self.multiplier, check_bools=self._check_bools)
        n = len(examples)
        unlinked = error_cell("unlinked", "the returned original matches no example sent")
        shortfall = error_cell("shortfall", "the server returned no generation for this seed")
        rows = [
            (pos, item["generated"], unlinked if pos is None else None)
            for item, pos in zip(items, links, strict=True)
        ]
        got = set(links)
        rows += [(pos, None, shortfall) for pos in range(n) if pos not in got]
        rows.sort(key=lambda row: n if row[0] is None else row[0])  # stable: server order kept
        counts = {"unlinked": links.count(None), "empty_seeds": len(rows) - len(links)}
        return Collected([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]), counts

    def collect_errors(self, n: int, message: str) -> Collected:
        """One row per seed of a failed request (``on_error="keep"``)."""
        return Collected(list(range(n)), [None] * n, [error_cell("request", message)] * n)

    # -- one map batch ---------------------------------------------------------------------------

    def to_arrow(
        self,
        parts: Sequence[tuple[int, Collected]],
        batch: Mapping[str, Sequence[Any]],
        indices: Sequence[int],
        examples: Sequence[dict[str, Any]],
    ) -> tuple[pa.Table, dict[str, int]]:
        """The requests' rows (each with the batch position of its first example) as one table of
        the output schema, and the counts of ``parse_errors`` and ``cast_errors``. Passthrough
        columns and ``original`` are taken from the input by position, never through Python."""
        positions_list: list[int | None] = []
        raw: list[str | None] = []
        notes: list[str | None] = []
        for offset, part in parts:
            positions_list += [None if p is None else p + offset for p in part.positions]
            raw += part.raw
            notes += part.errors
        arrays, errors, counts = self._generated(raw, notes)
        schema, layout = self.schema, self.layout
        positions = pa.array(positions_list, type=pa.int64())
        # Dataset.map's batch holds its table; other values are encoded the way datasets would.
        table = getattr(batch, "pa_table", None)
        if not isinstance(table, pa.Table):
            table = pa.table(
                {
                    c: pa.array(TypedSequence(self._taken.encode_column(list(batch[c]), c), type=f))
                    for c, f in self._taken.items()
                }
            )
        for name in layout.passthrough:
            arrays.append(_take(table.column(name), positions, schema.field(name).type))
        arrays.append(pa.array(indices, type=pa.int64()).take(positions))
        if layout.keep_original:
            original_type = schema.field("original").type
            if self._original_is_input:
                struct = table.select(layout.columns).to_struct_array()
                arrays.append(_take(struct, positions, original_type))
            else:
                originals = [None if p is None else examples[p] for p in positions_list]
                arrays.append(arrow_column(originals, original_type, "original", errors))
        arrays.append(_text_array(raw))
        arrays.append(_text_array(errors))
        return pa.Table.from_arrays(arrays, schema=schema), counts

    def _generated(
        self, texts: list[str | None], notes: list[str | None]
    ) -> tuple[list[pa.Array], list[str | None], dict[str, int]]:
        """The generated columns as Arrow arrays, each row's error and the counts.

        Read in slices of ``_SLICE`` rows, each turned into Arrow before the next is parsed: its
        Python values die young. A whole map batch of them alive at once outlived the garbage
        collector's young generations, and its full passes then cost more than the parsing.
        """
        pieces: list[list[pa.Array]] = [[] for _ in self._casters]
        errors: list[str | None] = []
        counts = {"parse_errors": 0, "cast_errors": 0}
        for start in range(0, len(texts), _SLICE):
            stop = start + _SLICE
            arrays, part = self._parse(texts[start:stop], notes[start:stop], counts)
            for piece, array in zip(pieces, arrays, strict=True):
                piece.append(array)
            errors += part
        arrays = [
            pa.chunked_array(piece, type=type_).combine_chunks()
            for piece, (_, _, type_) in zip(pieces, self._casters, strict=True)
        ]
        return arrays, errors, counts

    def _parse(
        self, texts: list[str | None], notes: list[str | None], counts: dict[str, int]
    ) -> tuple[list[pa.Array], list[str | None]]:
        """Each text parsed and its values cast: the Arrow columns and each row's error."""
        n = len(texts)
        columns = [(name, cast, [None] * n) for name, cast, _ in self._casters]
        out = list(notes)
        for i, text in enumerate(texts):
            if text is None:
                continue
            values, reason, _ = parse_generated(text)
            problems: list[str] = []
            if values is None:
                counts["parse_errors"] += 1
                problems.append(error_cell("parse", str(reason)))
            else:
                for name, cast, column in columns:
                    if name in values:
                        try:
                            column[i] = cast(values[name], name)
                            continue
                        except CastError as exc:
                            problems.append(error_cell("type", str(exc)))
                    else:
                        problems.append(
                            error_cell("missing", f"no {name!r} in the generated object")
                        )
                counts["cast_errors"] += bool(problems)
            if problems:
                note = out[i]
                out[i] = join_errors([note, *problems] if note else problems)
        types = [type_ for _, _, type_ in self._casters]
        arrays = [
            arrow_column(column, type_, name, out)
            for (name, _, column), type_ in zip(columns, types, strict=True)
        ]
        return arrays, out


def _take(values: pa.Array | pa.ChunkedArray, positions: pa.Array, type_: pa.DataType) -> Any:
    taken = values.take(positions)
    if isinstance(taken, pa.ChunkedArray):
        taken = taken.combine_chunks()
    return taken if taken.type == type_ else taken.cast(type_)


def _text_array(values: list[str | None]) -> pa.Array:
    """A string column; text that is not valid UTF-8 (lone surrogates) is kept with escapes."""
    try:
        return pa.array(values, type=pa.string())
    except ARROW_ERRORS:
        escaped = [v if v is None else str(v).encode("utf-8", "backslashreplace") for v in values]
        return pa.array(escaped, type=pa.string())
