"""From dataset rows to examples, and from returned items back to typed output rows.

The output schema is fixed before the first request (``Layout.features``), so no batch can change
the Arrow schema; a value that does not fit its feature becomes null with the reason in ``error``.
Items are linked to the example they came from by content (equality, then canonical JSON), never
by position alone.
"""

from __future__ import annotations

import bisect
import datetime as _dt
import decimal
import itertools
import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json
from datasets import ClassLabel, Features, Json, LargeList, List, Value

from .errors import ConfigurationError
from .generated import parse_generated
from .lineage import LINEAGE_COLUMNS, error_cell, join_errors

__all__ = [
    "LINEAGE_COLUMNS",
    "Collected",
    "Layout",
    "RowBuilder",
    "canonical_json",
    "link_items",
    "make_examples",
    "plan_layout",
]


_TEMPORAL_PREFIXES = ("timestamp", "date32", "date64", "time32", "time64", "duration")
_BINARY_DTYPES = ("binary", "large_binary", "binary_view")
_MEDIA_TYPES = ("Image", "Audio", "Video", "Pdf", "Nifti")


class CastError(Exception):
    """A generated value does not fit its feature; the message says where and why."""


# -- layout ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """Which columns are sent, which pass through, and the output features."""

    columns: tuple[str, ...]
    passthrough: tuple[str, ...]
    generated_features: Features
    input_features: Features
    keep_original: bool
    index_column: str | None = None

    @property
    def original_features(self) -> dict[str, Any]:
        return {c: _jsonsafe_feature(self.input_features[c]) for c in self.columns}

    @property
    def features(self) -> Features:
        out: dict[str, Any] = dict(self.generated_features)
        out.update({c: self.input_features[c] for c in self.passthrough})
        out["source_index"] = Value("int64")
        if self.keep_original:
            out["original"] = self.original_features
        out["generated_raw"] = Value("string")
        out["error"] = Value("string")
        return Features(out)

    @property
    def column_names(self) -> list[str]:
        return list(self.features)


def _feature_kind(feature: Any) -> str:
    return type(feature).__name__


def _check_sendable(name: str, feature: Any) -> None:
    """Refuse, before any request, columns that cannot travel as JSON."""
    kind = _feature_kind(feature)
    if kind in _MEDIA_TYPES:
        raise ConfigurationError(
            f"column {name!r} is {kind} data, which cannot be sent as JSON: "
            "drop it from columns= (it will pass through unchanged)"
        )
    if isinstance(feature, Value) and feature.dtype in _BINARY_DTYPES:
        raise ConfigurationError(
            f"column {name!r} holds bytes, which cannot be sent as JSON: "
            "drop it from columns= or decode it to text first"
        )
    for child in _children(feature):
        _check_sendable(name, child)


def _children(feature: Any) -> list[Any]:
    if isinstance(feature, dict):
        return list(feature.values())
    if isinstance(feature, (List, LargeList)):
        return [feature.feature]
    return []


def _jsonsafe_feature(feature: Any) -> Any:
    """The feature of a value after JSON conversion (see ``_jsonsafe``): durations become float
    seconds, other temporal and decimal values text."""
    if isinstance(feature, dict):
        return {k: _jsonsafe_feature(v) for k, v in feature.items()}
    if isinstance(feature, List):
        return List(_jsonsafe_feature(feature.feature), length=feature.length)
    if isinstance(feature, LargeList):
        return LargeList(_jsonsafe_feature(feature.feature))
    if isinstance(feature, Value):
        if feature.dtype.startswith("duration"):
            return Value("float64")
        if feature.dtype.startswith(_TEMPORAL_PREFIXES) or feature.dtype.startswith("decimal"):
            return Value("string")
    return feature


def _generated_feature(feature: Any) -> Any:
    # A seed column that was all null says nothing about what comes back: keep it as JSON.
    if isinstance(feature, Value) and feature.dtype == "null":
        return Json()
    return feature


def plan_layout(
    input_features: Features | None,
    *,
    columns: Sequence[str] | None = None,
    generated_features: Features | Mapping[str, Any] | None = None,
    keep_original: bool = True,
    index_column: str | None = None,
) -> Layout:
    """Decide the output columns and check every name before anything is sent.

    ``index_column`` names an input column that holds each row's global index (for a shard of
    a larger dataset): it becomes ``source_index`` and is neither sent nor passed through.
    """
    if input_features is None:
        raise ConfigurationError(
            "the dataset has no known features: pass generated_features= or resolve them first"
        )
    names = list(input_features)
    if index_column is not None:
        feature = input_features.get(index_column)
        if feature is None:
            raise ConfigurationError(
                f"index_column {index_column!r} is not a column of the dataset; it has "
                f"{', '.join(map(repr, names))}"
            )
        if not (isinstance(feature, Value) and feature.dtype.startswith(("int", "uint"))):
            raise ConfigurationError(
                f"index_column {index_column!r} must hold integers, it is {feature!r}"
            )
        if columns is not None and index_column in columns:
            raise ConfigurationError(
                f"index_column {index_column!r} is also in columns=: it is never sent"
            )
        names.remove(index_column)
    if columns is None:
        chosen = names
    else:
        if isinstance(columns, str):
            columns = [columns]
        chosen = list(columns)
        unknown = [c for c in chosen if c not in input_features]
        if unknown:
            raise ConfigurationError(
                f"unknown column(s) in columns=: {', '.join(map(repr, unknown))}; "
                f"the dataset has {', '.join(map(repr, names))}"
            )
        if len(set(chosen)) != len(chosen):
            raise ConfigurationError(f"columns= lists a column twice: {chosen}")
    if not chosen:
        raise ConfigurationError("columns= is empty: choose at least one column to send")
    for c in chosen:
        _check_sendable(c, input_features[c])
    passthrough = [c for c in names if c not in chosen]
    if generated_features is None:
        gen = Features({c: _generated_feature(input_features[c]) for c in chosen})
    else:
        gen = Features(dict(generated_features))
        if not gen:
            raise ConfigurationError("generated_features= is empty")
    clash = [c for c in (*gen, *passthrough) if c in LINEAGE_COLUMNS]
    if clash:
        raise ConfigurationError(
            f"column name(s) {', '.join(map(repr, clash))} collide with the lineage columns "
            f"{', '.join(LINEAGE_COLUMNS)}: rename them first (ds.rename_column)"
        )
    both = [c for c in gen if c in passthrough]
    if both:
        raise ConfigurationError(
            f"generated column(s) {', '.join(map(repr, both))} are also passthrough columns: "
            "add them to columns= or rename them"
        )
    return Layout(
        tuple(chosen),
        tuple(passthrough),
        gen,
        Features(input_features),
        keep_original,
        index_column,
    )


# -- examples ---------------------------------------------------------------------------------------


def _jsonsafe(value: Any) -> Any:
    """Python values as JSON would carry them; bytes are refused."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _jsonsafe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonsafe(v) for v in value]
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, _dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        raise TypeError("bytes")
    tolist = getattr(value, "tolist", None)  # numpy scalars and arrays
    if tolist is not None:
        return _jsonsafe(tolist())
    raise TypeError(type(value).__name__)


def _is_plain(feature: Any) -> bool:
    """Whether values of this feature are already JSON-safe (no conversion pass needed)."""
    if isinstance(feature, dict):
        return all(_is_plain(v) for v in feature.values())
    if isinstance(feature, (List, LargeList)):
        return _is_plain(feature.feature)
    if isinstance(feature, Value):
        return (
            feature.dtype == "string"
            or feature.dtype == "large_string"
            or (feature.dtype.startswith(("int", "uint", "bool")) or feature.dtype == "null")
        )
    return isinstance(feature, ClassLabel)


def make_examples(
    layout: Layout, batch: Mapping[str, Sequence[Any]], indices: Sequence[int]
) -> list[dict[str, Any]]:
    """The JSON-safe example of each row of a batch (only the chosen columns)."""
    n = len(indices)
    cols = layout.columns
    values = [batch[c] for c in cols]
    examples = [{c: v[i] for c, v in zip(cols, values, strict=False)} for i in range(n)]
    convert = [c for c in cols if not _is_plain(layout.input_features[c])]
    for c in convert:
        for i, example in enumerate(examples):
            try:
                example[c] = _jsonsafe(example[c])
            except TypeError as exc:
                raise ConfigurationError(
                    f"row {indices[i]}, column {c!r}: a {exc} value cannot be sent as JSON"
                ) from None
    return examples


# -- linking ----------------------------------------------------------------------------------------


def _normalise(value: Any) -> Any:
    # A server may echo 1.0 as 1: the same number must link the same way.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _normalise(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    return value


def canonical_json(value: Any) -> str:
    return json.dumps(_normalise(value), sort_keys=True, ensure_ascii=False, separators=(",", ":"))


BoolsCheck = Callable[[Any, Any], bool]


def _bools_match(a: Any, b: Any) -> bool:
    """Given ``a == b``: whether their bools sit in the same places (``True == 1`` in Python,
    not in JSON). Numbers are left to ``==``, where ``1.0 == 1`` as in ``canonical_json``."""
    if a.__class__ is dict:
        for k, x in a.items():
            y = b[k]
            cls = x.__class__
            if cls is dict or cls is list:
                if not _bools_match(x, y):
                    return False
            elif (cls is bool) is not (y.__class__ is bool):
                return False
        return True
    if a.__class__ is list:
        for x, y in zip(a, b, strict=True):
            cls = x.__class__
            if cls is dict or cls is list:
                if not _bools_match(x, y):
                    return False
            elif (cls is bool) is not (y.__class__ is bool):
                return False
        return True
    return (a.__class__ is bool) is (b.__class__ is bool)


def _leaf_bools_match(a: Any, b: Any) -> bool:
    return (a.__class__ is bool) is (b.__class__ is bool)


def _compile_bools(feature: Any) -> BoolsCheck | None:
    """``_bools_match`` for values of ``feature``, visiting only what can hold a number or a
    bool; None when nothing can (text and nulls only: ``==`` is already type-strict)."""
    if isinstance(feature, Value):
        if feature.dtype in ("string", "large_string", "string_view", "null"):
            return None
        return _leaf_bools_match
    if isinstance(feature, ClassLabel):
        return _leaf_bools_match
    if isinstance(feature, (List, LargeList)):
        item = _compile_bools(feature.feature)
        if item is None:
            return None

        def check_list(a: Any, b: Any) -> bool:
            return a.__class__ is not list or all(map(item, a, b))

        return check_list
    if isinstance(feature, dict):
        fields = [(k, c) for k, f in feature.items() if (c := _compile_bools(f)) is not None]
        if not fields:
            return None
        leaves = [k for k, c in fields if c is _leaf_bools_match]  # checked inline: no call
        nested = [(k, c) for k, c in fields if c is not _leaf_bools_match]

        def check_struct(a: Any, b: Any) -> bool:
            if a.__class__ is not dict:
                return _bools_match(a, b)
            try:
                for k in leaves:
                    if (a[k].__class__ is bool) is not (b[k].__class__ is bool):
                        return False
                return not nested or all(c(a[k], b[k]) for k, c in nested)
            except KeyError:  # not shaped like its feature: look at everything
                return _bools_match(a, b)

        return check_struct
    return _bools_match  # Json() and anything free-form


def link_items(
    examples: Sequence[Mapping[str, Any]],
    items: Sequence[Mapping[str, Any]],
    multiplier: int,
    *,
    bools_match: BoolsCheck | None = _bools_match,
) -> list[int | None]:
    """The position in ``examples`` of each item's ``original``, or None when none matches.

    Identical examples share their items in order and evenly: with ``total`` items for
    ``copies`` identical examples, ``q, r = divmod(total, copies)``, copy ``j`` takes the next
    ``q + (j < r)`` items (``multiplier`` each when the answer is complete).

    ``bools_match(example, original)``, for an ``==`` pair, tells whether their bools sit in the
    same places; a caller that knows the examples' features passes a cheaper one
    (``RowBuilder`` does), or None when they hold nothing but text and nulls.
    """
    n = len(items)
    # Fast path: the server answered in order and in full. `==` says True == 1 (JSON does not):
    # the pairs it accepts are checked for bools too.
    if n == len(examples) * multiplier and (
        all(items[t]["original"] == examples[t // multiplier] for t in range(n))
        if bools_match is None
        else all(
            (o := items[t]["original"]) == (e := examples[t // multiplier]) and bools_match(e, o)
            for t in range(n)
        )
    ):
        return [t // multiplier for t in range(n)]
    by_key: dict[str, list[int]] = defaultdict(list)
    for pos, example in enumerate(examples):
        by_key[canonical_json(example)].append(pos)
    keys = [canonical_json(item.get("original")) for item in items]
    totals = Counter(keys)
    seen: dict[str, int] = defaultdict(int)
    out: list[int | None] = []
    for key in keys:
        positions = by_key.get(key)
        if not positions:
            out.append(None)
            continue
        k = seen[key]
        seen[key] = k + 1
        q, r = divmod(totals[key], len(positions))
        # Copies 0..r-1 take q + 1 items each, the others q.
        j = k // (q + 1) if k < r * (q + 1) else r + (k - r * (q + 1)) // q
        out.append(positions[j])
    return out


# -- casting ----------------------------------------------------------------------------------------

Caster = Callable[[Any, str], Any]

# What Arrow (or Python on Arrow's behalf) raises for a value that does not fit a type.
_ARROW_ERRORS = (pa.ArrowException, ValueError, TypeError, OverflowError)


def _reason(exc: BaseException) -> str:
    """One short, always encodable line for an exception."""
    text = str(exc).strip()
    text = text.splitlines()[0] if text else type(exc).__name__
    text = text if len(text) <= 160 else text[:157] + "..."
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _fits(v: Any, type_: pa.DataType, where: str) -> Any:
    """``v`` when Arrow can store it as ``type_``; CastError (with Arrow's reason) when not."""
    try:
        pa.scalar(v, type=type_)
    except _ARROW_ERRORS as exc:
        raise CastError(f"{where}: does not fit {type_}: {_reason(exc)}") from None
    return v


def _value_caster(dtype: str, type_: pa.DataType) -> Caster:
    if dtype in ("string", "large_string", "string_view"):

        def cast(v: Any, where: str) -> Any:
            if isinstance(v, str):
                if v.isascii():  # O(1): the usual case
                    return v
                try:
                    v.encode("utf-8")
                except UnicodeEncodeError as exc:  # "\ud800": no Arrow column can store it
                    raise CastError(f"{where}: text that is not UTF-8 ({_reason(exc)})") from None
                return v
            raise CastError(f"{where}: expected text, got {type(v).__name__}")

    elif dtype == "bool":

        def cast(v: Any, where: str) -> Any:
            if isinstance(v, bool):
                return v
            raise CastError(f"{where}: expected true/false, got {type(v).__name__}")

    elif dtype.startswith(("int", "uint")):
        bits = int("".join(ch for ch in dtype if ch.isdigit()) or 64)
        lo, hi = (
            (0, 2**bits - 1) if dtype.startswith("u") else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
        )

        def cast(v: Any, where: str) -> Any:
            if isinstance(v, float) and v.is_integer():
                v = int(v)
            if not isinstance(v, int) or isinstance(v, bool):
                raise CastError(f"{where}: expected an integer, got {type(v).__name__}")
            if not lo <= v <= hi:
                shown = v if v.bit_length() <= 128 else f"a {v.bit_length()}-bit integer"
                raise CastError(f"{where}: {shown} does not fit {dtype}")
            return v

    elif dtype.startswith("float") or dtype in ("double", "halffloat"):

        def cast(v: Any, where: str) -> Any:
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                try:
                    return float(v)
                except OverflowError:  # an integer past 1.8e308
                    raise CastError(
                        f"{where}: a {v.bit_length()}-bit integer is too large for {dtype}"
                    ) from None
            raise CastError(f"{where}: expected a number, got {type(v).__name__}")

    elif dtype.startswith(("timestamp", "date")):
        parse = _dt.date.fromisoformat if dtype.startswith("date") else _dt.datetime.fromisoformat
        what = dtype.split("[")[0]
        # Any Python date or datetime fits date32/64 and timestamp[s/ms/us]; timestamp[ns] spans
        # only 1677-09-21 to 2262-04-11, so Arrow checks the years near or past its ends.
        ns = dtype.startswith("timestamp[ns")

        def cast(v: Any, where: str) -> Any:
            if isinstance(v, str):
                try:
                    value = parse(v)
                except ValueError:
                    pass
                else:
                    if ns and not 1678 < value.year < 2262:
                        return _fits(value, type_, where)  # e.g. year 2500
                    return value
            raise CastError(f"{where}: expected an ISO {what}, got {v!r:.40}")

    elif dtype.startswith("time"):  # time32/time64: sent as ISO text (see _jsonsafe)

        def cast(v: Any, where: str) -> Any:
            if isinstance(v, str):
                try:
                    v = _dt.time.fromisoformat(v)
                except ValueError:
                    raise CastError(f"{where}: expected an ISO time, got {v!r:.40}") from None
            return _fits(v, type_, where)  # a number in the column's unit, as Arrow takes it

    elif dtype.startswith("duration"):

        def cast(v: Any, where: str) -> Any:  # sent as float seconds (see _jsonsafe)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                try:
                    value = _dt.timedelta(seconds=v)
                except (OverflowError, ValueError) as exc:
                    raise CastError(f"{where}: {v!r:.40} seconds: {_reason(exc)}") from None
                return _fits(value, type_, where)
            raise CastError(f"{where}: expected a number of seconds, got {type(v).__name__}")

    elif dtype.startswith("decimal"):

        def cast(v: Any, where: str) -> Any:
            if isinstance(v, (str, int, float)) and not isinstance(v, bool):
                try:
                    value = decimal.Decimal(str(v))
                except (ArithmeticError, ValueError):
                    raise CastError(f"{where}: expected a decimal number, got {v!r:.40}") from None
                return _fits(value, type_, where)  # precision and scale
            raise CastError(f"{where}: expected a decimal number, got {type(v).__name__}")

    elif dtype == "null":

        def cast(v: Any, where: str) -> Any:
            return None

    else:
        # Other Arrow types: Arrow's own conversion decides, here rather than in to_arrow.
        def cast(v: Any, where: str) -> Any:
            return _fits(v, type_, where)

    return cast


def _compile(feature: Any) -> Caster:
    """A function that returns a value fitting ``feature`` or raises CastError."""
    if isinstance(feature, Value):
        inner = _value_caster(feature.dtype, feature.pa_type)

        def cast_value(v: Any, where: str) -> Any:
            return None if v is None else inner(v, where)

        return cast_value
    if isinstance(feature, ClassLabel):
        names = feature.names

        def cast_label(v: Any, where: str) -> Any:
            if v is None:
                return None
            if isinstance(v, str) and v in names:
                return names.index(v)
            if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < len(names):
                return v
            raise CastError(f"{where}: {v!r:.40} is not one of the labels {names[:10]}")

        return cast_label
    if isinstance(feature, (List, LargeList)):
        item = _compile(feature.feature)
        length = getattr(feature, "length", -1)

        def cast_list(v: Any, where: str) -> Any:
            if v is None:
                return None
            if not isinstance(v, list):
                raise CastError(f"{where}: expected a list, got {type(v).__name__}")
            if length != -1 and len(v) != length:
                raise CastError(f"{where}: expected {length} items, got {len(v)}")
            try:  # the common case first, without building a path per item
                return [item(x, where) for x in v]
            except CastError:  # again, item by item, for an error that names the path
                return [item(x, f"{where}[{i}]") for i, x in enumerate(v)]

        return cast_list
    if isinstance(feature, dict):
        fields = [(k, _compile(f)) for k, f in feature.items()]

        def cast_struct(v: Any, where: str) -> Any:
            if v is None:
                return None
            if not isinstance(v, dict):
                raise CastError(f"{where}: expected an object, got {type(v).__name__}")
            try:  # the common case first, without building a path per field
                return {k: c(v[k], where) for k, c in fields}
            except (CastError, KeyError):  # again, field by field, for the error's path
                out = {}
                for k, c in fields:
                    if k not in v:
                        raise CastError(f"{where}.{k}: missing") from None
                    out[k] = c(v[k], f"{where}.{k}")
                return out

        return cast_struct
    return lambda v, where: v  # Json() and anything free-form


# -- rows -------------------------------------------------------------------------------------------


@dataclass
class Collected:
    """One request's output, column-wise, before it becomes a dict or an Arrow table."""

    positions: list[int | None]  # the example each row belongs to (None: unlinked)
    generated: dict[str, list[Any] | pa.Array]
    raw: list[str | None]
    errors: list[str | None]
    # Not parsed yet: ``raw`` holds the texts, ``generated`` is empty (``RowBuilder.resolve``).
    pending: bool = False

    @classmethod
    def concat(cls, parts: Sequence[tuple[int, Collected]]) -> Collected:
        """Requests' rows in order, their positions shifted by each request's first example."""
        if len(parts) == 1 and parts[0][0] == 0:
            return parts[0][1]
        pending = bool(parts) and parts[0][1].pending
        if any(part.pending != pending for _, part in parts):
            raise ValueError("cannot concatenate parsed and pending rows")
        out = cls([], {name: [] for name in parts[0][1].generated} if parts else {}, [], [])
        out.pending = pending
        for offset, part in parts:
            if offset:
                out.positions += [None if p is None else p + offset for p in part.positions]
            else:
                out.positions += part.positions
            for name, values in part.generated.items():
                out.generated[name].extend(values)
            out.raw.extend(part.raw)
            out.errors.extend(part.errors)
        return out


def _contains_json(feature: Any) -> bool:
    if isinstance(feature, Json):
        return True
    return any(_contains_json(child) for child in _children(feature))


class RowBuilder:
    """Turns one request's items into output columns; compiled once per layout."""

    def __init__(self, layout: Layout, multiplier: int) -> None:
        self.layout = layout
        self.multiplier = multiplier
        self.casters = [(c, _compile(f)) for c, f in layout.generated_features.items()]
        self.names = layout.column_names
        self.features = layout.features
        self.schema = self.features.arrow_schema
        # Json values are stored as text: datasets' own encoder turns them into it.
        self._encode = [c for c, f in layout.generated_features.items() if _contains_json(f)]
        # The fast link path's type check, visiting only what can hold a number or a bool.
        self._bools_match = _compile_bools(layout.original_features)
        # `original` can be cut straight from the input Arrow batch when nothing was converted.
        self._original_is_input = all(
            layout.original_features[c] == layout.input_features[c] for c in layout.columns
        )
        # Generated text read and typed by Arrow in one pass, when every column is of a kind
        # whose JSON reading is the same as the casters' (see _ArrowReader).
        self._reader = _ArrowReader.for_layout(layout, self.schema)
        # Whether collect should leave the parsing to resolve (one map batch at once).
        self.defers = self._reader is not None

    def empty(self) -> dict[str, list[Any]]:
        return {name: [] for name in self.names}

    # -- collecting ------------------------------------------------------------------------------

    def collect(
        self,
        examples: Sequence[dict[str, Any]],
        items: Sequence[Mapping[str, Any]],
        *,
        defer: bool = False,
    ) -> tuple[Collected, dict[str, int]]:
        """Rows for a successful answer: grouped by seed, server order within a seed.

        With ``defer`` the generated texts are linked but not parsed: ``resolve`` parses a
        whole map batch of them at once, which Arrow does far faster than text by text.
        """
        links = link_items(examples, items, self.multiplier, bools_match=self._bools_match)
        n = len(examples)
        if links == sorted(links, key=lambda p: n if p is None else p):
            order = list(enumerate(links))  # the usual case: already grouped
        else:
            order = sorted(enumerate(links), key=lambda tp: n if tp[1] is None else tp[1])
        out = self._new(defer)
        counts = {"parse_errors": 0, "unlinked": 0, "cast_errors": 0, "empty_seeds": 0}
        got = set(links)
        missing = [pos for pos in range(n) if pos not in got]
        for t, pos in order:
            if missing and (pos is None or pos > missing[0]):
                while missing and (pos is None or missing[0] < pos):
                    self._add_shortfall(out, missing.pop(0), counts)
            raw = items[t]["generated"]
            errors: list[str] = []
            if pos is None:
                counts["unlinked"] += 1
                errors.append(
                    error_cell("unlinked", "the returned original matches no example sent")
                )
            if defer:
                self._add(out, pos, raw, None, errors)
                continue
            parsed = parse_generated(raw)
            if parsed.value is None:
                counts["parse_errors"] += 1
                errors.append(error_cell("parse", parsed.error))
            self._add(out, pos, raw, parsed.value, errors, counts)
        for pos in missing:
            self._add_shortfall(out, pos, counts)
        return out, counts

    def _new(self, pending: bool) -> Collected:
        generated: dict[str, Any] = {} if pending else {name: [] for name, _ in self.casters}
        return Collected([], generated, [], [], pending)

    def resolve(self, rows: Collected, *, arrow: bool = True) -> tuple[Collected, dict[str, int]]:
        """Parse and type the generated texts of pending rows.

        With ``arrow``, Arrow's JSON reader reads the map batch's texts in one call (a few more
        when it fails on a row), straight into typed columns, and leaves to ``parse_generated``
        and the casters every row it might read differently (see _ArrowReader): a fenced answer,
        a missing field, a value to convert, a null. Those say why per row. Returns the rows and
        their ``parse_errors`` and ``cast_errors`` counts.
        """
        counts = {"parse_errors": 0, "cast_errors": 0}
        if not rows.pending:
            return rows, counts
        read = self._reader.read(rows.raw) if arrow and self._reader is not None else None
        if read is None:  # the casters read every row
            out = self._new(False)
            out.positions, out.raw = rows.positions, rows.raw
            out.errors = self._parse_rows(rows.raw, rows.errors, out.generated, counts)
            return out, counts
        good, columns = read
        if len(good) == len(rows.raw):  # the usual case: Arrow read every row
            return replace(rows, generated=columns, pending=False), counts
        # The rows Arrow left (their texts are not None): parsed here, typed like to_arrow does.
        is_good = set(good)
        left = [i for i, t in enumerate(rows.raw) if t is not None and i not in is_good]
        values: dict[str, Any] = {name: [] for name, _ in self.casters}
        errors = list(rows.errors)
        left_errors = self._parse_rows(
            [rows.raw[i] for i in left], [errors[i] for i in left], values, counts
        )
        slot: list[int | None] = [None] * len(rows.raw)
        for k, i in enumerate(good):
            slot[i] = k
        for k, i in enumerate(left):
            slot[i] = len(good) + k
        take = pa.array(slot, pa.int64())
        merged = {}
        for name, _ in self.casters:
            type_ = self.schema.field(name).type
            parsed = _array(values[name], type_, name, left_errors)
            merged[name] = pa.concat_arrays([columns[name], parsed]).take(take)
        for k, i in enumerate(left):
            errors[i] = left_errors[k]
        return replace(rows, generated=merged, errors=errors, pending=False), counts

    def _parse_rows(
        self,
        texts: Sequence[str | None],
        errors: Sequence[str | None],
        generated: dict[str, Any],
        counts: dict[str, int],
    ) -> list[str | None]:
        """Parse and cast rows into ``generated`` (a list per column); their errors."""
        out: list[str | None] = []
        for raw, error in zip(texts, errors, strict=True):
            row_errors = [error] if error else []
            if raw is None:  # a shortfall or failed request: nothing to parse
                self._fill(generated, None, row_errors)
            else:
                parsed = parse_generated(raw)
                if parsed.value is None:
                    counts["parse_errors"] += 1
                    row_errors.append(error_cell("parse", parsed.error))
                self._fill(generated, parsed.value, row_errors, counts)
            out.append(join_errors(row_errors))
        return out

    def _add_shortfall(self, out: Collected, pos: int, counts: dict[str, int]) -> None:
        counts["empty_seeds"] += 1
        self._add(
            out,
            pos,
            None,
            None,
            [error_cell("shortfall", "the server returned no generation for this seed")],
        )

    def _add(
        self,
        out: Collected,
        pos: int | None,
        raw: str | None,
        values: dict[str, Any] | None,
        errors: list[str],
        counts: dict[str, int] | None = None,
    ) -> None:
        if not out.pending:
            self._fill(out.generated, values, errors, counts)
        out.positions.append(pos)
        out.raw.append(raw)
        out.errors.append(join_errors(errors))

    def _fill(
        self,
        generated: dict[str, Any],
        values: dict[str, Any] | None,
        errors: list[str],
        counts: dict[str, int] | None = None,
    ) -> None:
        """Append one row's cast values (None for each column without one) to ``generated``."""
        if values is None:
            for name, _ in self.casters:
                generated[name].append(None)
            return
        cast_failed = False
        for name, cast in self.casters:
            value = None
            if name not in values:
                errors.append(error_cell("missing", f"no {name!r} in the generated object"))
                cast_failed = True
            else:
                try:
                    value = cast(values[name], name)
                except CastError as exc:
                    errors.append(error_cell("type", str(exc)))
                    cast_failed = True
            generated[name].append(value)
        if cast_failed and counts is not None:
            counts["cast_errors"] += 1

    def collect_errors(self, n: int, message: str, *, defer: bool = False) -> Collected:
        """One row per seed of a failed request (``on_error="keep"``)."""
        out = self._new(defer)
        for pos in range(n):
            self._add(out, pos, None, None, [error_cell("request", message)])
        return out

    # -- emitting --------------------------------------------------------------------------------

    def to_pydict(
        self,
        rows: Collected,
        batch: Mapping[str, Sequence[Any]],
        indices: Sequence[int],
        examples: Sequence[dict[str, Any]],
    ) -> dict[str, list[Any]]:
        if rows.pending:
            rows, _ = self.resolve(rows, arrow=False)
        out: dict[str, list[Any]] = {
            name: v.to_pylist() if isinstance(v, pa.Array) else v
            for name, v in rows.generated.items()
        }
        positions = rows.positions
        for name in self.layout.passthrough:
            column = batch[name]
            out[name] = [None if p is None else column[p] for p in positions]
        out["source_index"] = [None if p is None else indices[p] for p in positions]
        if self.layout.keep_original:
            out["original"] = [None if p is None else examples[p] for p in positions]
        out["generated_raw"] = rows.raw
        out["error"] = rows.errors
        return {name: out[name] for name in self.names}

    def to_arrow(
        self,
        rows: Collected,
        table: pa.Table,
        indices: Sequence[int],
        examples: Sequence[dict[str, Any]],
    ) -> pa.Table:
        """The rows as an Arrow table of exactly the output schema: datasets writes it as is.

        Passthrough columns and ``original`` are taken from the input batch by position, so
        they never round-trip through Python objects. A value Arrow still refuses (the casters
        let nothing known through) becomes null and its row's ``error`` says why: one bad value
        never ends the run.
        """
        if rows.pending:
            rows, _ = self.resolve(rows)
        schema = self.schema
        errors = list(rows.errors)
        positions = pa.array(rows.positions, type=pa.int64())
        arrays: list[pa.Array | pa.ChunkedArray] = []
        for name, _ in self.casters:
            values = rows.generated[name]
            if isinstance(values, pa.Array):  # read by _ArrowReader, already of its type
                arrays.append(values)
                continue
            if name in self._encode:
                values = self._encode_column(values, name, errors)
            arrays.append(_array(values, schema.field(name).type, name, errors))
        for name in self.layout.passthrough:
            arrays.append(_take(table.column(name), positions, schema.field(name).type))
        arrays.append(pa.array(indices, type=pa.int64()).take(positions))
        if self.layout.keep_original:
            original_type = schema.field("original").type
            if self._original_is_input:
                struct = pa.StructArray.from_arrays(
                    [table.column(c).combine_chunks() for c in self.layout.columns],
                    names=list(self.layout.columns),
                )
                arrays.append(_take(struct, positions, original_type))
            else:
                originals = [None if p is None else examples[p] for p in rows.positions]
                arrays.append(_array(originals, original_type, "original", errors))
        arrays.append(_text_array(rows.raw))
        arrays.append(_text_array(errors))
        return pa.Table.from_arrays(arrays, schema=schema)

    def _encode_column(self, values: list[Any], name: str, errors: list[str | None]) -> list[Any]:
        """Json values as datasets stores them (text); one that cannot be encoded is null."""
        try:
            return self.features.encode_column(values, name)
        except _ARROW_ERRORS:
            pass
        out = []
        for i, v in enumerate(values):
            try:
                out.append(self.features.encode_column([v], name)[0])
            except _ARROW_ERRORS as exc:
                out.append(None)
                _note(errors, i, error_cell("type", f"{name}: {_reason(exc)}"))
        return out

    # -- kept for callers that want a dict in one step -------------------------------------------

    def build(
        self,
        batch: Mapping[str, Sequence[Any]],
        indices: Sequence[int],
        examples: Sequence[dict[str, Any]],
        items: Sequence[Mapping[str, Any]],
    ) -> tuple[dict[str, list[Any]], dict[str, int]]:
        rows, counts = self.collect(examples, items)
        return self.to_pydict(rows, batch, indices, examples), counts


# -- generated text read by Arrow -------------------------------------------------------------------

# Value types that pyarrow.json reads to the same value as the casters, when it reads them at all
# (the few values it reads differently are found per row and left to the casters: see
# _ArrowReader): no temporal, decimal or float32 values (Arrow parses those its own way) and no
# ClassLabel or Json (the casters convert those).
_ARROW_READABLE = frozenset(
    ["string", "large_string", "bool", "float64"]
    + [f"{u}int{b}" for u in ("", "u") for b in (8, 16, 32, 64)]
)
# JSON extensions Arrow's parser accepts and Python's refuses (a text holding one fails strict
# parsing, and the fallbacks of parse_generated then read something else): NaN, Inf, Infinity,
# with or without a sign, in value position. A row whose text merely contains "Inf"
# ("Information") after a colon or comma is left to the casters too: slower, never wrong.
_NON_STANDARD = re.compile(rb"[:\[,]\s*-?(?:Inf|NaN)")
# Nesting this deep may pass Arrow's parser and not orjson's or the json module's recursion limit.
_DEEP = 500
# After this many refusals in a row, the reader is tried on one map batch in _RETRY_EVERY only:
# data whose answers are rarely clean would otherwise pay for every failed attempt.
_REFUSALS_BEFORE_BACKOFF = 4
_RETRY_EVERY = 32


def _arrow_readable(feature: Any) -> bool:
    if isinstance(feature, Value):
        return feature.dtype in _ARROW_READABLE
    if isinstance(feature, List):
        return feature.length == -1 and _arrow_readable(feature.feature)
    if isinstance(feature, LargeList):
        return _arrow_readable(feature.feature)
    if isinstance(feature, dict):
        return bool(feature) and all(_arrow_readable(f) for f in feature.values())
    return False


def _read_type(type_: pa.DataType) -> pa.DataType:
    """The type to read ``type_`` as (the JSON reader has no large lists); cast after."""
    if pa.types.is_list(type_) or pa.types.is_large_list(type_):
        return pa.list_(_read_type(type_.value_type))
    if pa.types.is_struct(type_):
        return pa.struct([pa.field(f.name, _read_type(f.type)) for f in type_])
    return type_


def _rows_that_differ(array: pa.Array) -> np.ndarray:
    """Per row, whether Arrow's reading may differ from the casters' there: a null anywhere
    (Arrow reads a missing field as null, where the casters name it), or a float that is not
    finite (a huge literal Arrow rounds to infinity, where the float caster refuses it) or is
    -0.0 (the JSON integer -0 is 0.0 for the casters)."""
    type_ = array.type
    if pa.types.is_floating(type_):
        values = array.to_numpy(zero_copy_only=False)  # nulls become NaN: flagged too
        return ~np.isfinite(values) | (np.signbit(values) & (values == 0))
    bad = np.array(array.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    if pa.types.is_struct(type_):
        for child in array.flatten():  # each child carries the struct's nulls as its own
            bad |= _rows_that_differ(child)
    elif pa.types.is_list(type_):
        items = array.flatten()  # skips null lists, whatever values they hold
        if len(items):
            items_bad = _rows_that_differ(items)
            if items_bad.any():
                lengths = pc.list_value_length(array).fill_null(0).to_numpy(zero_copy_only=False)
                parents = np.repeat(np.arange(len(array)), lengths)
                bad[np.unique(parents[items_bad])] = True
    return bad


_IN_ROW = re.compile(r" in row (\d+)")
_UNPARSED = re.compile(r"couldn't parse:(.+)$")


class _ArrowReader:
    """Reads many generated texts into typed columns with one ``pyarrow.json`` call.

    Each text is read as the value of a wrapper line, ``{"i": <row>, "g": <text>}``: a text
    cannot take another row's slot (the ``i`` values must come back in order, one per text).
    Rows whose reading may differ from ``parse_generated`` and the casters are left to them:
    text that is not a bare object (fenced, prose), non-standard JSON (NaN, Inf), very deep
    nesting, a row Arrow fails on (its error names the row, or the value it could not convert),
    and the rows of ``_rows_that_differ``. JSON nulls are thus left to the casters too, which
    keep them. A conversion the casters do (1.0 for an integer, say) makes Arrow fail; one
    Arrow does (an integer for a float) the casters do the same way. A hypothesis property in
    tests/test_rows.py checks that the rows read here equal the casters' rows.
    """

    def __init__(self, target: pa.StructType) -> None:
        self.target = target
        self.read_type = _read_type(target)
        self.parse_options = pa_json.ParseOptions(
            explicit_schema=pa.schema([("i", pa.int64()), ("g", self.read_type)]),
            unexpected_field_behavior="ignore",
        )
        self.refusals = 0  # in a row
        self.skipped = 0

    @classmethod
    def for_layout(cls, layout: Layout, schema: pa.Schema) -> _ArrowReader | None:
        features = layout.generated_features
        if not features or "generated_data" in features:  # parse_generated unwraps that key
            return None
        if not all(_arrow_readable(f) for f in features.values()):
            return None
        return cls(pa.struct([schema.field(name) for name in features]))

    def read(self, texts: Sequence[str | None]) -> tuple[list[int], dict[str, pa.Array]] | None:
        """The indices of the texts it read and their typed columns, or None (read none)."""
        if self.refusals >= _REFUSALS_BEFORE_BACKOFF:
            self.skipped += 1
            if self.skipped % _RETRY_EVERY:
                return None
        present = sum(t is not None for t in texts)
        if not present:  # only failed requests or shortfalls: nothing to read, nothing learnt
            return None
        read = self._read(texts)
        # Reading less than half the texts is a refusal too: the attempt cost more than it saved.
        if read is None or 2 * len(read[0]) < present:
            self.refusals += 1
        else:
            self.refusals = 0
        return read

    def _read(self, texts: Sequence[str | None]) -> tuple[list[int], dict[str, pa.Array]] | None:
        # Bare JSON objects, not too deep; a fenced or prose answer is left to the casters.
        rows = [
            i
            for i, t in enumerate(texts)
            if t is not None
            and (t[:1] == "{" or t.lstrip()[:1] == "{")
            and (t[-1:] == "}" or t.rstrip()[-1:] == "}")
            and (len(t) < 2 * _DEEP or t.count("{") + t.count("[") < _DEEP)
        ]
        try:
            for _ in range(_MAX_ATTEMPTS):
                if not rows:
                    return None
                lines = [f'{{"i":{k},"g":{texts[i]}}}' for k, i in enumerate(rows)]
                data = "\n".join(lines).encode("utf-8")
                if len(data) >= 1 << 30:
                    return None
                culprits = (
                    _rows_at(lines, [m.start() for m in _NON_STANDARD.finditer(data)])
                    if b"Inf" in data or b"NaN" in data  # a plain search first: far cheaper
                    else set()
                )
                if not culprits:
                    try:
                        table = pa_json.read_json(
                            pa.py_buffer(data),
                            read_options=pa_json.ReadOptions(
                                use_threads=False, block_size=len(data) + 1
                            ),
                            parse_options=self.parse_options,
                        )
                    except pa.ArrowInvalid as exc:
                        culprits = _culprits(str(exc), [texts[i] for i in rows])
                        if not culprits:
                            return None
                    else:
                        return self._typed(table, rows)
                rows = [i for k, i in enumerate(rows) if k not in culprits]
            return None
        except (*_ARROW_ERRORS, UnicodeError):
            return None

    def _typed(
        self, table: pa.Table, rows: list[int]
    ) -> tuple[list[int], dict[str, pa.Array]] | None:
        if table.num_rows != len(rows) or not table.column("i").equals(
            pa.chunked_array([pa.array(range(len(rows)), pa.int64())])
        ):
            return None
        values = table.column("g").combine_chunks()
        bad = _rows_that_differ(values)
        if bad.any():
            keep = np.flatnonzero(~bad)
            values = values.take(pa.array(keep))
            rows = [rows[k] for k in keep]
            if not rows:
                return None
        if values.type != self.target:
            values = values.cast(self.target)
        columns = dict(zip(self.target.names, values.flatten(), strict=True))
        return rows, columns


# Each attempt that fails on one row costs a whole parse: after this many, the casters read all.
_MAX_ATTEMPTS = 6


def _rows_at(lines: Sequence[str], offsets: Sequence[int]) -> set[int]:
    """The lines holding these byte offsets of their UTF-8 join (a text may span lines)."""
    starts = list(
        itertools.accumulate((len(line.encode("utf-8")) + 1 for line in lines), initial=0)
    )
    return {bisect.bisect_right(starts, offset) - 1 for offset in offsets}


def _culprits(message: str, texts: Sequence[str]) -> set[int]:
    """The rows an Arrow error is about: the one it names, or every row holding the value it
    could not convert (one that holds it by chance is read by the casters: slower, not wrong)."""
    found = _IN_ROW.search(message)
    if found:
        row = int(found.group(1))
        return {row} if row < len(texts) else set()
    found = _UNPARSED.search(message)
    if found:
        value = found.group(1).strip()
        return {k for k, t in enumerate(texts) if value and value in t}
    return set()


def _take(values: pa.Array | pa.ChunkedArray, positions: pa.Array, type_: pa.DataType) -> Any:
    taken = values.take(positions)
    if isinstance(taken, pa.ChunkedArray):
        taken = taken.combine_chunks()
    return taken if taken.type == type_ else taken.cast(type_)


def _note(errors: list[str | None], i: int, message: str) -> None:
    errors[i] = message if errors[i] is None else f"{errors[i]}; {message}"


def _array(values: list[Any], type_: pa.DataType, name: str, errors: list[str | None]) -> Any:
    """``pa.array(values, type_)``; when Arrow refuses, the values it refuses alone become null
    and their row's error gains ``type: <name>: <reason>``."""
    try:
        return pa.array(values, type=type_)
    except _ARROW_ERRORS:
        pass
    kept = []
    for i, v in enumerate(values):
        if v is not None:
            try:
                pa.array([v], type=type_)
            except _ARROW_ERRORS as exc:
                v = None
                _note(errors, i, error_cell("type", f"{name}: {_reason(exc)}"))
        kept.append(v)
    return pa.array(kept, type=type_)


def _text_array(values: list[str | None]) -> pa.Array:
    """A string column; text that is not valid UTF-8 (lone surrogates) is kept with escapes."""
    try:
        return pa.array(values, type=pa.string())
    except _ARROW_ERRORS:
        return pa.array(
            [
                v if v is None else str(v).encode("utf-8", "backslashreplace").decode("utf-8")
                for v in values
            ],
            type=pa.string(),
        )
