"""Seed sources as the command line names them: a file, a ``save_to_disk`` folder or a Hub id, read
as one ``Dataset`` split; a file that cannot be read is one line naming the file (and line)."""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import UsageError

__all__ = ["check_utf8", "load_source"]

_DATA_SUFFIXES = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def load_source(
    source: str, *, split: str | None, config: str | None, revision: str | None = None
) -> tuple[Any, dict[str, Any]]:
    """A file, a ``save_to_disk`` folder or a Hub id as one ``Dataset`` split, and what the card
    should say about where it came from."""
    import datasets

    meta: dict[str, Any] = {"name": source, "split": split or "train", "config": config}
    path = Path(source)
    if path.exists():  # the card names a local source by its name, not by where it lies here
        meta["name"] = path.name
    if path.is_file():
        kind = _DATA_SUFFIXES.get(path.suffix.lower())
        if kind is None:
            raise UsageError(
                f"{source}: unsupported file type {path.suffix!r} (use .jsonl, .json, .csv, "
                ".parquet, a save_to_disk folder or a Hub id)"
            )
        if kind != "parquet":
            check_utf8(path, source)
        # A file datasets cannot read is told below in one line: its builders' own log lines
        # about it are held back.
        builders = logging.getLogger("datasets.packaged_modules")
        level = builders.level
        builders.setLevel(logging.CRITICAL)
        try:
            with _uncounted():
                ds = datasets.load_dataset(kind, data_files=str(path), split="train")
        except Exception as exc:  # datasets speaks of its builder; say what is wrong in the file
            raise UsageError(_unreadable(source, path, kind, exc)) from exc
        finally:
            builders.setLevel(level)
        if len(ds) == 0:
            raise UsageError(f"{source}: no rows to expand")
        ds.info.dataset_name = path.stem
        return ds, meta
    if path.is_dir():
        if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
            loaded = datasets.load_from_disk(str(path))
            if isinstance(loaded, datasets.DatasetDict):
                name = split or "train"
                if name not in loaded:
                    raise UsageError(f"{source} has splits {list(loaded)}: choose one with --split")
                return loaded[name], meta
            return loaded, meta
        with _uncounted():
            return datasets.load_dataset(str(path), split=split or "train"), meta
    if path.suffix.lower() in _DATA_SUFFIXES or not _HUB_ID.fullmatch(source):
        raise UsageError(f"{source}: no such file or folder, and not a Hub dataset id")
    from huggingface_hub import HfApi

    # Pin the commit we read, so the card can name the exact source revision.
    sha = HfApi().dataset_info(source, revision=revision).sha
    meta.update(hub=True, revision=sha)
    return datasets.load_dataset(source, name=config, split=split or "train", revision=sha), meta


@contextlib.contextmanager
def _uncounted() -> Iterator[None]:
    """A local file is nobody's download: datasets would otherwise ping S3 to count one."""
    import datasets

    counts = datasets.config.HF_UPDATE_DOWNLOAD_COUNTS
    datasets.config.HF_UPDATE_DOWNLOAD_COUNTS = False
    try:
        yield
    finally:
        datasets.config.HF_UPDATE_DOWNLOAD_COUNTS = counts


def check_utf8(path: Path, name: str) -> None:
    """Refuse a text file that is not UTF-8, naming the line of the first bad byte (datasets
    would read some of it and fail later, or keep the bytes mangled)."""
    line = 1
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            chunk += f.readline()  # end on a line break: no character is cut in two
            try:
                chunk.decode("utf-8")
            except UnicodeDecodeError as exc:
                at = line + chunk.count(b"\n", 0, exc.start)
                raise UsageError(
                    f"{name}, line {at}: not UTF-8 text (byte 0x{chunk[exc.start]:02x}): "
                    "save it as UTF-8"
                ) from None
            line += chunk.count(b"\n")


def _unreadable(source: str, path: Path, kind: str, exc: Exception) -> str:
    """Why datasets could not read a seed file, in the file's terms (the line, for JSON)."""
    if kind == "json":
        with path.open(encoding="utf-8") as f:
            first = ""
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as bad:
                    if first.startswith("{"):  # JSON lines, of which this one is not JSON
                        return f"{source}, line {number}: not valid JSON ({bad.msg})"
                    break
                if first.startswith("{") and not isinstance(value, dict):
                    return f"{source}, line {number}: not a JSON object"
                first = first or line.strip()
        try:
            document = json.loads(path.read_text(encoding="utf-8").strip() or "null")
        except json.JSONDecodeError as bad:
            return f"{source}, line {bad.lineno}: not valid JSON ({bad.msg})"
        if not document:
            return f"{source}: no rows to expand"
    cause: BaseException = exc
    while cause.__cause__ is not None or cause.__context__ is not None:
        cause = cause.__cause__ or cause.__context__  # type: ignore[assignment]
    if "corresponds to no data" in str(exc) or isinstance(cause, StopIteration):
        return f"{source}: no rows to expand"
    reason = " ".join(str(cause).split())
    return f"{source}: cannot be read as {kind}: {type(cause).__name__}: {reason}"
