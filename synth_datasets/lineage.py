"""The lineage vocabulary: the columns that tie a row to its seed, and what an ``error`` says;
shared by its writers (rows, mapper) and readers (report, card, prep)."""

from __future__ import annotations

__all__ = [
    "ERROR_KINDS",
    "LINEAGE_COLUMNS",
    "LINEAGE_MEANING",
    "error_cell",
    "error_kinds",
    "join_errors",
]

LINEAGE_COLUMNS = ("source_index", "original", "generated_raw", "error")

LINEAGE_MEANING = {
    "source_index": "row index of the seed in the source dataset (null only if unlinkable)",
    "original": "the seed example exactly as it was sent to the endpoint",
    "generated_raw": "the text the endpoint returned for this row, unparsed",
    "error": "why this row's generated columns are (partly) null; null when all is well",
}

ERROR_KINDS = {
    "request": "the request failed after retries; one row per seed of that request",
    "parse": "the generated text could not be read as a JSON object",
    "missing": "the generated object lacks a column",
    "type": "a generated value does not fit the column's type",
    "unlinked": "the returned original matched no seed row sent",
    "shortfall": "the endpoint returned no generation for this seed",
}

_SEP = "; "


def error_cell(kind: str, message: str) -> str:
    """One part of an ``error`` value: ``"<kind>: <message>"`` (parts are joined by ``"; "``)."""
    if kind not in ERROR_KINDS:
        raise ValueError(f"unknown error kind {kind!r}")
    return f"{kind}: {message}"


def join_errors(parts: list[str]) -> str | None:
    """The ``error`` value of a row from its parts (None when there are none)."""
    return _SEP.join(parts) if parts else None


def error_kinds(message: str | None) -> set[str]:
    """The kinds named in an ``error`` value; ``"other"`` when it names none. A part without a
    known kind is the tail of a message that itself held "; "."""
    if message is None:
        return set()
    kinds = {part.split(":", 1)[0].strip() for part in message.split(_SEP)}
    return kinds & ERROR_KINDS.keys() or {"other"}
