"""``synth-datasets``: expand, serve (and, with the publish step, push and card).

Exit codes: 0 done, 2 usage or configuration (nothing was sent), 1 failure, 3 stopped at the
budget (``--max-requests``, ``--max-generations``: what was received is written), 130 interrupted.
Errors are one line; ``-v`` shows the traceback and DEBUG logs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import re
import sys
import traceback
import typing
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import fields
from pathlib import Path
from typing import Any

from ._version import __version__
from .config import OFFLINE_NOTICE, ExpandConfig, option_fields
from .errors import ConfigurationError, SynthError, UsageError, scrub
from .folder import (
    MANIFEST,
    README,
    check_output,
    load_result,
    save_card,
    write_figures,
    write_output,
)
from .sources import check_utf8, load_source

__all__ = [
    "BUDGET_EXIT",
    "add_against_arguments",
    "add_card_options",
    "add_expand_arguments",
    "add_hub_options",
    "add_output_arguments",
    "budget_exit",
    "check_output",
    "expand_options",
    "flag",
    "load_seeds",
    "main",
    "offline_run",
    "print_offline_notice",
    "read_prompt",
    "run_guarded",
]

BUDGET_EXIT = 3
"""The exit code of a run that stopped at its budget: its rows are written, the rest unsent."""
_FIELDS = {f.name: f for f in fields(ExpandConfig)}


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


# The command line asks for 4 generations per seed unless told (the API has no default).
_CLI_DEFAULTS: dict[str, Any] = {"multiplier": 4}


def flag(option: str) -> str:
    """An option's spelling on the command line."""
    f = _FIELDS[option]
    return str(f.metadata["flag"] or "--" + option.replace("_", "-"))


def in_cli_words(message: str, option: str | None) -> str:
    """A library error about keyword ``option`` in the words of the command line: its flag
    (``pass model_id=`` -> ``pass --model-id``). The token has no flag: it comes from
    COLLINEAR_API_KEY, or from the bundled server with ``--local``."""
    if option == "api_key":
        return message.replace("pass api_key=", "use --local (the offline reference server)")
    if not option:
        return message
    # A publishing keyword (allow_offline_data=True) is spelled as its flag too.
    spelled = flag(option) if option in _FIELDS else "--" + option.replace("_", "-")
    # Not inside quotes: a column may be named like an option.
    return re.sub(rf"(?<!['\"])\b{option}\b(?!['\"])(=True)?=?", spelled, message)


def add_expand_arguments(
    p: argparse.ArgumentParser,
    *,
    exclude: Sequence[str] = (),
    defaults: dict[str, Any] | None = None,
) -> None:
    """The seeds, the prompt and every option of ``ExpandConfig`` as flags: the CLI's
    ``expand`` and the scripts share them, so each flag is spelled, typed and explained once."""
    p.add_argument("source", help="file, save_to_disk folder, or Hub dataset id")
    p.add_argument("--split", default=None, help="split to use (default: train)")
    p.add_argument("--config", default=None, help="Hub dataset config name")
    p.add_argument("--revision", default=None, help="Hub dataset revision (branch, tag or sha)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N rows")
    prompt = p.add_mutually_exclusive_group()
    prompt.add_argument("--prompt", help="instruction prompt sent with every request")
    prompt.add_argument("--prompt-file", type=Path, help="read the prompt from this file")
    p.add_argument(
        "--local",
        action="store_true",
        help="start the bundled reference server on loopback and use it (no account; "
        "its offline engine rewrites words, it is not a language model; --engine openai "
        "answers from your own model)",
    )
    from .testing.serve import add_engine_arguments

    add_engine_arguments(p)
    defaults = {**_CLI_DEFAULTS, **(defaults or {})}
    hints = typing.get_type_hints(ExpandConfig)
    for f in option_fields(ExpandConfig):
        if not f.metadata["cli"] or f.name in exclude:
            continue
        default = defaults.get(f.name, f.default)
        shown = "" if default in (None, dataclasses.MISSING) else f" (default {default})"
        kw: dict[str, Any] = {"dest": f.name, "help": f.metadata["help"] + shown}
        kind = typing.get_args(hints[f.name]) or (hints[f.name],)
        if bool in kind:  # a default-on switch: the flag turns it off
            kw.update(action="store_false", default=None, help="do not " + f.metadata["help"])
        elif f.name == "on_error":
            kw.update(choices=["raise", "keep"])
        elif f.name == "columns":
            kw.update(type=_comma_list, metavar="A,B")
        elif int in kind and str in kind:  # a number or a word (max_concurrency: N or auto)
            kw.update(type=_int_or_word)
        else:
            kw.update(type=next(t for t in (int, float, str) if t in kind))
        p.add_argument(*filter(None, (f.metadata["short"], flag(f.name))), **kw)
    p.set_defaults(**{k: v for k, v in defaults.items() if k not in exclude})


def _int_or_word(text: str) -> int | str:
    try:
        return int(text)
    except ValueError:
        return text


def _comma_list(text: str) -> list[str]:
    return [c.strip() for c in text.split(",") if c.strip()]


def _whole_number(text: str) -> int:
    """A whole number >= 1 (argparse names the flag)."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"a whole number >= 1, got {text!r}")
    return int(text)


def expand_options(args: argparse.Namespace, stack: ExitStack | None = None) -> dict[str, Any]:
    """The keywords of ``expand`` that the command line gave (the rest keep their defaults):
    the prompt, the options, and with ``--local`` and a ``stack`` the bundled server's URL and
    token (the server, with the ``--engine`` chosen, is stopped with ``stack``)."""
    from .testing.serve import engine_flags, engine_from_args

    options = {
        f.name: getattr(args, f.name)
        for f in fields(ExpandConfig)
        if getattr(args, f.name, None) is not None
    }
    options["prompt"] = read_prompt(args)
    if not args.local:
        given = engine_flags(args)
        if given:
            raise UsageError(f"{given[0]} chooses the bundled server's engine: add --local")
        return options
    if "base_url" in options:
        raise UsageError("--local runs its own server: drop --base-url (or --local)")
    engine = engine_from_args(args)
    options.setdefault("model_id", engine.model_id)
    size = options.get("request_size", _FIELDS["request_size"].default)
    in_flight = engine.requests_in_flight(size * (options.get("multiplier") or 1))
    if in_flight is not None and "max_concurrency" not in options:
        # Requests beyond what the engine works on at once wait in its queue, past the timeout.
        options["max_concurrency"] = in_flight
    if stack is not None:
        from .testing import ReferenceServer

        server = stack.enter_context(ReferenceServer(engine=engine))
        options.update(api_key=server.token, base_url=server.url)
        print(
            f"using the local reference server at {server.url}: rows are generated by "
            f"{engine.description}"
        )
        if in_flight is not None:
            n = options["max_concurrency"]
            print(f"keeping {n} requests in flight (--max-concurrency to change it)")
    return options


def offline_run(args: argparse.Namespace) -> bool:
    """Whether the rows will come from the offline engine: ``--local`` with no other ``--engine``."""
    return bool(args.local) and args.engine in (None, "offline")


def print_offline_notice(dataset: Any, provenance: Any = None) -> None:
    """The first line of a command's report on rows the offline engine made."""
    from .provenance import get_provenance, is_offline

    if is_offline(provenance if provenance is not None else get_provenance(dataset)):
        print(f"note: these rows were {OFFLINE_NOTICE} (word substitution, not a language model)")


def add_output_arguments(
    p: argparse.ArgumentParser,
    *,
    help: str = "write the data, its card and the manifest to this folder",
    required: bool = False,
    formats: bool = True,
) -> None:
    """``--output`` (and ``--format``) and ``--overwrite``: the same for the CLI and scripts."""
    p.add_argument("--output", type=Path, default=None, required=required, help=help)
    if formats:
        p.add_argument("--format", choices=["parquet", "jsonl"], default="parquet")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace files in --output that synth-datasets did not write (your own README.md, "
        "data files it does not know)",
    )


def add_publish_options(p: argparse.ArgumentParser) -> None:
    """The Hub and card options, the same for the CLI and the scripts."""
    add_hub_options(p)
    add_card_options(p)


def add_hub_options(p: argparse.ArgumentParser) -> None:
    """Where and how a push goes (``hub.push_to_hub``'s keywords, see ``push``)."""
    p.add_argument(
        "--public", action="store_true", help="create the Hub repo public (default private)"
    )
    p.add_argument(
        "--hf-token-file",
        metavar="PATH",
        dest="hf_token",
        type=_token_file,
        default=None,
        help="read the Hub token from this file (default: HF_TOKEN, else the token saved by "
        "`hf auth login`); a token typed on the command line would land in shell history and ps",
    )
    p.add_argument(
        "--overwrite-card",
        action="store_true",
        help="replace the README already in the repo even if it was written by hand",
    )
    p.add_argument(
        "--allow-offline-data",
        action="store_true",
        help="push rows made by the bundled offline engine (--local, serve) all the same",
    )


def add_card_options(p: argparse.ArgumentParser) -> None:
    """What the card says (``card_options``): all that ``card`` takes, which writes no Hub repo."""
    # Refused, not unknown: argparse would quote an unknown flag's value (the token) back, or take
    # it for --hf-token-file (a prefix) where that exists.
    p.add_argument("--hf-token", type=_token_on_command_line, help=argparse.SUPPRESS)
    p.add_argument(
        "--pretty-name",
        default=None,
        help="the card's title (default: the repo's name, else the seed dataset's)",
    )
    p.add_argument("--license", default=None, help="license for the card (default: the source's)")
    p.add_argument("--language", action="append", default=None, help="card language (repeatable)")
    p.add_argument(
        "--task-category",
        action="append",
        default=None,
        dest="task_categories",
        help="card task category (repeatable)",
    )
    p.add_argument(
        "--no-prompt-in-card", action="store_true", help="do not publish the prompt in the card"
    )


def _token_file(path: str) -> str:
    """The Hub token in the file ``path``; an error never quotes the file's text."""
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not UTF-8 text"
        raise argparse.ArgumentTypeError(f"cannot read {path}: {reason}") from None
    if not token or any(c.isspace() for c in token):
        raise argparse.ArgumentTypeError(f"{path} must hold the token alone, on one line")
    return token


def _token_on_command_line(value: str) -> str:
    raise argparse.ArgumentTypeError(
        "refused: a token on the command line lands in shell history and ps; set HF_TOKEN, "
        "run `hf auth login` or pass --hf-token-file PATH"
    )


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
    p.add_argument(
        "--figures",
        action="store_true",
        help="also draw the report's figures into DIR/figures/ (needs matplotlib: "
        'pip install "synth-datasets[figures]")',
    )
    add_against_arguments(
        p, "--against", "count the rows that share an n-gram with a text of these evaluation sets"
    )


def add_against_arguments(p: argparse.ArgumentParser, name: str, what: str) -> None:
    """The evaluation sets to check against (comma-separated or repeated) and ``--ngram``."""
    from .contamination import DEFAULT_NGRAM, EvalSet

    def sets(text: str) -> list[EvalSet]:
        try:
            return [EvalSet.parse(spec) for spec in _comma_list(text)]
        except UsageError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    p.add_argument(
        name,
        metavar="A,B",
        type=sets,
        action="extend",
        default=[],
        help=f"{what}: each a file, a save_to_disk folder or a Hub id, as PATH[:SPLIT] or "
        "HUB_ID[@REVISION][:CONFIG][:SPLIT] (a Hub id's split defaults to test)",
    )
    p.add_argument(
        "--ngram",
        type=_whole_number,
        default=DEFAULT_NGRAM,
        help=f"words per n-gram of that check (default {DEFAULT_NGRAM})",
    )


def _cmd_report(args: argparse.Namespace) -> int:
    from .card import figure_drawer
    from .report import DEFAULT_NEAR_THRESHOLD, quality_report

    threshold = DEFAULT_NEAR_THRESHOLD if args.near_threshold is None else args.near_threshold
    if not 0 < threshold <= 1:
        raise UsageError(f"--near-threshold must be in (0, 1], got {threshold}")
    draw = figure_drawer(True) if args.figures else None  # refused before the pass, not after
    dataset = load_result(args.dir)
    report = quality_report(dataset, near=not args.no_near, near_threshold=threshold)
    found = None
    if args.against:
        from .contamination import find_contamination

        found = find_contamination(dataset, args.against, n=args.ngram)
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


# -- loading --------------------------------------------------------------------------------------


def read_prompt(args: argparse.Namespace) -> str:
    """``--prompt`` or the text of ``--prompt-file``."""
    if args.prompt_file is not None:
        try:
            check_utf8(args.prompt_file, f"--prompt-file {args.prompt_file}")
            return str(args.prompt_file.read_text(encoding="utf-8"))
        except OSError as exc:
            raise UsageError(f"--prompt-file: {exc.strerror}: {args.prompt_file}") from None
    if args.prompt is None:
        raise UsageError("give the instruction prompt with --prompt or --prompt-file")
    return str(args.prompt)


# -- commands -------------------------------------------------------------------------------------


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
        f"plan: {n} seed rows -> {math.ceil(n / size)} requests of <= {size} examples, "
        f"{n * config.multiplier} generations targeted (multiplier {config.multiplier}; "
        f"{flag('generation_limit')} {config.generation_limit}), {in_flight} in flight"
    )
    print(_budget_line(config, math.ceil(n / size), n * config.multiplier))
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


def card_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "pretty_name": args.pretty_name,
        "license": args.license,
        "language": args.language,
        "task_categories": args.task_categories,
        "include_prompt": not args.no_prompt_in_card,
    }


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
    if args.limit is not None:
        ds = ds.select(range(min(args.limit, len(ds))))
    if len(ds) == 0:
        raise ConfigurationError(f"{args.source}: the dataset is empty, nothing to expand")
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


def run_guarded(
    prog: str,
    command: Callable[[argparse.Namespace], int],
    args: argparse.Namespace,
    *,
    verbose: bool = False,
    describe: Callable[[BaseException], str] | None = None,
) -> int:
    """Run a command the way every entry point here does: exit 2 for usage or configuration
    (nothing was sent), 1 for a failure, each as one line on stderr (a traceback with -v); the
    command itself returns ``BUDGET_EXIT`` (``budget_exit``) when it stopped at its budget.

    ``describe`` words the errors that are not ours (Ray's, say). A server may quote back the
    token it was sent (the Hub's errors and debug logs of its headers do): the tokens this
    process holds are masked in what it prints.
    """
    tokens = _tokens(args)
    masking = _Masking(tokens)
    handlers = list(logging.getLogger().handlers)
    for handler in handlers:
        handler.addFilter(masking)
    # A run stopped at its budget ends with the command's own line (flags, BUDGET_EXIT): the
    # library's warning, in Python's terms, would say it twice.
    budget_log = logging.getLogger("synth_datasets.budget")
    budget_level = budget_log.level
    budget_log.setLevel(logging.ERROR)
    try:
        return command(args)
    except KeyboardInterrupt:
        print(
            f"{prog}: interrupted; answered requests are cached, rerun to resume", file=sys.stderr
        )
        return 130
    except Exception as exc:
        scrub(exc, *tokens)
        code = 2 if isinstance(exc, (UsageError, ConfigurationError)) else 1
        if verbose:
            traceback.print_exc()
        if describe is not None and not isinstance(exc, (UsageError, SynthError)):
            message = describe(exc)
        else:
            prefix = "" if isinstance(exc, (UsageError, SynthError)) else f"{type(exc).__name__}: "
            message = prefix + " ".join(str(exc).split())
            message = in_cli_words(message, getattr(exc, "option", None))
        print(f"{prog}: error: {message}", file=sys.stderr)
        return code
    finally:
        budget_log.setLevel(budget_level)
        for handler in handlers:
            handler.removeFilter(masking)


def _tokens(args: argparse.Namespace) -> list[str]:
    """The API and Hub tokens this process may hold (too short to be one: not masked)."""
    from huggingface_hub import get_token

    found = (
        getattr(args, "hf_token", None),
        os.environ.get("HF_TOKEN"),
        get_token(),
        os.environ.get("COLLINEAR_API_KEY"),
    )
    return [token.strip() for token in found if token and len(token.strip()) >= 8]


class _Masking(logging.Filter):
    """Masks the tokens in each record a handler prints."""

    def __init__(self, tokens: Sequence[str]) -> None:
        super().__init__()
        self.tokens = tokens

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = message
        for token in self.tokens:
            masked = masked.replace(token, "***")
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and record.exc_info[1] is not None:
            scrub(record.exc_info[1], *self.tokens)
            record.exc_text = None
        return True


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
