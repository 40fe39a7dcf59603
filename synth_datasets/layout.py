"""Which columns are sent, which pass through, and what the output holds; and the examples sent.

The output schema is fixed, and every name and feature checked, before the first request.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from datasets import ClassLabel, Features, Json, LargeList, List, Value

from .errors import ConfigurationError
from .lineage import LINEAGE_COLUMNS

__all__ = ["Layout", "leaves", "make_examples", "plan_layout"]


@dataclass(frozen=True)
class Layout:
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


def leaves(feature: Any) -> Iterator[Any]:
    """The features inside ``feature``'s struct fields and list items, at every depth."""
    if isinstance(feature, dict):
        for child in feature.values():
            yield from leaves(child)
    elif isinstance(feature, (List, LargeList)):
        yield from leaves(feature.feature)
    else:
        yield feature


def _jsonsafe_feature(feature: Any) -> Any:
    """The feature of a value after ``_jsonsafe``: durations are float seconds, other temporal
    and decimal values text."""
    if isinstance(feature, dict):
        return {k: _jsonsafe_feature(v) for k, v in feature.items()}
    if isinstance(feature, List):
        return List(_jsonsafe_feature(feature.feature), length=feature.length)
    if isinstance(feature, LargeList):
        return LargeList(_jsonsafe_feature(feature.feature))
    if isinstance(feature, Value):
        if feature.dtype.startswith("duration"):
            return Value("float64")
        if feature.dtype.startswith(("timestamp", "date", "time", "decimal")):
            return Value("string")
    return feature


def plan_layout(
    input_features: Features | None,
    *,
    columns: Sequence[str] | None = None,
    generated_features: Features | Mapping[str, Any] | None = None,
    keep_original: bool = True,
    index_column: str | None = None,
) -> Layout:
    """Decide the output columns and check every name before anything is sent. ``index_column``
    holds each row's global index (for a shard): used only as ``source_index``."""
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
                f"{', '.join(map(repr, names))}",
                option="index_column",
            )
        if not (isinstance(feature, Value) and feature.dtype.startswith(("int", "uint"))):
            raise ConfigurationError(
                f"index_column {index_column!r} must hold integers, it is {feature!r}",
                option="index_column",
            )
        if columns is not None and index_column in columns:
            raise ConfigurationError(
                f"index_column {index_column!r} is also in the columns to send: it is never sent",
                option="index_column",
            )
        names.remove(index_column)
    chosen = names if columns is None else list(columns)
    unknown = [c for c in chosen if c not in input_features]
    if unknown:
        raise ConfigurationError(
            f"unknown column(s) in columns=: {', '.join(map(repr, unknown))}; "
            f"the dataset has {', '.join(map(repr, names))}",
            option="columns",
        )
    if len(set(chosen)) != len(chosen):
        raise ConfigurationError(f"columns= lists a column twice: {chosen}", option="columns")
    if not chosen:
        raise ConfigurationError(
            "columns= is empty: choose at least one column to send", option="columns"
        )
    for c in chosen:
        for leaf in leaves(input_features[c]):
            kind = type(leaf).__name__
            if kind in ("Image", "Audio", "Video", "Pdf", "Nifti"):
                raise ConfigurationError(
                    f"column {c!r} is {kind} data, which cannot be sent as JSON: "
                    "drop it from columns= (it will pass through unchanged)",
                    option="columns",
                )
            if isinstance(leaf, Value) and leaf.dtype in ("binary", "large_binary", "binary_view"):
                raise ConfigurationError(
                    f"column {c!r} holds bytes, which cannot be sent as JSON: "
                    "drop it from columns= or decode it to text first",
                    option="columns",
                )
    passthrough = [c for c in names if c not in chosen]
    if generated_features is None:
        gen = Features()
        for c in chosen:  # a column that was all null says nothing of what comes back: JSON
            f = input_features[c]
            gen[c] = Json() if isinstance(f, Value) and f.dtype == "null" else f
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
            "add them to columns= or rename them",
            option="columns",
        )
    features = Features(input_features)
    return Layout(tuple(chosen), tuple(passthrough), gen, features, keep_original, index_column)


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
    return all(
        isinstance(f, ClassLabel)
        or (isinstance(f, Value) and f.dtype in ("string", "large_string", "null"))
        or (isinstance(f, Value) and f.dtype.startswith(("int", "uint", "bool")))
        for f in leaves(feature)
    )


def make_examples(
    layout: Layout, batch: Mapping[str, Sequence[Any]], indices: Sequence[int]
) -> list[dict[str, Any]]:
    """The JSON-safe example of each row of a batch (only the chosen columns)."""
    cols = layout.columns
    values = [batch[c] for c in cols]
    examples = [dict(zip(cols, row, strict=True)) for row in zip(*values, strict=True)]
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
