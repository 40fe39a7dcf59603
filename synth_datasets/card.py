"""The dataset card: how the data was made and what is in it, computed from the data itself.

Rendered from ``cards/dataset_card.md`` (shipped as ``synth_datasets.cards``) through
``huggingface_hub.DatasetCard.from_template``, so the YAML header is what the Hub expects. Every
card carries a marker line (``CARD_MARKER``, with the splits it describes), by which ``hub.py``
tells a card it may refresh from one written by hand, and the provenance in its YAML
``dataset_info.description``, which ``load_dataset`` reads back into ``info.description``.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, TypedDict

import datasets
from huggingface_hub import CommitOperationAdd, DatasetCard, DatasetCardData, HfApi, constants

from ._version import __version__
from .contamination import render_contamination
from .errors import ConfigurationError
from .lineage import LINEAGE_COLUMNS, LINEAGE_MEANING
from .provenance import OFFLINE_NOTICE, describe, get_provenance, is_offline, made_by
from .report import QualityReport, quality_report

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack from Python 3.11 on

__all__ = [
    "CARD_MARKER",
    "FIGURES_EXTRA",
    "FIGURE_PATHS",
    "CardFigure",
    "CardOptions",
    "SynthCard",
    "build_card",
    "build_sft_card",
    "card_splits",
    "figure_drawer",
    "save_figures",
    "size_category",
]

CARD_MARKER = "<!-- synth_datasets card "
"""How a card this library wrote begins its body; the JSON after it lists the splits described."""
_MARKER_LINE = re.compile(re.escape(CARD_MARKER) + r"(\{.*?\})")
_DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")

FIGURES_EXTRA = "pip install matplotlib"
"""What installs matplotlib, which draws the card's figures (the package is not on PyPI: its
``figures`` extra installs from a clone only)."""
FIGURE_PATHS = tuple(f"figures/{name}.png" for name in ("rows_per_seed", "lengths", "error_kinds"))
"""The card's figures, relative to it (``figures.draw_figures`` draws them, in this order)."""

_SIZES = ["1K", "10K", "100K", "1M", "10M", "100M", "1B", "10B"]  # bounds 10**3 ... 10**10
_SAMPLE_CHARS = 300
_SPACES = re.compile(r"\s+")


class CardOptions(TypedDict, total=False):
    """The options both cards take: Hub metadata, and whether the prompt is published."""

    pretty_name: str | None
    license: str | None
    language: str | list[str] | None
    task_categories: str | list[str] | None
    tags: Sequence[str]
    include_prompt: bool


@dataclass(frozen=True)
class CardFigure:
    """A figure the card shows: its path relative to the card, its alt text, its PNG bytes."""

    path: str
    alt: str
    png: bytes


class SynthCard(DatasetCard):
    """A dataset card and the figures it links to, which go wherever it goes: ``save`` writes
    them beside README.md, ``push_to_hub`` commits them with it (one commit, so the card's
    links resolve on the Hub from its first revision)."""

    def __init__(
        self,
        content: str,
        ignore_metadata_errors: bool = False,
        figures: Sequence[CardFigure] = (),
    ) -> None:
        super().__init__(content, ignore_metadata_errors)
        self.figures = tuple(figures)

    def save(self, filepath: Path | str) -> None:
        """README.md at ``filepath``, and the figures at their paths beside it."""
        save_figures(Path(filepath).parent, self.figures)
        super().save(filepath)

    def push_to_hub(
        self,
        repo_id: str,
        token: str | None = None,
        repo_type: str | None = None,
        commit_message: str | None = None,
        commit_description: str | None = None,
        revision: str | None = None,
        create_pr: bool | None = None,
        parent_commit: str | None = None,
    ) -> str:
        """README.md and the figures in one commit (``RepoCard.push_to_hub`` sends the card
        alone)."""
        repo_type = repo_type or self.repo_type
        self.validate(repo_type=repo_type)
        operations = [
            CommitOperationAdd(constants.REPOCARD_NAME, str(self).encode("utf-8")),
            *(CommitOperationAdd(f.path, f.png) for f in self.figures),
        ]
        commit = HfApi(token=token).create_commit(
            repo_id,
            operations,
            repo_type=repo_type,
            commit_message=commit_message or "Update dataset card",
            commit_description=commit_description,
            revision=revision,
            create_pr=create_pr,
            parent_commit=parent_commit,
        )
        return str(commit)


def save_figures(folder: Path, figures: Sequence[CardFigure]) -> list[Path]:
    """Each figure at its path under ``folder``, swapped in whole (a crash leaves the old file
    or the new one)."""
    written = []
    for figure in figures:
        target = folder / figure.path
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial")
        partial.write_bytes(figure.png)
        os.replace(partial, target)
        written.append(target)
    return written


def figure_drawer(wanted: bool | None = None) -> Callable[[QualityReport], list[CardFigure]]:
    """``figures.draw_figures``, which imports matplotlib; when matplotlib is not installed, a
    drawer of no figures, or (``wanted`` True) a ConfigurationError saying how to install it."""
    if wanted is False:
        return lambda report: []
    # matplotlib logs a DEBUG line per font it scores: under -v they would bury every other
    # line. A level set on its logger by the user is kept.
    matplotlib_log = logging.getLogger("matplotlib")
    if matplotlib_log.level == logging.NOTSET:
        matplotlib_log.setLevel(logging.WARNING)
    try:
        from .figures import draw_figures
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] != "matplotlib":
            raise
        if wanted:
            raise ConfigurationError(f"the figures need matplotlib: {FIGURES_EXTRA}") from None
        return lambda report: []
    return draw_figures


def size_category(n: int) -> str:
    """The Hub's ``size_categories`` value for ``n`` rows."""
    for i, bound in enumerate(_SIZES):
        if n < 10 ** (i + 3):
            return f"{_SIZES[i - 1]}<n<{bound}" if i else f"n<{bound}"
    return "n>10B"


def _cut(value: Any) -> Any:
    if isinstance(value, str) and len(value) > _SAMPLE_CHARS:
        return value[:_SAMPLE_CHARS] + "…"
    if isinstance(value, dict):
        return {k: _cut(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_cut(v) for v in value[:10]] + (["…"] if len(value) > 10 else [])
    return value


def _sample_rows(dataset: datasets.Dataset, k: int) -> list[int]:
    """Up to ``k`` rows from seeds spread over the set: the first row without an error of each
    chosen seed (rows with an error when there is no other kind)."""
    import numpy as np
    import pyarrow.compute as pc

    names = [c for c in ("source_index", "error") if c in dataset.column_names]
    if len(dataset) == 0 or "source_index" not in names:
        return list(range(min(k, len(dataset))))
    table = dataset.select_columns(names).with_format("arrow")[:]
    rows = np.arange(table.num_rows)
    if "error" in names:
        clean = pc.is_null(table.column("error")).to_numpy(zero_copy_only=False)
        rows = rows[clean] if clean.any() else rows
    seeds = pc.fill_null(table.column("source_index"), -1).to_numpy()[rows]
    _, first = np.unique(seeds, return_index=True)  # the first row of each seed, by seed
    firsts = rows[first]
    chosen = np.linspace(0, len(firsts) - 1, num=min(k, len(firsts))).round().astype(int)
    return [int(firsts[i]) for i in dict.fromkeys(chosen.tolist())]


def _samples(dataset: datasets.Dataset, k: int = 3) -> list[str]:
    return [
        json.dumps(_cut(dataset[i]), ensure_ascii=False, indent=2, default=str)
        for i in _sample_rows(dataset, k)
    ]


def _marker(splits: Sequence[str]) -> str:
    listed = json.dumps({"splits": list(splits)})
    return (
        f"{CARD_MARKER}{listed}: synth_datasets rewrites this card when it pushes these splits "
        "again; delete this line to keep your edits. -->"
    )


def card_splits(text: str) -> list[str] | None:
    """The splits a card written by this library describes; None for any other README."""
    match = _MARKER_LINE.search(text)
    if match is None:
        return None
    try:
        splits = json.loads(match.group(1)).get("splits")
    except (ValueError, AttributeError):
        return None
    return [str(s) for s in splits] if isinstance(splits, list) else None


def _pretty_name(
    options: CardOptions, repo_id: str | None, source: Mapping[str, Any], kind: str
) -> str:
    """The option, else the repo's name, else ``kind`` of the seed dataset's name."""
    if options.get("pretty_name"):
        return str(options["pretty_name"])
    if repo_id:
        return repo_id.split("/")[-1]
    name = PurePosixPath(str(source.get("name") or "").replace("\\", "/")).name
    for suffix in _DATA_SUFFIXES:
        name = name.removesuffix(suffix)
    return f"{kind} of {name}" if name else kind


def _dtype(feature: Any) -> str:
    dtype = _SPACES.sub(" ", repr(feature))
    return dtype if len(dtype) <= 120 else dtype[:117] + "..."


def _render(
    template: str,
    options: CardOptions,
    prov: Mapping[str, Any],
    *,
    rows: int,
    described: Sequence[str],
    repo_id: str | None,
    folder: str | None,
    kind: str,
    metadata: Mapping[str, Any],
    **values: Any,
) -> SynthCard:
    """What both cards share; ``metadata``: the card's own YAML fields, ``values``: its template's
    (which also reads ``prov`` and its ``source`` directly)."""
    unknown = options.keys() - CardOptions.__annotations__.keys()
    if unknown:
        raise TypeError(f"unexpected keyword argument(s) {sorted(unknown)}")
    source = prov.get("source") or {}
    name = _pretty_name(options, repo_id, source, kind)
    include_prompt = options.get("include_prompt", True)
    recorded = {k: v for k, v in prov.items() if include_prompt or k != "prompt"}
    card_data = DatasetCardData(
        pretty_name=name,
        license=options.get("license") or source.get("license") or None,
        language=options.get("language"),
        size_categories=[size_category(rows)],
        **metadata,
        dataset_info={"description": describe(recorded)} if prov else None,
    )
    card: SynthCard = SynthCard.from_template(
        card_data,
        template_str=resources.files("synth_datasets.cards").joinpath(template).read_text("utf-8"),
        marker=_marker(described),
        rows=rows,
        pretty_name=name,
        repo_id=repo_id or folder or "<namespace>/<dataset>",
        version=prov.get("version") or __version__,
        prov=prov,
        source=source,
        offline=is_offline(prov),
        offline_notice=OFFLINE_NOTICE,
        made_by=made_by(prov),
        prompt=prov.get("prompt") if include_prompt else None,
        **values,
    )
    return card


def _tags(options: CardOptions, *kinds: str) -> list[str]:
    return sorted({"synthetic", "synth_datasets", *kinds, *options.get("tags", ())})


def build_card(
    dataset: datasets.Dataset,
    *,
    repo_id: str | None = None,
    folder: str | None = None,
    split: str = "train",
    provenance: Mapping[str, Any] | None = None,
    report: QualityReport | None = None,
    figures: bool | None = None,
    **options: Unpack[CardOptions],
) -> SynthCard:
    """A card for an expanded dataset; explicit arguments override what ``expand`` recorded.

    ``repo_id`` (the Hub repo) or else ``folder`` (a local copy) is what the usage snippet
    loads; ``report`` reuses a ``quality_report`` already computed (one pass over the data).
    ``figures``: draw the report's figures into the card (``card.figures``, linked under
    ``figures/``); ``None`` draws them when matplotlib is installed, ``True`` requires it.
    Without them the card says how to get them.
    """
    prov = {**(get_provenance(dataset) or {}), **(provenance or {})}
    source = prov.get("source") or {}
    source_name = source.get("name") or "an unnamed dataset"
    is_hub_id = bool(source.get("hub")) or (
        bool(re.fullmatch(r"[\w.-]+/[\w.-]+", str(source_name)))
        and not str(source_name).endswith((".jsonl", ".json", ".csv", ".parquet"))
    )
    if report is None:
        report = quality_report(dataset, prov)
    lineage = [c for c in LINEAGE_COLUMNS if c in dataset.column_names]
    drawn = figure_drawer(figures)(report)
    card = _render(
        "dataset_card.md",
        options,
        prov,
        rows=len(dataset),
        described=[split],
        repo_id=repo_id,
        folder=folder,
        kind="Synthetic expansion",
        metadata={
            "task_categories": options.get("task_categories"),
            "source_datasets": [source_name] if is_hub_id else None,
            "tags": _tags(options),
        },
        report=report,
        is_hub_id=is_hub_id,
        source_name=source_name,
        schema=[(c, _dtype(f)) for c, f in dataset.features.items()],
        meanings=dict.fromkeys(prov.get("generated_columns") or [], "generated") | LINEAGE_MEANING,
        samples=_samples(dataset),
        split=split,
        lineage_columns=json.dumps(lineage),
        decontamination=(
            render_contamination(prov["decontamination"]) if prov.get("decontamination") else ""
        ),
        figures=drawn,
        figures_extra=FIGURES_EXTRA,
    )
    card.figures = tuple(drawn)
    return card


def build_sft_card(
    splits: Mapping[str, datasets.Dataset],
    *,
    steps: Sequence[tuple[str, int]],
    expanded_source: str,
    provenance: Mapping[str, Any] | None = None,
    repo_id: str | None = None,
    folder: str | None = None,
    near: str = "not dropped",
    prefix_column: str = "conv_prefix",
    response_column: str = "response",
    split_note: str = "",
    decontamination: Mapping[str, Any] | None = None,
    **options: Unpack[CardOptions],
) -> SynthCard:
    """A card for a chat dataset made from an expanded one (``scripts/to_sft.py``).

    The generation is told from the expanded dataset's provenance, the preparation from
    ``steps`` (what each step left or removed, in order): the lineage columns are gone by then,
    so the card is the only record of how these rows were made. ``decontamination``: the record
    ``prep.decontaminate`` left in the provenance; without one the card says none was requested.
    """
    if not splits:
        raise ValueError("build_sft_card needs at least one split")
    prov = dict(provenance or {})
    rows = sum(len(d) for d in splits.values())
    first = next(iter(splits.values()))
    seeds, multiplier = (prov.get("source") or {}).get("num_rows"), prov.get("multiplier")
    target = seeds * multiplier if isinstance(seeds, int) and isinstance(multiplier, int) else None
    return _render(
        "sft_card.md",
        options,
        prov,
        rows=rows,
        described=list(splits),
        repo_id=repo_id,
        folder=folder,
        kind="Synthetic chat set",
        metadata={
            "task_categories": options.get("task_categories") or ["text-generation"],
            "tags": _tags(options, "sft"),
        },
        summary=f"{rows} chat rows in {len(splits)} split(s), made from {expanded_source}.",
        target=target,
        expanded_source=expanded_source,
        steps=list(steps),
        near=near,
        prefix_column=prefix_column,
        response_column=response_column,
        splits=[(k, len(d)) for k, d in splits.items()],
        split_note=split_note,
        decontamination=render_contamination(decontamination),
        schema=[(c, _dtype(f)) for c, f in first.features.items()],
        sample=_samples(first, k=1)[0] if len(first) else "{}",
    )
