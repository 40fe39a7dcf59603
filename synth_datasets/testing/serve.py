"""The ``serve`` command (``synth-datasets serve``, ``python -m synth_datasets.testing``).

Building its parser imports no aiohttp: the server is imported only when the command runs. The
fault flags are derived from ``Faults``' fields and the engine flags (``--engine-*``, shared with
``expand --local``) from the engines' fields, one flag per field, help from its metadata.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import shlex
from collections.abc import Sequence
from typing import Any

from ..config import is_loopback
from ..errors import ConfigurationError
from ..guard import run_guarded
from .engine import Engine, OfflineEngine
from .faults import Faults
from .openai_engine import OpenAIEngine

__all__ = [
    "ENGINES",
    "PARSER_DESCRIPTION",
    "add_engine_arguments",
    "add_serve_arguments",
    "engine_flags",
    "engine_from_args",
    "main",
    "run_serve",
]

# The engines ``--engine`` chooses from; each field of one is a flag ``--engine-<field>``.
ENGINES: dict[str, type[Engine]] = {"offline": OfflineEngine, "openai": OpenAIEngine}

PARSER_DESCRIPTION = """\
Serve an offline reference implementation of Collinear's synth-data endpoint
(POST /api/v1/synth_data/generate) on loopback, for tests, demos and benchmarks.

Its default engine rewrites the string fields of each example deterministically
(same request, same answer): it is NOT a language model and its output is not
training data. With --engine openai it answers from your own model instead,
through any OpenAI-compatible server (vLLM, llama.cpp, Ollama, TGI). Fault flags
make it misbehave the way a real service can (rate limits, 5xx, dropped or
truncated bodies, other framings, malformed output).
"""


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Make ``parser`` the ``serve`` command's: its description and options (every fault too)."""
    parser.description = PARSER_DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8787, help="port (0 = any free port)")
    parser.add_argument("--token", default=None, help="bearer token (default: a random one)")
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a non-loopback --host (the admin endpoints stay loopback only)",
    )
    add_engine_arguments(parser)
    group = parser.add_argument_group("fault injection (all off by default)")
    for field in dataclasses.fields(Faults):
        default = [] if field.default is dataclasses.MISSING else field.default
        options = dict(field.metadata)
        if isinstance(default, float):  # the other fields' metadata names their type or action
            options.setdefault("type", float)
        group.add_argument("--" + field.name.replace("_", "-"), default=default, **options)


def _engine_fields() -> dict[str, tuple[str, dataclasses.Field[Any]]]:
    """Each engine option as ``{dest: (engine name, field)}``."""
    return {
        f"engine_{field.name}": (name, field)
        for name, cls in ENGINES.items()
        for field in dataclasses.fields(cls)  # type: ignore[arg-type]
    }


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """``--engine`` and its options (``serve`` and ``expand --local`` share them)."""
    group = parser.add_argument_group("engine (default: the offline one)")
    group.add_argument(
        "--engine",
        choices=list(ENGINES),
        default=None,
        help="what writes the generations: offline (deterministic rewriting, not a language "
        "model) or openai (your own model behind an OpenAI-compatible server)",
    )
    for dest, (name, field) in _engine_fields().items():
        options = dict(field.metadata)
        shown = "" if field.default is dataclasses.MISSING else f"; default {field.default}"
        options["help"] = f"{options['help']} (--engine {name}{shown})"
        group.add_argument(_flag(dest), dest=dest, default=None, **options)


def engine_flags(args: argparse.Namespace) -> list[str]:
    """The engine flags given on the command line."""
    dests = ["engine", *_engine_fields()]
    return [_flag(dest) for dest in dests if getattr(args, dest, None) is not None]


def engine_from_args(args: argparse.Namespace) -> Engine:
    """The engine the flags describe, checked (``ConfigurationError`` naming the flag); the
    offline one unless ``--engine`` says otherwise."""
    name = args.engine or "offline"
    own = {dest: field for dest, (of, field) in _engine_fields().items() if of == name}
    stray = [d for d in _engine_fields() if d not in own and getattr(args, d, None) is not None]
    if stray:
        raise ConfigurationError(f"{_flag(stray[0])} is not an option of --engine {name}")
    missing = [
        _flag(dest)
        for dest, field in own.items()
        if field.default is dataclasses.MISSING and getattr(args, dest) is None
    ]
    if missing:
        raise ConfigurationError(f"--engine {name} needs {' and '.join(missing)}")
    given = {f.name: getattr(args, d) for d, f in own.items() if getattr(args, d) is not None}
    try:
        return ENGINES[name](**given)
    except ConfigurationError as exc:  # name the flag, not the keyword
        option = exc.option or ""
        message = (
            re.sub(rf"\b{option}\b", _flag(f"engine_{option}"), str(exc)) if option else str(exc)
        )
        raise ConfigurationError(message) from None


def run_serve(args: argparse.Namespace) -> int:
    """Start a server from parsed ``serve`` options and block until Ctrl-C or SIGTERM."""
    from .server import ReferenceServer

    if not is_loopback(args.host) and not args.allow_remote:
        raise ConfigurationError(
            f"refusing to serve on non-loopback host {args.host!r}; "
            "pass --allow-remote if you really mean it"
        )
    try:
        faults = Faults(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Faults)})
        engine = engine_from_args(args)
        server = ReferenceServer(
            token=args.token, host=args.host, port=args.port, faults=faults, engine=engine
        )
    except ConfigurationError:
        raise  # its option is the flag's name: guard.in_cli_words spells it as the flag
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
    try:
        server.start()  # the engine checks its backend here (ConfigurationError)
    except OSError as exc:
        raise OSError(f"cannot listen on {args.host}:{args.port}: {exc}") from None
    # The token is printed only here, for the person who started the server, with the line that
    # points the library, the command line and the scripts at this server.
    print(f"serving {server.url} token={server.token}")
    print(f"rows are generated by {engine.description}")
    print("# to use it from another shell (any UUID works as the model id):")
    print(
        f"export COLLINEAR_BASE_URL={shlex.quote(server.url)} "
        f"COLLINEAR_API_KEY={shlex.quote(server.token)}",
        flush=True,
    )
    server.serve_forever()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m synth_datasets.testing``: the same as ``synth-datasets serve``."""
    parser = argparse.ArgumentParser(prog="python -m synth_datasets.testing")
    add_serve_arguments(parser)
    return run_guarded(parser.prog, run_serve, parser.parse_args(argv))
