"""Sources as the command line names them (seeds, data to mix in, evaluation sets): a file, a
``save_to_disk`` folder or a Hub id, read as one ``Dataset`` split; what cannot be read (a file, a
split it lacks, a Hub that does not answer) is one line naming the source, in the words the user
chooses it with (``Use``)."""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UsageError

__all__ = ["SEEDS", "Use", "check_utf8", "load_source"]

_DATA_SUFFIXES = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


@dataclass(frozen=True)
class Use:
    """What a source is read for, in the user's words: the rows it must hold (``no {rows}``),
    how the user chooses a split and drops one (a flag, or ``PATH:SPLIT`` for an evaluation
    set), the split read when none is named, and whether a source of one split is read whole."""

    rows: str = "rows to expand"
    choose: str = "choose one with --split"
    drop: str = "drop --split"
    default_split: str = "train"
    only_split: bool = False


SEEDS = Use()


def load_source(
    source: str,
    *,
    split: str | None,
    config: str | None,
    revision: str | None = None,
    use: Use = SEEDS,
) -> tuple[Any, dict[str, Any]]:
    """A file, a ``save_to_disk`` folder or a Hub id as one ``Dataset`` split, and what the card
    should say about where it came from (``split``: the one read; None for a file or a single
    saved ``Dataset``, which have none to choose from)."""
    import datasets

    meta: dict[str, Any] = {"name": source, "split": None, "config": config}
    path = Path(source)
    if path.exists():  # the card names a local source by its name, not by where it lies here
        meta["name"] = path.name
    if path.is_file():
        if split is not None:  # read whole all the same, the card would name a split not applied
            raise UsageError(f"{source} is one file, with no splits to choose from: {use.drop}")
        ds = _load_file(source, path, use)
    elif any((path / saved).is_file() for saved in ("dataset_dict.json", "state.json")):
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            meta["split"] = _choose(source, split, list(loaded), use)
            ds = loaded[meta["split"]]
        elif split is not None:
            raise UsageError(f"{source} is a saved Dataset of one split: {use.drop}")
        else:
            ds = loaded
    elif path.is_dir():
        ds, meta["split"] = _load_built(source, split, use, path=str(path))
    elif path.suffix.lower() in _DATA_SUFFIXES or not _HUB_ID.fullmatch(source):
        raise UsageError(f"{source}: no such file or folder, and not a Hub dataset id")
    else:
        sha = _hub_commit(source, revision)  # pinned, so the card names the exact revision read
        meta.update(hub=True, revision=sha)
        ds, meta["split"] = _load_built(source, split, use, path=source, name=config, revision=sha)
    if len(ds) == 0:
        raise UsageError(f"{source}: no {use.rows}")
    return ds, meta


def _load_file(source: str, path: Path, use: Use) -> Any:
    import datasets

    kind = _DATA_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise UsageError(
            f"{source}: unsupported file type {path.suffix!r} (use .jsonl, .json, .csv, "
            ".parquet, a save_to_disk folder or a Hub id)"
        )
    if kind != "parquet":
        check_utf8(path, source)
    try:
        with _uncounted(), _builders_quiet():
            ds = datasets.load_dataset(kind, data_files=str(path), split="train")
    except Exception as exc:  # datasets speaks of its builder; say what is wrong in the file
        raise UsageError(_unreadable(source, path, kind, exc, use)) from exc
    ds.info.dataset_name = path.stem
    return ds


def _load_built(source: str, split: str | None, use: Use, **where: Any) -> tuple[Any, str]:
    """A folder of data files or a Hub dataset: its split names are known before anything is
    read, so a split it lacks is refused naming those it has."""
    import datasets
    from datasets.data_files import EmptyDatasetError
    from datasets.exceptions import DatasetGenerationError

    try:
        with _uncounted(), _builders_quiet():
            builder = datasets.load_dataset_builder(**where)
            names = list(builder.config.data_files or builder.info.splits or [])
            name = _choose(source, split, [str(n) for n in names], use)
            builder.download_and_prepare()
            return builder.as_dataset(split=name), name
    except EmptyDatasetError:
        raise UsageError(
            f"{source}: no data files (.jsonl, .json, .csv, .parquet) in it: no {use.rows}"
        ) from None
    except DatasetGenerationError as exc:
        raise UsageError(
            f"{source}: its data files cannot be read as one dataset: {_root_cause(exc)}"
        ) from exc


def _choose(source: str, split: str | None, names: list[str], use: Use) -> str:
    """The split to read: the one named, else the default (or a source's only split)."""
    if split is None and use.only_split and len(names) == 1:
        return names[0]
    asked = split or use.default_split
    if names and asked not in names:
        told = repr(asked) if split else f"{asked!r} (read when none is named)"
        raise UsageError(f"{source} has no split {told}, only {', '.join(names)}: {use.choose}")
    return asked


def _hub_commit(source: str, revision: str | None) -> str:
    """The commit of a Hub dataset; one line when there is none, or no Hub to ask."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import (
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        sha = HfApi().dataset_info(source, revision=revision).sha
    except RevisionNotFoundError:
        raise UsageError(f"{source}: no revision {revision!r} on the Hub") from None
    except RepositoryNotFoundError:
        raise UsageError(
            f"{source}: no such file or folder, nor a Hub dataset your token can read"
        ) from None
    except HfHubHTTPError:
        raise
    except Exception as exc:  # no answer at all (refused, no DNS, offline mode): a typo, maybe
        raise UsageError(
            f"{source}: no such file or folder, and the Hub could not be reached: "
            f"{type(exc).__name__}: {' '.join(str(exc).split())}"
        ) from exc
    return str(sha)


@contextlib.contextmanager
def _builders_quiet() -> Iterator[None]:
    """A source datasets cannot read is told in one line: its builders' own log lines about it
    are held back."""
    builders = logging.getLogger("datasets.packaged_modules")
    level = builders.level
    builders.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        builders.setLevel(level)


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


def _unreadable(source: str, path: Path, kind: str, exc: Exception, use: Use) -> str:
    """Why datasets could not read a file, in the file's terms (the line, for JSON)."""
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
            return f"{source}: no {use.rows}"
    cause = _root(exc)
    if "corresponds to no data" in str(exc) or isinstance(cause, StopIteration):
        return f"{source}: no {use.rows}"
    return f"{source}: cannot be read as {kind}: {_root_cause(exc)}"


def _root(exc: BaseException) -> BaseException:
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return exc


def _root_cause(exc: BaseException) -> str:
    """The first error of a chain, in one line: datasets wraps what went wrong in its own."""
    cause = _root(exc)
    return f"{type(cause).__name__}: {' '.join(str(cause).split())}"
