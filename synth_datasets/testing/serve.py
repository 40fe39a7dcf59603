"""The ``serve`` command (``synth-datasets serve``, ``python -m synth_datasets.testing``).

Building its parser imports no aiohttp: the server is imported only when the command runs. The
fault flags are derived from ``Faults``' fields, one flag per field, help from its metadata.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
from collections.abc import Sequence

from ..cli import run_guarded
from ..config import is_loopback
from ..errors import ConfigurationError
from .faults import Faults

__all__ = ["PARSER_DESCRIPTION", "add_serve_arguments", "main", "run_serve"]

PARSER_DESCRIPTION = """\
Serve an offline reference implementation of Collinear's synth-data endpoint
(POST /api/v1/synth_data/generate) on loopback, for tests, demos and benchmarks.

Its engine rewrites the string fields of each example deterministically (same
request, same answer): it is NOT a language model and its output is not
training data. Fault flags make it misbehave the way a real service can (rate
limits, 5xx, dropped or truncated bodies, other framings, malformed output).
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
    group = parser.add_argument_group("fault injection (all off by default)")
    for field in dataclasses.fields(Faults):
        default = [] if field.default is dataclasses.MISSING else field.default
        options = dict(field.metadata)
        if isinstance(default, float):  # the other fields' metadata names their type or action
            options.setdefault("type", float)
        group.add_argument("--" + field.name.replace("_", "-"), default=default, **options)


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
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
    server = ReferenceServer(token=args.token, host=args.host, port=args.port, faults=faults)
    try:
        server.start()
    except OSError as exc:
        raise OSError(f"cannot listen on {args.host}:{args.port}: {exc}") from None
    # The token is printed only here, for the person who started the server, with the line that
    # points the library, the command line and the scripts at this server.
    print(f"serving {server.url} token={server.token}")
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
