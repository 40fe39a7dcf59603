"""Publish an expanded dataset and its card to the Hub so that neither clobbers the other.

The card goes first, and only where there is no README yet: datasets' ``push_to_hub`` then merges
just ``dataset_info`` and ``configs`` into its YAML, so the card's text survives every later split.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, ParamSpec, TypeVar, cast

import datasets
from huggingface_hub import DatasetCard, HfApi, constants, get_token
from huggingface_hub.errors import HFValidationError

# huggingface_hub.utils re-exports it under a computed __all__, which mypy cannot read.
from huggingface_hub.utils import validate_repo_id  # type: ignore[attr-defined]

from .card import build_card
from .errors import ConfigurationError, scrub

__all__ = ["push_card", "push_to_hub", "resolve_hf_token", "validate_hub_repo_id"]

logger = logging.getLogger("synth_datasets.hub")
_P = ParamSpec("_P")
_R = TypeVar("_R")


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


def push_to_hub(
    dataset: datasets.Dataset,
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
    include_prompt: bool = True,
    license: str | None = None,
    language: str | list[str] | None = None,
    task_categories: str | list[str] | None = None,
    tags: Sequence[str] = (),
    pretty_name: str | None = None,
    provenance: Mapping[str, Any] | None = None,
    max_shard_size: str | int | None = None,
) -> str:
    """Push ``dataset`` as ``split`` of ``repo_id`` with its card; returns the repo URL."""
    repo_id = validate_hub_repo_id(repo_id)
    if not isinstance(dataset, datasets.Dataset):
        raise ConfigurationError(
            f"push_to_hub takes a datasets.Dataset, got {type(dataset).__name__}"
        )
    if not split or not isinstance(split, str):
        raise ConfigurationError(f"split must be a non-empty name, got {split!r}")
    token = resolve_hf_token(token)
    if card is None:
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
    repo: dict[str, Any] = dict(
        token=token, private=private, revision=revision, create_pr=create_pr
    )
    url = push_card(
        card, repo_id, overwrite_card=overwrite_card, commit_message=commit_message, **repo
    )
    if max_shard_size is not None:
        repo["max_shard_size"] = max_shard_size
    message = commit_message or f"Upload {split} split ({len(dataset)} rows)"
    with _scrubbed(token):
        dataset.push_to_hub(
            repo_id, config_name=config_name, split=split, commit_message=message, **repo
        )
    return url


@contextlib.contextmanager
def _scrubbed(token: str | None) -> Iterator[None]:
    """A Hub error may quote the Authorization header it was sent: the token is masked in it."""
    try:
        yield
    except Exception as exc:
        scrub(exc, token)
        raise


def _scrubbing(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """``fn`` with its ``token=`` masked in what it raises."""

    @functools.wraps(fn)
    def call(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with _scrubbed(cast("str | None", kwargs.get("token"))):
            return fn(*args, **kwargs)

    return call


@_scrubbing
def push_card(
    card: DatasetCard,
    repo_id: str,
    *,
    token: str,
    private: bool = True,
    revision: str | None = None,
    create_pr: bool = False,
    overwrite_card: bool = False,
    commit_message: str | None = None,
) -> str:
    """Create the repo if needed and push ``card`` unless one is there; call it before the data."""
    api = HfApi(token=token)
    url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    if revision:
        api.create_branch(repo_id, repo_type="dataset", branch=revision, exist_ok=True)
    if overwrite_card or not api.file_exists(
        repo_id, constants.REPOCARD_NAME, repo_type="dataset", revision=revision or None
    ):
        card.push_to_hub(
            repo_id,
            repo_type="dataset",
            token=token,
            revision=revision,
            create_pr=create_pr,
            commit_message=(commit_message or "Add dataset card") + " (card)",
        )
    else:
        logger.info("keeping the dataset card already in %s", repo_id)
    return str(url)
