"""The ``--output`` folder: data under ``data/``, the card and its figures, and the manifest that
records what this library wrote there. Checked before anything is paid for, written next to the
old files and swapped in whole, read back by ``push``, ``card`` and ``report``."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .config import OFFLINE_NOTICE
from .errors import UsageError

__all__ = [
    "MANIFEST",
    "README",
    "check_output",
    "load_result",
    "save_card",
    "write_figures",
    "write_output",
    "write_splits",
]

MANIFEST = "synth_manifest.json"
README = "README.md"


def check_output(
    output: Path, *, overwrite: bool = False, card: bool = True, splits: Sequence[str] = ("train",)
) -> None:
    """Refuse, before anything is sent, an ``--output`` that cannot be written, or whose files
    this library did not write (unless ``overwrite``): the data files of ``splits``, the manifest
    and (with ``card``) README.md are what a write replaces. Other files are never touched."""
    from .config import check_folder

    check_folder("--output", output)
    probe = next(p for p in (output, *output.parents) if p.exists())
    try:
        tempfile.TemporaryFile(dir=probe).close()
    except OSError as exc:
        raise UsageError(f"--output {output}: cannot write in {probe}: {exc.strerror}") from None
    if overwrite or not output.is_dir():
        return
    theirs = _not_ours(output, card=card, splits=splits)
    if theirs:
        raise UsageError(
            f"--output {output}: {theirs[0]} was not written by synth-datasets (or was changed "
            "since): pass --overwrite to replace it, or choose another folder"
        )


def _not_ours(output: Path, *, card: bool, splits: Sequence[str]) -> list[str]:
    """The files a write would replace that the folder's manifest does not record as ours."""
    manifest: dict[str, Any] = {}
    if (output / MANIFEST).exists():
        try:
            manifest = json.loads((output / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return [MANIFEST]
        if not isinstance(manifest, dict) or "provenance" not in manifest:
            return [MANIFEST]
    ours = set(manifest.get("files", []))
    theirs = [
        rel
        for rel in (str(f.relative_to(output)) for f in _split_files(output, splits))
        if rel not in ours
    ]
    readme = output / README
    if card and readme.exists() and _sha256(readme) != manifest.get("card_sha256"):
        theirs.append(README)
    if card:
        from .card import FIGURE_PATHS

        drawn = manifest.get("figures") or {}
        theirs += [
            rel
            for rel in FIGURE_PATHS
            if (output / rel).exists() and _sha256(output / rel) != drawn.get(rel)
        ]
    return theirs


def _split_files(output: Path, splits: Sequence[str]) -> list[Path]:
    """The data files ``load_dataset(output)`` reads as ``splits``: a write replaces them all."""
    return sorted(f for name in splits for f in (output / "data").glob(f"{name}-*"))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read_manifest(folder: Path) -> dict[str, Any]:
    """The folder's manifest; empty when there is none."""
    path = folder / MANIFEST
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def _write_manifest(path: Path, manifest: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(manifest, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def _figures_record(folder: Path, figures: Sequence[Any]) -> dict[str, str]:
    """The manifest's record of the figures now in ``folder`` (path: sha256). Figures that an
    earlier write recorded and that are not drawn again are removed (no card links them)."""
    drawn = {f.path: hashlib.sha256(f.png).hexdigest() for f in figures}
    for rel, digest in (_read_manifest(folder).get("figures") or {}).items():
        path = folder / rel
        if rel not in drawn and path.is_file() and _sha256(path) == digest:
            path.unlink()
    return drawn


def write_output(
    dataset: Any, output: Path, fmt: str, card: Any = None, *, overwrite: bool = False
) -> Path:
    """``dataset`` as the folder's train split (``write_splits``); the data file written."""
    return write_splits({"train": dataset}, output, fmt, card, overwrite=overwrite)[0]


def write_splits(
    splits: Mapping[str, Any],
    output: Path,
    fmt: str,
    card: Any = None,
    *,
    overwrite: bool = False,
) -> list[Path]:
    """Each split under ``data/`` (so ``load_dataset(folder)`` finds them by name), the card (a
    ``DatasetCard``, if given) and the manifest, which records what was written.

    Parquet files carry the provenance in their schema too. Each file is written next to the one
    it replaces under a hidden name, then swapped in whole (``os.replace``): a crash leaves the
    old file or the new one, never half of one. The data files of these splits that are not
    written again, and those of the splits an earlier write recorded, are removed.
    """
    from .provenance import get_provenance, is_offline, write_parquet

    names = list(splits)
    check_output(output, overwrite=overwrite, card=card is not None, splits=names)  # time passed
    data_dir = output / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    targets = [data_dir / f"{name}-00000-of-00001.{fmt}" for name in names]
    recorded = _read_manifest(output).get("files", [])
    earlier = [data_dir / Path(rel).name for rel in recorded if Path(rel).parent == Path("data")]
    stale = {*_split_files(output, names), *earlier}.difference(targets)
    staged: list[tuple[Path, Path]] = []

    def stage(final: Path) -> Path:
        partial = final.with_name(f".{final.name}.partial")  # load_dataset skips hidden files
        staged.append((partial, final))
        return partial

    provenance = get_provenance(next(iter(splits.values())))
    try:
        for dataset, target in zip(splits.values(), targets, strict=True):
            if fmt == "parquet":
                write_parquet(dataset, stage(target), provenance)
            else:
                dataset.to_json(str(stage(target)), lines=True, force_ascii=False)
        manifest: dict[str, Any] = {
            **({"notice": f"rows {OFFLINE_NOTICE}"} if is_offline(provenance) else {}),
            "provenance": provenance,
            "num_rows": sum(len(dataset) for dataset in splits.values()),
            "format": fmt,
            "files": [str(target.relative_to(output)) for target in targets],
            **({"splits": names} if names != ["train"] else {}),
        }
        if card is not None:
            partial = stage(output / README)
            card.save(partial)  # a SynthCard saves its figures beside it, each swapped in whole
            manifest["card_sha256"] = _sha256(partial)
            manifest["figures"] = _figures_record(output, getattr(card, "figures", ()))
        _write_manifest(stage(output / MANIFEST), manifest)
    except BaseException:
        for partial, _ in staged:
            with contextlib.suppress(OSError):
                partial.unlink(missing_ok=True)
        raise
    for partial, final in staged:
        os.replace(partial, final)
    for old in stale:
        old.unlink(missing_ok=True)
    return targets


def save_card(folder: Path, card: Any) -> Path:
    """``card`` (a ``SynthCard``) as the folder's README.md; recorded in its manifest, if it has
    one, so that a later ``--output`` write may replace it and its figures."""
    path = folder / README
    card.save(path)
    manifest = _read_manifest(folder)
    if manifest:
        manifest["card_sha256"] = _sha256(path)
        manifest["figures"] = _figures_record(folder, card.figures)
        _write_manifest(folder / MANIFEST, manifest)
    return path


def write_figures(folder: Path, figures: Sequence[Any]) -> list[Path]:
    """Figures into ``folder`` (``report --figures``), recorded in its manifest if it has one."""
    from .card import save_figures

    written = save_figures(folder, figures)
    manifest = _read_manifest(folder)
    if manifest:
        manifest["figures"] = _figures_record(folder, figures)
        _write_manifest(folder / MANIFEST, manifest)
    return written


def load_result(folder: Path) -> Any:
    """A folder written by ``expand --output`` (data plus manifest) or by ``save_to_disk``."""
    import datasets

    from .provenance import attach_provenance, from_schema

    if not folder.is_dir():
        raise UsageError(f"{folder}: no such folder")
    manifest_path = folder / MANIFEST
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if manifest.get("splits"):  # several splits, which one Dataset would mix
            raise UsageError(
                f"{folder} holds the splits {', '.join(manifest['splits'])}: read it with "
                f'datasets.load_dataset("{folder}")'
            )
        files = [str(folder / f) for f in manifest.get("files", [])]
        kind = "parquet" if manifest.get("format") == "parquet" else "json"
        ds = datasets.load_dataset(kind, data_files=files, split="train")
        recorded = manifest.get("provenance")
        if not recorded and kind == "parquet" and files:
            import pyarrow.parquet as pq

            recorded = from_schema(pq.read_schema(files[0]))
        if recorded:
            attach_provenance(ds, recorded)
        return ds
    if (folder / "state.json").exists():
        return datasets.load_from_disk(str(folder))
    raise UsageError(
        f"{folder}: neither an `expand --output` folder ({MANIFEST}) nor a save_to_disk folder"
    )
