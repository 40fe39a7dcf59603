#!/usr/bin/env python
"""Expanded dataset → chat ``messages`` for supervised fine-tuning (TRL's ``SFTTrainer``).

    python scripts/to_sft.py out/ --output sft/                     # an `expand --output` folder
    python scripts/to_sft.py me/my-synthetic-set --mix-in-seeds seeds.jsonl --push-to-hub me/sft

Steps, each a ``synth_datasets.prep`` helper: drop error rows; optionally put the seed rows back
(first, so that deduplication keeps a seed over a generated copy of it); drop exact and near
duplicates; optionally drop rows that share a 13-word n-gram with an evaluation set; a train/test
split with a fixed seed that keeps each seed's group on one side;
``conv_prefix`` + ``response`` → ``messages``.
Written as parquet or jsonl under ``DIR/data/`` (``load_dataset(DIR)`` reads both splits) or
pushed, with a dataset card (``DIR/README.md``, or the repo's) that tells how the rows were
generated and what each step removed: the lineage columns are gone by then, so the card is the
record. ``--output`` is the CLI's: checked before the work, files it did not write replaced only
with ``--overwrite``, each swapped in whole. Exit codes as the CLI: 0 done, 2 usage or
configuration, 1 failure.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import datasets

from synth_datasets.card import build_sft_card
from synth_datasets.cli import print_offline_notice, push
from synth_datasets.errors import ConfigurationError, UsageError
from synth_datasets.flags import (
    add_against_arguments,
    add_output_arguments,
    add_publish_options,
    card_options,
)
from synth_datasets.folder import MANIFEST, README, check_output, load_result, write_splits
from synth_datasets.guard import run_guarded
from synth_datasets.hub import refuse_offline, resolve_hf_token, validate_hub_repo_id
from synth_datasets.prep import (
    check_test_size,
    cross_split_duplicates,
    decontaminate,
    drop_duplicates,
    drop_errors,
    held_out_rows,
    index_eval_sets,
    mix_in_seeds,
    split_by_seed,
    to_messages,
)
from synth_datasets.provenance import get_provenance, is_offline
from synth_datasets.report import DEFAULT_NEAR_THRESHOLD
from synth_datasets.sources import Use, load_source

__all__ = ["load_expanded", "main", "split"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="to_sft.py",
        description="Turn an expanded dataset (an `expand --output` folder, a save_to_disk folder "
        "or a Hub dataset id) into a `messages` dataset for TRL's SFTTrainer: error rows and "
        "near-duplicates dropped, seeds optionally mixed in, split into train/test.",
    )
    p.add_argument("source", help="expanded dataset: result folder, save_to_disk folder or Hub id")
    p.add_argument("--split", default=None, help="split of SOURCE (default train)")
    p.add_argument("--config", default=None, help="Hub dataset config name")
    p.add_argument("--prefix-column", default="conv_prefix", help="turns before the response")
    p.add_argument("--response-column", default="response", help="the response turn(s)")
    p.add_argument(
        "--keep-columns", default="", help="comma-separated columns kept beside `messages`"
    )
    p.add_argument(
        "--mix-in-seeds",
        metavar="SEEDS",
        default=None,
        help="seed file, save_to_disk folder or Hub id whose rows are added back",
    )
    p.add_argument("--seeds-split", default=None, help="split of SEEDS (default train)")
    p.add_argument(
        "--near-threshold",
        type=float,
        default=DEFAULT_NEAR_THRESHOLD,
        help=f"near-duplicate Jaccard threshold (default {DEFAULT_NEAR_THRESHOLD})",
    )
    p.add_argument("--no-near", action="store_true", help="drop exact duplicates only")
    add_against_arguments(
        p,
        "--decontaminate-against",
        "remove the rows that share an n-gram with a text of these evaluation sets",
    )
    p.add_argument(
        "--test-size",
        type=float,
        default=0.1,
        help="test split: a fraction (< 1) or a number of rows; 0 for no test split (default 0.1)",
    )
    p.add_argument("--seed", type=int, default=42, help="shuffle seed of the split (default 42)")
    p.add_argument(
        "--split-by",
        choices=["seed", "row"],
        default="seed",
        help="seed: whole seed groups (a seed's rows, the seed, and their exact and near "
        "duplicates) on one side, so nothing leaks into test (default); row: row by row",
    )
    add_output_arguments(p, help="write the splits under DIR/data/, the card and the manifest")
    p.add_argument("--push-to-hub", metavar="REPO_ID", default=None, help="Hub dataset repo")
    add_publish_options(p)
    p.add_argument("-v", "--verbose", action="store_true", help="tracebacks on errors")
    return p


SOURCE = Use(rows="rows to prepare")
SEEDS = Use(
    rows="seed rows to mix in", choose="choose one with --seeds-split", drop="drop --seeds-split"
)


def load_expanded(source: str, *, split: str | None, config: str | None) -> datasets.Dataset:
    """A result folder keeps its provenance (the generated columns); anything else loads as-is."""
    path = Path(source)
    if path.is_dir() and ((path / MANIFEST).exists() or (path / "state.json").exists()):
        return load_result(path)
    return load_source(source, split=split, config=config, use=SOURCE)[0]


def split(
    ds: datasets.Dataset,
    test_size: float,
    seed: int,
    *,
    by: str = "seed",
    threshold: float = DEFAULT_NEAR_THRESHOLD,
) -> datasets.DatasetDict:
    """train/test with a fixed seed (only train when ``test_size`` is 0): by seed group
    (``prep.split_by_seed``, nothing leaks) or, with ``by="row"``, row by row."""
    if test_size == 0:
        return datasets.DatasetDict({"train": ds})
    if by == "seed":
        return split_by_seed(ds, test_size, seed=seed, threshold=threshold)
    return ds.train_test_split(test_size=held_out_rows(test_size, len(ds)), seed=seed)


def split_note(args: argparse.Namespace, asked: int, test: int, leaks: int) -> str:
    """What the card says of the split: the policy, the sizes, what leaks across it."""
    call = f"test_size={args.test_size:g}, seed={args.seed}"
    measured = (
        f"Pairs of a train row and a test row that are exact or near duplicates (Jaccard >= "
        f"{args.near_threshold:g}), measured after the split: **{leaks}**."
    )
    if args.split_by == "seed":
        return (
            f"Split by seed group (`split_by_seed({call})`), so that nothing leaks from train to "
            "test: the rows generated from one seed, the seed row itself, and every row that is "
            f"an exact or near duplicate (Jaccard >= {args.near_threshold:g}) of one of them, "
            f"through any chain of such pairs, are on the same side. The test split has {test} "
            f"rows for {asked} asked, as close as whole groups allow. {measured}"
        )
    return (
        f"Split row by row (`train_test_split({call})`): rows generated from one seed, "
        f"paraphrases of each other, can be on both sides. {measured}"
    )


def run(args: argparse.Namespace) -> int:
    if args.output is None and args.push_to_hub is None:
        raise UsageError("say where the result goes: --output DIR and/or --push-to-hub REPO_ID")
    if not 0 < args.near_threshold <= 1:
        raise UsageError(f"--near-threshold must be in (0, 1], got {args.near_threshold}")
    if args.test_size < 0:
        raise UsageError(f"--test-size must be >= 0 (0: no test split), got {args.test_size}")
    if args.test_size != 0:  # the rest of its check needs the rows, after the work
        check_test_size(args.test_size)
    if args.output is not None:
        names = ["train", "test"] if args.test_size != 0 else ["train"]
        check_output(args.output, overwrite=args.overwrite, splits=names)
    if args.push_to_hub is not None:
        validate_hub_repo_id(args.push_to_hub)
        resolve_hf_token(args.hf_token)
    keep = [c.strip() for c in args.keep_columns.split(",") if c.strip()]

    ds = load_expanded(args.source, split=args.split, config=args.config)
    provenance = get_provenance(ds)
    if args.push_to_hub is not None:  # before the work, not after it
        refuse_offline(is_offline(provenance), args.allow_offline_data)
    print_offline_notice(ds, provenance)
    seeds = None
    if args.mix_in_seeds is not None:
        seeds, _ = load_source(args.mix_in_seeds, split=args.seeds_split, config=None, use=SEEDS)
    evals = None  # read and hashed before the work: a set that cannot be read stops it first
    if args.decontaminate_against:
        evals = index_eval_sets(args.decontaminate_against, n=args.ngram)
    counts: dict[str, Any] = {"rows": len(ds)}
    ds = drop_errors(ds)
    counts["error rows dropped"] = counts["rows"] - len(ds)
    if seeds is not None:
        ds = mix_in_seeds(ds, seeds)
        counts["seed rows mixed in"] = len(seeds)
    before = len(ds)
    ds = drop_duplicates(ds, near=not args.no_near, threshold=args.near_threshold)
    counts["duplicates dropped"] = before - len(ds)
    contamination = None
    if evals is not None:
        ds = decontaminate(ds, evals, remove=True)
        contamination = (get_provenance(ds) or {})["decontamination"]
        counts["rows sharing an n-gram with an evaluation set dropped"] = contamination[
            "rows_removed"
        ]
    if len(ds) == 0:
        dropped = "errors, duplicates" + (" and rows quoting an eval set" if contamination else "")
        raise ConfigurationError(f"{args.source}: no row left after dropping {dropped}")
    parts = split(ds, args.test_size, args.seed, by=args.split_by, threshold=args.near_threshold)
    splits = datasets.DatasetDict(
        {
            name: to_messages(
                part,
                prefix_column=args.prefix_column,
                response_column=args.response_column,
                keep_columns=keep,
            )
            for name, part in parts.items()
        }
    )
    note = "One split: no test split was asked for."
    if "test" in parts:
        leaks = cross_split_duplicates(parts["train"], parts["test"], threshold=args.near_threshold)
        note = split_note(args, held_out_rows(args.test_size, len(ds)), len(parts["test"]), leaks)
    print(
        "; ".join(f"{k}: {v}" for k, v in counts.items())
        + " -> "
        + ", ".join(f"{name} {len(d)}" for name, d in splits.items())
    )
    card = build_sft_card(
        splits,
        steps=[("rows of the expanded dataset" if k == "rows" else k, v) for k, v in counts.items()]
        + [("rows kept", len(ds))],
        expanded_source=args.source,
        provenance=provenance,
        repo_id=args.push_to_hub,
        folder=str(args.output) if args.output is not None else None,
        near=(
            "exact duplicates only"
            if args.no_near
            else f"exact, and near (MinHash, Jaccard >= {args.near_threshold})"
        ),
        prefix_column=args.prefix_column,
        response_column=args.response_column,
        split_note=note,
        decontamination=contamination,
        **card_options(args),
    )
    if args.output is not None:
        for path in write_splits(splits, args.output, args.format, card, overwrite=args.overwrite):
            print(f"wrote {path}")
        print(f"wrote {args.output / README} and {args.output / MANIFEST}")
    if args.push_to_hub is not None:
        push(splits, args.push_to_hub, args, card=card, provenance=provenance)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.verbose:
        datasets.logging.set_verbosity_warning()
    return run_guarded("to_sft.py", run, args, verbose=args.verbose)


if __name__ == "__main__":
    sys.exit(main())
