"""Publish a dataset and its card to the Hub so that neither clobbers the other.

The data goes first, through datasets' own ``push_to_hub`` (it merges ``dataset_info`` and
``configs`` into whatever README it finds, and with ``create_pr`` opens the pull request). The
card then goes on top of that very commit, to the same branch or pull request, with datasets'
``dataset_info`` and ``configs`` merged in and the provenance as ``dataset_info.description``
(datasets drops that field on every push; ``load_dataset`` reads it back).

A README already there decides what happens to the card (``PushResult.card``):

- none: the card is ``written``;
- a card this library wrote (``card.CARD_MARKER``) for the splits pushed: ``refreshed``; one for
  other splits is ``kept`` (its provenance record restored);
- datasets' default README (only ``dataset_info``/``configs``): ``replaced``;
- any other README was written by hand: ``kept`` as datasets left it, unless ``overwrite_card``.

Rows of the bundled offline engine are refused unless ``allow_offline_data=True``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import datasets
from huggingface_hub import DatasetCard, HfApi, constants, get_token
from huggingface_hub.errors import EntryNotFoundError, HFValidationError

# huggingface_hub.utils re-exports it under a computed __all__, which mypy cannot read.
from huggingface_hub.utils import validate_repo_id  # type: ignore[attr-defined]

from .card import SynthCard, build_card, card_splits
from .errors import ConfigurationError, scrub
from .provenance import OFFLINE_NOTICE, get_provenance, is_offline

__all__ = [
    "PushResult",
    "push_to_hub",
    "refuse_offline",
    "resolve_hf_token",
    "validate_hub_repo_id",
]

logger = logging.getLogger("synth_datasets.hub")

CardAction = Literal["written", "refreshed", "replaced", "overwritten", "kept"]
_DATASETS_KEYS = {"dataset_info", "configs"}


@dataclass(frozen=True)
class PushResult:
    """What a push did: where the data went and what became of the dataset card."""

    url: str
    """The repo's URL."""
    rows: int
    splits: tuple[str, ...]
    card: CardAction
    """``written`` (no README before), ``refreshed`` (this library's card), ``replaced``
    (datasets' default README), ``overwritten`` (a hand-written one, on request) or ``kept``."""
    kept_card: str | None = None
    """Why the card was kept: ``"hand-written"`` or the splits the existing card describes."""
    pr_url: str | None = None
    offline: bool = False

    def summary(self, overwrite: str = "overwrite_card=True") -> str:
        """One line for people; ``overwrite``: how the caller spells the option to replace a
        card that was kept (``--overwrite-card`` on the command line)."""
        where = self.pr_url or self.url
        rows = f"pushed {self.rows} rows" + (
            f" ({', '.join(self.splits)})" if len(self.splits) > 1 else ""
        )
        if self.card == "kept":
            what = (
                "the existing hand-written dataset card"
                if self.kept_card == "hand-written"
                else f"the dataset card, which describes {self.kept_card}"
            )
            return f"{rows} to {where}; kept {what} (pass {overwrite} to replace it)"
        done = {
            "written": "and the dataset card",
            "refreshed": "and refreshed the dataset card synth_datasets wrote before",
            "replaced": "and the dataset card, in place of datasets' default README",
            "overwritten": "and the dataset card, in place of the hand-written one",
        }[self.card]
        return f"{rows} {done} to {where}"


def resolve_hf_token(token: str | None) -> str:
    """The argument, else ``HF_TOKEN``, else the huggingface_hub login; refused when none."""
    token = token or os.environ.get("HF_TOKEN") or get_token()
    if not token:
        raise ConfigurationError(
            "no Hugging Face token: pass token=, set HF_TOKEN, or run `hf auth login`"
        )
    return token


def validate_hub_repo_id(repo_id: object) -> str:
    if not isinstance(repo_id, str) or not repo_id:
        raise ConfigurationError(f"repo_id must be 'namespace/name', got {repo_id!r}")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        first = str(exc).splitlines()[0]
        raise ConfigurationError(f"invalid Hub repo id {repo_id!r}: {first}") from None
    if repo_id.count("/") != 1:
        raise ConfigurationError(f"repo_id must be 'namespace/name', got {repo_id!r}")
    return repo_id


def refuse_offline(offline: bool, allow_offline_data: bool) -> None:
    """Rows of the offline engine are published only when asked for explicitly."""
    if offline and not allow_offline_data:
        raise ConfigurationError(
            f"refusing to push rows {OFFLINE_NOTICE} (word substitution, not a language "
            "model): pass allow_offline_data=True to publish them anyway",
            option="allow_offline_data",
        )


def push_to_hub(
    dataset: datasets.Dataset | datasets.DatasetDict,
    repo_id: str,
    *,
    private: bool = True,
    token: str | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    commit_message: str | None = None,
    split: str = "train",
    config_name: str = "default",
    card: DatasetCard | None = None,
    overwrite_card: bool = False,
    allow_offline_data: bool = False,
    include_prompt: bool = True,
    license: str | None = None,
    language: str | list[str] | None = None,
    task_categories: str | list[str] | None = None,
    tags: Sequence[str] = (),
    pretty_name: str | None = None,
    provenance: Mapping[str, Any] | None = None,
    max_shard_size: str | int | None = None,
) -> PushResult:
    """Push ``dataset`` as ``split`` of ``repo_id`` (a private repo unless ``private=False``),
    then its card (``card``, else ``build_card`` of the data and its provenance).

    A ``DatasetDict`` pushes all its splits in one commit and needs ``card=``. An existing
    README is refreshed, replaced or kept as the module says; ``overwrite_card=True`` replaces
    any. Rows made by the bundled offline engine need ``allow_offline_data=True``. Checked
    before anything is uploaded: the repo id, the token, the offline refusal.

        >>> import synth_datasets
        >>> result = synth_datasets.push_to_hub(out, "me/my-synthetic-set")
        >>> print(result.summary())
    """
    repo_id = validate_hub_repo_id(repo_id)
    if isinstance(dataset, datasets.DatasetDict):
        if not dataset:
            raise ConfigurationError("push_to_hub got a DatasetDict without splits")
        if card is None:
            raise ConfigurationError("a DatasetDict needs its card: pass card= (build_sft_card)")
        splits = {str(name): ds for name, ds in dataset.items()}
    elif isinstance(dataset, datasets.Dataset):
        if not split or not isinstance(split, str):
            raise ConfigurationError(f"split must be a non-empty name, got {split!r}")
        splits = {split: dataset}
    else:
        raise ConfigurationError(
            f"push_to_hub takes a datasets.Dataset or DatasetDict, got {type(dataset).__name__}"
        )
    recorded = {**(get_provenance(next(iter(splits.values()))) or {}), **(provenance or {})}
    offline = is_offline(recorded)
    refuse_offline(offline, allow_offline_data)
    token = resolve_hf_token(token)
    if card is None:
        assert isinstance(dataset, datasets.Dataset)
        card = build_card(
            dataset,
            repo_id=repo_id,
            split=split,
            pretty_name=pretty_name,
            license=license,
            language=language,
            task_categories=task_categories,
            tags=tags,
            include_prompt=include_prompt,
            provenance=provenance,
        )

    # A Hub error may quote the Authorization header it was sent: the token is masked in it.
    with _scrubbed(token):
        api = HfApi(token=token)
        url = str(api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True))
        if revision:
            api.create_branch(repo_id, repo_type="dataset", branch=revision, exist_ok=True)
        action, kept_card, base = _card_plan(
            _readme(api, repo_id, revision), card, list(splits), overwrite_card
        )
        rows = sum(len(ds) for ds in splits.values())
        message = commit_message or (
            f"Upload {split} split ({rows} rows)"
            if isinstance(dataset, datasets.Dataset)
            else f"Upload splits {', '.join(splits)} ({rows} rows)"
        )
        kwargs: dict[str, Any] = dict(
            config_name=config_name,
            commit_message=message,
            private=private,
            token=token,
            revision=revision,
            create_pr=create_pr,
        )
        if max_shard_size is not None:
            kwargs["max_shard_size"] = max_shard_size
        if isinstance(dataset, datasets.Dataset):
            kwargs["split"] = split
        with _without_num_proc_notice():
            commit = dataset.push_to_hub(repo_id, **kwargs)
        if base is not None:
            # On the data commit itself (parent_commit): the README merged is the one datasets wrote.
            # The card's figures go in the card's commit.
            merged = _merge(base, _readme(api, repo_id, commit.oid), config_name)
            merged.push_to_hub(
                repo_id,
                repo_type="dataset",
                token=token,
                revision=commit.pr_revision or revision,
                parent_commit=commit.oid,
                commit_message=(commit_message or "Add dataset card") + " (card)",
            )
        return PushResult(
            url=url,
            rows=rows,
            splits=tuple(splits),
            card=action,
            kept_card=kept_card,
            pr_url=commit.pr_url,
            offline=offline,
        )


@contextlib.contextmanager
def _scrubbed(token: str) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        scrub(exc, token)
        raise


def _readme(api: HfApi, repo_id: str, revision: str | None) -> str | None:
    """The README at ``revision`` (a branch, a PR ref or a commit), None when there is none."""
    try:
        path = api.hf_hub_download(
            repo_id, constants.REPOCARD_NAME, repo_type="dataset", revision=revision
        )
    except EntryNotFoundError:
        return None
    with open(path, encoding="utf-8", newline="") as f:
        return f.read()


def _card_plan(
    existing: str | None, card: DatasetCard, splits: Sequence[str], overwrite: bool
) -> tuple[CardAction, str | None, DatasetCard | None]:
    """What to do with the README there: the action, why a card is kept, and the card to commit
    after the data (None: leave the README as datasets leaves it)."""
    if existing is None or not existing.strip():
        return "written", None, card
    described = card_splits(existing)
    if described is not None:
        if overwrite or set(described) <= set(splits):
            return "refreshed", None, card
        # Kept; committed again all the same: datasets' push dropped its provenance record.
        listed = ", ".join(described)
        return "kept", f"split{'s' if len(described) > 1 else ''} {listed}", DatasetCard(existing)
    if _is_datasets_default(existing):
        return "replaced", None, card
    if overwrite:
        return "overwritten", None, card
    logger.info("keeping the hand-written dataset card")
    return "kept", "hand-written", None


def _is_datasets_default(text: str) -> bool:
    """datasets' own README: YAML of ``dataset_info``/``configs`` only, no text."""
    try:
        readme = DatasetCard(text)
    except Exception:  # not even a README huggingface_hub can read: someone wrote it
        return False
    return not readme.text.strip() and set(_yaml(readme)) <= _DATASETS_KEYS


def _yaml(readme: DatasetCard) -> dict[str, Any]:
    data: dict[str, Any] = readme.data.to_dict()  # type: ignore[no-untyped-call]
    return data


def _entries(info: Any) -> list[dict[str, Any]]:
    return [e for e in (info if isinstance(info, list) else [info]) if isinstance(e, dict)]


def _merge(card: DatasetCard, pushed: str | None, config_name: str) -> SynthCard:
    """``card`` (and its figures) with the ``dataset_info`` and ``configs`` that datasets just
    wrote in ``pushed``, and ``card``'s provenance record as ``config_name``'s description."""
    merged = SynthCard(str(card), figures=card.figures if isinstance(card, SynthCard) else ())
    ours = _entries(merged.data.get("dataset_info"))
    description = next(
        (
            e["description"]
            for e in ours
            if e.get("description") and e.get("config_name", "default") == config_name
        ),
        None,
    )
    theirs = _yaml(DatasetCard(pushed)) if pushed else {}
    for key in _DATASETS_KEYS:
        merged.data.pop(key, None)
        if theirs.get(key) is not None:
            merged.data[key] = theirs[key]
    if description is not None:
        for entry in _entries(merged.data.get("dataset_info")):
            if entry.get("config_name", "default") == config_name:
                entry["description"] = description
        if merged.data.get("dataset_info") is None:
            merged.data["dataset_info"] = {"description": description}
    return merged


class _NumProcNotice(logging.Filter):
    """datasets says "Setting num_proc from 1 back to 1" on every one-shard push, num_proc or
    not: noise that reads as if something were set."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Setting num_proc from 1 back to 1")


@contextlib.contextmanager
def _without_num_proc_notice() -> Iterator[None]:
    target = logging.getLogger("datasets.arrow_dataset")
    notice = _NumProcNotice()
    target.addFilter(notice)
    try:
        yield
    finally:
        target.removeFilter(notice)
