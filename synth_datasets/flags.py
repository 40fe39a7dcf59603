"""The command line's flags, defined once from ``config.py``'s option fields and shared by the
CLI and the scripts in ``scripts/``: each flag is spelled, typed and explained here, and turned
back into the library's keywords here (``expand_options``, ``card_options``, ``read_prompt``).
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import fields
from pathlib import Path
from typing import Any

from .config import ExpandConfig, flag, option_fields
from .errors import UsageError
from .sources import check_utf8

__all__ = [
    "add_against_arguments",
    "add_card_options",
    "add_expand_arguments",
    "add_hub_options",
    "add_output_arguments",
    "add_publish_options",
    "card_options",
    "expand_options",
    "offline_run",
    "read_prompt",
]

_FIELDS = {f.name: f for f in fields(ExpandConfig)}
# The command line asks for 4 generations per seed unless told (the API has no default).
_CLI_DEFAULTS: dict[str, Any] = {"multiplier": 4}


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


def _words_per_ngram(text: str) -> int:
    """A whole number of words from 1 to ``dedup.MAX_NGRAM`` (argparse names the flag)."""
    from .dedup import MAX_NGRAM

    if not text.strip().isdigit() or not 1 <= int(text) <= MAX_NGRAM:
        raise argparse.ArgumentTypeError(f"a whole number from 1 to {MAX_NGRAM}, got {text!r}")
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
        # Its port changes every run: the cache knows it by its engine, so a rerun resumes.
        options.update(
            api_key=server.token, base_url=server.url, cache_endpoint=server.cache_endpoint
        )
        print(
            f"using the local reference server at {server.url}: rows are generated by "
            f"{engine.description}"
        )
        if in_flight is not None:
            n = options["max_concurrency"]
            print(f"keeping {n} requests in flight (--max-concurrency to change it)")
    return options


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


def offline_run(args: argparse.Namespace) -> bool:
    """Whether the rows will come from the offline engine: ``--local`` with no other ``--engine``."""
    return bool(args.local) and args.engine in (None, "offline")


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


def card_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "pretty_name": args.pretty_name,
        "license": args.license,
        "language": args.language,
        "task_categories": args.task_categories,
        "include_prompt": not args.no_prompt_in_card,
    }


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
        "HUB_ID[@REVISION][:CONFIG][:SPLIT] (a folder's or Hub id's split defaults to its only "
        "one, else test; a file has none)",
    )
    p.add_argument(
        "--ngram",
        type=_words_per_ngram,
        default=DEFAULT_NGRAM,
        help=f"words per n-gram of that check (default {DEFAULT_NGRAM})",
    )
