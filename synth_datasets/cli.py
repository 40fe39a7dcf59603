"""``synth-datasets``: expand, serve (and, with the publish step, push and card).

Exit codes: 0 done, 2 usage or configuration (nothing was sent), 1 failure, 3 stopped at the
budget (``--max-requests``, ``--max-generations``: what was received is written), 130 interrupted.
Errors are one line; ``-v`` shows the traceback and DEBUG logs. The flags are built in ``flags.py``
and every command ends through ``guard.run_guarded``, as the scripts' do.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from ._version import __version__
from .config import OFFLINE_NOTICE, ExpandConfig, flag
from .errors import UsageError
from .flags import (
    add_against_arguments,
    add_card_options,
    add_expand_arguments,
    add_output_arguments,
    add_publish_options,
    card_options,
    expand_options,
    offline_run,
)
from .folder import (
    MANIFEST,
    README,
    check_output,
    load_result,
    save_card,
    write_figures,
    write_output,
)
from .guard import run_guarded
from .sources import load_source

__all__ = [
    "BUDGET_EXIT",
    "budget_exit",
    "load_seeds",
    "main",
    "make_card",
    "print_offline_notice",
    "push",
    "write_card",
]

BUDGET_EXIT = 3
"""The exit code of a run that stopped at its budget: its rows are written, the rest unsent."""


def _add_expand(sub: Any) -> None:
    p = sub.add_parser(
        "expand",
        help="expand a seed dataset through the synth-data endpoint",
        description="Expand SOURCE (a .jsonl/.json/.csv/.parquet file, a save_to_disk folder or "
        "a Hub dataset id) into MULTIPLIER generations per row, each linked to its seed.",
    )
    add_expand_arguments(p)
    add_output_arguments(p)
    p.add_argument("--dry-run", action="store_true", help="print the plan; send nothing")
    p.add_argument("--show", type=int, default=3, help="print this many result rows (default 3)")
    p.add_argument(
        "--push-to-hub",
        metavar="REPO_ID",
        default=None,
        help="push the result and its card to this Hub dataset repo",
    )
    add_publish_options(p)


def print_offline_notice(dataset: Any, provenance: Any = None) -> None:
    """The first line of a command's report on rows the offline engine made."""
    from .provenance import get_provenance, is_offline

    if is_offline(provenance if provenance is not None else get_provenance(dataset)):
        print(f"note: these rows were {OFFLINE_NOTICE} (word substitution, not a language model)")


def _folder_command(sub: Any, name: str, help: str, **kw: Any) -> argparse.ArgumentParser:
    """A subcommand that reads a result folder (``push``, ``card``, ``report``)."""
    p: argparse.ArgumentParser = sub.add_parser(name, help=help, **kw)
    p.add_argument("dir", type=Path, help="folder written by `expand --output` or save_to_disk")
    return p


def _add_publish(sub: Any) -> None:
    push = _folder_command(
        sub, "push", "push an --output folder (or save_to_disk folder) to the Hub"
    )
    push.add_argument("repo_id", help="Hub dataset repo, namespace/name")
    push.add_argument("--split", default="train", help="split name on the Hub (default train)")
    push.add_argument("--revision", default=None, help="branch to push to")
    push.add_argument("--create-pr", action="store_true", help="open a pull request instead")
    push.add_argument("--commit-message", default=None)
    add_publish_options(push)
    card = _folder_command(sub, "card", "write README.md (the dataset card) into a result folder")
    card.add_argument("--repo-id", default=None, help="repo id to show in the usage snippet")
    add_card_options(card)


def _add_report(sub: Any) -> None:
    p = _folder_command(
        sub,
        "report",
        "print the data-quality report of a result folder",
        description="Errors, rows per seed, duplicates and lengths of DIR (an `expand --output` "
        "folder or a save_to_disk folder), computed from the data alone.",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of Markdown tables")
    p.add_argument(
        "--near-threshold",
        type=float,
        default=None,
        help="Jaccard similarity for near-duplicates (default 0.85)",
    )
    p.add_argument("--no-near", action="store_true", help="skip the near-duplicate search")
    from .card import FIGURES_EXTRA

    p.add_argument(
        "--figures",
        action="store_true",
        help=f"also draw the report's figures into DIR/figures/ (needs matplotlib: "
        f"{FIGURES_EXTRA})",
    )
    add_against_arguments(
        p, "--against", "count the rows that share an n-gram with a text of these evaluation sets"
    )


def _cmd_report(args: argparse.Namespace) -> int:
    from .card import figure_drawer
    from .report import DEFAULT_NEAR_THRESHOLD, quality_report

    threshold = DEFAULT_NEAR_THRESHOLD if args.near_threshold is None else args.near_threshold
    if not 0 < threshold <= 1:
        raise UsageError(f"--near-threshold must be in (0, 1], got {threshold}")
    draw = figure_drawer(True) if args.figures else None  # refused before the pass, not after
    dataset = load_result(args.dir)
    evals = None  # read and hashed before the report's pass: a bad set is refused before it
    if args.against:
        from .contamination import index_eval_sets

        evals = index_eval_sets(args.against, n=args.ngram)
    report = quality_report(dataset, near=not args.no_near, near_threshold=threshold)
    found = None
    if evals is not None:
        from .contamination import find_contamination

        found = find_contamination(dataset, evals)
    if args.json:
        payload = report.to_dict() | ({"contamination": found.to_dict()} if found else {})
        print(json.dumps(payload, ensure_ascii=False, indent=2))
    else:
        print_offline_notice(dataset)
        print(report.to_markdown(), end="")
        if found is not None:
            print("\n" + found.to_markdown(heading_level=2), end="")
    if draw is not None:
        written = write_figures(args.dir, draw(report))
        listed = ", ".join(str(path) for path in written)
        print(f"wrote the figures {listed}", file=sys.stderr if args.json else sys.stdout)
    return 0


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="synth-datasets",
        description="Turn a small Hugging Face dataset into a large synthetic one.",
    )
    parser.add_argument("--version", action="version", version=f"synth-datasets {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="DEBUG logs and tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_expand(sub)
    _add_publish(sub)
    _add_report(sub)
    from .testing.serve import add_serve_arguments

    add_serve_arguments(
        sub.add_parser("serve", help="run the offline reference server of the endpoint")
    )
    return parser


def _dry_run(args: argparse.Namespace, ds: Any, options: dict[str, Any]) -> int:
    from .config import ENDPOINT_PATH, given_model_id
    from .layout import make_examples
    from .mapper import plan_for
    from .testing.engine import OfflineEngine

    # Nothing is sent, so no model is needed: a stand-in UUID (the offline engine's) builds the
    # config, and the body shows that none was given.
    no_model = given_model_id(options.get("model_id")) is None
    stand_in = {**options, "model_id": OfflineEngine.model_id}
    config = ExpandConfig(**stand_in if no_model else options)
    layout = plan_for(config, ds.features)
    n, size = len(ds), config.request_size
    requests = math.ceil(n / size)
    first = ds.select(range(min(size, n)))
    examples = make_examples(layout, first.to_dict(), list(range(len(first))))
    base = "http://127.0.0.1:<port> (local reference server)" if args.local else config.base_url
    has_key = args.local or bool(os.environ.get("COLLINEAR_API_KEY"))
    in_flight = config.max_concurrency
    if in_flight == "auto":
        in_flight = f"up to {config.concurrency_ceiling} (adaptive)"
    body = {
        "model_id": "<not set: --model-id or COLLINEAR_MODEL_ID>" if no_model else config.model_id,
        "multiplier": config.multiplier,
        "examples": examples,
        "prompt": config.prompt,
    }
    print(
        f"plan: {n} seed row{'s' * (n != 1)} -> {requests} request{'s' * (requests != 1)} of "
        f"<= {size} examples, "
        f"{n * config.multiplier} generations targeted (multiplier {config.multiplier}; "
        f"{flag('generation_limit')} {config.generation_limit}), {in_flight} in flight"
    )
    print(_budget_line(config, requests, n * config.multiplier))
    config.check_generations(n)  # the plan is shown, then refused like the run would be
    print(f"endpoint: POST {base}{ENDPOINT_PATH}")
    print(
        "headers: Authorization: Bearer *** "
        + ("" if has_key else "(no key set: COLLINEAR_API_KEY)")
    )
    print(
        f"sent columns: {', '.join(layout.columns)}; passthrough: "
        f"{', '.join(layout.passthrough) or '-'}"
    )
    print(f"output columns: {', '.join(layout.column_names)}")
    print("first request body:")
    print(json.dumps(body, ensure_ascii=False, indent=2, default=str))
    print("dry run: nothing was sent")
    return 0


def _budget_line(config: ExpandConfig, requests: int, generations: int) -> str:
    """The dry run's line on the budget: the options, and whether the plan fits in them."""
    from .budget import BUDGET_OPTIONS

    shown = ", ".join(f"{flag(n)} {getattr(config, n) or 'none'}" for n in BUDGET_OPTIONS)
    over = (config.max_requests is not None and requests > config.max_requests) or (
        config.max_generations is not None and generations > config.max_generations
    )
    if over:
        return (
            f"budget: {shown}: the run stops sending there, writes what it received and exits "
            f"{BUDGET_EXIT}, unless the cache answers the rest (answers already cached are free)"
        )
    return f"budget: {shown}: the plan fits (answers already cached are free)"


def budget_exit(prog: str, dataset: Any) -> int:
    """0, or ``BUDGET_EXIT`` after one line on stderr when the run stopped at its budget."""
    from .budget import partial_message
    from .provenance import get_provenance

    partial = (get_provenance(dataset) or {}).get("partial")
    if not partial:
        return 0
    print(f"{prog}: {partial_message(partial, spell=flag)}", file=sys.stderr)
    return BUDGET_EXIT


def make_card(dataset: Any, folder: Path, args: argparse.Namespace, repo_id: str | None) -> Any:
    from .card import build_card

    return build_card(dataset, repo_id=repo_id, folder=str(folder), **card_options(args))


def write_card(dataset: Any, folder: Path, args: argparse.Namespace, repo_id: str | None) -> Path:
    return save_card(folder, make_card(dataset, folder, args, repo_id))


def push(dataset: Any, repo_id: str, args: argparse.Namespace, **kwargs: Any) -> Any:
    """``hub.push_to_hub`` with the command line's Hub options; prints what became of the card."""
    from .hub import push_to_hub

    result = push_to_hub(
        dataset,
        repo_id,
        private=not args.public,
        token=args.hf_token,
        overwrite_card=args.overwrite_card,
        allow_offline_data=args.allow_offline_data,
        **kwargs,
    )
    print(result.summary("--overwrite-card"))
    return result


def _cmd_push(args: argparse.Namespace) -> int:
    from .hub import resolve_hf_token, validate_hub_repo_id

    validate_hub_repo_id(args.repo_id)
    resolve_hf_token(args.hf_token)
    dataset = load_result(args.dir)
    print_offline_notice(dataset)
    push(
        dataset,
        args.repo_id,
        args,
        split=args.split,
        revision=args.revision,
        create_pr=args.create_pr,
        commit_message=args.commit_message,
        **card_options(args),
    )
    return 0


def _cmd_card(args: argparse.Namespace) -> int:
    dataset = load_result(args.dir)
    print_offline_notice(dataset)
    path = write_card(dataset, args.dir, args, args.repo_id)
    print(f"wrote {path}")
    return 0


def load_seeds(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """The seed split of ``args.source`` (``--split``, ``--config``, ``--revision``), cut to
    ``--limit``; an empty one is refused before anything is sent."""
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit must be >= 1, got {args.limit}")
    ds, source_meta = load_source(
        args.source, split=args.split, config=args.config, revision=args.revision
    )
    if args.limit is not None:  # an empty source is refused by load_source, naming it
        ds = ds.select(range(min(args.limit, len(ds))))
    return ds, source_meta


def _cmd_expand(args: argparse.Namespace) -> int:
    from .expand import expand
    from .provenance import get_provenance

    if args.output is not None and not args.dry_run:
        check_output(args.output, overwrite=args.overwrite)
    ds, source_meta = load_seeds(args)
    with ExitStack() as stack:
        if args.dry_run:
            return _dry_run(args, ds, expand_options(args))
        if args.push_to_hub is not None:  # refused before any request, not after the run
            from .hub import refuse_offline, resolve_hf_token, validate_hub_repo_id

            validate_hub_repo_id(args.push_to_hub)
            resolve_hf_token(args.hf_token)
            refuse_offline(offline_run(args), args.allow_offline_data)
        result = expand(ds, **expand_options(args, stack), source=source_meta)
    print_offline_notice(result)
    errors = sum(1 for e in result["error"] if e is not None)
    seeds = len({i for i in result["source_index"] if i is not None})
    print(
        f"expanded {len(ds)} seed rows into {len(result)} rows "
        f"({seeds} seeds linked, {errors} rows with an error)"
    )
    for row in result.select(range(min(args.show, len(result)))):
        print(json.dumps(row, ensure_ascii=False, default=str)[:400])
    if args.output is not None:
        card = make_card(result, args.output, args, args.push_to_hub)
        target = write_output(result, args.output, args.format, card, overwrite=args.overwrite)
        print(f"wrote {len(result)} rows to {target}, the card to {README} and {MANIFEST}")
    partial = (get_provenance(result) or {}).get("partial")
    if args.push_to_hub is not None and partial:  # the Hub gets a whole dataset
        print(
            f"not pushed to {args.push_to_hub}: the run stopped at its budget; rerun with a "
            "higher budget to complete it"
            + (f" (or push the folder: synth-datasets push {args.output})" if args.output else "")
        )
    elif args.push_to_hub is not None:
        push(result, args.push_to_hub, args, **card_options(args))
    return budget_exit("synth-datasets", result)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    import datasets

    # datasets prints its records with its own handler: passed on to ours too, each came twice.
    datasets.logging.disable_propagation()
    if not args.verbose:
        datasets.logging.set_verbosity_warning()
        # Each retry is counted in the final summary; a warning per retry is noise here.
        logging.getLogger("urllib3").setLevel(logging.ERROR)
    commands = {"expand": _cmd_expand, "push": _cmd_push, "card": _cmd_card, "report": _cmd_report}
    if args.command == "serve":
        from .testing.serve import run_serve

        commands["serve"] = run_serve
    try:
        return run_guarded("synth-datasets", commands[args.command], args, verbose=args.verbose)
    finally:
        datasets.logging.enable_propagation()  # as it was, for a caller in the same process


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
