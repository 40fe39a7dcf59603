"""Generated values cast to the output features: one caster compiled per feature, which returns
a value Arrow stores as the feature's type or raises ``CastError`` naming the value's path and why.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import operator
from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa
from datasets import ClassLabel, Json, LargeList, List, Value

from .lineage import error_cell, join_errors

__all__ = ["ARROW_ERRORS", "CastError", "Caster", "arrow_column", "compile_caster", "reason"]


class CastError(Exception):
    """A generated value does not fit its feature; the message says where and why."""


Caster = Callable[[Any, str], Any]

# What Arrow (or Python on Arrow's behalf) raises for a value that does not fit a type.
ARROW_ERRORS = (pa.ArrowException, ValueError, TypeError, OverflowError)


def reason(exc: BaseException) -> str:
    """One short, always encodable line for an exception."""
    text = str(exc).strip()
    text = text.splitlines()[0] if text else type(exc).__name__
    text = text if len(text) <= 160 else text[:157] + "..."
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _fits(v: Any, type_: pa.DataType, where: str) -> Any:
    try:
        pa.scalar(v, type=type_)
    except ARROW_ERRORS as exc:
        raise CastError(f"{where}: does not fit {type_}: {reason(exc)}") from None
    return v


_TEXT = ("string", "large_string", "string_view")


def _value_caster(dtype: str, type_: pa.DataType) -> Caster:
    if dtype in _TEXT:

        def cast(v: Any, where: str) -> Any:
            if v.__class__ is str and v.isascii():  # O(1): the usual case
                return v
            if v is None:
                return None
            if isinstance(v, str):
                try:
                    v.encode("utf-8")
                except UnicodeEncodeError as exc:  # "\ud800": no Arrow column can store it
                    raise CastError(f"{where}: text that is not UTF-8 ({reason(exc)})") from None
                return v
            raise CastError(f"{where}: expected text, got {type(v).__name__}")

    elif dtype == "bool":

        def cast(v: Any, where: str) -> Any:
            if v is None:
                return None
            if isinstance(v, bool):
                return v
            raise CastError(f"{where}: expected true/false, got {type(v).__name__}")

    elif dtype.startswith(("int", "uint")):
        bits, signed = type_.bit_width, not dtype.startswith("u")
        lo, hi = -signed * 2 ** (bits - 1), 2 ** (bits - signed) - 1

        def cast(v: Any, where: str) -> Any:
            if v is None:
                return None
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
            if v is None:
                return None
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                try:
                    return float(v)
                except OverflowError:  # an integer past 1.8e308
                    raise CastError(
                        f"{where}: a {int(v).bit_length()}-bit integer is too large for {dtype}"
                    ) from None
            raise CastError(f"{where}: expected a number, got {type(v).__name__}")

    elif dtype.startswith(("timestamp", "date")):
        parse = _dt.date.fromisoformat if dtype.startswith("date") else _dt.datetime.fromisoformat
        what = dtype.split("[")[0]
        # Any Python date or datetime fits date32/64 and timestamp[s/ms/us]; timestamp[ns] spans
        # only 1677-09-21 to 2262-04-11, so Arrow checks the years near or past its ends.
        ns = dtype.startswith("timestamp[ns")

        def cast(v: Any, where: str) -> Any:
            if v is None:
                return None
            try:
                value = parse(v)
            except (TypeError, ValueError):  # TypeError: not text
                raise CastError(f"{where}: expected an ISO {what}, got {v!r:.40}") from None
            return _fits(value, type_, where) if ns and not 1678 < value.year < 2262 else value

    elif dtype.startswith("time"):  # time32/time64: sent as ISO text (see _jsonsafe)

        def cast(v: Any, where: str) -> Any:
            if v is None:
                return None
            if isinstance(v, str):
                try:
                    v = _dt.time.fromisoformat(v)
                except ValueError:
                    raise CastError(f"{where}: expected an ISO time, got {v!r:.40}") from None
            return _fits(v, type_, where)  # a number in the column's unit, as Arrow takes it

    elif dtype.startswith("duration"):

        def cast(v: Any, where: str) -> Any:  # sent as float seconds (see _jsonsafe)
            if v is None:
                return None
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                try:
                    value = _dt.timedelta(seconds=v)
                except (OverflowError, ValueError) as exc:
                    raise CastError(f"{where}: {v!r:.40} seconds: {reason(exc)}") from None
                return _fits(value, type_, where)
            raise CastError(f"{where}: expected a number of seconds, got {type(v).__name__}")

    elif dtype.startswith("decimal"):

        def cast(v: Any, where: str) -> Any:
            if v is None:
                return None
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

    else:  # other Arrow types: Arrow's own conversion decides, here rather than in to_arrow

        def cast(v: Any, where: str) -> Any:
            if v is None:
                return None
            return _fits(v, type_, where)

    return cast


def _storable(text: str) -> bool:
    """Whether Arrow can store ``text``: no lone surrogate (JSON ``"\\ud800"``), which only
    non-ASCII text can hold."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _is_text(feature: Any) -> bool:
    return isinstance(feature, Value) and feature.dtype in _TEXT


def _text_keys(feature: Any) -> tuple[str, ...] | None:
    """The fields of an object whose fields are all text; None for any other feature."""
    if isinstance(feature, dict) and feature and all(map(_is_text, feature.values())):
        return tuple(feature)
    return None


def _text_first(feature: Any, cast: Caster) -> Caster:
    """``cast``, preceded for an object of text fields, a list of such objects or a list of text
    by one check of the whole value in one frame: its strings joined (one C call per object) are
    storable text and its shape is exact (no null, no missing or extra key), so it is returned as
    it is; any other value goes on to ``cast``, which keeps or names what it finds."""
    is_list = isinstance(feature, (List, LargeList))
    length = getattr(feature, "length", -1)
    if is_list and _is_text(feature.feature):

        def cast_texts(v: Any, where: str) -> Any:
            if v.__class__ is list and (length == -1 or len(v) == length):
                try:
                    text = "".join(v)
                except TypeError:  # an item not text (or null)
                    return cast(v, where)
                if text.isascii() or _storable(text):
                    return v
            return cast(v, where)

        return cast_texts
    keys = _text_keys(feature.feature if is_list else feature)
    if keys is None:
        return cast
    n = len(keys)
    # A tuple for one key too: a bare list value must not pass as its items.
    get = operator.itemgetter(*keys) if n > 1 else lambda v: (v[keys[0]],)

    def cast_text_objects(v: Any, where: str) -> Any:
        items: Sequence[Any]
        if not is_list:
            items = (v,)
        elif v.__class__ is list and (length == -1 or len(v) == length):
            items = v
        else:
            return cast(v, where)
        for x in items:
            if x.__class__ is not dict or len(x) != n:
                return cast(v, where)
            try:
                text = "".join(get(x))
            except (TypeError, KeyError):  # a value not text (or null), a key missing
                return cast(v, where)
            if not (text.isascii() or _storable(text)):
                return cast(v, where)
        return v

    return cast_text_objects


def compile_caster(feature: Any) -> Caster:
    """A function that returns a value fitting ``feature`` or raises CastError."""
    if isinstance(feature, Value):
        return _value_caster(feature.dtype, feature.pa_type)
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
        item = compile_caster(feature.feature)
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

        return _text_first(feature, cast_list)
    if isinstance(feature, dict):
        fields = [(k, compile_caster(f)) for k, f in feature.items()]

        def cast_struct(v: Any, where: str) -> Any:
            if v is None:
                return None
            if not isinstance(v, dict):
                raise CastError(f"{where}: expected an object, got {type(v).__name__}")
            try:  # the common case first, without building a path per field
                return {k: c(v[k], where) for k, c in fields}
            except (CastError, KeyError):  # again, field by field, for the error's path
                out: dict[str, Any] = {}
                for k, c in fields:
                    if k not in v:
                        raise CastError(f"{where}.{k}: missing") from None
                    out[k] = c(v[k], f"{where}.{k}")
                return out

        return _text_first(feature, cast_struct)
    if isinstance(feature, Json):
        encode = feature.encode_example

        def cast_json(v: Any, where: str) -> Any:  # stored as text, as datasets encodes it
            try:
                return encode(v)
            except ARROW_ERRORS as exc:
                raise CastError(f"{where}: {reason(exc)}") from None

        return cast_json
    return lambda v, where: v  # anything free-form


def arrow_column(values: list[Any], type_: pa.DataType, name: str, errors: list[str | None]) -> Any:
    """``pa.array(values, type_)``; a value Arrow still refuses alone becomes null and its row's
    error gains ``type: <name>: <reason>``: one bad value never ends the run."""
    try:
        return pa.array(values, type=type_)
    except ARROW_ERRORS:
        pass
    kept: list[Any] = []
    for i, v in enumerate(values):
        if v is not None:
            try:
                pa.array([v], type=type_)
            except ARROW_ERRORS as exc:
                v = None
                prior = errors[i]
                parts = [prior] if prior else []
                errors[i] = join_errors([*parts, error_cell("type", f"{name}: {reason(exc)}")])
        kept.append(v)
    return pa.array(kept, type=type_)
