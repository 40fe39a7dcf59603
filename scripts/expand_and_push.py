#!/usr/bin/env python
"""Seed file or Hub id → expand → quality report → push to the Hub (or write a folder).

    python scripts/expand_and_push.py seeds.jsonl --prompt-file prompt.txt --multiplier 4 \\
        --push-to-hub me/my-synthetic-set            # needs COLLINEAR_API_KEY and HF_TOKEN
    python scripts/expand_and_push.py seeds.jsonl --prompt "..." --local --output out/

The report is printed before anything is pushed, and the same report is the card's statistics.
Exit codes as the CLI: 0 done, 2 usage or configuration (nothing sent), 1 failure, 3 stopped at
the budget (--max-requests, --max-generations: what was received is written, not pushed).
"""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import ExitStack
from pathlib import Path

from synth_datasets import build_card, expand, get_provenance
from synth_datasets.cli import budget_exit, load_seeds, print_offline_notice, push
from synth_datasets.errors import UsageError
from synth_datasets.flags import (
    add_expand_arguments,
    add_output_arguments,
    add_publish_options,
    card_options,
    expand_options,
    offline_run,
)
from synth_datasets.folder import MANIFEST, check_output, write_output
from synth_datasets.guard import run_guarded
from synth_datasets.hub import refuse_offline, resolve_hf_token, validate_hub_repo_id
from synth_datasets.report import DEFAULT_NEAR_THRESHOLD, quality_report

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="expand_and_push.py",
        description="Expand SOURCE (a .jsonl/.json/.csv/.parquet file, a save_to_disk folder or a "
        "Hub dataset id) through the synth-data endpoint, print the data-quality report, then "
        "push the result with its dataset card (--push-to-hub) and/or write it to a folder "
        "(--output).",
    )
    add_expand_arguments(p, defaults={"on_error": "keep"})
    p.add_argument(
        "--near-threshold",
        type=float,
        default=DEFAULT_NEAR_THRESHOLD,
        help=f"near-duplicate Jaccard threshold (default {DEFAULT_NEAR_THRESHOLD})",
    )
    p.add_argument(
        "--report-json",
        type=Path,
        default=None,
        help="also write the report as JSON to this file (e.g. DIR/report.json of --output DIR)",
    )
    add_output_arguments(p)
    p.add_argument("--push-to-hub", metavar="REPO_ID", default=None, help="Hub dataset repo")
    add_publish_options(p)
    p.add_argument("-v", "--verbose", action="store_true", help="tracebacks on errors")
    return p


def run(args: argparse.Namespace) -> int:
    """Check everything that can be checked before the first request, then expand and publish."""
    if args.output is None and args.push_to_hub is None:
        raise UsageError("say where the result goes: --output DIR and/or --push-to-hub REPO_ID")
    if not 0 < args.near_threshold <= 1:
        raise UsageError(f"--near-threshold must be in (0, 1], got {args.near_threshold}")
    if args.push_to_hub is not None:
        validate_hub_repo_id(args.push_to_hub)
        resolve_hf_token(args.hf_token)
        refuse_offline(offline_run(args), args.allow_offline_data)
    if args.output is not None:
        check_output(args.output, overwrite=args.overwrite)
    seeds, source_meta = load_seeds(args)
    with ExitStack() as stack:
        result = expand(seeds, **expand_options(args, stack), source=source_meta)
    print_offline_notice(result)
    print(f"expanded {len(seeds)} seed rows into {len(result)} rows")

    report = quality_report(result, near_threshold=args.near_threshold)
    print(report.to_markdown())
    if args.report_json is not None:  # its folder may be the --output folder, made below
        args.report_json.parent.mkdir(parents=True, exist_ok=True)
        args.report_json.write_text(json.dumps(report.to_dict(), indent=2) + "\n", "utf-8")

    # The usage snippet names the repo when there is one, else the folder (as the CLI does).
    folder = str(args.output) if args.output is not None else None
    card = build_card(
        result, repo_id=args.push_to_hub, folder=folder, report=report, **card_options(args)
    )
    if args.output is not None:
        target = write_output(result, args.output, args.format, card, overwrite=args.overwrite)
        print(f"wrote {len(result)} rows to {target}, README.md and {MANIFEST}")
    if args.push_to_hub is not None and (get_provenance(result) or {}).get("partial"):
        print(f"not pushed to {args.push_to_hub}: the run stopped at its budget")
    elif args.push_to_hub is not None:
        push(result, args.push_to_hub, args, card=card)
    return budget_exit("expand_and_push.py", result)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import datasets

    if not args.verbose:
        datasets.logging.set_verbosity_warning()
    return run_guarded("expand_and_push.py", run, args, verbose=args.verbose)


if __name__ == "__main__":
    sys.exit(main())
